"""The layout model: bus ids, the NUMA mapping rules of DESIGN §5, and the layout document."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from gpunuma.topology import (
    Gpu,
    Layout,
    LayoutDocumentError,
    MigDevice,
    NumaNode,
    Partition,
    Problem,
    node_for_cpus,
    normalize_pci_bus_id,
    resolve_cpu_node,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("00000000:1B:00.0", "0000:1b:00.0"),
        ("0000:1b:00.0", "0000:1b:00.0"),
        ("1b:00.0", "0000:1b:00.0"),
        ("10000:E0:1F.7", "10000:e0:1f.7"),
        (" 0009:01:00.0\n", "0009:01:00.0"),
    ],
)
def test_bus_ids_are_normalised_to_the_sysfs_form(text: str, expected: str) -> None:
    assert normalize_pci_bus_id(text) == expected


@pytest.mark.parametrize("text", ["", "GPU-1234", "0000:1b:00", "0000:1b:00.8", "zz:00.0"])
def test_things_that_are_not_bus_ids_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="not a PCI bus id"):
        normalize_pci_bus_id(text)


def two_sockets() -> list[NumaNode]:
    return [
        NumaNode(0, frozenset(range(0, 8)), 1000, (10, 21)),
        NumaNode(1, frozenset(range(8, 16)), 1000, (21, 10)),
    ]


def grace_with_gpu_memory() -> list[NumaNode]:
    """Two CPU nodes and four memory-only nodes, as on a GB200-like host."""
    return [
        NumaNode(0, frozenset(range(72)), None, (10, 40, 80, 80, 120, 120)),
        NumaNode(1, frozenset(range(72, 144)), None, (40, 10, 120, 120, 80, 80)),
        NumaNode(2, frozenset(), None, (80, 120, 10, 40, 120, 120)),
        NumaNode(3, frozenset(), None, (80, 120, 40, 10, 120, 120)),
        NumaNode(4, frozenset(), None, (120, 80, 120, 120, 10, 40)),
        NumaNode(5, frozenset(), None, (100, 100, 120, 120, 40, 10)),
    ]


def test_a_cpu_bearing_node_is_used_as_reported() -> None:
    assert resolve_cpu_node(1, two_sockets()) == 1


@pytest.mark.parametrize(("reported", "expected"), [(2, 0), (3, 0), (4, 1)])
def test_a_memory_only_node_maps_to_the_nearest_cpu_node(reported: int, expected: int) -> None:
    assert resolve_cpu_node(reported, grace_with_gpu_memory()) == expected


def test_a_memory_only_node_equally_far_from_two_cpu_nodes_maps_to_the_lower_id() -> None:
    assert resolve_cpu_node(5, grace_with_gpu_memory()) == 0


def test_an_unknown_node_maps_to_the_only_cpu_node() -> None:
    nodes = [NumaNode(0, frozenset({0, 1}), None, (10, 80)), NumaNode(1, frozenset(), None, (80, 10))]
    assert resolve_cpu_node(-1, nodes) == 0


def test_an_unknown_node_on_two_sockets_stays_unknown_without_affinity() -> None:
    assert resolve_cpu_node(-1, two_sockets()) is None


def test_an_unknown_node_on_two_sockets_follows_the_cpu_affinity_node() -> None:
    assert resolve_cpu_node(-1, two_sockets(), affinity_node=1) == 1


def test_an_affinity_node_without_cpus_is_not_trusted() -> None:
    assert resolve_cpu_node(-1, grace_with_gpu_memory(), affinity_node=3) is None


def test_a_node_that_is_not_online_is_treated_as_unknown() -> None:
    assert resolve_cpu_node(7, two_sockets()) is None
    assert resolve_cpu_node(7, two_sockets()[:1]) == 0


def test_a_memory_only_node_without_distances_falls_back_to_the_only_cpu_node() -> None:
    nodes = [NumaNode(0, frozenset({0}), None, ()), NumaNode(1, frozenset(), None, ())]
    assert resolve_cpu_node(1, nodes) == 0


@pytest.mark.parametrize(
    ("cpus", "expected"),
    [({0, 3}, 0), (set(range(8, 16)), 1), ({7, 8}, None), (set(), None), ({99}, None)],
)
def test_a_cpu_affinity_names_a_node_only_when_it_touches_exactly_one(
    cpus: set[int], expected: int | None
) -> None:
    assert node_for_cpus(cpus, two_sockets()) == expected


def sample_layout() -> Layout:
    return Layout(
        numa_nodes=(
            NumaNode(0, frozenset(range(0, 4)), 2048, (10, 21)),
            NumaNode(1, frozenset(), 96000, (21, 10)),
        ),
        gpus=(
            Gpu(index=0, vendor="nvidia", pci_bus_id="0009:01:00.0", model="NVIDIA GH200 480GB",
                uuid="GPU-1", minor=0, numa_node=0, reported_numa_node=1,
                mig_devices=(MigDevice("MIG-a"), MigDevice("MIG-b"))),
            Gpu(index=0, vendor="amd", pci_bus_id="0000:c1:00.0", render_node="renderD128",
                numa_node=0, reported_numa_node=-1,
                partitions=(Partition("amdgpu_xcp_0", "renderD129"),)),
        ),
        source="mixed",
        errors=(Problem("0000:c2:00.0", "nvml", "GPU is lost"), Problem(None, "amdsmi", "missing")),
    )


def test_a_layout_survives_the_round_trip_through_its_document() -> None:
    layout = sample_layout()
    assert Layout.from_document(layout.to_document()) == layout


def test_the_document_has_the_shape_of_design_section_4() -> None:
    document = sample_layout().to_document()
    assert document["numaNodes"][0] == {"id": 0, "cpus": "0-3", "memoryMiB": 2048, "distances": [10, 21]}
    assert document["numaNodes"][1]["cpus"] == ""
    gpu = document["gpus"][0]
    assert set(gpu) == {
        "index", "vendor", "model", "uuid", "pciBusId", "minor", "renderNode", "numaNode",
        "reportedNumaNode", "migDevices", "partitions",
    }
    assert gpu["migDevices"] == [{"uuid": "MIG-a"}, {"uuid": "MIG-b"}]
    assert document["errors"][1] == {"device": None, "source": "amdsmi", "message": "missing"}


def broken(path: str, value: Any) -> dict[str, Any]:
    """The sample document with the value at a dotted path replaced (or removed, for ...)."""
    document = copy.deepcopy(sample_layout().to_document())
    *parents, last = path.split(".")
    target: Any = document
    for part in parents:
        target = target[int(part)] if part.isdecimal() else target[part]
    if value is ...:
        del target[last]
    else:
        target[int(last) if last.isdecimal() else last] = value
    return document


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        ("numaNodes", ..., "numaNodes: required"),
        ("gpus", {"a": 1}, "gpus: expected an array, got an object"),
        ("gpus.0.index", "0", "gpus[0].index: expected an integer, got string '0'"),
        ("gpus.0.index", True, "gpus[0].index: expected an integer, got boolean true"),
        ("gpus.1.vendor", "intel", "gpus[1].vendor: expected one of"),
        ("gpus.0.pciBusId", "GPU-1", "gpus[0].pciBusId: 'GPU-1' is not a PCI bus id"),
        ("gpus.0.numaNode", -1, "gpus[0].numaNode: must be ≥ 0"),
        ("numaNodes.0.cpus", "0-x", "numaNodes[0].cpus: cpulist"),
        ("numaNodes.0.distances", [10], "numaNodes[0].distances: expected 2 entries"),
        ("numaNodes.1.id", 0, "ids must be unique and ascending"),
        ("gpus.0.migDevices.0", "MIG-a", "gpus[0].migDevices[0]: expected an object"),
        ("errors.0.message", ..., "errors[0].message: required"),
    ],
)
def test_a_bad_document_names_the_first_bad_field(path: str, value: Any, message: str) -> None:
    with pytest.raises(LayoutDocumentError) as caught:
        Layout.from_document(broken(path, value))
    assert message in str(caught.value)


def test_a_document_that_is_not_an_object_is_refused() -> None:
    with pytest.raises(LayoutDocumentError, match="expected an object, got an array"):
        Layout.from_document([])  # type: ignore[arg-type]


def test_gpus_per_cpu_node_counts_zeros_and_skips_memory_only_nodes() -> None:
    layout = sample_layout()
    assert layout.gpus_per_cpu_node() == {0: 2}
    assert [node.id for node in layout.cpu_nodes] == [0]


def _hostile(nodes: int, cpus: str) -> dict[str, Any]:
    return {"numaNodes": [{"id": i, "cpus": cpus, "memoryMiB": 1, "distances": []}
                          for i in range(nodes)], "gpus": [], "source": "sysfs", "errors": []}


@pytest.mark.parametrize(
    ("document", "message"),
    [
        # The review's 6.8 KiB layout: 100 nodes of 0-65535 peaked at 691 MiB in the operator.
        (_hostile(100, "0-65535"), "65535"),
        (_hostile(100, "0-8191"), "819200 CPUs in all"),
        (_hostile(1025, ""), "1025 nodes"),
    ],
)
def test_a_layout_larger_than_a_real_machine_is_refused(document: dict[str, Any],
                                                        message: str) -> None:
    with pytest.raises(LayoutDocumentError, match="Linux machine") as caught:
        Layout.from_document(document)
    assert message in str(caught.value)
