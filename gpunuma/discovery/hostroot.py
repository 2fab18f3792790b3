"""The one place host paths come from: a sysfs root and a procfs root (DESIGN §5).

In a pod the host's trees are mounted at /host/sys and /host/proc; on a laptop they are /sys and
/proc; in tests they are fixture directories. Every reader takes a :class:`HostRoots` and never
spells ``/sys`` itself, so all three cases run the same code.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = ["HostRootError", "HostRoots"]


class HostRootError(ValueError):
    """A root path that does not exist or does not look like the tree it should be."""


@dataclass(frozen=True, slots=True)
class HostRoots:
    sysfs: Path
    procfs: Path

    @classmethod
    def checked(cls, sysfs: Path, procfs: Path) -> HostRoots:
        """Roots that exist and look like sysfs/procfs, or a :class:`HostRootError` saying why."""
        if not sysfs.is_dir():
            raise HostRootError(f"--sysfs-root {sysfs}: no such directory")
        if not (sysfs / "devices").is_dir() and not (sysfs / "bus").is_dir():
            raise HostRootError(
                f"--sysfs-root {sysfs}: does not look like sysfs (no devices/ or bus/ inside); "
                "point it at the host's /sys"
            )
        if not procfs.is_dir():
            raise HostRootError(f"--procfs-root {procfs}: no such directory")
        return cls(sysfs=sysfs, procfs=procfs)

    def sys(self, relative: str) -> Path:
        return self.sysfs / relative

    def proc(self, relative: str) -> Path:
        return self.procfs / relative


def read_text(path: Path) -> str:
    """A sysfs/procfs attribute without its trailing newline (OSError propagates to the caller)."""
    return path.read_text(encoding="ascii", errors="replace").strip()


def read_optional(path: Path) -> str | None:
    """An attribute that may be absent (older kernels, other drivers): None instead of an error."""
    try:
        return read_text(path)
    except FileNotFoundError:
        return None
