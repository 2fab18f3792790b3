"""The pure model of a node's GPU↔NUMA layout: cpulists, NUMA nodes, GPUs, labels. No I/O."""

from gpunuma.topology.cpulist import MAX_CPUS, CpuListError, format_cpulist, parse_cpulist
from gpunuma.topology.labels import is_valid_label_value, node_labels
from gpunuma.topology.model import (
    MAX_NUMA_NODES,
    VENDORS,
    Gpu,
    Layout,
    LayoutDocumentError,
    MigDevice,
    NumaNode,
    Partition,
    Problem,
    Vendor,
    node_for_cpus,
    normalize_pci_bus_id,
    resolve_cpu_node,
)

__all__ = [
    "MAX_CPUS",
    "MAX_NUMA_NODES",
    "VENDORS",
    "CpuListError",
    "Gpu",
    "Layout",
    "LayoutDocumentError",
    "MigDevice",
    "NumaNode",
    "Partition",
    "Problem",
    "Vendor",
    "format_cpulist",
    "is_valid_label_value",
    "node_for_cpus",
    "node_labels",
    "normalize_pci_bus_id",
    "parse_cpulist",
    "resolve_cpu_node",
]
