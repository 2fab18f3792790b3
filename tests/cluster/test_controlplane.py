"""The harness itself: a real, secured API server that reports its real version."""

from __future__ import annotations

import re

import pytest

from tests.cluster.controlplane import ApiError, ControlPlane


def test_the_api_server_reports_the_version_it_was_built_from(cluster: ControlPlane) -> None:
    version = cluster.request("GET", "/version")
    # hack/build-controlplane.sh sets the version ldflags; without them this says v0.0.0 and
    # Helm's kubeVersion checks and the chart's "auto" matchConditions would misjudge the server.
    assert re.fullmatch(r"v1\.\d+\.\d+", version["gitVersion"]), version
    assert version["major"] == "1"
    assert int(version["minor"]) >= 30
    client = cluster.kubectl("version", "-o", "json").stdout
    assert version["gitVersion"] in client


def test_anonymous_and_unknown_tokens_are_refused(cluster: ControlPlane) -> None:
    with pytest.raises(ApiError) as refused:
        cluster.request("GET", "/api/v1/namespaces", token="not-a-token")  # noqa: S106 (a made-up token)
    assert refused.value.status == 401


def test_a_minted_service_account_token_is_authenticated_and_authorized_by_rbac(
    cluster: ControlPlane,
) -> None:
    namespace = cluster.namespace("harness")
    cluster.apply([{"apiVersion": "v1", "kind": "ServiceAccount",
                    "metadata": {"name": "reader", "namespace": namespace}}])
    token = cluster.token(namespace, "reader")
    review = cluster.request("POST", "/apis/authentication.k8s.io/v1/selfsubjectreviews",
                             {"apiVersion": "authentication.k8s.io/v1",
                              "kind": "SelfSubjectReview"}, token=token)
    assert review["status"]["userInfo"]["username"] == f"system:serviceaccount:{namespace}:reader"
    with pytest.raises(ApiError) as forbidden:
        cluster.request("GET", f"/api/v1/namespaces/{namespace}/secrets", token=token)
    assert forbidden.value.status == 403
    kubeconfig = cluster.kubeconfig_for(namespace, "reader")
    answer = cluster.kubectl("auth", "can-i", "list", "secrets", "-n", namespace,
                             kubeconfig=kubeconfig, check=False)
    assert answer.stdout.strip() == "no"
