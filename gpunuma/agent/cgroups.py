"""Kubernetes container cgroups: their names, and the cpuset the agent writes into one. Pure.

The kubelet and the container runtime name cgroups in four ways (driver × runtime), under either
cgroup version; the names, not the version, differ:

==================  ===============================================  ===========================
driver              pod directory                                    container directory
==================  ===============================================  ===========================
cgroupfs            ``kubepods/burstable/pod<uid>``                  ``<id>`` (containerd),
                                                                     ``crio-<id>`` (CRI-O)
systemd             ``kubepods.slice/kubepods-burstable.slice/``     ``cri-containerd-<id>.scope``,
                    ``kubepods-burstable-pod<uid with _>.slice``     ``crio-<id>.scope``,
                                                                     ``docker-<id>.scope``
==================  ===============================================  ===========================

Guaranteed pods sit directly under ``kubepods``. CRI-O also makes ``crio-conmon-<id>.scope`` for its
monitor process: not the container, never written. The sandbox ("pause") container has a directory
like any other; the agent tells containers apart by what their processes' mounts say (see
:func:`container_of_mountinfo`), never by position.

What gets written (:func:`cpuset_plan`): CPUs = the GPU-local CPUs ∩ what the container may use
now; memory nodes only under ``strict`` (GPU-local nodes ∩ allowed). Under ``preferred`` the agent
writes CPUs alone: with every thread on the GPU's node the kernel's default local allocation puts
new pages there, while a full node still spills elsewhere instead of the container being killed by
the OOM killer, which is what ``cpuset.mems`` would do.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Literal

from gpunuma.topology import format_cpulist

__all__ = [
    "CgroupVersion",
    "ContainerRef",
    "CpusetPlan",
    "container_id_of_status",
    "container_of_dirname",
    "container_of_mountinfo",
    "cpu_manager_policy",
    "cpuset_plan",
    "is_kube_dirname",
    "pod_uid_of_dirname",
]

CgroupVersion = Literal["v1", "v2"]

_UID = r"[0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{12}"
_POD_CGROUPFS = re.compile(rf"pod({_UID})")
_POD_SYSTEMD = re.compile(rf"kubepods(?:-[a-z]+)?-pod({_UID})\.slice")
_CONTAINER = re.compile(
    r"(?:(?P<prefix>cri-containerd|crio|docker|cri-o)-)?(?P<id>[0-9a-f]{64})(?:\.scope)?"
)
_QOS = frozenset({"burstable", "besteffort"})


def pod_uid_of_dirname(name: str) -> str | None:
    """The pod UID a pod cgroup directory is named after (dashed form), else None."""
    match = _POD_CGROUPFS.fullmatch(name) or _POD_SYSTEMD.fullmatch(name)
    return match.group(1).replace("_", "-") if match else None


@dataclass(frozen=True, slots=True)
class ContainerRef:
    """A container directory: the runtime its name implies and the container id."""

    runtime: Literal["containerd", "cri-o", "docker"]
    id: str


def container_of_dirname(name: str) -> ContainerRef | None:
    """The container a directory under a pod directory is, or None (conmon, anything else)."""
    match = _CONTAINER.fullmatch(name)
    if match is None:
        return None
    prefix = match.group("prefix")
    if name.endswith(".scope") and prefix is None:
        return None
    runtime: Literal["containerd", "cri-o", "docker"]
    if prefix in (None, "cri-containerd"):
        runtime = "containerd"
    elif prefix in ("crio", "cri-o"):
        runtime = "cri-o"
    else:
        runtime = "docker"
    return ContainerRef(runtime, match.group("id"))


def is_kube_dirname(name: str) -> bool:
    """Whether a directory may lead to pod directories: kubepods itself, a QoS level, a pod."""
    return ("kubepods" in name or name in _QOS) and not name.endswith(".scope")


def container_id_of_status(container_id: str) -> str | None:
    """The bare id of a Pod status ``containerID`` (``containerd://<id>``, ``cri-o://<id>``)."""
    _, separator, bare = container_id.partition("://")
    bare = bare if separator else container_id
    return bare if re.fullmatch(r"[0-9a-f]{64}", bare) else None


_TERMINATION_LOG = re.compile(r"/pods/(" + _UID + r")/containers/([^/\s]+)/[^/\s]+")


def container_of_mountinfo(text: str) -> tuple[str, str] | None:
    """(pod UID, container name) of a process, from its ``/proc/PID/mountinfo``, else None.

    The kubelet bind-mounts each container's termination-message file from
    ``<kubelet root>/pods/<pod uid>/containers/<container name>/<id>``, and the kernel shows that
    source path in the mount's "root" field. It is there as soon as the runtime has set up the
    container's mounts (before its command runs), needs no privilege to read (unlike ``environ``,
    which would also expose the container's secrets), and names the container the kubelet knows.
    A pod whose containers set ``terminationMessagePath: ""`` falls back to the container id of
    the Pod's status.
    """
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 5:
            continue
        match = _TERMINATION_LOG.search(fields[3])
        if match is not None:
            return match.group(1), _unescape(match.group(2))
    return None


def _unescape(text: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as octal; container names cannot hold
    # them (DNS labels), so any escape means "not a container name".
    return text if "\\" not in text else ""


@dataclass(frozen=True, slots=True)
class CpusetPlan:
    """What to write into a container's cpuset; ``None`` fields are left as they are."""

    cpus: frozenset[int] | None
    mems: frozenset[int] | None
    reason: str = ""

    @property
    def cpus_text(self) -> str:
        return format_cpulist(self.cpus or ())

    @property
    def mems_text(self) -> str:
        return format_cpulist(self.mems or ())


def cpuset_plan(
    *,
    policy: str,
    local_cpus: frozenset[int],
    allowed_cpus: frozenset[int],
    gpu_nodes: frozenset[int],
    allowed_mems: frozenset[int],
) -> CpusetPlan:
    """The cpuset for a container whose GPUs are local to ``gpu_nodes`` (CPUs ``local_cpus``).

    ``allowed_*`` are what the container may use now (its parent's effective cpuset): the agent
    narrows, never widens. An empty intersection writes nothing, with the reason: a cpuset with no
    CPUs cannot hold tasks, and the container is better unpinned than failing.
    """
    if not gpu_nodes or not local_cpus:
        return CpusetPlan(None, None, "the container's GPUs have no known NUMA node")
    cpus = local_cpus & allowed_cpus
    if not cpus:
        return CpusetPlan(None, None, f"none of the GPU-local CPUs {format_cpulist(local_cpus)} "
                          f"is among the container's CPUs {format_cpulist(allowed_cpus)}")
    mems: frozenset[int] | None = None
    reason = ""
    if policy == "strict":
        mems = gpu_nodes & allowed_mems
        if not mems:
            return CpusetPlan(None, None, f"strict: the GPUs' NUMA nodes "
                              f"{format_cpulist(gpu_nodes)} are not among the container's memory "
                              f"nodes {format_cpulist(allowed_mems)}")
    elif policy == "preferred":
        reason = "preferred: CPUs only; the kernel allocates memory on the CPUs' node first"
    return CpusetPlan(frozenset(cpus), mems, reason)


def cpu_manager_policy(state_text: str) -> str | None:
    """The ``policyName`` of the kubelet's ``cpu_manager_state`` checkpoint, or None if unreadable.

    Under ``static`` the kubelet rewrites every container's cpuset when it reconciles (exclusive
    CPUs for Guaranteed containers, the shared pool for the rest), so another writer would fight it.
    """
    try:
        document = json.loads(state_text)
    except ValueError:
        return None
    name = document.get("policyName") if isinstance(document, dict) else None
    return name if isinstance(name, str) and name else None
