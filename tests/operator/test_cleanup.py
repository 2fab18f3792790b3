"""``gpunuma cleanup-nodes`` (the chart's post-delete hook) against kmock: our labels and the
managed-labels annotation go, every other label stays, and a failing Node does not stop the rest."""

from __future__ import annotations

import kmock

from gpunuma import names
from gpunuma.kubeapi import Connection, KubeClient
from gpunuma.operator.cleanup import remove_node_labels
from tests.operator.conftest import labels_of, node_body, requests_to

OURS = {names.LABEL_LAYOUT: "4-4", names.LABEL_GPU_COUNT: "8", names.LABEL_STALE: "true"}
FOREIGN = {"kubernetes.io/hostname": "gpu-1", "nvidia.com/gpu.present": "true",
           "gpunuma.io.example/other": "kept"}


async def test_cleanup_removes_our_labels_and_annotation_and_nothing_else(
    cluster: kmock.KubernetesEmulator,
) -> None:
    labelled = node_body("gpu-1", {**OURS, **FOREIGN})
    labelled["metadata"]["annotations"] = {
        names.ANNOTATION_MANAGED_LABELS: ",".join(sorted(OURS)), "other/annotation": "kept",
    }
    cluster.objects["v1/nodes", None, "gpu-1"] = labelled
    cluster.objects["v1/nodes", None, "cpu-1"] = node_body("cpu-1", {"kubernetes.io/hostname": "cpu-1"})
    client = KubeClient(Connection(server=str(cluster.url).rstrip("/")))
    try:
        result = await remove_node_labels(client)
    finally:
        await client.close()
    assert result.cleaned == ["gpu-1"]
    assert result.untouched == 1
    assert result.failed == {}
    assert labels_of(cluster, "gpu-1") == FOREIGN
    annotations = cluster.objects["v1/nodes", None, "gpu-1"].raw["metadata"]["annotations"]
    assert annotations == {"other/annotation": "kept"}
    assert requests_to(cluster, "PATCH", "/api/v1/nodes/cpu-1") == []
