"""The ``gpunuma`` command: one argparse entry for every component (docs/design.md §2).

Each subcommand imports its component only when it runs, so that ``gpunuma install-launcher`` starts
without loading kopf, the Kubernetes client or NVML.

Every flag that a Deployment would set is a setting of ``gpunuma.settings``: its flag, its
``GPUNUMA_*`` variable, its default, its help and its parser come from there (:func:`add_settings`),
and the parsed arguments become settings here and nowhere else (:func:`settings_from_args`).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from gpunuma import __version__, names
from gpunuma.settings import (
    AgentSettings,
    CheckSettings,
    CleanupSettings,
    DiscoverySettings,
    MutationSettings,
    OperatorSettings,
    Option,
    WebhookSettings,
    csv,
    options,
)

EXIT_USAGE = 2

S = TypeVar("S")


class _FromEnvironment(str):
    """A default read from a variable: the parser can then name the variable in its refusal."""

    variable: str


def _environment_default(option: Option) -> _FromEnvironment | None:
    text = os.environ.get(option.env)
    if text is None:
        return None
    value = _FromEnvironment(text)
    value.variable = option.env
    return value


def _type(option: Option) -> Callable[[str], Any]:
    """argparse's ``type`` for a setting: its choices, then its parser.

    argparse runs ``type`` on string defaults too, so a ``GPUNUMA_*`` value is checked like the
    flag, when its own subcommand runs (a bad variable of one never breaks another), and the
    refusal names the variable.
    """
    def parse(text: str) -> Any:
        try:
            if option.choices is not None and text not in option.choices:
                raise ValueError(f"choose from {', '.join(option.choices)}")
            return option.parse(text)
        except ValueError as exc:
            if isinstance(text, _FromEnvironment):
                separator = ";" if option.choices is not None else ":"
                raise argparse.ArgumentTypeError(
                    f"{text.variable}={str(text)!r} is not a valid {option.flag}{separator} {exc}"
                ) from None
            if option.choices is not None:
                raise argparse.ArgumentTypeError(f"{text!r}: {exc}") from None
            raise argparse.ArgumentTypeError(str(exc)) from None

    parse.__name__ = option.flag
    return parse


def _shown(value: Any) -> str:
    if isinstance(value, tuple):
        return ",".join(map(str, value))
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def add_settings(parser: argparse.ArgumentParser, settings_class: type) -> None:
    """A flag for every setting of ``settings_class`` (nested ones included)."""
    for _, item, option in options(settings_class):
        from_env = _environment_default(option)
        if option.switch:
            parser.add_argument(option.flag, action="store_true",
                                default=from_env in {"1", "true"} if from_env is not None
                                else item.default,
                                help=f"{option.help} (env {option.env}=1)")
            continue
        default = from_env if from_env is not None else item.default
        if default is dataclasses.MISSING:
            default = None
        # The built-in default, also when a variable overrides it (the help names the variable).
        shown = option.shown_default
        if shown is None and item.default not in (dataclasses.MISSING, None):
            shown = _shown(item.default) or None
        details = f"default {shown}; env {option.env}" if shown else f"env {option.env}"
        metavar = option.metavar or (
            "{" + ",".join(option.choices) + "}" if option.choices is not None else None)
        parser.add_argument(option.flag, type=_type(option), default=default, metavar=metavar,
                            required=option.required and from_env is None,
                            help=f"{option.help} ({details})")


def settings_from_args(settings_class: type[S], args: argparse.Namespace,
                       **given: Any) -> S:
    """The parsed flags of ``settings_class`` as settings; ``given`` fields win.

    Raises ``ValueError`` (naming the flags) for combinations a class refuses.
    """
    values: dict[str, Any] = dict(given)
    for item in dataclasses.fields(settings_class):  # type: ignore[arg-type]
        if item.name in values:
            continue
        option = item.metadata.get("option")
        if item.metadata.get("nested"):
            values[item.name] = settings_from_args(item.metadata["nested"], args)
        elif option is not None:
            values[item.name] = getattr(args, option.flag.lstrip("-").replace("-", "_"))
    return settings_class(**values)


def operator_settings(args: argparse.Namespace) -> OperatorSettings:
    """``gpunuma operator``'s settings; an unset namespace is the operator's own."""
    from gpunuma.operator.run import operator_namespace

    settings = settings_from_args(OperatorSettings, args)
    if not settings.certificates.namespace:
        certificates = dataclasses.replace(settings.certificates,
                                           namespace=operator_namespace())
        settings = dataclasses.replace(settings, certificates=certificates)
    return settings


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
    add_settings(inspect, DiscoverySettings)
    inspect.add_argument(
        "--output", "-o", choices=("table", "json", "labels"), default="table",
        help="table (default), json (the layout document plus labels) or labels (key=value lines)",
    )
    inspect.set_defaults(handler=_run_inspect)

    agent = commands.add_parser(
        "agent", help="publish this node's GPU↔NUMA layout and GPU allocations (the DaemonSet)",
        description="Discover the node's layout, read the kubelet's GPU allocations and keep the "
        "node's GPUNumaLayout current; serve /healthz and /metrics.",
    )
    add_settings(agent, AgentSettings)
    agent.set_defaults(handler=_run_agent)

    install = commands.add_parser(
        "install-launcher", help="copy this package's numa-exec for this machine's architecture "
        "into DIR (the launcher image's /numa-exec --install DIR does the same)",
    )
    install.add_argument("directory", type=Path, metavar="DIR")
    install.set_defaults(handler=_run_install_launcher)

    webhook = commands.add_parser("webhook", help="serve the mutating admission webhook over TLS")
    add_settings(webhook, WebhookSettings)
    webhook.set_defaults(handler=_run_webhook)

    operator = commands.add_parser(
        "operator", help="run the operator: node labels, pod placement, stale detection, certs",
        description="Run the kopf operator (docs/operator.md). Every flag also reads "
        "GPUNUMA_<FLAG>.",
    )
    add_settings(operator, OperatorSettings)
    operator.set_defaults(handler=_run_operator)

    cleanup = commands.add_parser(
        "cleanup-nodes",
        help="remove every gpunuma.io/* Node label and annotation (the chart's post-delete hook)",
        description="Remove the gpunuma.io/* labels the operator manages and the "
        "gpunuma.io/managed-labels annotation from every Node. Run after the operator is gone.",
    )
    add_settings(cleanup, CleanupSettings)
    cleanup.set_defaults(handler=_run_cleanup_nodes)

    check = commands.add_parser(
        "check", help="say whether the installed release works (like linkerd check)",
        description="Check the release: the GPUNumaLayout CRD is served, agents report, the "
        "operator acts, and the webhook answers with a certificate its caBundle trusts. Exit 1 "
        "if a check fails. The chart's `helm test` runs it inside the cluster.",
    )
    add_settings(check, CheckSettings)
    check.set_defaults(handler=_run_check)

    inject = commands.add_parser(
        "inject",
        help="apply the webhook's mutation to manifests offline (like istioctl kube-inject)",
        description="Apply the webhook's mutation to the pods and pod templates of manifests "
        "(docs/webhook.md lists the kinds). Settings come from the flags, then GPUNUMA_* "
        "variables, then the release installed in the current kubeconfig context (unless "
        "--ignore-cluster), then the built-in defaults; stderr says which.",
    )
    _add_manifest_arguments(inject)
    inject.add_argument("--policy", choices=names.POLICIES, default=None,
                        help="policy for the wrapped containers (default: the pod's annotation, "
                        "else preferred)")
    inject.add_argument("--containers", type=csv, default=None, metavar="NAME,…",
                        help="wrap exactly these containers (default: those that request GPUs)")
    inject.add_argument("--ignore-cluster", action="store_true",
                        help="do not read the installed release's settings from the cluster")
    inject.add_argument("--kubeconfig", type=Path, default=None,
                        help="kubeconfig of the cluster whose release is read (default: "
                        "$KUBECONFIG, then ~/.kube/config)")
    inject.add_argument("--context", default=None, help="kubeconfig context (default: the current one)")
    add_settings(inject, MutationSettings)
    inject.set_defaults(handler=_run_inject)

    uninject = commands.add_parser(
        "uninject", help="remove gpunuma's mutation from manifests (the reverse of inject)",
        description="Remove what gpunuma inject or the webhook added to pods and pod templates: the "
        "launcher init container and volume, numa-exec in front of commands, GPUNUMA_POLICY and the "
        "annotations gpunuma writes. The user's gpunuma.io/inject, policy and containers stay.",
    )
    _add_manifest_arguments(uninject)
    uninject.set_defaults(handler=_run_uninject)
    return parser


def _run_inspect(args: argparse.Namespace) -> int:
    from gpunuma.discovery import DiscoveryUnavailable, HostRootError, discover
    from gpunuma.inspect import render

    try:
        layout = discover(settings_from_args(DiscoverySettings, args))
    except (HostRootError, DiscoveryUnavailable) as exc:
        print(f"gpunuma inspect: {exc}", file=sys.stderr)
        return EXIT_USAGE
    sys.stdout.write(render(layout, args.output))
    return 0


def _run_agent(args: argparse.Namespace) -> int:
    import asyncio

    from gpunuma import logs
    from gpunuma.agent.service import run_agent
    from gpunuma.kubeapi import ApiError

    try:
        settings = settings_from_args(AgentSettings, args)
        logs.configure(settings.logging)
        return asyncio.run(run_agent(settings))
    except (ApiError, ValueError, OSError) as exc:
        print(f"gpunuma agent: {exc}", file=sys.stderr)
        return EXIT_USAGE


def _run_install_launcher(args: argparse.Namespace) -> int:
    from gpunuma.launcher.install import main as install_main

    return install_main(args.directory)


def _run_webhook(args: argparse.Namespace) -> int:
    from gpunuma import logs
    from gpunuma.webhook.server import main as webhook_main

    try:
        settings = settings_from_args(WebhookSettings, args)
    except ValueError as exc:
        print(f"gpunuma webhook: {exc}", file=sys.stderr)
        return EXIT_USAGE
    logs.configure(settings.logging)
    return webhook_main(settings)


def _run_operator(args: argparse.Namespace) -> int:
    from gpunuma.operator.run import main as operator_main

    try:
        settings = operator_settings(args)
    except ValueError as exc:
        print(f"gpunuma operator: {exc}", file=sys.stderr)
        return EXIT_USAGE
    return operator_main(settings)


def _connection(kubeconfig: Path | None) -> Any:
    """A kubeconfig when given; in a pod its service account; else $KUBECONFIG, then
    ~/.kube/config, as kubectl looks."""
    from gpunuma.kubeapi import Connection

    if kubeconfig is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
        return Connection.in_cluster()
    return Connection.from_kubeconfig(kubeconfig)


def _run_cleanup_nodes(args: argparse.Namespace) -> int:
    import asyncio

    from gpunuma import logs
    from gpunuma.kubeapi import ApiError, KubeClient
    from gpunuma.operator.cleanup import remove_node_labels

    settings = settings_from_args(CleanupSettings, args)
    logs.configure(settings.logging)

    async def run() -> int:
        try:
            client = KubeClient(_connection(settings.kubeconfig), user_agent="gpunuma-cleanup")
        except ApiError as exc:
            print(f"gpunuma cleanup-nodes: {exc}", file=sys.stderr)
            return EXIT_USAGE
        try:
            result = await remove_node_labels(client)
        except ApiError as exc:
            print(f"gpunuma cleanup-nodes: cannot list nodes: {exc}", file=sys.stderr)
            return 1
        finally:
            await client.close()
        print(f"gpunuma cleanup-nodes: cleaned {len(result.cleaned)} node(s), "
              f"{result.untouched} had nothing of gpunuma, {len(result.failed)} failed")
        return 1 if result.failed else 0

    return asyncio.run(run())


def _run_check(args: argparse.Namespace) -> int:
    import asyncio

    from gpunuma.check import format_report, run_checks
    from gpunuma.kubeapi import ApiError, KubeClient

    settings = settings_from_args(CheckSettings, args)

    async def run() -> int:
        try:
            client = KubeClient(_connection(settings.kubeconfig), user_agent="gpunuma-check")
        except ApiError as exc:
            print(f"gpunuma check: {exc}", file=sys.stderr)
            return EXIT_USAGE
        try:
            results = await run_checks(client, settings)
        finally:
            await client.close()
        sys.stdout.write(format_report(results))
        return 0 if all(result.ok for result in results) else 1

    return asyncio.run(run())


def _add_manifest_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-f", "--filename", required=True, action="append", metavar="FILE",
                        help="YAML or JSON file, a folder (its *.yaml, *.yml and *.json files), or - "
                        "for standard input; repeat for several")
    parser.add_argument("-o", "--output", choices=("yaml", "json"), default="yaml",
                        help="yaml (default: the input edited in place, comments kept) or json")


def _given(argv: Sequence[str], settings_class: type) -> set[str]:
    """Fields of ``settings_class`` given as a flag on the command line or as a GPUNUMA_* variable."""
    given = set()
    for path, _, option in options(settings_class):
        typed = any(word == option.flag or word.startswith(option.flag + "=") for word in argv)
        if typed or option.env in os.environ:
            given.add(path[-1])
    return given


def _release_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The installed release's mutation settings that the user did not give; stderr says where from."""
    from gpunuma.release import ReleaseUnavailable, read_release

    if args.ignore_cluster:
        return {}
    try:
        release = read_release(args.kubeconfig, args.context)
    except ReleaseUnavailable as exc:
        print(f"gpunuma inject: using gpunuma's defaults, not a release's settings: {exc} "
              "(--ignore-cluster skips this)", file=sys.stderr)
        return {}
    given = _given(args.argv, MutationSettings)
    values: dict[str, Any] = {}
    for path, _, option in options(MutationSettings):
        text = release.environment.get(option.env)
        if text is None or path[-1] in given:
            continue
        try:
            values[path[-1]] = option.parse(text)
        except ValueError as exc:
            print(f"gpunuma inject: {release.where} has {option.env}={text!r}, not used: {exc}",
                  file=sys.stderr)
    shown = ", ".join(sorted(values)) or "nothing (flags and variables win)"
    print(f"gpunuma inject: settings from {release.where}: {shown}", file=sys.stderr)
    return values


def _run_inject(args: argparse.Namespace) -> int:
    from gpunuma.webhook.inject import main as inject_main

    try:
        settings = settings_from_args(MutationSettings, args, **_release_settings(args))
    except ValueError as exc:
        print(f"gpunuma inject: {exc}", file=sys.stderr)
        return EXIT_USAGE
    return inject_main(settings, args.filename, policy=args.policy, containers=args.containers,
                       output=args.output)


def _run_uninject(args: argparse.Namespace) -> int:
    from gpunuma.webhook.inject import main as inject_main

    return inject_main(None, args.filename, output=args.output)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # which settings were typed (inject)
    code: int = args.handler(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
