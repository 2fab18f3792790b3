"""The sysfs backend on damaged trees, kernels without NUMA, and this machine's own /sys."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from gpunuma.discovery import HostRoots, discover
from gpunuma.settings import DiscoverySettings
from gpunuma.topology import node_labels, parse_cpulist
from tests.conftest import BuildMachineFixture
from tests.fixtures import machines


def sysfs_only(tree: machines.Tree) -> DiscoverySettings:
    return DiscoverySettings(sysfs_root=tree.sysfs, procfs_root=tree.procfs, backend="sysfs")


def test_one_unreadable_gpu_is_an_error_entry_and_the_others_are_still_reported(
    build_machine: BuildMachineFixture,
) -> None:
    tree = build_machine(machines.two_socket_8gpu())
    (tree.sysfs / "bus/pci/devices/0000:43:00.0/numa_node").write_text("garbage\n")
    layout = discover(sysfs_only(tree))
    assert [p.device for p in layout.errors] == ["0000:43:00.0"]
    assert "garbage" in layout.errors[0].message
    assert len(layout.gpus) == 7
    assert "0000:43:00.0" not in {gpu.pci_bus_id for gpu in layout.gpus}


def test_a_distance_row_of_the_wrong_length_is_dropped_and_reported(
    build_machine: BuildMachineFixture,
) -> None:
    tree = build_machine(machines.two_socket_8gpu())
    (tree.sysfs / "devices/system/node/node1/distance").write_text("21 10 30\n")
    layout = discover(sysfs_only(tree))
    assert layout.numa_nodes[1].distances == ()
    assert layout.numa_nodes[0].distances == (10, 21)
    assert any(p.device == "node1" and "3 entries for 2" in p.message for p in layout.errors)


def test_gpus_on_a_node_whose_cpus_cannot_be_read_are_unknown_not_moved_to_a_neighbour(
    build_machine: BuildMachineFixture,
) -> None:
    tree = build_machine(machines.two_socket_8gpu())
    (tree.sysfs / "devices/system/node/node1/cpulist").unlink()
    layout = discover(sysfs_only(tree))
    assert [gpu.numa_node for gpu in layout.gpus] == [0, 0, 0, 0, None, None, None, None]
    assert any(p.device == "node1" and "cpulist" in p.message for p in layout.errors)
    assert node_labels(layout)["gpunuma.io/layout"] == "unknown"


def test_a_kernel_without_numa_is_one_node_with_every_online_cpu(
    build_machine: BuildMachineFixture,
) -> None:
    tree = build_machine(machines.vm_single_node())
    shutil.rmtree(tree.sysfs / "devices/system/node")
    (tree.procfs / "meminfo").write_text("MemTotal:       32768000 kB\nMemFree: 1 kB\n")
    layout = discover(sysfs_only(tree))
    assert len(layout.numa_nodes) == 1
    assert layout.numa_nodes[0].cpus == frozenset(range(8))
    assert layout.numa_nodes[0].memory_mib == 32000
    assert layout.gpus[0].numa_node == 0


def test_nvidia_gpus_without_the_driver_are_still_found_by_their_pci_function(
    build_machine: BuildMachineFixture,
) -> None:
    tree = build_machine(machines.two_socket_8gpu())
    shutil.rmtree(tree.procfs / "driver")
    layout = discover(sysfs_only(tree))
    assert len(layout.gpus) == 8
    assert all(gpu.uuid is None and gpu.minor is None for gpu in layout.gpus)
    assert [gpu.numa_node for gpu in layout.gpus] == [0, 0, 0, 0, 1, 1, 1, 1]


def test_this_machines_own_sys_is_read_without_errors() -> None:
    layout = discover(DiscoverySettings(sysfs_root=Path("/sys"), procfs_root=Path("/proc"),
                                        backend="sysfs"))
    online = parse_cpulist(Path("/sys/devices/system/cpu/online").read_text())
    assert frozenset().union(*(node.cpus for node in layout.numa_nodes)) == online
    node_dir = Path("/sys/devices/system/node")
    if node_dir.is_dir():
        expected = sorted(int(p.name[4:]) for p in node_dir.glob("node[0-9]*"))
        assert [node.id for node in layout.numa_nodes] == expected
    assert all(gpu.pci_bus_id == gpu.pci_bus_id.lower() for gpu in layout.gpus)
    assert [p for p in layout.errors if p.source == "sysfs"] == []


def test_host_roots_must_exist_and_look_like_sysfs(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no such directory"):
        HostRoots.checked(tmp_path / "x", tmp_path)
    with pytest.raises(ValueError, match="does not look like sysfs"):
        HostRoots.checked(tmp_path, tmp_path)
