"""Node labels projected from layouts (DESIGN §3)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from gpunuma import names
from gpunuma.topology import Gpu, Layout, NumaNode, Vendor, is_valid_label_value, node_labels


def nodes(*cpu_counts: int) -> tuple[NumaNode, ...]:
    start = 0
    result = []
    for node_id, count in enumerate(cpu_counts):
        result.append(NumaNode(node_id, frozenset(range(start, start + count))))
        start += count
    return tuple(result)


def gpus(*placement: int | None, vendor: Vendor = "nvidia") -> tuple[Gpu, ...]:
    return tuple(
        Gpu(index=i, vendor=vendor, pci_bus_id=f"0000:{i + 16:02x}:00.0", numa_node=node)
        for i, node in enumerate(placement)
    )


def test_an_eight_gpu_two_socket_node_gets_every_label() -> None:
    layout = Layout(nodes(112, 112), gpus(0, 0, 0, 0, 1, 1, 1, 1), source="nvml")
    assert node_labels(layout) == {
        names.LABEL_GPU_COUNT: "8",
        names.LABEL_NUMA_COUNT: "2",
        names.LABEL_GPU_NUMA_COUNT: "2",
        names.LABEL_MAX_GPUS_PER_NUMA: "4",
        names.LABEL_LAYOUT: "4-4",
        names.LABEL_NUMA_GPU_MAP: "0-0.1.2.3_1-4.5.6.7",
        names.LABEL_VENDOR: "nvidia",
        names.LABEL_SOURCE: "nvml",
    }


def test_gpus_on_every_other_node_of_eight_show_zeros_in_the_layout() -> None:
    layout = Layout(nodes(*[24] * 8), gpus(1, 1, 3, 3, 5, 5, 7, 7))
    labels = node_labels(layout)
    assert labels[names.LABEL_LAYOUT] == "0-2-0-2-0-2-0-2"
    assert labels[names.LABEL_GPU_NUMA_COUNT] == "4"
    assert labels[names.LABEL_MAX_GPUS_PER_NUMA] == "2"
    assert labels[names.LABEL_NUMA_GPU_MAP] == "1-0.1_3-2.3_5-4.5_7-6.7"


def test_map_indices_are_ascending_within_a_node_whatever_the_bus_order() -> None:
    shuffled = (
        Gpu(index=3, vendor="nvidia", pci_bus_id="0000:01:00.0", numa_node=1),
        Gpu(index=1, vendor="nvidia", pci_bus_id="0000:02:00.0", numa_node=1),
        Gpu(index=0, vendor="nvidia", pci_bus_id="0000:03:00.0", numa_node=0),
    )
    assert node_labels(Layout(nodes(4, 4), shuffled))[names.LABEL_NUMA_GPU_MAP] == "0-0_1-1.3"


def test_memory_only_nodes_are_not_counted_as_numa_nodes() -> None:
    layout = Layout((*nodes(72), NumaNode(1, frozenset()), NumaNode(2, frozenset())), gpus(0))
    labels = node_labels(layout)
    assert labels[names.LABEL_NUMA_COUNT] == "1"
    assert labels[names.LABEL_LAYOUT] == "1"


def test_a_gpu_of_unknown_node_makes_the_layout_unknown_and_drops_the_map() -> None:
    labels = node_labels(Layout(nodes(8, 8), gpus(0, None)))
    assert labels[names.LABEL_LAYOUT] == "unknown"
    assert names.LABEL_NUMA_GPU_MAP not in labels
    assert labels[names.LABEL_GPU_NUMA_COUNT] == "1"
    assert labels[names.LABEL_GPU_COUNT] == "2"


def test_a_map_longer_than_63_characters_is_left_out_not_cut() -> None:
    layout = Layout(nodes(8, 8), gpus(*([0] * 16 + [1] * 16)))
    labels = node_labels(layout)
    assert names.LABEL_NUMA_GPU_MAP not in labels
    assert labels[names.LABEL_LAYOUT] == "16-16"


def test_a_node_without_gpus_has_counts_but_no_vendor_or_map() -> None:
    labels = node_labels(Layout(nodes(16, 16)))
    assert labels == {
        names.LABEL_GPU_COUNT: "0",
        names.LABEL_NUMA_COUNT: "2",
        names.LABEL_GPU_NUMA_COUNT: "0",
        names.LABEL_MAX_GPUS_PER_NUMA: "0",
        names.LABEL_LAYOUT: "0-0",
        names.LABEL_SOURCE: "sysfs",
    }


def test_nvidia_and_amd_gpus_on_one_node_are_a_mixed_vendor() -> None:
    layout = Layout(nodes(8), gpus(0) + gpus(0, vendor="amd"))
    assert node_labels(layout)[names.LABEL_VENDOR] == "mixed"


def test_on_a_mixed_node_the_map_says_which_vendors_gpu_each_index_is() -> None:
    """NVIDIA's GPU 0 and AMD's GPU 0 are two GPUs: bare indices read ``0-0.0_1-1.1``."""
    layout = Layout(nodes(8, 8), gpus(0, 1) + gpus(1, 0, vendor="amd"))
    value = node_labels(layout)[names.LABEL_NUMA_GPU_MAP]
    assert value == "0-a1.n0_1-a0.n1"
    assert is_valid_label_value(value)
    one_vendor = Layout(nodes(8, 8), gpus(0, 1, vendor="amd"))
    assert node_labels(one_vendor)[names.LABEL_NUMA_GPU_MAP] == "0-0_1-1"


@given(
    st.lists(st.integers(min_value=0, max_value=64), min_size=1, max_size=40),
    st.lists(st.one_of(st.none(), st.integers(min_value=0, max_value=39)), max_size=72),
)
def test_every_label_value_is_a_valid_kubernetes_label_value(
    cpu_counts: list[int], placement: list[int | None]
) -> None:
    layout = Layout(nodes(*cpu_counts), gpus(*[p if p is None or p < len(cpu_counts) else None
                                                 for p in placement]))
    labels = node_labels(layout)
    assert all(is_valid_label_value(value) for value in labels.values())
    assert all(key.startswith(names.PREFIX) for key in labels)


def test_the_gpus_per_node_text_counts_every_cpu_node_or_says_unknown() -> None:
    assert Layout(nodes(8, 8, 8), gpus(0, 0, 2)).gpus_per_node_text() == "2-0-1"
    assert Layout(nodes(8, 8), gpus(0, None)).gpus_per_node_text() == "unknown"
    assert Layout(nodes(8), ()).gpus_per_node_text() == "0"


def test_a_layout_label_longer_than_63_characters_is_left_out() -> None:
    layout = Layout(nodes(*[2] * 33), gpus(*range(33)))
    assert len(layout.gpus_per_node_text()) == 65
    assert names.LABEL_LAYOUT not in node_labels(layout)
