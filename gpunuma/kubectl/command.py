"""``kubectl gpunuma`` the command: flags, dispatch, exit status."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import sys
from collections.abc import Sequence

from gpunuma import __version__
from gpunuma.kubectl.api import ClusterError, KubeApi
from gpunuma.kubectl.completion import COMMANDS, OUTPUTS
from gpunuma.kubectl.explain import excluded_namespaces, explain
from gpunuma.kubectl.objects import meta_of, wrapped_of
from gpunuma.kubectl.render import NODE_COLUMNS, node_rows, pod_columns, pod_rows, render
from gpunuma.settings import DEFAULT_GPU_RESOURCES, csv

__all__ = ["build_parser", "main", "parse", "pod_name", "run"]


EXIT_ERROR = 1

# Resource names kubectl accepts for pods, in `explain pod/NAME`.
POD_TYPES = ("pod", "pods", "po")


def _common_flags() -> argparse.ArgumentParser:
    """The flags kubectl users type anywhere: before or after the subcommand.

    kubectl hands every word to the plugin as typed. Each flag is declared on the top-level parser
    and on every subcommand with a SUPPRESS default, so a value given before the subcommand is not
    erased by the subcommand's default; :func:`main` fills in the defaults afterwards.
    """
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--kubeconfig", default=argparse.SUPPRESS,
                        help="kubeconfig file (default: $KUBECONFIG, then ~/.kube/config)")
    common.add_argument("--context", default=argparse.SUPPRESS,
                        help="kubeconfig context (default: the current one)")
    common.add_argument("-n", "--namespace", default=argparse.SUPPRESS,
                        help="namespace of pods (default: the context's)")
    common.add_argument("-A", "--all-namespaces", action="store_true", default=argparse.SUPPRESS,
                        help="pods of every namespace")
    common.add_argument("-l", "--selector", default=argparse.SUPPRESS, metavar="SELECTOR",
                        help="label selector of the nodes or pods listed, as kubectl's (e.g. pool=a100)")
    common.add_argument("-o", "--output", choices=OUTPUTS, default=argparse.SUPPRESS,
                        help="table (default), wide (every column), json or yaml (nodes and pods)")
    return common


DEFAULTS = {"kubeconfig": None, "context": None, "namespace": None, "all_namespaces": False,
            "selector": None, "output": "table"}


def build_parser() -> argparse.ArgumentParser:
    common = _common_flags()
    parser = argparse.ArgumentParser(
        prog="kubectl gpunuma", parents=[common],
        description="Show where gpunuma bound GPU pods in this cluster, and why.",
    )
    parser.add_argument("--version", action="version", version=f"kubectl gpunuma {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    commands.add_parser("nodes", parents=[common], help=COMMANDS["nodes"])
    commands.add_parser("pods", parents=[common], help=COMMANDS["pods"])
    why = commands.add_parser("explain", parents=[common], help=COMMANDS["explain"])
    why.add_argument("pod", metavar="POD", help="the pod's name, or pod/NAME as kubectl takes it")
    why.add_argument("--gpu-resources", type=csv, default=DEFAULT_GPU_RESOURCES, metavar="NAME,…",
                     help="resource names that mean GPU, as the chart's gpuResources "
                     f"(default {','.join(DEFAULT_GPU_RESOURCES)})")
    return parser


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    for key, value in DEFAULTS.items():
        if not hasattr(args, key):
            setattr(args, key, value)
    if args.namespace and args.all_namespaces:
        parser.error("-n/--namespace and -A/--all-namespaces exclude each other: give one")
    if args.command == "explain":
        if args.output not in ("table", "wide"):
            parser.error("explain prints an explanation for people; -o json|yaml is for nodes and pods")
        if args.all_namespaces or args.selector:
            parser.error("explain takes one pod (POD or pod/NAME, with -n NAMESPACE), not -A or -l")
        try:
            args.pod = pod_name(args.pod)
        except ValueError as exc:
            parser.error(str(exc))
    return args


def pod_name(argument: str) -> str:
    """NAME from ``NAME``, ``pod/NAME``, ``pods/NAME`` or ``po/NAME``; ValueError for other kinds."""
    kind, slash, name = argument.partition("/")
    if not slash:
        return argument
    if kind.lower() not in POD_TYPES or not name or "/" in name:
        raise ValueError(f"explain takes a pod, as NAME or pod/NAME; got {argument!r}")
    return name


async def run(args: argparse.Namespace, api: KubeApi, now: dt.datetime) -> str:
    """The command's output; raises ClusterError for what the user must fix."""
    if args.command == "nodes":
        layouts = await api.list_layouts()  # also says plainly when gpunuma is not installed
        nodes = await api.list_nodes(args.selector)
        if args.selector:
            chosen = {meta_of(node).get("name") for node in nodes}
            layouts = [layout for layout in layouts if meta_of(layout).get("name") in chosen]
        rows = node_rows(layouts, nodes, now)
        if not rows and args.output in ("table", "wide"):
            if args.selector:
                return f"No GPU nodes match the selector {args.selector}.\n"
            return ("No GPU nodes found: no GPUNumaLayout exists yet. Is the gpunuma agent running on your "
                    "GPU nodes? (kubectl get pods -A -l app.kubernetes.io/component=agent)\n")
        return render(NODE_COLUMNS, rows, args.output)
    namespace = None if args.all_namespaces else (args.namespace or api.namespace)
    if args.command == "pods":
        pods = await api.list_managed_pods(namespace, args.selector)
        rows = pod_rows(pods, all_namespaces=namespace is None)
        if not rows and args.output in ("table", "wide"):
            await api.require_installed()
            where = "any namespace" if namespace is None else f"namespace {namespace}"
            matching = f" matching {args.selector}" if args.selector else ""
            return f"No gpunuma-managed pods{matching} in {where}.\n"
        return render(pod_columns(all_namespaces=namespace is None), rows, args.output)
    assert namespace is not None  # parse() refuses -A for explain
    await api.require_installed()
    pod = await api.read_pod(namespace, args.pod)
    if pod is None:
        raise ClusterError(f'pod "{args.pod}" not found in namespace {namespace}')
    logs = {name: await api.read_log_head(namespace, args.pod, name) for name in wrapped_of(pod)}
    return explain(pod, await api.read_namespace(namespace), gpu_resources=args.gpu_resources, logs=logs,
                   excluded_namespaces=excluded_namespaces(await api.list_webhook_configurations()))


async def _run(args: argparse.Namespace) -> str:
    async with KubeApi(args.kubeconfig, args.context) as api:
        return await run(args, api, dt.datetime.now(dt.UTC))


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(argv)
    try:
        output = asyncio.run(_run(args))
    except ClusterError as exc:
        print(f"kubectl gpunuma: {exc}", file=sys.stderr)
        return EXIT_ERROR
    sys.stdout.write(output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
