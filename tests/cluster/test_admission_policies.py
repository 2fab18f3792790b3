"""The chart's ValidatingAdmissionPolicies, enforced by the real API server (issue #16, items 4, 5).

RBAC cannot name a node: every agent may patch every GPUNumaLayout, and the operator's cluster-wide
``patch`` on pods and nodes could change any pod's image. With one node's credentials the review
relabelled another GPU node and wrote attacker strings into a pod of another namespace. The
policies close both: each request below is made with the chart's own ServiceAccount tokens —
the agent's bound to a pod on its node, as the kubelet mounts it — against the chart as
`helm install` installed it.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.cluster.conftest import Release
from tests.cluster.controlplane import ApiError

LAYOUTS = "/apis/gpunuma.io/v1alpha1/gpunumalayouts"
MERGE = "application/merge-patch+json"


def layout(name: str, source: str = "sysfs") -> dict[str, Any]:
    return {"apiVersion": "gpunuma.io/v1alpha1", "kind": "GPUNumaLayout",
            "metadata": {"name": name},
            "spec": {"numaNodes": [{"id": 0, "cpus": "0-7", "memoryMiB": 1024, "distances": [10]}],
                     "gpus": [], "source": source, "errors": [], "allocations": [],
                     "summary": {"gpus": 0, "numaNodes": 1, "layout": "0"},
                     "heartbeatTime": "2026-11-28T10:00:00Z"}}


def refused(call: Any) -> str:
    with pytest.raises(ApiError) as caught:
        call()
    assert caught.value.status == 403, caught.value
    return str(caught.value)


def test_an_agent_writes_only_the_layout_of_its_own_node(release: Release) -> None:
    cluster = release.cluster
    cluster.apply({"apiVersion": "v1", "kind": "Node", "metadata": {"name": node}}
                  for node in ("vap-gpu-a", "vap-gpu-b"))
    cluster.request("POST", LAYOUTS, layout("vap-gpu-b"))  # the victim's, as its agent wrote it
    token_a = release.agent_token("vap-gpu-a")

    created = cluster.request("POST", LAYOUTS, layout("vap-gpu-a"), token=token_a)
    assert created["metadata"]["name"] == "vap-gpu-a"
    cluster.request("PATCH", f"{LAYOUTS}/vap-gpu-a", {"spec": {"source": "sysfs"}},
                    content_type=MERGE, token=token_a)

    message = refused(lambda: cluster.request(
        "PATCH", f"{LAYOUTS}/vap-gpu-b", {"spec": {"source": "pwned-by-gpu-a"}},
        content_type=MERGE, token=token_a))
    assert "may write only the GPUNumaLayout vap-gpu-a, not vap-gpu-b" in message
    refused(lambda: cluster.request("POST", LAYOUTS, layout("vap-control-plane"), token=token_a))
    assert cluster.request("GET", f"{LAYOUTS}/vap-gpu-b")["spec"]["source"] == "sysfs"


def test_an_agent_token_not_bound_to_a_pod_on_a_node_writes_no_layout(release: Release) -> None:
    cluster = release.cluster
    unbound = cluster.token(release.namespace, release.service_account("agent"))
    message = refused(lambda: cluster.request("POST", LAYOUTS, layout("vap-unbound"),
                                              token=unbound))
    assert "pod-bound ServiceAccount token" in message


def test_the_operator_changes_only_gpunuma_metadata_of_pods_and_nodes(release: Release) -> None:
    cluster = release.cluster
    operator = cluster.token(release.namespace, release.service_account("operator"))
    namespace = cluster.namespace("vap-workloads")
    cluster.apply([{"apiVersion": "v1", "kind": "Node", "metadata": {
        "name": "vap-node", "labels": {"team": "ml"}, "annotations": {"owner": "ops"}}}])
    pod_path = f"/api/v1/namespaces/{namespace}/pods/train"
    cluster.request("POST", f"/api/v1/namespaces/{namespace}/pods", {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "train", "labels": {"app": "train"}},
        "spec": {"nodeName": "vap-node", "containers": [{"name": "main", "image": "trainer:1"}]}})

    def patch(path: str, body: dict[str, Any]) -> Any:
        return cluster.request("PATCH", path, body, content_type=MERGE, token=operator)

    # What the operator does: allowed.
    patch("/api/v1/nodes/vap-node", {"metadata": {
        "labels": {"gpunuma.io/layout": "4-4"},
        "annotations": {"gpunuma.io/managed-labels": "gpunuma.io/layout"}}})
    patch(pod_path, {"metadata": {"annotations": {"gpunuma.io/cpuset": "0-7"}}})
    patch("/api/v1/nodes/vap-node", {"metadata": {"labels": {"gpunuma.io/layout": None}}})

    # What a compromised operator could otherwise do: refused.
    assert "only gpunuma.io/ labels" in refused(
        lambda: patch("/api/v1/nodes/vap-node", {"metadata": {"labels": {"team": "pwned"}}}))
    refused(lambda: patch("/api/v1/nodes/vap-node", {"metadata": {"labels": {"team": None}}}))
    assert "only gpunuma.io/ annotations" in refused(
        lambda: patch(pod_path, {"metadata": {"annotations": {"owner": "me"}}}))
    assert "spec" in refused(lambda: patch("/api/v1/nodes/vap-node", {"spec": {
        "unschedulable": True}}))
    # A strategic merge patch changes only the image (pod validation allows that on update).
    refused(lambda: cluster.request("PATCH", pod_path, {"spec": {"containers": [
        {"name": "main", "image": "attacker/miner:latest"}]}},
        content_type="application/strategic-merge-patch+json", token=operator))
    assert cluster.request("GET", pod_path)["spec"]["containers"][0]["image"] == "trainer:1"
    node = cluster.request("GET", "/api/v1/nodes/vap-node")
    assert node["metadata"]["labels"]["team"] == "ml"
    assert not node["spec"].get("unschedulable")
