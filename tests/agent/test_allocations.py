"""The pure mapping from the kubelet's PodResources to spec.allocations (DESIGN §7)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import pytest

from gpunuma.agent.allocations import (
    ClaimDevice,
    ContainerDevices,
    ContainerResources,
    GpuIndex,
    PodResources,
    allocations,
)
from gpunuma.agent.resourceslices import PCI_BUS_ID_ATTRIBUTE, device_identities
from gpunuma.settings import DEFAULT_GPU_RESOURCES
from gpunuma.topology import Layout
from tests.fixtures import machines

LayoutOf = Callable[..., Layout]
MIG_A = "MIG-1d4f2c7e-96a1-5b3b-8f0e-3a4c5d6e7f80"
MIG_B = "MIG-2e5a3d8f-07b2-5c4c-9a1f-4b5d6e7f8091"


def one_pod(
    *devices: tuple[str, tuple[str, ...]], cpu_ids: frozenset[int] = frozenset()
) -> list[PodResources]:
    return [PodResources("ml", "trainer", (ContainerResources(
        "main", tuple(ContainerDevices(resource, ids) for resource, ids in devices), cpu_ids),))]


@pytest.fixture
def hgx(machine_layout: LayoutOf) -> Layout:
    """Two sockets, four H100 per socket; NVML reports two MIG instances on GPU 7 (0000:df:00.0)."""
    return machine_layout(machines.two_socket_8gpu(), mig={"0000:df:00.0": (MIG_A, MIG_B)})


def test_time_sliced_ids_map_to_their_gpu_and_its_socket(hgx: Layout) -> None:
    uuid = hgx.gpus[1].uuid
    pods = one_pod(("nvidia.com/gpu", (f"{uuid}::0", f"{uuid}::3")))
    [entry] = allocations(pods, hgx, DEFAULT_GPU_RESOURCES)
    assert entry == {
        "namespace": "ml", "pod": "trainer", "container": "main", "resource": "nvidia.com/gpu",
        "deviceIds": [f"{uuid}::0", f"{uuid}::3"], "numaNodes": [0], "cpus": "0-55,112-167",
    }


def test_gpus_on_both_sockets_give_both_nodes_and_all_their_cpus(hgx: Layout) -> None:
    pods = one_pod(("nvidia.com/gpu", (str(hgx.gpus[6].uuid), str(hgx.gpus[0].uuid))))
    [entry] = allocations(pods, hgx, DEFAULT_GPU_RESOURCES)
    assert entry["numaNodes"] == [0, 1]
    assert entry["cpus"] == "0-223"


def test_mig_uuids_new_and_pre_r470_forms_map_to_the_parent_gpu(hgx: Layout) -> None:
    old_form = f"MIG-{hgx.gpus[5].uuid}/1/0"
    pods = one_pod(("nvidia.com/mig-1g.10gb", (MIG_B, old_form)))
    [entry] = allocations(pods, hgx, DEFAULT_GPU_RESOURCES)
    assert entry["numaNodes"] == [1]
    assert entry["cpus"] == "56-111,168-223"
    assert "unknownDeviceIds" not in entry
    index = GpuIndex(hgx)
    assert index.resolve(MIG_A) == hgx.gpus[7]
    assert index.resolve(old_form) == hgx.gpus[5]


def test_index_ids_and_mig_index_ids_of_the_index_strategy(hgx: Layout) -> None:
    index = GpuIndex(hgx)
    assert index.resolve("3", "nvidia") == hgx.gpus[3]
    assert index.resolve("7:1", "nvidia") == hgx.gpus[7]
    assert index.resolve("8", "nvidia") is None
    assert index.resolve("3", "amd") is None


def test_exclusive_cpus_narrow_the_numa_nodes_cpus(hgx: Layout) -> None:
    pods = one_pod(("nvidia.com/gpu", (str(hgx.gpus[0].uuid),)),
                   cpu_ids=frozenset({2, 3, 114, 115, 60}))
    [entry] = allocations(pods, hgx, DEFAULT_GPU_RESOURCES)
    assert entry["cpus"] == "2-3,114-115"  # CPU 60 is on the far socket


def test_exclusive_cpus_all_on_the_far_socket_leave_no_cpus(hgx: Layout) -> None:
    pods = one_pod(("nvidia.com/gpu", (str(hgx.gpus[0].uuid),)), cpu_ids=frozenset({60, 61}))
    [entry] = allocations(pods, hgx, DEFAULT_GPU_RESOURCES)
    assert entry["numaNodes"] == [0]
    assert entry["cpus"] == ""


def test_unknown_ids_are_kept_and_flagged(hgx: Layout) -> None:
    ghost = "GPU-00000000-dead-beef-0000-000000000000"
    pods = one_pod(("nvidia.com/gpu", (str(hgx.gpus[2].uuid), ghost)))
    [entry] = allocations(pods, hgx, DEFAULT_GPU_RESOURCES)
    assert entry["deviceIds"] == sorted([str(hgx.gpus[2].uuid), ghost])
    assert entry["unknownDeviceIds"] == [ghost]
    assert entry["numaNodes"] == [0]


def test_a_gpu_resource_with_only_unknown_ids_is_still_reported(hgx: Layout) -> None:
    [entry] = allocations(one_pod(("nvidia.com/gpu", ("GPU-gone",))), hgx, DEFAULT_GPU_RESOURCES)
    assert entry["numaNodes"] == []
    assert entry["cpus"] == ""
    assert entry["unknownDeviceIds"] == ["GPU-gone"]


def test_other_devices_and_pods_without_devices_are_left_out(hgx: Layout) -> None:
    pods = [
        PodResources("kube-system", "coredns", (ContainerResources("coredns"),)),
        PodResources("net", "sriov", (ContainerResources(
            "app", (ContainerDevices("rdma/hca_shared_devices_a", ("0000:1a:00.0-vf1",)),)),)),
    ]
    assert allocations(pods, hgx, DEFAULT_GPU_RESOURCES) == []


def test_bare_integer_ids_of_a_non_gpu_resource_are_not_taken_for_gpu_indices(hgx: Layout) -> None:
    # RDMA shared-device and FPGA plugins number their devices 0, 1, 2… too.
    pods = one_pod(("rdma/hca_shared_devices_a", ("3",)), ("example.org/fpga", ("0", "1:2")))
    assert allocations(pods, hgx, DEFAULT_GPU_RESOURCES) == []


def test_an_index_id_counts_for_a_configured_gpu_resource_of_unknown_vendor(hgx: Layout) -> None:
    [entry] = allocations(one_pod(("example.org/gpu", ("5",))), hgx, ("example.org/gpu",))
    assert entry["numaNodes"] == [1]


def test_a_renamed_gpu_resource_counts_because_its_ids_are_gpus(hgx: Layout) -> None:
    uuid = str(hgx.gpus[4].uuid)
    [entry] = allocations(one_pod(("nvidia.com/gpu.shared", (f"{uuid}::1",))), hgx,
                          DEFAULT_GPU_RESOURCES)
    assert entry["resource"] == "nvidia.com/gpu.shared"
    assert entry["numaNodes"] == [1]


def test_per_numa_splits_of_one_resource_become_one_entry_with_sorted_ids(hgx: Layout) -> None:
    # The kubelet reports one ContainerDevices per resource *and NUMA node*, ids in set order.
    first, fifth = str(hgx.gpus[0].uuid), str(hgx.gpus[4].uuid)
    pods = one_pod(("nvidia.com/gpu", (fifth,)), ("nvidia.com/gpu", (first,)))
    [entry] = allocations(pods, hgx, DEFAULT_GPU_RESOURCES)
    assert entry["deviceIds"] == sorted([first, fifth])
    assert entry["numaNodes"] == [0, 1]


def test_entries_are_sorted_by_namespace_pod_container_resource(hgx: Layout) -> None:
    uuid = str(hgx.gpus[0].uuid)

    def gpu_container(name: str, resource: str = "nvidia.com/gpu") -> ContainerResources:
        return ContainerResources(name, (ContainerDevices(resource, (uuid,)),))

    pods = [
        PodResources("b", "p", (gpu_container("c"),)),
        PodResources("a", "q", (gpu_container("z"), gpu_container("b"))),
        PodResources("a", "p", (ContainerResources("c", (
            ContainerDevices("nvidia.com/mig-1g.10gb", (MIG_A,)),
            ContainerDevices("nvidia.com/gpu", (uuid,)))),)),
    ]
    keys = [(e["namespace"], e["pod"], e["container"], e["resource"])
            for e in allocations(pods, hgx, DEFAULT_GPU_RESOURCES)]
    assert keys == [
        ("a", "p", "c", "nvidia.com/gpu"), ("a", "p", "c", "nvidia.com/mig-1g.10gb"),
        ("a", "q", "b", "nvidia.com/gpu"), ("a", "q", "z", "nvidia.com/gpu"),
        ("b", "p", "c", "nvidia.com/gpu"),
    ]


def test_amd_bus_ids_in_any_spelling_and_partitions_map_to_their_gpu(
    machine_layout: LayoutOf,
) -> None:
    mi300x = machine_layout(machines.amd_mi300x_cpx())
    # GPU 5 (0000:a6:00.0, socket 1) owns partitions amdgpu_xcp_35 … amdgpu_xcp_41.
    assert mi300x.gpus[5].partitions[0].id == "amdgpu_xcp_35"
    pods = one_pod(("amd.com/gpu", ("0000:A6:00.0", "amdgpu_xcp_36", "00000000:05:00.0")))
    [entry] = allocations(pods, mi300x, DEFAULT_GPU_RESOURCES)
    assert entry["numaNodes"] == [0, 1]
    assert "unknownDeviceIds" not in entry
    index = GpuIndex(mi300x)
    assert index.resolve("amdgpu_xcp_36") == mi300x.gpus[5]
    assert index.resolve("amdgpu_xcp_56") is None


def test_a_gpu_of_unknown_numa_node_gives_no_nodes_and_no_cpus(machine_layout: LayoutOf) -> None:
    vm = machine_layout(machines.vm_two_node())
    [entry] = allocations(one_pod(("nvidia.com/gpu", (str(vm.gpus[0].uuid),))), vm,
                          DEFAULT_GPU_RESOURCES)
    assert entry["numaNodes"] == []
    assert entry["cpus"] == ""
    assert "unknownDeviceIds" not in entry  # the GPU is known; only its node is not


def test_an_index_shared_by_two_vendors_needs_the_resource_to_tell(
    machine_layout: LayoutOf,
) -> None:
    nvidia = machine_layout(machines.vm_single_node())
    amd = machine_layout(machines.amd_two_gpu())
    mixed = replace(amd, gpus=(*amd.gpus, replace(nvidia.gpus[0], index=0)))
    index = GpuIndex(mixed)
    assert index.resolve("0", "nvidia") == mixed.gpus[2]
    assert index.resolve("0", "amd") == mixed.gpus[0]
    assert index.resolve("0") is None


def test_a_container_without_own_cpus_runs_on_the_pods_cpus_less_its_siblings(
    hgx: Layout,
) -> None:
    uuid = str(hgx.gpus[0].uuid)
    pods = [PodResources("ml", "p", (
        ContainerResources("gpu", (ContainerDevices("nvidia.com/gpu", (uuid,)),)),
        ContainerResources("sidecar", cpu_ids=frozenset({4, 5})),
    ), cpu_ids=frozenset({4, 5, 6, 7, 60}))]
    [entry] = allocations(pods, hgx, DEFAULT_GPU_RESOURCES)
    assert entry["cpus"] == "6-7"


# DRA ------------------------------------------------------------------------------------------------


def nvidia_slice(node: str, devices: dict[str, dict[str, object]], *, v1beta1: bool = False
                 ) -> dict[str, object]:
    """A ResourceSlice as the NVIDIA DRA driver publishes it (attribute values typed)."""
    listed = []
    for name, attributes in devices.items():
        typed = {key: {"string": value} if isinstance(value, str) else {"int": value}
                 for key, value in attributes.items()}
        listed.append({"name": name, "basic": {"attributes": typed}} if v1beta1
                      else {"name": name, "attributes": typed})
    return {"apiVersion": "resource.k8s.io/v1", "kind": "ResourceSlice",
            "metadata": {"name": f"{node}-gpu.nvidia.com-x7k2p"},
            "spec": {"driver": "gpu.nvidia.com", "nodeName": node,
                     "pool": {"name": node, "generation": 1, "resourceSliceCount": 1},
                     "devices": listed}}


def claim_pod(*devices: tuple[str, str, str], claim: str = "gpus") -> list[PodResources]:
    return [PodResources("ml", "trainer", (ContainerResources("main", claims=tuple(
        ClaimDevice("ml", claim, driver, pool, device) for driver, pool, device in devices)),))]


def test_a_dra_claims_devices_map_to_gpus_by_the_standard_pci_bus_id_attribute(hgx: Layout) -> None:
    dra = device_identities([nvidia_slice("n7", {
        "gpu-1": {PCI_BUS_ID_ATTRIBUTE: "0000:43:00.0", "index": 1},
        "gpu-6": {PCI_BUS_ID_ATTRIBUTE: "0000:D1:00.0", "index": 6},  # any spelling of a bus id
    })])
    pods = claim_pod(("gpu.nvidia.com", "n7", "gpu-6"), ("gpu.nvidia.com", "n7", "gpu-1"))
    [entry] = allocations(pods, hgx, DEFAULT_GPU_RESOURCES, dra)
    assert entry == {
        "namespace": "ml", "pod": "trainer", "container": "main", "resource": "gpu.nvidia.com",
        "claim": "gpus", "deviceIds": ["n7/gpu-1", "n7/gpu-6"], "numaNodes": [0, 1],
        "cpus": "0-223",
    }


def test_without_a_bus_id_the_drivers_uuid_and_a_mig_devices_parent_name_the_gpu(
    hgx: Layout,
) -> None:
    unknown_mig = "MIG-99999999-0000-5000-8000-000000000000"  # not among NVML's MIG devices
    dra = device_identities([nvidia_slice("n7", {
        "gpu-2": {"uuid": str(hgx.gpus[2].uuid)},
        "gpu-7-mig-1": {"gpu.nvidia.com/uuid": MIG_A},
        "gpu-5-mig-0": {"uuid": unknown_mig, "parentUUID": str(hgx.gpus[5].uuid)},
    }, v1beta1=True)])
    for device, node in (("gpu-2", [0]), ("gpu-7-mig-1", [1]), ("gpu-5-mig-0", [1])):
        [entry] = allocations(claim_pod(("gpu.nvidia.com", "n7", device)), hgx,
                              DEFAULT_GPU_RESOURCES, dra)
        assert entry["numaNodes"] == node, device
        assert "unknownDeviceIds" not in entry


def test_a_gpu_drivers_device_without_a_slice_is_reported_unknown_and_a_nics_claim_is_not_ours(
    hgx: Layout,
) -> None:
    dra = device_identities([nvidia_slice("n7", {"gpu-0": {"index": 0}})])  # no usable id
    pods = claim_pod(("gpu.nvidia.com", "n7", "gpu-0"), ("gpu.nvidia.com", "n7", "gpu-9"))
    pods += [replace(claim_pod(("dra.net", "n7", "eth1"), claim="nic")[0], name="router")]
    [entry] = allocations(pods, hgx, DEFAULT_GPU_RESOURCES, dra)
    assert entry["pod"] == "trainer"
    assert entry["unknownDeviceIds"] == ["n7/gpu-0", "n7/gpu-9"]
    assert entry["numaNodes"] == []
    # A bare number from a slice is never taken as a GPU index.
    assert allocations(claim_pod(("gpu.nvidia.com", "n7", "gpu-0")), hgx, DEFAULT_GPU_RESOURCES,
                       {("gpu.nvidia.com", "n7", "gpu-0"): ["0"]})[0]["numaNodes"] == []
