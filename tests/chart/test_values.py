"""values.schema.json and the validation template: wrong values fail with a message that says what to fix."""

from __future__ import annotations

from typing import Any

import pytest

from tests.chart.render import load_chart, render


@pytest.fixture(scope="module")
def chart() -> Any:
    return load_chart()


def failure(chart: Any, values: dict[str, Any]) -> str:
    import helm_python

    with pytest.raises(helm_python.HelmError) as raised:
        render(chart, values)
    return str(raised.value)


def test_the_default_values_pass_the_schema(chart: Any) -> None:
    chart.validate_schema({})


def test_an_unknown_policy_is_rejected_with_the_allowed_ones(chart: Any) -> None:
    message = failure(chart, {"defaultPolicy": "fastest"})
    assert "/defaultPolicy" in message
    assert "value must be one of 'preferred', 'strict', 'cpu-only'" in message


def test_a_wrong_type_is_rejected_naming_the_key_and_the_type(chart: Any) -> None:
    message = failure(chart, {"webhook": {"timeoutSeconds": "5s"}})
    assert "/webhook/timeoutSeconds" in message
    assert "got string, want integer" in message


def test_a_misspelt_key_is_rejected_instead_of_ignored(chart: Any) -> None:
    message = failure(chart, {"webhok": {"enabled": False}})
    assert "additional properties 'webhok' not allowed" in message
    nested = failure(chart, {"agent": {"nvml": {"runtimeclass": "nvidia"}}})
    assert "/agent/nvml" in nested
    assert "'runtimeclass'" in nested


def test_a_timeout_above_30_seconds_is_rejected(chart: Any) -> None:
    message = failure(chart, {"webhook": {"timeoutSeconds": 31}})
    assert "/webhook/timeoutSeconds" in message
    assert "maximum" in message or "<= 30" in message


@pytest.mark.parametrize(("values", "expected"), [
    ({"webhook": {"failurePolicy": "Retry"}}, "/webhook/failurePolicy"),
    ({"webhook": {"certificate": {"mode": "self-signed"}}}, "/webhook/certificate/mode"),
    ({"agent": {"backend": "cuda"}}, "/agent/backend"),
    ({"gpuResources": ["gpu"]}, "/gpuResources/0"),
    ({"gpuResources": []}, "/gpuResources"),
    ({"image": {"digest": "latest"}}, "/image/digest"),
])
def test_impossible_values_name_the_key(chart: Any, values: dict[str, Any], expected: str) -> None:
    assert expected in failure(chart, values)


def test_the_webhook_without_a_certificate_issuer_fails_with_the_fix(chart: Any) -> None:
    message = failure(chart, {"operator": {"enabled": False}})
    assert "webhook.certificate.mode=operator needs operator.enabled=true" in message
    assert "set webhook.certificate.mode=cert-manager" in message


def test_a_disruption_budget_that_blocks_every_drain_is_refused(chart: Any) -> None:
    message = failure(chart, {"webhook": {"replicas": 1}})
    assert "webhook.podDisruptionBudget.minAvailable=1 with webhook.replicas=1" in message
    render(chart, {"webhook": {"replicas": 1, "podDisruptionBudget": {"enabled": False}}})


def test_a_service_monitor_with_nothing_to_scrape_is_refused(chart: Any) -> None:
    message = failure(chart, {"serviceMonitor": {"enabled": True}, "agent": {"enabled": False},
                              "operator": {"enabled": False}, "webhook": {"enabled": False}})
    assert "nothing to scrape" in message


def test_the_operator_alone_without_the_webhook_renders(chart: Any) -> None:
    rendered = render(chart, {"webhook": {"enabled": False}})
    assert rendered.of_kind("MutatingWebhookConfiguration") == []
    assert rendered.of_kind("Role") == []
    assert "GPUNUMA_WEBHOOK_SECRET" not in rendered.env("operator")


def test_fail_closed_without_match_conditions_is_refused_with_the_fix(chart: Any) -> None:
    # Without matchConditions every pod CREATE outside the excluded namespaces would depend on the
    # webhook being up.
    message = failure(chart, {"webhook": {"failurePolicy": "Fail", "matchConditions": False}})
    assert "webhook.failurePolicy=Fail needs matchConditions" in message
    assert "Use webhook.failurePolicy=Ignore" in message
    for match_conditions in ("auto", True):
        render(chart, {"webhook": {"failurePolicy": "Fail", "matchConditions": match_conditions}})
    render(chart, {"webhook": {"failurePolicy": "Ignore", "matchConditions": False}})
