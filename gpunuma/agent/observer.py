"""Finds each GPU container's processes on the host and reads what they really got.

For an ``spec.allocations`` entry the agent knows (namespace, pod, container); the Pod gives the UID
and the container id (:mod:`gpunuma.agent.nodepods`), the cpuset hierarchy the directory named after
them (every driver's and runtime's spelling), its ``cgroup.procs`` the processes, and the oldest of
them is the container's main process. Its ``/proc`` status is read on every pass (cheap); its
``numa_maps`` (memory policy, pages per node) only when the main process changed or
``memory_interval`` has passed, because reading it walks the process's page tables. Judging is
:func:`gpunuma.agent.observe.classify`'s.

Runs in a worker thread: it only reads files, and a process with a huge address space can take a
moment to walk.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gpunuma.agent.cgroupfs import CgroupGone, CpusetHierarchy
from gpunuma.agent.nodepods import PodInfo
from gpunuma.agent.observe import NumaMaps, TaskState, classify, local_share, unobserved
from gpunuma.agent.procinfo import ProcessGone, main_pid, read_allowed, read_comm, read_numa_maps
from gpunuma.topology import Layout

__all__ = ["Observer"]

logger = logging.getLogger(__name__)

ContainerKey = tuple[str, str, str]  # namespace, pod, container


@dataclass
class _MemoryReading:
    process: tuple[int, str, frozenset[int]]  # pid, comm, CPUs: a new one after an exec
    at: float
    maps: NumaMaps | None


@dataclass
class Observer:
    hierarchy: CpusetHierarchy | None
    procfs_root: Path
    clock: Callable[[], float]
    memory_interval: float = 300.0
    _memory: dict[ContainerKey, _MemoryReading] = field(default_factory=dict)
    _denied: bool = False

    def observe(
        self,
        entries: list[dict[str, Any]],
        layout: Layout,
        pods: Mapping[tuple[str, str], PodInfo],
        exclusive: Mapping[ContainerKey, frozenset[int]],
        written: Mapping[Path, frozenset[int] | None],
    ) -> list[dict[str, Any]]:
        """``entries`` with ``observed`` added to each (new dicts; the input is not changed)."""
        pod_dirs = dict(self.hierarchy.pod_directories()) if self.hierarchy else {}
        all_cpus = frozenset().union(*(node.cpus for node in layout.numa_nodes))
        seen: set[ContainerKey] = set()
        result = []
        for entry in entries:
            key = (entry["namespace"], entry["pod"], entry["container"])
            seen.add(key)
            gpu_nodes = frozenset(entry.get("numaNodes") or ())
            local = frozenset().union(*(node.cpus for node in layout.numa_nodes
                                        if node.id in gpu_nodes))
            observed = self._observe_one(key, pods.get(key[:2]), pod_dirs, gpu_nodes=gpu_nodes,
                                         local_cpus=local, all_cpus=all_cpus,
                                         exclusive=exclusive.get(key, frozenset()),
                                         written=written)
            result.append({**entry, "observed": observed})
        for gone in set(self._memory) - seen:
            del self._memory[gone]
        return result

    def _observe_one(self, key: ContainerKey, pod: PodInfo | None, pod_dirs: Mapping[str, Path],
                     *, gpu_nodes: frozenset[int], local_cpus: frozenset[int],
                     all_cpus: frozenset[int], exclusive: frozenset[int],
                     written: Mapping[Path, frozenset[int] | None]) -> dict[str, Any]:
        if self.hierarchy is None:
            return unobserved("no cpuset cgroup hierarchy found under the agent's --cgroup-root")
        if pod is None:
            return unobserved("the Pod is not known to the agent yet")
        container_id = pod.container_ids.get(key[2])
        if container_id is None:
            return unobserved("the container has not started (no container id in its status)")
        pod_dir = pod_dirs.get(pod.uid)
        directory = (self.hierarchy.container_directory(pod_dir, container_id)
                     if pod_dir is not None else None)
        if directory is None:
            return unobserved(f"no cgroup for container {container_id[:12]} of pod UID {pod.uid}")
        try:
            pid = main_pid(self.procfs_root, self.hierarchy.procs(directory))
            if pid is None:
                return unobserved("the container's cgroup has no process")
            cpus, mems = read_allowed(self.procfs_root, pid)
            cgroup_cpus, _ = self.hierarchy.effective(directory)
        except (CgroupGone, ProcessGone):
            return unobserved("the container ended while it was being read")
        maps = self._numa_maps(key, (pid, read_comm(self.procfs_root, pid), cpus))
        task = TaskState(cpus, mems, cgroup_cpus, maps,
                         local_share(maps.pages, gpu_nodes) if maps else None)
        return classify(task, gpu_nodes=gpu_nodes, local_cpus=local_cpus, all_cpus=all_cpus,
                        wrapped=key[2] in pod.wrapped, cgroup_written=written.get(directory),
                        exclusive_cpus=exclusive)

    def _numa_maps(self, key: ContainerKey,
                   process: tuple[int, str, frozenset[int]]) -> NumaMaps | None:
        """The process's numa_maps, read again when ``memory_interval`` has passed or the
        process changed: a launcher (numa-exec, numactl) sets the policy and then execs the
        workload in the same PID, so a reading taken before the exec must not stand for long."""
        reading = self._memory.get(key)
        now = self.clock()
        if (reading is not None and reading.process == process
                and now - reading.at < self.memory_interval):
            return reading.maps
        pid = process[0]
        try:
            maps: NumaMaps | None = read_numa_maps(self.procfs_root, pid)
        except PermissionError:
            if not self._denied:
                logger.warning("cannot read /proc/PID/numa_maps (the agent needs "
                               "CAP_SYS_PTRACE): memory policies are reported as unknown")
            self._denied = True
            maps = None
        except (ProcessGone, OSError):
            maps = None
        self._memory[key] = _MemoryReading(process, now, maps)
        return maps
