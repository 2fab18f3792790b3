"""Every component reports gpunuma_build_info on its /metrics (the operator's: tests/operator)."""

from __future__ import annotations

import platform

from prometheus_client import CollectorRegistry

from gpunuma import __version__
from gpunuma.agent.service import AgentMetrics
from gpunuma.webhook.metrics import WebhookMetrics


def build_info(registry: CollectorRegistry) -> dict[str, str]:
    (sample,) = [s for metric in registry.collect() if metric.name == "gpunuma_build_info"
                 for s in metric.samples]
    assert sample.value == 1
    return dict(sample.labels)


def test_the_agent_reports_its_build() -> None:
    assert build_info(AgentMetrics().registry) == {
        "component": "agent", "version": __version__, "python": platform.python_version()}


def test_the_webhook_reports_its_build() -> None:
    assert build_info(WebhookMetrics(CollectorRegistry()).registry)["component"] == "webhook"
