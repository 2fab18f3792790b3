"""Rendered security objects of issue #16: the admission policies' switches, the webhook's
NetworkPolicy. (The policies' enforcement is shown by a real API server in tests/cluster.)"""

from __future__ import annotations

from typing import Any

import kubernetes_validate
import pytest

from tests.chart.render import RELEASE, load_chart, render


@pytest.fixture(scope="module")
def chart() -> Any:
    return load_chart()


def test_the_admission_policies_are_on_by_default_and_bound_to_deny(chart: Any) -> None:
    rendered = render(chart)
    policies = {p["metadata"]["name"]: p for p in rendered.of_kind("ValidatingAdmissionPolicy")}
    assert set(policies) == {f"{RELEASE}-agent-own-layout", f"{RELEASE}-operator-gpunuma-metadata-only"}
    for binding in rendered.of_kind("ValidatingAdmissionPolicyBinding"):
        assert binding["spec"]["policyName"] in policies
        assert binding["spec"]["validationActions"] == ["Deny"]
    agent = policies[f"{RELEASE}-agent-own-layout"]["spec"]
    assert agent["matchConditions"][0]["expression"] == (
        f'request.userInfo.username == "system:serviceaccount:gpu-system:{RELEASE}-agent"')
    for policy in policies.values():
        kubernetes_validate.validate(policy, "1.30.0", strict=True)


def test_the_admission_policies_can_be_turned_off(chart: Any) -> None:
    rendered = render(chart, {"admissionPolicies": False})
    assert rendered.of_kind("ValidatingAdmissionPolicy") == []
    assert rendered.of_kind("ValidatingAdmissionPolicyBinding") == []


def test_the_webhook_network_policy_admits_only_the_listed_peers(chart: Any) -> None:
    assert render(chart).of_kind("NetworkPolicy") == []
    peers = [{"ipBlock": {"cidr": "10.0.0.0/24"}}]
    rendered = render(chart, {"webhook": {"networkPolicy": {"enabled": True, "from": peers}}})
    policy = rendered.one("NetworkPolicy")
    kubernetes_validate.validate(policy, "1.30.0", strict=True)
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    assert policy["spec"]["ingress"] == [{"from": peers, "ports": [{"port": "https",
                                                                     "protocol": "TCP"}]}]
    labels = rendered.workload("webhook")["spec"]["template"]["metadata"]["labels"]
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= labels.items()


def test_a_network_policy_without_peers_is_refused_with_a_reason(chart: Any) -> None:
    with pytest.raises(Exception, match=r"networkPolicy\.from"):
        render(chart, {"webhook": {"networkPolicy": {"enabled": True}}})
