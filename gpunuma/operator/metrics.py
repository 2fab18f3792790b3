"""The operator's Prometheus ``/metrics``: read from the controller when scraped, never kept twice.

Counters (reconciles and failures by kind, API requests) are the controller's own tallies; gauges
(layouts, labelled and stale Nodes, certificate expiry, whether this replica acts) are computed from
its caches at scrape time, so nothing here can drift from what the operator acts on. Only the active
replica (``gpunuma_operator_active 1``) watches and acts: read the gauges from that one.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Iterator

from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

from gpunuma import names
from gpunuma.buildinfo import register_build_info
from gpunuma.operator.controller import Controller
from gpunuma.operator.labels import NODE_LABEL_KEYS
from gpunuma.settings import parse_listen

__all__ = ["OperatorCollector", "operator_registry", "start_metrics_server"]

logger = logging.getLogger("gpunuma.operator")

KINDS = ("layout", "pod", "certificates")


class OperatorCollector(Collector):
    def __init__(self, controller: Controller, clock: Callable[[], dt.datetime]) -> None:
        self._controller = controller
        self._clock = clock

    def collect(self) -> Iterator[Metric]:
        controller = self._controller
        reconciles = CounterMetricFamily(
            "gpunuma_operator_reconciles", "Reconciles by kind (layout, pod, certificates)",
            labels=["kind"])
        errors = CounterMetricFamily(
            "gpunuma_operator_reconcile_errors",
            "Reconciles that failed on an API error, by kind (retried at the next event or round)",
            labels=["kind"])
        # The pod reconciler keeps its own tallies: it is reached from pod and layout events alike.
        done = {**controller.reconciles, "pod": controller.pod_reconciler.reconciles}
        failed = {**controller.reconcile_errors, "pod": controller.pod_reconciler.failures}
        for kind in KINDS:
            reconciles.add_metric([kind], done.get(kind, 0))
            errors.add_metric([kind], failed.get(kind, 0))
        yield reconciles
        yield errors

        requests = CounterMetricFamily(
            "gpunuma_operator_api_requests", "Kubernetes API requests the operator sent",
            labels=["method", "resource"])
        for (method, resource), count in sorted(controller.client.requests.items()):
            requests.add_metric([method, resource], count)
        yield requests

        nodes = controller.cache.nodes.values()
        yield GaugeMetricFamily("gpunuma_operator_layouts", "GPUNumaLayouts the operator tracks",
                                value=len(controller.cache.layouts))
        yield GaugeMetricFamily(
            "gpunuma_operator_labelled_nodes", "Nodes carrying gpunuma.io/* labels",
            value=sum(1 for node in nodes if NODE_LABEL_KEYS & node.labels.keys()))
        yield GaugeMetricFamily(
            "gpunuma_operator_stale_nodes",
            "Nodes labelled gpunuma.io/stale=true: their agent stopped reporting",
            value=sum(1 for node in nodes if node.labels.get(names.LABEL_STALE) == "true"))
        yield GaugeMetricFamily(
            "gpunuma_operator_active", "1 when this replica acts (kopf peering), else 0",
            value=1 if controller.active else 0)

        expiry = GaugeMetricFamily(
            "gpunuma_operator_certificate_expiry_seconds",
            "Seconds until the webhook's certificates expire (serving, ca); self-managed mode only",
            labels=["certificate"])
        now = self._clock()
        for name, not_after in sorted(controller.certificate_reconciler.not_after.items()):
            expiry.add_metric([name], (not_after - now).total_seconds())
        yield expiry


def operator_registry(controller: Controller,
                      clock: Callable[[], dt.datetime] | None = None) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(OperatorCollector(controller, clock or controller.clock))
    register_build_info(registry, "operator")
    return registry


async def start_metrics_server(controller: Controller, listen: str) -> web.AppRunner:
    """Serve ``/metrics`` on ``listen`` (``HOST:PORT``); the caller cleans the runner up."""
    registry = operator_registry(controller)

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(body=generate_latest(registry),
                            headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    host, port = parse_listen(listen)
    site = web.TCPSite(runner, host, port)
    await site.start()
    logger.info("operator: /metrics on %s", listen)
    return runner
