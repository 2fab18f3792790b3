"""The served CRD keeps the agent's observed bindings and cgroup mechanism state, and refuses what
the schema bounds (a real kube-apiserver: a field the structural schema did not declare would be
pruned silently)."""

from __future__ import annotations

import copy
import uuid
from typing import Any

import pytest

from gpunuma.agent.allocations import ContainerDevices, ContainerResources, PodResources, allocations
from gpunuma.agent.observe import MemoryPolicy, NumaMaps, TaskState, classify, local_share
from gpunuma.agent.publisher import layout_object, layout_spec
from gpunuma.settings import DEFAULT_GPU_RESOURCES
from gpunuma.topology import parse_cpulist
from tests.agent.conftest import layout_of
from tests.cluster.conftest import Release
from tests.cluster.controlplane import ApiError
from tests.fixtures import machines

LAYOUTS = "/apis/gpunuma.io/v1alpha1/gpunumalayouts"


def _spec(tmp_path: Any) -> dict[str, Any]:
    layout = layout_of(machines.build(machines.two_socket_8gpu(), tmp_path / "hgx"))
    pods = [PodResources("ml", "vllm", (
        ContainerResources("server", (ContainerDevices("nvidia.com/gpu", (layout.gpus[5].uuid or "",)),)),
        ContainerResources("sidecar", (ContainerDevices("nvidia.com/gpu", (layout.gpus[1].uuid or "",)),)),
    ))]
    entries = allocations(pods, layout, DEFAULT_GPU_RESOURCES)
    everything = frozenset().union(*(node.cpus for node in layout.numa_nodes))
    server, sidecar = entries
    local = frozenset(parse_cpulist(server["cpus"]))
    server["observed"] = classify(
        TaskState(local, frozenset({1}), everything, NumaMaps(MemoryPolicy("bind", frozenset({1})),
                                                             {1: 90, 0: 10}),
                  local_share({1: 90, 0: 10}, frozenset({1}))),
        gpu_nodes=frozenset({1}), local_cpus=local, all_cpus=everything, wrapped=True,
        cgroup_written=None, exclusive_cpus=frozenset())
    sidecar["observed"] = {"binding": "unknown", "by": "none",
                           "reason": "the container has not started (no container id in its "
                                     "status)"}
    spec = layout_spec(layout, entries)
    spec["cgroupBinding"] = {"state": "static-cpu-manager", "message": "the kubelet's CPU "
                             "manager policy is static: it owns every container's cpuset"}
    spec["heartbeatTime"] = "2026-11-28T10:00:00Z"
    return spec


def test_observed_bindings_are_stored_as_written_and_bounds_are_enforced(
        release: Release, tmp_path: Any) -> None:
    cluster = release.cluster
    spec = _spec(tmp_path)
    assert spec["allocations"][0]["observed"]["by"] == "numa-exec"
    name = f"observed-{uuid.uuid4().hex[:8]}"
    body = layout_object(name, "", spec)
    body["metadata"].pop("ownerReferences")
    cluster.request("POST", LAYOUTS, body)
    try:
        stored = cluster.request("GET", f"{LAYOUTS}/{name}")["spec"]
        assert stored["allocations"] == spec["allocations"]
        assert stored["cgroupBinding"] == spec["cgroupBinding"]
        for change in (
            lambda s: s["allocations"][0]["observed"].update(binding="partial"),
            lambda s: s["allocations"][0]["observed"].update(localMemoryShare=2),
            lambda s: s["allocations"][0]["observed"].update(by="kernel"),
            lambda s: s["allocations"][0]["observed"].pop("binding"),
            lambda s: s["cgroupBinding"].update(state="paused"),
        ):
            wrong = copy.deepcopy(body)
            wrong["metadata"]["name"] = f"{name}-wrong"
            change(wrong["spec"])
            with pytest.raises(ApiError) as refused:
                cluster.request("POST", LAYOUTS, wrong)
            assert refused.value.status == 422
    finally:
        cluster.request("DELETE", f"{LAYOUTS}/{name}")
