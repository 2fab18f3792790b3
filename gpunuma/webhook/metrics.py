"""The webhook's Prometheus metrics: admission requests by outcome and their latency, certificate
reloads, and the build info."""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from gpunuma.buildinfo import register_build_info

__all__ = ["WebhookMetrics"]

_LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
# The buckets' "le" labels, written as prometheus_client's own Histogram writes them.
_LATENCY_LE = (*(floatToGoString(b) for b in _LATENCY_BUCKETS), "+Inf")  # type: ignore[no-untyped-call]


class _Requests(Collector):
    """Admission requests by outcome and their latency, tallied in plain numbers and turned into
    ``gpunuma_webhook_requests`` and ``gpunuma_webhook_request_duration_seconds`` when scraped.

    prometheus_client's Counter.inc and Histogram.observe take a lock each: 2% of the server's
    CPU per request. Only the event loop counts (large reviews are decided off it, but counted
    on it), so plain numbers are enough.
    """

    OUTCOMES = ("patched", "unchanged", "denied", "error", "invalid")

    def __init__(self) -> None:
        self.by_outcome = dict.fromkeys(self.OUTCOMES, 0)
        self.buckets = [0] * (len(_LATENCY_BUCKETS) + 1)  # requests at most each bound; +Inf
        self.seconds = 0.0
        self._created = time.time()

    def count(self, outcome: str, seconds: float) -> None:
        self.by_outcome[outcome] += 1
        self.buckets[bisect_left(_LATENCY_BUCKETS, seconds)] += 1
        self.seconds += seconds

    def collect(self) -> Iterator[Metric]:
        requests = CounterMetricFamily(
            "gpunuma_webhook_requests", "Admission requests by outcome: patched, unchanged, "
            "denied, error (allowed unchanged after an internal error), invalid (HTTP 400)",
            labels=["outcome"])
        for outcome, count in self.by_outcome.items():
            requests.add_metric([outcome], count, created=self._created)
        yield requests
        cumulative, total = [], 0
        for le, count in zip(_LATENCY_LE, self.buckets, strict=True):
            total += count
            cumulative.append((le, total))
        name = "gpunuma_webhook_request_duration_seconds"
        latency = HistogramMetricFamily(
            name, "Time from reading an admission request to having its response",
            buckets=cumulative, sum_value=self.seconds)
        latency.add_sample(f"{name}_created", {}, self._created)
        yield latency


class WebhookMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.requests = _Requests()
        registry.register(self.requests)
        self.reloads = Counter(
            "gpunuma_webhook_certificate_reloads", "Certificate changes seen on disk, by result",
            ["result"], registry=registry,
        )
        register_build_info(registry, "webhook")
