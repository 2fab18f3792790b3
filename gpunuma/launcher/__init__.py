"""numa-exec, the launcher that binds a container to its GPUs' NUMA nodes, and its installer.

numa-exec itself is a static C executable (``launcher/`` at the repository root, DESIGN §6): it runs
inside users' images, where Python, a shell or numactl may not exist. It ships in an image of its
own, whose init container runs ``/numa-exec --install /opt/gpunuma``; this package carries the same
binaries as package data (``bin/numa-exec-amd64``, ``bin/numa-exec-arm64``, built by
``make -C launcher package``) so that ``gpunuma install-launcher DIR`` (:mod:`gpunuma.launcher.install`)
still works from the main image. Nothing here imports more than the standard library.
"""

from __future__ import annotations

import platform
from pathlib import Path

__all__ = ["ARCHITECTURES", "BINARY_NAME", "binary_path", "machine_architecture"]

BINARY_NAME = "numa-exec"
ARCHITECTURES = ("amd64", "arm64")
# platform.machine() spellings of the two architectures numa-exec is built for.
_MACHINES = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}


def machine_architecture(machine: str | None = None) -> str | None:
    """The architecture name numa-exec is built under for ``machine`` (default: this one)."""
    return _MACHINES.get((machine if machine is not None else platform.machine()).lower())


def binary_path(architecture: str) -> Path:
    """Where the installed package keeps numa-exec for ``architecture`` (it may be absent)."""
    return Path(__file__).with_name("bin") / f"{BINARY_NAME}-{architecture}"
