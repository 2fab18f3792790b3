"""Linux inotify through ctypes: directory creations and file writes, as a readable descriptor.

Why inotify and not a poll: a container's cgroup directory exists from ``runc create`` on, a
moment before its command runs; an event wakes the agent within microseconds of the ``mkdir``,
where a poll of every pod directory would cost a scan per period on a node with hundreds of
containers and still be a period late. The kernel raises these events on cgroupfs like on any
other filesystem (``vfs_mkdir`` and ``vfs_write`` notify), and ``IN_Q_OVERFLOW`` tells the caller
to rescan, so nothing is lost for good.

No third-party package: glibc's three calls are all it takes, and the agent image stays small.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import struct
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "IN_CREATE",
    "IN_DELETE_SELF",
    "IN_IGNORED",
    "IN_ISDIR",
    "IN_MODIFY",
    "IN_ONLYDIR",
    "IN_Q_OVERFLOW",
    "Event",
    "Inotify",
    "InotifyUnavailable",
]

IN_MODIFY = 0x00000002
IN_CREATE = 0x00000100
IN_DELETE_SELF = 0x00000400
IN_Q_OVERFLOW = 0x00004000
IN_IGNORED = 0x00008000
IN_ONLYDIR = 0x01000000
IN_ISDIR = 0x40000000

_HEADER = struct.Struct("iIII")  # wd, mask, cookie, len


class InotifyUnavailable(OSError):
    """inotify cannot be used here (no libc symbol, or the instance limit is reached)."""


@dataclass(frozen=True, slots=True)
class Event:
    watch: int
    mask: int
    name: str


class Inotify:
    """One non-blocking inotify instance; register :meth:`fileno` with a selector or event loop."""

    def __init__(self) -> None:
        try:
            self._libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
            init = self._libc.inotify_init1
        except (OSError, AttributeError) as error:
            raise InotifyUnavailable(f"inotify is not available: {error}") from None
        self._fd = int(init(os.O_NONBLOCK | os.O_CLOEXEC))
        if self._fd < 0:
            number = ctypes.get_errno()
            raise InotifyUnavailable(number, f"inotify_init1: {os.strerror(number)}")

    def fileno(self) -> int:
        return self._fd

    def add_watch(self, path: Path, mask: int) -> int:
        """Watch ``path``; raises :class:`OSError` (ENOENT when it is already gone)."""
        watch = int(self._libc.inotify_add_watch(self._fd, os.fsencode(path), mask))
        if watch < 0:
            number = ctypes.get_errno()
            raise OSError(number, os.strerror(number), str(path))
        return watch

    def read(self) -> list[Event]:
        """The events queued now (none when nothing is pending)."""
        try:
            data = os.read(self._fd, 64 * 1024)
        except BlockingIOError:
            return []
        events: list[Event] = []
        offset = 0
        while offset + _HEADER.size <= len(data):
            watch, mask, _, length = _HEADER.unpack_from(data, offset)
            start = offset + _HEADER.size
            name = data[start:start + length].rstrip(b"\0").decode(errors="replace")
            events.append(Event(watch, mask, name))
            offset = start + length
        return events

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
