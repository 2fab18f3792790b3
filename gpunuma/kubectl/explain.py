"""``kubectl gpunuma explain``: why a pod was or was not bound, from its objects. Pure.

What counts as opted in, as a GPU request and as a selected container is the webhook's own
decision: ``explain`` calls the webhook's pure functions (``gpunuma.webhook.mutation``, which reads
nothing but its arguments) rather than restating them, so the two cannot disagree.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from gpunuma import names
from gpunuma.kubectl.objects import (
    NONE,
    NUMA_EXEC_PREFIX,
    SYSTEM_NAMESPACES,
    Obj,
    all_containers,
    annotations_of,
    labels_of,
    meta_of,
    policy_of,
    wrapped_of,
)
from gpunuma.kubectl.render import format_table
from gpunuma.settings import DEFAULT_GPU_RESOURCES
from gpunuma.webhook.edits import is_launcher
from gpunuma.webhook.mutation import MIRROR_POD_ANNOTATION
from gpunuma.webhook.selection import (
    gpu_claims_used,
    gpu_requests,
    listed_containers,
    selected_containers,
)

__all__ = ["excluded_namespaces", "explain"]


# How a pod came to be opted in or not (DESIGN §3), as the webhook decides it.
OptIn = Literal["annotation", "namespace", "opted-out", "namespace-unknown", "not-asked"]


def _opt_in(pod: Obj, namespace: Obj | None) -> tuple[OptIn, str]:
    """(how the pod is opted in or why not, the same in words)."""
    value = annotations_of(pod).get(names.ANNOTATION_INJECT)
    if value == "false":
        return "opted-out", f'opted out by the annotation {names.ANNOTATION_INJECT}="false"'
    if value == "true":
        return "annotation", f'annotation {names.ANNOTATION_INJECT}="true"'
    ns_name = meta_of(pod).get("namespace", "")
    if namespace is None:
        return "namespace-unknown", (f"no {names.ANNOTATION_INJECT} annotation, and the label of "
                                     f"namespace {ns_name} could not be read")
    if labels_of(namespace).get(names.LABEL_NAMESPACE_INJECT) == names.NAMESPACE_INJECT_ENABLED:
        label = f"{names.LABEL_NAMESPACE_INJECT}={names.NAMESPACE_INJECT_ENABLED}"
        return "namespace", f"namespace {ns_name} is labelled {label}"
    return "not-asked", (f'no: add the annotation {names.ANNOTATION_INJECT}: "true" to the pod, or '
                         f"label namespace {ns_name} "
                         f"{names.LABEL_NAMESPACE_INJECT}={names.NAMESPACE_INJECT_ENABLED}")


def _placement(pod: Obj) -> dict[str, Any]:
    text = annotations_of(pod).get(names.ANNOTATION_PLACEMENT)
    if not text:
        return {}
    try:
        placement = json.loads(text)
    except ValueError:
        return {}
    return placement if isinstance(placement, dict) else {}

def _numa_exec_lines(log: str | None) -> list[str]:
    """numa-exec's lines: those at the very start of the log. numa-exec writes before it execs the
    command, so a ``gpunuma:`` line after the workload's first line is the workload's own (it could
    print a fake "bound" line) and is not shown."""
    if not log:
        return []
    found: list[str] = []
    for line in log.splitlines():
        if not line.strip():
            continue
        if not line.lstrip().startswith(NUMA_EXEC_PREFIX):
            break
        found.append(line.strip())
    return found


def _safe(line: str) -> str:
    """A line of the report with control characters escaped: pod names, annotations, placements
    and log lines come from users and workloads, and a terminal escape sequence among them could
    rewrite what the reader sees."""
    if line.isprintable():
        return line
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii")
                   for c in line)

# What became of one container, and what ``explain`` says about it.
ContainerState = Literal["wrapped", "cgroup-bound", "skipped", "not-listed", "no-gpu",
                         "selected-not-wrapped", "would-be-wrapped", "gpu-not-wrapped", "launcher"]
_STATE_TEXT: dict[ContainerState, str] = {
    "wrapped": "wrapped: numa-exec runs in front of its command",
    "cgroup-bound": "cgroup-bound: no command, the node's agent binds its cgroup's cpuset",
    "skipped": ("skipped: no command (the webhook cannot see the image's ENTRYPOINT); "
                "set command: in the pod spec"),
    "not-listed": f"not selected: not listed in {names.ANNOTATION_CONTAINERS}",
    "no-gpu": "not selected: requests no GPU",
    "selected-not-wrapped": "selected but not wrapped",
    "would-be-wrapped": "would be wrapped, had the webhook mutated the pod",
    "gpu-not-wrapped": "GPU container, not wrapped",
    "launcher": f"gpunuma's init container: copies numa-exec into {names.LAUNCHER_MOUNT_PATH}",
}


@dataclass(frozen=True)
class _Container:
    name: str
    gpus: dict[str, str]
    state: ContainerState

    @property
    def selected(self) -> bool:
        return self.state not in ("not-listed", "no-gpu", "launcher")


def _containers_report(pod: Obj, gpu_resources: Sequence[str], opted_in: bool) -> list[_Container]:
    annotations = annotations_of(pod)
    listed = bool(listed_containers(annotations))
    chosen = selected_containers(pod, gpu_resources)
    wrapped = set(wrapped_of(pod))
    skipped = {name for name in annotations.get(names.ANNOTATION_SKIPPED, "").split(",") if name}
    cgroup_bound = {name for name in annotations.get(names.ANNOTATION_CGROUP_BOUND, "").split(",")
                    if name}
    injected = names.ANNOTATION_INJECTED in annotations
    report = []
    for container in all_containers(pod):
        name = container.get("name", "")
        gpus = gpu_requests(container, gpu_resources)
        gpus.update({f"claim {claim}": "" for claim in gpu_claims_used(pod, container)})
        selected = name in chosen
        state: ContainerState
        if is_launcher(container):
            state = "launcher"
        elif name in wrapped:
            state = "wrapped"
        elif name in cgroup_bound:
            state = "cgroup-bound"
        elif name in skipped or (injected and selected and not container.get("command")):
            state = "skipped"
        elif listed and not selected:
            state = "not-listed"
        elif not selected:
            state = "no-gpu"
        elif injected:
            state = "selected-not-wrapped"
        elif opted_in:
            state = "would-be-wrapped"
        else:
            state = "gpu-not-wrapped"
        report.append(_Container(name, gpus, state))
    return report


def _observed_verdict(binding: str, annotations: Mapping[str, str]) -> str:
    """The verdict from what the node's agent observed on the processes (the operator wrote it)."""
    nodes = annotations.get(names.ANNOTATION_NUMA_NODES) or NONE
    cpus = annotations.get(names.ANNOTATION_CPUSET) or NONE
    if binding == "full":
        return f"bound to NUMA node(s) {nodes}, CPUs {cpus} (observed: CPUs and memory)"
    if binding == "cpu-only":
        return (f"CPUs bound to NUMA node(s) {nodes}, CPUs {cpus}; memory not bound "
                "(observed; see Placement)")
    if binding == "unknown":
        return (f"planned for NUMA node(s) {nodes}, CPUs {cpus}; not observed: the node's agent "
                "has not found every container's processes (see Placement)")
    return f"not bound: observed running on CPUs {cpus} (see Placement for why)"


def _placement_lines(placement: Mapping[str, Any]) -> list[str]:
    """The plan per container and, where the agent observed it, what the processes really have."""
    entries = [(name, entry) for name, entry in sorted(placement.items()) if isinstance(entry, dict)]
    rows = [[name, ",".join(map(str, entry.get("gpus") or [])) or NONE,
             ",".join(map(str, entry.get("numaNodes") or [])) or NONE,
             entry.get("plannedCpus") or entry.get("cpus") or NONE]
            for name, entry in entries]
    headers = ["NAME", "GPUS", "NUMA", "CPUS"]
    if any("binding" in entry for _, entry in entries):
        headers = ["NAME", "GPUS", "NUMA", "PLANNED CPUS", "OBSERVED CPUS", "BINDING", "BY"]
        for row, (_, entry) in zip(rows, entries, strict=True):
            observed = "binding" in entry
            row += [entry.get("cpus") or NONE if observed else "(not observed)",
                    entry.get("binding") or NONE, entry.get("by") or NONE]
    lines = ["  " + line for line in format_table(headers, rows).splitlines()]
    # Why what was observed differs from the plan, in the agent's words.
    return lines + [f"  {name}: {entry['reason']}" for name, entry in entries if entry.get("reason")]


def explain(pod: Obj, namespace: Obj | None, *, gpu_resources: Sequence[str] = DEFAULT_GPU_RESOURCES,
            logs: Mapping[str, str | None] | None = None,
            excluded_namespaces: Collection[str] | None = None) -> str:
    """Why this pod was or was not bound, from its spec, annotations, namespace and logs.

    ``excluded_namespaces``: the namespaces the webhook configuration never sends (see
    :func:`excluded_namespaces`); None when unknown, then only kube-system and kube-node-lease.
    """
    meta = meta_of(pod)
    ns_name = meta.get("namespace", "")
    annotations = annotations_of(pod)
    phase = (pod.get("status") or {}).get("phase") or "Unknown"
    node = (pod.get("spec") or {}).get("nodeName") or "(not scheduled)"
    opt_in, opt_in_text = _opt_in(pod, namespace)
    opted_in = opt_in in ("annotation", "namespace")
    injected_by = annotations.get(names.ANNOTATION_INJECTED)
    containers = _containers_report(pod, gpu_resources, opted_in or injected_by is not None)
    wrapped = [c.name for c in containers if c.state == "wrapped"]
    bound_somehow = wrapped or [c.name for c in containers if c.state == "cgroup-bound"]
    selected = [c.name for c in containers if c.selected]
    placement = _placement(pod)
    logs = logs or {}

    if MIRROR_POD_ANNOTATION in annotations:
        verdict = "not bound: a static (mirror) pod; the kubelet creates it without admission webhooks"
    elif injected_by is None and not opted_in:
        verdict = "not bound: " + (opt_in_text if opt_in == "opted-out" else "the pod did not opt in")
    elif injected_by is None:
        if not selected:
            listed = ("names none of its containers" if listed_containers(annotations)
                      else "is not set")
            verdict = (f"not bound: no container requests a GPU ({', '.join(gpu_resources)}) and "
                       f"{names.ANNOTATION_CONTAINERS} {listed}")
        elif ns_name in (SYSTEM_NAMESPACES if excluded_namespaces is None else excluded_namespaces):
            verdict = f"not bound: the webhook is never called for pods in {ns_name}"
        else:
            verdict = ("not bound: the webhook did not mutate this pod. It was created before gpunuma was "
                       "installed, or the webhook was unreachable (failurePolicy Ignore admits the pod "
                       "unchanged): check the gpunuma webhook pods, then recreate this pod")
    elif not bound_somehow:
        verdict = "not bound: no container could be wrapped (see Containers)"
    elif annotations.get(names.ANNOTATION_BINDING):
        verdict = _observed_verdict(annotations[names.ANNOTATION_BINDING], annotations)
    elif annotations.get(names.ANNOTATION_NUMA_NODES):
        verdict = (f"bound to NUMA node(s) {annotations[names.ANNOTATION_NUMA_NODES]}, "
                   f"CPUs {annotations.get(names.ANNOTATION_CPUSET) or NONE}")
    elif phase != "Running":
        verdict = f"wrapped; the placement is written once the pod runs (phase {phase})"
    else:
        verdict = (f"wrapped; no placement yet: the operator writes it once the agent on {node} reports "
                   "the pod's GPUs (kubectl gpunuma nodes shows whether that node is stale)")

    lines = [
        f"Pod:         {ns_name}/{meta.get('name', '')}",
        f"Node:        {node}",
        f"Phase:       {phase}",
        f"Verdict:     {verdict}",
        f"Opt-in:      {opt_in_text}",
        f"Policy:      {policy_of(pod) if wrapped else annotations.get(names.ANNOTATION_POLICY, NONE)}",
        f"Injected:    {f'by gpunuma {injected_by}' if injected_by else 'no'}",
        "Containers:",
    ]
    rows = [[c.name, ",".join(f"{r}={q}" if q else r for r, q in sorted(c.gpus.items())) or NONE,
             _STATE_TEXT[c.state]]
            for c in containers]
    lines += ["  " + line for line in format_table(["NAME", "GPU REQUEST", "STATUS"], rows).splitlines()]
    if placement:
        lines.append("Placement:")
        lines += _placement_lines(placement)
    if wrapped:
        lines.append("numa-exec:")
        for name in wrapped:
            log = logs.get(name)
            found = _numa_exec_lines(log)
            if found:
                lines += [f"  {name}: {line}" for line in found]
            elif log is None:
                lines.append(f"  {name}: (no log yet)")
            else:
                lines.append(f"  {name}: (no {NUMA_EXEC_PREFIX} line in the log: GPUNUMA_QUIET=1, or the log "
                             "was rotated)")
    return "\n".join(_safe(line) for line in lines) + "\n"

def excluded_namespaces(configurations: Iterable[Obj]) -> tuple[str, ...] | None:
    """The namespaces gpunuma's MutatingWebhookConfiguration never sends to the webhook (system
    namespaces, the release namespace, webhook.additionalExcludedNamespaces); None without one."""
    found: set[str] = set()
    seen = False
    for configuration in configurations:
        if not names.WEBHOOK_LABELS.items() <= labels_of(configuration).items():
            continue
        seen = True
        for hook in configuration.get("webhooks") or []:
            for expression in (hook.get("namespaceSelector") or {}).get("matchExpressions") or []:
                if expression.get("key") == "kubernetes.io/metadata.name" and (
                        expression.get("operator") == "NotIn"):
                    found.update(expression.get("values") or [])
    return tuple(sorted(found)) if seen else None
