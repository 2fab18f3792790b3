"""One typed settings tree for every component, each setting defined once, here.

Each component takes only its own branch (the webhook never sees discovery settings), which keeps
the pure functions' inputs explicit and lets tests build settings without parsing a command line.

A setting is a dataclass field made with :func:`setting`: its default, its help, its flag, its
``GPUNUMA_*`` environment variable (derived from the flag unless given), the function that parses
its text, and its choices, all in one place. ``gpunuma.cli`` derives every flag, every environment
default and every help line from these fields (:func:`options`), and converts the parsed
arguments to these classes; nothing else reads flags. A field without :func:`setting` (e.g.
``AgentSettings.kubelet_timeout``) has no flag.

To add a setting: add one field to its component's class below, e.g.::

    launch_timeout: float = setting(
        5.0, "--launch-timeout", parse=seconds, metavar="SECONDS",
        help="how long the launcher may take",
    )

Its flag ``--launch-timeout``, its variable ``GPUNUMA_LAUNCH_TIMEOUT`` and its help ``how long
the launcher may take (default 5; env GPUNUMA_LAUNCH_TIMEOUT)`` follow; the component reads
``settings.launch_timeout``. In the chart, a value that defaults to null sets the variable only
when it is set (``gpunuma.optionalEnv`` in ``templates/_helpers.tpl``), so the default stays the
one defined here. Cross-field rules (one value below another) go in the class's
``__post_init__`` and raise ``ValueError`` naming the flags.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import fnmatch
import functools
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from gpunuma import __version__, names

__all__ = [
    "BACKENDS",
    "CERTIFICATE_MODES",
    "DEFAULT_GPU_CLAIMS",
    "DEFAULT_GPU_RESOURCES",
    "DEFAULT_KUBELET_SOCKET",
    "DEFAULT_LAUNCHER_IMAGE",
    "LOG_FORMATS",
    "LOG_LEVELS",
    "AgentSettings",
    "Backend",
    "CertificateMode",
    "CertificateSettings",
    "CheckSettings",
    "CleanupSettings",
    "DiscoverySettings",
    "LoggingSettings",
    "MutationSettings",
    "OperatorSettings",
    "Option",
    "WebhookSettings",
    "gpu_resource_pattern",
    "options",
    "parse_listen",
    "setting",
]

ENV_PREFIX = "GPUNUMA_"


@dataclass(frozen=True, slots=True)
class Option:
    """How a setting appears on the command line and in the environment."""

    flag: str
    help: str
    env: str
    parse: Callable[[str], Any]
    choices: tuple[str, ...] | None = None
    metavar: str | None = None
    # The flag or the variable must be given (the field may still have a default, for code).
    required: bool = False
    # A switch: present means True; its variable is true when "1" or "true".
    switch: bool = False
    # What the help says the default is, where the field's own default does not say it.
    shown_default: str | None = None


def setting(
    default: Any, flag: str, *, help: str, parse: Callable[[str], Any] = str,
    env: str | None = None, choices: tuple[str, ...] | None = None, metavar: str | None = None,
    required: bool = False, switch: bool = False, shown_default: str | None = None,
) -> Any:
    """A settings field with its option; ``env`` defaults to ``GPUNUMA_`` + the flag's name.

    ``dataclasses.MISSING`` as the default: the field has none (code must give it too).
    """
    variable = env or ENV_PREFIX + flag.lstrip("-").replace("-", "_").upper()
    option = Option(flag, help, variable, parse, choices, metavar, required, switch, shown_default)
    if default is dataclasses.MISSING:
        return field(metadata={"option": option})
    return field(default=default, metadata={"option": option})


def options(settings_class: type) -> Iterator[tuple[tuple[str, ...], dataclasses.Field[Any], Option]]:
    """Every field of a settings class that has an option, nested classes included, with its path
    of field names (``("discovery", "backend")``)."""
    for item in dataclasses.fields(settings_class):
        option = item.metadata.get("option")
        if option is not None:
            yield (item.name,), item, option
        elif item.metadata.get("nested"):
            for path, inner, inner_option in options(item.metadata["nested"]):
                yield (item.name, *path), inner, inner_option


def nested(settings_class: type) -> Any:
    """A field holding another settings class, whose options are part of this one's."""
    return field(default_factory=settings_class, metadata={"nested": settings_class})


# --- parsers: text → value, ValueError naming what is expected -----------------------------------


def seconds(text: str) -> float:
    """More than 0 seconds."""
    value = _number(text, "seconds")
    if not value > 0:
        raise ValueError(f"{text!r}: must be more than 0 seconds")
    return value


def non_negative_seconds(text: str) -> float:
    value = _number(text, "seconds")
    if not value >= 0:
        raise ValueError(f"{text!r}: must be 0 seconds or more")
    return value


def days(text: str) -> float:
    return _number(text, "days")


def _number(text: str, unit: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a number of {unit}") from None


def integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a whole number") from None


def csv(text: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in text.split(",") if item.strip())


def optional_text(text: str) -> str | None:
    """Empty means none."""
    return text or None


def listen_address(text: str) -> str:
    parse_listen(text)
    return text


def optional_listen_address(text: str) -> str | None:
    """Empty means none (the server is off)."""
    return listen_address(text) if text else None


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
    """One expression for the ``--gpu-resources`` globs (``nvidia.com/mig-*``), matched whole
    (also for the ``--gpu-claims`` globs).

    The webhook matches it against every resource of every pod, the agent against every resource
    the kubelet reports: compiled once, it is one regex call per resource. No globs match nothing.
    """
    if not globs:
        return re.compile(r"(?!)")
    return re.compile("|".join(f"(?:{fnmatch.translate(glob)})" for glob in globs))


Backend = Literal["auto", "sysfs", "nvml", "amdsmi"]
BACKENDS: tuple[Backend, ...] = ("auto", "sysfs", "nvml", "amdsmi")

DEFAULT_GPU_RESOURCES: tuple[str, ...] = ("nvidia.com/gpu", "nvidia.com/mig-*", "amd.com/gpu")
# DRA: at admission a pod names its ResourceClaims (or their templates) but not their DeviceClass,
# so a container counts as a GPU container when a claim it uses has a name matching these globs.
DEFAULT_GPU_CLAIMS: tuple[str, ...] = ("*gpu*",)
# The launcher image: only the static numa-exec (the Dockerfile's `launcher` target).
DEFAULT_LAUNCHER_IMAGE = f"ghcr.io/gpunuma/numa-exec:{__version__}"
DEFAULT_KUBELET_SOCKET = Path("/var/lib/kubelet/pod-resources/kubelet.sock")
# The agent's --heartbeat, which the operator's and `gpunuma check`'s --heartbeat-interval mirror.
DEFAULT_HEARTBEAT_S = 600.0


def _gpu_resources() -> Any:
    """The one GPU-resources setting, a field of both the agent's and the mutation's settings."""
    return setting(DEFAULT_GPU_RESOURCES, "--gpu-resources", parse=csv, metavar="NAME,…",
                   help="resource names that mean 'GPU', * globs allowed")


def _cgroup_binding() -> Any:
    """The one switch of the cgroup mechanism, a field of both the agent's and the mutation's."""
    return setting(False, "--cgroup-binding", switch=True,
                   help="the cgroup mechanism: containers without command are listed in "
                   "gpunuma.io/cgroup-bound (webhook) and bound through their cgroup's cpuset "
                   "(agent, which then needs the cgroup filesystem writable)")
LogLevel = Literal["debug", "info", "warning", "error"]
LogFormat = Literal["json", "plain"]
LOG_LEVELS: tuple[LogLevel, ...] = ("debug", "info", "warning", "error")
LOG_FORMATS: tuple[LogFormat, ...] = ("json", "plain")


@dataclass(frozen=True, slots=True)
class LoggingSettings:
    """How a long-running component logs (``gpunuma.logs``); one nested branch for each."""

    level: LogLevel = setting("info", "--log-level", choices=LOG_LEVELS,
                              help="least severe records logged")
    format: LogFormat = setting("json", "--log-format", choices=LOG_FORMATS,
                                help="json (one object per line) or plain")


@dataclass(frozen=True, slots=True)
class DiscoverySettings:
    """Where the host's sysfs and procfs are (in the chart: /host/sys, /host/proc) and what to ask."""

    sysfs_root: Path = setting(Path("/sys"), "--sysfs-root", parse=Path,
                               help="where the host's /sys is mounted")
    procfs_root: Path = setting(Path("/proc"), "--procfs-root", parse=Path,
                                help="where the host's /proc is mounted")
    backend: Backend = setting(
        "auto", "--backend", choices=BACKENDS,
        help="what decides the GPUs and their NUMA nodes (auto: vendor libraries where they "
        "work, sysfs for the rest)",
    )


@dataclass(frozen=True, slots=True)
class MutationSettings:
    """What the pod mutation needs: the same for the webhook and for ``gpunuma inject``."""

    launcher_image: str = setting(DEFAULT_LAUNCHER_IMAGE, "--launcher-image",
                                  help="the launcher image (only the static numa-exec), run "
                                  "by the injected init container as /numa-exec --install "
                                  "/opt/gpunuma; REPO@sha256:… pins a digest")
    gpu_resources: tuple[str, ...] = _gpu_resources()
    default_policy: str = setting(names.DEFAULT_POLICY, "--default-policy", choices=names.POLICIES,
                                  help="policy for pods that do not set gpunuma.io/policy")
    gpu_claims: tuple[str, ...] = setting(
        DEFAULT_GPU_CLAIMS, "--gpu-claims", parse=csv, metavar="NAME,…",
        help="DRA: a container using a ResourceClaim whose name, or whose template's name, matches "
        "one of these globs is a GPU container; empty for none")
    version: str = __version__
    cgroup_binding: bool = _cgroup_binding()

    def __post_init__(self) -> None:
        # Settings built in code do not pass through the parsers: the same rules apply.
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
    listen: str = setting(":8443", "--listen", parse=listen_address,
                          help="HOST:PORT to listen on; no HOST: every IPv4 and IPv6 address")
    tls_cert_file: Path | None = setting(None, "--tls-cert-file", parse=Path, required=True,
                                         help="PEM certificate chain, reloaded when it changes")
    tls_key_file: Path | None = setting(None, "--tls-key-file", parse=Path, required=True,
                                        help="PEM private key, reloaded when it changes")
    shutdown_delay: float = setting(
        5.0, "--shutdown-delay", parse=non_negative_seconds, metavar="SECONDS",
        help="after SIGTERM, report not-ready on /readyz but keep answering this long, while "
        "endpoints still route here",
    )
    mutation: MutationSettings = nested(MutationSettings)
    logging: LoggingSettings = nested(LoggingSettings)


@dataclass(frozen=True, slots=True)
class AgentSettings:
    """The node agent (DESIGN §7): what to discover, how often, and where to publish it.

    Periods are in seconds. ``kubeconfig`` None means in-cluster configuration (the DaemonSet).
    """

    node_name: str = setting(dataclasses.MISSING, "--node-name", env="NODE_NAME", required=True,
                             help="this node's name (from the downward API spec.nodeName)")
    discovery: DiscoverySettings = nested(DiscoverySettings)
    interval: float = setting(60.0, "--interval", parse=seconds,
                              help="seconds between discoveries")
    # A discovery still running after this long is given up on (NVML can hang on a GPU that fell
    # off the bus); the thread cannot be killed, so no other starts until it returns.
    discovery_timeout: float = setting(
        30.0, "--discovery-timeout", parse=seconds,
        help="seconds a discovery may run before it counts as hung; no other starts until it "
        "returns",
    )
    heartbeat: float = setting(DEFAULT_HEARTBEAT_S, "--heartbeat", parse=seconds,
                               help="seconds between heartbeatTime updates")
    allocations_interval: float = setting(10.0, "--allocations-interval", parse=seconds,
                                          help="seconds between kubelet PodResources polls")
    kubelet_socket: Path = setting(DEFAULT_KUBELET_SOCKET, "--kubelet-socket", parse=Path,
                                   help="the kubelet's PodResources socket")
    kubelet_timeout: float = 5.0
    # Every address of both families: probes and Prometheus reach the pod's IP, whichever it is.
    listen: str = setting(":8081", "--listen", parse=listen_address,
                          help="HOST:PORT for /healthz and /metrics; no HOST: every IPv4 and "
                          "IPv6 address")
    kubeconfig: Path | None = setting(None, "--kubeconfig", parse=Path,
                                      help="kubeconfig to use instead of the in-cluster service "
                                      "account")
    gpu_resources: tuple[str, ...] = _gpu_resources()
    # The host's cgroup filesystem (in the chart /host/sys/fs/cgroup, or /host/cgroup when it
    # must be writable): observed bindings read it, the cgroup mechanism writes it.
    cgroup_root: Path = setting(Path("/sys/fs/cgroup"), "--cgroup-root", parse=Path,
                                help="where the host's cgroup filesystem is mounted")
    cgroup_binding: bool = _cgroup_binding()
    cpu_manager_state: Path = setting(
        Path("/var/lib/kubelet/cpu_manager_state"), "--cpu-manager-state", parse=Path,
        help="the kubelet's CPU manager checkpoint; under its static policy no cpuset is written")
    memory_interval: float = setting(
        300.0, "--memory-interval", parse=seconds,
        help="seconds between two reads of a container's numa_maps (each walks its page tables)")
    logging: LoggingSettings = nested(LoggingSettings)


# The settings the operator acts on and `gpunuma check` verifies: one flag, variable and default
# each, with the help of the command that takes it.
def _heartbeat_interval(help: str) -> Any:
    return setting(DEFAULT_HEARTBEAT_S, "--heartbeat-interval", parse=seconds, metavar="SECONDS", help=help)


def _stale_after(help: str) -> Any:
    return setting(3, "--stale-after", parse=integer, metavar="N", help=help)


def _peering_name(help: str) -> Any:
    return setting("gpunuma", "--peering-name", help=help)


def _webhook_configuration(help: str) -> Any:
    return setting("gpunuma", "--webhook-configuration", help=help)


# none: no webhook is installed, so there is no certificate to manage.
CertificateMode = Literal["self-managed", "cert-manager", "none"]
CERTIFICATE_MODES: tuple[CertificateMode, ...] = ("self-managed", "cert-manager", "none")


@dataclass(frozen=True, slots=True)
class CertificateSettings:
    """The webhook's serving certificate: who issues it, for which Service, kept where, and its
    lifetimes (a leaf never outlives its CA: it is cut at the CA's expiry).

    ``namespace`` empty means the operator's own (looked up when the operator starts).
    """

    mode: CertificateMode = setting(
        "self-managed", "--certificates", choices=CERTIFICATE_MODES,
        help="self-managed (the operator runs a CA), cert-manager (leave them to it) or none "
        "(no webhook)",
    )
    namespace: str = setting("", "--namespace", shown_default="the operator's own",
                             help="namespace of the webhook Service and Secret")
    service_name: str = setting("gpunuma-webhook", "--webhook-service",
                                help="the webhook's Service")
    secret_name: str = setting(
        "gpunuma-webhook-tls", "--webhook-secret",
        help="Secret for tls.crt/tls.key/ca.crt, its CA in <name>-ca",
    )
    webhook_configuration: str = _webhook_configuration(
        "MutatingWebhookConfiguration whose caBundle is kept current")
    leaf_validity_days: float = setting(365.0, "--cert-validity-days", parse=days,
                                        metavar="DAYS", help="serving certificate lifetime")
    renew_before_days: float = setting(30.0, "--cert-renew-before-days", parse=days,
                                       metavar="DAYS", help="renew when fewer days are left")
    ca_validity_days: float = 3650.0
    ca_renew_before_days: float = 395.0

    def __post_init__(self) -> None:
        if not 0 < self.renew_before_days < self.leaf_validity_days:
            raise ValueError(
                f"--cert-renew-before-days ({self.renew_before_days:g}) must be > 0 and below "
                f"--cert-validity-days ({self.leaf_validity_days:g})"
            )

    @property
    def leaf_validity(self) -> dt.timedelta:
        return dt.timedelta(days=self.leaf_validity_days)

    @property
    def leaf_renew_before(self) -> dt.timedelta:
        return dt.timedelta(days=self.renew_before_days)

    @property
    def ca_validity(self) -> dt.timedelta:
        return dt.timedelta(days=self.ca_validity_days)

    @property
    def ca_renew_before(self) -> dt.timedelta:
        return dt.timedelta(days=self.ca_renew_before_days)


@dataclass(frozen=True, slots=True)
class OperatorSettings:
    """The operator: staleness rule, pod scope, peering, probes, certificates.

    ``pod_namespaces`` empty means every namespace. ``priority`` None picks a random one at start,
    so that two replicas never tie (kopf pauses every peer, itself included, on a tie).
    """

    heartbeat_interval_s: float = _heartbeat_interval(
        "how often agents send a heartbeat (the agent's --heartbeat)")
    stale_after_heartbeats: int = _stale_after(
        "missed heartbeats before a node is labelled gpunuma.io/stale=true")
    check_interval_s: float = setting(
        60.0, "--check-interval", parse=seconds, metavar="SECONDS",
        help="how often heartbeats and certificates are re-checked",
    )
    pod_namespaces: tuple[str, ...] = setting((), "--pod-namespaces", parse=csv, metavar="NS,…",
                                              shown_default="all",
                                              help="watch pods only in these namespaces")
    peering_name: str = _peering_name("kopf ClusterKopfPeering object shared by the replicas")
    standalone: bool = setting(False, "--standalone", switch=True,
                               help="no peering: only for a single replica")
    priority: int | None = setting(None, "--priority", parse=integer,
                                   shown_default="random, so replicas never tie",
                                   help="peering priority; the highest live replica acts")
    liveness_endpoint: str | None = setting(
        "http://0.0.0.0:8080/healthz", "--liveness", parse=optional_text, metavar="URL",
        help="liveness endpoint, empty to disable",
    )
    metrics_listen: str | None = setting(
        ":8082", "--metrics-listen", parse=optional_listen_address, metavar="HOST:PORT",
        help="Prometheus /metrics; empty to disable",
    )
    logging: LoggingSettings = nested(LoggingSettings)
    certificates: CertificateSettings = nested(CertificateSettings)

    def __post_init__(self) -> None:
        if self.stale_after_heartbeats < 1:
            raise ValueError(f"--stale-after must be at least 1 heartbeat, got "
                             f"{self.stale_after_heartbeats}")


def _kubeconfig() -> Any:
    return setting(None, "--kubeconfig", parse=Path,
                   shown_default="in a pod its service account, else ~/.kube/config",
                   help="kubeconfig to use instead of the in-cluster service account")


@dataclass(frozen=True, slots=True)
class CleanupSettings:
    """``gpunuma cleanup-nodes`` (the chart's post-delete hook)."""

    kubeconfig: Path | None = _kubeconfig()
    logging: LoggingSettings = nested(LoggingSettings)


CHECKS: tuple[str, ...] = ("agents", "operator", "webhook")


def check_names(text: str) -> frozenset[str]:
    chosen = frozenset(csv(text))
    unknown = sorted(chosen - set(CHECKS))
    if unknown:
        raise ValueError(f"{','.join(unknown)}: choose from {', '.join(CHECKS)}")
    return chosen


@dataclass(frozen=True, slots=True)
class CheckSettings:
    """``gpunuma check``: where the release's parts are and how fresh agents must be."""

    kubeconfig: Path | None = _kubeconfig()
    heartbeat_interval_s: float = _heartbeat_interval("the agents' --heartbeat")
    stale_after_heartbeats: int = _stale_after(
        "missed heartbeats after which an agent counts as silent")
    peering_name: str = _peering_name("the operator's ClusterKopfPeering")
    webhook_configuration: str = _webhook_configuration(
        "the release's MutatingWebhookConfiguration")
    webhook_address: str | None = setting(
        None, "--webhook-address", parse=optional_text, metavar="HOST:PORT",
        help="connect here instead of the webhook Service's name (a port-forward); the "
        "certificate is still checked for the Service's name",
    )
    skip: frozenset[str] = setting(frozenset(), "--skip", parse=check_names,
                                   metavar="agents,operator,webhook", shown_default="none",
                                   help="checks to leave out, for a release without those parts")
    timeout_s: float = 10.0
