"""One typed settings tree for every component, filled from flags and ``GPUNUMA_*`` variables.

Each component takes only its own branch (the webhook never sees discovery settings), which keeps
the pure functions' inputs explicit and lets tests build settings without parsing a command line.
"""

from __future__ import annotations

import fnmatch
import functools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from gpunuma import __version__, names

__all__ = [
    "BACKENDS",
    "CERTIFICATE_MODES",
    "DEFAULT_GPU_RESOURCES",
    "DEFAULT_KUBELET_SOCKET",
    "AgentSettings",
    "Backend",
    "CertificateMode",
    "CertificateSettings",
    "DiscoverySettings",
    "MutationSettings",
    "OperatorSettings",
    "WebhookSettings",
    "gpu_resource_pattern",
    "parse_listen",
]

def parse_listen(text: str) -> tuple[str | None, int]:
    """A ``--listen`` value, ``HOST:PORT``, as aiohttp's host and port.

    An empty host (``:8443``) is None: aiohttp then listens on every address of both families.
    """
    host, separator, port = text.rpartition(":")
    if not separator or not port.isdecimal() or int(port) > 65535:
        raise ValueError(f"--listen {text!r} is not HOST:PORT (e.g. :8443 for every address, "
                         "0.0.0.0:8443 or [::]:8443)")
    return host.removeprefix("[").removesuffix("]") or None, int(port)


@functools.lru_cache(maxsize=8)
def gpu_resource_pattern(globs: tuple[str, ...]) -> re.Pattern[str]:
    """One expression for the ``--gpu-resources`` globs (``nvidia.com/mig-*``), matched whole.

    The webhook matches it against every resource of every pod, the agent against every resource
    the kubelet reports: compiled once, it is one regex call per resource. No globs match nothing.
    """
    if not globs:
        return re.compile(r"(?!)")
    return re.compile("|".join(f"(?:{fnmatch.translate(glob)})" for glob in globs))


Backend = Literal["auto", "sysfs", "nvml", "amdsmi"]
BACKENDS: tuple[Backend, ...] = ("auto", "sysfs", "nvml", "amdsmi")

DEFAULT_GPU_RESOURCES: tuple[str, ...] = ("nvidia.com/gpu", "nvidia.com/mig-*", "amd.com/gpu")
DEFAULT_LAUNCHER_IMAGE = f"ghcr.io/gpunuma/gpunuma:{__version__}"
DEFAULT_KUBELET_SOCKET = Path("/var/lib/kubelet/pod-resources/kubelet.sock")


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
    # Containers without `command` go to the agent's cgroup mechanism instead of being skipped.
    cgroup_binding: bool = False

    def __post_init__(self) -> None:
        # Flags are checked by argparse, but their GPUNUMA_* environment defaults are not.
        if self.default_policy not in names.POLICIES:
            raise ValueError(f"default policy {self.default_policy!r} is not one of "
                             f"{', '.join(names.POLICIES)} (--default-policy, "
                             "GPUNUMA_DEFAULT_POLICY)")
        if not self.gpu_resources:
            raise ValueError("no GPU resource names given (--gpu-resources, "
                             "GPUNUMA_GPU_RESOURCES), e.g. nvidia.com/gpu,amd.com/gpu")
        if not self.launcher_image.strip():
            raise ValueError("the launcher image is empty (--launcher-image, "
                             "GPUNUMA_LAUNCHER_IMAGE)")


@dataclass(frozen=True, slots=True)
class WebhookSettings:
    listen: str = ":8443"  # no host: every address of both families
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    # Seconds between SIGTERM and closing the listener, answering meanwhile but not ready.
    shutdown_delay: float = 5.0
    mutation: MutationSettings = field(default_factory=MutationSettings)


@dataclass(frozen=True, slots=True)
class AgentSettings:
    """The node agent (DESIGN §7): what to discover, how often, and where to publish it.

    Periods are in seconds. ``kubeconfig`` None means in-cluster configuration (the DaemonSet).
    """

    node_name: str
    discovery: DiscoverySettings = field(default_factory=DiscoverySettings)
    interval: float = 60.0
    # A discovery still running after this long is given up on (NVML can hang on a GPU that fell
    # off the bus); the thread cannot be killed, so no other starts until it returns.
    discovery_timeout: float = 30.0
    heartbeat: float = 600.0
    allocations_interval: float = 10.0
    kubelet_socket: Path = DEFAULT_KUBELET_SOCKET
    kubelet_timeout: float = 5.0
    listen: str = ":8081"  # every address of both families: probes and Prometheus reach the pod's
    kubeconfig: Path | None = None
    gpu_resources: tuple[str, ...] = DEFAULT_GPU_RESOURCES
    # The host's cgroup filesystem (in the chart /host/cgroup): observed bindings read it, the
    # cgroup mechanism writes it.
    cgroup_root: Path = Path("/sys/fs/cgroup")
    # Bind the containers the webhook marked gpunuma.io/cgroup-bound through their cpuset.
    cgroup_binding: bool = False
    # The kubelet's CPU manager checkpoint: under the static policy the agent writes no cpuset.
    cpu_manager_state: Path = Path("/var/lib/kubelet/cpu_manager_state")
    # Seconds between two reads of one container's numa_maps (each walks its page tables).
    memory_interval: float = 300.0


# none: no webhook is installed, so there is no certificate to manage.
CertificateMode = Literal["self-managed", "cert-manager", "none"]
CERTIFICATE_MODES: tuple[CertificateMode, ...] = ("self-managed", "cert-manager", "none")


@dataclass(frozen=True, slots=True)
class CertificateSettings:
    """The webhook's serving certificate: who issues it, for which Service, kept where."""

    mode: CertificateMode = "self-managed"
    namespace: str = "gpunuma-system"
    service_name: str = "gpunuma-webhook"
    secret_name: str = "gpunuma-webhook-tls"  # noqa: S105 - a Secret's name, not a password
    webhook_configuration: str = "gpunuma"
    leaf_validity_days: float = 365.0
    renew_before_days: float = 30.0
    ca_validity_days: float = 3650.0
    ca_renew_before_days: float = 395.0


@dataclass(frozen=True, slots=True)
class OperatorSettings:
    """The operator: staleness rule, pod scope, peering, probes, certificates.

    ``pod_namespaces`` empty means every namespace. ``priority`` None picks a random one at start,
    so that two replicas never tie (kopf pauses every peer, itself included, on a tie).
    """

    heartbeat_interval_s: float = 600.0
    stale_after_heartbeats: int = 3
    check_interval_s: float = 60.0
    pod_namespaces: tuple[str, ...] = ()
    peering_name: str = "gpunuma"
    standalone: bool = False
    priority: int | None = None
    liveness_endpoint: str | None = "http://0.0.0.0:8080/healthz"
    log_format: Literal["json", "plain"] = "json"
    certificates: CertificateSettings = field(default_factory=CertificateSettings)
