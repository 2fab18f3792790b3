"""``kubectl gpunuma`` the command: flags, dispatch, exit status."""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from collections.abc import Sequence

from gpunuma.kubectl.api import ClusterError, KubeApi
from gpunuma.kubectl.explain import excluded_namespaces, explain
from gpunuma.kubectl.objects import wrapped_of
from gpunuma.kubectl.render import NODE_HEADERS, format_table, node_rows, pod_headers, pod_rows
from gpunuma.settings import DEFAULT_GPU_RESOURCES

__all__ = ["build_parser", "main", "run"]


EXIT_ERROR = 1

def build_parser() -> argparse.ArgumentParser:
    # kubectl hands every flag to the plugin, wherever the user typed it: accept the connection
    # flags before and after the command (SUPPRESS keeps a later default from erasing an earlier value).
    connection = argparse.ArgumentParser(add_help=False)
    connection.add_argument("--kubeconfig", default=argparse.SUPPRESS,
                            help="kubeconfig file (default: $KUBECONFIG, then ~/.kube/config)")
    connection.add_argument("--context", default=argparse.SUPPRESS,
                            help="kubeconfig context (default: the current one)")
    parser = argparse.ArgumentParser(
        prog="kubectl gpunuma", parents=[connection],
        description="Show where gpunuma bound GPU pods in this cluster, and why.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    commands.add_parser("nodes", parents=[connection],
                        help="GPU nodes: layout, GPUs per NUMA node (GPU indices), source, staleness")
    pods = commands.add_parser("pods", parents=[connection],
                               help="managed pods: wrapped containers, NUMA nodes, cpuset")
    scope = pods.add_mutually_exclusive_group()
    scope.add_argument("-n", "--namespace", help="namespace (default: the context's)")
    scope.add_argument("-A", "--all-namespaces", action="store_true", help="every namespace")
    why = commands.add_parser("explain", parents=[connection], help="why a pod was or was not bound")
    why.add_argument("pod", metavar="POD")
    why.add_argument("-n", "--namespace", help="namespace (default: the context's)")
    why.add_argument("--gpu-resources", default=",".join(DEFAULT_GPU_RESOURCES), metavar="NAME,…",
                     help="resource names that mean GPU, as the chart's gpuResources "
                     f"(default {','.join(DEFAULT_GPU_RESOURCES)})")
    return parser

def run(args: argparse.Namespace, api: KubeApi, now: dt.datetime) -> str:
    """The command's output; raises ClusterError for what the user must fix."""
    if args.command == "nodes":
        layouts = api.list_layouts()
        rows = node_rows(layouts, api.list_nodes(), now)
        if not rows:
            return ("No GPU nodes found: no GPUNumaLayout exists yet. Is the gpunuma agent running on your "
                    "GPU nodes? (kubectl get pods -A -l app.kubernetes.io/component=agent)\n")
        return format_table(NODE_HEADERS, rows)
    if args.command == "pods":
        namespace = None if args.all_namespaces else (args.namespace or api.namespace)
        rows = pod_rows(api.list_managed_pods(namespace), all_namespaces=namespace is None)
        if not rows:
            where = "any namespace" if namespace is None else f"namespace {namespace}"
            return f"No gpunuma-managed pods in {where}.\n"
        return format_table(pod_headers(all_namespaces=namespace is None), rows)
    namespace = args.namespace or api.namespace
    pod = api.read_pod(namespace, args.pod)
    if pod is None:
        raise ClusterError(f'pod "{args.pod}" not found in namespace {namespace}')
    logs = {name: api.read_log_head(namespace, args.pod, name) for name in wrapped_of(pod)}
    gpu_resources = [item.strip() for item in args.gpu_resources.split(",") if item.strip()]
    return explain(pod, api.read_namespace(namespace), gpu_resources=gpu_resources, logs=logs,
                   excluded_namespaces=excluded_namespaces(api.list_webhook_configurations()))

def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        api = KubeApi(getattr(args, "kubeconfig", None), getattr(args, "context", None))
        output = run(args, api, dt.datetime.now(dt.UTC))
    except ClusterError as exc:
        print(f"kubectl gpunuma: {exc}", file=sys.stderr)
        return EXIT_ERROR
    sys.stdout.write(output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
