"""Agent test helpers: layouts of fixture machines through the real discovery, a real kubelet,
and readers of the GPUNumaLayout that kmock stores.

The kubelet stand-in is a real ``grpc.aio`` server implementing ``v1.PodResourcesLister`` on a unix
socket, fed messages shaped like what the NVIDIA and AMD device plugins make the kubelet report.
"""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest

from gpunuma.agent import podresources_pb2 as pb
from gpunuma.agent import podresources_pb2_grpc as pb_grpc
from gpunuma.discovery import BackendReport, GpuFacts, discover
from gpunuma.settings import DiscoverySettings
from gpunuma.topology import Layout, MigDevice
from tests.fixtures import machines

NODE = "gpu-node-7"
NODE_UID = "6f1c2d9e-3b4a-4c5d-8e7f-901a2b3c4d5e"


def _layout_object(kmock: Any) -> Any:
    for (resource, _, name), obj in kmock.objects.items():
        if resource.plural == "gpunumalayouts" and name == NODE and not obj.deleted:
            return obj
    return None


def published(kmock: Any) -> bool:
    return _layout_object(kmock) is not None


def cr(kmock: Any) -> dict[str, Any]:
    obj = _layout_object(kmock)
    assert obj is not None, "no GPUNumaLayout was created"
    raw: dict[str, Any] = obj.raw
    return raw


@dataclass
class MigBackend:
    """A vendor backend that reports MIG instances for chosen GPUs (NVML alone knows them).

    A backend, not a fake ``pynvml`` (that is tests/discovery/fakes.FakeNvml, for the NVML
    backend's own tests): the agent's tests need MIG devices in the layout, not NVML's calls."""

    mig: dict[str, tuple[str, ...]] = field(default_factory=dict)  # bus id → MIG UUIDs
    name: str = "nvml"
    vendor: Any = "nvidia"

    def collect(self, *, cpu_count: int) -> BackendReport:
        return BackendReport(source="nvml", gpus=tuple(
            GpuFacts(pci_bus_id=bus_id, vendor="nvidia",
                     mig_devices=tuple(MigDevice(uuid) for uuid in uuids))
            for bus_id, uuids in self.mig.items()
        ))


def layout_of(tree: machines.Tree, *, mig: dict[str, tuple[str, ...]] | None = None) -> Layout:
    """The layout the agent would publish for this machine (real discovery over the tree)."""
    settings = DiscoverySettings(sysfs_root=tree.sysfs, procfs_root=tree.procfs,
                                 backend="auto" if mig else "sysfs")
    return discover(settings, vendor_backends={"nvml": MigBackend(mig)} if mig else {})


def container(
    name: str, devices: Sequence[tuple[str, Sequence[str]]] = (), cpu_ids: Sequence[int] = (),
    claims: Sequence[tuple[str, str, Sequence[tuple[str, str, str]]]] = (),
) -> pb.ContainerResources:
    """``claims``: (namespace, claim, [(driver, pool, device)]) as the kubelet reports DRA."""
    return pb.ContainerResources(
        name=name,
        devices=[pb.ContainerDevices(resource_name=resource, device_ids=list(ids))
                 for resource, ids in devices],
        cpu_ids=list(cpu_ids),
        dynamic_resources=[
            pb.DynamicResource(claim_namespace=namespace, claim_name=claim, claim_resources=[
                pb.ClaimResource(driver_name=driver, pool_name=pool, device_name=device,
                                 cdi_devices=[pb.CDIDevice(name=f"k8s.{driver}/claim=uid-{device}")])
                for driver, pool, device in devices_of_claim])
            for namespace, claim, devices_of_claim in claims
        ],
    )


def pod(namespace: str, name: str, *containers: pb.ContainerResources) -> pb.PodResources:
    return pb.PodResources(namespace=namespace, name=name, containers=list(containers))


class FakeKubelet(pb_grpc.PodResourcesListerServicer):
    """Answers List and Get from ``pods``, which a test may change between calls."""

    def __init__(self) -> None:
        self.pods: list[pb.PodResources] = []
        self.calls = 0

    async def List(self, request: Any, context: Any) -> pb.ListPodResourcesResponse:
        self.calls += 1
        return pb.ListPodResourcesResponse(pod_resources=self.pods)

    async def Get(self, request: Any, context: Any) -> pb.GetPodResourcesResponse:
        self.calls += 1
        for item in self.pods:
            if item.namespace == request.pod_namespace and item.name == request.pod_name:
                return pb.GetPodResourcesResponse(pod_resources=item)
        await context.abort(grpc.StatusCode.NOT_FOUND,
                            f"pod {request.pod_namespace}/{request.pod_name} not found")
        raise AssertionError("unreachable")


@dataclass
class KubeletServer:
    """A running kubelet stand-in; ``stop()`` and ``start()`` model a kubelet restart."""

    socket: Path
    servicer: FakeKubelet
    _server: Any = None

    async def start(self) -> None:
        server = grpc.aio.server()
        pb_grpc.add_PodResourcesListerServicer_to_server(  # type: ignore[no-untyped-call]
            self.servicer, server
        )
        server.add_insecure_port(f"unix:{self.socket}")
        await server.start()
        self._server = server

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.stop(None)
            self._server = None
        self.socket.unlink(missing_ok=True)  # as when the kubelet goes away


@pytest.fixture
def socket_dir() -> Iterator[Path]:
    """A short directory: unix socket paths are limited to 107 bytes, test names are long."""
    with tempfile.TemporaryDirectory(prefix="gn-", dir="/tmp") as directory:
        yield Path(directory)


@pytest.fixture
async def kubelet(socket_dir: Path) -> AsyncIterator[KubeletServer]:
    server = KubeletServer(socket=socket_dir / "kubelet.sock", servicer=FakeKubelet())
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
def machine_layout(
    build_machine: Callable[[machines.Machine], machines.Tree],
) -> Callable[..., Layout]:
    def _layout(machine: machines.Machine, **kwargs: Any) -> Layout:
        return layout_of(build_machine(machine), **kwargs)

    return _layout
