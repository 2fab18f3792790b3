"""One typed settings tree for every component, filled from flags and ``GPUNUMA_*`` variables.

Each component takes only its own branch (the webhook never sees discovery settings), which keeps
the pure functions' inputs explicit and lets tests build settings without parsing a command line.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from gpunuma import __version__, names

__all__ = [
    "BACKENDS",
    "DEFAULT_GPU_RESOURCES",
    "Backend",
    "DiscoverySettings",
    "MutationSettings",
    "WebhookSettings",
]

Backend = Literal["auto", "sysfs", "nvml", "amdsmi"]
BACKENDS: tuple[Backend, ...] = ("auto", "sysfs", "nvml", "amdsmi")

DEFAULT_GPU_RESOURCES: tuple[str, ...] = ("nvidia.com/gpu", "nvidia.com/mig-*", "amd.com/gpu")
DEFAULT_LAUNCHER_IMAGE = f"ghcr.io/gpunuma/gpunuma:{__version__}"


@dataclass(frozen=True, slots=True)
class DiscoverySettings:
    """Where the host's sysfs and procfs are (in the chart: /host/sys, /host/proc) and what to ask."""

    sysfs_root: Path = Path("/sys")
    procfs_root: Path = Path("/proc")
    backend: Backend = "auto"


@dataclass(frozen=True, slots=True)
class MutationSettings:
    """What the pod mutation needs: the same for the webhook and for ``gpunuma inject``."""

    launcher_image: str = DEFAULT_LAUNCHER_IMAGE
    gpu_resources: tuple[str, ...] = DEFAULT_GPU_RESOURCES
    default_policy: str = names.DEFAULT_POLICY
    version: str = __version__


@dataclass(frozen=True, slots=True)
class WebhookSettings:
    listen: str = "0.0.0.0:8443"
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    mutation: MutationSettings = field(default_factory=MutationSettings)
