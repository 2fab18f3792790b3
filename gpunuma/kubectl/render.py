"""The ``nodes`` and ``pods`` tables of ``kubectl gpunuma``: API objects → rows and text. Pure.

Each table is a tuple of :class:`Column`: the default table shows the narrow columns (it fits 120
terminal columns on real clusters), ``-o wide`` all of them, and ``-o json|yaml`` every column as a
field of one object per row, under the column's ``key`` (``-`` becomes null).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from gpunuma import names
from gpunuma.kubectl.objects import NONE, Obj, annotations_of, labels_of, meta_of, policy_of, wrapped_of
from gpunuma.topology.cpulist import format_cpulist

__all__ = [
    "NODE_COLUMNS", "Column", "format_table", "node_rows", "pod_columns", "pod_rows", "render",
]


@dataclass(frozen=True)
class Column:
    header: str  # in the tables
    key: str     # in -o json|yaml
    wide: bool = False  # only under -o wide (and in json|yaml)


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
    if node is not None and labels_of(node).get(names.LABEL_STALE) == "true":
        return True
    conditions = ((layout or {}).get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Stale" and c.get("status") == "True" for c in conditions)

NODE_COLUMNS = (
    Column("NODE", "node"), Column("GPUS", "gpus"), Column("NUMA", "numaNodes"), Column("LAYOUT", "layout"),
    Column("GPUS PER NUMA NODE", "gpusPerNumaNode", wide=True), Column("SOURCE", "source"),
    Column("LABELED", "labeled", wide=True), Column("STALE", "stale"), Column("HEARTBEAT", "heartbeat"),
)

def node_rows(layouts: Iterable[Obj], nodes: Iterable[Obj], now: dt.datetime) -> list[list[str]]:
    """One row per GPU node: every node with a GPUNumaLayout, and nodes still carrying our labels."""
    layouts_by_name = {meta_of(layout).get("name", ""): layout for layout in layouts}
    nodes_by_name = {meta_of(node).get("name", ""): node for node in nodes}
    gpu_nodes = set(layouts_by_name) | {
        name for name, node in nodes_by_name.items() if names.LABEL_GPU_COUNT in labels_of(node)
    }
    rows = []
    for name in sorted(gpu_nodes):
        layout = layouts_by_name.get(name)
        node = nodes_by_name.get(name)
        labels = labels_of(node) if node is not None else {}
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

def pod_rows(pods: Iterable[Obj], *, all_namespaces: bool) -> list[list[str]]:
    """Managed pods (label gpunuma.io/managed=true), sorted by namespace and name."""
    managed = [pod for pod in pods if labels_of(pod).get(names.LABEL_MANAGED) == "true"]
    rows = []
    for pod in sorted(managed, key=lambda p: (meta_of(p).get("namespace", ""), meta_of(p).get("name", ""))):
        annotations = annotations_of(pod)
        running = (pod.get("status") or {}).get("phase") == "Running"
        waiting = "<pending>" if running else NONE
        row = [
            meta_of(pod).get("name", ""),
            (pod.get("spec") or {}).get("nodeName") or NONE,
            policy_of(pod),
            ",".join(wrapped_of(pod)) or NONE,
            annotations.get(names.ANNOTATION_NUMA_NODES) or waiting,
            annotations.get(names.ANNOTATION_CPUSET) or waiting,
            # What the agent observed; none but a placement: from before observed bindings.
            annotations.get(names.ANNOTATION_BINDING)
            or (NONE if names.ANNOTATION_NUMA_NODES in annotations else waiting),
        ]
        rows.append([meta_of(pod).get("namespace", ""), *row] if all_namespaces else row)
    return rows

_POD_COLUMNS = (
    Column("POD", "pod"), Column("NODE", "node"), Column("POLICY", "policy"),
    Column("WRAPPED", "wrapped", wide=True), Column("NUMA NODES", "numaNodes"), Column("CPUSET", "cpuset"),
    Column("BINDING", "binding"),
)


def pod_columns(*, all_namespaces: bool) -> tuple[Column, ...]:
    return (Column("NAMESPACE", "namespace"), *_POD_COLUMNS) if all_namespaces else _POD_COLUMNS


def render(columns: Sequence[Column], rows: Sequence[Sequence[str]], output: str) -> str:
    """Rows (one cell per column) as the chosen -o form: a table, a wide table, JSON or YAML."""
    if output in ("json", "yaml"):
        items: list[dict[str, Any]] = [
            {column.key: None if cell == NONE else cell for column, cell in zip(columns, row, strict=True)}
            for row in rows
        ]
        if output == "json":
            return json.dumps({"items": items}, indent=2) + "\n"
        import yaml  # only here: the plugin's start-up is kept short

        return yaml.safe_dump({"items": items}, sort_keys=False)
    shown = [index for index, column in enumerate(columns) if output == "wide" or not column.wide]
    return format_table([columns[i].header for i in shown], ([row[i] for i in shown] for row in rows))
