"""Reads a process's binding from the host's /proc: allowed CPUs and memory nodes, numa_maps.

``status`` is readable by anyone; ``numa_maps`` needs ``PTRACE_MODE_READ`` on the process (the
agent's ``CAP_SYS_PTRACE``) and walks the process's page tables, so the caller rate-limits it.
A process that exits meanwhile raises :class:`ProcessGone`.
"""

from __future__ import annotations

import errno
from collections.abc import Iterable
from pathlib import Path

from gpunuma.agent.observe import NumaMaps, parse_numa_maps
from gpunuma.topology import parse_cpulist

__all__ = ["ProcessGone", "main_pid", "read_allowed", "read_comm", "read_numa_maps"]


class ProcessGone(Exception):
    """The process ended while it was being read."""


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError as error:
        if error.errno in (errno.ENOENT, errno.ESRCH):
            raise ProcessGone(str(path)) from None
        raise


def read_allowed(procfs_root: Path, pid: int) -> tuple[frozenset[int], frozenset[int]]:
    """(``Cpus_allowed_list``, ``Mems_allowed_list``) of a process."""
    cpus = mems = ""
    for line in _read(procfs_root / str(pid) / "status").splitlines():
        key, _, value = line.partition(":")
        if key == "Cpus_allowed_list":
            cpus = value
        elif key == "Mems_allowed_list":
            mems = value
    return parse_cpulist(cpus), parse_cpulist(mems)


def read_comm(procfs_root: Path, pid: int) -> str:
    """The process's command name (``comm``); "" when it cannot be read."""
    try:
        return _read(procfs_root / str(pid) / "comm").strip()
    except (ProcessGone, OSError):
        return ""


def read_numa_maps(procfs_root: Path, pid: int) -> NumaMaps:
    """The process's memory policy and resident pages per node (raises PermissionError)."""
    return parse_numa_maps(_read(procfs_root / str(pid) / "numa_maps"))


def main_pid(procfs_root: Path, pids: Iterable[int]) -> int | None:
    """The container's main process: the one that started first (the runtime's init)."""
    best: tuple[int, int] | None = None
    for pid in pids:
        try:
            stat = _read(procfs_root / str(pid) / "stat")
        except (ProcessGone, OSError):
            continue
        # Field 22 (starttime) counts after the ")" closing the command name, which may hold spaces.
        fields = stat.rpartition(")")[2].split()
        if len(fields) < 20 or not fields[19].isdecimal():
            continue
        key = (int(fields[19]), pid)
        if best is None or key < best:
            best = key
    return best[1] if best else None
