"""Allocations → pod annotations: what each running GPU pod really got, written onto the pod."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from gpunuma import names
from gpunuma.kubeapi import ApiError, KubeClient
from gpunuma.operator import paths
from gpunuma.operator.cache import Cache
from gpunuma.operator.events import post_pod_event
from gpunuma.operator.placement import (
    AllocationError,
    annotation_patch,
    pods_with_allocations,
    unbound_containers,
)
from gpunuma.operator.writes import PatchOnce

__all__ = ["PodReconciler"]

logger = logging.getLogger("gpunuma.operator")


@dataclass
class PodReconciler:
    cache: Cache
    writes: PatchOnce
    # For the NotNumaBound Event; None posts none.
    client: KubeClient | None = None
    clock: Callable[[], dt.datetime] | None = None
    _allocations_seen: dict[str, object] = field(default_factory=dict)
    # For /metrics: pods reconciled (from a pod's event or its node's layout), and the patches the
    # API server refused (a vanished pod is none).
    reconciles: int = 0
    failures: int = 0

    async def reconcile_node(self, node: str) -> None:
        """After a layout event: the pods on that node, if its allocations changed."""
        layout = self.cache.layouts.get(node)
        if layout is None:
            return
        allocations = layout.spec.get("allocations")
        if node in self._allocations_seen and self._allocations_seen[node] == allocations:
            return
        self._allocations_seen[node] = allocations
        try:
            listed = pods_with_allocations(allocations)
        except AllocationError as exc:
            logger.warning("layout %s: %s", node, exc)
            return
        for key in sorted(listed & self.cache.pods.get(node, {}).keys()):
            await self.reconcile(*key, node=node)

    async def reconcile(self, namespace: str, name: str, *, node: str) -> None:
        self.reconciles += 1
        pod = self.cache.pod(node, namespace, name)
        layout = self.cache.layouts.get(node)
        if pod is None or layout is None or pod.phase != "Running":
            return
        try:
            desired = self.cache.derived(layout).placement(namespace, name)
        except AllocationError as exc:
            logger.warning("layout %s: %s", node, exc)
            return
        if desired is None:
            return
        patch = annotation_patch(desired, pod.annotations)
        if patch is None:
            return
        try:
            body = await self.writes.merge_patch(("pod", f"{namespace}/{name}"),
                                                 paths.pod(namespace, name), patch, pod)
        except ApiError as exc:
            if exc.status == 404:
                self.cache.drop_pod(node, namespace, name)
            else:
                self.failures += 1
                logger.warning("pod %s/%s: %s", namespace, name, exc)
            return
        if body is None:
            return
        logger.info("pod %s/%s: placement %s", namespace, name, desired[names.ANNOTATION_NUMA_NODES])
        if (desired.get(names.ANNOTATION_BINDING) == "none"
                and pod.annotations.get(names.ANNOTATION_BINDING) != "none"
                and names.ANNOTATION_INJECTED in pod.annotations
                and self.client is not None and self.clock is not None):
            # An opted-in pod ended up unbound: once per transition, with each container's reason.
            unbound = unbound_containers(layout.spec.get("allocations"), namespace, name)
            detail = "; ".join(f"{container}: {reason}"
                               for container, reason in sorted(unbound.items()))
            await post_pod_event(self.client, self.clock(), namespace, name,
                                 str((body.get("metadata") or {}).get("uid", "")), "Warning",
                                 "NotNumaBound",
                                 f"gpunuma: not bound to its GPUs' NUMA node(s): {detail}")
        if body.get("metadata"):
            self.cache.observe_pod(body)

    def forget_node(self, node: str) -> None:
        self._allocations_seen.pop(node, None)
