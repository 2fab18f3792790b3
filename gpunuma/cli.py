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
from gpunuma.settings import BACKENDS, DEFAULT_GPU_RESOURCES, DEFAULT_LAUNCHER_IMAGE

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

    install = commands.add_parser(
        "install-launcher", help="copy numa-exec into DIR (the webhook's init container runs this)",
    )
    install.add_argument("directory", type=Path, metavar="DIR")
    install.set_defaults(handler=_run_install_launcher)

    webhook = commands.add_parser("webhook", help="serve the mutating admission webhook over TLS")
    webhook.add_argument("--listen", default=_env("LISTEN", "0.0.0.0:8443"),
                         help="HOST:PORT to listen on (default 0.0.0.0:8443; env GPUNUMA_LISTEN)")
    webhook.add_argument("--tls-cert-file", type=Path, default=_env("TLS_CERT_FILE"),
                         required=_env("TLS_CERT_FILE") is None,
                         help="PEM certificate chain, reloaded when it changes "
                         "(env GPUNUMA_TLS_CERT_FILE)")
    webhook.add_argument("--tls-key-file", type=Path, default=_env("TLS_KEY_FILE"),
                         required=_env("TLS_KEY_FILE") is None,
                         help="PEM private key, reloaded when it changes (env GPUNUMA_TLS_KEY_FILE)")
    _add_mutation_arguments(webhook)
    webhook.set_defaults(handler=_run_webhook)

    inject = commands.add_parser(
        "inject", help="apply the webhook's mutation to manifests offline (like istioctl kube-inject)",
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


def _add_mutation_arguments(parser: argparse.ArgumentParser, *, policy: bool = True) -> None:
    parser.add_argument("--launcher-image", default=_env("LAUNCHER_IMAGE", DEFAULT_LAUNCHER_IMAGE),
                        help="image of the init container that installs numa-exec "
                        "(env GPUNUMA_LAUNCHER_IMAGE)")
    parser.add_argument("--gpu-resources", type=_csv,
                        default=_csv(_env("GPU_RESOURCES", ",".join(DEFAULT_GPU_RESOURCES)) or ""),
                        metavar="NAME,…",
                        help="resource names that mean 'GPU', * globs allowed (default "
                        f"{','.join(DEFAULT_GPU_RESOURCES)}; env GPUNUMA_GPU_RESOURCES)")
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


def _run_install_launcher(args: argparse.Namespace) -> int:
    from gpunuma.launcher.install import main as install_main

    return install_main(args.directory)


def _run_webhook(args: argparse.Namespace) -> int:
    from gpunuma.webhook.server import main as webhook_main

    return webhook_main(args)


def _run_inject(args: argparse.Namespace) -> int:
    from gpunuma.webhook.inject import main as inject_main

    return inject_main(args)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    code: int = args.handler(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
