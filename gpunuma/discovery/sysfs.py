"""The sysfs backend: NUMA nodes and GPUs from the kernel's own files. Always available.

It reads, under the host roots:
- ``devices/system/node/node*/{cpulist,distance,meminfo}`` for the NUMA nodes;
- ``bus/pci/devices/*/{vendor,class,numa_node}`` for the GPUs (vendor 0x10de/0x1002 and class
  0x03xxxx display or 0x12xxxx processing accelerator; audio functions, NVSwitches and bridges are
  not GPUs);
- for NVIDIA, ``<procfs>/driver/nvidia/gpus/<bdf>/information`` (model, UUID, device minor);
- for AMD, ``<bdf>/drm/renderD*``, ``product_name``, ``unique_id``, and the KFD topology, which is the
  only place that ties a compute partition's render node (an ``amdgpu_xcp_N`` platform device, not a
  PCI function) to the GPU it is carved from.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from gpunuma.discovery.backend import BackendReport, GpuFacts
from gpunuma.discovery.hostroot import HostRoots, read_optional, read_text
from gpunuma.topology import (
    CpuListError,
    NumaNode,
    Partition,
    Problem,
    Vendor,
    normalize_pci_bus_id,
    parse_cpulist,
)

__all__ = ["NodeReport", "read_gpus", "read_numa_nodes"]

SOURCE = "sysfs"
GPU_VENDORS: dict[int, Vendor] = {0x10DE: "nvidia", 0x1002: "amd"}
GPU_CLASSES = (0x03, 0x12)  # display controller, processing accelerator
_NODE_DIR = re.compile(r"^node(\d+)$")
_RENDER_NODE = re.compile(r"^renderD(\d+)$")


# NUMA nodes ------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NodeReport:
    """The online NUMA nodes, ascending id, and the ids of those whose CPUs could not be read.

    A node whose ``cpulist`` is unreadable is listed without CPUs, but it is not a memory-only node:
    GPUs on it must not be moved to a neighbour by the distance rule, so its id is kept apart.
    """

    nodes: tuple[NumaNode, ...]
    problems: tuple[Problem, ...] = ()
    unreadable: frozenset[int] = frozenset()


def read_numa_nodes(host: HostRoots) -> NodeReport:
    """Every online NUMA node. A kernel without NUMA yields one node 0 with all CPUs."""
    base = host.sys("devices/system/node")
    problems: list[Problem] = []
    node_ids = _online_node_ids(base)
    if not node_ids:
        return NodeReport((_single_node(host, problems),), tuple(problems))
    raw: list[tuple[int, frozenset[int], int | None, tuple[int, ...]]] = []
    unreadable: set[int] = set()
    for node_id in node_ids:
        node_dir = base / f"node{node_id}"
        cpus: frozenset[int] = frozenset()
        try:
            cpus = parse_cpulist(read_text(node_dir / "cpulist"))
        except (OSError, CpuListError) as exc:
            unreadable.add(node_id)
            problems.append(Problem(f"node{node_id}", SOURCE, f"cannot read cpulist: {exc}"))
        raw.append((node_id, cpus, _node_memory_mib(node_dir, problems, node_id),
                    _node_distances(node_dir, problems, node_id)))
    nodes = []
    for node_id, cpus, memory, row in raw:
        distances = row
        if row and len(row) != len(raw):
            problems.append(Problem(
                f"node{node_id}", SOURCE,
                f"distance has {len(row)} entries for {len(raw)} online nodes; ignored",
            ))
            distances = ()
        nodes.append(NumaNode(id=node_id, cpus=cpus, memory_mib=memory, distances=distances))
    return NodeReport(tuple(nodes), tuple(problems), frozenset(unreadable))


def _online_node_ids(base: Path) -> list[int]:
    online = read_optional(base / "online")
    if online is not None:
        try:
            return sorted(parse_cpulist(online))  # the node mask uses the cpulist format
        except CpuListError:
            pass  # fall back to the directory listing below
    if not base.is_dir():
        return []
    return sorted(
        int(match[1]) for entry in base.iterdir() if (match := _NODE_DIR.match(entry.name))
    )


def _single_node(host: HostRoots, problems: list[Problem]) -> NumaNode:
    cpus: frozenset[int] = frozenset()
    try:
        cpus = parse_cpulist(read_text(host.sys("devices/system/cpu/online")))
    except (OSError, CpuListError) as exc:
        problems.append(Problem("node0", SOURCE, f"no NUMA nodes and no CPU list: {exc}"))
    memory = None
    meminfo = read_optional(host.proc("meminfo"))
    if meminfo:
        memory = _mem_total_mib(meminfo)
    return NumaNode(id=0, cpus=cpus, memory_mib=memory, distances=(10,))


def _node_memory_mib(node_dir: Path, problems: list[Problem], node_id: int) -> int | None:
    try:
        return _mem_total_mib(read_text(node_dir / "meminfo"))
    except OSError as exc:
        problems.append(Problem(f"node{node_id}", SOURCE, f"cannot read meminfo: {exc}"))
        return None


def _mem_total_mib(meminfo: str) -> int | None:
    for line in meminfo.splitlines():
        # "Node 0 MemTotal:  1056479308 kB" (per node) or "MemTotal:  1056479308 kB" (/proc)
        if "MemTotal:" in line:
            fields = line.split("MemTotal:", 1)[1].split()
            if fields and fields[0].isdecimal():
                return int(fields[0]) // 1024
    return None


def _node_distances(node_dir: Path, problems: list[Problem], node_id: int) -> tuple[int, ...]:
    try:
        return tuple(int(value) for value in read_text(node_dir / "distance").split())
    except (OSError, ValueError) as exc:
        problems.append(Problem(f"node{node_id}", SOURCE, f"cannot read distance: {exc}"))
        return ()


# GPUs ------------------------------------------------------------------------------------------------


def read_gpus(host: HostRoots) -> BackendReport:
    """Every GPU on the PCI bus, ascending bus id.

    One failing device is a problem, not a failure, and never a gap: a GPU whose files cannot be
    read is still listed, in its place (so later GPUs keep their indices), marked ``failed`` so that
    its NUMA node stays unknown unless a vendor library places it.
    """
    devices = host.sys("bus/pci/devices")
    problems: list[Problem] = []
    gpus: list[GpuFacts] = []
    partitions = _amd_partitions(host, problems)
    entries = sorted(devices.iterdir(), key=lambda p: p.name) if devices.is_dir() else []
    for entry in entries:
        try:
            bus_id = normalize_pci_bus_id(entry.name)
        except ValueError as exc:
            problems.append(Problem(entry.name, SOURCE, str(exc)))
            continue
        identity = _gpu_identity(entry)
        problems.extend(Problem(bus_id, SOURCE, message) for message in identity.problems)
        if identity.vendor is None:
            continue
        vendor = identity.vendor
        if identity.failed:
            gpus.append(GpuFacts(pci_bus_id=bus_id, vendor=vendor, failed=True))
            continue
        try:
            gpus.append(_read_gpu(host, entry, bus_id, vendor, partitions.get(bus_id, ()), problems))
        except (OSError, ValueError) as exc:
            problems.append(Problem(bus_id, SOURCE, f"cannot read the GPU: {exc}"))
            gpus.append(GpuFacts(pci_bus_id=bus_id, vendor=vendor, failed=True))
    return BackendReport(source=SOURCE, gpus=tuple(gpus), problems=tuple(problems))


_DRIVER_VENDORS: dict[str, Vendor] = {"nvidia": "nvidia", "amdgpu": "amd"}


@dataclass(frozen=True, slots=True)
class _Identity:
    """Whether a PCI function is a GPU, and of which vendor; what could not be read on the way."""

    vendor: Vendor | None  # None: not a GPU (or nothing says it is one)
    problems: tuple[str, ...] = ()
    failed: bool = False  # a GPU vendor's function whose class is unknown: kept, node unknown


def _gpu_identity(entry: Path) -> _Identity:
    """Vendor and class from their files, else from ``uevent`` (``PCI_ID``, ``PCI_CLASS``), the
    vendor also from the bound driver. A broken file is reported even when a second source
    answers; a GPU vendor's function of unknown class is kept as a failed GPU, since dropping it
    would shift the index of every GPU after it."""
    # uevent only when a file fails: read for every PCI function, it would cost each discovery
    # one more file per device for nothing.
    problems: list[str] = []
    try:
        vendor_id = int(read_text(entry / "vendor"), 16)
    except (OSError, ValueError) as exc:
        fallback = _hex(_uevent(entry).get("PCI_ID", "").partition(":")[0])
        driver = _driver(entry)
        if fallback is None and driver in _DRIVER_VENDORS:
            fallback = next(k for k, v in GPU_VENDORS.items() if v == _DRIVER_VENDORS[driver])
        if fallback is None:
            return _Identity(None, (f"cannot read vendor ({exc}), and neither uevent nor the "
                                    "driver tell it: cannot tell whether it is a GPU, not "
                                    "counted; check the device's sysfs files",))
        vendor_id = fallback
        problems.append(f"cannot read vendor ({exc}); uevent or the driver says "
                        f"0x{vendor_id:04x}")
    vendor = GPU_VENDORS.get(vendor_id)
    if vendor is None:
        return _Identity(None)
    pci_class: int | None
    try:
        pci_class = int(read_text(entry / "class"), 16)
    except (OSError, ValueError) as exc:
        pci_class = _hex(_uevent(entry).get("PCI_CLASS", ""))
        if pci_class is None:
            return _Identity(vendor, (*problems, f"cannot read class ({exc}): counted as a GPU "
                                      "whose NUMA node is unknown"), failed=True)
        problems.append(f"cannot read class ({exc}); uevent says 0x{pci_class:06x}")
    if pci_class >> 16 not in GPU_CLASSES:
        return _Identity(None)
    return _Identity(vendor, tuple(problems))


def _hex(text: str) -> int | None:
    try:
        return int(text, 16)
    except ValueError:
        return None


def _driver(entry: Path) -> str | None:
    """The bound driver's name: the last part of the ``driver`` link (``…/drivers/nvidia``)."""
    try:
        return (entry / "driver").readlink().name
    except OSError:
        return None


def _uevent(entry: Path) -> dict[str, str]:
    try:
        text = read_text(entry / "uevent")
    except OSError:
        return {}
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


def _read_gpu(
    host: HostRoots, entry: Path, bus_id: str, vendor: Vendor, partitions: tuple[Partition, ...],
    problems: list[Problem],
) -> GpuFacts:
    reported: int | None
    failed = False
    try:
        numa_text = read_optional(entry / "numa_node")
        reported = int(numa_text) if numa_text not in (None, "") else -1
    except (OSError, ValueError) as exc:
        # Unreadable is not -1 ("the firmware does not say"): no rule may place this GPU.
        problems.append(Problem(bus_id, SOURCE, f"cannot read numa_node: {exc}"))
        reported, failed = None, True
    if vendor == "nvidia":
        info = _nvidia_information(host, bus_id)
        minor = info.get("Device Minor")
        return GpuFacts(
            pci_bus_id=bus_id,
            vendor=vendor,
            model=info.get("Model"),
            uuid=info.get("GPU UUID"),
            minor=int(minor) if minor and minor.isdecimal() else None,
            reported_numa_node=reported,
            failed=failed,
        )
    unique_id = read_optional(entry / "unique_id")
    render = _render_nodes(entry)
    return GpuFacts(
        pci_bus_id=bus_id,
        vendor=vendor,
        model=read_optional(entry / "product_name") or None,
        # ROCm names a GPU "GPU-<unique_id>" (rocminfo, ROCR_VISIBLE_DEVICES).
        uuid=f"GPU-{unique_id}" if unique_id else None,
        render_node=render[0] if render else None,
        reported_numa_node=reported,
        partitions=tuple(p for p in partitions if p.render_node not in render),
        failed=failed,
    )


def _nvidia_information(host: HostRoots, bus_id: str) -> dict[str, str]:
    """``Key: value`` lines of the driver's per-GPU procfs file; empty when the driver is absent."""
    text = read_optional(host.proc(f"driver/nvidia/gpus/{bus_id}/information"))
    facts: dict[str, str] = {}
    for line in (text or "").splitlines():
        key, sep, value = line.partition(":")
        if sep:
            facts[key.strip()] = value.strip()
    return facts


def _render_nodes(device_dir: Path) -> list[str]:
    drm = device_dir / "drm"
    if not drm.is_dir():
        return []
    found = [(int(m[1]), e.name) for e in drm.iterdir() if (m := _RENDER_NODE.match(e.name))]
    return [name for _, name in sorted(found)]


def _amd_partitions(host: HostRoots, problems: list[Problem]) -> dict[str, tuple[Partition, ...]]:
    """Compute partitions per parent bus id, from the KFD topology's render minors.

    Each KFD GPU node has ``domain`` and ``location_id`` (bus << 8 | devfn) of the PCI function it
    belongs to and the ``drm_render_minor`` of its render node; a partition's render node links to
    an ``amdgpu_xcp_N`` platform device, whose name is what the AMD device plugin allocates.
    """
    nodes_dir = host.sys("class/kfd/kfd/topology/nodes")
    if not nodes_dir.is_dir():
        return {}
    found: dict[str, list[tuple[int, Partition]]] = defaultdict(list)
    for node in sorted(nodes_dir.iterdir(), key=lambda p: p.name):
        properties = read_optional(node / "properties")
        if not properties:
            continue
        values = dict(line.split(None, 1) for line in properties.splitlines() if " " in line)
        try:
            minor = int(values.get("drm_render_minor", "0"))
            if minor <= 0:
                continue  # a CPU node of the KFD topology
            location = int(values["location_id"])
            domain = int(values["domain"])
            bus_id = f"{domain:04x}:{location >> 8:02x}:{(location >> 3) & 0x1F:02x}.{location & 0x7}"
        except (KeyError, ValueError) as exc:
            problems.append(Problem(f"kfd node {node.name}", SOURCE, f"bad properties: {exc}"))
            continue
        render = f"renderD{minor}"
        target = host.sys(f"class/drm/{render}/device")
        platform_name = target.resolve().name if target.exists() else ""
        if platform_name.startswith("amdgpu_xcp"):
            found[bus_id].append((minor, Partition(id=platform_name, render_node=render)))
    return {bus_id: tuple(p for _, p in sorted(parts)) for bus_id, parts in found.items()}
