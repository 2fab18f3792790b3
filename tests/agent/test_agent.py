"""The agent loop against kmock (a stateful Kubernetes API) and a real gRPC kubelet stand-in."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from gpunuma.agent.podresources import PodResourcesClient
from gpunuma.agent.publisher import layout_spec
from gpunuma.agent.service import Agent
from gpunuma.discovery import BackendReport, BackendUnavailable, discover
from gpunuma.kubeapi import Connection, KubeClient
from gpunuma.settings import AgentSettings, DiscoverySettings
from gpunuma.topology import Layout
from tests.agent.conftest import (
    NODE,
    NODE_UID,
    KubeletServer,
    container,
    cr,
    layout_of,
    pod,
    published,
)
from tests.fixtures import machines
from tests.polling import eventually

MIG = "MIG-1d4f2c7e-96a1-5b3b-8f0e-3a4c5d6e7f80"


@dataclass
class Machine:
    """What discovery sees; a test swaps ``tree`` to change the hardware under the agent."""

    tree: machines.Tree
    mig: dict[str, tuple[str, ...]] | None = None
    fault: Exception | None = None  # set: discovery raises it
    hang: threading.Event | None = None  # set: discovery blocks until the event is set
    calls: int = 0

    def discover(self, _: DiscoverySettings) -> Layout:
        self.calls += 1
        if self.hang is not None:
            self.hang.wait(timeout=30)
        if self.fault is not None:
            raise self.fault
        return layout_of(self.tree, mig=self.mig)


@dataclass
class Running:
    agent: Agent
    stop: asyncio.Event
    task: asyncio.Task[None]

    async def halt(self) -> None:
        self.stop.set()
        await asyncio.wait_for(self.task, timeout=5)


def writes(kmock: Any) -> list[tuple[str, Any]]:
    return [(request.method.value, request.data) for request in kmock
            if request.method.value in ("POST", "PATCH", "PUT", "DELETE")]


def fail_first(kmock: Any, method: str, count: int, status: int, reason: str) -> None:
    """Answer the first ``count`` requests of ``method`` with a Kubernetes error status."""
    failed: set[int] = set()

    def chosen(request: Any) -> bool:
        if request.id in failed:
            return True
        if len(failed) < count:
            failed.add(request.id)
            return True
        return False

    kmock[method, chosen] << status << {
        "kind": "Status", "apiVersion": "v1", "status": "Failure", "code": status,
        "reason": reason, "message": f"injected {reason}"}


@pytest.fixture
def api(kmock: Any) -> Any:
    kmock.objects["v1/nodes", None, NODE] = {"metadata": {"name": NODE, "uid": NODE_UID}}
    return kmock


@pytest.fixture
async def start(api: Any) -> AsyncIterator[Callable[..., Running]]:
    running: list[Running] = []
    clients: list[Any] = []

    def _start(machine: Machine, *, socket: Path | None = None, **overrides: Any) -> Running:
        settings = AgentSettings(node_name=NODE, **{
            "interval": 0.05, "heartbeat": 3600.0, "allocations_interval": 0.05, **overrides})
        kube = KubeClient(Connection(server=str(api.url)))
        kubelet = PodResourcesClient(socket, timeout=1) if socket else None
        clients.extend(c for c in (kube, kubelet) if c is not None)
        agent = Agent(settings, kube=kube, kubelet=kubelet, discover=machine.discover,
                      retry_initial=0.02, retry_maximum=0.1)
        stop = asyncio.Event()
        run = Running(agent, stop, asyncio.create_task(agent.run(stop)))
        running.append(run)
        return run

    yield _start
    for run in running:
        await run.halt()
    for client in clients:
        await client.close()


@pytest.fixture
def hgx(build_machine: Callable[[machines.Machine], machines.Tree]) -> Machine:
    return Machine(build_machine(machines.two_socket_8gpu()))


async def test_the_first_pass_creates_the_layout_owned_by_the_node(
    api: Any, start: Callable[..., Running], hgx: Machine
) -> None:
    run = start(hgx)
    await eventually(lambda: published(api))
    obj = cr(api)
    assert obj["metadata"]["ownerReferences"] == [
        {"apiVersion": "v1", "kind": "Node", "name": NODE, "uid": NODE_UID}]
    spec = dict(obj["spec"])
    heartbeat = spec.pop("heartbeatTime")
    assert spec == layout_spec(layout_of(hgx.tree), [])
    assert spec["summary"] == {"gpus": 8, "numaNodes": 2, "layout": "4-4"}
    assert heartbeat.endswith("Z")
    await run.halt()
    assert [method for method, _ in writes(api)] == ["POST"]


async def test_unchanged_passes_make_no_write(
    api: Any, start: Callable[..., Running], hgx: Machine
) -> None:
    run = start(hgx)
    await eventually(lambda: published(api))
    await asyncio.sleep(0.5)  # about ten discovery passes at interval 0.05
    await run.halt()
    assert [method for method, _ in writes(api)] == ["POST"]
    assert run.agent.metrics.discovery_seconds._sum.get() > 0  # discovery really ran


async def test_a_restarted_agent_on_an_unchanged_node_writes_nothing(
    api: Any, start: Callable[..., Running], hgx: Machine
) -> None:
    first = start(hgx)
    await eventually(lambda: published(api))
    await first.halt()
    second = start(hgx)
    await asyncio.sleep(0.3)
    await second.halt()
    assert [method for method, _ in writes(api)] == ["POST"]


async def test_a_gpu_gone_updates_the_layout(
    api: Any, start: Callable[..., Running], hgx: Machine,
    build_machine: Callable[[machines.Machine], machines.Tree],
) -> None:
    run = start(hgx)
    await eventually(lambda: published(api))
    hgx.tree = build_machine(hgx.tree.machine.without("0000:c3:00.0"))
    await eventually(lambda: len(writes(api)) == 2)
    await asyncio.sleep(0.2)
    await run.halt()
    [(_, _), (method, patch)] = writes(api)
    assert method == "PATCH"
    assert [op["path"] for op in patch] == ["/spec"]  # the whole spec, nulls intact
    spec = cr(api)["spec"]
    assert spec["summary"] == {"gpus": 7, "numaNodes": 2, "layout": "4-3"}
    assert "0000:c3:00.0" not in [gpu["pciBusId"] for gpu in spec["gpus"]]
    assert spec["gpus"][0]["renderNode"] is None  # a null survived the write


async def test_the_heartbeat_patches_only_heartbeat_time(
    api: Any, start: Callable[..., Running], hgx: Machine
) -> None:
    run = start(hgx, heartbeat=0.15)
    await eventually(lambda: len(writes(api)) >= 3)
    await run.halt()
    created, *heartbeats = writes(api)
    assert created[0] == "POST"
    for method, body in heartbeats:
        assert method == "PATCH"
        assert list(body) == ["spec"]
        assert list(body["spec"]) == ["heartbeatTime"]
    spec = dict(cr(api)["spec"])
    spec.pop("heartbeatTime")
    assert spec == layout_spec(layout_of(hgx.tree), [])
    assert run.agent.metrics.api_writes.labels(kind="heartbeat")._value.get() == len(heartbeats)


async def test_a_spec_changed_by_someone_else_is_written_back_at_the_next_heartbeat(
    api: Any, start: Callable[..., Running], hgx: Machine
) -> None:
    """Issue #16 item 4: a forged layout survived, because the victim's agent only merge-patched
    heartbeatTime and so kept the forgery fresh."""
    run = start(hgx, heartbeat=0.2)
    await eventually(lambda: published(api) and len(writes(api)) >= 2)  # created, a heartbeat
    forged = {"spec": {"source": "pwned-by-gpu-a", "summary": {"layout": "8-0"}}}
    await api.patch(f"/apis/gpunuma.io/v1alpha1/gpunumalayouts/{NODE}", json=forged)
    expected = layout_spec(layout_of(hgx.tree), [])

    def repaired() -> bool:
        spec = dict(cr(api)["spec"])
        spec.pop("heartbeatTime")
        return spec == expected

    await eventually(repaired, within=5)
    await run.halt()
    assert run.agent.metrics.api_writes.labels(kind="repaired")._value.get() >= 1


async def test_server_errors_are_retried_with_backoff(
    api: Any, start: Callable[..., Running], hgx: Machine
) -> None:
    fail_first(api, "get", 3, 500, "InternalError")
    run = start(hgx)
    await eventually(lambda: run.agent.metrics.api_writes.labels(kind="created")._value.get() == 1)
    await run.halt()
    assert run.agent.metrics.errors.labels(stage="api")._value.get() == 3
    assert run.agent.health()["errors"] == {}
    assert [method for method, _ in writes(api)] == ["POST"]


async def test_a_forbidden_write_is_retried_only_at_the_longest_backoff(
    api: Any, start: Callable[..., Running], hgx: Machine
) -> None:
    fail_first(api, "get", 1000, 403, "Forbidden")  # RBAC without get on gpunumalayouts
    run = start(hgx)
    await asyncio.sleep(0.45)
    await run.halt()
    attempts = [request for request in api if request.method.value == "GET"]
    # retry_maximum is 0.1 s here: about five tries, where 0.02 s doubling would make more.
    assert 3 <= len(attempts) <= 6
    assert "403 Forbidden" in run.agent.health()["errors"]["api"]
    assert writes(api) == []


async def test_a_conflict_on_create_finds_the_object_and_writes_no_more(
    api: Any, start: Callable[..., Running], hgx: Machine
) -> None:
    # The first POST is answered 409 although it was stored (a response lost on the way back,
    # or a second agent): the retry reads the object, finds it current and leaves it alone.
    fail_first(api, "post", 1, 409, "AlreadyExists")
    run = start(hgx)
    await eventually(lambda: run.agent.metrics.errors.labels(stage="api")._value.get() == 1)
    await asyncio.sleep(0.3)
    await run.halt()
    assert [method for method, _ in writes(api)] == ["POST"]
    assert run.agent.health()["errors"] == {}


async def test_a_conflict_on_update_reads_the_object_again_before_writing(
    api: Any, start: Callable[..., Running], hgx: Machine,
    build_machine: Callable[[machines.Machine], machines.Tree],
) -> None:
    run = start(hgx)
    await eventually(lambda: published(api))
    fail_first(api, "patch", 1, 409, "Conflict")
    reads_before = sum(1 for request in api if request.method.value == "GET")
    hgx.tree = build_machine(hgx.tree.machine.without("0000:9d:00.0"))
    await eventually(lambda: run.agent.metrics.errors.labels(stage="api")._value.get() == 1)
    await eventually(lambda: run.agent.health()["errors"] == {})
    await asyncio.sleep(0.2)
    await run.halt()
    assert sum(1 for request in api if request.method.value == "GET") > reads_before
    assert cr(api)["spec"]["summary"]["gpus"] == 7
    # kmock stores a write even when a reaction answers it with an error, as a real server may
    # have before the response was lost; the re-read finds it current, so no second PATCH.
    assert [method for method, _ in writes(api)] == ["POST", "PATCH"]


async def test_a_node_without_gpus_publishes_once_then_only_heartbeats(
    api: Any, start: Callable[..., Running], kubelet: KubeletServer,
    build_machine: Callable[[machines.Machine], machines.Tree],
) -> None:
    run = start(Machine(build_machine(machines.cpu_only())), socket=kubelet.socket, heartbeat=0.2)
    await eventually(lambda: len(writes(api)) >= 3)
    await run.halt()
    created, *rest = writes(api)
    assert created[1]["spec"]["gpus"] == []
    assert created[1]["spec"]["allocations"] == []
    assert all(body == {"spec": {"heartbeatTime": body["spec"]["heartbeatTime"]}}
               for _, body in rest)
    assert kubelet.servicer.calls == 0  # nothing to allocate: the kubelet is not even asked


async def test_allocations_from_the_kubelet_reach_the_cr(
    api: Any, start: Callable[..., Running], kubelet: KubeletServer,
    build_machine: Callable[[machines.Machine], machines.Tree],
) -> None:
    node = Machine(build_machine(machines.two_socket_8gpu()), mig={"0000:df:00.0": (MIG,)})
    uuids = [gpu.uuid for gpu in layout_of(node.tree).gpus]
    kubelet.servicer.pods = [
        pod("ml", "llama-0", container(
            "server", [("nvidia.com/gpu", [f"{uuids[1]}::0", f"{uuids[1]}::2"])],
            cpu_ids=[2, 3, 60])),
        pod("ml", "mig-job", container("main", [("nvidia.com/mig-1g.10gb", [MIG])])),
        pod("ml", "wide", container("main", [("nvidia.com/gpu", [str(uuids[4])]),
                                             ("nvidia.com/gpu", [str(uuids[0])])])),
        pod("kube-system", "coredns", container("coredns")),
    ]
    run = start(node, socket=kubelet.socket)
    await eventually(lambda: published(api))
    # The Pods exist only in the kubelet here, not in the API: their processes cannot be found.
    UNKNOWN_POD = {"binding": "unknown", "by": "none",
                   "reason": "the Pod is not known to the agent yet"}
    assert cr(api)["spec"]["allocations"] == [
        {"namespace": "ml", "pod": "llama-0", "container": "server",
         "resource": "nvidia.com/gpu", "deviceIds": [f"{uuids[1]}::0", f"{uuids[1]}::2"],
         "numaNodes": [0], "cpus": "2-3", "observed": UNKNOWN_POD},
        {"namespace": "ml", "pod": "mig-job", "container": "main",
         "resource": "nvidia.com/mig-1g.10gb", "deviceIds": [MIG],
         "numaNodes": [1], "cpus": "56-111,168-223", "observed": UNKNOWN_POD},
        {"namespace": "ml", "pod": "wide", "container": "main", "resource": "nvidia.com/gpu",
         "deviceIds": sorted([str(uuids[0]), str(uuids[4])]), "numaNodes": [0, 1],
         "cpus": "0-223", "observed": UNKNOWN_POD},
    ]
    assert [method for method, _ in writes(api)] == ["POST"]

    kubelet.servicer.pods = kubelet.servicer.pods[1:]  # llama-0 finished
    await eventually(lambda: len(writes(api)) == 2)
    assert [entry["pod"] for entry in cr(api)["spec"]["allocations"]] == ["mig-job", "wide"]

    await kubelet.stop()  # the kubelet restarts: allocations stay as they were, no write
    await eventually(lambda: run.agent.metrics.kubelet_up._value.get() == 0)
    await asyncio.sleep(0.2)
    assert len(writes(api)) == 2
    assert "kubelet" in run.agent.health()["errors"]
    await kubelet.start()
    await eventually(lambda: run.agent.metrics.kubelet_up._value.get() == 1)
    await asyncio.sleep(0.1)
    await run.halt()
    assert len(writes(api)) == 2
    assert run.agent.health()["errors"] == {}


async def test_amd_partitions_and_bus_ids_reach_the_cr(
    api: Any, start: Callable[..., Running], kubelet: KubeletServer,
    build_machine: Callable[[machines.Machine], machines.Tree],
) -> None:
    node = Machine(build_machine(machines.amd_mi300x_cpx()))
    kubelet.servicer.pods = [
        pod("rocm", "whole", container("main", [("amd.com/gpu", ["0000:85:00.0"])])),
        pod("rocm", "slices", container("main", [("amd.com/gpu", ["amdgpu_xcp_0", "amdgpu_xcp_8",
                                                                  "amdgpu_xcp_99"])])),
    ]
    run = start(node, socket=kubelet.socket)
    await eventually(lambda: published(api))
    await run.halt()
    slices, whole = cr(api)["spec"]["allocations"]
    assert whole["numaNodes"] == [1]
    assert whole["cpus"] == "96-191,288-383"
    assert slices["numaNodes"] == [0]  # xcp 0 on GPU 0, xcp 8 on GPU 1: both socket 0
    assert slices["unknownDeviceIds"] == ["amdgpu_xcp_99"]


async def test_a_layout_without_a_kubelet_still_publishes(
    api: Any, start: Callable[..., Running], hgx: Machine, socket_dir: Path
) -> None:
    run = start(hgx, socket=socket_dir / "absent.sock")
    await eventually(lambda: published(api))
    await eventually(lambda: "kubelet" in run.agent.health()["errors"])
    await run.halt()
    assert cr(api)["spec"]["allocations"] == []
    assert "does not exist" in run.agent.health()["errors"]["kubelet"]


async def test_a_failing_discovery_keeps_the_last_layout_and_recovers(
    api: Any, start: Callable[..., Running], hgx: Machine
) -> None:
    run = start(hgx)
    await eventually(lambda: published(api))
    hgx.fault = OSError("sysfs went away")
    await eventually(lambda: "discovery" in run.agent.health()["errors"])
    assert run.agent.layout is not None
    hgx.fault = None
    await eventually(lambda: run.agent.health()["errors"] == {})
    await run.halt()
    assert [method for method, _ in writes(api)] == ["POST"]


async def test_a_discovery_failing_from_the_start_publishes_nothing_and_backs_off(
    api: Any, start: Callable[..., Running], hgx: Machine
) -> None:
    hgx.fault = PermissionError("/host/sys: permission denied")
    run = start(hgx)
    await asyncio.sleep(0.5)
    await run.halt()
    attempts = run.agent.metrics.errors.labels(stage="discovery")._value.get()
    # Backoff 0.02 s doubling to 0.1 s: about eight attempts, and the loop sleeps in between.
    assert 3 <= attempts <= 12
    assert run.agent.passes <= attempts + 1
    assert "permission denied" in run.agent.health()["errors"]["discovery"]
    assert writes(api) == []


async def test_a_hanging_discovery_times_out_and_heartbeats_and_kubelet_polls_go_on(
    api: Any, start: Callable[..., Running], hgx: Machine, kubelet: KubeletServer,
) -> None:
    run = start(hgx, socket=kubelet.socket, heartbeat=0.1, discovery_timeout=0.1)
    await eventually(lambda: published(api))
    hung = threading.Event()
    hgx.hang = hung  # NVML on a GPU fallen off the bus: the call never returns
    try:
        calls_before_hang = hgx.calls
        await eventually(lambda: "discovery" in run.agent.health()["errors"])
        heartbeats, polls = len(writes(api)), kubelet.servicer.calls
        await asyncio.sleep(0.6)
        assert len(writes(api)) >= heartbeats + 2  # heartbeats go on
        assert kubelet.servicer.calls >= polls + 2  # and so do the kubelet polls
        assert hgx.calls == calls_before_hang + 1  # one stuck thread, never a second
        health = run.agent.health()
        assert "did not finish within 0.1 s" in health["errors"]["discovery"]
        assert health["discoveryRunningSeconds"] >= 0.5
        assert run.agent.metrics.discovery_timeouts._value.get() == 1
    finally:
        hgx.hang = None
        hung.set()
    await eventually(lambda: run.agent.health()["errors"] == {})
    assert "discoveryRunningSeconds" not in run.agent.health()
    await eventually(lambda: hgx.calls >= calls_before_hang + 2)  # new discoveries start again
    await run.halt()


async def test_a_discovery_slower_than_the_timeout_still_publishes_its_layout(
    api: Any, start: Callable[..., Running], hgx: Machine,
) -> None:
    released = threading.Event()
    hgx.hang = released
    run = start(hgx, discovery_timeout=0.05)
    await eventually(lambda: "discovery" in run.agent.health()["errors"])
    hgx.hang = None
    released.set()
    await eventually(lambda: published(api))
    await run.halt()
    assert hgx.calls >= 1


class MissingNvml:
    """NVML that cannot load (no driver in the container, or libnvidia-ml.so not mounted)."""

    name = "nvml"
    vendor: Any = "nvidia"

    def collect(self, *, cpu_count: int) -> BackendReport:
        raise BackendUnavailable("libnvidia-ml.so.1: cannot open shared object file")


class NvmlNamedButMissing:
    def discover(self, settings: DiscoverySettings) -> Layout:
        return discover(settings, vendor_backends={"nvml": MissingNvml()})


async def test_an_explicit_backend_that_is_unavailable_publishes_sysfs_with_an_error(
    api: Any, start: Callable[..., Running], hgx: Machine,
) -> None:
    roots = DiscoverySettings(sysfs_root=hgx.tree.sysfs, procfs_root=hgx.tree.procfs,
                              backend="nvml")
    run = start(NvmlNamedButMissing(), discovery=roots)
    await eventually(lambda: published(api))
    await run.halt()
    spec = cr(api)["spec"]
    assert spec["source"] == "sysfs"
    assert len(spec["gpus"]) == 8
    [error] = spec["errors"]
    assert error["source"] == "nvml"
    assert "--backend nvml is unavailable" in error["message"]
    assert "libnvidia-ml.so.1" in error["message"]


async def test_a_dra_pod_reaches_the_cr_through_the_kubelet_and_the_nodes_resourceslices(
    api: Any, start: Callable[..., Running], kubelet: KubeletServer, hgx: Machine,
) -> None:
    """A GPU given through a ResourceClaim: the real gRPC kubelet reports it in dynamic_resources,
    the ResourceSlice (served by the API) ties it to a bus id, and the CR says where it is."""
    api.objects["resource.k8s.io/v1/resourceslices", None, f"{NODE}-gpu.nvidia.com-5g2xq"] = {
        "apiVersion": "resource.k8s.io/v1", "kind": "ResourceSlice",
        "metadata": {"name": f"{NODE}-gpu.nvidia.com-5g2xq"},
        "spec": {"driver": "gpu.nvidia.com", "nodeName": NODE,
                 "pool": {"name": NODE, "generation": 1, "resourceSliceCount": 1},
                 "devices": [
                     {"name": "gpu-5", "attributes": {
                         "resource.kubernetes.io/pciBusID": {"string": "0000:c3:00.0"},
                         "index": {"int": 5}, "productName": {"string": "NVIDIA H100"}}},
                     {"name": "gpu-6", "attributes": {"index": {"int": 6}}},
                 ]}}
    # Another node's slice with the same pool and device names must not be taken for ours.
    api.objects["resource.k8s.io/v1/resourceslices", None, "other-gpu.nvidia.com-q8w4e"] = {
        "apiVersion": "resource.k8s.io/v1", "kind": "ResourceSlice",
        "metadata": {"name": "other-gpu.nvidia.com-q8w4e"},
        "spec": {"driver": "gpu.nvidia.com", "nodeName": "other", "pool": {"name": NODE},
                 "devices": [{"name": "gpu-6", "attributes": {
                     "resource.kubernetes.io/pciBusID": {"string": "0000:1b:00.0"}}}]}}
    kubelet.servicer.pods = [
        pod("ml", "vllm-dra", container("server", cpu_ids=[100, 101], claims=[
            ("ml", "single-gpu", [("gpu.nvidia.com", NODE, "gpu-5")])])),
        pod("ml", "no-slice", container("main", claims=[
            ("ml", "gpu", [("gpu.nvidia.com", NODE, "gpu-6")])])),
    ]
    run = start(hgx, socket=kubelet.socket)
    await eventually(lambda: published(api))
    await eventually(lambda: len(cr(api)["spec"]["allocations"]) == 2)
    await run.halt()
    entries = cr(api)["spec"]["allocations"]
    # No Pod objects in the API here: processes unknown (observed bindings: test_observed_real).
    assert {entry.pop("observed")["binding"] for entry in entries} == {"unknown"}
    assert entries == [
        {"namespace": "ml", "pod": "no-slice", "container": "main", "resource": "gpu.nvidia.com",
         "claim": "gpu", "deviceIds": [f"{NODE}/gpu-6"], "numaNodes": [], "cpus": "",
         "unknownDeviceIds": [f"{NODE}/gpu-6"]},
        {"namespace": "ml", "pod": "vllm-dra", "container": "server", "resource": "gpu.nvidia.com",
         "claim": "single-gpu", "deviceIds": [f"{NODE}/gpu-5"], "numaNodes": [1],
         "cpus": "100-101"},
    ]
    lists = [r for r in api if r.method.value == "GET" and "resourceslices" in str(r.url)]
    assert lists, "the agent never asked for ResourceSlices"
    assert all("fieldSelector=spec.nodeName" in str(r.url) for r in lists)
