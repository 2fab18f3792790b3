"""Which containers of a pod gpunuma binds: those named in ``gpunuma.io/containers``, else those
that request a GPU resource or use a GPU claim (DRA). Pure; ``kubectl gpunuma explain`` asks too.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

from gpunuma import names
from gpunuma.settings import DEFAULT_GPU_CLAIMS, gpu_resource_pattern
from gpunuma.webhook.edits import is_launcher
from gpunuma.webhook.messages import quote, some, warning_line
from gpunuma.webhook.podshape import InvalidPod, mapping_at, named_list, string_map

__all__ = [
    "MAX_CONTAINERS_ANNOTATION",
    "gpu_claim_names",
    "gpu_claims_used",
    "gpu_requests",
    "listed_containers",
    "select",
    "selected_containers",
]


# gpunuma.io/containers holds container names (at most 63 characters each): 16 KiB is 256 of the
# longest. A longer value is not read at all (the API server refuses annotations over 256 KiB
# after admission anyway), so a 3 MB value costs a length check, not a million names.
MAX_CONTAINERS_ANNOTATION = 16 * 1024
_QUANTITY_NUMBER = re.compile(r"\s*([+-]?(?:\d+\.?\d*|\.\d+))")


def selected_containers(pod: Mapping[str, Any], gpu_resources: Sequence[str],
                        gpu_claims: Sequence[str] = DEFAULT_GPU_CLAIMS) -> set[str]:
    """Names of the containers ``mutate`` would wrap in this pod (for ``kubectl gpunuma explain``),
    whether or not the pod opted in. Raises ``InvalidPod``."""
    spec = mapping_at(pod, "spec", "spec") or {}
    annotations = string_map(mapping_at(pod, "metadata", "metadata"), "annotations")
    return select(annotations, named_list(spec, "initContainers"), named_list(spec, "containers"),
                  gpu_resources, [], gpu_claims=gpu_claim_names(spec, gpu_claims))


def gpu_claims_used(pod: Mapping[str, Any], container: Mapping[str, Any],
                    gpu_claims: Sequence[str] = DEFAULT_GPU_CLAIMS) -> list[str]:
    """The pod's GPU claims (see ``--gpu-claims``) this container uses, by their names in the pod.
    Raises ``InvalidPod``."""
    spec = mapping_at(pod, "spec", "spec") or {}
    claims = gpu_claim_names(spec, gpu_claims)
    resources = container.get("resources")
    used = resources.get("claims") if isinstance(resources, dict) else None
    return [str(item["name"]) for item in used or []
            if isinstance(item, dict) and item.get("name") in claims]


def gpu_claim_names(spec: Mapping[str, Any], globs: Sequence[str]) -> frozenset[str]:
    """The names of the pod's ``resourceClaims`` entries that stand for GPUs: the entry's own name,
    its ResourceClaim's or its ResourceClaimTemplate's matches a ``--gpu-claims`` glob.

    A DeviceClass is what really says "GPU", but a pod does not name it: only the API server knows
    the claim's class, and the webhook makes no API calls (DESIGN §9). Raises ``InvalidPod``.
    """
    pattern = gpu_resource_pattern(tuple(globs))
    found: set[str] = set()
    for entry in named_list(spec, "resourceClaims"):
        source = entry.get("source")  # before Kubernetes 1.31 the names sat under "source"
        names_of = [entry["name"]] + [
            value for holder in (entry, source if isinstance(source, Mapping) else {})
            for key in ("resourceClaimName", "resourceClaimTemplateName")
            if isinstance(value := holder.get(key), str)
        ]
        if any(pattern.match(name) for name in names_of):
            found.add(entry["name"])
    return frozenset(found)


def listed_containers(annotations: Mapping[str, str]) -> list[str]:
    """The names in ``gpunuma.io/containers``; empty when it is absent or lists none (then the
    containers requesting GPUs are selected)."""
    listed = annotations.get(names.ANNOTATION_CONTAINERS) or ""
    if len(listed) > MAX_CONTAINERS_ANNOTATION:
        return []
    return list(dict.fromkeys(name.strip() for name in listed.split(",") if name.strip()))


def gpu_requests(container: Mapping[str, Any], gpu_resources: Sequence[str]) -> dict[str, str]:
    """The GPU resources the container asks for, with their quantities; a zero quantity is no
    request. Raises ``InvalidPod``."""
    matcher = _resource_matcher(tuple(gpu_resources))
    return {resource: str(quantity) for resource, quantity in _gpu_amounts(container, matcher).items()}


def select(
    annotations: Mapping[str, str],
    init_containers: Sequence[Mapping[str, Any]],
    containers: Sequence[Mapping[str, Any]],
    gpu_resources: Sequence[str],
    warnings: list[str],
    *,
    gpu_claims: frozenset[str] = frozenset(),
) -> set[str]:
    """Names of the containers to wrap: the annotation's list, else those that request GPUs or
    use a claim of ``gpu_claims`` (names of the pod's ``resourceClaims`` entries)."""
    listed = annotations.get(names.ANNOTATION_CONTAINERS) or ""
    if len(listed) > MAX_CONTAINERS_ANNOTATION:
        warnings.append(warning_line(f"{names.ANNOTATION_CONTAINERS} ignored: {len(listed)} "
                                     f"characters, over {MAX_CONTAINERS_ANNOTATION}"))
    requested = listed_containers(annotations) if listed else []
    if requested:
        known = {c["name"] for c in (*init_containers, *containers) if not is_launcher(c)}
        unknown = [name for name in requested if name not in known]
        if unknown:
            warnings.append(warning_line(
                f"{names.ANNOTATION_CONTAINERS} names {some(unknown)}, not containers of this "
                "pod" if len(unknown) > 1 else f"{names.ANNOTATION_CONTAINERS} names "
                f"{quote(unknown[0])}, which is not a container of this pod"))
        return {name for name in requested if name in known}
    matcher = _resource_matcher(tuple(gpu_resources))
    chosen: set[str] = set()
    for container in (*init_containers, *containers):  # a loop: this runs for every pod
        if not is_launcher(container) and (_gpu_amounts(container, matcher, first=True)
                                           or _uses_claim(container, gpu_claims)):
            chosen.add(container["name"])
    return chosen


def _uses_claim(container: Mapping[str, Any], claims: frozenset[str]) -> bool:
    if not claims:
        return False
    resources = container.get("resources")
    used = resources.get("claims") if isinstance(resources, dict) else None
    if used is not None and not isinstance(used, list):
        raise InvalidPod(f"container {container['name']!r}: resources.claims must be a list")
    return any(isinstance(item, dict) and item.get("name") in claims for item in used or [])


@functools.lru_cache(maxsize=8)
def _resource_matcher(globs: tuple[str, ...]) -> tuple[frozenset[str], re.Pattern[str]]:
    """The ``--gpu-resources`` globs without a wildcard, as a set (``nvidia.com/gpu`` is then a
    lookup, not a regex call), and the pattern of them all."""
    exact = frozenset(glob for glob in globs if not any(char in glob for char in "*?["))
    return exact, gpu_resource_pattern(globs)


def _gpu_amounts(container: Mapping[str, Any], matcher: tuple[frozenset[str], re.Pattern[str]],
                 *, first: bool = False) -> dict[str, object]:
    """Each non-zero GPU limit's quantity, then each GPU request's not limited; only the first
    found when ``first``. A loop, not a generator: it runs for every container of every pod."""
    found: dict[str, object] = {}
    exact, pattern = matcher
    resources = container.get("resources")
    if not resources:
        return found
    if not isinstance(resources, dict):
        raise InvalidPod(f"container {container['name']!r}: resources must be a map")
    for field in ("limits", "requests"):
        amounts = resources.get(field) or {}
        if not isinstance(amounts, dict):
            raise InvalidPod(f"container {container['name']!r}: resources.{field} must be a map")
        for resource, quantity in amounts.items():
            if (resource not in found and (resource in exact or pattern.match(str(resource)))
                    and not _is_zero(quantity)):
                found[str(resource)] = quantity
                if first:
                    return found
    return found


def _is_zero(quantity: object) -> bool:
    """True for a quantity of zero (``0``, ``"0"``, ``"0k"``): such a container has no GPU.

    ``null`` (a Helm value left empty) is zero too: Kubernetes decodes a null quantity as 0.
    """
    if quantity is None:
        return True
    if isinstance(quantity, int) or (isinstance(quantity, str) and quantity.isdigit()):
        return int(quantity) == 0
    match = _QUANTITY_NUMBER.match(str(quantity))
    return match is not None and Decimal(match.group(1)) == 0
