"""`helm install`, `upgrade` and `uninstall` of the chart against the real API server.

Helm installs crds/ first and then every object; the API server validates each one in full
(Pod templates, RBAC, the webhook configuration, whose matchConditions CEL it compiles). Each
combination gets a release of its own, with its own kopf peering name (a cluster-scoped object).
"""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from tests.chart.render import CHART
from tests.cluster.conftest import Release
from tests.cluster.controlplane import ApiError, ControlPlane


def _manifest(cluster: ControlPlane, release: str, namespace: str) -> list[dict[str, Any]]:
    text = cluster.helm("get", "manifest", release, "--namespace", namespace).stdout
    return [doc for doc in yaml.safe_load_all(text) if doc]


def _get(cluster: ControlPlane, doc: dict[str, Any], namespace: str) -> dict[str, Any]:
    """The stored object (kubectl ignores the namespace for cluster-scoped kinds)."""
    group = doc["apiVersion"].rpartition("/")[0]
    kind = doc["kind"].lower() + (f".{group}" if group else "")
    found: dict[str, Any] = yaml.safe_load(cluster.kubectl(
        "get", kind, doc["metadata"]["name"], "--namespace", namespace, "-o", "yaml").stdout)
    return found


def _mwc(cluster: ControlPlane, name: str) -> dict[str, Any]:
    found: dict[str, Any] = cluster.request(
        "GET", f"/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/{name}")
    return found


COMBINATIONS = {
    "defaults": [],
    "webhook-disabled": ["--set", "webhook.enabled=false"],
    "match-conditions-on": ["--set", "webhook.matchConditions=true",
                            "--set", "webhook.failurePolicy=Fail"],
    "match-conditions-off": ["--set", "webhook.matchConditions=false"],
    "agent-only": ["--set", "operator.enabled=false", "--set", "webhook.enabled=false"],
}


@pytest.mark.parametrize("combination", sorted(COMBINATIONS))
def test_every_supported_combination_installs_and_uninstalls(
    release: Release, combination: str,
) -> None:
    cluster = release.cluster
    name = f"c-{combination}"[:30]
    namespace = cluster.namespace(f"chart-{combination}")
    cluster.helm("install", name, str(CHART), "--namespace", namespace,
                 "--set", f"operator.peering.name={name}", *COMBINATIONS[combination])
    try:
        documents = _check_release(cluster, name, namespace, combination)
    finally:
        cluster.helm("uninstall", name, "--namespace", namespace, "--wait", "--timeout", "60s")
    for doc in documents:
        with pytest.raises(AssertionError, match="NotFound"):
            _get(cluster, doc, namespace)
    # Helm keeps CRDs: other releases (the session's) still use them.
    cluster.request("GET", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/"
                           "gpunumalayouts.gpunuma.io")


def test_an_upgrade_changes_the_configuration_and_keeps_the_operators_ca_bundle(
    release: Release,
) -> None:
    cluster = release.cluster
    name = "c-upgrade"
    namespace = cluster.namespace("chart-upgrade")
    cluster.helm("install", name, str(CHART), "--namespace", namespace,
                 "--set", f"operator.peering.name={name}")
    configuration = _mwc_name(cluster, name)
    webhooks = _mwc(cluster, configuration)["webhooks"]
    bundle = "LS0tLS1CRUdJTi0tLS0t"  # what the operator would have patched in
    patch = [{"op": "add", "path": f"/webhooks/{i}/clientConfig/caBundle", "value": bundle}
             for i in range(len(webhooks))]
    cluster.request("PATCH", f"/apis/admissionregistration.k8s.io/v1/"
                             f"mutatingwebhookconfigurations/{configuration}",
                    patch, content_type="application/json-patch+json")
    cluster.helm("upgrade", name, str(CHART), "--namespace", namespace,
                 "--set", f"operator.peering.name={name}", "--set", "webhook.timeoutSeconds=7")
    webhooks = _mwc(cluster, configuration)["webhooks"]
    assert [w["timeoutSeconds"] for w in webhooks] == [7, 7]
    assert [w["clientConfig"].get("caBundle") for w in webhooks] == [bundle, bundle]
    cluster.helm("uninstall", name, "--namespace", namespace)
    with pytest.raises(ApiError):
        _mwc(cluster, configuration)


def _mwc_name(cluster: ControlPlane, release: str) -> str:
    items = cluster.request(
        "GET", "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations"
               f"?labelSelector=app.kubernetes.io/instance%3D{release}")["items"]
    assert len(items) == 1, items
    found: str = items[0]["metadata"]["name"]
    return found


def _check_release(cluster: ControlPlane, name: str, namespace: str,
                   combination: str) -> list[dict[str, Any]]:
    documents = _manifest(cluster, name, namespace)
    assert documents, "the release has no objects"
    for doc in documents:
        stored = _get(cluster, doc, namespace)
        assert stored["metadata"]["labels"]["app.kubernetes.io/instance"] == name
    configurations = [doc for doc in documents if doc["kind"] == "MutatingWebhookConfiguration"]
    if combination in ("webhook-disabled", "agent-only"):
        assert configurations == []
    else:
        (configuration,) = configurations
        webhooks = _mwc(cluster, configuration["metadata"]["name"])["webhooks"]
        with_conditions = [bool(w.get("matchConditions")) for w in webhooks]
        # "auto" on this server (>= 1.30) means on: the API server compiled the CEL to accept it.
        assert with_conditions == [combination != "match-conditions-off"] * 2
    return documents



@pytest.mark.parametrize(("values", "needs"), [
    (["--set", "webhook.certificate.mode=cert-manager"], "cert-manager.io/v1"),
    (["--set", "serviceMonitor.enabled=true"], "monitoring.coreos.com/v1"),
])
def test_a_mode_whose_crds_the_cluster_lacks_is_refused_with_the_charts_message(
    release: Release, values: list[str], needs: str,
) -> None:
    """Without the chart's message Helm reports `no matches for kind "Issuer" in version
    "cert-manager.io/v1"` after creating half the release; the chart says what to do first."""
    cluster = release.cluster
    name = "c-missing-crds"
    namespace = cluster.namespace("chart-missing-crds")
    result = cluster.helm("install", name, str(CHART), "--namespace", namespace,
                          "--set", f"operator.peering.name={name}", *values, check=False)
    if result.returncode == 0:
        cluster.helm("uninstall", name, "--namespace", namespace)
    assert result.returncode != 0
    assert needs in result.stderr, result.stderr
    assert "no matches for kind" not in result.stderr, result.stderr
    assert cluster.helm("list", "--all", "--namespace", namespace).stdout.count(name) == 0
