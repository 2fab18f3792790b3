"""The webhook's request metrics, tallied by hand, read exactly as prometheus_client's own Counter
and Histogram would write the same requests (names, help, labels, buckets, sums, _created)."""

from __future__ import annotations

import re

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from gpunuma.webhook.metrics import _LATENCY_BUCKETS, _Requests

_REQUESTS = [("patched", 0.0003), ("invalid", 0.004), ("patched", 3.0), ("denied", 0.0005),
             ("patched", 0.001), ("unchanged", 0.0), ("error", 0.25), ("patched", 0.00051)]


def _without_timestamps(text: str) -> str:
    return re.sub(r"(_created(\{[^}]*\})?) \S+", r"\1 T", text)


@pytest.mark.parametrize("count", [0, 1, len(_REQUESTS)])
def test_the_tallies_read_as_prometheus_clients_own_metrics(count):
    ours = _Requests()
    mine = CollectorRegistry(auto_describe=True)
    mine.register(ours)
    reference = CollectorRegistry(auto_describe=True)
    counter = Counter("gpunuma_webhook_requests", "Admission requests by outcome: patched, "
                      "unchanged, denied, error (allowed unchanged after an internal error), "
                      "invalid (HTTP 400)", ["outcome"], registry=reference)
    histogram = Histogram("gpunuma_webhook_request_duration_seconds",
                          "Time from reading an admission request to having its response",
                          buckets=_LATENCY_BUCKETS, registry=reference)
    for outcome in _Requests.OUTCOMES:
        counter.labels(outcome)
    for outcome, seconds in _REQUESTS[:count]:
        ours.count(outcome, seconds)
        counter.labels(outcome).inc()
        histogram.observe(seconds)

    assert (_without_timestamps(generate_latest(mine).decode())
            == _without_timestamps(generate_latest(reference).decode()))
