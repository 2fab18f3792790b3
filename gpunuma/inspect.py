"""``gpunuma inspect`` output: a layout as a table for people, JSON or ``key=value`` for scripts.

Pure formatting of a :class:`Layout`; discovery happens in the CLI. The JSON form is the layout
document of DESIGN §4 plus a ``labels`` object, so that a script sees exactly what the agent would
publish and what the operator would label.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from gpunuma.topology import Gpu, Layout, format_cpulist, node_labels

__all__ = ["render"]


def render(layout: Layout, output: str) -> str:
    labels = node_labels(layout)
    if output == "json":
        return json.dumps({**layout.to_document(), "labels": labels}, indent=2) + "\n"
    if output == "labels":
        return "".join(f"{key}={value}\n" for key, value in sorted(labels.items()))
    if output == "table":
        return _table(layout, labels)
    raise ValueError(f"unknown output format {output!r}; expected table, json or labels")


def _table(layout: Layout, labels: dict[str, str]) -> str:
    per_node = layout.gpus_per_cpu_node()
    lines = ["NUMA NODES"]
    lines += _columns(
        ("NODE", "CPUS", "MEMORY", "GPUS"),
        [
            (
                str(node.id),
                format_cpulist(node.cpus) or "(none: memory only)",
                _memory(node.memory_mib),
                str(per_node[node.id]) if node.id in per_node else "-",
            )
            for node in layout.numa_nodes
        ],
    )
    lines.append("")
    if layout.gpus:
        lines.append(f"GPUS (NUMA nodes decided by: {layout.source})")
        lines += _columns(
            ("INDEX", "VENDOR", "MODEL", "UUID", "BUS ID", "NUMA"),
            [
                (str(gpu.index), gpu.vendor, gpu.model or "-", gpu.uuid or "-", gpu.pci_bus_id,
                 _numa(gpu))
                for gpu in layout.gpus
            ],
        )
    else:
        lines.append(
            "No GPUs found on this machine (no NVIDIA or AMD display or accelerator PCI function)."
        )
    lines.append("")
    lines.append("NODE LABELS")
    lines += [f"  {key}={value}" for key, value in sorted(labels.items())]
    if layout.errors:
        lines.append("")
        lines.append(f"PROBLEMS ({len(layout.errors)})")
        lines += [
            f"  {problem.source}: {problem.device + ': ' if problem.device else ''}{problem.message}"
            for problem in layout.errors
        ]
    return "\n".join(lines) + "\n"


def _numa(gpu: Gpu) -> str:
    if gpu.numa_node is None:
        return f"unknown (reported {gpu.reported_numa_node})"
    if gpu.numa_node != gpu.reported_numa_node:
        return f"{gpu.numa_node} (reported {gpu.reported_numa_node})"
    return str(gpu.numa_node)


def _memory(mib: int | None) -> str:
    if mib is None:
        return "-"
    return f"{mib / 1024:.0f} GiB" if mib >= 1024 else f"{mib} MiB"


def _columns(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    return [
        "  " + "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in [header, *rows]
    ]
