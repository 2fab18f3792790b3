"""The node's GPU↔NUMA layout: NUMA nodes, GPUs, and the JSON layout document (DESIGN §4).

Everything here is pure: discovery backends build these objects from what they read, the agent
publishes ``Layout.to_document()`` as the GPUNumaLayout spec, and the operator reads it back with
``Layout.from_document()``. The rules that turn a GPU's *reported* NUMA node into the CPU-bearing
node a process should bind to (DESIGN §5) live here, once, in :func:`resolve_cpu_node`.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from gpunuma.topology.cpulist import MAX_CPUS, CpuListError, format_cpulist, parse_cpulist

__all__ = [
    "MAX_NUMA_NODES",
    "VENDORS",
    "Gpu",
    "Layout",
    "LayoutDocumentError",
    "MigDevice",
    "NumaNode",
    "Partition",
    "Problem",
    "Vendor",
    "node_for_cpus",
    "normalize_pci_bus_id",
    "resolve_cpu_node",
]

# Linux's MAX_NUMNODES (NODES_SHIFT at most 10): no machine has more NUMA nodes. A layout claiming
# more is refused before its nodes are read (each carries one distance per node: quadratic).
MAX_NUMA_NODES = 1024
# The GPUNumaLayout CRD bounds errors (count and message length): a document keeps the first ones
# and cuts long messages, so a chatty vendor library never makes the whole layout unwritable.
MAX_PROBLEMS = 256
MAX_PROBLEM_MESSAGE = 4096

Vendor = Literal["nvidia", "amd"]
VENDORS: tuple[Vendor, ...] = ("nvidia", "amd")

_PCI_BUS_ID = re.compile(
    r"^(?:(?P<domain>[0-9a-fA-F]{1,8}):)?(?P<bus>[0-9a-fA-F]{2}):(?P<device>[0-9a-fA-F]{2})"
    r"\.(?P<function>[0-7])$"
)


def normalize_pci_bus_id(text: str) -> str:
    """Return a PCI address in sysfs form: lower case, at least 4 domain digits (``0000:1b:00.0``).

    NVML writes ``00000000:1B:00.0``; lspci may omit the domain. Domains above 0xffff (Intel VMD)
    keep their extra digits, as sysfs does.
    """
    match = _PCI_BUS_ID.match(text.strip())
    if match is None:
        raise ValueError(f"{text!r} is not a PCI bus id; expected e.g. '0000:1b:00.0'")
    domain = int(match["domain"] or "0", 16)
    return f"{domain:04x}:{match['bus'].lower()}:{match['device'].lower()}.{match['function']}"


@dataclass(frozen=True, slots=True)
class NumaNode:
    """An online NUMA node. ``distances[i]`` is the distance to the i-th node of the layout."""

    id: int
    cpus: frozenset[int]
    memory_mib: int | None = None
    distances: tuple[int, ...] = ()

    @property
    def has_cpus(self) -> bool:
        return bool(self.cpus)


@dataclass(frozen=True, slots=True)
class MigDevice:
    """A MIG instance of an NVIDIA GPU; the kubelet hands these out by UUID."""

    uuid: str


@dataclass(frozen=True, slots=True)
class Partition:
    """A compute partition of an AMD GPU (CPX/DPX/QPX modes): its own render node, same PCI device.

    ``id`` is the name the AMD device plugin allocates it by, e.g. ``amdgpu_xcp_3``.
    """

    id: str
    render_node: str | None = None


@dataclass(frozen=True, slots=True)
class Gpu:
    """One physical GPU (a PCI function). MIG instances and partitions hang off it."""

    index: int
    vendor: Vendor
    pci_bus_id: str
    model: str | None = None
    uuid: str | None = None
    minor: int | None = None
    render_node: str | None = None
    numa_node: int | None = None
    reported_numa_node: int = -1
    mig_devices: tuple[MigDevice, ...] = ()
    partitions: tuple[Partition, ...] = ()


@dataclass(frozen=True, slots=True)
class Problem:
    """Something discovery could not do; one per failing device, or per backend (device None)."""

    device: str | None
    source: str
    message: str


@dataclass(frozen=True, slots=True)
class Layout:
    """What a node looks like: its NUMA nodes (ascending id) and GPUs (ascending bus id)."""

    numa_nodes: tuple[NumaNode, ...]
    gpus: tuple[Gpu, ...] = ()
    source: str = "sysfs"
    errors: tuple[Problem, ...] = field(default=())

    @property
    def cpu_nodes(self) -> tuple[NumaNode, ...]:
        """The NUMA nodes that have CPUs: the only ones a process can be bound to."""
        return tuple(node for node in self.numa_nodes if node.has_cpus)

    def node(self, node_id: int) -> NumaNode | None:
        return next((node for node in self.numa_nodes if node.id == node_id), None)

    def gpus_per_cpu_node(self) -> dict[int, int]:
        """GPU count for every CPU-bearing node (zeros included), ascending node id."""
        counts = Counter(gpu.numa_node for gpu in self.gpus if gpu.numa_node is not None)
        return {node.id: counts.get(node.id, 0) for node in self.cpu_nodes}

    def gpus_per_node_text(self) -> str:
        """GPUs per CPU-bearing node, ``-``-joined in node order (``4-4``, ``8-0``); ``unknown``
        when any GPU's node is unknown (a count per node would then be a guess)."""
        if any(gpu.numa_node is None for gpu in self.gpus):
            return "unknown"
        return "-".join(map(str, self.gpus_per_cpu_node().values()))

    def vendors(self) -> frozenset[str]:
        return frozenset(gpu.vendor for gpu in self.gpus)

    def to_document(self) -> dict[str, Any]:
        """The JSON layout document of DESIGN §4 (also the GPUNumaLayout spec)."""
        return {
            "numaNodes": [
                {
                    "id": node.id,
                    "cpus": format_cpulist(node.cpus),
                    "memoryMiB": node.memory_mib,
                    "distances": list(node.distances),
                }
                for node in self.numa_nodes
            ],
            "gpus": [
                {
                    "index": gpu.index,
                    "vendor": gpu.vendor,
                    "model": gpu.model,
                    "uuid": gpu.uuid,
                    "pciBusId": gpu.pci_bus_id,
                    "minor": gpu.minor,
                    "renderNode": gpu.render_node,
                    "numaNode": gpu.numa_node,
                    "reportedNumaNode": gpu.reported_numa_node,
                    "migDevices": [{"uuid": mig.uuid} for mig in gpu.mig_devices],
                    "partitions": [
                        {"id": part.id, "renderNode": part.render_node} for part in gpu.partitions
                    ],
                }
                for gpu in self.gpus
            ],
            "source": self.source,
            "errors": [
                {"device": problem.device, "source": problem.source,
                 "message": _cut(problem.message, MAX_PROBLEM_MESSAGE)}
                for problem in self.errors[:MAX_PROBLEMS]
            ],
        }

    @classmethod
    def from_document(cls, document: Mapping[str, Any]) -> Layout:
        """Read a layout document back; :class:`LayoutDocumentError` names the first bad field."""
        reader = _DocumentReader()
        return reader.layout(document)

    def with_errors(self, problems: Iterable[Problem]) -> Layout:
        return replace(self, errors=self.errors + tuple(problems))


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit - 1] + "…"


class LayoutDocumentError(ValueError):
    """A layout document (a CR spec, a JSON file) that does not have the shape of DESIGN §4."""


class _DocumentReader:
    """Validates while it reads, so that every message carries the JSON path of the bad value."""

    def layout(self, doc: Mapping[str, Any]) -> Layout:
        if not isinstance(doc, Mapping):
            raise LayoutDocumentError(f"layout document: expected an object, got {_kind(doc)}")
        items = self.array(doc, "numaNodes", "", required=True)
        if len(items) > MAX_NUMA_NODES:
            raise LayoutDocumentError(
                f"numaNodes: {len(items)} nodes, more than the {MAX_NUMA_NODES} a Linux machine "
                "can have (MAX_NUMNODES)"
            )
        nodes = tuple(self.numa_node(item, f"numaNodes[{i}]") for i, item in enumerate(items))
        if (cpu_count := sum(len(node.cpus) for node in nodes)) > MAX_CPUS:
            raise LayoutDocumentError(
                f"numaNodes: {cpu_count} CPUs in all, more than the {MAX_CPUS} a Linux machine "
                "can have (NR_CPUS)"
            )
        ids = [node.id for node in nodes]
        if ids != sorted(set(ids)):
            raise LayoutDocumentError(f"numaNodes: ids must be unique and ascending, got {ids}")
        for i, node in enumerate(nodes):
            if node.distances and len(node.distances) != len(nodes):
                raise LayoutDocumentError(
                    f"numaNodes[{i}].distances: expected {len(nodes)} entries (one per node), "
                    f"got {len(node.distances)}"
                )
        gpus = tuple(
            self.gpu(item, f"gpus[{i}]") for i, item in enumerate(self.array(doc, "gpus", ""))
        )
        errors = tuple(
            self.problem(item, f"errors[{i}]") for i, item in enumerate(self.array(doc, "errors", ""))
        )
        source = self.string(doc, "source", "", required=False) or "sysfs"
        return Layout(numa_nodes=nodes, gpus=gpus, source=source, errors=errors)

    def numa_node(self, item: Any, path: str) -> NumaNode:
        obj = self.object(item, path)
        cpus_text = self.string(obj, "cpus", path, required=True) or ""
        try:
            cpus = parse_cpulist(cpus_text)
        except CpuListError as exc:
            raise LayoutDocumentError(f"{path}.cpus: {exc}") from None
        distances = tuple(
            self.integer_value(value, f"{path}.distances[{i}]")
            for i, value in enumerate(self.array(obj, "distances", path))
        )
        return NumaNode(
            id=self.integer(obj, "id", path, required=True, minimum=0) or 0,
            cpus=cpus,
            memory_mib=self.integer(obj, "memoryMiB", path, minimum=0),
            distances=distances,
        )

    def gpu(self, item: Any, path: str) -> Gpu:
        obj = self.object(item, path)
        vendor = self.string(obj, "vendor", path, required=True)
        if vendor not in VENDORS:
            raise LayoutDocumentError(f"{path}.vendor: expected one of {VENDORS}, got {vendor!r}")
        bus_id = self.string(obj, "pciBusId", path, required=True) or ""
        try:
            normalized = normalize_pci_bus_id(bus_id)
        except ValueError as exc:
            raise LayoutDocumentError(f"{path}.pciBusId: {exc}") from None
        reported = self.integer(obj, "reportedNumaNode", path, minimum=-1)
        return Gpu(
            index=self.integer(obj, "index", path, required=True, minimum=0) or 0,
            vendor=vendor,
            pci_bus_id=normalized,
            model=self.string(obj, "model", path),
            uuid=self.string(obj, "uuid", path),
            minor=self.integer(obj, "minor", path, minimum=0),
            render_node=self.string(obj, "renderNode", path),
            numa_node=self.integer(obj, "numaNode", path, minimum=0),
            reported_numa_node=-1 if reported is None else reported,
            mig_devices=tuple(
                MigDevice(uuid=self.string(self.object(m, f"{path}.migDevices[{i}]"), "uuid",
                                           f"{path}.migDevices[{i}]", required=True) or "")
                for i, m in enumerate(self.array(obj, "migDevices", path))
            ),
            partitions=tuple(
                self.partition(p, f"{path}.partitions[{i}]")
                for i, p in enumerate(self.array(obj, "partitions", path))
            ),
        )

    def partition(self, item: Any, path: str) -> Partition:
        obj = self.object(item, path)
        return Partition(
            id=self.string(obj, "id", path, required=True) or "",
            render_node=self.string(obj, "renderNode", path),
        )

    def problem(self, item: Any, path: str) -> Problem:
        obj = self.object(item, path)
        return Problem(
            device=self.string(obj, "device", path),
            source=self.string(obj, "source", path, required=True) or "",
            message=self.string(obj, "message", path, required=True) or "",
        )

    # Typed field access ------------------------------------------------------------------------

    @staticmethod
    def object(item: Any, path: str) -> Mapping[str, Any]:
        if not isinstance(item, Mapping):
            raise LayoutDocumentError(f"{path}: expected an object, got {_kind(item)}")
        return item

    @staticmethod
    def array(obj: Mapping[str, Any], key: str, path: str, *, required: bool = False) -> Sequence[Any]:
        value = obj.get(key)
        if value is None:
            if required:
                raise LayoutDocumentError(f"{_join(path, key)}: required, but missing")
            return ()
        if not isinstance(value, list):
            raise LayoutDocumentError(f"{_join(path, key)}: expected an array, got {_kind(value)}")
        return value

    @staticmethod
    def string(obj: Mapping[str, Any], key: str, path: str, *, required: bool = False) -> str | None:
        value = obj.get(key)
        if value is None:
            if required:
                raise LayoutDocumentError(f"{_join(path, key)}: required, but missing")
            return None
        if not isinstance(value, str):
            raise LayoutDocumentError(f"{_join(path, key)}: expected a string, got {_kind(value)}")
        return value

    def integer(
        self, obj: Mapping[str, Any], key: str, path: str, *, required: bool = False,
        minimum: int | None = None,
    ) -> int | None:
        value = obj.get(key)
        if value is None:
            if required:
                raise LayoutDocumentError(f"{_join(path, key)}: required, but missing")
            return None
        number = self.integer_value(value, _join(path, key))
        if minimum is not None and number < minimum:
            raise LayoutDocumentError(f"{_join(path, key)}: must be ≥ {minimum}, got {number}")
        return number

    @staticmethod
    def integer_value(value: Any, path: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise LayoutDocumentError(f"{path}: expected an integer, got {_kind(value)}")
        return value


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"boolean {value!r}".lower()
    if isinstance(value, int | float):
        return f"number {value!r}"
    if isinstance(value, str):
        return f"string {value!r}"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, Mapping):
        return "an object"
    return type(value).__name__


# NUMA mapping (DESIGN §5) ------------------------------------------------------------------------


def node_for_cpus(cpus: Iterable[int], nodes: Sequence[NumaNode]) -> int | None:
    """The one CPU-bearing node whose CPUs the given set touches, or None if it touches 0 or 2+.

    Used for NVML's CPU affinity of a GPU: on hosts whose firmware reports no ``numa_node`` the
    driver still knows which socket the GPU hangs off. An affinity that spans several nodes (a VM
    without a NUMA topology, say) tells us nothing, so it yields None rather than a guess.
    """
    wanted = frozenset(cpus)
    touched = [node.id for node in nodes if node.has_cpus and node.cpus & wanted]
    return touched[0] if len(touched) == 1 else None


def resolve_cpu_node(
    reported: int, nodes: Sequence[NumaNode], *, affinity_node: int | None = None
) -> int | None:
    """The CPU-bearing node a process using a GPU should bind to, from the node the GPU reports.

    - a CPU-bearing node is used as is;
    - a memory-only node (GPU memory on GH200/GB200, CXL) maps to the nearest CPU-bearing node by
      the memory node's distance row, ties to the lower id;
    - ``-1`` (or a node that is not online) maps to the only CPU-bearing node when there is exactly
      one, else to ``affinity_node`` (from NVML's CPU affinity) when given, else ``None``.
    """
    cpu_nodes = [node for node in nodes if node.has_cpus]
    by_id = {node.id: node for node in nodes}
    node = by_id.get(reported)
    if node is not None and node.has_cpus:
        return node.id
    if node is not None and node.distances and len(node.distances) == len(nodes):
        position = {other.id: i for i, other in enumerate(nodes)}
        nearest = min(cpu_nodes, key=lambda c: (node.distances[position[c.id]], c.id), default=None)
        if nearest is not None:
            return nearest.id
    if len(cpu_nodes) == 1:
        return cpu_nodes[0].id
    if affinity_node is not None and affinity_node in by_id and by_id[affinity_node].has_cpus:
        return affinity_node
    return None
