"""A DRA pod end to end on the real control plane: the real ``gpunuma agent`` process with the
chart's agent identity, a gRPC kubelet that reports the pod's ResourceClaim device, the DRA
driver's ResourceSlices served by kube-apiserver (resource.k8s.io/v1), the GPUNumaLayout it writes.
(Admission of a DRA pod by the real webhook is in test_webhook.py, with the other tests that start
the session's webhook: once it runs, every opted-in pod of the session goes through it.)
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.agent.conftest import FakeKubelet, KubeletServer, container, pod
from tests.cluster import agents
from tests.cluster.conftest import Release, assert_every_request_allowed
from tests.cluster.controlplane import ApiError
from tests.fixtures import machines

NODE = "dra-gpu-1"
LAYOUT = f"/apis/gpunuma.io/v1alpha1/gpunumalayouts/{NODE}"
SLICES = "/apis/resource.k8s.io/v1/resourceslices"


def resource_slice(name: str, node: str, devices: dict[str, str | None]) -> dict[str, Any]:
    """A slice as NVIDIA's DRA driver publishes it: one device per GPU, bus id when known."""
    listed = []
    for device, bus_id in devices.items():
        attributes: dict[str, Any] = {"index": {"int": int(device.rsplit("-", 1)[1])}}
        if bus_id is not None:
            attributes["resource.kubernetes.io/pciBusID"] = {"string": bus_id}
        listed.append({"name": device, "attributes": attributes})
    return {"apiVersion": "resource.k8s.io/v1", "kind": "ResourceSlice",
            "metadata": {"name": name},
            "spec": {"driver": "gpu.nvidia.com", "nodeName": node,
                     "pool": {"name": node, "generation": 1, "resourceSliceCount": 1},
                     "devices": listed}}


@pytest.fixture
async def kubelet() -> AsyncIterator[KubeletServer]:
    with tempfile.TemporaryDirectory(prefix="gn-", dir="/tmp") as directory:
        server = KubeletServer(socket=Path(directory) / "kubelet.sock", servicer=FakeKubelet())
        await server.start()
        yield server
        await server.stop()


@pytest.fixture
def dra_objects(release: Release) -> Any:
    cluster = release.cluster
    created = [("/api/v1/nodes", NODE, {"apiVersion": "v1", "kind": "Node",
                                         "metadata": {"name": NODE}}),
               (SLICES, f"{NODE}-gpu.nvidia.com", resource_slice(
                   f"{NODE}-gpu.nvidia.com", NODE, {"gpu-5": "0000:c3:00.0", "gpu-6": None})),
               # Another node's slice, same pool and device names: never taken for this node's.
               (SLICES, "other-gpu.nvidia.com", resource_slice(
                   "other-gpu.nvidia.com", "other", {"gpu-6": "0000:1b:00.0"}))]
    for collection, _, body in created:
        cluster.request("POST", collection, body)
    yield
    for collection, name, _ in [*created, ("/apis/gpunuma.io/v1alpha1/gpunumalayouts", NODE, None)]:
        try:
            cluster.request("DELETE", f"{collection}/{name}")
        except ApiError as error:
            if error.status != 404:
                raise


async def test_a_dra_pods_gpu_reaches_the_layout_through_the_real_api_server(
    release: Release, dra_objects: Any, kubelet: KubeletServer, tmp_path: Path,
) -> None:
    cluster = release.cluster
    kubelet.servicer.pods = [
        pod("ml", "vllm-dra", container("server", cpu_ids=[100, 101], claims=[
            ("ml", "single-gpu", [("gpu.nvidia.com", NODE, "gpu-5")])])),
        pod("ml", "no-bus-id", container("main", claims=[
            ("ml", "gpu", [("gpu.nvidia.com", NODE, "gpu-6")])])),
    ]
    tree = machines.build(machines.two_socket_8gpu(), tmp_path / "machine")
    # The agent's pod-bound token for its node, as the kubelet mounts it (the chart's admission
    # policy lets it write only that node's layout).
    process = agents.agent(NODE, tree, release.agent_kubeconfig(NODE), tmp_path / "agent.log",
                           kubelet_socket=kubelet.socket,
                           extra=["--interval", "1", "--allocations-interval", "0.2"])
    try:
        allocations: list[dict[str, Any]] = []
        for _ in range(300):  # the gRPC kubelet is served by this event loop: never block it
            try:
                allocations = cluster.request("GET", LAYOUT)["spec"].get("allocations") or []
            except ApiError as error:
                if error.status != 404:
                    raise
            if len(allocations) == 2:
                break
            assert process.alive(), process.tail()
            await asyncio.sleep(0.1)
        # kwok pods have no processes: what the agent observed of them is "unknown".
        assert {entry.pop("observed")["binding"] for entry in allocations} == {"unknown"}
        assert allocations == [
            {"namespace": "ml", "pod": "no-bus-id", "container": "main",
             "resource": "gpu.nvidia.com", "claim": "gpu", "deviceIds": [f"{NODE}/gpu-6"],
             "numaNodes": [], "cpus": "", "unknownDeviceIds": [f"{NODE}/gpu-6"]},
            {"namespace": "ml", "pod": "vllm-dra", "container": "server",
             "resource": "gpu.nvidia.com", "claim": "single-gpu", "deviceIds": [f"{NODE}/gpu-5"],
             "numaNodes": [1], "cpus": "100-101"},
        ], process.tail()
    finally:
        process.stop()
    assert_every_request_allowed(release, "agent")  # the chart lets it list ResourceSlices
