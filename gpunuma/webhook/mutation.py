"""The pod mutation (DESIGN §9) as a pure function, shared by the webhook and ``gpunuma inject``.

``mutate`` takes a pod (or a pod template) as a plain dict and returns the pod it should become,
or a denial, plus warnings for the user. It reads nothing but its arguments, so the admission path
makes no API calls and ``gpunuma inject`` gives exactly what the webhook would.

The mutation is computed as a desired state rather than a list of edits: a pod that already carries
it (reinvocation, ``gpunuma inject`` twice, a template injected offline then admitted) comes out
equal to itself, which is what makes the webhook idempotent. The RFC 6902 patch is recorded where
each value is written, compared there with the pod's own value (equal: no operation), so the
webhook never copies or walks the pod to find what changed; ``json_patch`` (the differ,
:mod:`gpunuma.webhook.patchdiff`) is the independent check the tests hold the patch to.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, NamedTuple

from gpunuma import names
from gpunuma.settings import DEFAULT_GPU_CLAIMS, MutationSettings, gpu_resource_pattern
from gpunuma.webhook import patchdiff

__all__ = [
    "INSTALL_COMMAND",
    "LAUNCHER_UID",
    "MIRROR_POD_ANNOTATION",
    "POLICY_ENV",
    "WARNING_LIMIT",
    "InvalidPod",
    "Mutation",
    "admission_warning",
    "gpu_requests",
    "is_launcher",
    "json_patch",
    "listed_containers",
    "mutate",
    "selected_containers",
    "warning_line",
]

MIRROR_POD_ANNOTATION = "kubernetes.io/config.mirror"
POLICY_ENV = "GPUNUMA_POLICY"
# The launcher image holds only the static binary, at /numa-exec; it copies itself into the volume.
INSTALL_COMMAND: tuple[str, ...] = ("/numa-exec", "--install", names.LAUNCHER_MOUNT_PATH)
# What releases before the launcher image injected: still ours when a pod comes back through.
_LEGACY_INSTALL_COMMAND: tuple[str, ...] = ("gpunuma", "install-launcher", names.LAUNCHER_MOUNT_PATH)
# The two as lists, to compare with a container's command (never handed out).
_INSTALL_COMMANDS = (list(INSTALL_COMMAND), list(_LEGACY_INSTALL_COMMAND))
# The launcher image's USER (the Dockerfile's launcher stage: 65532:65532), named only for pods
# that run as root.
LAUNCHER_UID = 65532
# Kubernetes may truncate admission warnings longer than this; keep them whole and readable.
WARNING_LIMIT = 120
# gpunuma.io/containers holds container names (at most 63 characters each): 16 KiB is 256 of the
# longest. A longer value is not read at all (the API server refuses annotations over 256 KiB
# after admission anyway), so a 3 MB value costs a length check, not a million names.
MAX_CONTAINERS_ANNOTATION = 16 * 1024
# Containers (init ones included) of a pod the webhook mutates. Real pods have a handful; a pod of
# thousands costs the webhook 100+ ms of CPU per review (issue #16: four clients looping such pods
# starved every other admission), so it is left alone: admitted unchanged under preferred and
# cpu-only, denied under strict, which promises a binding.
MAX_CONTAINERS = 256
# Names listed in a warning or a denial; the rest are counted.
_NAMES_SHOWN = 5

_LAUNCHER_VOLUME: dict[str, Any] = {
    "name": names.LAUNCHER_VOLUME,
    "emptyDir": {"medium": "Memory", "sizeLimit": "8Mi"},
}
# The init container's own resources. requests == limits, so that a Guaranteed pod stays
# Guaranteed (every container, init ones included, must have equal cpu and memory requests and
# limits): the kubelet's CPU manager hands exclusive CPUs only to Guaranteed pods.
# It copies a static binary of under 1 MB: milliseconds of CPU, and memory for one page cache copy.
_LAUNCHER_RESOURCES: dict[str, Any] = {
    "requests": {"cpu": "10m", "memory": "16Mi"},
    "limits": {"cpu": "10m", "memory": "16Mi"},
}
_QUANTITY_NUMBER = re.compile(r"\s*([+-]?(?:\d+\.?\d*|\.\d+))")


class InvalidPod(ValueError):
    """The object is not shaped like a pod (a list where a mapping belongs, a command not a list…).

    The API server never sends such a pod; ``gpunuma inject`` can be given one.
    """


@dataclass(frozen=True, slots=True)
class Mutation:
    """What ``mutate`` decided for one pod."""

    pod: Mapping[str, Any]
    """The pod after the mutation: the object passed in itself when nothing changes or on denial."""
    patch: list[dict[str, Any]]
    """The JSON patch from the pod passed in to ``pod``; empty: no change."""
    denial: str | None
    """Why the pod must not be created, with how to fix it; ``None`` when it is allowed."""
    warnings: tuple[str, ...]
    """One line each for the user who created the pod, whole (admission cuts them to
    WARNING_LIMIT characters, see ``admission_warning``)."""
    reason: str
    """A few words for logs: why this outcome (``mutated``, ``not opted in``, ``mirror pod``…)."""
    wrapped: tuple[str, ...] = ()
    skipped: tuple[str, ...] = ()
    cgroup_bound: tuple[str, ...] = ()

    @property
    def changed(self) -> bool:
        return bool(self.patch)


def mutate(
    pod: Mapping[str, Any],
    settings: MutationSettings,
    *,
    namespace_opted_in: bool = False,
    explicit: bool = False,
) -> Mutation:
    """Decide how ``pod`` must change for gpunuma to bind its GPU containers.

    ``namespace_opted_in``: the pod's namespace carries ``gpunuma.io/inject=enabled`` (the webhook
    knows this from which of its paths the API server called). ``explicit``: the user asked for
    this pod by name (``gpunuma inject``), so no opt-in annotation is needed; an opt-out still wins.
    Raises ``InvalidPod`` when the object is not shaped like a pod.
    """
    warnings: list[str] = []
    metadata = _mapping(pod, "metadata", "metadata")
    annotations = _string_map(metadata, "annotations")
    labels = _string_map(metadata, "labels")
    spec = _mapping(pod, "spec", "spec")
    if spec is None:
        raise InvalidPod("the pod has no spec")

    def unchanged(reason: str, denial: str | None = None) -> Mutation:
        return Mutation(pod, [], denial, tuple(warnings), reason)

    if MIRROR_POD_ANNOTATION in annotations:
        return unchanged("mirror pod")
    opt_in = annotations.get(names.ANNOTATION_INJECT)
    if opt_in is not None and opt_in not in ("true", "false"):
        warnings.append(warning_line(f"{names.ANNOTATION_INJECT}={_quote(opt_in)} ignored: "
                                     "use \"true\" or \"false\""))
        opt_in = None
    if opt_in == "false":
        return unchanged("opted out")
    if not (opt_in == "true" or namespace_opted_in or explicit):
        return unchanged("not opted in")

    containers = _named_list(spec, "containers")
    init_containers = _named_list(spec, "initContainers")
    volumes = _named_list(spec, "volumes")
    policy = _policy(annotations, settings.default_policy, warnings)
    if (count := len(containers) + len(init_containers)) > MAX_CONTAINERS:
        too_many = (f"the pod has {count} containers, more than the {MAX_CONTAINERS} gpunuma "
                    "binds")
        if policy == "strict":
            return unchanged("too many containers", f"{names.ANNOTATION_POLICY} is \"strict\" but "
                             f"{too_many}. Fix: split the pod, or use {names.ANNOTATION_POLICY}: "
                             "\"preferred\"")
        warnings.append(warning_line(f"pod not bound: {too_many}"))
        return unchanged("too many containers")
    selected = _select(annotations, init_containers, containers, settings.gpu_resources, warnings,
                       gpu_claims=_gpu_claim_names(spec, settings.gpu_claims))
    if not selected:
        return unchanged("no GPU containers")
    if _is_windows(spec):
        warnings.append(warning_line("Windows pods are not bound: numa-exec is a Linux "
                                     "executable"))
        return unchanged("windows pod")

    wrapped: list[str] = []
    skipped: list[str] = []
    cgroup_bound: list[str] = []
    changed_containers: dict[str, _Edited] = {}
    for container in (*init_containers, *containers):
        name = container["name"]
        if name not in selected:
            continue
        command = container.get("command")
        if command is not None and not _is_string_list(command):
            raise InvalidPod(f"container {name!r}: command must be a list of strings")
        if not command and settings.cgroup_binding:
            # The agent binds it through its cgroup; the env says which policy, as for numa-exec.
            changed_containers[name] = _with_policy(container, policy, warnings)
            cgroup_bound.append(name)
            continue
        if not command:
            skipped.append(name)
            continue
        mount_clash = _mount_clash(container, volumes)
        if mount_clash is not None:
            return unchanged("mount path clash", *_skip_or_deny(policy, mount_clash, warnings))
        changed_containers[name] = _wrap(container, policy, warnings)
        wrapped.append(name)

    if wrapped:
        clash = _name_clash(containers, init_containers, volumes, spec)
        if clash is not None:
            return unchanged("name clash", *_skip_or_deny(policy, clash, warnings))
    if skipped:
        if policy == "strict":
            return unchanged("strict policy, container without command", _strict_denial(skipped))
        for name in skipped:
            warnings.append(warning_line(f"container {name!r} not wrapped: it has no command "
                                         "(the image ENTRYPOINT is invisible to gpunuma)"))

    # Each value is compared, where it is written, with the pod's own: what is already there
    # yields no operation, so a pod that carries the mutation gets an empty patch.
    patch: list[dict[str, Any]] = []
    new_annotations = dict(annotations)
    new_annotations[names.ANNOTATION_INJECTED] = settings.version
    _set_or_drop(new_annotations, names.ANNOTATION_WRAPPED, wrapped)
    _set_or_drop(new_annotations, names.ANNOTATION_SKIPPED, skipped)
    _set_or_drop(new_annotations, names.ANNOTATION_CGROUP_BOUND, cgroup_bound)
    # Warnings go back to whoever created the pod; a controller (ReplicaSet, Job…) drops them.
    # Kept on the pod, the operator turns them into Events on the pod's owner (no API call here).
    # Only ever added to: a second pass (reinvocation, inject twice) may no longer see what the
    # first warned about (an env var it replaced), and must not patch the pod again for that.
    kept = [line for line in annotations.get(names.ANNOTATION_WARNINGS, "").split("\n") if line]
    _set_or_drop(new_annotations, names.ANNOTATION_WARNINGS,
                 [*kept, *(w for w in warnings if w not in kept)], separator="\n")
    new_metadata = dict(metadata or {})
    new_metadata["annotations"] = new_annotations
    if metadata is not None:
        _map_operations("/metadata/annotations", metadata.get("annotations"), annotations,
                        new_annotations, _OUR_ANNOTATIONS, patch)
    managed = ("true" if wrapped or cgroup_bound
               # Unbound, with something to say: the operator watches this label (any value).
               else "false" if warnings else None)
    if managed is not None:
        # Only a pod with something bound gets the label the operator selects on ("true"): a pod
        # whose GPU containers were all skipped is not bound, so it has no placement to report.
        new_metadata["labels"] = {**labels, names.LABEL_MANAGED: managed}
        if metadata is not None:
            _map_operations("/metadata/labels", metadata.get("labels"), labels,
                            new_metadata["labels"], (names.LABEL_MANAGED,), patch)
    if metadata is None:
        patch.append({"op": "add", "path": "/metadata", "value": new_metadata})
    new_spec = dict(spec)
    new_spec["containers"] = _edited_list("/spec/containers", spec.get("containers"), containers,
                                          changed_containers, patch)
    if wrapped:
        # Ours runs first, before any wrapped init container. One already there is kept as it is
        # (on reinvocation the API server has defaulted its fields), only moved to the front
        # should another webhook have put something before it.
        existing = next((c for c in init_containers if is_launcher(c)), None)
        launcher = _runs_as_pod_user(existing or _launcher_container(
            settings, best_effort=_is_best_effort(containers, init_containers)), spec)
        new_spec["initContainers"] = _with_launcher_first(
            spec.get("initContainers"), init_containers, launcher, changed_containers, patch)
        if not any(volume["name"] == names.LAUNCHER_VOLUME for volume in volumes):
            volume = dict(_LAUNCHER_VOLUME)
            new_spec["volumes"] = [*volumes, volume]
            patch.append(_append_operation("/spec", spec, "volumes", volume))
    elif any(c["name"] in changed_containers for c in init_containers):
        new_spec["initContainers"] = _edited_list("/spec/initContainers",
                                                  spec.get("initContainers"), init_containers,
                                                  changed_containers, patch)
    new_pod = {**pod, "metadata": new_metadata, "spec": new_spec}
    return Mutation(
        new_pod if patch else pod, patch, None, tuple(warnings),
        "mutated" if patch else "already mutated", tuple(wrapped), tuple(skipped),
        tuple(cgroup_bound),
    )


def json_patch(original: Mapping[str, Any], mutated: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The RFC 6902 patch that turns ``original`` into ``mutated`` (empty when they are equal).

    Computed by diffing (:mod:`gpunuma.webhook.patchdiff`): the same change ``mutate`` records as it
    writes, found independently (the tests compare the two). Only the fields the mutation writes
    are compared; the pod's named lists are aligned by name first.
    """
    return patchdiff.diff(_patched_view(original), _patched_view(mutated), _NAMED_LISTS)


# --- Decisions ---------------------------------------------------------------------------------


def _policy(annotations: Mapping[str, str], default: str, warnings: list[str]) -> str:
    value = annotations.get(names.ANNOTATION_POLICY)
    if value is None:
        return default
    if value in names.POLICIES:
        return value
    # The value never goes further than this check: numa-exec only ever sees a known policy.
    warnings.append(warning_line(f"unknown {names.ANNOTATION_POLICY}={_quote(value)}, "
                                 f"using {default}"))
    return default


def selected_containers(pod: Mapping[str, Any], gpu_resources: Sequence[str],
                        gpu_claims: Sequence[str] = DEFAULT_GPU_CLAIMS) -> set[str]:
    """Names of the containers ``mutate`` would wrap in this pod (for ``kubectl gpunuma explain``),
    whether or not the pod opted in. Raises ``InvalidPod``."""
    spec = _mapping(pod, "spec", "spec") or {}
    annotations = _string_map(_mapping(pod, "metadata", "metadata"), "annotations")
    return _select(annotations, _named_list(spec, "initContainers"), _named_list(spec, "containers"),
                   gpu_resources, [], gpu_claims=_gpu_claim_names(spec, gpu_claims))


def gpu_claims_used(pod: Mapping[str, Any], container: Mapping[str, Any],
                    gpu_claims: Sequence[str] = DEFAULT_GPU_CLAIMS) -> list[str]:
    """The pod's GPU claims (see ``--gpu-claims``) this container uses, by their names in the pod.
    Raises ``InvalidPod``."""
    spec = _mapping(pod, "spec", "spec") or {}
    claims = _gpu_claim_names(spec, gpu_claims)
    resources = container.get("resources")
    used = resources.get("claims") if isinstance(resources, dict) else None
    return [str(item["name"]) for item in used or []
            if isinstance(item, dict) and item.get("name") in claims]


def _gpu_claim_names(spec: Mapping[str, Any], globs: Sequence[str]) -> frozenset[str]:
    """The names of the pod's ``resourceClaims`` entries that stand for GPUs: the entry's own name,
    its ResourceClaim's or its ResourceClaimTemplate's matches a ``--gpu-claims`` glob.

    A DeviceClass is what really says "GPU", but a pod does not name it: only the API server knows
    the claim's class, and the webhook makes no API calls (DESIGN §9). Raises ``InvalidPod``.
    """
    pattern = gpu_resource_pattern(tuple(globs))
    found: set[str] = set()
    for entry in _named_list(spec, "resourceClaims"):
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
    return {resource: str(quantity)
            for resource, quantity in _gpu_amounts(container, gpu_resource_pattern(tuple(gpu_resources)))}


def _select(
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
    candidates = [c for c in (*init_containers, *containers) if not is_launcher(c)]
    listed = annotations.get(names.ANNOTATION_CONTAINERS) or ""
    if len(listed) > MAX_CONTAINERS_ANNOTATION:
        warnings.append(warning_line(f"{names.ANNOTATION_CONTAINERS} ignored: {len(listed)} "
                                     f"characters, over {MAX_CONTAINERS_ANNOTATION}"))
    requested = listed_containers(annotations) if listed else []
    if requested:
        known = {c["name"] for c in candidates}
        unknown = [name for name in requested if name not in known]
        if unknown:
            warnings.append(warning_line(
                f"{names.ANNOTATION_CONTAINERS} names {_some(unknown)}, not containers of this "
                "pod" if len(unknown) > 1 else f"{names.ANNOTATION_CONTAINERS} names "
                f"{_quote(unknown[0])}, which is not a container of this pod"))
        return {name for name in requested if name in known}
    pattern = gpu_resource_pattern(tuple(gpu_resources))
    return {c["name"] for c in candidates
            if _requests_gpu(c, pattern) or _uses_claim(c, gpu_claims)}


def _uses_claim(container: Mapping[str, Any], claims: frozenset[str]) -> bool:
    if not claims:
        return False
    resources = container.get("resources")
    used = resources.get("claims") if isinstance(resources, dict) else None
    if used is not None and not isinstance(used, list):
        raise InvalidPod(f"container {container['name']!r}: resources.claims must be a list")
    return any(isinstance(item, dict) and item.get("name") in claims for item in used or [])


def _requests_gpu(container: Mapping[str, Any], gpu_resources: re.Pattern[str]) -> bool:
    return next(_gpu_amounts(container, gpu_resources), None) is not None


def _gpu_amounts(container: Mapping[str, Any], gpu_resources: re.Pattern[str]
                 ) -> Iterator[tuple[str, object]]:
    """(resource, quantity) of each non-zero GPU limit, then each GPU request not limited."""
    resources = container.get("resources")
    if not resources:
        return
    if not isinstance(resources, dict):
        raise InvalidPod(f"container {container['name']!r}: resources must be a map")
    seen: set[str] = set()
    for field in ("limits", "requests"):
        amounts = resources.get(field) or {}
        if not isinstance(amounts, dict):
            raise InvalidPod(f"container {container['name']!r}: resources.{field} must be a map")
        for resource, quantity in amounts.items():
            if (resource not in seen and gpu_resources.match(str(resource))
                    and not _is_zero(quantity)):
                seen.add(resource)
                yield str(resource), quantity


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


def _name_clash(
    containers: Sequence[Mapping[str, Any]],
    init_containers: Sequence[Mapping[str, Any]],
    volumes: Sequence[Mapping[str, Any]],
    spec: Mapping[str, Any],
) -> str | None:
    """A denial when the pod already uses our names for something of its own.

    Renaming or overwriting a user's volume or container would break the pod in ways the user
    could not see, so such a pod is refused with a message instead.
    """
    ours = names.LAUNCHER_INIT_CONTAINER
    ephemeral = _named_list(spec, "ephemeralContainers")
    if any(c["name"] == ours for c in (*containers, *ephemeral)):
        return (f"the pod has a container named {ours!r}, a name gpunuma needs for its init "
                f"container: rename that container, or opt the pod out with "
                f"{names.ANNOTATION_INJECT}: \"false\"")
    for container in init_containers:
        if container["name"] == ours and not is_launcher(container):
            return (f"the pod has an init container named {ours!r} that gpunuma did not create: "
                    f"rename it, or opt the pod out with {names.ANNOTATION_INJECT}: \"false\"")
    for volume in volumes:
        if volume["name"] == names.LAUNCHER_VOLUME and set(volume) != {"name", "emptyDir"}:
            return (f"the pod has a volume named {names.LAUNCHER_VOLUME!r} that is not gpunuma's "
                    f"emptyDir: rename it, or opt the pod out with {names.ANNOTATION_INJECT}: "
                    "\"false\"")
    return None


_CLASH_FIX = (f"move it, or leave the container out with {names.ANNOTATION_CONTAINERS}, or the pod "
              f"with {names.ANNOTATION_INJECT}: \"false\"")
# Volume sources the kubelet mounts read-only, whatever the mount says.
_READ_ONLY_SOURCES = frozenset(("configMap", "secret", "downwardAPI", "projected"))


def _mount_clash(container: Mapping[str, Any], volumes: Sequence[Mapping[str, Any]]) -> str | None:
    """Why gpunuma's mount cannot be added to ``container`` without breaking it, or None.

    The API server refuses a mount path used twice in a container or shared with a block
    device's path; the container runtime cannot create a mount point inside our read-only
    volume (a mount below ``/opt/gpunuma``), inside a device file, or inside a read-only volume
    mounted above it. Paths are compared cleaned (``/opt/gpunuma/`` is ``/opt/gpunuma``).
    """
    name, fix = container["name"], _CLASH_FIX
    for mount in _named_list(container, "volumeMounts"):
        where = _below_launcher(mount.get("mountPath"))
        if mount["name"] == names.LAUNCHER_VOLUME and where == "at":
            continue  # ours, from an earlier pass
        if mount["name"] == names.LAUNCHER_VOLUME or where in ("at", "below"):
            return (f"container {name!r} mounts {mount['name']!r} at "
                    f"{mount.get('mountPath')!r}, where gpunuma mounts its volume "
                    f"{names.LAUNCHER_VOLUME!r} at {names.LAUNCHER_MOUNT_PATH!r}: {fix}")
        if where == "above" and (mount.get("readOnly") is True or any(
                volume["name"] == mount["name"] and not _READ_ONLY_SOURCES.isdisjoint(volume)
                for volume in volumes)):
            return (f"container {name!r} mounts the read-only volume {mount['name']!r} at "
                    f"{mount.get('mountPath')!r}, so {names.LAUNCHER_MOUNT_PATH!r} cannot be "
                    f"created for gpunuma's mount: {fix}")
    for device in _named_list(container, "volumeDevices"):
        where = _below_launcher(device.get("devicePath"))
        if device["name"] == names.LAUNCHER_VOLUME or where is not None:
            return (f"container {name!r} has the block device {device['name']!r} at "
                    f"{device.get('devicePath')!r}, which overlaps {names.LAUNCHER_MOUNT_PATH!r} "
                    f"where gpunuma mounts its volume: {fix}")
    return None


def _below_launcher(path: object) -> str | None:
    """Where ``path`` lies from /opt/gpunuma: "at", "below", "above" (an ancestor) or None."""
    text = str(path or "")
    if "opt" not in text and ".." not in text and text.strip("/."):
        # Cleaning only drops components: with no "opt" the path is not ours or below it, and
        # with a name left and no ".." to drop it, it is not "/" (every mount's common case).
        return None
    cleaned = posixpath.normpath("/" + text.lstrip("/"))
    ours = names.LAUNCHER_MOUNT_PATH
    if cleaned == ours:
        return "at"
    if cleaned.startswith(ours + "/"):
        return "below"
    if ours.startswith(cleaned.rstrip("/") + "/"):
        return "above"
    return None


def _skip_or_deny(policy: str, clash: str, warnings: list[str]) -> tuple[str | None]:
    """A clash denies the pod under ``strict``; otherwise the pod runs unbound, with a warning:
    a pod that would start without gpunuma must start with it."""
    if policy == "strict":
        return (clash,)
    warnings.append(warning_line(f"pod not bound: {clash}"))
    return (None,)


def _strict_denial(skipped: Sequence[str]) -> str:
    listed = _some(skipped, limit=63)
    return (f"{names.ANNOTATION_POLICY} is \"strict\" but container(s) {listed} have no command, "
            "so gpunuma cannot put numa-exec in front of the image's ENTRYPOINT. Fix: set "
            "command (and args) in the pod spec to what the image runs; or list only the other "
            f"containers in {names.ANNOTATION_CONTAINERS}; or use {names.ANNOTATION_POLICY}: "
            "\"preferred\"")


# --- Building the mutated pod ------------------------------------------------------------------


class _Edited(NamedTuple):
    """A container as the mutation wants it, and the operations that make it so."""

    source: Mapping[str, Any]
    """The container as the pod has it."""
    container: dict[str, Any]
    """A copy of ``source`` with the mutation's changes."""
    operations: list[tuple[str, str, Any]]
    """``(op, path below the container, value)``: what turns ``source`` into ``container``."""


def _wrap(container: Mapping[str, Any], policy: str, warnings: list[str]) -> _Edited:
    """``container`` running under numa-exec, with the launcher volume and the policy."""
    edited = _with_policy(container, policy, warnings)
    wrapped, operations = edited.container, edited.operations
    command = container["command"]
    if command[0] != names.LAUNCHER_PATH:
        wrapped["command"] = [names.LAUNCHER_PATH, "--", *command]
        operations += [("add", "/command/0", names.LAUNCHER_PATH), ("add", "/command/1", "--")]
    mounts = _named_list(container, "volumeMounts")
    if not any(mount["name"] == names.LAUNCHER_VOLUME for mount in mounts):
        mount = {"name": names.LAUNCHER_VOLUME, "mountPath": names.LAUNCHER_MOUNT_PATH,
                 "readOnly": True}
        wrapped["volumeMounts"] = [*mounts, mount]
        operations.append(_appended(container, "volumeMounts", mount))
    return edited


def _with_policy(container: Mapping[str, Any], policy: str, warnings: list[str]) -> _Edited:
    """``container`` with ``GPUNUMA_POLICY`` set to ``policy`` (numa-exec and the agent read it
    there)."""
    name = container["name"]
    wrapped = dict(container)
    operations: list[tuple[str, str, Any]] = []
    env = _named_list(container, "env")
    policy_entry = {"name": POLICY_ENV, "value": policy}
    if not any(entry["name"] == POLICY_ENV for entry in env):
        wrapped["env"] = [*env, policy_entry]
        operations.append(_appended(container, "env", policy_entry))
    elif policy_entry not in env:
        warnings.append(warning_line(f"container {name!r}: {POLICY_ENV} replaced by "
                                     f"{names.ANNOTATION_POLICY}'s {policy!r}"))
        wrapped["env"] = [policy_entry if entry["name"] == POLICY_ENV else entry for entry in env]
        operations += [("replace", f"/env/{index}", policy_entry)
                       for index, entry in enumerate(env) if entry["name"] == POLICY_ENV]
    return _Edited(container, wrapped, operations)


def _launcher_container(settings: MutationSettings, *, best_effort: bool) -> dict[str, Any]:
    container: dict[str, Any] = {
        "name": names.LAUNCHER_INIT_CONTAINER,
        "image": settings.launcher_image,
        "imagePullPolicy": "IfNotPresent",
        "command": list(INSTALL_COMMAND),
        "volumeMounts": [{"name": names.LAUNCHER_VOLUME, "mountPath": names.LAUNCHER_MOUNT_PATH}],
        # No runAsUser/runAsGroup: OpenShift's restricted SCC assigns a UID from the namespace's
        # range and rejects any other. runAsNonRoot makes the kubelet check the image's USER,
        # which therefore must be numeric and non-root (the Dockerfile's 65532:65532).
        "securityContext": {
            "runAsNonRoot": True,
            "allowPrivilegeEscalation": False,
            "privileged": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    # A BestEffort pod (no cpu or memory anywhere) would become Burstable if our init container
    # asked for any: the webhook must not change a pod's QoS class, so it asks for nothing there.
    if not best_effort:
        container["resources"] = {key: dict(value) for key, value in _LAUNCHER_RESOURCES.items()}
    return container


def _runs_as_pod_user(launcher: Mapping[str, Any], spec: Mapping[str, Any]) -> Mapping[str, Any]:
    """``launcher`` fitted to the UID the pod sets for every container.

    A pod-level ``runAsUser: 0`` applies to our init container too, and the kubelet refuses to
    start a container that says ``runAsNonRoot: true`` with UID 0: the whole pod would stay
    Pending. Such a pod is one that a policy lets choose its UID (Pod Security "restricted" and
    OpenShift's range-assigning SCCs reject UID 0 before it gets here), so ours names the launcher
    image's own non-root UID. Any other pod gets no UID from us: it is then the pod's non-zero
    one, the one OpenShift assigns, or the image's numeric USER.
    """
    pod_context = spec.get("securityContext")
    context = launcher.get("securityContext")
    if not (isinstance(pod_context, dict) and pod_context.get("runAsUser") == 0
            and isinstance(context, dict) and context.get("runAsNonRoot") is True
            and "runAsUser" not in context):
        return launcher
    return {**launcher, "securityContext": {**context, "runAsUser": LAUNCHER_UID}}


def _is_best_effort(*container_lists: Sequence[Mapping[str, Any]]) -> bool:
    for container in (c for containers in container_lists for c in containers):
        resources = container.get("resources")
        for field in ("limits", "requests"):
            amounts = resources.get(field) if isinstance(resources, dict) else None
            if isinstance(amounts, dict) and ("cpu" in amounts or "memory" in amounts):
                return False
    return True


def _is_windows(spec: Mapping[str, Any]) -> bool:
    os_field, selector = spec.get("os"), spec.get("nodeSelector")
    return (isinstance(os_field, dict) and os_field.get("name") == "windows") or (
        isinstance(selector, dict) and selector.get("kubernetes.io/os") == "windows")


def is_launcher(container: Mapping[str, Any]) -> bool:
    """Our init container: its name and the command only gpunuma gives it."""
    return (container.get("name") == names.LAUNCHER_INIT_CONTAINER
            and container.get("command") in _INSTALL_COMMANDS)


def _set_or_drop(annotations: dict[str, str], key: str, values: Sequence[str], *,
                 separator: str = ",") -> None:
    if values:
        annotations[key] = separator.join(values)
    else:
        annotations.pop(key, None)


# --- The JSON patch ----------------------------------------------------------------------------

# The annotations the mutation writes (it keeps every other one as it is).
_OUR_ANNOTATIONS = (names.ANNOTATION_INJECTED, names.ANNOTATION_WRAPPED, names.ANNOTATION_SKIPPED,
                    names.ANNOTATION_CGROUP_BOUND, names.ANNOTATION_WARNINGS)


def _map_operations(path: str, present: object, old: Mapping[str, str], new: Mapping[str, str],
                    keys: Sequence[str], patch: list[dict[str, Any]]) -> None:
    """What turns the string map at ``path`` (``present``, read as ``old``) into ``new``, where
    only ``keys`` may differ."""
    if not isinstance(present, dict):
        patch.append({"op": "add", "path": path, "value": new})
        return
    for key in keys:
        before, after = old.get(key), new.get(key)
        if before == after:
            continue
        where = f"{path}/{patchdiff.escape(key)}"
        if after is None:
            patch.append({"op": "remove", "path": where})
        else:
            patch.append({"op": "add" if before is None else "replace", "path": where,
                          "value": after})


def _appended(parent: Mapping[str, Any], key: str, item: object) -> tuple[str, str, Any]:
    """The operation that appends ``item`` to ``parent[key]``, or sets ``[item]`` there when it
    holds no list (absent, null)."""
    items = parent.get(key)
    if isinstance(items, list):
        return "add", f"/{key}/{len(items)}", item
    return "add", f"/{key}", [item]


def _append_operation(path: str, parent: Mapping[str, Any], key: str,
                      item: object) -> dict[str, Any]:
    op, below, value = _appended(parent, key, item)
    return {"op": op, "path": path + below, "value": value}


def _edited_list(path: str, present: object, items: Sequence[Mapping[str, Any]],
                 edited: Mapping[str, _Edited], patch: list[dict[str, Any]],
                 *, first: int = 0) -> list[Any]:
    """``items`` (the list at ``path``, ``present`` as the pod has it, its items from index
    ``first``) with each container of ``edited`` in place of its namesake."""
    result: list[Any] = []
    if not isinstance(present, list):  # absent or null: the whole (possibly empty) list is new
        result = [edited[c["name"]].container if c["name"] in edited else c for c in items]
        patch.append({"op": "add", "path": path, "value": result})
        return result
    for index, item in enumerate(items, start=first):
        change = edited.get(item["name"])
        if change is None:
            result.append(item)
            continue
        result.append(change.container)
        at = f"{path}/{index}"
        if change.source is item:
            patch += [{"op": op, "path": at + below, "value": value}
                      for op, below, value in change.operations]
        elif not patchdiff.same_json(item, change.container):
            # Two containers of one name (a hand-written manifest; the API server refuses
            # them): both become the one edited, so this one is replaced whole.
            patch.append({"op": "replace", "path": at, "value": change.container})
    return result


def _with_launcher_first(present: object, init_containers: Sequence[Mapping[str, Any]],
                         launcher: Mapping[str, Any], edited: Mapping[str, _Edited],
                         patch: list[dict[str, Any]]) -> list[Any]:
    """The init containers with ``launcher`` first and no other of ours, the others edited."""
    path = "/spec/initContainers"
    others = [c for c in init_containers if not is_launcher(c)]
    ours = [index for index, c in enumerate(init_containers) if is_launcher(c)]
    if not isinstance(present, list) or len(ours) > 1:
        # No list yet, or more than one launcher (which only a hand-written manifest has).
        result = [launcher, *(edited[c["name"]].container if c["name"] in edited else c
                              for c in others)]
        patch.append({"op": "add", "path": path, "value": result})
        return result
    if not ours:
        patch.append({"op": "add", "path": f"{path}/0", "value": launcher})
    else:
        if ours[0]:
            patch.append({"op": "move", "from": f"{path}/{ours[0]}", "path": f"{path}/0"})
        if launcher is not init_containers[ours[0]]:
            patch.append({"op": "replace", "path": f"{path}/0", "value": launcher})
    return [launcher, *_edited_list(path, present, others, edited, patch, first=1)]


# What json_patch compares: the only fields the mutation writes.
_PATCHED_FIELDS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("metadata", ("annotations", "labels")),
    ("spec", ("initContainers", "containers", "volumes")),
)
# Lists whose items have a ``name`` the mutation may insert before (the launcher init container).
_NAMED_LISTS: tuple[tuple[str, str], ...] = (
    ("spec", "initContainers"), ("spec", "containers"), ("spec", "volumes"),
)


def _patched_view(pod: Mapping[str, Any]) -> dict[str, Any]:
    view: dict[str, Any] = {}
    for section, keys in _PATCHED_FIELDS:
        part = pod.get(section)
        if isinstance(part, dict):
            view[section] = {key: part[key] for key in keys if key in part}
    return view


# --- Reading a pod defensively -----------------------------------------------------------------


def _mapping(parent: Mapping[str, Any], key: str, where: str) -> Mapping[str, Any] | None:
    value = parent.get(key)
    if value is not None and not isinstance(value, dict):
        raise InvalidPod(f"{where} must be a map, not {type(value).__name__}")
    return value


def _string_map(metadata: Mapping[str, Any] | None, key: str) -> dict[str, str]:
    value = _mapping(metadata or {}, key, f"metadata.{key}") or {}
    if not all(isinstance(item, str) for item in value.values()):
        raise InvalidPod(f"metadata.{key} values must be strings (quote them in YAML)")
    return dict(value)


def _named_list(parent: Mapping[str, Any], key: str) -> list[Mapping[str, Any]]:
    value = parent.get(key) or []
    if not isinstance(value, list):
        raise InvalidPod(f"{key} must be a list of maps, each with a name")
    for item in value:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise InvalidPod(f"{key} must be a list of maps, each with a name")
    return value


def _is_string_list(value: object) -> bool:
    return isinstance(value, list) and all(isinstance(item, str) for item in value)


# --- Warnings ----------------------------------------------------------------------------------


def _quote(value: str, limit: int = 24) -> str:
    """A user's string made safe and short for a warning line: printable, quoted, truncated."""
    return repr(value if len(value) <= limit else value[:limit] + "…")


def _some(values: Sequence[str], limit: int = 24) -> str:
    """The first few values quoted, and how many more there are."""
    shown = ", ".join(_quote(value, limit) for value in values[:_NAMES_SHOWN])
    more = len(values) - _NAMES_SHOWN
    return f"{shown} and {more} more" if more > 0 else shown


def warning_line(text: str) -> str:
    """``text`` as one warning for the user: prefixed and on one line, whole.

    ``gpunuma inject`` prints it as it is; admission cuts it with ``admission_warning``.
    """
    return "gpunuma: " + " ".join(text.split())


def admission_warning(line: str) -> str:
    """``line`` cut to WARNING_LIMIT characters, which the API server passes on whole."""
    return line if len(line) <= WARNING_LIMIT else line[: WARNING_LIMIT - 1] + "…"
