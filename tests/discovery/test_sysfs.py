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


def test_a_gpu_whose_numa_node_cannot_be_read_keeps_its_place_and_leaves_the_layout_unknown(
    build_machine: BuildMachineFixture,
) -> None:
    tree = build_machine(machines.two_socket_8gpu())
    (tree.sysfs / "bus/pci/devices/0000:43:00.0/numa_node").write_text("garbage\n")
    layout = discover(sysfs_only(tree))
    assert [p.device for p in layout.errors] == ["0000:43:00.0"]
    assert "cannot read numa_node" in layout.errors[0].message
    assert "garbage" in layout.errors[0].message
    assert [gpu.index for gpu in layout.gpus] == list(range(8))
    assert layout.gpus[1].pci_bus_id == "0000:43:00.0"
    assert layout.gpus[1].uuid == tree.machine.gpus[1].uuid  # what could be read still is
    assert [gpu.numa_node for gpu in layout.gpus] == [0, None, 0, 0, 1, 1, 1, 1]
    labels = node_labels(layout)
    assert labels["gpunuma.io/layout"] == "unknown"
    assert "gpunuma.io/numa-gpu-map" not in labels


def test_an_unreadable_numa_node_on_a_one_node_host_is_still_unknown_not_minus_one(
    build_machine: BuildMachineFixture,
) -> None:
    """-1 ("the firmware does not say") maps to the only CPU node; a failed read is not -1."""
    tree = build_machine(machines.vm_single_node())
    path = tree.sysfs / f"bus/pci/devices/{tree.machine.gpus[0].bdf}/numa_node"
    path.unlink()
    path.mkdir()  # reading it fails with IsADirectoryError, as a broken attribute would
    layout = discover(sysfs_only(tree))
    assert [gpu.numa_node for gpu in layout.gpus] == [None]
    assert layout.gpus[0].reported_numa_node == -1
    assert [p.device for p in layout.errors] == [tree.machine.gpus[0].bdf]


@pytest.mark.parametrize("broken", ["vendor", "class"])
def test_a_gpu_whose_vendor_or_class_file_cannot_be_read_is_not_dropped_silently(
    build_machine: BuildMachineFixture, broken: str
) -> None:
    machine = machines.two_socket_8gpu()
    tree = build_machine(machine)
    device = tree.sysfs / "bus/pci/devices/0000:52:00.0"
    (device / broken).unlink()
    (device / broken).mkdir()  # reading it fails (IsADirectoryError), as a broken attribute does
    (device / "uevent").write_text(
        "DRIVER=nvidia\nPCI_CLASS=30200\nPCI_ID=10DE:2330\nPCI_SLOT_NAME=0000:52:00.0\n"
    )
    layout = discover(sysfs_only(tree))
    # uevent says the same: the GPU is found as if nothing had failed, and the fault is reported.
    assert [gpu.pci_bus_id for gpu in layout.gpus] == [f.bdf for f in machine.gpus]
    assert [gpu.numa_node for gpu in layout.gpus] == [0, 0, 0, 0, 1, 1, 1, 1]
    assert [p.device for p in layout.errors] == ["0000:52:00.0"]
    assert f"cannot read {broken}" in layout.errors[0].message

    (device / "uevent").unlink()
    layout = discover(sysfs_only(tree))
    assert [gpu.index for gpu in layout.gpus] == list(range(8))
    assert layout.gpus[2].pci_bus_id == "0000:52:00.0"
    assert [p.device for p in layout.errors] == ["0000:52:00.0"]
    assert f"cannot read {broken}" in layout.errors[0].message
    if broken == "class":
        # A GPU vendor's function of unknown class: kept in its place, node unknown.
        assert layout.gpus[2].numa_node is None
        assert node_labels(layout)["gpunuma.io/layout"] == "unknown"
    else:
        # The bound driver (nvidia) still tells the vendor; class and numa_node are readable.
        assert layout.gpus[2].numa_node == 0

    (device / "driver").unlink()
    if broken == "vendor":
        # Nothing says it is a GPU at all: named in errors, never silently lost.
        layout = discover(sysfs_only(tree))
        assert "0000:52:00.0" not in [gpu.pci_bus_id for gpu in layout.gpus]
        assert [p.device for p in layout.errors] == ["0000:52:00.0"]
        assert "cannot tell whether it is a GPU" in layout.errors[0].message


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
