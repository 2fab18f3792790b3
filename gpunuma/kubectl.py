"""``kubectl gpunuma``: what gpunuma did in this cluster, and why (a kubectl plugin).

- ``nodes``: GPU nodes with their layout, GPUs per NUMA node, source and staleness, from the
  GPUNumaLayouts (the agent's truth) and the Node labels (what the operator applied);
- ``pods [-n NS | -A]``: managed pods, their wrapped containers, NUMA nodes and cpuset;
- ``explain POD [-n NS]``: why a pod was or was not bound, step by step, ending with the line
  numa-exec wrote into the container's log.

The tables and the explanation are pure functions of the API objects (tested without a cluster);
:class:`KubeApi` is the only part that talks to the API server, through the current kubeconfig
context as kubectl does. The Kubernetes client is imported only when a command runs.

What counts as opted in, as a GPU request and as a selected container is the webhook's own
decision: ``explain`` calls the webhook's pure functions (``gpunuma.webhook.mutation``, which reads
nothing but its arguments) rather than restating them, so the two cannot disagree.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from gpunuma import names
from gpunuma.settings import DEFAULT_GPU_RESOURCES
from gpunuma.topology.cpulist import format_cpulist
from gpunuma.webhook.mutation import (
    MIRROR_POD_ANNOTATION,
    POLICY_ENV,
    gpu_requests,
    listed_containers,
    selected_containers,
)

__all__ = [
    "ClusterError",
    "KubeApi",
    "explain",
    "format_table",
    "main",
    "node_rows",
    "pod_rows",
]

EXIT_ERROR = 1
NONE = "-"
# numa-exec prints its decision (or its refusal) as one stderr line with this prefix (DESIGN §6).
NUMA_EXEC_PREFIX = "gpunuma:"
# Bytes read from the start of a container's log: numa-exec writes its line before the workload.
LOG_HEAD_BYTES = 64 * 1024
# Namespaces the chart always excludes from the webhook besides its own release namespace
# (DESIGN §9). Used only when the webhook configuration cannot be read: it has the full list.
SYSTEM_NAMESPACES = ("kube-system", "kube-node-lease")
# Labels the chart puts on its MutatingWebhookConfiguration.
WEBHOOK_CONFIGURATION_LABELS = {"app.kubernetes.io/part-of": "gpunuma",
                                "app.kubernetes.io/component": "webhook"}

Obj = Mapping[str, Any]


class ClusterError(Exception):
    """A failure talking to the cluster, phrased for the user (what failed, what to do)."""


# --- pure: objects → rows and text ---------------------------------------------------------------

def _meta(obj: Obj) -> Mapping[str, Any]:
    meta: Mapping[str, Any] = obj.get("metadata") or {}
    return meta


def _annotations(obj: Obj) -> Mapping[str, str]:
    return _meta(obj).get("annotations") or {}


def _labels(obj: Obj) -> Mapping[str, str]:
    return _meta(obj).get("labels") or {}


def _age(timestamp: str | None, now: dt.datetime) -> str:
    """kubectl's compact age: 45s, 12m, 3h, 5d."""
    if not timestamp:
        return NONE
    try:
        then = dt.datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    except ValueError:
        return "?"
    seconds = max(0, int((now - then).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def format_table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """Columns padded as kubectl pads them: left-aligned, three spaces apart, no trailing blanks."""
    table = [list(headers), *[list(row) for row in rows]]
    widths = [max(len(row[column]) for row in table) for column in range(len(headers))]
    lines = ["   ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
             for row in table]
    return "\n".join(lines) + "\n"


def _gpus_per_numa_node(spec: Obj) -> str:
    """``0:0-3 1:4-7``: GPU indices by the NUMA node they are local to (``?`` for unknown)."""
    by_node: dict[int | None, list[int]] = {}
    for gpu in spec.get("gpus") or []:
        by_node.setdefault(gpu.get("numaNode"), []).append(int(gpu.get("index", 0)))
    known = sorted(node for node in by_node if node is not None)
    parts = [f"{node}:{format_cpulist(by_node[node])}" for node in known]
    if None in by_node:
        parts.append(f"?:{format_cpulist(by_node[None])}")
    return " ".join(parts) or NONE


def _is_stale(node: Obj | None, layout: Obj | None) -> bool:
    if node is not None and _labels(node).get(names.LABEL_STALE) == "true":
        return True
    conditions = ((layout or {}).get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Stale" and c.get("status") == "True" for c in conditions)


NODE_HEADERS = ("NODE", "GPUS", "NUMA", "LAYOUT", "GPUS PER NUMA NODE", "SOURCE", "LABELED", "STALE",
                "HEARTBEAT")


def node_rows(layouts: Iterable[Obj], nodes: Iterable[Obj], now: dt.datetime) -> list[list[str]]:
    """One row per GPU node: every node with a GPUNumaLayout, and nodes still carrying our labels."""
    layouts_by_name = {_meta(layout).get("name", ""): layout for layout in layouts}
    nodes_by_name = {_meta(node).get("name", ""): node for node in nodes}
    gpu_nodes = set(layouts_by_name) | {
        name for name, node in nodes_by_name.items() if names.LABEL_GPU_COUNT in _labels(node)
    }
    rows = []
    for name in sorted(gpu_nodes):
        layout = layouts_by_name.get(name)
        node = nodes_by_name.get(name)
        labels = _labels(node) if node is not None else {}
        spec: Obj = (layout or {}).get("spec") or {}
        summary: Obj = spec.get("summary") or {}
        if layout:
            gpus = summary.get("gpus", len(spec.get("gpus") or []))
        else:
            gpus = labels.get(names.LABEL_GPU_COUNT)
        numa = summary.get("numaNodes") if layout else labels.get(names.LABEL_NUMA_COUNT)
        rows.append([
            name if node is not None else f"{name} (node gone)",
            str(gpus) if gpus is not None else NONE,
            str(numa) if numa is not None else NONE,
            labels.get(names.LABEL_LAYOUT) or summary.get("layout") or NONE,
            _gpus_per_numa_node(spec) if layout else NONE,
            spec.get("source") or labels.get(names.LABEL_SOURCE) or NONE,
            "yes" if names.LABEL_GPU_COUNT in labels else "no",
            "yes" if _is_stale(node, layout) else "no",
            _age(spec.get("heartbeatTime"), now) if layout else NONE,
        ])
    return rows


def _container_env(container: Obj, name: str) -> str | None:
    for item in container.get("env") or []:
        if item.get("name") == name and "value" in item:
            return str(item["value"])
    return None


def _all_containers(pod: Obj) -> list[Obj]:
    spec: Obj = pod.get("spec") or {}
    return [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]


def _wrapped(pod: Obj) -> list[str]:
    """Wrapped containers: the webhook's annotation, else those whose command starts numa-exec."""
    annotated = _annotations(pod).get(names.ANNOTATION_WRAPPED)
    if annotated is not None:
        return [name for name in annotated.split(",") if name]
    return [c["name"] for c in _all_containers(pod) if (c.get("command") or [None])[0] == names.LAUNCHER_PATH]


def _policy(pod: Obj) -> str:
    """The policy numa-exec runs with: the env the webhook set, else the pod's annotation."""
    wrapped = set(_wrapped(pod))
    for container in _all_containers(pod):
        if container.get("name") in wrapped:
            value = _container_env(container, POLICY_ENV)
            if value:
                return value
    return _annotations(pod).get(names.ANNOTATION_POLICY) or NONE


def pod_rows(pods: Iterable[Obj], *, all_namespaces: bool) -> list[list[str]]:
    """Managed pods (label gpunuma.io/managed=true), sorted by namespace and name."""
    managed = [pod for pod in pods if _labels(pod).get(names.LABEL_MANAGED) == "true"]
    rows = []
    for pod in sorted(managed, key=lambda p: (_meta(p).get("namespace", ""), _meta(p).get("name", ""))):
        annotations = _annotations(pod)
        running = (pod.get("status") or {}).get("phase") == "Running"
        waiting = "<pending>" if running else NONE
        row = [
            _meta(pod).get("name", ""),
            (pod.get("spec") or {}).get("nodeName") or NONE,
            _policy(pod),
            ",".join(_wrapped(pod)) or NONE,
            annotations.get(names.ANNOTATION_NUMA_NODES) or waiting,
            annotations.get(names.ANNOTATION_CPUSET) or waiting,
            # No binding but a placement: an operator or agent from before observed bindings.
            annotations.get(names.ANNOTATION_BINDING)
            or (NONE if names.ANNOTATION_NUMA_NODES in annotations else waiting),
        ]
        rows.append([_meta(pod).get("namespace", ""), *row] if all_namespaces else row)
    return rows


def pod_headers(*, all_namespaces: bool) -> list[str]:
    headers = ["POD", "NODE", "POLICY", "WRAPPED", "NUMA NODES", "CPUSET", "BINDING"]
    return ["NAMESPACE", *headers] if all_namespaces else headers


def _opt_in(pod: Obj, namespace: Obj | None) -> tuple[bool, str]:
    """(opted in?, how or why not) as the webhook decides it (DESIGN §3)."""
    value = _annotations(pod).get(names.ANNOTATION_INJECT)
    if value == "false":
        return False, f'opted out by the annotation {names.ANNOTATION_INJECT}="false"'
    if value == "true":
        return True, f'annotation {names.ANNOTATION_INJECT}="true"'
    ns_name = _meta(pod).get("namespace", "")
    if namespace is None:
        return False, (f"no {names.ANNOTATION_INJECT} annotation, and the label of namespace {ns_name} "
                       "could not be read")
    if _labels(namespace).get(names.LABEL_NAMESPACE_INJECT) == names.NAMESPACE_INJECT_ENABLED:
        label = f"{names.LABEL_NAMESPACE_INJECT}={names.NAMESPACE_INJECT_ENABLED}"
        return True, f"namespace {ns_name} is labelled {label}"
    return False, (f'no: add the annotation {names.ANNOTATION_INJECT}: "true" to the pod, or label namespace '
                   f"{ns_name} {names.LABEL_NAMESPACE_INJECT}={names.NAMESPACE_INJECT_ENABLED}")


def _placement(pod: Obj) -> dict[str, Any]:
    text = _annotations(pod).get(names.ANNOTATION_PLACEMENT)
    if not text:
        return {}
    try:
        placement = json.loads(text)
    except ValueError:
        return {}
    return placement if isinstance(placement, dict) else {}


def _numa_exec_lines(log: str | None) -> list[str]:
    if not log:
        return []
    return [line.strip() for line in log.splitlines() if line.lstrip().startswith(NUMA_EXEC_PREFIX)]


@dataclass(frozen=True)
class _Container:
    name: str
    gpus: dict[str, str]
    status: str


def _containers_report(pod: Obj, gpu_resources: Sequence[str], opted_in: bool) -> list[_Container]:
    annotations = _annotations(pod)
    listed = bool(listed_containers(annotations))
    chosen = selected_containers(pod, gpu_resources)
    wrapped = set(_wrapped(pod))
    skipped = {name for name in annotations.get(names.ANNOTATION_SKIPPED, "").split(",") if name}
    cgroup_bound = _cgroup_bound(pod)
    injected = names.ANNOTATION_INJECTED in annotations
    report = []
    for container in _all_containers(pod):
        name = container.get("name", "")
        gpus = gpu_requests(container, gpu_resources)
        selected = name in chosen
        if name in wrapped:
            status = "wrapped: numa-exec runs in front of its command"
        elif name in cgroup_bound:
            status = "cgroup-bound: no command, the node's agent binds its cgroup's cpuset"
        elif name in skipped or (injected and selected and not container.get("command")):
            status = ("skipped: no command (the webhook cannot see the image's ENTRYPOINT); "
                      "set command: in the pod spec")
        elif listed and not selected:
            status = f"not selected: not listed in {names.ANNOTATION_CONTAINERS}"
        elif not selected:
            status = "not selected: requests no GPU"
        elif injected:
            status = "selected but not wrapped"
        elif opted_in:
            status = "would be wrapped, had the webhook mutated the pod"
        else:
            status = "GPU container, not wrapped"
        report.append(_Container(name, gpus, status))
    return report


def _cgroup_bound(pod: Obj) -> set[str]:
    return {name for name in _annotations(pod).get(names.ANNOTATION_CGROUP_BOUND, "").split(",")
            if name}


def _observed_verdict(binding: str, annotations: Mapping[str, str]) -> str:
    """The verdict from what the node's agent observed on the processes (the operator wrote it)."""
    nodes = annotations.get(names.ANNOTATION_NUMA_NODES) or NONE
    cpus = annotations.get(names.ANNOTATION_CPUSET) or NONE
    if binding == "full":
        return f"bound to NUMA node(s) {nodes}, CPUs {cpus} (observed: CPUs and memory)"
    if binding == "cpu-only":
        return (f"CPUs bound to NUMA node(s) {nodes}, CPUs {cpus}; memory not bound "
                "(observed; see Placement)")
    if binding == "unknown":
        return "bound state unknown: the agent has not found every container's processes yet"
    return f"not bound: observed running on CPUs {cpus} (see Placement for why)"


def explain(pod: Obj, namespace: Obj | None, *, gpu_resources: Sequence[str] = DEFAULT_GPU_RESOURCES,
            logs: Mapping[str, str | None] | None = None,
            excluded_namespaces: Collection[str] | None = None) -> str:
    """Why this pod was or was not bound, from its spec, annotations, namespace and logs.

    ``excluded_namespaces``: the namespaces the webhook configuration never sends (see
    :func:`excluded_namespaces`); None when unknown, then only kube-system and kube-node-lease.
    """
    meta = _meta(pod)
    ns_name = meta.get("namespace", "")
    annotations = _annotations(pod)
    phase = (pod.get("status") or {}).get("phase") or "Unknown"
    node = (pod.get("spec") or {}).get("nodeName") or "(not scheduled)"
    opted_in, opt_in_text = _opt_in(pod, namespace)
    injected_by = annotations.get(names.ANNOTATION_INJECTED)
    containers = _containers_report(pod, gpu_resources, opted_in or injected_by is not None)
    wrapped = [c.name for c in containers if c.status.startswith("wrapped")]
    bound_somehow = wrapped or [c.name for c in containers if c.status.startswith("cgroup-bound")]
    selected = [c.name for c in containers if not c.status.startswith("not selected")]
    placement = _placement(pod)
    logs = logs or {}

    if MIRROR_POD_ANNOTATION in annotations:
        verdict = "not bound: a static (mirror) pod; the kubelet creates it without admission webhooks"
    elif injected_by is None and not opted_in:
        verdict = "not bound: " + ("the pod did not opt in" if opt_in_text.startswith("no") else opt_in_text)
    elif injected_by is None:
        if not selected:
            listed = ("names none of its containers" if listed_containers(annotations)
                      else "is not set")
            verdict = (f"not bound: no container requests a GPU ({', '.join(gpu_resources)}) and "
                       f"{names.ANNOTATION_CONTAINERS} {listed}")
        elif ns_name in (SYSTEM_NAMESPACES if excluded_namespaces is None else excluded_namespaces):
            verdict = f"not bound: the webhook is never called for pods in {ns_name}"
        else:
            verdict = ("not bound: the webhook did not mutate this pod. It was created before gpunuma was "
                       "installed, or the webhook was unreachable (failurePolicy Ignore admits the pod "
                       "unchanged): check the gpunuma webhook pods, then recreate this pod")
    elif not bound_somehow:
        verdict = "not bound: no container could be wrapped (see Containers)"
    elif annotations.get(names.ANNOTATION_BINDING):
        verdict = _observed_verdict(annotations[names.ANNOTATION_BINDING], annotations)
    elif annotations.get(names.ANNOTATION_NUMA_NODES):
        verdict = (f"bound to NUMA node(s) {annotations[names.ANNOTATION_NUMA_NODES]}, "
                   f"CPUs {annotations.get(names.ANNOTATION_CPUSET) or NONE}")
    elif phase != "Running":
        verdict = f"wrapped; the placement is written once the pod runs (phase {phase})"
    else:
        verdict = (f"wrapped; no placement yet: the operator writes it once the agent on {node} reports "
                   "the pod's GPUs (kubectl gpunuma nodes shows whether that node is stale)")

    lines = [
        f"Pod:         {ns_name}/{meta.get('name', '')}",
        f"Node:        {node}",
        f"Phase:       {phase}",
        f"Verdict:     {verdict}",
        f"Opt-in:      {opt_in_text}",
        f"Policy:      {_policy(pod) if wrapped else annotations.get(names.ANNOTATION_POLICY, NONE)}",
        f"Injected:    {f'by gpunuma {injected_by}' if injected_by else 'no'}",
        "Containers:",
    ]
    rows = [[c.name, ",".join(f"{r}={q}" for r, q in sorted(c.gpus.items())) or NONE, c.status]
            for c in containers]
    lines += ["  " + line for line in format_table(["NAME", "GPU REQUEST", "STATUS"], rows).splitlines()]
    if placement:
        lines.append("Placement:")
        entries = [(name, entry) for name, entry in sorted(placement.items())
                   if isinstance(entry, dict)]
        rows = [[name, ",".join(map(str, entry.get("gpus") or [])) or NONE,
                 ",".join(map(str, entry.get("numaNodes") or [])) or NONE,
                 entry.get("plannedCpus") or entry.get("cpus") or NONE]
                for name, entry in entries]
        headers = ["NAME", "GPUS", "NUMA", "CPUS"]
        if any("binding" in entry for _, entry in entries):
            # What the agent observed on the processes, beside the plan.
            headers = ["NAME", "GPUS", "NUMA", "PLANNED CPUS", "OBSERVED CPUS", "BINDING", "BY"]
            for row, (_, entry) in zip(rows, entries, strict=True):
                observed = "binding" in entry
                row += [entry.get("cpus") or NONE if observed else "(not observed)",
                        entry.get("binding") or NONE, entry.get("by") or NONE]
        lines += ["  " + line for line in format_table(headers, rows).splitlines()]
        lines += [f"  {name}: {entry['reason']}" for name, entry in entries if entry.get("reason")]
    if wrapped:
        lines.append("numa-exec:")
        for name in wrapped:
            log = logs.get(name)
            found = _numa_exec_lines(log)
            if found:
                lines += [f"  {name}: {line}" for line in found]
            elif log is None:
                lines.append(f"  {name}: (no log yet)")
            else:
                lines.append(f"  {name}: (no {NUMA_EXEC_PREFIX} line in the log: GPUNUMA_QUIET=1, or the log "
                             "was rotated)")
    return "\n".join(lines) + "\n"


# --- the API -------------------------------------------------------------------------------------

class KubeApi:
    """The few reads the plugin makes, as plain JSON, through the chosen kubeconfig context."""

    def __init__(
        self, kubeconfig: str | None = None, context: str | None = None, timeout: float = 15.0,
    ) -> None:
        from kubernetes import client, config

        try:
            api_client = config.new_client_from_config(  # type: ignore[no-untyped-call]
                config_file=kubeconfig, context=context)
            contexts, active = config.list_kube_config_contexts(  # type: ignore[no-untyped-call]
                config_file=kubeconfig)
        except (config.ConfigException, OSError) as exc:
            where = kubeconfig or os.environ.get("KUBECONFIG") or "~/.kube/config"
            raise ClusterError(f"cannot load the kubeconfig ({where}): {exc}") from exc
        chosen = next((c for c in contexts if c["name"] == context), active) if context else active
        self.namespace: str = (chosen or {}).get("context", {}).get("namespace") or "default"
        self.server: str = api_client.configuration.host
        self._core = client.CoreV1Api(api_client)
        self._custom = client.CustomObjectsApi(api_client)
        self._timeout = timeout

    def _call(self, what: str, method: Any, *args: Any, **kwargs: Any) -> Any:
        """Call a client method; None for 404; anything else becomes a ClusterError."""
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        try:
            response = method(*args, _preload_content=False, _request_timeout=self._timeout, **kwargs)
        except ApiException as exc:
            if exc.status == 404:
                return None
            if exc.status in (401, 403):
                raise ClusterError(f"not allowed to {what}: {_api_message(exc)}") from exc
            raise ClusterError(f"cannot {what}: HTTP {exc.status} {_api_message(exc)}") from exc
        except HTTPError as exc:
            raise ClusterError(f"cannot reach the cluster at {self.server} to {what}: {exc}") from exc
        return response.data

    def _json(self, what: str, method: Any, *args: Any, **kwargs: Any) -> Any:
        data = self._call(what, method, *args, **kwargs)
        return None if data is None else json.loads(data)

    def list_layouts(self) -> list[dict[str, Any]]:
        found = self._json("list GPUNumaLayouts", self._custom.list_cluster_custom_object,
                           names.CRD_GROUP, names.CRD_VERSION, names.CRD_PLURAL)
        if found is None:
            raise ClusterError(
                f"gpunuma is not installed in this cluster: the GPUNumaLayout CRD "
                f"({names.CRD_PLURAL}.{names.CRD_GROUP}) was not found at {self.server}. "
                "Install the chart (helm install gpunuma charts/gpunuma -n gpunuma-system "
                "--create-namespace), or check --context."
            )
        items: list[dict[str, Any]] = found.get("items") or []
        return items

    def list_nodes(self) -> list[dict[str, Any]]:
        found = self._json("list nodes", self._core.list_node)
        return list((found or {}).get("items") or [])

    def list_managed_pods(self, namespace: str | None) -> list[dict[str, Any]]:
        selector = f"{names.LABEL_MANAGED}=true"
        if namespace is None:
            found = self._json("list pods", self._core.list_pod_for_all_namespaces, label_selector=selector)
        else:
            found = self._json(f"list pods in {namespace}", self._core.list_namespaced_pod, namespace,
                               label_selector=selector)
        return list((found or {}).get("items") or [])

    def read_pod(self, namespace: str, name: str) -> dict[str, Any] | None:
        found: dict[str, Any] | None = self._json(f"read pod {namespace}/{name}",
                                                  self._core.read_namespaced_pod, name, namespace)
        return found

    def read_namespace(self, name: str) -> dict[str, Any] | None:
        """The namespace, or None when it cannot be read (its label then shows as unknown)."""
        try:
            found: dict[str, Any] | None = self._json(f"read namespace {name}", self._core.read_namespace,
                                                      name)
        except ClusterError:
            return None
        return found

    def list_webhook_configurations(self) -> list[dict[str, Any]]:
        """gpunuma's MutatingWebhookConfigurations; empty when they cannot be read (RBAC)."""
        from kubernetes import client

        selector = ",".join(f"{key}={value}" for key, value in WEBHOOK_CONFIGURATION_LABELS.items())
        api = client.AdmissionregistrationV1Api(self._core.api_client)
        try:
            found = self._json("list MutatingWebhookConfigurations",
                               api.list_mutating_webhook_configuration, label_selector=selector)
        except ClusterError:
            return []
        return list((found or {}).get("items") or [])

    def read_log_head(self, namespace: str, pod: str, container: str) -> str | None:
        """The first bytes of a container's log (numa-exec writes first); None when there is none."""
        try:
            data = self._call(f"read the log of {namespace}/{pod}/{container}",
                              self._core.read_namespaced_pod_log, pod, namespace, container=container,
                              limit_bytes=LOG_HEAD_BYTES)
        except ClusterError:
            return None  # e.g. 400 while the container is still waiting to start
        return None if data is None else bytes(data).decode("utf-8", "replace")


def excluded_namespaces(configurations: Iterable[Obj]) -> tuple[str, ...] | None:
    """The namespaces gpunuma's MutatingWebhookConfiguration never sends to the webhook (system
    namespaces, the release namespace, webhook.additionalExcludedNamespaces); None without one."""
    found: set[str] = set()
    seen = False
    for configuration in configurations:
        if not WEBHOOK_CONFIGURATION_LABELS.items() <= _labels(configuration).items():
            continue
        seen = True
        for hook in configuration.get("webhooks") or []:
            for expression in (hook.get("namespaceSelector") or {}).get("matchExpressions") or []:
                if expression.get("key") == "kubernetes.io/metadata.name" and (
                        expression.get("operator") == "NotIn"):
                    found.update(expression.get("values") or [])
    return tuple(sorted(found)) if seen else None


def _api_message(exc: Any) -> str:
    try:
        return str(json.loads(exc.body).get("message") or exc.reason)
    except (TypeError, ValueError, AttributeError):
        return str(exc.reason)


# --- the command ---------------------------------------------------------------------------------

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
    logs = {name: api.read_log_head(namespace, args.pod, name) for name in _wrapped(pod)}
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
