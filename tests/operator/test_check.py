"""``gpunuma check``: the judging rules, and the whole check against kmock and a real TLS webhook
whose certificate is trusted (or not) by the caBundle in its MutatingWebhookConfiguration."""

from __future__ import annotations

import base64
import datetime as dt
import ssl
from collections.abc import AsyncIterator
from typing import Any

import kmock
import pytest
import trustme
from aiohttp import web

from gpunuma.check import format_report, judge_agents, judge_operator, run_checks
from gpunuma.kubeapi import Connection, KubeClient
from gpunuma.rfc3339 import format_rfc3339
from gpunuma.settings import CheckSettings
from tests.operator.conftest import LAYOUTS, free_port, layout_body, two_socket_spec
from tests.operator.test_peering_kmock import declare_peering

NOW = dt.datetime(2026, 11, 28, 12, 0, tzinfo=dt.UTC)
SETTINGS = CheckSettings()
SERVICE = "gpunuma-webhook.gpunuma-system.svc"


def layout(name: str, *, heartbeat_ago_s: float | None = 60, generation: int = 2,
           observed: int | None = 2, labeled: str = "True") -> dict[str, Any]:
    spec = two_socket_spec()
    if heartbeat_ago_s is None:
        spec.pop("heartbeatTime", None)
    else:
        spec["heartbeatTime"] = format_rfc3339(NOW - dt.timedelta(seconds=heartbeat_ago_s))
    body = layout_body(name, spec)
    body["metadata"]["generation"] = generation
    body["status"] = {"observedGeneration": observed,
                      "conditions": [{"type": "Labeled", "status": labeled, "reason": "LabelsApplied"}]}
    return body


def peering(lastseen_ago_s: float = 10) -> dict[str, Any]:
    return {"status": {"gpunuma-operator-abc": {
        "priority": 5, "lifetime": 60,
        "lastseen": format_rfc3339(NOW - dt.timedelta(seconds=lastseen_ago_s))}}}


def test_agents_fail_without_layouts_and_name_the_silent_nodes() -> None:
    assert not judge_agents([], NOW, SETTINGS).ok
    assert judge_agents([layout("gpu-1"), layout("gpu-2", heartbeat_ago_s=1799)], NOW, SETTINGS).ok
    silent = judge_agents([layout("gpu-1"), layout("gpu-2", heartbeat_ago_s=1801),
                           layout("gpu-3", heartbeat_ago_s=None)], NOW, SETTINGS)
    assert not silent.ok
    assert "2 of 3" in silent.detail
    assert "gpu-2 (30m ago)" in silent.detail
    assert "gpu-3 (no heartbeat)" in silent.detail


def test_a_heartbeat_far_in_the_future_is_silent_as_the_operator_judges_it() -> None:
    """A layout written with a heartbeat hours ahead proves nothing about its agent: the operator
    marks it Stale (HeartbeatFromTheFuture), so the check must not call it fresh."""
    future = judge_agents([layout("gpu-1", heartbeat_ago_s=-7200)], NOW, SETTINGS)
    assert not future.ok
    assert "gpu-1 (2h in the future)" in future.detail
    assert judge_agents([layout("gpu-1", heartbeat_ago_s=-60)], NOW, SETTINGS).ok  # clock skew


def test_the_operator_acts_only_with_a_live_peer_and_every_layout_applied() -> None:
    assert judge_operator(peering(), [layout("gpu-1")], NOW, SETTINGS).ok
    assert "does not exist" in judge_operator(None, [], NOW, SETTINGS).detail
    assert "no live operator" in judge_operator(peering(lastseen_ago_s=61), [], NOW, SETTINGS).detail
    behind = judge_operator(peering(), [layout("gpu-1", generation=3, observed=2)], NOW, SETTINGS)
    assert not behind.ok
    assert "status at generation 2, spec at 3" in behind.detail
    unlabelled = judge_operator(peering(), [layout("gpu-1", labeled="False")], NOW, SETTINGS)
    assert not unlabelled.ok


@pytest.fixture
async def webhook_server() -> AsyncIterator[tuple[int, trustme.CA]]:
    """A TLS server for the webhook Service's name, answering /healthz, on 127.0.0.1."""
    authority = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert(SERVICE).configure_cert(context)
    app = web.Application()
    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok")

    app.router.add_get("/healthz", healthz)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port, ssl_context=context).start()
    try:
        yield port, authority
    finally:
        await runner.cleanup()


def configuration(bundle: bytes) -> dict[str, Any]:
    return {"apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
            "metadata": {"name": "gpunuma"},
            "webhooks": [{"name": "pods.gpunuma.io", "clientConfig": {
                "caBundle": base64.b64encode(bundle).decode(),
                "service": {"name": "gpunuma-webhook", "namespace": "gpunuma-system", "port": 443,
                            "path": "/mutate"}}}]}


def install(cluster: kmock.KubernetesEmulator, *, bundle: bytes) -> None:
    """A release as the checks find it: one fresh layout, a live operator, a webhook whose
    caBundle is ``bundle``."""
    cluster.objects[LAYOUTS, None, "gpu-1"] = layout("gpu-1")
    declare_peering(cluster, peering()["status"])
    cluster.objects["admissionregistration.k8s.io/v1/mutatingwebhookconfigurations", None,
                    "gpunuma"] = configuration(bundle)


async def check(cluster: kmock.KubernetesEmulator, port: int) -> str:
    client = KubeClient(Connection(server=str(cluster.url).rstrip("/")))
    try:
        results = await run_checks(client, CheckSettings(webhook_address=f"127.0.0.1:{port}"), NOW)
    finally:
        await client.close()
    return format_report(results)


async def test_a_working_release_passes_every_check(
    cluster: kmock.KubernetesEmulator, webhook_server: tuple[int, trustme.CA],
) -> None:
    port, authority = webhook_server
    install(cluster, bundle=authority.cert_pem.bytes())
    report = await check(cluster, port)
    assert "×" not in report, report
    assert report.count("√") == 4
    assert f"{SERVICE}:443 answers with a certificate that the caBundle of pods.gpunuma.io trusts" in report
    assert report.endswith("Status: all checks passed\n")


async def test_a_webhook_certificate_the_cabundle_does_not_trust_fails(
    cluster: kmock.KubernetesEmulator, webhook_server: tuple[int, trustme.CA],
) -> None:
    port, _ = webhook_server
    install(cluster, bundle=trustme.CA().cert_pem.bytes())
    report = await check(cluster, port)
    assert "× webhook reachable" in report
    assert "is not trusted by the caBundle of pods.gpunuma.io" in report
    assert "Status: 1 check(s) failed" in report


async def test_without_the_crd_the_check_says_so_and_stops(cluster: kmock.KubernetesEmulator) -> None:
    del cluster.resources[LAYOUTS]
    report = await check(cluster, 1)
    assert report.splitlines()[1].startswith("× GPUNumaLayout CRD served")
    assert "charts/gpunuma/files/crds/" in report
