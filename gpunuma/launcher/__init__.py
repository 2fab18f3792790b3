"""numa-exec, the launcher that binds a container to its GPUs' NUMA nodes, and its installer.

The launcher itself is the POSIX shell script ``numa-exec`` beside this file (DESIGN §6): it runs
inside users' images, where Python may not exist. This package only ships it; ``gpunuma
install-launcher DIR`` (:mod:`gpunuma.launcher.install`) copies it into the pod's emptyDir. Nothing
here imports more than the standard library, because the installer runs in every injected pod.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["SCRIPT_NAME", "script_path"]

SCRIPT_NAME = "numa-exec"


def script_path() -> Path:
    """Where the installed package keeps numa-exec (the source for ``install-launcher``)."""
    return Path(__file__).with_name(SCRIPT_NAME)
