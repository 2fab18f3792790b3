"""The operator's /metrics against kmock: reconciles, labelled and stale Nodes, certificate expiry,
build_info, and the HTTP endpoint itself."""

from __future__ import annotations

import datetime as dt

import aiohttp
import kmock
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from gpunuma import __version__, names
from gpunuma.operator.controller import Controller
from gpunuma.operator.metrics import operator_registry
from tests.operator.conftest import Runner, fast_settings, free_port, labels_of, now_rfc3339
from tests.operator.test_certificates_kmock import MWC_URL, controller_for, webhook_configuration
from tests.operator.test_operator import create, patch_spec
from tests.polling import eventually


def samples(controller: Controller) -> dict[str, float]:
    """name{label="value",…} → value, as a scraper sees it."""
    text = generate_latest(operator_registry(controller)).decode()
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            found[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return found


async def test_reconciles_labelled_and_stale_nodes_are_counted(
    cluster: kmock.KubernetesEmulator, operator: Runner,
) -> None:
    await create(cluster)
    settings = fast_settings(heartbeat_interval_s=1.0, stale_after_heartbeats=2, check_interval_s=0.1)
    async with operator(settings) as controller:
        await patch_spec(cluster, "gpu-1", {"heartbeatTime": now_rfc3339()}, 2)
        await eventually(lambda: labels_of(cluster, "gpu-1").get(names.LABEL_LAYOUT) == "4-4")
        fresh = await eventually(lambda: (s := samples(controller))["gpunuma_operator_labelled_nodes"]
                                 == 1 and s)
        assert fresh["gpunuma_operator_stale_nodes"] == 0
        assert fresh["gpunuma_operator_layouts"] == 1
        assert fresh['gpunuma_operator_reconciles_total{kind="layout"}'] >= 1
        assert fresh['gpunuma_operator_reconcile_errors_total{kind="layout"}'] == 0
        assert fresh["gpunuma_operator_active"] == 1
        assert fresh['gpunuma_operator_api_requests_total{method="PATCH",resource="nodes"}'] >= 1
        await eventually(lambda: labels_of(cluster, "gpu-1").get(names.LABEL_STALE) == "true", within=5)
        await eventually(lambda: samples(controller)["gpunuma_operator_stale_nodes"] == 1)


async def test_certificate_expiry_is_reported_in_seconds(cluster: kmock.KubernetesEmulator) -> None:
    await cluster.post(MWC_URL, json=webhook_configuration())
    controller = controller_for(cluster)
    try:
        assert 'gpunuma_operator_certificate_expiry_seconds{certificate="serving"}' not in samples(controller)
        assert await controller.reconcile_certificates() == "written"
    finally:
        await controller.client.close()
    found = samples(controller)
    serving = found['gpunuma_operator_certificate_expiry_seconds{certificate="serving"}']
    authority = found['gpunuma_operator_certificate_expiry_seconds{certificate="ca"}']
    year = dt.timedelta(days=365).total_seconds()
    assert year - 3600 < serving <= year
    assert serving < authority
    assert found['gpunuma_operator_reconciles_total{kind="certificates"}'] == 1


async def test_the_operator_serves_metrics_with_its_build_info(
    cluster: kmock.KubernetesEmulator, operator: Runner,
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/metrics"
    async with operator(fast_settings(metrics_listen=f"127.0.0.1:{port}")), \
            aiohttp.ClientSession() as session, session.get(url) as response:
        assert response.status == 200
        text = await response.text()
    build = [s for f in text_string_to_metric_families(text) if f.name == "gpunuma_build_info"
             for s in f.samples]
    assert [(s.labels["component"], s.labels["version"], s.value) for s in build] == [
        ("operator", __version__, 1.0)]
    assert "gpunuma_operator_reconciles_total" in text
