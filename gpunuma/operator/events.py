"""Kubernetes Events: about Nodes, where ``kubectl describe node`` shows them, and the webhook's
warnings about a pod, on the object that created it.

An Event is a courtesy: a failure to post one is logged and never fails a reconcile.
"""

from __future__ import annotations

import datetime as dt
import logging
import secrets
from collections.abc import Mapping
from typing import Any

from gpunuma import names
from gpunuma.kubeapi import ApiError, KubeClient
from gpunuma.operator import paths
from gpunuma.operator.cache import NodeView
from gpunuma.rfc3339 import format_rfc3339

__all__ = [
    "EVENT_SOURCE",
    "WARNING_REASON",
    "post_node_event",
    "post_pod_event",
    "post_pod_warnings",
    "warning_target",
]

logger = logging.getLogger("gpunuma.operator")

EVENT_SOURCE = "gpunuma-operator"
NODE_EVENTS_NAMESPACE = "default"  # where `kubectl describe node` looks for a Node's events


async def post_node_event(
    client: KubeClient, now: dt.datetime, node: NodeView, kind: str, reason: str, message: str,
) -> None:
    involved = {"apiVersion": "v1", "kind": "Node", "name": node.name, "uid": node.uid or node.name}
    await _post(client, now, NODE_EVENTS_NAMESPACE, node.name, involved, kind, reason, message)


async def post_pod_event(
    client: KubeClient, now: dt.datetime, namespace: str, name: str, uid: str, kind: str,
    reason: str, message: str,
) -> None:
    involved = {"apiVersion": "v1", "kind": "Pod", "namespace": namespace, "name": name,
                "uid": uid}
    await _post(client, now, namespace, name, involved, kind, reason, message)


async def _post(
    client: KubeClient, now: dt.datetime, namespace: str, name: str,
    involved: dict[str, str], kind: str, reason: str, message: str,
) -> bool:
    """Post one Event; False if the API server refused it (logged: an Event is a courtesy)."""
    stamp = format_rfc3339(now)
    body = {
        "apiVersion": "v1",
        "kind": "Event",
        # Named like kubectl's events (object.random hex) rather than by generateName, which
        # not every API emulator implements.
        "metadata": {"name": f"{name}.{secrets.token_hex(8)}", "namespace": namespace},
        "involvedObject": involved,
        "type": kind,
        "reason": reason,
        "message": message[:1024],
        "source": {"component": EVENT_SOURCE},
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "count": 1,
    }
    try:
        await client.create(paths.events(namespace), body)
    except ApiError as exc:
        logger.warning("%s %s: could not post event %s: %s", involved["kind"].lower(), name,
                       reason, exc)
        return False
    return True


WARNING_REASON = "GPUNumaNotBound"


def warning_target(pod: Mapping[str, Any]) -> dict[str, str]:
    """The object an Event about ``pod``'s warnings belongs on: its controller (the ReplicaSet,
    Job, StatefulSet… that created it and that ``kubectl describe`` shows), else the pod itself."""
    meta = pod.get("metadata") or {}
    namespace = str(meta.get("namespace", ""))
    for owner in meta.get("ownerReferences") or []:
        if owner.get("controller") and owner.get("kind") and owner.get("name"):
            return {"apiVersion": str(owner.get("apiVersion", "")), "kind": str(owner["kind"]),
                    "name": str(owner["name"]), "uid": str(owner.get("uid", "")),
                    "namespace": namespace}
    return {"apiVersion": "v1", "kind": "Pod", "name": str(meta.get("name", "")),
            "uid": str(meta.get("uid", "")), "namespace": namespace}


async def post_pod_warnings(
    client: KubeClient, now: dt.datetime, pod: Mapping[str, Any], target: Mapping[str, str],
) -> bool:
    """One Warning Event on ``target`` with the webhook's warnings about ``pod``; False if the API
    server refused it (logged: an Event is a courtesy)."""
    meta = pod.get("metadata") or {}
    text = str((meta.get("annotations") or {}).get(names.ANNOTATION_WARNINGS, ""))
    warnings = [line.strip() for line in text.splitlines() if line.strip()]
    if not warnings:
        return True
    about = "" if target["kind"] == "Pod" else f"pod {meta.get('name', '')}: "
    return await _post(client, now, target["namespace"], target["name"], dict(target), "Warning",
                       WARNING_REASON, about + "; ".join(warnings))
