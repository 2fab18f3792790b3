"""Kubernetes Events about Nodes, where ``kubectl describe node`` shows them.

An Event is a courtesy: a failure to post one is logged and never fails a reconcile.
"""

from __future__ import annotations

import datetime as dt
import logging
import secrets

from gpunuma.kubeapi import ApiError, KubeClient
from gpunuma.operator import paths
from gpunuma.operator.cache import NodeView
from gpunuma.rfc3339 import format_rfc3339

__all__ = ["EVENT_SOURCE", "post_node_event"]

logger = logging.getLogger("gpunuma.operator")

EVENT_SOURCE = "gpunuma-operator"
NODE_EVENTS_NAMESPACE = "default"  # where `kubectl describe node` looks for a Node's events


async def post_node_event(
    client: KubeClient, now: dt.datetime, node: NodeView, kind: str, reason: str, message: str,
) -> None:
    stamp = format_rfc3339(now)
    body = {
        "apiVersion": "v1",
        "kind": "Event",
        # Named like kubectl's events (object.random hex) rather than by generateName, which
        # not every API emulator implements.
        "metadata": {"name": f"{node.name}.{secrets.token_hex(8)}",
                     "namespace": NODE_EVENTS_NAMESPACE},
        "involvedObject": {"apiVersion": "v1", "kind": "Node", "name": node.name,
                           "uid": node.uid or node.name},
        "type": kind,
        "reason": reason,
        "message": message[:1024],
        "source": {"component": EVENT_SOURCE},
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "count": 1,
    }
    try:
        await client.create(paths.events(NODE_EVENTS_NAMESPACE), body)
    except ApiError as exc:
        logger.warning("node %s: could not post event %s: %s", node.name, reason, exc)
