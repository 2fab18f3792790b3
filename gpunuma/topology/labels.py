"""Node labels derived from a layout (DESIGN §3): facts in, ``{key: value}`` out, no I/O.

Kept apart from the layout itself (as node-feature-discovery keeps features apart from labels): the
CR holds the facts, these are a lossy, selector-friendly projection of them. Every value produced is
a valid Kubernetes label value; one that would not be (too long) is left out rather than cut, since a
truncated map would tell a scheduler something false.
"""

from __future__ import annotations

import re
from collections import defaultdict

from gpunuma import names
from gpunuma.topology.model import Layout

__all__ = ["MAX_LABEL_VALUE_LENGTH", "is_valid_label_value", "node_labels"]

MAX_LABEL_VALUE_LENGTH = 63
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


def is_valid_label_value(value: str) -> bool:
    """Kubernetes' rule for label values: ≤ 63 characters, alphanumeric at both ends."""
    return len(value) <= MAX_LABEL_VALUE_LENGTH and _LABEL_VALUE.match(value) is not None


def node_labels(layout: Layout) -> dict[str, str]:
    """The ``gpunuma.io/*`` labels a node with this layout gets (``stale`` is the operator's)."""
    per_node = layout.gpus_per_cpu_node()
    unknown = any(gpu.numa_node is None for gpu in layout.gpus)
    labels = {
        names.LABEL_GPU_COUNT: str(len(layout.gpus)),
        names.LABEL_NUMA_COUNT: str(len(layout.cpu_nodes)),
        names.LABEL_GPU_NUMA_COUNT: str(sum(1 for count in per_node.values() if count)),
        names.LABEL_MAX_GPUS_PER_NUMA: str(max(per_node.values(), default=0)),
        names.LABEL_LAYOUT: layout.gpus_per_node_text(),
        names.LABEL_SOURCE: layout.source,
    }
    if layout.gpus and not unknown:
        labels[names.LABEL_NUMA_GPU_MAP] = _numa_gpu_map(layout)
    vendors = layout.vendors()
    if vendors:
        labels[names.LABEL_VENDOR] = next(iter(vendors)) if len(vendors) == 1 else "mixed"
    return {key: value for key, value in labels.items() if is_valid_label_value(value)}


_VENDOR_PREFIX = {"nvidia": "n", "amd": "a"}


def _numa_gpu_map(layout: Layout) -> str:
    """``0-0.1_1-2.3``. Indices count per vendor, so on a mixed NVIDIA+AMD node a bare ``0`` would
    name two GPUs: there each index carries its vendor's letter (``0-a0.n0_1-a1.n1``); ``n``/``a``
    and digits are valid label characters, and single-vendor nodes keep the plain form."""
    mixed = len(layout.vendors()) > 1
    entries: dict[int, list[tuple[str, int]]] = defaultdict(list)
    for gpu in layout.gpus:
        if gpu.numa_node is not None:
            prefix = _VENDOR_PREFIX[gpu.vendor] if mixed else ""
            entries[gpu.numa_node].append((prefix, gpu.index))
    return "_".join(
        f"{node}-{'.'.join(f'{prefix}{index}' for prefix, index in sorted(entries[node]))}"
        for node in sorted(entries)
    )
