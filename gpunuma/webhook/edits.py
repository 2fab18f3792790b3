"""Building the mutated pod: each edit made on a copy of the part it changes, and recorded as the
RFC 6902 operations that make it, compared there with the pod's own value.

A value already as the mutation wants it yields no operation, so a pod that carries the mutation
gets an empty patch; nothing else of the pod is copied or walked. Pure.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

from gpunuma import names
from gpunuma.settings import MutationSettings
from gpunuma.webhook import jsonvalue
from gpunuma.webhook.messages import warning_line
from gpunuma.webhook.podshape import named_list

__all__ = [
    "INSTALL_COMMAND",
    "LAUNCHER_UID",
    "OUR_ANNOTATIONS",
    "POLICY_ENV",
    "Edited",
    "append_operation",
    "edited_list",
    "has_named",
    "is_best_effort",
    "is_launcher",
    "launcher_container",
    "launcher_volume",
    "map_operations",
    "runs_as_pod_user",
    "set_or_drop",
    "with_launcher_first",
    "with_policy",
    "wrap",
]


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
# The init container's own resources. requests == limits, so that a Guaranteed pod stays
# Guaranteed (every container, init ones included, must have equal cpu and memory requests and
# limits): the kubelet's CPU manager hands exclusive CPUs only to Guaranteed pods.
# It copies a static binary of under 1 MB: milliseconds of CPU, and memory for one page cache copy.
_LAUNCHER_RESOURCES: dict[str, Any] = {
    "requests": {"cpu": "10m", "memory": "16Mi"},
    "limits": {"cpu": "10m", "memory": "16Mi"},
}
# The annotations the mutation writes (it keeps every other one as it is).
OUR_ANNOTATIONS = (names.ANNOTATION_INJECTED, names.ANNOTATION_WRAPPED, names.ANNOTATION_SKIPPED,
                   names.ANNOTATION_CGROUP_BOUND, names.ANNOTATION_WARNINGS)


def launcher_volume() -> dict[str, Any]:
    """The pod's volume for the launcher: memory-backed, sized for the one static binary."""
    return {"name": names.LAUNCHER_VOLUME, "emptyDir": {"medium": "Memory", "sizeLimit": "8Mi"}}


def is_launcher(container: Mapping[str, Any]) -> bool:
    """Our init container: its name and the command only gpunuma gives it."""
    return (container.get("name") == names.LAUNCHER_INIT_CONTAINER
            and container.get("command") in _INSTALL_COMMANDS)


class Edited(NamedTuple):
    """A container as the mutation wants it, and the operations that make it so."""

    source: Mapping[str, Any]
    """The container as the pod has it."""
    container: dict[str, Any]
    """A copy of ``source`` with the mutation's changes."""
    operations: list[tuple[str, str, Any]]
    """``(op, path below the container, value)``: what turns ``source`` into ``container``."""


def wrap(container: Mapping[str, Any], policy: str, warnings: list[str]) -> Edited:
    """``container`` running under numa-exec, with the launcher volume and the policy."""
    edited = with_policy(container, policy, warnings)
    wrapped, operations = edited.container, edited.operations
    command = container["command"]
    if command[0] != names.LAUNCHER_PATH:
        wrapped["command"] = [names.LAUNCHER_PATH, "--", *command]
        operations += [("add", "/command/0", names.LAUNCHER_PATH), ("add", "/command/1", "--")]
    mounts = named_list(container, "volumeMounts")
    if not has_named(mounts, names.LAUNCHER_VOLUME):
        mount = {"name": names.LAUNCHER_VOLUME, "mountPath": names.LAUNCHER_MOUNT_PATH,
                 "readOnly": True}
        wrapped["volumeMounts"] = [*mounts, mount]
        operations.append(_appended(container, "volumeMounts", mount))
    return edited


def with_policy(container: Mapping[str, Any], policy: str, warnings: list[str]) -> Edited:
    """``container`` with ``GPUNUMA_POLICY`` set to ``policy`` (numa-exec and the agent read it
    there)."""
    name = container["name"]
    wrapped = dict(container)
    operations: list[tuple[str, str, Any]] = []
    env = named_list(container, "env")
    policy_entry = {"name": POLICY_ENV, "value": policy}
    if not has_named(env, POLICY_ENV):
        wrapped["env"] = [*env, policy_entry]
        operations.append(_appended(container, "env", policy_entry))
    elif policy_entry not in env:
        warnings.append(warning_line(f"container {name!r}: {POLICY_ENV} replaced by "
                                     f"{names.ANNOTATION_POLICY}'s {policy!r}"))
        wrapped["env"] = [policy_entry if entry["name"] == POLICY_ENV else entry for entry in env]
        operations += [("replace", f"/env/{index}", policy_entry)
                       for index, entry in enumerate(env) if entry["name"] == POLICY_ENV]
    return Edited(container, wrapped, operations)


def has_named(items: Sequence[Mapping[str, Any]], name: str) -> bool:
    """Whether a named list holds an item of this name."""
    for item in items:  # noqa: SIM110 - a loop: twice as fast as any() over a generator
        if item["name"] == name:
            return True
    return False


def launcher_container(settings: MutationSettings, *, best_effort: bool) -> dict[str, Any]:
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
        container["resources"] = {"requests": dict(_LAUNCHER_RESOURCES["requests"]),
                                  "limits": dict(_LAUNCHER_RESOURCES["limits"])}
    return container


def runs_as_pod_user(launcher: Mapping[str, Any], spec: Mapping[str, Any]) -> Mapping[str, Any]:
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


def is_best_effort(*container_lists: Sequence[Mapping[str, Any]]) -> bool:
    for containers in container_lists:
        for container in containers:
            resources = container.get("resources")
            if not isinstance(resources, dict):
                continue
            for field in ("limits", "requests"):
                amounts = resources.get(field)
                if isinstance(amounts, dict) and ("cpu" in amounts or "memory" in amounts):
                    return False
    return True


def set_or_drop(annotations: dict[str, str], key: str, values: Sequence[str], *,
                separator: str = ",") -> None:
    if values:
        annotations[key] = separator.join(values)
    else:
        annotations.pop(key, None)


# Our keys as JSON-pointer segments, escaped once.
_SEGMENTS = {key: jsonvalue.escape(key) for key in (*OUR_ANNOTATIONS, names.LABEL_MANAGED)}


def map_operations(path: str, present: object, old: Mapping[str, str], new: Mapping[str, str],
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
        where = f"{path}/{_SEGMENTS.get(key) or jsonvalue.escape(key)}"
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


def append_operation(path: str, parent: Mapping[str, Any], key: str,
                     item: object) -> dict[str, Any]:
    op, below, value = _appended(parent, key, item)
    return {"op": op, "path": path + below, "value": value}


def edited_list(path: str, present: object, items: Sequence[Mapping[str, Any]],
                edited: Mapping[str, Edited], patch: list[dict[str, Any]],
                *, first: int = 0) -> list[Any]:
    """``items`` (the list at ``path``, ``present`` as the pod has it, its items from index
    ``first``) with each container of ``edited`` in place of its namesake."""
    result: list[Any] = []
    if not isinstance(present, list):  # absent or null: the whole (possibly empty) list is new
        result = [edited[c["name"]].container if c["name"] in edited else c for c in items]
        patch.append({"op": "add", "path": path, "value": result})
        return result
    index = first - 1
    for item in items:
        index += 1
        change = edited.get(item["name"])
        if change is None:
            result.append(item)
            continue
        result.append(change.container)
        at = f"{path}/{index}"
        if change.source is item:
            for op, below, value in change.operations:
                patch.append({"op": op, "path": at + below, "value": value})
        elif not jsonvalue.same_json(item, change.container):
            # Two containers of one name (a hand-written manifest; the API server refuses
            # them): both become the one edited, so this one is replaced whole.
            patch.append({"op": "replace", "path": at, "value": change.container})
    return result


def with_launcher_first(present: object, init_containers: Sequence[Mapping[str, Any]],
                        launcher: Mapping[str, Any], edited: Mapping[str, Edited],
                        patch: list[dict[str, Any]]) -> list[Any]:
    """The init containers with ``launcher`` first and no other of ours, the others edited."""
    path = "/spec/initContainers"
    others: list[Mapping[str, Any]] = []
    ours: list[int] = []
    for index, container in enumerate(init_containers):
        if is_launcher(container):
            ours.append(index)
        else:
            others.append(container)
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
    return [launcher, *edited_list(path, present, others, edited, patch, first=1)]
