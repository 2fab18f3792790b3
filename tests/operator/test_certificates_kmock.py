"""Certificate management against kmock: Secrets, the webhook configuration's caBundle, renewal.

The controller is driven directly (its clock moved forward for renewal and rollover), and once
with the whole operator running, to show a fresh install gets certificates at start-up and that a
caBundle reset by ``helm upgrade`` is put back.
"""

from __future__ import annotations

import base64
import datetime as dt
from typing import Any

import kmock
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from gpunuma.kubeapi import Connection, KubeClient
from gpunuma.operator.controller import Controller
from gpunuma.settings import CertificateSettings
from tests.operator.conftest import Runner, fast_settings, signed_by
from tests.polling import eventually

MWC = "admissionregistration.k8s.io/v1/mutatingwebhookconfigurations"
MWC_URL = f"/apis/{MWC}"
NAMESPACE = "gpunuma-system"


def webhook_configuration() -> dict[str, Any]:
    def webhook(name: str) -> dict[str, Any]:
        return {"name": name, "clientConfig": {"service": {
            "name": "gpunuma-webhook", "namespace": NAMESPACE, "path": "/mutate"}}}
    return {"apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "MutatingWebhookConfiguration", "metadata": {"name": "gpunuma"},
            "webhooks": [webhook("pods.gpunuma.io"), webhook("pods-ns.gpunuma.io")]}


def controller_for(cluster: kmock.KubernetesEmulator, **certs: Any) -> Controller:
    settings = fast_settings(certificates=CertificateSettings(namespace=NAMESPACE, **certs))
    return Controller(settings=settings, client=KubeClient(Connection(server=str(cluster.url))))


def secret_data(cluster: kmock.KubernetesEmulator, name: str) -> dict[str, bytes]:
    raw = cluster.objects["v1/secrets", NAMESPACE, name].raw
    return {key: base64.b64decode(value) for key, value in raw["data"].items()}


def ca_bundles(cluster: kmock.KubernetesEmulator) -> list[list[x509.Certificate]]:
    raw = cluster.objects[MWC, None, "gpunuma"].raw
    return [x509.load_pem_x509_certificates(base64.b64decode(w["clientConfig"]["caBundle"]))
            for w in raw["webhooks"]]


def leaf(cluster: kmock.KubernetesEmulator) -> x509.Certificate:
    return x509.load_pem_x509_certificate(secret_data(cluster, "gpunuma-webhook-tls")["tls.crt"])


async def test_a_fresh_install_gets_a_ca_a_leaf_and_the_bundle_in_every_webhook(
    cluster: kmock.KubernetesEmulator,
) -> None:
    await cluster.post(MWC_URL, json=webhook_configuration())
    controller = controller_for(cluster)
    try:
        assert await controller.reconcile_certificates() == "written"
        assert await controller.reconcile_certificates() == "unchanged"
    finally:
        await controller.client.close()
    serving = secret_data(cluster, "gpunuma-webhook-tls")
    assert set(serving) == {"tls.crt", "tls.key", "ca.crt"}
    assert cluster.objects["v1/secrets", NAMESPACE, "gpunuma-webhook-tls"].raw["type"] == (
        "kubernetes.io/tls")
    ca = x509.load_pem_x509_certificate(secret_data(cluster, "gpunuma-webhook-tls-ca")["tls.crt"])
    leaf(cluster).verify_directly_issued_by(ca)
    assert ca_bundles(cluster) == [[ca], [ca]]
    assert b"PRIVATE KEY" not in serving["ca.crt"]


async def test_a_leaf_near_expiry_is_renewed_by_the_same_ca(
    cluster: kmock.KubernetesEmulator,
) -> None:
    await cluster.post(MWC_URL, json=webhook_configuration())
    controller = controller_for(cluster)
    try:
        await controller.reconcile_certificates()
        first, bundle = leaf(cluster), ca_bundles(cluster)
        start = dt.datetime.now(dt.UTC)
        controller.clock = lambda: start + dt.timedelta(days=340)
        assert await controller.reconcile_certificates() == "written"
    finally:
        await controller.client.close()
    renewed = leaf(cluster)
    assert renewed.serial_number != first.serial_number
    assert renewed.not_valid_after_utc > first.not_valid_after_utc
    assert ca_bundles(cluster) == bundle  # same CA: nothing to change in the webhooks


async def test_a_ca_rollover_keeps_the_old_and_the_new_ca_in_the_bundle(
    cluster: kmock.KubernetesEmulator,
) -> None:
    await cluster.post(MWC_URL, json=webhook_configuration())
    controller = controller_for(cluster)
    try:
        await controller.reconcile_certificates()
        [[old_ca], _] = ca_bundles(cluster)
        controller.clock = lambda: old_ca.not_valid_after_utc - dt.timedelta(days=300)
        assert await controller.reconcile_certificates() == "written"
    finally:
        await controller.client.close()
    new_ca = x509.load_pem_x509_certificate(
        secret_data(cluster, "gpunuma-webhook-tls-ca")["tls.crt"])
    assert new_ca != old_ca
    assert ca_bundles(cluster) == [[new_ca, old_ca], [new_ca, old_ca]]
    assert x509.load_pem_x509_certificates(secret_data(cluster, "gpunuma-webhook-tls")["ca.crt"]
                                           ) == [new_ca, old_ca]
    leaf(cluster).verify_directly_issued_by(new_ca)


async def test_in_cert_manager_mode_the_operator_leaves_certificates_alone(
    cluster: kmock.KubernetesEmulator,
) -> None:
    await cluster.post(MWC_URL, json=webhook_configuration())
    controller = controller_for(cluster, mode="cert-manager")
    try:
        assert await controller.reconcile_certificates() == "skipped"
    finally:
        await controller.client.close()
    assert not [r for r in list(cluster) if "secrets" in r.url.path]


async def test_the_running_operator_issues_certificates_and_restores_a_reset_ca_bundle(
    cluster: kmock.KubernetesEmulator, operator: Runner,
) -> None:
    await cluster.post(MWC_URL, json=webhook_configuration())
    async with operator():
        bundles = await eventually(lambda: ca_bundles(cluster))
        # `helm upgrade` re-applies the chart's configuration, without a caBundle.
        await cluster.patch(f"{MWC_URL}/gpunuma", json=[
            {"op": "remove", "path": "/webhooks/0/clientConfig/caBundle"}])
        await eventually(lambda: ca_bundles(cluster) == bundles)


async def test_a_forbidden_secret_read_is_one_clear_warning_not_a_crash(
    cluster: kmock.KubernetesEmulator, caplog: Any,
) -> None:
    path = "/api/v1/namespaces/gpunuma-system/secrets/gpunuma-webhook-tls"
    cluster["get", path] << 403 << {"kind": "Status", "code": 403,
                                    "message": "secrets is forbidden"}
    controller = controller_for(cluster)
    try:
        assert await controller.reconcile_certificates() == "failed"
    finally:
        await controller.client.close()
    assert "--certificates cert-manager" in caplog.text


async def test_a_lost_ca_secret_keeps_the_served_leaf_trusted_while_the_new_one_propagates(
    cluster: kmock.KubernetesEmulator,
) -> None:
    """Issue #16 item 6: the CA Secret deleted, the operator makes a new CA, but webhook pods still
    serve the old leaf for a minute or two: the bundle must keep the CA that signed it."""
    await cluster.post(MWC_URL, json=webhook_configuration())
    controller = controller_for(cluster)
    try:
        assert await controller.reconcile_certificates() == "written"
        served = leaf(cluster)
        await cluster.delete(f"/api/v1/namespaces/{NAMESPACE}/secrets/gpunuma-webhook-tls-ca")
        assert await controller.reconcile_certificates() == "written"
    finally:
        await controller.client.close()
    new_ca = x509.load_pem_x509_certificate(
        secret_data(cluster, "gpunuma-webhook-tls-ca")["tls.crt"])
    for bundle in ca_bundles(cluster):
        assert bundle[0] == new_ca
        assert any(signed_by(served, ca) for ca in bundle), "the served leaf is no longer trusted"
        assert any(signed_by(leaf(cluster), ca) for ca in bundle)


async def test_junk_in_the_served_ca_bundle_is_not_carried_into_the_new_bundle(
    cluster: kmock.KubernetesEmulator,
) -> None:
    """Only a CA that verifiably signed the served leaf is kept, not whatever ca.crt holds."""
    import trustme

    await cluster.post(MWC_URL, json=webhook_configuration())
    controller = controller_for(cluster)
    stranger = x509.load_pem_x509_certificate(trustme.CA().cert_pem.bytes())
    try:
        assert await controller.reconcile_certificates() == "written"
        old_ca = x509.load_pem_x509_certificate(secret_data(cluster, "gpunuma-webhook-tls")["ca.crt"])
        await cluster.patch(f"/api/v1/namespaces/{NAMESPACE}/secrets/gpunuma-webhook-tls", json={
            "data": {"ca.crt": base64.b64encode(
                stranger.public_bytes(serialization.Encoding.PEM)
                + old_ca.public_bytes(serialization.Encoding.PEM)).decode()}})
        await cluster.delete(f"/api/v1/namespaces/{NAMESPACE}/secrets/gpunuma-webhook-tls-ca")
        assert await controller.reconcile_certificates() == "written"
    finally:
        await controller.client.close()
    for bundle in ca_bundles(cluster):
        assert stranger not in bundle
        assert old_ca in bundle
