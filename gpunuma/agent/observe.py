"""What a container's processes really got, judged against what their GPUs need. Pure.

Inputs are what the agent read from the host (:mod:`gpunuma.agent.procinfo`): the main process's
``Cpus_allowed_list`` and ``Mems_allowed_list``, its memory policy and resident pages per node
(``numa_maps``), the container cgroup's effective CPUs, and who may have narrowed them. The output
is the ``observed`` object of a ``spec.allocations`` entry (DESIGN §7):

- ``binding``: ``full`` (CPUs all GPU-local and memory bound or preferred to the GPUs' nodes),
  ``cpu-only`` (CPUs local, memory left to the kernel), ``none`` (CPUs not all local), or
  ``unknown`` (the container's processes were not found, e.g. not started yet).
- ``by``, who narrowed it, told apart by where the narrowing sits:
  the task's own affinity narrower than its cgroup's cpuset, or a memory policy other than
  ``default``, was set by the process itself — ``numa-exec`` when the webhook wrapped the
  container, ``process`` when the application did it (vLLM ``--numa-bind``); a cgroup cpuset
  equal to what the agent wrote there is ``cgroup``; a cgroup cpuset within the kubelet's exclusive
  CPUs is ``kubelet``; else ``none``. numa-exec needs no marker: its binding is the task-level
  one, and the webhook's ``gpunuma.io/wrapped`` annotation says it ran.
- ``reason``: why the outcome differs from the plan, in words for ``kubectl gpunuma explain``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gpunuma.topology import format_cpulist, parse_cpulist

__all__ = [
    "MemoryPolicy",
    "NumaMaps",
    "TaskState",
    "classify",
    "local_share",
    "parse_numa_maps",
    "unobserved",
]

# Memory policies that keep pages on chosen nodes (local: the CPU's node, which counts only
# through the CPUs).
_BINDING_POLICIES = frozenset({"bind", "preferred", "prefer (many)", "interleave",
                               "weighted interleave"})
_POLICY = re.compile(r"\S+ (default|local|preferred|bind|interleave|prefer \(many\)|"
                     r"weighted interleave)(?:=\w+)?(?::(\S+))?")
_NODE_PAGES = re.compile(r"\bN(\d+)=(\d+)\b")


@dataclass(frozen=True, slots=True)
class MemoryPolicy:
    mode: str  # as numa_maps spells it: default, local, preferred, bind, interleave, …
    nodes: frozenset[int] = frozenset()

    def __str__(self) -> str:
        return f"{self.mode}:{format_cpulist(self.nodes)}" if self.nodes else self.mode


@dataclass(frozen=True, slots=True)
class NumaMaps:
    """The task's memory policy (the one most mappings show) and its resident pages per node."""

    policy: MemoryPolicy | None
    pages: Mapping[int, int]


def parse_numa_maps(text: str) -> NumaMaps:
    """Read ``/proc/PID/numa_maps``: mappings without a policy of their own show the task's."""
    counts: dict[MemoryPolicy, int] = {}
    pages: dict[int, int] = {}
    for line in text.splitlines():
        match = _POLICY.match(line)
        if match is None:
            continue
        nodes = parse_cpulist(match.group(2)) if match.group(2) else frozenset()
        policy = MemoryPolicy(match.group(1), nodes)
        counts[policy] = counts.get(policy, 0) + 1
        for node, count in _NODE_PAGES.findall(line):
            pages[int(node)] = pages.get(int(node), 0) + int(count)
    policy_found = max(counts, key=lambda p: counts[p]) if counts else None
    return NumaMaps(policy_found, pages)


@dataclass(frozen=True, slots=True)
class TaskState:
    """What the agent read for one container (``None``: could not be read)."""

    cpus: frozenset[int]
    mems: frozenset[int]
    cgroup_cpus: frozenset[int] | None
    numa_maps: NumaMaps | None
    local_memory_share: float | None


def unobserved(reason: str) -> dict[str, Any]:
    """The ``observed`` object of a container whose processes were not found."""
    return {"binding": "unknown", "by": "none", "reason": reason}


def local_share(pages: Mapping[int, int], gpu_nodes: frozenset[int]) -> float | None:
    """Share of resident pages on the GPU-local nodes, rounded to 0.01; None without pages."""
    total = sum(pages.values())
    if total == 0:
        return None
    return round(sum(count for node, count in pages.items() if node in gpu_nodes) / total, 2)


def classify(
    task: TaskState,
    *,
    gpu_nodes: frozenset[int],
    local_cpus: frozenset[int],
    all_cpus: frozenset[int],
    wrapped: bool,
    cgroup_written: frozenset[int] | None,
    exclusive_cpus: frozenset[int],
) -> dict[str, Any]:
    """The ``observed`` object; see the module docstring for the rules."""
    policy = task.numa_maps.policy if task.numa_maps is not None else None
    whole_machine = bool(all_cpus) and local_cpus >= all_cpus
    cpu_local = bool(task.cpus) and bool(local_cpus) and task.cpus <= local_cpus
    policy_local = (policy is not None and policy.mode in _BINDING_POLICIES
                    and bool(policy.nodes) and policy.nodes <= gpu_nodes)
    mems_local = bool(task.mems) and bool(gpu_nodes) and task.mems <= gpu_nodes
    mem_local = policy_local or mems_local
    if cpu_local and mem_local:
        binding = "full"
    elif cpu_local:
        binding = "cpu-only"
    else:
        binding = "none"
    by = _by(task, policy, wrapped=wrapped, cgroup_written=cgroup_written,
             exclusive_cpus=exclusive_cpus)
    observed: dict[str, Any] = {
        "cpus": format_cpulist(task.cpus),
        "mems": format_cpulist(task.mems),
        "policy": str(policy) if policy is not None else "unknown",
        "localMemoryShare": task.local_memory_share,
        "binding": binding,
        "by": by,
    }
    reason = _reason(binding, by, task, policy, gpu_nodes=gpu_nodes, local_cpus=local_cpus,
                     whole_machine=whole_machine, wrapped=wrapped)
    if reason:
        observed["reason"] = reason
    return observed


def _by(task: TaskState, policy: MemoryPolicy | None, *, wrapped: bool,
        cgroup_written: frozenset[int] | None, exclusive_cpus: frozenset[int]) -> str:
    task_narrowed = task.cgroup_cpus is not None and bool(task.cpus) and task.cpus < task.cgroup_cpus
    if task_narrowed or (policy is not None and policy.mode not in ("default", "local")):
        return "numa-exec" if wrapped else "process"
    if cgroup_written is not None and task.cgroup_cpus == cgroup_written:
        return "cgroup"
    if exclusive_cpus and task.cpus and task.cpus <= exclusive_cpus:
        return "kubelet"
    return "none"


def _reason(binding: str, by: str, task: TaskState, policy: MemoryPolicy | None, *,
            gpu_nodes: frozenset[int], local_cpus: frozenset[int], whole_machine: bool,
            wrapped: bool) -> str:
    nodes = format_cpulist(gpu_nodes)
    if whole_machine and binding != "none":
        return "every CPU of this machine is local to the GPUs"
    if binding == "full":
        return ""
    if binding == "cpu-only":
        if policy is None:
            return ("CPUs are GPU-local; the memory policy could not be read (the agent needs "
                    "CAP_SYS_PTRACE for numa_maps)")
        return (f"CPUs are GPU-local; memory is not bound to node(s) {nodes} (policy {policy}, "
                f"memory nodes {format_cpulist(task.mems)}): the kernel allocates on the CPUs' "
                "node first")
    outside = format_cpulist(task.cpus - local_cpus)
    if by == "kubelet":
        return (f"the kubelet's exclusive CPUs {format_cpulist(task.cpus)} are not GPU-local "
                f"(node(s) {nodes}: CPUs {format_cpulist(local_cpus)})")
    if by == "none" and wrapped:
        return (f"numa-exec did not bind (see its log line); CPUs {outside} are outside the "
                f"GPUs' node(s) {nodes}")
    if by == "none":
        return (f"nothing bound this container; CPUs {outside} are outside the GPUs' node(s) "
                f"{nodes}")
    return f"bound by {by}, but CPUs {outside} are outside the GPUs' node(s) {nodes}"
