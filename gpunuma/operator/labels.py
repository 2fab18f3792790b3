"""Node labels: the one merge patch that takes a Node from the labels it has to the ones it should have.

Pure: desired labels (``gpunuma.topology.node_labels`` plus ``stale``), the Node's current labels and
annotations in; a JSON merge patch (RFC 7386) or ``None`` out. The ``gpunuma.io/managed-labels``
annotation remembers which keys we set, so a key that disappears from the layout is removed. Keys
without our prefix are never put into a patch, whatever the annotation says: the annotation is
writable by anyone who can edit the Node, and a tampered list must not let us delete foreign labels.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gpunuma import names

__all__ = ["NODE_LABEL_KEYS", "label_patch", "managed_keys"]

# Every Node label key the operator has ever written. A key listed here is removed when it is no
# longer desired even if the managed-labels annotation was lost (e.g. a Node re-registered with
# its labels restored from a template but not its annotations).
NODE_LABEL_KEYS: frozenset[str] = frozenset({
    names.LABEL_GPU_COUNT,
    names.LABEL_NUMA_COUNT,
    names.LABEL_GPU_NUMA_COUNT,
    names.LABEL_MAX_GPUS_PER_NUMA,
    names.LABEL_LAYOUT,
    names.LABEL_NUMA_GPU_MAP,
    names.LABEL_VENDOR,
    names.LABEL_SOURCE,
    names.LABEL_STALE,
})


def managed_keys(annotations: Mapping[str, str] | None) -> frozenset[str]:
    """Our label keys listed in the managed-labels annotation (foreign entries are dropped)."""
    text = (annotations or {}).get(names.ANNOTATION_MANAGED_LABELS, "")
    return frozenset(
        key.strip() for key in text.split(",") if key.strip().startswith(names.PREFIX)
    )


def label_patch(
    desired: Mapping[str, str],
    labels: Mapping[str, str] | None,
    annotations: Mapping[str, str] | None,
) -> dict[str, Any] | None:
    """The merge patch for a Node's metadata, or ``None`` when the Node is already right.

    ``desired`` must hold only ``gpunuma.io/`` keys; an empty mapping removes everything we manage
    (what happens when a layout is deleted).
    """
    foreign = sorted(key for key in desired if not key.startswith(names.PREFIX))
    if foreign:
        raise ValueError(f"desired node labels must start with {names.PREFIX!r}: {foreign}")
    current = dict(labels or {})
    ours = (managed_keys(annotations) | NODE_LABEL_KEYS) & current.keys()
    label_changes: dict[str, str | None] = {
        key: value for key, value in desired.items() if current.get(key) != value
    }
    label_changes.update({key: None for key in sorted(ours - desired.keys())})

    annotation_value = ",".join(sorted(desired)) or None
    current_annotation = (annotations or {}).get(names.ANNOTATION_MANAGED_LABELS)
    metadata: dict[str, Any] = {}
    if label_changes:
        metadata["labels"] = label_changes
    if current_annotation != annotation_value:
        metadata["annotations"] = {names.ANNOTATION_MANAGED_LABELS: annotation_value}
    return {"metadata": metadata} if metadata else None
