"""The pod mutation (DESIGN §9) as a pure function, shared by the webhook and ``gpunuma inject``.

``mutate`` takes a pod (or a pod template) as a plain dict and returns the pod it should become,
or a denial, plus warnings for the user. It reads nothing but its arguments, so the admission path
makes no API calls and ``gpunuma inject`` gives exactly what the webhook would.

The mutation is computed as a desired state rather than a list of edits: a pod that already carries
it (reinvocation, ``gpunuma inject`` twice, a template injected offline then admitted) comes out
equal to itself, which is what makes the webhook idempotent. The RFC 6902 patch is recorded where
each value is written, compared there with the pod's own value (equal: no operation), so the
webhook never copies or walks the pod to find what changed; the tests hold that patch to an
independent differ (tests/webhook/differ.py).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

from gpunuma import names
from gpunuma.settings import MutationSettings
from gpunuma.webhook.clashes import mount_clash, name_clash
from gpunuma.webhook.edits import (
    OUR_ANNOTATIONS,
    Edited,
    append_operation,
    edited_list,
    has_named,
    is_best_effort,
    is_launcher,
    launcher_container,
    launcher_volume,
    map_operations,
    runs_as_pod_user,
    set_or_drop,
    with_launcher_first,
    with_policy,
    wrap,
)
from gpunuma.webhook.messages import quote, some, warning_line
from gpunuma.webhook.podshape import InvalidPod, is_string_list, mapping_at, named_list, string_map
from gpunuma.webhook.selection import gpu_claim_names, select

__all__ = ["MAX_CONTAINERS", "MIRROR_POD_ANNOTATION", "Mutation", "mutate"]

MIRROR_POD_ANNOTATION = "kubernetes.io/config.mirror"
# Containers (init ones included) of a pod the webhook mutates. Real pods have a handful; a pod of
# thousands costs the webhook 100+ ms of CPU per review (issue #16: four clients looping such pods
# starved every other admission), so it is left alone: admitted unchanged under preferred and
# cpu-only, denied under strict, which promises a binding.
MAX_CONTAINERS = 256


class Mutation(NamedTuple):
    """What ``mutate`` decided for one pod (a NamedTuple: immutable, and built for every admission
    at a third of a frozen dataclass's cost)."""

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
    metadata = mapping_at(pod, "metadata", "metadata")
    annotations = string_map(metadata, "annotations")
    labels = string_map(metadata, "labels")
    spec = mapping_at(pod, "spec", "spec")
    if spec is None:
        raise InvalidPod("the pod has no spec")

    def unchanged(reason: str, denial: str | None = None) -> Mutation:
        return Mutation(pod, [], denial, tuple(warnings), reason)

    if MIRROR_POD_ANNOTATION in annotations:
        return unchanged("mirror pod")
    opt_in = annotations.get(names.ANNOTATION_INJECT)
    if opt_in is not None and opt_in not in ("true", "false"):
        warnings.append(warning_line(f"{names.ANNOTATION_INJECT}={quote(opt_in)} ignored: "
                                     "use \"true\" or \"false\""))
        opt_in = None
    if opt_in == "false":
        return unchanged("opted out")
    if not (opt_in == "true" or namespace_opted_in or explicit):
        return unchanged("not opted in")

    containers = named_list(spec, "containers")
    init_containers = named_list(spec, "initContainers")
    volumes = named_list(spec, "volumes")
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
    claims = gpu_claim_names(spec, settings.gpu_claims) if spec.get("resourceClaims") else None
    selected = select(annotations, init_containers, containers, settings.gpu_resources, warnings,
                      gpu_claims=claims or frozenset())
    if not selected:
        return unchanged("no GPU containers")
    if _is_windows(spec):
        warnings.append(warning_line("Windows pods are not bound: numa-exec is a Linux "
                                     "executable"))
        return unchanged("windows pod")

    wrapped: list[str] = []
    skipped: list[str] = []
    cgroup_bound: list[str] = []
    changed_containers: dict[str, Edited] = {}
    for container in (*init_containers, *containers):
        name = container["name"]
        if name not in selected:
            continue
        command = container.get("command")
        if command is not None and not is_string_list(command):
            raise InvalidPod(f"container {name!r}: command must be a list of strings")
        if not command and settings.cgroup_binding:
            # The agent binds it through its cgroup; the env says which policy, as for numa-exec.
            changed_containers[name] = with_policy(container, policy, warnings)
            cgroup_bound.append(name)
            continue
        if not command:
            skipped.append(name)
            continue
        clash = mount_clash(container, volumes)
        if clash is not None:
            return unchanged("mount path clash", *_skip_or_deny(policy, clash, warnings))
        changed_containers[name] = wrap(container, policy, warnings)
        wrapped.append(name)

    if wrapped:
        clash = name_clash(containers, init_containers, volumes, spec)
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
    set_or_drop(new_annotations, names.ANNOTATION_WRAPPED, wrapped)
    set_or_drop(new_annotations, names.ANNOTATION_SKIPPED, skipped)
    set_or_drop(new_annotations, names.ANNOTATION_CGROUP_BOUND, cgroup_bound)
    # Warnings go back to whoever created the pod; a controller (ReplicaSet, Job…) drops them.
    # Kept on the pod, the operator turns them into Events on the pod's owner (no API call here).
    # Only ever added to: a second pass (reinvocation, inject twice) may no longer see what the
    # first warned about (an env var it replaced), and must not patch the pod again for that.
    previous = annotations.get(names.ANNOTATION_WARNINGS)
    kept = [line for line in previous.split("\n") if line] if previous else []
    set_or_drop(new_annotations, names.ANNOTATION_WARNINGS,
                kept + [w for w in warnings if w not in kept] if warnings else kept,
                separator="\n")
    new_metadata = dict(metadata or {})
    new_metadata["annotations"] = new_annotations
    if metadata is not None:
        map_operations("/metadata/annotations", metadata.get("annotations"), annotations,
                       new_annotations, OUR_ANNOTATIONS, patch)
    managed = ("true" if wrapped or cgroup_bound
               # Unbound, with something to say: the operator watches this label (any value).
               else "false" if warnings else None)
    if managed is not None:
        # Only a pod with something bound gets the label the operator selects on ("true"): a pod
        # whose GPU containers were all skipped is not bound, so it has no placement to report.
        new_metadata["labels"] = {**labels, names.LABEL_MANAGED: managed}
        if metadata is not None:
            map_operations("/metadata/labels", metadata.get("labels"), labels,
                           new_metadata["labels"], (names.LABEL_MANAGED,), patch)
    if metadata is None:
        patch.append({"op": "add", "path": "/metadata", "value": new_metadata})
    new_spec = dict(spec)
    new_spec["containers"] = edited_list("/spec/containers", spec.get("containers"), containers,
                                         changed_containers, patch)
    if wrapped:
        # Ours runs first, before any wrapped init container. One already there is kept as it is
        # (on reinvocation the API server has defaulted its fields), only moved to the front
        # should another webhook have put something before it.
        existing = next((c for c in init_containers if is_launcher(c)), None) if (
            init_containers) else None
        launcher = runs_as_pod_user(existing or launcher_container(
            settings, best_effort=is_best_effort(containers, init_containers)), spec)
        new_spec["initContainers"] = with_launcher_first(
            spec.get("initContainers"), init_containers, launcher, changed_containers, patch)
        if not has_named(volumes, names.LAUNCHER_VOLUME):
            volume = launcher_volume()
            new_spec["volumes"] = [*volumes, volume]
            patch.append(append_operation("/spec", spec, "volumes", volume))
    elif any(c["name"] in changed_containers for c in init_containers):
        new_spec["initContainers"] = edited_list("/spec/initContainers",
                                                 spec.get("initContainers"), init_containers,
                                                 changed_containers, patch)
    new_pod = {**pod, "metadata": new_metadata, "spec": new_spec}
    return Mutation(
        new_pod if patch else pod, patch, None, tuple(warnings),
        "mutated" if patch else "already mutated", tuple(wrapped), tuple(skipped),
        tuple(cgroup_bound),
    )


def _policy(annotations: Mapping[str, str], default: str, warnings: list[str]) -> str:
    value = annotations.get(names.ANNOTATION_POLICY)
    if value is None:
        return default
    if value in names.POLICIES:
        return value
    # The value never goes further than this check: numa-exec only ever sees a known policy.
    warnings.append(warning_line(f"unknown {names.ANNOTATION_POLICY}={quote(value)}, "
                                 f"using {default}"))
    return default


def _skip_or_deny(policy: str, clash: str, warnings: list[str]) -> tuple[str | None]:
    """A clash denies the pod under ``strict``; otherwise the pod runs unbound, with a warning:
    a pod that would start without gpunuma must start with it."""
    if policy == "strict":
        return (clash,)
    warnings.append(warning_line(f"pod not bound: {clash}"))
    return (None,)


def _strict_denial(skipped: Sequence[str]) -> str:
    listed = some(skipped, limit=63)
    return (f"{names.ANNOTATION_POLICY} is \"strict\" but container(s) {listed} have no command, "
            "so gpunuma cannot put numa-exec in front of the image's ENTRYPOINT. Fix: set "
            "command (and args) in the pod spec to what the image runs; or list only the other "
            f"containers in {names.ANNOTATION_CONTAINERS}; or use {names.ANNOTATION_POLICY}: "
            "\"preferred\"")


def _is_windows(spec: Mapping[str, Any]) -> bool:
    os_field, selector = spec.get("os"), spec.get("nodeSelector")
    return (isinstance(os_field, dict) and os_field.get("name") == "windows") or (
        isinstance(selector, dict) and selector.get("kubernetes.io/os") == "windows")
