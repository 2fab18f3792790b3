"""The API server calls `gpunuma webhook` through the chart's MutatingWebhookConfiguration.

The configuration is the installed chart's, unchanged (a Service reference); its CA bundle is the
one `gpunuma operator` (run with the operator's ServiceAccount) wrote. The API server reaches the
Service's ClusterIP through the harness's CONNECT proxy and verifies the webhook's certificate for
`<service>.<namespace>.svc`, so the TLS path is the one of a real cluster. The webhook's files
are synced from the operator's Secret the way the kubelet updates a Secret volume (an atomic
swap of a `..data` symlink).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from tests.cluster import agents
from tests.cluster.conftest import Release
from tests.cluster.controlplane import ApiError, ControlPlane
from tests.cluster.webhooks import Webhook

GPU_LIMITS = {"limits": {"nvidia.com/gpu": "1"}}


def gpu_pod(name: str, *, opt_in: bool, restricted: bool = False) -> dict[str, Any]:
    container: dict[str, Any] = {"name": "main", "image": "registry.example/cuda:12",
                                 "command": ["python3", "train.py"], "resources": GPU_LIMITS}
    spec: dict[str, Any] = {"containers": [container]}
    if restricted:
        container["securityContext"] = {
            "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]},
            "runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}
    metadata: dict[str, Any] = {"name": name}
    if opt_in:
        metadata["annotations"] = {"gpunuma.io/inject": "true"}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec}


def create(cluster: ControlPlane, namespace: str, pod: dict[str, Any]) -> dict[str, Any]:
    created: dict[str, Any] = cluster.request("POST", f"/api/v1/namespaces/{namespace}/pods", pod)
    return created


def is_mutated(pod: dict[str, Any]) -> bool:
    init = [c["name"] for c in pod["spec"].get("initContainers", [])]
    command = pod["spec"]["containers"][0].get("command", [])
    return "gpunuma-launcher" in init and command[:1] == ["/opt/gpunuma/numa-exec"]


def test_an_opted_in_pod_comes_back_mutated_and_valid(release: Release, webhook: Webhook) -> None:
    cluster = release.cluster
    namespace = cluster.namespace("wh-opted-in")
    before = webhook.requests()
    pod = create(cluster, namespace, gpu_pod("trainer", opt_in=True))
    assert is_mutated(pod), pod["spec"]
    assert pod["spec"]["containers"][0]["command"] == [
        "/opt/gpunuma/numa-exec", "--", "python3", "train.py"]
    assert pod["metadata"]["labels"]["gpunuma.io/managed"] == "true"
    assert pod["metadata"]["annotations"]["gpunuma.io/wrapped"] == "main"
    after = webhook.requests()
    assert after["patched"] == before["patched"] + 1
    # The API server calls it again (reinvocationPolicy IfNeeded) once the ServiceAccount plugin
    # has mounted its token into the injected init container; the webhook then changes nothing.
    assert after["unchanged"] - before["unchanged"] in (0, 1)
    assert after["error"] == before["error"]
    assert after["invalid"] == before["invalid"]


def test_pods_that_did_not_opt_in_never_reach_the_webhook(
    release: Release, webhook: Webhook,
) -> None:
    cluster = release.cluster
    namespace = cluster.namespace("wh-not-opted-in")
    before = webhook.total()
    for index in range(3):
        pod = create(cluster, namespace, gpu_pod(f"plain-{index}", opt_in=False))
        assert not is_mutated(pod)
    opted_out = gpu_pod("opted-out", opt_in=False)
    opted_out["metadata"]["annotations"] = {"gpunuma.io/inject": "false"}
    create(cluster, namespace, opted_out)
    assert webhook.total() == before  # matchConditions kept them from the webhook


def test_a_labelled_namespace_opts_its_gpu_pods_in(release: Release, webhook: Webhook) -> None:
    cluster = release.cluster
    namespace = cluster.namespace("wh-labelled", {"gpunuma.io/inject": "enabled"})
    assert is_mutated(create(cluster, namespace, gpu_pod("in", opt_in=False)))
    out = gpu_pod("out", opt_in=False)
    out["metadata"]["annotations"] = {"gpunuma.io/inject": "false"}
    assert not is_mutated(create(cluster, namespace, out))


def test_a_restricted_namespace_accepts_the_injected_form_of_a_pod_it_accepts(
    release: Release, webhook: Webhook,
) -> None:
    cluster = release.cluster
    namespace = cluster.namespace("wh-restricted", {
        "pod-security.kubernetes.io/enforce": "restricted",
        "pod-security.kubernetes.io/enforce-version": "latest"})
    with pytest.raises(ApiError, match="violates PodSecurity"):  # the level is really enforced
        create(cluster, namespace, gpu_pod("unrestricted", opt_in=False))
    create(cluster, namespace, gpu_pod("plain", opt_in=False, restricted=True))
    pod = create(cluster, namespace, gpu_pod("injected", opt_in=True, restricted=True))
    assert is_mutated(pod)


def test_with_the_webhook_down_failure_policy_ignore_admits_pods_unmutated(
    release: Release, webhook: Webhook,
) -> None:
    cluster = release.cluster
    namespace = cluster.namespace("wh-down")
    webhook.process.stop()
    try:
        started = time.monotonic()
        pod = create(cluster, namespace, gpu_pod("admitted", opt_in=True))
        assert not is_mutated(pod)
        assert "gpunuma.io/injected" not in pod["metadata"].get("annotations", {})
        assert time.monotonic() - started < 10  # refused connections, not the 5 s timeout twice
    finally:
        webhook.process.start()
    cluster.wait_for("the webhook to be back", webhook.ready, 60)
    assert is_mutated(create(cluster, namespace, gpu_pod("after", opt_in=True)))


def _reloads(webhook: Webhook) -> float:
    for line in webhook.get("/metrics").splitlines():
        if line.startswith('gpunuma_webhook_certificate_reloads_total{result="loaded"}'):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_certificate_rotations_by_the_operator_while_pods_are_created_fail_no_admission(
    release: Release, webhook: Webhook, tmp_path: Path,
) -> None:
    """A second operator of a higher peering priority takes over and renews the serving
    certificate every ~9 s (1-day leaves renewed with 0.9999 days left; the serving Secret is
    deleted first, so that it issues such a leaf at once); pods are created all the while, and
    every one of them is mutated."""
    cluster = release.cluster
    namespace = cluster.namespace("wh-rotation")
    env = agents.workload_env(cluster, release.namespace, "Deployment",
                              release.service_account("operator"))
    secret_versions, reloads = webhook.volume.updates, _reloads(webhook)
    cluster.request("DELETE", webhook.volume.path)  # the webhook keeps its files meanwhile
    rotating = agents.operator(env, release.kubeconfig("operator"), tmp_path / "rotating.log",
                               extra=("--priority", str(2**32), "--check-interval", "1",
                                      "--cert-validity-days", "1",
                                      "--cert-renew-before-days", "0.9999"))
    try:
        deadline, created = time.monotonic() + 90, 0
        while time.monotonic() < deadline and (webhook.volume.updates < secret_versions + 3
                                               or _reloads(webhook) < reloads + 2):
            pod = create(cluster, namespace, gpu_pod(f"pod-{created}", opt_in=True))
            assert is_mutated(pod), f"pod-{created} admitted unmutated during a rotation"
            created += 1
    finally:
        rotating.stop()
    assert webhook.volume.updates >= secret_versions + 3, rotating.tail()
    assert _reloads(webhook) >= reloads + 2, webhook.process.tail()
    assert created >= 5
