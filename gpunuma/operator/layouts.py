"""Layouts → Node labels and the layout's status, with one Event per staleness transition.

Every write is guarded by "differs from what the object has" (:mod:`labels`, :mod:`status`) and
sent at most once per view (:class:`PatchOnce`), so that the operator's own writes — which come
back as watch events — converge after one round instead of echoing.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from gpunuma import names
from gpunuma.kubeapi import ApiError, KubeClient
from gpunuma.operator import paths
from gpunuma.operator.cache import Cache, LayoutView, NodeView
from gpunuma.operator.events import post_node_event
from gpunuma.operator.labels import label_patch
from gpunuma.operator.staleness import judge_heartbeat
from gpunuma.operator.status import (
    CONDITION_CGROUP_BINDING,
    CONDITION_LABELED,
    CONDITION_STALE,
    Condition,
    cgroup_binding_condition,
    desired_status,
    find_condition,
    merge_patch,
)
from gpunuma.operator.writes import PatchOnce
from gpunuma.settings import OperatorSettings

__all__ = ["LayoutReconciler"]

logger = logging.getLogger("gpunuma.operator")


@dataclass
class LayoutReconciler:
    settings: OperatorSettings
    client: KubeClient
    cache: Cache
    writes: PatchOnce
    clock: Callable[[], dt.datetime]
    _stale_reported: dict[str, bool] = field(default_factory=dict)
    _cgroup_reported: dict[str, str | None] = field(default_factory=dict)

    async def reconcile(self, layout: LayoutView) -> None:
        """Bring the Node's labels and the layout's status in line with the layout's spec."""
        now = self.clock()
        heartbeat = judge_heartbeat(
            layout.spec.get("heartbeatTime"), now,
            interval_s=self.settings.heartbeat_interval_s,
            missed=self.settings.stale_after_heartbeats,
        )
        stale = Condition(
            CONDITION_STALE,
            "Unknown" if heartbeat.stale is None else ("True" if heartbeat.stale else "False"),
            heartbeat.reason, heartbeat.message,
        )
        applied: dict[str, str] | None = None
        derived = self.cache.derived(layout)
        desired = None if derived.labels is None else dict(derived.labels)
        if desired is None:
            labeled = Condition(CONDITION_LABELED, "False", "InvalidLayout", derived.invalid or "")
        else:
            if heartbeat.stale:
                desired[names.LABEL_STALE] = "true"
            node = self.cache.nodes.get(layout.name) or await self._fetch_node(layout.name)
            if node is None:
                labeled = _node_missing(layout.name)
            else:
                try:
                    await self.patch_node(node, desired)
                except ApiError as exc:
                    if exc.status != 404:
                        raise
                    self.cache.nodes.pop(layout.name, None)
                    labeled = _node_missing(layout.name)
                else:
                    applied = desired
                    labeled = Condition(CONDITION_LABELED, "True", "LabelsApplied",
                                        f"{len(desired)} gpunuma.io labels on node {layout.name}")
        before = find_condition(layout.status.get("conditions"), CONDITION_STALE)
        cgroup = cgroup_binding_condition(layout.spec.get("cgroupBinding"))
        cgroup_before = find_condition(layout.status.get("conditions"), CONDITION_CGROUP_BINDING)
        wanted = [labeled, stale] if cgroup is None else [labeled, stale, cgroup]
        status = desired_status(layout.status, wanted, applied, layout.generation, now)
        await self._patch_status(layout, status)
        await self._cgroup_event(layout.name, cgroup, (cgroup_before or {}).get("reason"))
        # One Event per transition: what this process last reported wins over the status it
        # reads (which may lag behind its own write); after a restart, the status tells.
        recorded = before is not None and before.get("status") == "True"
        reported = self._stale_reported.get(layout.name, recorded)
        if heartbeat.stale is not None and heartbeat.stale != reported:
            self._stale_reported[layout.name] = heartbeat.stale
            await self._stale_event(layout.name, heartbeat.stale, heartbeat.message)

    async def forget(self, name: str) -> None:
        """A deleted layout: take our labels off its Node (if the Node is still there)."""
        if name in self.cache.nodes:
            try:
                # Read fresh rather than trust the cache: this is the last chance to clean up,
                # and no later event would correct a patch computed from an outdated view.
                fresh = await self.client.get(paths.node(name))
                if fresh is not None:
                    await self.patch_node(NodeView.from_body(fresh), {})
            except ApiError as exc:
                if exc.status != 404:
                    logger.warning("node %s: could not remove labels: %s", name, exc)
        self.writes.forget(("layout", name))
        self._stale_reported.pop(name, None)
        self._cgroup_reported.pop(name, None)

    async def _fetch_node(self, name: str) -> NodeView | None:
        """A Node not (yet) in the cache: at start-up the Node watch may not have delivered it
        when its layout's event is handled. Read it once rather than report it missing."""
        body = await self.client.get(paths.node(name))
        if body is None:
            return None
        self.cache.observe_node(body)
        return self.cache.nodes.get(name)

    async def patch_node(self, node: NodeView, desired: Mapping[str, str]) -> None:
        patch = label_patch(desired, node.labels, node.annotations)
        if patch is None:
            return
        body = await self.writes.merge_patch(("node", node.name), paths.node(node.name), patch,
                                             node)
        if body is None:
            return
        changes = patch["metadata"].get("labels", {})
        logger.info("node %s: %d gpunuma.io labels set, %d removed", node.name,
                    sum(v is not None for v in changes.values()),
                    sum(v is None for v in changes.values()))
        if body.get("metadata"):
            self.cache.nodes[node.name] = NodeView.from_body(body)

    async def _patch_status(self, layout: LayoutView, status: Mapping[str, Any]) -> None:
        patch = merge_patch(layout.status, status)
        if not patch:
            return
        try:
            body = await self.writes.merge_patch(("layout", layout.name),
                                                 paths.layout_status(layout.name),
                                                 {"status": patch}, layout)
        except ApiError as exc:
            # 404: deleted meanwhile (garbage-collected with its Node; the DELETED event cleans
            # the cache) or a CRD without the status subresource (the message says which).
            if exc.status == 404:
                logger.warning("layout %s: status not written: %s", layout.name, exc)
                return
            raise
        if body is not None and body.get("metadata") and layout.name in self.cache.layouts:
            self.cache.layouts[layout.name] = LayoutView.from_body(body)

    async def _cgroup_event(self, node: str, cgroup: Condition | None,
                            recorded: str | None) -> None:
        """One Warning per change when the agent's cgroup mechanism stands aside (the kubelet's
        static CPU manager owns cpusets) or cannot run; as for staleness, what this process last
        reported wins over the status it reads."""
        if cgroup is None:
            return
        reported = self._cgroup_reported.get(node, recorded)
        self._cgroup_reported[node] = cgroup.reason
        view = self.cache.nodes.get(node)
        if cgroup.status == "False" and reported != cgroup.reason and view is not None:
            await post_node_event(self.client, self.clock(), view, "Warning",
                                  f"CgroupBinding{cgroup.reason}",
                                  f"gpunuma cgroup binding: {cgroup.message}")

    async def _stale_event(self, node: str, stale: bool, message: str) -> None:
        view = self.cache.nodes.get(node)
        if view is None:
            return
        reason, kind = ("NodeLayoutStale", "Warning") if stale else ("NodeLayoutFresh", "Normal")
        text = message if stale else f"the gpunuma agent reports again; {message}"
        await post_node_event(self.client, self.clock(), view, kind, reason, text)


def _node_missing(name: str) -> Condition:
    return Condition(CONDITION_LABELED, "False", "NodeNotFound",
                     f"node {name} does not exist; its labels are applied once it registers")
