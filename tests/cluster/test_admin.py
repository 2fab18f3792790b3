"""The admin's tools against the real API server: the release owns gpunuma's CRD (so upgrades
upgrade it), `gpunuma check` passes on a working release with the caBundle the real operator wrote,
and `gpunuma cleanup-nodes` (the post-delete hook's command) clears real Nodes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from gpunuma import names
from tests.chart.render import REPO
from tests.cluster.conftest import Release
from tests.cluster.webhooks import Webhook

CRD = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/gpunumalayouts.gpunuma.io"


def gpunuma(*args: str, kubeconfig: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gpunuma", *args, "--kubeconfig", str(kubeconfig)],
        capture_output=True, text=True, timeout=120, check=False, cwd=REPO,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
    )


def test_the_release_owns_the_crd_and_keeps_it_on_uninstall(release: Release) -> None:
    crd = release.cluster.request("GET", CRD)
    annotations = crd["metadata"]["annotations"]
    assert annotations["meta.helm.sh/release-name"] == release.name
    assert annotations["meta.helm.sh/release-namespace"] == release.namespace
    assert annotations["helm.sh/resource-policy"] == "keep"


def test_gpunuma_check_passes_on_the_working_release(release: Release, webhook: Webhook) -> None:
    # The webhook runs on 127.0.0.1 here; its certificate is checked for the Service's name
    # against the caBundle the real operator wrote into the real MutatingWebhookConfiguration.
    result = gpunuma("check", "--skip", "agents", "--webhook-address", f"127.0.0.1:{webhook.port}",
                     "--webhook-configuration", release.name,
                     kubeconfig=release.cluster.admin_kubeconfig)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "√ GPUNumaLayout CRD served" in result.stdout
    assert "√ operator acts: 1 live replica(s)" in result.stdout
    assert f"√ webhook reachable: {webhook.server_name}:443 answers" in result.stdout
    assert result.stdout.endswith("Status: all checks passed\n")


def test_cleanup_nodes_clears_only_gpunumas_labels_from_real_nodes(release: Release) -> None:
    cluster = release.cluster
    ours = {names.LABEL_LAYOUT: "4-4", names.LABEL_GPU_COUNT: "8"}
    foreign = {"example.com/team": "ml"}
    cluster.request("POST", "/api/v1/nodes", {
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": "cleanup-1", "labels": {**ours, **foreign},
                     "annotations": {names.ANNOTATION_MANAGED_LABELS: ",".join(sorted(ours)),
                                     "example.com/note": "kept"}}})
    try:
        result = gpunuma("cleanup-nodes", kubeconfig=cluster.admin_kubeconfig)
        assert result.returncode == 0, result.stdout + result.stderr
        node = cluster.request("GET", "/api/v1/nodes/cleanup-1")["metadata"]
        assert not {key for key in node["labels"] if key.startswith(names.PREFIX)}
        assert node["labels"]["example.com/team"] == "ml"
        assert names.ANNOTATION_MANAGED_LABELS not in node.get("annotations", {})
        assert node["annotations"]["example.com/note"] == "kept"
        assert "cleaned" in result.stdout
    finally:
        cluster.request("DELETE", "/api/v1/nodes/cleanup-1")
