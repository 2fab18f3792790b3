"""The operator against kmock: layouts label their Nodes, status is written, staleness comes and goes.

Every test runs the real kopf operator (``gpunuma.operator.run.serve``) in the test's event loop
against kmock on loopback, and changes objects through kmock's HTTP API, as kubectl or the agent
would.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import kmock

from gpunuma import names
from gpunuma.kubeapi import Connection, KubeClient
from gpunuma.operator.controller import Controller
from tests.operator.conftest import (
    LAYOUTS,
    LAYOUTS_URL,
    Runner,
    condition,
    fast_settings,
    labels_of,
    layout_body,
    node_body,
    now_rfc3339,
    requests_to,
    status_of,
    two_socket_spec,
)
from tests.polling import eventually

FOREIGN = {"kubernetes.io/hostname": "gpu-1", "nvidia.com/gpu.product": "H100"}


async def create(cluster: kmock.KubernetesEmulator, node: str = "gpu-1",
                 spec: dict[str, Any] | None = None, *, with_node: bool = True) -> None:
    if with_node:
        await cluster.post("/api/v1/nodes", json=node_body(node, FOREIGN))
    await cluster.post(LAYOUTS_URL, json=layout_body(node, spec or two_socket_spec()))


async def patch_spec(cluster: kmock.KubernetesEmulator, node: str, spec: dict[str, Any],
                     generation: int) -> None:
    await cluster.patch(f"{LAYOUTS_URL}/{node}",
                        json={"metadata": {"generation": generation}, "spec": spec})


def no_kopf_traces(body: dict[str, Any]) -> bool:
    meta = body.get("metadata") or {}
    kopf_keys = [k for k in (meta.get("annotations") or {}) if "kopf" in k]
    return not kopf_keys and not meta.get("finalizers")


async def test_a_created_layout_labels_its_node_and_writes_its_status(
    cluster: kmock.KubernetesEmulator, operator: Runner,
) -> None:
    await create(cluster)
    async with operator():
        await eventually(lambda: labels_of(cluster, "gpu-1").get(names.LABEL_LAYOUT) == "4-4")
        await eventually(lambda: condition(cluster, "gpu-1", "Labeled").get("status") == "True")
    labels = labels_of(cluster, "gpu-1")
    assert labels == {
        **FOREIGN,
        names.LABEL_GPU_COUNT: "8", names.LABEL_NUMA_COUNT: "2", names.LABEL_GPU_NUMA_COUNT: "2",
        names.LABEL_MAX_GPUS_PER_NUMA: "4", names.LABEL_LAYOUT: "4-4",
        names.LABEL_NUMA_GPU_MAP: "0-0.1.2.3_1-4.5.6.7", names.LABEL_VENDOR: "nvidia",
        names.LABEL_SOURCE: "sysfs",
    }
    status = status_of(cluster, "gpu-1")
    assert status["observedGeneration"] == 1
    assert status["appliedLabels"] == {k: v for k, v in labels.items() if k not in FOREIGN}
    assert condition(cluster, "gpu-1", "Labeled")["reason"] == "LabelsApplied"
    assert condition(cluster, "gpu-1", "Stale")["status"] == "False"
    assert len(requests_to(cluster, "PATCH", "/api/v1/nodes/gpu-1")) == 1


async def test_a_changed_layout_changes_exactly_our_keys_and_foreign_labels_survive(
    cluster: kmock.KubernetesEmulator, operator: Runner,
) -> None:
    await create(cluster)
    async with operator() as controller:
        await eventually(lambda: labels_of(cluster, "gpu-1").get(names.LABEL_LAYOUT) == "4-4")
        # Someone else labels the node meanwhile; then the agent reports GPU 7's node as unknown.
        # (Waiting for the operator to see the first: kmock has no resourceVersions, so an event
        # overtaken by a later patch could not be recognised as outdated.)
        await cluster.patch("/api/v1/nodes/gpu-1", json={"metadata": {"labels": {"team": "ml"}}})
        await eventually(lambda: controller.nodes["gpu-1"].labels.get("team") == "ml")
        spec = two_socket_spec()
        spec["gpus"][7]["numaNode"] = None
        await patch_spec(cluster, "gpu-1", spec, 2)
        await eventually(lambda: labels_of(cluster, "gpu-1").get(names.LABEL_LAYOUT) == "unknown")
        await eventually(lambda: status_of(cluster, "gpu-1").get("observedGeneration") == 2)
    labels = labels_of(cluster, "gpu-1")
    assert names.LABEL_NUMA_GPU_MAP not in labels  # omitted when a GPU's node is unknown
    assert labels["team"] == "ml"
    assert all(labels[key] == value for key, value in FOREIGN.items())
    patches = requests_to(cluster, "PATCH", "/api/v1/nodes/gpu-1")
    ours = [p for p in patches if "team" not in p["metadata"].get("labels", {})]
    assert len(ours) == 2  # the first labelling, then exactly the keys that changed:
    assert ours[1]["metadata"]["labels"] == {
        names.LABEL_LAYOUT: "unknown", names.LABEL_NUMA_GPU_MAP: None,
    }
    assert names.LABEL_NUMA_GPU_MAP not in status_of(cluster, "gpu-1")["appliedLabels"]
    managed = cluster.objects["v1/nodes", None, "gpu-1"].raw["metadata"]["annotations"]
    assert names.LABEL_NUMA_GPU_MAP not in managed[names.ANNOTATION_MANAGED_LABELS]


async def test_no_kopf_annotation_or_finalizer_ever_appears_on_nodes_pods_or_layouts(
    cluster: kmock.KubernetesEmulator, operator: Runner,
) -> None:
    await create(cluster)
    await cluster.post("/api/v1/namespaces/ml/pods", json=running_pod("train-0", "gpu-1"))
    async with operator():
        await eventually(lambda: labels_of(cluster, "gpu-1").get(names.LABEL_LAYOUT) == "4-4")
        await patch_spec(cluster, "gpu-1", two_socket_spec(allocations=[ALLOCATION]), 2)
        await eventually(lambda: pod_annotations(cluster, "train-0").get(names.ANNOTATION_CPUSET))
    for key in [("v1/nodes", None, "gpu-1"), (LAYOUTS, None, "gpu-1"),
                ("v1/pods", "ml", "train-0")]:
        history = cluster.objects[key].history
        assert all(no_kopf_traces(dict(version)) for version in history if version), key


async def test_a_layout_for_a_missing_node_says_so_and_labels_the_node_once_it_registers(
    cluster: kmock.KubernetesEmulator, operator: Runner,
) -> None:
    await create(cluster, "gpu-2", with_node=False)
    async with operator():
        await eventually(lambda: condition(cluster, "gpu-2", "Labeled").get("reason")
                         == "NodeNotFound")
        assert "gpu-2 does not exist" in condition(cluster, "gpu-2", "Labeled")["message"]
        await cluster.post("/api/v1/nodes", json=node_body("gpu-2"))
        await eventually(lambda: labels_of(cluster, "gpu-2").get(names.LABEL_GPU_COUNT) == "8")
        await eventually(lambda: condition(cluster, "gpu-2", "Labeled").get("status") == "True")


async def test_an_invalid_layout_gets_a_condition_and_the_node_is_left_alone(
    cluster: kmock.KubernetesEmulator, operator: Runner,
) -> None:
    spec = two_socket_spec()
    spec["numaNodes"][1]["cpus"] = "63-32"
    await create(cluster, spec=spec)
    async with operator():
        await eventually(lambda: condition(cluster, "gpu-1", "Labeled").get("reason")
                         == "InvalidLayout")
    assert "numaNodes[1].cpus" in condition(cluster, "gpu-1", "Labeled")["message"]
    assert labels_of(cluster, "gpu-1") == FOREIGN
    assert requests_to(cluster, "PATCH", "/api/v1/nodes/gpu-1") == []


async def test_a_heartbeat_that_only_moves_forward_sends_no_node_patch(
    cluster: kmock.KubernetesEmulator, operator: Runner,
) -> None:
    await create(cluster)
    async with operator():
        await eventually(lambda: condition(cluster, "gpu-1", "Labeled").get("status") == "True")
        for generation in (2, 3, 4):
            await patch_spec(cluster, "gpu-1", {"heartbeatTime": now_rfc3339()}, generation)
        await eventually(lambda: status_of(cluster, "gpu-1").get("observedGeneration") == 4)
        await asyncio.sleep(0.2)
    assert len(requests_to(cluster, "PATCH", "/api/v1/nodes/gpu-1")) == 1


async def test_a_stale_heartbeat_marks_the_node_and_a_fresh_one_clears_it(
    cluster: kmock.KubernetesEmulator, operator: Runner,
) -> None:
    await create(cluster, spec=two_socket_spec(heartbeatTime=now_rfc3339(-3 * 600 - 60)))
    async with operator():
        await eventually(lambda: labels_of(cluster, "gpu-1").get(names.LABEL_STALE) == "true")
        await eventually(lambda: condition(cluster, "gpu-1", "Stale").get("status") == "True")
        assert condition(cluster, "gpu-1", "Stale")["reason"] == "HeartbeatMissed"
        await eventually(lambda: node_events(cluster, "NodeLayoutStale"))

        await patch_spec(cluster, "gpu-1", {"heartbeatTime": now_rfc3339()}, 2)
        await eventually(lambda: names.LABEL_STALE not in labels_of(cluster, "gpu-1"))
        await eventually(lambda: condition(cluster, "gpu-1", "Stale").get("status") == "False")
        await eventually(lambda: node_events(cluster, "NodeLayoutFresh"))
    assert labels_of(cluster, "gpu-1")[names.LABEL_LAYOUT] == "4-4"
    assert len(node_events(cluster, "NodeLayoutStale")) == 1
    event = node_events(cluster, "NodeLayoutStale")[0]
    assert event["involvedObject"]["kind"] == "Node"
    assert event["type"] == "Warning"


async def test_a_layout_whose_heartbeats_stop_turns_stale_without_any_new_event(
    cluster: kmock.KubernetesEmulator, operator: Runner,
) -> None:
    await create(cluster)
    settings = fast_settings(heartbeat_interval_s=1.0, stale_after_heartbeats=2,
                             check_interval_s=0.1)
    async with operator(settings):
        # A heartbeat now, with the operator running: fresh for the next 2 s, then silence.
        await patch_spec(cluster, "gpu-1", {"heartbeatTime": now_rfc3339()}, 2)
        await eventually(lambda: condition(cluster, "gpu-1", "Stale").get("status") == "False"
                         and status_of(cluster, "gpu-1").get("observedGeneration") == 2)
        assert names.LABEL_STALE not in labels_of(cluster, "gpu-1")
        await eventually(lambda: labels_of(cluster, "gpu-1").get(names.LABEL_STALE) == "true",
                         within=5)
        await eventually(lambda: condition(cluster, "gpu-1", "Stale").get("status") == "True")


async def test_a_deleted_layout_takes_its_labels_off_the_node(
    cluster: kmock.KubernetesEmulator, operator: Runner,
) -> None:
    await create(cluster)
    async with operator():
        await eventually(lambda: labels_of(cluster, "gpu-1").get(names.LABEL_LAYOUT) == "4-4")
        await cluster.delete(f"{LAYOUTS_URL}/gpu-1")
        await eventually(lambda: labels_of(cluster, "gpu-1") == FOREIGN)
    annotations = cluster.objects["v1/nodes", None, "gpu-1"].raw["metadata"].get("annotations")
    assert names.ANNOTATION_MANAGED_LABELS not in (annotations or {})


# Pods --------------------------------------------------------------------------------------------

ALLOCATION = {"namespace": "ml", "pod": "train-0", "container": "main",
              "resource": "nvidia.com/gpu", "deviceIds": ["GPU-00000004-0000-0000-0000-000000000000"],
              "numaNodes": [1], "cpus": "32-63"}


def running_pod(name: str, node: str, *, managed: bool = True, phase: str = "Running",
                namespace: str = "ml") -> dict[str, Any]:
    labels = {names.LABEL_MANAGED: "true"} if managed else {}
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace, "labels": labels},
            "spec": {"nodeName": node, "containers": [{"name": "main", "image": "x"}]},
            "status": {"phase": phase}}


def pod_annotations(cluster: kmock.KubernetesEmulator, name: str,
                    namespace: str = "ml") -> dict[str, str]:
    return dict(cluster.objects["v1/pods", namespace, name].raw["metadata"].get("annotations")
                or {})


def node_events(cluster: kmock.KubernetesEmulator, reason: str) -> list[dict[str, Any]]:
    return [dict(obj.raw) for (resource, _, _), obj in cluster.objects.items()
            if resource == kmock.resource("v1/events") and not obj.deleted
            and obj.raw.get("reason") == reason]


async def test_a_running_managed_pod_gets_its_placement_once_its_allocation_is_reported(
    cluster: kmock.KubernetesEmulator, operator: Runner,
) -> None:
    await create(cluster)
    await cluster.post("/api/v1/namespaces/ml/pods", json=running_pod("train-0", "gpu-1"))
    async with operator():
        await eventually(lambda: condition(cluster, "gpu-1", "Labeled").get("status") == "True")
        assert pod_annotations(cluster, "train-0") == {}
        await patch_spec(cluster, "gpu-1", two_socket_spec(allocations=[ALLOCATION]), 2)
        await eventually(lambda: pod_annotations(cluster, "train-0").get(names.ANNOTATION_CPUSET))
        # Heartbeats and an unrelated pod update change nothing: no second patch.
        await patch_spec(cluster, "gpu-1", {"heartbeatTime": now_rfc3339()}, 3)
        await cluster.patch("/api/v1/namespaces/ml/pods/train-0",
                            json={"metadata": {"labels": {"step": "2"}}})
        await eventually(lambda: status_of(cluster, "gpu-1").get("observedGeneration") == 3)
        await asyncio.sleep(0.2)
    annotations = pod_annotations(cluster, "train-0")
    assert annotations == {
        names.ANNOTATION_PLACEMENT:
            '{"main":{"cpus":"32-63","gpus":["GPU-00000004-0000-0000-0000-000000000000"],'
            '"numaNodes":[1]}}',
        names.ANNOTATION_NUMA_NODES: "1",
        names.ANNOTATION_CPUSET: "32-63",
    }
    ours = [p for p in requests_to(cluster, "PATCH", "/api/v1/namespaces/ml/pods/train-0")
            if "annotations" in p.get("metadata", {})]
    assert len(ours) == 1


async def test_a_pod_that_starts_after_its_allocation_is_annotated_when_it_runs(
    cluster: kmock.KubernetesEmulator, operator: Runner,
) -> None:
    await create(cluster, spec=two_socket_spec(allocations=[ALLOCATION]))
    await cluster.post("/api/v1/namespaces/ml/pods",
                       json=running_pod("train-0", "gpu-1", phase="Pending"))
    async with operator():
        await eventually(lambda: condition(cluster, "gpu-1", "Labeled").get("status") == "True")
        await asyncio.sleep(0.2)
        assert pod_annotations(cluster, "train-0") == {}  # not running yet
        await cluster.patch("/api/v1/namespaces/ml/pods/train-0",
                            json={"status": {"phase": "Running"}})
        await eventually(lambda: pod_annotations(cluster, "train-0").get(
            names.ANNOTATION_NUMA_NODES) == "1")


async def test_a_pod_without_the_managed_label_is_never_patched(
    cluster: kmock.KubernetesEmulator, operator: Runner,
) -> None:
    other = {**ALLOCATION, "pod": "plain"}
    await create(cluster, spec=two_socket_spec(allocations=[ALLOCATION, other]))
    await cluster.post("/api/v1/namespaces/ml/pods", json=running_pod("plain", "gpu-1",
                                                                      managed=False))
    await cluster.post("/api/v1/namespaces/ml/pods", json=running_pod("train-0", "gpu-1"))
    async with operator():
        await eventually(lambda: pod_annotations(cluster, "train-0").get(names.ANNOTATION_CPUSET))
    assert requests_to(cluster, "PATCH", "/api/v1/namespaces/ml/pods/plain") == []
    # The API server is asked for managed pods only (kmock ignores the selector; a real one not).
    pod_reads = [r for r in list(cluster) if r.url.path == "/api/v1/pods"]
    assert pod_reads
    assert {r.url.query.get("labelSelector") for r in pod_reads} == {"gpunuma.io/managed=true"}


async def test_deleted_pods_and_nodes_leave_nothing_behind_in_the_operator(
    cluster: kmock.KubernetesEmulator, operator: Runner,
) -> None:
    await create(cluster, spec=two_socket_spec(allocations=[ALLOCATION]))
    await cluster.post("/api/v1/namespaces/ml/pods", json=running_pod("train-0", "gpu-1"))
    async with operator() as controller:
        await eventually(lambda: pod_annotations(cluster, "train-0").get(names.ANNOTATION_CPUSET))
        await cluster.delete("/api/v1/namespaces/ml/pods/train-0")
        await cluster.delete("/api/v1/nodes/gpu-1")
        await eventually(lambda: not controller.pods and "gpu-1" not in controller.nodes)
        await eventually(lambda: condition(cluster, "gpu-1", "Labeled").get("reason")
                         == "NodeNotFound")
        assert not [key for key in controller._sent if key[0] in {"pod", "node"}]


async def test_a_layout_seen_before_its_node_reads_the_node_once_instead_of_calling_it_missing(
    cluster: kmock.KubernetesEmulator,
) -> None:
    # The Node and layout watches run side by side; at start-up a layout can come first.
    await create(cluster)
    controller = Controller(settings=fast_settings(), client=KubeClient(Connection(server=str(cluster.url))))
    try:
        controller.observe_layout(cluster.objects[LAYOUTS, None, "gpu-1"].raw)
        await controller.reconcile_layout("gpu-1")
    finally:
        await controller.client.close()
    assert len(requests_to(cluster, "GET", "/api/v1/nodes/gpu-1")) == 1
    assert labels_of(cluster, "gpu-1")[names.LABEL_LAYOUT] == "4-4"
    assert condition(cluster, "gpu-1", "Labeled")["status"] == "True"


async def test_the_liveness_endpoint_reports_layouts_and_api_requests(
    cluster: kmock.KubernetesEmulator, operator: Runner, unused_tcp_port: int,
) -> None:
    await create(cluster)
    url = f"http://127.0.0.1:{unused_tcp_port}/healthz"
    async with operator(fast_settings(liveness_endpoint=url)):
        await eventually(lambda: condition(cluster, "gpu-1", "Labeled").get("status") == "True")
        async with aiohttp.ClientSession() as session, session.get(url) as response:
            assert response.status == 200
            probes = await response.json()
    assert probes["layouts"] == 1
    assert probes["api_requests"]["PATCH nodes"] == 1


async def test_pods_outside_the_configured_namespaces_are_left_alone(
    cluster: kmock.KubernetesEmulator, operator: Runner,
) -> None:
    elsewhere = {**ALLOCATION, "namespace": "other"}
    await create(cluster, spec=two_socket_spec(allocations=[ALLOCATION, elsewhere]))
    await cluster.post("/api/v1/namespaces/ml/pods", json=running_pod("train-0", "gpu-1"))
    await cluster.post("/api/v1/namespaces/other/pods",
                       json=running_pod("train-0", "gpu-1", namespace="other"))
    async with operator(fast_settings(pod_namespaces=("ml",), check_interval_s=0.05)) as controller:
        await eventually(lambda: pod_annotations(cluster, "train-0").get(names.ANNOTATION_CPUSET))
        # Nodes and layouts are cluster-scoped: still labelled, whatever the pod scope.
        await eventually(lambda: labels_of(cluster, "gpu-1").get(names.LABEL_LAYOUT) == "4-4")
        await asyncio.sleep(0.3)  # a few periodic rounds
        assert ("other", "train-0") not in controller.pods.get("gpu-1", {})
    assert pod_annotations(cluster, "train-0", namespace="other") == {}
    assert requests_to(cluster, "PATCH", "/api/v1/namespaces/other/pods/train-0") == []
