"""The PodResources client against a real gRPC server on a unix socket, and against upstream's API."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import grpc
import pytest

from gpunuma.agent import podresources_pb2 as pb
from gpunuma.agent.allocations import (
    ClaimDevice,
    ContainerDevices,
    ContainerResources,
    PodResources,
)
from gpunuma.agent.podresources import KubeletUnavailable, PodResourcesClient
from tests.agent.conftest import FakeKubelet, KubeletServer, container, pod

INTEROP_PROTO = (Path(__file__).resolve().parents[2].parent / "shared" / "interop"
                 / "kubelet-podresources-v1.proto")
GPU = "GPU-4f2a0c11-8d3e-4b8e-9f61-0a1b2c3d4e5f"
MIG = "MIG-1d4f2c7e-96a1-5b3b-8f0e-3a4c5d6e7f80"


def realistic_pods() -> list[pb.PodResources]:
    return [
        pod("ml", "llama-0",
            container("server", [("nvidia.com/gpu", [f"{GPU}::0", f"{GPU}::3"])], [4, 5, 116]),
            container("metrics")),
        pod("ml", "mig-job", container("main", [("nvidia.com/mig-1g.10gb", [MIG])])),
        pod("rocm", "cpx", container("main", [("amd.com/gpu", ["0000:05:00.0", "amdgpu_xcp_3"])])),
        pod("kube-system", "coredns", container("coredns")),
    ]


async def test_list_returns_every_pod_with_devices_and_exclusive_cpus(
    kubelet: KubeletServer,
) -> None:
    kubelet.servicer.pods = realistic_pods()
    client = PodResourcesClient(kubelet.socket, timeout=5)
    try:
        pods = await client.list()
    finally:
        await client.close()
    assert pods[0] == PodResources("ml", "llama-0", (
        ContainerResources("server", (ContainerDevices(
            "nvidia.com/gpu", (f"{GPU}::0", f"{GPU}::3")),), frozenset({4, 5, 116})),
        ContainerResources("metrics"),
    ))
    assert pods[2].containers[0].devices == (
        ContainerDevices("amd.com/gpu", ("0000:05:00.0", "amdgpu_xcp_3")),)
    assert pods[3] == PodResources("kube-system", "coredns", (ContainerResources("coredns"),))


async def test_a_missing_socket_is_reported_with_what_to_check(socket_dir: Path) -> None:
    client = PodResourcesClient(socket_dir / "kubelet.sock")
    with pytest.raises(KubeletUnavailable, match=r"kubelet\.sock does not exist.*pod-resources"):
        await client.list()


async def test_the_socket_going_away_and_coming_back_is_survived(kubelet: KubeletServer) -> None:
    kubelet.servicer.pods = realistic_pods()[:1]
    client = PodResourcesClient(kubelet.socket, timeout=2)
    try:
        assert len(await client.list()) == 1
        await kubelet.stop()
        with pytest.raises(KubeletUnavailable):
            await client.list()
        kubelet.servicer.pods = realistic_pods()
        await kubelet.start()  # a restarted kubelet: a new socket file at the same path
        # The first call after the restart succeeds: the client dials afresh instead of waiting
        # out gRPC's reconnect backoff on the dead channel.
        assert len(await client.list()) == 4
    finally:
        await client.close()


async def test_a_kubelet_that_hangs_hits_the_deadline(socket_dir: Path) -> None:
    class Hanging(FakeKubelet):
        async def List(self, request: Any, context: Any) -> pb.ListPodResourcesResponse:
            await asyncio.sleep(30)
            raise AssertionError("the client should have given up")

    server = KubeletServer(socket=socket_dir / "kubelet.sock", servicer=Hanging())
    await server.start()
    client = PodResourcesClient(server.socket, timeout=0.2)
    try:
        with pytest.raises(KubeletUnavailable, match="DEADLINE_EXCEEDED"):
            await client.list()
    finally:
        await client.close()
        await server.stop()


async def test_a_server_error_is_reported_not_raised_raw(socket_dir: Path) -> None:
    class Broken(FakeKubelet):
        async def List(self, request: Any, context: Any) -> pb.ListPodResourcesResponse:
            await context.abort(grpc.StatusCode.INTERNAL, "pod resources not ready")
            raise AssertionError("unreachable")

    server = KubeletServer(socket=socket_dir / "kubelet.sock", servicer=Broken())
    await server.start()
    client = PodResourcesClient(server.socket)
    try:
        with pytest.raises(KubeletUnavailable, match="INTERNAL: pod resources not ready"):
            await client.list()
    finally:
        await client.close()
        await server.stop()


UPSTREAM_SERVER = textwrap.dedent("""
    import asyncio, sys
    import grpc
    sys.path.insert(0, sys.argv[1])
    import api_pb2 as pb, api_pb2_grpc as pb_grpc

    class Lister(pb_grpc.PodResourcesListerServicer):
        async def List(self, request, context):
            topology = pb.TopologyInfo(nodes=[pb.NUMANode(ID=1)])
            gpu = pb.ContainerDevices(resource_name="nvidia.com/gpu",
                                      device_ids=["GPU-aa::1", "GPU-bb"], topology=topology)
            memory = pb.ContainerMemory(memory_type="hugepages-1Gi", size=2 << 30,
                                        topology=topology)
            claim = pb.DynamicResource(claim_name="gpu-claim", claim_namespace="ml",
                claim_resources=[pb.ClaimResource(driver_name="gpu.nvidia.com", pool_name="n1",
                    device_name="gpu-3", cdi_devices=[pb.CDIDevice(name="nvidia.com/gpu=3")])])
            main = pb.ContainerResources(name="main", devices=[gpu], cpu_ids=[8, 9],
                                         memory=[memory], dynamic_resources=[claim])
            return pb.ListPodResourcesResponse(pod_resources=[
                pb.PodResources(name="trainer", namespace="ml", containers=[main],
                                cpu_ids=[8, 9, 10], memory=[memory]),
            ])

        async def Get(self, request, context):
            response = await self.List(None, context)
            return pb.GetPodResourcesResponse(pod_resources=response.pod_resources[0])

    async def main():
        server = grpc.aio.server()
        pb_grpc.add_PodResourcesListerServicer_to_server(Lister(), server)
        server.add_insecure_port("unix:" + sys.argv[2])
        await server.start()
        print("ready", flush=True)
        await server.wait_for_termination()

    asyncio.run(main())
""")


@pytest.mark.skipif(not INTEROP_PROTO.exists(), reason=f"{INTEROP_PROTO} is absent")
async def test_our_client_reads_a_server_built_from_the_upstream_proto(socket_dir: Path) -> None:
    from grpc_tools import protoc  # type: ignore[import-untyped]

    stubs = socket_dir / "upstream"
    stubs.mkdir()
    (stubs / "api.proto").write_bytes(INTEROP_PROTO.read_bytes())
    status = protoc.main(["protoc", f"-I{stubs}", f"--python_out={stubs}",
                          f"--grpc_python_out={stubs}", str(stubs / "api.proto")])
    assert status == 0
    # Its own process: upstream's messages share the package "v1" with ours, and one process's
    # protobuf descriptor pool cannot hold both.
    socket = socket_dir / "upstream.sock"
    server = await asyncio.create_subprocess_exec(
        sys.executable, "-c", UPSTREAM_SERVER, str(stubs), str(socket),
        stdout=subprocess.PIPE, env={**os.environ, "PYTHONPATH": ""},
    )
    try:
        assert server.stdout is not None
        assert await asyncio.wait_for(server.stdout.readline(), timeout=20) == b"ready\n"
        client = PodResourcesClient(socket)
        try:
            pods = await client.list()
        finally:
            await client.close()
    finally:
        server.terminate()
        await server.wait()
    assert pods == [PodResources("ml", "trainer", (ContainerResources(
        "main", (ContainerDevices("nvidia.com/gpu", ("GPU-aa::1", "GPU-bb")),),
        frozenset({8, 9}),
        claims=(ClaimDevice("ml", "gpu-claim", "gpu.nvidia.com", "n1", "gpu-3"),)),),
        frozenset({8, 9, 10}))]
