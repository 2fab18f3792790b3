"""The host's cpuset cgroup files: where they are, reading them, writing a container's cpuset.

One :class:`CpusetHierarchy` stands for the place cpusets live on this host: the v1 ``cpuset``
hierarchy when it is mounted (legacy and hybrid hosts, whose v2 ``unified`` mount has no cpuset
controller), else the v2 unified hierarchy when its root offers the cpuset controller. File names
differ between the two (``cpuset.effective_cpus`` vs ``cpuset.cpus.effective``); nothing else the
agent does does.

A container can end at any moment: its directory then vanishes or its files start failing with
ENOENT/ENODEV. Those surface as :class:`CgroupGone`, which callers treat as the normal end of a
container, not an error.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from gpunuma.agent.cgroups import CgroupVersion, container_of_dirname, is_kube_dirname, pod_uid_of_dirname
from gpunuma.topology import format_cpulist, parse_cpulist

__all__ = ["CgroupGone", "CpusetHierarchy", "detect_hierarchy"]

_GONE = frozenset({errno.ENOENT, errno.ENODEV, errno.ESRCH})
# kubepods[/qos]/pod: pods sit at most this deep below a kubepods directory, which itself sits
# at most this deep below the hierarchy root (kubelet --cgroup-root, e.g. /kubelet.slice/...).
_MAX_DEPTH = 5


class CgroupGone(Exception):
    """The cgroup disappeared (its container ended) while it was being read or written."""


@dataclass(frozen=True, slots=True)
class CpusetHierarchy:
    """Where cpuset cgroups live on this host and which version's file names they use."""

    root: Path
    version: CgroupVersion

    @property
    def effective_cpus_file(self) -> str:
        return "cpuset.effective_cpus" if self.version == "v1" else "cpuset.cpus.effective"

    @property
    def effective_mems_file(self) -> str:
        return "cpuset.effective_mems" if self.version == "v1" else "cpuset.mems.effective"

    def effective(self, directory: Path) -> tuple[frozenset[int], frozenset[int]]:
        """(CPUs, memory nodes) a cgroup's tasks may use now."""
        return (parse_cpulist(_read(directory / self.effective_cpus_file)),
                parse_cpulist(_read(directory / self.effective_mems_file)))

    def configured_cpus(self, directory: Path) -> str:
        return _read(directory / "cpuset.cpus").strip()

    def configured_mems(self, directory: Path) -> str:
        return _read(directory / "cpuset.mems").strip()

    def write(self, directory: Path, *, cpus: frozenset[int] | None,
              mems: frozenset[int] | None) -> None:
        """Write a container's cpuset. Memory first, so pages move before the CPUs narrow.

        On v1 ``cpuset.memory_migrate`` is set first so that pages already allocated follow the
        new ``cpuset.mems`` (v2 always migrates). Raises :class:`CgroupGone` when the container
        ended, :class:`OSError` for anything else.
        """
        if mems is not None:
            if self.version == "v1":
                _write(directory / "cpuset.memory_migrate", "1")
            _write(directory / "cpuset.mems", format_cpulist(mems))
        if cpus is not None:
            _write(directory / "cpuset.cpus", format_cpulist(cpus))

    def procs(self, directory: Path) -> list[int]:
        """PIDs (host namespace) of the cgroup's processes."""
        return [int(line) for line in _read(directory / "cgroup.procs").split() if line.isdecimal()]

    def kube_directories(self) -> Iterator[Path]:
        """Every directory that may lead to pod directories: kubepods*, QoS levels, pods."""
        yield from _kube_walk(self.root, 0)

    def pod_directories(self) -> Iterator[tuple[str, Path]]:
        """(pod UID, directory) of every pod cgroup under this hierarchy."""
        for directory in self.kube_directories():
            uid = pod_uid_of_dirname(directory.name)
            if uid is not None:
                yield uid, directory

    def container_directory(self, pod_directory: Path, container_id: str) -> Path | None:
        """The directory of container ``container_id`` in a pod directory, whichever its naming."""
        for child in _subdirectories(pod_directory):
            ref = container_of_dirname(child.name)
            if ref is not None and ref.id == container_id:
                return child
        return None


def _kube_walk(directory: Path, depth: int) -> Iterator[Path]:
    if depth > _MAX_DEPTH:
        return
    for child in _subdirectories(directory):
        if pod_uid_of_dirname(child.name) is not None:
            yield child
        elif is_kube_dirname(child.name) or depth < 2:
            if is_kube_dirname(child.name):
                yield child
            yield from _kube_walk(child, depth + 1)


def _subdirectories(directory: Path) -> list[Path]:
    try:
        with os.scandir(directory) as entries:
            return [Path(entry.path) for entry in entries if entry.is_dir(follow_symlinks=False)]
    except OSError:
        return []  # gone meanwhile, or not a directory: nothing below it


def detect_hierarchy(cgroup_root: Path) -> CpusetHierarchy | None:
    """The cpuset hierarchy under ``cgroup_root`` (the host's /sys/fs/cgroup), or None."""
    v1 = cgroup_root / "cpuset"
    if (v1 / "cpuset.cpus").is_file():
        return CpusetHierarchy(v1, "v1")
    try:
        controllers = (cgroup_root / "cgroup.controllers").read_text().split()
    except OSError:
        return None
    return CpusetHierarchy(cgroup_root, "v2") if "cpuset" in controllers else None


def _read(path: Path) -> str:
    try:
        with open(path, encoding="ascii") as handle:
            return handle.read()
    except OSError as error:
        if error.errno in _GONE:
            raise CgroupGone(str(path)) from None
        raise


def _write(path: Path, value: str) -> None:
    try:
        # One write() of the whole value, as the kernel parses it: no buffering split.
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.write(fd, value.encode("ascii"))
        finally:
            os.close(fd)
    except OSError as error:
        if error.errno in _GONE:
            raise CgroupGone(str(path)) from None
        raise
