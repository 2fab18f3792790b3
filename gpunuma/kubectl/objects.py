"""Reading API objects for ``kubectl gpunuma``: the accessors and constants the tables and the
explanation share. Pure: no I/O."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gpunuma import names
from gpunuma.webhook.edits import POLICY_ENV

__all__ = [
    "NONE", "NUMA_EXEC_PREFIX", "SYSTEM_NAMESPACES", "Obj",
    "all_containers", "annotations_of", "container_env", "labels_of", "meta_of", "policy_of",
    "wrapped_of",
]


NONE = "-"

# numa-exec prints its decision (or its refusal) as one stderr line with this prefix (DESIGN §6).
NUMA_EXEC_PREFIX = "gpunuma:"

# Namespaces the chart always excludes from the webhook besides its own release namespace
# (DESIGN §9). Used only when the webhook configuration cannot be read: it has the full list.
SYSTEM_NAMESPACES = ("kube-system", "kube-node-lease")

Obj = Mapping[str, Any]

def meta_of(obj: Obj) -> Mapping[str, Any]:
    meta: Mapping[str, Any] = obj.get("metadata") or {}
    return meta

def annotations_of(obj: Obj) -> Mapping[str, str]:
    return meta_of(obj).get("annotations") or {}

def labels_of(obj: Obj) -> Mapping[str, str]:
    return meta_of(obj).get("labels") or {}

def container_env(container: Obj, name: str) -> str | None:
    for item in container.get("env") or []:
        if item.get("name") == name and "value" in item:
            return str(item["value"])
    return None

def all_containers(pod: Obj) -> list[Obj]:
    spec: Obj = pod.get("spec") or {}
    return [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]

def wrapped_of(pod: Obj) -> list[str]:
    """Wrapped containers: the webhook's annotation, else those whose command starts numa-exec."""
    annotated = annotations_of(pod).get(names.ANNOTATION_WRAPPED)
    if annotated is not None:
        return [name for name in annotated.split(",") if name]
    return [c["name"] for c in all_containers(pod) if (c.get("command") or [None])[0] == names.LAUNCHER_PATH]

def policy_of(pod: Obj) -> str:
    """The policy numa-exec runs with: the env the webhook set, else the pod's annotation."""
    wrapped = set(wrapped_of(pod))
    for container in all_containers(pod):
        if container.get("name") in wrapped:
            value = container_env(container, POLICY_ENV)
            if value:
                return value
    return annotations_of(pod).get(names.ANNOTATION_POLICY) or NONE
