"""Which GPUs, NUMA nodes and CPUs each container was given: kubelet PodResources → allocations.

Pure: the kubelet's answer (as the plain dataclasses below, decoded from gRPC by
:mod:`gpunuma.agent.podresources`) and the node's :class:`~gpunuma.topology.Layout` go in, the
``spec.allocations`` entries of the GPUNumaLayout (DESIGN §7) come out.

Device plugins name devices in their own ways, so an id is tried against every form a GPU of the
layout is known by:

- NVIDIA GPU UUIDs, with the ``::N`` replica suffix of time-slicing and MPS sharing stripped;
- MIG UUIDs (``MIG-…``, found among the GPU's ``migDevices``) and the pre-R470 form
  ``MIG-GPU-<uuid>/<gi>/<ci>``, which names its parent directly;
- PCI bus ids in any spelling (the AMD device plugin's ids for whole GPUs);
- AMD compute partitions ``amdgpu_xcp_N`` (CPX/DPX/QPX modes) → the GPU they are carved from;
- plain indices (the NVIDIA plugin's ``deviceIDStrategy=index``), ``N:M`` for MIG by index, among
  the GPUs of the resource's vendor; only for a ``--gpu-resources`` resource or one of a known
  vendor's domain, since other plugins (RDMA, FPGA) number their own devices the same way.

An id that matches none of them is kept in ``deviceIds`` and also listed in ``unknownDeviceIds``,
so a reader sees that the mapping is incomplete instead of a silently shorter list.

Devices given through DRA ResourceClaims are named by driver, pool and device (``gpu-3`` in pool
``node-7`` of ``gpu.nvidia.com``), which says nothing about the hardware: the driver's
ResourceSlice does, in its device's attributes (:mod:`gpunuma.agent.resourceslices` reads them).
Such a device is a GPU when one of the ids its slice gives (the standard
``resource.kubernetes.io/pciBusID``, the driver's ``uuid``) names a GPU of the layout. One entry
per (pod, container, claim, driver) then carries ``claim``, ``resource`` (the driver) and the
``<pool>/<device>`` names as ``deviceIds``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from gpunuma.settings import gpu_resource_pattern
from gpunuma.topology import Gpu, Layout, Vendor, format_cpulist, normalize_pci_bus_id

__all__ = [
    "ClaimDevice",
    "ContainerDevices",
    "ContainerResources",
    "GpuIndex",
    "PodResources",
    "allocations",
    "is_gpu_resource",
    "resource_vendor",
]


@dataclass(frozen=True, slots=True)
class ContainerDevices:
    """Devices of one resource given to a container (the kubelet splits them per NUMA node)."""

    resource_name: str
    device_ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ClaimDevice:
    """One device a DRA ResourceClaim gave to a container."""

    claim_namespace: str
    claim_name: str
    driver: str
    pool: str
    device: str

    @property
    def key(self) -> tuple[str, str, str]:
        """How a ResourceSlice names it: (driver, pool, device)."""
        return self.driver, self.pool, self.device


@dataclass(frozen=True, slots=True)
class ContainerResources:
    name: str
    devices: tuple[ContainerDevices, ...] = ()
    cpu_ids: frozenset[int] = frozenset()  # exclusive CPUs (static CPU manager policy)
    claims: tuple[ClaimDevice, ...] = ()  # devices of DRA ResourceClaims


@dataclass(frozen=True, slots=True)
class PodResources:
    namespace: str
    name: str
    containers: tuple[ContainerResources, ...] = ()
    cpu_ids: frozenset[int] = frozenset()  # a pod-level exclusive allocation, containers' included


_VENDOR_BY_RESOURCE_DOMAIN: Mapping[str, Vendor] = {"nvidia.com": "nvidia", "amd.com": "amd"}
# DRA drivers that publish GPUs: a claim of theirs is reported even when a device cannot be mapped
# (listed in unknownDeviceIds); any other driver's claim only when one of its devices is a GPU.
GPU_DRA_DRIVERS: Mapping[str, Vendor] = {"gpu.nvidia.com": "nvidia", "gpu.amd.com": "amd"}

DraIdentities = Mapping[tuple[str, str, str], Sequence[str]]


def resource_vendor(resource_name: str) -> Vendor | None:
    """The vendor a resource name implies (``nvidia.com/mig-1g.10gb`` → nvidia), if any."""
    domain = resource_name.partition("/")[0]
    return _VENDOR_BY_RESOURCE_DOMAIN.get(domain)


def is_gpu_resource(resource_name: str, patterns: Iterable[str]) -> bool:
    """Whether a resource name matches one of the ``--gpu-resources`` patterns (``*`` globs)."""
    return gpu_resource_pattern(tuple(patterns)).match(resource_name) is not None


class GpuIndex:
    """Looks up the GPU of the layout that a device plugin's device id refers to."""

    def __init__(self, layout: Layout) -> None:
        self._gpus = layout.gpus
        self._by_uuid: dict[str, Gpu] = {}
        self._by_bus_id: dict[str, Gpu] = {}
        self._by_partition: dict[str, Gpu] = {}
        for gpu in layout.gpus:
            self._by_bus_id[gpu.pci_bus_id] = gpu
            if gpu.uuid:
                self._by_uuid[gpu.uuid.lower()] = gpu
            for mig in gpu.mig_devices:
                self._by_uuid[mig.uuid.lower()] = gpu
            for partition in gpu.partitions:
                self._by_partition[partition.id] = gpu

    def resolve(
        self, device_id: str, vendor: Vendor | None = None, *, indices: bool = True
    ) -> Gpu | None:
        """The GPU ``device_id`` names, or None; ``vendor`` narrows index lookups.

        ``indices`` False: a bare number is no GPU. Only a GPU resource's plugin numbers GPUs;
        an RDMA or FPGA plugin's ``"3"`` is its own device 3.
        """
        text = _strip_replica(device_id.strip())
        key = text.lower()
        if key in self._by_uuid:
            return self._by_uuid[key]
        if key.startswith("mig-gpu-"):
            # Pre-R470 MIG ids embed the parent: MIG-GPU-<uuid>/<gpu instance>/<compute instance>.
            parent = key.removeprefix("mig-").partition("/")[0]
            return self._by_uuid.get(parent)
        if text in self._by_partition:
            return self._by_partition[text]
        try:
            return self._by_bus_id.get(normalize_pci_bus_id(text))
        except ValueError:
            pass
        index_text = text.partition(":")[0] if _is_mig_index(text) else text
        if indices and index_text.isdecimal() and index_text.isascii():
            return self._by_index(int(index_text), vendor)
        return None

    def _by_index(self, index: int, vendor: Vendor | None) -> Gpu | None:
        candidates = [
            gpu for gpu in self._gpus
            if gpu.index == index and (vendor is None or gpu.vendor == vendor)
        ]
        # Two vendors' GPUs can share an index; without a vendor to tell them apart, say unknown.
        return candidates[0] if len(candidates) == 1 else None


def _strip_replica(device_id: str) -> str:
    base, separator, replica = device_id.rpartition("::")
    return base if separator and replica.isdecimal() else device_id


def _is_mig_index(text: str) -> bool:
    gpu, separator, mig = text.partition(":")
    return bool(separator) and gpu.isdecimal() and mig.isdecimal()


def allocations(
    pods: Iterable[PodResources], layout: Layout, gpu_resources: Sequence[str],
    dra: DraIdentities | None = None,
) -> list[dict[str, Any]]:
    """The ``spec.allocations`` entries: one per (pod, container, resource) holding GPUs, and one
    per (pod, container, claim, driver) for DRA devices; ``dra`` maps a DRA device's (driver, pool,
    device) to the ids its ResourceSlice gives it (bus id, UUID).

    A resource counts when its name matches ``gpu_resources`` or any of its ids is a GPU of the
    layout (a renamed resource such as ``nvidia.com/gpu.shared``). Entries are sorted by namespace,
    pod, container and resource, ids by their text, so that an unchanged node yields an identical
    list: the kubelet reports ids from a set, in no stable order.
    """
    index = GpuIndex(layout)
    entries: list[dict[str, Any]] = []
    for pod in pods:
        for container in pod.containers:
            exclusive = _exclusive_cpus(pod, container)
            for resource, device_ids in _ids_by_resource(container).items():
                entry = _entry(pod, container.name, resource, device_ids, exclusive, index,
                               layout, gpu_resources)
                if entry is not None:
                    entries.append(entry)
            for (claim, driver), devices in _claims(container).items():
                entry = _claim_entry(pod, container.name, claim, driver, devices, exclusive,
                                     index, layout, dra or {})
                if entry is not None:
                    entries.append(entry)
    entries.sort(key=lambda e: (e["namespace"], e["pod"], e["container"], e["resource"],
                                e.get("claim", "")))
    return entries


def _claims(container: ContainerResources) -> dict[tuple[str, str], list[ClaimDevice]]:
    grouped: dict[tuple[str, str], dict[tuple[str, str, str], ClaimDevice]] = {}
    for device in container.claims:
        grouped.setdefault((device.claim_name, device.driver), {})[device.key] = device
    return {key: [devices[k] for k in sorted(devices)] for key, devices in grouped.items()}


def _claim_entry(
    pod: PodResources,
    container: str,
    claim: str,
    driver: str,
    devices: list[ClaimDevice],
    exclusive: frozenset[int],
    index: GpuIndex,
    layout: Layout,
    dra: DraIdentities,
) -> dict[str, Any] | None:
    vendor = GPU_DRA_DRIVERS.get(driver)
    resolved: dict[str, Gpu | None] = {}
    for device in devices:
        # Ids from the slice only, never a bare number: a driver's "index" attribute is not
        # necessarily the layout's.
        candidates = (index.resolve(i, vendor, indices=False) for i in dra.get(device.key, ()))
        resolved[f"{device.pool}/{device.device}"] = next(
            (gpu for gpu in candidates if gpu is not None), None)
    if vendor is None and not any(resolved.values()):
        return None  # a NIC's or an FPGA's claim
    entry = _placement(pod, container, driver, sorted(resolved), resolved, exclusive, layout)
    entry["claim"] = claim
    return entry


def _ids_by_resource(container: ContainerResources) -> dict[str, list[str]]:
    grouped: dict[str, set[str]] = {}
    for devices in container.devices:
        grouped.setdefault(devices.resource_name, set()).update(devices.device_ids)
    return {resource: sorted(ids) for resource, ids in grouped.items() if ids}


def _exclusive_cpus(pod: PodResources, container: ContainerResources) -> frozenset[int]:
    """The CPUs the container is confined to by the CPU manager; empty when it is not.

    A container with its own exclusive CPUs runs on those. In a pod with a pod-level exclusive
    allocation, a container without its own runs on the pod's CPUs less its siblings' exclusive
    ones (the kubelet reports the pod's set including them).
    """
    if container.cpu_ids:
        return container.cpu_ids
    if not pod.cpu_ids:
        return frozenset()
    taken = frozenset().union(*(sibling.cpu_ids for sibling in pod.containers))
    return pod.cpu_ids - taken


def _entry(
    pod: PodResources,
    container: str,
    resource: str,
    device_ids: list[str],
    exclusive: frozenset[int],
    index: GpuIndex,
    layout: Layout,
    gpu_resources: Sequence[str],
) -> dict[str, Any] | None:
    vendor = resource_vendor(resource)
    configured = is_gpu_resource(resource, gpu_resources)
    indices = configured or vendor is not None
    resolved = {device_id: index.resolve(device_id, vendor, indices=indices)
                for device_id in device_ids}
    if not any(resolved.values()) and not configured:
        return None  # NICs, FPGAs, hugepages-like plugins: not ours to report
    return _placement(pod, container, resource, device_ids, resolved, exclusive, layout)


def _placement(
    pod: PodResources,
    container: str,
    resource: str,
    device_ids: list[str],
    resolved: Mapping[str, Gpu | None],
    exclusive: frozenset[int],
    layout: Layout,
) -> dict[str, Any]:
    gpus = [gpu for gpu in resolved.values() if gpu is not None]
    numa_nodes = sorted({gpu.numa_node for gpu in gpus if gpu.numa_node is not None})
    cpus: set[int] = set()
    for node_id in numa_nodes:
        node = layout.node(node_id)
        if node is not None:
            cpus |= node.cpus
    if exclusive:
        cpus &= exclusive
    entry: dict[str, Any] = {
        "namespace": pod.namespace,
        "pod": pod.name,
        "container": container,
        "resource": resource,
        "deviceIds": device_ids,
        "numaNodes": numa_nodes,
        "cpus": format_cpulist(cpus),
    }
    unknown = [device_id for device_id, gpu in resolved.items() if gpu is None]
    if unknown:
        entry["unknownDeviceIds"] = unknown
    return entry
