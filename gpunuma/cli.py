"""The ``gpunuma`` command: one argparse entry for every component (DESIGN §2).

Each subcommand imports its component only when it runs, so that ``gpunuma install-launcher`` (run in
every injected pod's init container) starts without loading kopf, the Kubernetes client or NVML.
Every flag that a Deployment would set also reads a ``GPUNUMA_*`` environment variable.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from gpunuma import __version__, names
from gpunuma.settings import (
    BACKENDS,
    DEFAULT_GPU_RESOURCES,
    DEFAULT_KUBELET_SOCKET,
    DEFAULT_LAUNCHER_IMAGE,
)

EXIT_USAGE = 2


def _env(name: str, default: str | None = None) -> str | None:
    return os.environ.get(f"GPUNUMA_{name}", default)


def _csv(text: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in text.split(",") if item.strip())


def _add_discovery_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--sysfs-root", type=Path, default=Path(_env("SYSFS_ROOT", "/sys") or "/sys"),
        help="where the host's /sys is mounted (default /sys; env GPUNUMA_SYSFS_ROOT)",
    )
    parser.add_argument(
        "--procfs-root", type=Path, default=Path(_env("PROCFS_ROOT", "/proc") or "/proc"),
        help="where the host's /proc is mounted (default /proc; env GPUNUMA_PROCFS_ROOT)",
    )
    parser.add_argument(
        "--backend", choices=BACKENDS, default=_env("BACKEND", "auto"),
        help="what decides the GPUs and their NUMA nodes (default auto: vendor libraries where "
        "they work, sysfs for the rest; env GPUNUMA_BACKEND)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gpunuma",
        description="Bind GPU containers to the NUMA nodes local to their GPUs.",
    )
    parser.add_argument("--version", action="version", version=f"gpunuma {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    inspect = commands.add_parser(
        "inspect", help="show this machine's GPU↔NUMA layout and the node labels it would get",
        description="Discover this machine's NUMA nodes and GPUs and show the labels the node "
        "would get.",
    )
    _add_discovery_arguments(inspect)
    inspect.add_argument(
        "--output", "-o", choices=("table", "json", "labels"), default="table",
        help="table (default), json (the layout document plus labels) or labels (key=value lines)",
    )
    inspect.set_defaults(handler=_run_inspect)

    _add_agent_parser(commands)

    install = commands.add_parser(
        "install-launcher", help="copy numa-exec into DIR (the webhook's init container runs this)",
    )
    install.add_argument("directory", type=Path, metavar="DIR")
    install.set_defaults(handler=_run_install_launcher)

    webhook = commands.add_parser("webhook", help="serve the mutating admission webhook over TLS")
    webhook.add_argument("--listen", default=_env("LISTEN", ":8443"),
                         help="HOST:PORT to listen on; no HOST: every IPv4 and IPv6 address "
                         "(default :8443; env GPUNUMA_LISTEN)")
    webhook.add_argument("--shutdown-delay", type=_non_negative_seconds, metavar="SECONDS",
                         default=_env("SHUTDOWN_DELAY", "5"),
                         help="after SIGTERM, report not-ready on /readyz but keep answering this "
                         "long, while endpoints still route here (default 5; "
                         "env GPUNUMA_SHUTDOWN_DELAY)")
    webhook.add_argument("--tls-cert-file", type=Path, default=_env("TLS_CERT_FILE"),
                         required=_env("TLS_CERT_FILE") is None,
                         help="PEM certificate chain, reloaded when it changes "
                         "(env GPUNUMA_TLS_CERT_FILE)")
    webhook.add_argument("--tls-key-file", type=Path, default=_env("TLS_KEY_FILE"),
                         required=_env("TLS_KEY_FILE") is None,
                         help="PEM private key, reloaded when it changes "
                         "(env GPUNUMA_TLS_KEY_FILE)")
    _add_mutation_arguments(webhook)
    webhook.set_defaults(handler=_run_webhook)

    operator = commands.add_parser(
        "operator", help="run the operator: node labels, pod placement, stale detection, certs",
        description="Run the kopf operator (DESIGN §8). Every flag also reads GPUNUMA_<FLAG>.",
    )
    _add_operator_arguments(operator)
    operator.set_defaults(handler=_run_operator)

    inject = commands.add_parser(
        "inject",
        help="apply the webhook's mutation to manifests offline (like istioctl kube-inject)",
    )
    inject.add_argument("-f", "--filename", required=True, metavar="FILE",
                        help="YAML file with one or more documents, or - for standard input")
    inject.add_argument("--policy", choices=names.POLICIES, default=None,
                        help="policy for the wrapped containers (default: the pod's annotation, "
                        "else preferred)")
    inject.add_argument("--containers", type=_csv, default=None, metavar="NAME,…",
                        help="wrap exactly these containers (default: those that request GPUs)")
    _add_mutation_arguments(inject, policy=False)
    inject.set_defaults(handler=_run_inject)
    return parser


def _add_operator_arguments(parser: argparse.ArgumentParser) -> None:
    from gpunuma.settings import CERTIFICATE_MODES, CertificateSettings, OperatorSettings

    # String defaults go through `type` like command-line values, so a bad GPUNUMA_* variable is
    # reported by argparse, naming the flag, when this subcommand runs (and never breaks another).
    defaults, certs = OperatorSettings(), CertificateSettings()
    parser.add_argument("--heartbeat-interval", type=_seconds, metavar="SECONDS",
                        default=_env("HEARTBEAT_INTERVAL", f"{defaults.heartbeat_interval_s:g}"),
                        help="how often agents send a heartbeat (default 600; the agent's "
                        "--heartbeat; env GPUNUMA_HEARTBEAT_INTERVAL)")
    parser.add_argument("--stale-after", type=int, metavar="N",
                        default=_env("STALE_AFTER", str(defaults.stale_after_heartbeats)),
                        help="missed heartbeats before a node is labelled gpunuma.io/stale=true "
                        "(default 3; env GPUNUMA_STALE_AFTER)")
    parser.add_argument("--check-interval", type=_seconds, metavar="SECONDS",
                        default=_env("CHECK_INTERVAL", f"{defaults.check_interval_s:g}"),
                        help="how often heartbeats and certificates are re-checked (default 60; "
                        "env GPUNUMA_CHECK_INTERVAL)")
    parser.add_argument("--pod-namespaces", type=_csv, metavar="NS,…",
                        default=_env("POD_NAMESPACES", ""),
                        help="watch pods only in these namespaces (default: all; "
                        "env GPUNUMA_POD_NAMESPACES)")
    parser.add_argument("--peering-name", default=_env("PEERING_NAME", defaults.peering_name),
                        help="kopf ClusterKopfPeering object shared by the replicas (default "
                        "gpunuma; env GPUNUMA_PEERING_NAME)")
    parser.add_argument("--standalone", action="store_true",
                        default=_env("STANDALONE", "") in {"1", "true"},
                        help="no peering: only for a single replica (env GPUNUMA_STANDALONE=1)")
    parser.add_argument("--priority", type=int, default=_env("PRIORITY"),
                        help="peering priority; the highest live replica acts (default: random, "
                        "so replicas never tie; env GPUNUMA_PRIORITY)")
    parser.add_argument("--liveness", default=_env("LIVENESS", defaults.liveness_endpoint),
                        metavar="URL", help="liveness endpoint, empty to disable (default "
                        f"{defaults.liveness_endpoint}; env GPUNUMA_LIVENESS)")
    parser.add_argument("--log-format", choices=("json", "plain"),
                        default=_env("LOG_FORMAT", defaults.log_format),
                        help="json (default) or plain (env GPUNUMA_LOG_FORMAT)")
    parser.add_argument("--certificates", choices=CERTIFICATE_MODES,
                        default=_env("CERTIFICATES", certs.mode),
                        help="self-managed (default: the operator runs a CA), cert-manager "
                        "(leave them to it) or none (no webhook); env GPUNUMA_CERTIFICATES")
    parser.add_argument("--namespace", default=_env("NAMESPACE"),
                        help="namespace of the webhook Service and Secret (default: the "
                        "operator's own; env GPUNUMA_NAMESPACE)")
    parser.add_argument("--webhook-service", default=_env("WEBHOOK_SERVICE", certs.service_name),
                        help=f"the webhook's Service (default {certs.service_name}; "
                        "env GPUNUMA_WEBHOOK_SERVICE)")
    parser.add_argument("--webhook-secret", default=_env("WEBHOOK_SECRET", certs.secret_name),
                        help=f"Secret for tls.crt/tls.key/ca.crt (default {certs.secret_name}, "
                        "its CA in <name>-ca; env GPUNUMA_WEBHOOK_SECRET)")
    parser.add_argument("--webhook-configuration",
                        default=_env("WEBHOOK_CONFIGURATION", certs.webhook_configuration),
                        help="MutatingWebhookConfiguration whose caBundle is kept current "
                        f"(default {certs.webhook_configuration}; env GPUNUMA_WEBHOOK_CONFIGURATION)")
    parser.add_argument("--cert-validity-days", type=float, metavar="DAYS",
                        default=_env("CERT_VALIDITY_DAYS", f"{certs.leaf_validity_days:g}"),
                        help="serving certificate lifetime (default 365; "
                        "env GPUNUMA_CERT_VALIDITY_DAYS)")
    parser.add_argument("--cert-renew-before-days", type=float, metavar="DAYS",
                        default=_env("CERT_RENEW_BEFORE_DAYS", f"{certs.renew_before_days:g}"),
                        help="renew when fewer days are left (default 30; "
                        "env GPUNUMA_CERT_RENEW_BEFORE_DAYS)")


def _add_gpu_resources_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--gpu-resources", type=_csv,
                        default=_csv(_env("GPU_RESOURCES", ",".join(DEFAULT_GPU_RESOURCES)) or ""),
                        metavar="NAME,…",
                        help="resource names that mean 'GPU', * globs allowed (default "
                        f"{','.join(DEFAULT_GPU_RESOURCES)}; env GPUNUMA_GPU_RESOURCES)")


def _parse_seconds(text: str, *, zero_allowed: bool) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if zero_allowed and not value >= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: must be 0 seconds or more")
    if not zero_allowed and not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r}: must be more than 0 seconds")
    return value


def _seconds(text: str) -> float:
    return _parse_seconds(text, zero_allowed=False)


def _non_negative_seconds(text: str) -> float:
    return _parse_seconds(text, zero_allowed=True)


def _add_agent_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    agent = commands.add_parser(
        "agent", help="publish this node's GPU↔NUMA layout and GPU allocations (the DaemonSet)",
        description="Discover the node's layout, read the kubelet's GPU allocations and keep the "
        "node's GPUNumaLayout current; serve /healthz and /metrics.",
    )
    _add_discovery_arguments(agent)
    node_name = os.environ.get("NODE_NAME")
    agent.add_argument("--node-name", default=node_name, required=node_name is None,
                       help="this node's name (env NODE_NAME, from the downward API spec.nodeName)")
    agent.add_argument("--interval", type=_seconds, default=_env("INTERVAL", "60"),
                       help="seconds between discoveries (default 60; env GPUNUMA_INTERVAL)")
    agent.add_argument("--discovery-timeout", type=_seconds,
                       default=_env("DISCOVERY_TIMEOUT", "30"),
                       help="seconds a discovery may run before it counts as hung; no other "
                       "starts until it returns (default 30; env GPUNUMA_DISCOVERY_TIMEOUT)")
    agent.add_argument("--heartbeat", type=_seconds, default=_env("HEARTBEAT", "600"),
                       help="seconds between heartbeatTime updates (default 600; "
                       "env GPUNUMA_HEARTBEAT)")
    agent.add_argument("--allocations-interval", type=_seconds,
                       default=_env("ALLOCATIONS_INTERVAL", "10"),
                       help="seconds between kubelet PodResources polls (default 10; "
                       "env GPUNUMA_ALLOCATIONS_INTERVAL)")
    agent.add_argument("--kubelet-socket", type=Path,
                       default=Path(_env("KUBELET_SOCKET", str(DEFAULT_KUBELET_SOCKET)) or ""),
                       help=f"the kubelet's PodResources socket (default {DEFAULT_KUBELET_SOCKET}; "
                       "env GPUNUMA_KUBELET_SOCKET)")
    agent.add_argument("--listen", default=_env("LISTEN", ":8081"),
                       help="HOST:PORT for /healthz and /metrics; no HOST: every IPv4 and IPv6 "
                       "address (default :8081; "
                       "env GPUNUMA_LISTEN)")
    agent.add_argument("--kubeconfig", type=Path, default=_env("KUBECONFIG"),
                       help="kubeconfig to use instead of the in-cluster service account "
                       "(env GPUNUMA_KUBECONFIG)")
    agent.add_argument("--cgroup-root", type=Path,
                       default=Path(_env("CGROUP_ROOT", "/sys/fs/cgroup") or ""),
                       help="the host's cgroup filesystem (default /sys/fs/cgroup; "
                       "env GPUNUMA_CGROUP_ROOT)")
    agent.add_argument("--cgroup-binding", action=argparse.BooleanOptionalAction,
                       default=_env("CGROUP_BINDING", "false") == "true",
                       help="write the cpuset of containers marked gpunuma.io/cgroup-bound "
                       "(needs --cgroup-root writable; default off; env GPUNUMA_CGROUP_BINDING)")
    agent.add_argument("--cpu-manager-state", type=Path,
                       default=Path(_env("CPU_MANAGER_STATE",
                                         "/var/lib/kubelet/cpu_manager_state") or ""),
                       help="the kubelet's CPU manager checkpoint; policy static means no cpuset "
                       "is written (env GPUNUMA_CPU_MANAGER_STATE)")
    agent.add_argument("--memory-interval", type=_seconds,
                       default=_env("MEMORY_INTERVAL", "300"),
                       help="seconds between reads of a container's numa_maps, which walk its "
                       "page tables (default 300; env GPUNUMA_MEMORY_INTERVAL)")
    _add_gpu_resources_argument(agent)
    agent.set_defaults(handler=_run_agent)


def _add_mutation_arguments(parser: argparse.ArgumentParser, *, policy: bool = True) -> None:
    parser.add_argument("--launcher-image", default=_env("LAUNCHER_IMAGE", DEFAULT_LAUNCHER_IMAGE),
                        help="image of the init container that installs numa-exec "
                        "(env GPUNUMA_LAUNCHER_IMAGE)")
    _add_gpu_resources_argument(parser)
    parser.add_argument("--cgroup-binding", action=argparse.BooleanOptionalAction,
                        default=_env("CGROUP_BINDING", "false") == "true",
                        help="hand containers without command to the agent's cgroup mechanism "
                        "(annotation gpunuma.io/cgroup-bound) instead of skipping them; the "
                        "agents must run with --cgroup-binding (env GPUNUMA_CGROUP_BINDING)")
    if policy:
        parser.add_argument("--default-policy", choices=names.POLICIES,
                            default=_env("DEFAULT_POLICY", names.DEFAULT_POLICY),
                            help="policy for pods that do not set gpunuma.io/policy "
                            "(env GPUNUMA_DEFAULT_POLICY)")


def _run_inspect(args: argparse.Namespace) -> int:
    from gpunuma.discovery import DiscoveryUnavailable, HostRootError, discover
    from gpunuma.inspect import render
    from gpunuma.settings import DiscoverySettings

    settings = DiscoverySettings(
        sysfs_root=args.sysfs_root, procfs_root=args.procfs_root, backend=args.backend
    )
    try:
        layout = discover(settings)
    except (HostRootError, DiscoveryUnavailable) as exc:
        print(f"gpunuma inspect: {exc}", file=sys.stderr)
        return EXIT_USAGE
    sys.stdout.write(render(layout, args.output))
    return 0


def _run_agent(args: argparse.Namespace) -> int:
    import asyncio
    import logging

    from gpunuma.agent.service import run_agent
    from gpunuma.kubeapi import ApiError
    from gpunuma.settings import AgentSettings, DiscoverySettings

    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = AgentSettings(
        node_name=args.node_name,
        discovery=DiscoverySettings(
            sysfs_root=args.sysfs_root, procfs_root=args.procfs_root, backend=args.backend
        ),
        interval=args.interval,
        discovery_timeout=args.discovery_timeout,
        heartbeat=args.heartbeat,
        allocations_interval=args.allocations_interval,
        kubelet_socket=args.kubelet_socket,
        listen=args.listen,
        kubeconfig=args.kubeconfig,
        gpu_resources=args.gpu_resources,
        cgroup_root=args.cgroup_root,
        cgroup_binding=args.cgroup_binding,
        cpu_manager_state=args.cpu_manager_state,
        memory_interval=args.memory_interval,
    )
    try:
        return asyncio.run(run_agent(settings))
    except (ApiError, ValueError, OSError) as exc:
        print(f"gpunuma agent: {exc}", file=sys.stderr)
        return EXIT_USAGE


def _run_install_launcher(args: argparse.Namespace) -> int:
    from gpunuma.launcher.install import main as install_main

    return install_main(args.directory)


def _run_webhook(args: argparse.Namespace) -> int:
    from gpunuma.webhook.server import main as webhook_main

    return webhook_main(args)


def _run_operator(args: argparse.Namespace) -> int:
    from gpunuma.operator.run import main as operator_main
    from gpunuma.operator.run import settings_from_args

    try:
        settings = settings_from_args(args)
    except ValueError as exc:
        print(f"gpunuma operator: {exc}", file=sys.stderr)
        return EXIT_USAGE
    return operator_main(settings)


def _run_inject(args: argparse.Namespace) -> int:
    from gpunuma.webhook.inject import main as inject_main

    return inject_main(args)


def _check_choices(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Hold ``GPUNUMA_*`` values to the same choices as their flags.

    argparse checks ``choices`` only for values given on the command line, never for defaults, and
    every environment variable arrives as a default: without this, ``GPUNUMA_BACKEND=NVML`` would
    reach discovery and ``GPUNUMA_CERTIFICATES=cert_manager`` would quietly mean something else.
    """
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    command = commands.choices[args.command]
    for action in command._actions:
        value = getattr(args, action.dest, None)
        if action.choices is None or value is None or value in action.choices:
            continue
        flag = action.option_strings[-1] if action.option_strings else action.dest
        variable = "GPUNUMA_" + flag.lstrip("-").replace("-", "_").upper()
        command.error(f"{variable}={value!r} is not a valid {flag}; choose from "
                      f"{', '.join(map(str, action.choices))}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _check_choices(parser, args)
    code: int = args.handler(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
