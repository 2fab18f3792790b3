"""AdmissionReview v1: reading the API server's request and answering it (no I/O).

``admit`` is the whole admission decision for one request body: it parses, calls the pure mutation,
and builds the response. Malformed requests raise ``BadRequest`` (the server answers HTTP 400);
a failure inside the mutation of one pod never fails the request: the pod is allowed unchanged with
a warning, because the webhook must never be the reason a workload cannot start.

A ``Memory`` lets the server answer a pod it has just seen without mutating it again: the replicas
of a Deployment, a Job's pods, a Ray worker group reach the webhook as identical pods, in bursts.
"""

from __future__ import annotations

import binascii
import logging
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any, Literal, NamedTuple

# orjson parses and writes JSON several times faster than the standard library; in the admission
# path that is a third of the webhook's own work per request.
import orjson

from gpunuma.quote import short
from gpunuma.settings import MutationSettings
from gpunuma.webhook.messages import admission_warning, warning_line
from gpunuma.webhook.mutation import mutate
from gpunuma.webhook.podshape import InvalidPod

__all__ = [
    "API_VERSION",
    "KIND",
    "MAX_DENIAL_CHARS",
    "MAX_WARNINGS",
    "Admission",
    "BadRequest",
    "Memory",
    "Outcome",
    "admit",
]

API_VERSION = "admission.k8s.io/v1"
KIND = "AdmissionReview"
_POD_KIND = {"group": "", "version": "v1", "kind": "Pod"}
# An answer's warnings and denial text are bounded whatever the pod: repeated warnings are sent
# once, at most MAX_WARNINGS of them (the last one says how many more there were), and a denial is
# cut to MAX_DENIAL_CHARS. kubectl shows every warning; a thousand are no help to anyone.
MAX_WARNINGS = 20
MAX_DENIAL_CHARS = 2048

Outcome = Literal["patched", "unchanged", "denied", "error"]
"""How a well-formed request ended; a malformed one is the server's ``invalid``."""

log = logging.getLogger("gpunuma.webhook")


class BadRequest(ValueError):
    """The body is not an AdmissionReview v1 request; the message says what is wrong."""


class Admission(NamedTuple):
    """One request's answer (a NamedTuple: immutable, and cheap to build for every request)."""

    body: bytes
    """The AdmissionReview to send back, serialised."""
    outcome: Outcome
    names: tuple[object, object]
    """The pod's namespace and name as the request gives them (see ``pod``). Not the request
    itself: a large pod's parsed tree is freed where it was decided, off the event loop."""
    reason: str

    @property
    def pod(self) -> str:
        """``namespace/name`` of the pod, for logs (generateName plus ``*`` before a name is
        given): made printable only for a line that is logged."""
        return _printable_names(self.names)

    @property
    def response(self) -> dict[str, Any]:
        """The AdmissionReview sent back, parsed (for tests and tools: the server sends ``body``)."""
        review: dict[str, Any] = orjson.loads(self.body)
        return review


class Memory:
    """The answers to the last pods admitted, keyed by the whole pod and the mutation's settings.

    Bounded in bytes: each entry costs its key (the pod, serialised) plus its answer serialised
    (the base64 patch included), and the oldest entries go when the total is over ``max_bytes``.

    ``mutate`` is a pure function of the pod, the settings and the path's namespace opt-in, so an
    answer found under exactly those inputs is the answer ``mutate`` would give; only the request's
    uid differs, and it is not part of the key. Keying on the whole pod, rather than on the fields
    the mutation happens to read today, keeps that true whatever the mutation reads tomorrow. Replicas
    of one template arrive byte-identical (no name or uid is assigned before admission), which is
    the burst this memory is for.

    Only answers that patched or denied a pod are remembered (pods that opted in: the others are
    answered in microseconds, and without matchConditions they are nearly every pod of the
    cluster), and only for request bodies of at most ``max_body_bytes``. Each key holds about one
    body, and its answer (a patch several times the pod's size, in base64) counts too, so the
    memory stays under ``max_bytes`` (16 MiB by default) however large the pods the API server may
    send (up to 3 MiB each).
    """

    def __init__(self, size: int = 256, max_body_bytes: int = 64 * 1024,
                 max_bytes: int = 16 * 1024 * 1024) -> None:
        self.size = size
        self.max_body_bytes = max_body_bytes
        self.max_bytes = max_bytes
        self.bytes = 0
        """What the remembered keys and answers take, serialised."""
        self.hits = 0
        # Oldest first. An OrderedDict: a plain dict's first entry, after many removed from the
        # front, is found by walking past every removed slot.
        self._answers: OrderedDict[tuple[int, bytes], tuple[_Answer, int]] = OrderedDict()
        # Each distinct settings value gets a number for the keys, so that a lookup hashes an int
        # and not the settings (a generated __hash__ over every field, four times per miss).
        self._settings_numbers: dict[MutationSettings, int] = {}
        self._last_settings: tuple[MutationSettings, int] | None = None

    def __len__(self) -> int:
        return len(self._answers)

    def key(self, pod: Mapping[str, Any], settings: MutationSettings,
            namespace_opted_in: bool) -> tuple[int, bytes] | None:
        last = self._last_settings
        if last is not None and last[0] is settings:  # the server passes the same object
            number = last[1]
        else:
            number = self._settings_numbers.setdefault(settings, len(self._settings_numbers))
            self._last_settings = settings, number
        try:
            return number, orjson.dumps([namespace_opted_in, pod])
        except orjson.JSONEncodeError:  # a value orjson cannot write: just not remembered
            return None

    def recall(self, key: tuple[int, bytes]) -> _Answer | None:
        found = self._answers.get(key)
        if found is None:
            return None
        self.hits += 1
        return found[0]

    def remember(self, key: tuple[int, bytes], answer: _Answer, size: int) -> None:
        """Keep ``answer``, whose whole review takes ``size`` bytes serialised."""
        cost = len(key[1]) + size + len(answer.reason)
        if cost > self.max_bytes or key in self._answers:
            return
        while self._answers and (len(self._answers) >= self.size
                                 or self.bytes + cost > self.max_bytes):
            self.bytes -= self._answers.popitem(last=False)[1][1]
        self._answers[key] = (answer, cost)
        self.bytes += cost


class _Answer(NamedTuple):
    outcome: Outcome
    reason: str
    members: bytes
    """The AdmissionReview response's members after its uid, serialised (see ``_members``)."""


def admit(
    body: bytes,
    settings: MutationSettings,
    *,
    namespace_opted_in: bool,
    memory: Memory | None = None,
) -> Admission:
    """The AdmissionReview response for one request body. Raises ``BadRequest``."""
    request = _parse(body)
    uid: str = request["uid"]
    pod = request.get("object")
    if (
        request.get("kind") != _POD_KIND
        or request.get("subResource")
        or request.get("operation") != "CREATE"
    ):
        # Only pod creation is ever mutated; anything else the webhook may be registered for by
        # mistake is let through untouched.
        return _admission(uid, _members(), "unchanged", request, "not a pod CREATE")
    if not isinstance(pod, dict):
        raise BadRequest("request.object must be the pod being created")
    if memory is not None and len(body) > memory.max_body_bytes:
        memory = None  # too large to keep: neither looked up nor remembered
    key = memory.key(pod, settings, namespace_opted_in) if memory is not None else None
    if memory is not None and key is not None and (known := memory.recall(key)) is not None:
        return _admission(uid, known.members, known.outcome, request, known.reason)
    try:
        mutation = mutate(pod, settings, namespace_opted_in=namespace_opted_in)
        warnings = bounded_warnings(mutation.warnings)
        outcome: Outcome = ("denied" if mutation.denial is not None
                            else "patched" if mutation.patch else "unchanged")
        answer = _Answer(outcome, mutation.reason,
                         _members(patch=mutation.patch, denial=mutation.denial, warnings=warnings))
    except InvalidPod as exc:
        log.warning("pod %s not mutated: %s", _pod_name(request, pod), exc)
        return _admission(uid, _members(warnings=[warning_line(f"pod not mutated: {exc}")]),
                          "error", request, str(exc))
    except Exception:
        log.exception("pod %s not mutated: internal error", _pod_name(request, pod))
        warning = warning_line("pod not mutated: internal error in the webhook (see its log)")
        return _admission(uid, _members(warnings=[warning]), "error", request, "internal error")
    admission = _admission(uid, answer.members, answer.outcome, request, answer.reason)
    if memory is not None and key is not None and answer.outcome in ("patched", "denied"):
        memory.remember(key, answer, len(admission.body))
    return admission


def _admission(uid: str, members: bytes, outcome: Outcome, request: Mapping[str, Any],
               reason: str) -> Admission:
    body = b"".join((_REVIEW_START, orjson.dumps(uid), members, b"}}"))
    return Admission(body, outcome, _pod_names(request, request.get("object")), reason)


def _parse(body: bytes) -> dict[str, Any]:
    try:
        review = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"the body is not JSON: {exc}") from None
    if not isinstance(review, dict):
        raise BadRequest("the body must be a JSON object (an AdmissionReview)")
    if review.get("apiVersion") != API_VERSION or review.get("kind") != KIND:
        raise BadRequest(f"expected apiVersion {API_VERSION} and kind {KIND}, got "
                         f"{short(review.get('apiVersion'))} and {short(review.get('kind'))}; "
                         "register the webhook with admissionReviewVersions: [v1]")
    request = review.get("request")
    if not isinstance(request, dict):
        raise BadRequest("the AdmissionReview has no request")
    uid = request.get("uid")
    if not isinstance(uid, str) or not uid:
        raise BadRequest("request.uid is missing; the response must echo it")
    if len(uid) > 128:  # the API server's uids are 36-character UUIDs
        raise BadRequest(f"request.uid {short(uid)} is not a UID")
    return request


def bounded_warnings(warnings: tuple[str, ...] | list[str]) -> list[str]:
    """The warnings once each, in order, at most ``MAX_WARNINGS`` (the last says how many more)."""
    if not warnings:
        return []
    unique = list(dict.fromkeys(warnings))
    if len(unique) <= MAX_WARNINGS:
        return unique
    kept = unique[:MAX_WARNINGS - 1]
    return [*kept, warning_line(f"and {len(unique) - len(kept)} more warnings like these")]


def _pod_names(request: Mapping[str, Any], pod: object) -> tuple[object, object]:
    metadata = pod.get("metadata") if isinstance(pod, dict) else None
    metadata = metadata if isinstance(metadata, dict) else {}
    namespace = request.get("namespace") or metadata.get("namespace") or "-"
    name = request.get("name") or metadata.get("name")
    if not name:
        name = f"{metadata.get('generateName') or ''}*"
    return namespace, name


def _printable_names(names: tuple[object, object]) -> str:
    namespace, name = names
    return f"{_printable(namespace)}/{_printable(name)}"


def _pod_name(request: Mapping[str, Any], pod: object) -> str:
    return _printable_names(_pod_names(request, pod))


def _printable(value: object, limit: int = 253) -> str:
    """A name from the request for a log line: control characters escaped, at most ``limit``
    characters (Kubernetes names are at most 253; these are not validated yet)."""
    text = str(value)
    cut = text[:limit]
    if not cut.isprintable():
        cut = "".join(c if c.isprintable() else repr(c)[1:-1] for c in cut)
    return cut if len(text) <= limit else f"{cut}…"


# An AdmissionReview answer up to its uid's value. The answer is written as bytes, not built as a
# dict and serialised: the patch goes in as the base64 bytes it is, neither decoded to a string nor
# scanned again for characters to escape (base64 has none).
_REVIEW_START = orjson.dumps({"apiVersion": API_VERSION, "kind": KIND,
                              "response": {"uid": ""}})[:-len(b'""}}')]


def _members(
    *,
    patch: list[dict[str, Any]] | None = None,
    denial: str | None = None,
    warnings: list[str] | None = None,
) -> bytes:
    """An AdmissionReview response's members after its uid, serialised: ``,"allowed":…``."""
    members = [b',"allowed":true' if denial is None else b',"allowed":false']
    if denial is not None:
        if len(denial) > MAX_DENIAL_CHARS:
            denial = denial[:MAX_DENIAL_CHARS - 1] + "…"
        status = {"code": 403, "reason": "Forbidden", "message": denial}
        members += (b',"status":', orjson.dumps(status))
    if patch:
        members += (b',"patchType":"JSONPatch","patch":"',
                    binascii.b2a_base64(orjson.dumps(patch), newline=False), b'"')
    if warnings:
        members += (b',"warnings":', orjson.dumps([admission_warning(line) for line in warnings]))
    return b"".join(members)
