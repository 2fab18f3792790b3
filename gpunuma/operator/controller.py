"""The operator's controller: one object the kopf handlers feed and call.

It owns the caches (:mod:`cache`) and wires the reconcilers that act on them — layouts → Node
labels and status (:mod:`layouts`), allocations → pod annotations (:mod:`pods`), the webhook's
certificates (:mod:`webhook_certificates`) — and runs the periodic loop that only the replica kopf's
peering lets run (:mod:`leadership`). The kopf handlers (``handlers.py``) only feed the caches and
call these methods; everything that decides is a pure function of the operator package.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from gpunuma import names
from gpunuma.kubeapi import ApiError, KubeClient
from gpunuma.operator.cache import Cache, LayoutView, NodeView, PodView
from gpunuma.operator.derived import Derivations
from gpunuma.operator.events import post_pod_warnings, warning_target
from gpunuma.operator.layouts import LayoutReconciler
from gpunuma.operator.leadership import Leadership
from gpunuma.operator.pods import PodReconciler
from gpunuma.operator.webhook_certificates import CertificateReconciler, Outcome
from gpunuma.operator.writes import PatchOnce
from gpunuma.settings import OperatorSettings

__all__ = ["Controller", "LayoutView", "NodeView", "PodView"]

logger = logging.getLogger("gpunuma.operator")

PEERING_RETRY_S = 2.0  # how soon the loop looks again while kopf has not joined the peering
# Warning Events already posted, as (object, warnings): one per ReplicaSet, not one per replica.
# Bounded: forgetting them costs one repeated Event per object, never memory.
WARNED_LIMIT = 10_000


@dataclass
class Controller:
    settings: OperatorSettings
    client: KubeClient
    identity: str = "gpunuma"
    priority: int = 0
    clock: Callable[[], dt.datetime] = field(default=lambda: dt.datetime.now(dt.UTC))
    cache: Cache = field(default_factory=Cache)
    _locks: dict[str, asyncio.Lock] = field(default_factory=lambda: defaultdict(asyncio.Lock))
    # For /metrics (gpunuma.operator.metrics): reconciles and failed ones by kind (layout, pod,
    # certificates), and whether the last periodic round found this replica the active one.
    reconciles: Counter[str] = field(default_factory=Counter)
    reconcile_errors: Counter[str] = field(default_factory=Counter)
    active: bool = False
    warned: set[tuple[str, str]] = field(default_factory=set)

    def __post_init__(self) -> None:
        def now() -> dt.datetime:  # late-bound: tests move the clock of a running controller
            return self.clock()

        self.writes = PatchOnce(self.client)
        self.layout_reconciler = LayoutReconciler(self.settings, self.client, self.cache,
                                                  self.writes, now)
        self.pod_reconciler = PodReconciler(self.cache, self.writes, self.client, now)
        self.certificate_reconciler = CertificateReconciler(self.settings.certificates,
                                                            self.client, now)
        self.leadership = Leadership(self.settings, self.client, self.identity, self.priority,
                                     now)

    @property
    def nodes(self) -> dict[str, NodeView]:
        return self.cache.nodes

    @property
    def layouts(self) -> dict[str, LayoutView]:
        return self.cache.layouts

    @property
    def pods(self) -> dict[str, dict[tuple[str, str], PodView]]:
        return self.cache.pods

    @property
    def _sent(self) -> Mapping[tuple[str, str], object]:
        return self.writes.sent

    @property
    def derivations(self) -> Derivations:
        return self.cache.derivations

    @property
    def peering_joined(self) -> bool:
        return self.leadership.joined

    # Cache upkeep (called by the kopf handlers) ------------------------------------------------

    def observe_node(self, body: Mapping[str, Any], *, deleted: bool = False) -> str:
        view = self.cache.observe_node(body, deleted=deleted)
        if deleted:
            self.writes.forget(("node", view.name))
        return view.name

    def observe_layout(self, body: Mapping[str, Any], *, deleted: bool = False) -> LayoutView:
        return self.cache.observe_layout(body, deleted=deleted)

    def observe_pod(self, body: Mapping[str, Any], *, deleted: bool = False) -> PodView:
        view = self.cache.observe_pod(body, deleted=deleted)
        if deleted:
            self.writes.forget(("pod", f"{view.namespace}/{view.name}"))
        return view

    # The webhook's warnings ----------------------------------------------------------------------

    async def report_warnings(self, body: Mapping[str, Any]) -> None:
        """The webhook's warnings about a pod (``gpunuma.io/warnings``) as a Warning Event on the
        pod's controller, or the pod: a controller that creates pods drops admission warnings, so
        without this nobody would see them. Once per object and text; the webhook itself makes
        no API call in the admission path."""
        annotations = (body.get("metadata") or {}).get("annotations") or {}
        text = annotations.get(names.ANNOTATION_WARNINGS)
        if not text:
            return
        target = warning_target(body)
        key = (target["uid"] or "/".join((target["namespace"], target["kind"], target["name"])), text)
        if key in self.warned:
            return
        if len(self.warned) >= WARNED_LIMIT:
            self.warned.clear()
        # Claimed before the await: the replicas of one ReplicaSet arrive concurrently.
        self.warned.add(key)
        if not await post_pod_warnings(self.client, self.clock(), body, target):
            self.warned.discard(key)  # refused: the next event of such a pod tries again

    # Reconciling --------------------------------------------------------------------------------

    async def reconcile_layout(self, name: str) -> None:
        """Bring the Node's labels and the layout's status in line with the layout's spec."""
        async with self._locks[name]:
            layout = self.cache.layouts.get(name)
            if layout is None:
                return
            self.reconciles["layout"] += 1
            try:
                await self.layout_reconciler.reconcile(layout)
            except ApiError as exc:
                self.reconcile_errors["layout"] += 1
                logger.warning("layout %s: %s", name, exc)

    async def forget_layout(self, body: Mapping[str, Any]) -> None:
        """A deleted layout: take our labels off its Node (if the Node is still there)."""
        view = self.observe_layout(body, deleted=True)
        async with self._locks[view.name]:
            await self.layout_reconciler.forget(view.name)
        self.pod_reconciler.forget_node(view.name)

    async def reconcile_pods_of(self, node: str) -> None:
        """After a layout event: the pods on that node, if its allocations changed."""
        await self.pod_reconciler.reconcile_node(node)

    async def reconcile_pod(self, namespace: str, name: str, *, node: str) -> None:
        await self.pod_reconciler.reconcile(namespace, name, node=node)

    async def reconcile_certificates(self) -> Outcome:
        outcome = await self.certificate_reconciler.reconcile()
        if outcome != "skipped":
            self.reconciles["certificates"] += 1
        if outcome == "failed":
            self.reconcile_errors["certificates"] += 1
        return outcome

    # The periodic loop: staleness and certificates --------------------------------------------

    async def is_active(self) -> bool:
        """Only the replica kopf's peering lets run acts in the periodic loop."""
        return await self.leadership.is_active()

    async def check_once(self) -> None:
        """One round: re-judge every layout's heartbeat, retry pod placements whose write failed
        (in-memory comparisons only, unless something differs), renew certificates if due."""
        for name in list(self.cache.layouts):
            await self.reconcile_layout(name)
        for node, pods in list(self.cache.pods.items()):
            for namespace, name in list(pods):
                await self.reconcile_pod(namespace, name, node=node)
        await self.reconcile_certificates()

    async def run_periodically(self) -> None:
        """Forever: a round at once (a fresh install gets its certificates now), then every
        ``check_interval_s``; every ``PEERING_RETRY_S`` until kopf has announced this replica."""
        while True:
            try:
                self.active = await self.is_active()
                if self.active:
                    await self.check_once()
            except Exception:  # the loop must outlive any one bad round; kopf keeps running too
                logger.exception("periodic check failed; retrying in %s s",
                                 self.settings.check_interval_s)
            interval = self.settings.check_interval_s
            await asyncio.sleep(interval if self.peering_joined else min(interval, PEERING_RETRY_S))
