"""The mutation undone: a pod as it was before gpunuma's webhook or ``gpunuma inject`` changed it.

``gpunuma uninject`` uses it, like ``linkerd uninject``: for manifests injected offline that should
go back to the webhook (or to no gpunuma at all), and for pods read back with ``kubectl get -o
yaml``. Pure: no I/O.

Removed: the launcher init container and volume, the ``/opt/gpunuma/numa-exec --`` in front of
wrapped commands, their launcher mount and ``GPUNUMA_POLICY`` (also of the containers listed for
the cgroup mechanism), the annotations and label that the webhook and the operator write. Kept:
what the user writes (``gpunuma.io/inject``, ``gpunuma.io/policy``, ``gpunuma.io/containers``), so
the pod's choices survive a round trip. Not restored: a ``GPUNUMA_POLICY`` the pod set itself
and the webhook replaced (the old value is lost).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from gpunuma import names
from gpunuma.webhook.edits import OUR_ANNOTATIONS, POLICY_ENV

__all__ = ["GPUNUMA_WRITTEN_ANNOTATIONS", "remove_mutation"]

# Annotations written by the webhook (or `gpunuma inject`) and by the operator: never the user's.
GPUNUMA_WRITTEN_ANNOTATIONS = frozenset({
    *OUR_ANNOTATIONS, names.ANNOTATION_PLACEMENT, names.ANNOTATION_NUMA_NODES,
    names.ANNOTATION_CPUSET, names.ANNOTATION_BINDING,
})
_WRAPPER = [names.LAUNCHER_PATH, "--"]


def remove_mutation(pod: Mapping[str, Any]) -> dict[str, Any]:
    """``pod`` without gpunuma's mutation (a copy; the same content when it carries none)."""
    result = copy.deepcopy(dict(pod))
    metadata = result.get("metadata")
    cgroup_bound: set[str] = set()
    if isinstance(metadata, dict):
        annotations = metadata.get("annotations")
        listed = (annotations.get(names.ANNOTATION_CGROUP_BOUND)
                  if isinstance(annotations, dict) else None)
        cgroup_bound = {name for name in str(listed or "").split(",") if name}
        _drop_keys(metadata, "annotations", GPUNUMA_WRITTEN_ANNOTATIONS)
        _drop_keys(metadata, "labels", {names.LABEL_MANAGED})
    spec = result.get("spec")
    if not isinstance(spec, dict):
        return result
    _drop_named(spec, "initContainers", names.LAUNCHER_INIT_CONTAINER)
    _drop_named(spec, "volumes", names.LAUNCHER_VOLUME)
    for key in ("initContainers", "containers"):
        for container in spec.get(key) or []:
            if isinstance(container, dict):
                _unwrap(container)
                if container.get("name") in cgroup_bound:
                    _drop_named(container, "env", POLICY_ENV)
    return result


def _unwrap(container: dict[str, Any]) -> None:
    command = container.get("command")
    if not (isinstance(command, list) and command[:2] == _WRAPPER):
        return
    container["command"] = command[2:]
    _drop_named(container, "volumeMounts", names.LAUNCHER_VOLUME)
    _drop_named(container, "env", POLICY_ENV)


def _drop_named(parent: dict[str, Any], key: str, name: str) -> None:
    """Remove the entry called ``name`` from the list ``parent[key]``; an emptied list goes too."""
    items = parent.get(key)
    if not isinstance(items, list):
        return
    kept = [item for item in items if not (isinstance(item, dict) and item.get("name") == name)]
    if len(kept) == len(items):
        return
    if kept:
        parent[key] = kept
    else:
        del parent[key]


def _drop_keys(metadata: dict[str, Any], key: str, drop: frozenset[str] | set[str]) -> None:
    values = metadata.get(key)
    if not isinstance(values, dict) or not drop & values.keys():
        return
    kept = {k: v for k, v in values.items() if k not in drop}
    if kept:
        metadata[key] = kept
    else:
        del metadata[key]
