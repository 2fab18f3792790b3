"""NVML and amdsmi backends against fakes of their modules, merged with the sysfs view."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from gpunuma.discovery import (
    AmdSmiBackend,
    BackendUnavailable,
    DiscoveryUnavailable,
    NvmlBackend,
    VendorBackend,
    discover,
)
from gpunuma.settings import Backend, DiscoverySettings
from gpunuma.topology import Layout, MigDevice, node_labels
from tests.conftest import BuildMachineFixture
from tests.discovery import fakes
from tests.fixtures import machines


def run(tree: machines.Tree, backend: Backend = "auto", **vendor: VendorBackend) -> Layout:
    settings = DiscoverySettings(sysfs_root=tree.sysfs, procfs_root=tree.procfs, backend=backend)
    return discover(settings, vendor_backends=vendor)


def nvml(fake: fakes.FakeNvml) -> NvmlBackend:
    return NvmlBackend(module=fake.module())


def amdsmi(fake: fakes.FakeAmdSmi) -> AmdSmiBackend:
    return AmdSmiBackend(module=fake.module())


# NVML -------------------------------------------------------------------------------------------------


def test_nvml_describes_every_gpu_and_sysfs_decides_the_numa_node(
    build_machine: BuildMachineFixture,
) -> None:
    machine = machines.two_socket_8gpu()
    layout = run(build_machine(machine), nvml=nvml(fakes.nvml_for(machine)))
    assert layout.errors == ()
    assert [gpu.pci_bus_id for gpu in layout.gpus] == [f.bdf for f in machine.gpus]
    assert [gpu.uuid for gpu in layout.gpus] == [f.uuid for f in machine.gpus]
    assert [gpu.numa_node for gpu in layout.gpus] == [0, 0, 0, 0, 1, 1, 1, 1]
    # The firmware's numa_node decided every node: the source label says so (DESIGN §3).
    assert node_labels(layout)["gpunuma.io/source"] == "sysfs"


def test_nvmls_own_numa_node_id_is_never_asked_for(build_machine: BuildMachineFixture) -> None:
    machine = machines.gh200_like()
    fake = fakes.nvml_for(machine)
    layout = run(build_machine(machine), nvml=nvml(fake))
    assert "nvmlDeviceGetNumaNodeId" not in fake.calls
    assert layout.gpus[0].reported_numa_node == 1
    assert layout.gpus[0].numa_node == 0


def test_nvml_cpu_affinity_places_gpus_that_sysfs_leaves_at_minus_one(
    build_machine: BuildMachineFixture,
) -> None:
    sysfs_machine = machines.vm_two_node()
    # The hypervisor tells NVML which socket each GPU is near even though ACPI says nothing.
    nvml_view = sysfs_machine.with_numa_node("0000:00:04.0", 0).with_numa_node("0000:00:05.0", 1)
    layout = run(build_machine(sysfs_machine), nvml=nvml(fakes.nvml_for(nvml_view)))
    assert [gpu.reported_numa_node for gpu in layout.gpus] == [-1, -1]
    assert [gpu.numa_node for gpu in layout.gpus] == [0, 1]
    assert node_labels(layout)["gpunuma.io/layout"] == "1-1"
    assert node_labels(layout)["gpunuma.io/source"] == "nvml"


def test_an_affinity_spanning_both_sockets_leaves_the_node_unknown(
    build_machine: BuildMachineFixture,
) -> None:
    machine = machines.vm_two_node()
    layout = run(build_machine(machine),
                 nvml=nvml(fakes.nvml_for(machine, affinity_by_node=False)))
    assert [gpu.numa_node for gpu in layout.gpus] == [None, None]


def test_one_failing_device_is_an_error_entry_and_sysfs_still_reports_it(
    build_machine: BuildMachineFixture,
) -> None:
    machine = machines.two_socket_8gpu()
    fake = fakes.nvml_for(machine)
    fake.failures[("nvmlDeviceGetHandleByIndex", 3)] = fakes.NVMLError_GpuIsLost
    layout = run(build_machine(machine), nvml=nvml(fake))
    assert [(p.device, p.source) for p in layout.errors] == [("nvml device 3", "nvml")]
    assert "GPU is lost" in layout.errors[0].message
    assert len(layout.gpus) == 8
    lost = layout.gpus[3]
    assert (lost.pci_bus_id, lost.numa_node, lost.uuid) == ("0000:61:00.0", 0, machine.gpus[3].uuid)
    assert [gpu.index for gpu in layout.gpus] == list(range(8))


def test_not_supported_loses_one_fact_silently_and_other_errors_are_reported(
    build_machine: BuildMachineFixture,
) -> None:
    machine = machines.two_socket_8gpu()
    fake = fakes.nvml_for(machine)
    fake.failures[("nvmlDeviceGetCpuAffinity", 0)] = fakes.NVMLError_NotSupported
    fake.failures[("nvmlDeviceGetMigMode", 1)] = fakes.NVMLError_NotSupported
    fake.failures[("nvmlDeviceGetName", 2)] = fakes.NVMLError_Unknown
    layout = run(build_machine(machine), nvml=nvml(fake))
    assert [(p.device, p.message) for p in layout.errors] == [
        ("0000:52:00.0", "name: NVMLError_Unknown: Unknown Error"),
    ]
    assert layout.gpus[2].model == machine.gpus[2].model  # procfs still knows it


def test_mig_devices_are_listed_under_their_gpu(build_machine: BuildMachineFixture) -> None:
    machine = machines.two_socket_8gpu()
    fake = fakes.nvml_for(machine)
    fake.devices[5].mig_enabled = True
    fake.devices[5].mig_uuids = ["MIG-aaaa", None, "MIG-cccc"]
    layout = run(build_machine(machine), nvml=nvml(fake))
    assert layout.gpus[5].mig_devices == (MigDevice("MIG-aaaa"), MigDevice("MIG-cccc"))
    assert all(not gpu.mig_devices for i, gpu in enumerate(layout.gpus) if i != 5)
    assert layout.errors == ()


def test_a_uuid_disagreement_between_nvml_and_procfs_is_reported(
    build_machine: BuildMachineFixture,
) -> None:
    machine = machines.two_socket_8gpu()
    fake = fakes.nvml_for(machine)
    fake.devices[0].uuid = "GPU-ffffffff-0000-0000-0000-000000000000"
    layout = run(build_machine(machine), nvml=nvml(fake))
    assert layout.gpus[0].uuid == "GPU-ffffffff-0000-0000-0000-000000000000"
    assert [p.device for p in layout.errors] == ["0000:1b:00.0"]
    assert "uuid: sysfs says" in layout.errors[0].message


def test_a_gpu_nvml_sees_but_sysfs_does_not_is_kept_and_placed_by_its_cpu_affinity(
    build_machine: BuildMachineFixture,
) -> None:
    machine = machines.two_socket_8gpu()
    layout = run(build_machine(machine.without("0000:df:00.0")), nvml=nvml(fakes.nvml_for(machine)))
    hidden = layout.gpus[-1]
    assert (hidden.pci_bus_id, hidden.numa_node, hidden.reported_numa_node) == ("0000:df:00.0", 1, -1)
    assert any(p.device == "0000:df:00.0" and "not under bus/pci/devices" in p.message
               for p in layout.errors)


def test_a_gpu_only_nvml_sees_without_a_useful_affinity_has_an_unknown_node(
    build_machine: BuildMachineFixture,
) -> None:
    machine = machines.two_socket_8gpu()
    fake = fakes.nvml_for(machine, affinity_by_node=False)
    layout = run(build_machine(machine.without("0000:df:00.0")), nvml=nvml(fake))
    assert layout.gpus[-1].numa_node is None
    assert node_labels(layout)["gpunuma.io/layout"] == "unknown"


def test_auto_reports_a_missing_nvml_and_falls_back_to_sysfs(build_machine: BuildMachineFixture) -> None:
    machine = machines.two_socket_8gpu()
    fake = fakes.nvml_for(machine)
    fake.init_error = fakes.NVMLError_LibraryNotFound
    layout = run(build_machine(machine), nvml=nvml(fake))
    assert layout.source == "sysfs"
    assert len(layout.gpus) == 8
    assert [(p.device, p.source) for p in layout.errors] == [(None, "nvml")]
    assert "NVML Shared Library Not Found" in layout.errors[0].message


def test_naming_an_unavailable_backend_is_an_error(build_machine: BuildMachineFixture) -> None:
    machine = machines.two_socket_8gpu()
    fake = fakes.nvml_for(machine)
    fake.init_error = fakes.NVMLError_LibraryNotFound
    with pytest.raises(DiscoveryUnavailable, match="backend nvml is unavailable"):
        run(build_machine(machine), "nvml", nvml=nvml(fake))


def test_auto_does_not_load_a_vendor_library_for_gpus_the_node_does_not_have(
    build_machine: BuildMachineFixture,
) -> None:
    fake = fakes.nvml_for(machines.cpu_only())
    layout = run(build_machine(machines.cpu_only()), nvml=nvml(fake))
    assert fake.calls == []
    assert layout.errors == ()


def test_the_real_pynvml_without_a_driver_makes_the_backend_unavailable() -> None:
    """This machine has nvidia-ml-py installed but no libnvidia-ml.so: the real failure path."""
    pytest.importorskip("pynvml")
    if Path("/proc/driver/nvidia").exists():
        pytest.skip("this machine has an NVIDIA driver")
    with pytest.raises(BackendUnavailable, match="NVML cannot start"):
        NvmlBackend().collect(cpu_count=2)


# amdsmi -----------------------------------------------------------------------------------------------


def test_amdsmi_partitions_are_grouped_under_their_physical_gpu(
    build_machine: BuildMachineFixture,
) -> None:
    machine = machines.amd_mi300x_cpx()
    fake = fakes.amdsmi_for(machine)
    assert len(fake.handles) == 64
    layout = run(build_machine(machine), amdsmi=amdsmi(fake))
    assert layout.source == "sysfs"
    assert layout.errors == ()
    assert [gpu.uuid for gpu in layout.gpus] == [f.uuid for f in machine.gpus]
    assert len(layout.gpus) == 8
    assert [gpu.index for gpu in layout.gpus] == list(range(8))
    assert [gpu.render_node for gpu in layout.gpus] == [f"renderD{f.render_minor}" for f in machine.gpus]
    assert all(len(gpu.partitions) == 7 for gpu in layout.gpus)
    assert node_labels(layout)["gpunuma.io/layout"] == "4-4"


def test_one_failing_amd_device_is_an_error_and_the_others_are_reported(
    build_machine: BuildMachineFixture,
) -> None:
    machine = machines.amd_two_gpu()
    fake = fakes.amdsmi_for(machine)
    fake.failures[("amdsmi_get_gpu_device_uuid", 1)] = fakes.AmdSmiLibraryException
    fake.failures[("amdsmi_get_gpu_device_bdf", 0)] = fakes.AmdSmiLibraryException
    layout = run(build_machine(machine), amdsmi=amdsmi(fake))
    assert sorted((p.device, p.source) for p in layout.errors) == [
        ("0000:83:00.0", "amdsmi"), ("amdsmi device 0", "amdsmi"),
    ]
    assert [gpu.pci_bus_id for gpu in layout.gpus] == ["0000:03:00.0", "0000:83:00.0"]
    assert layout.gpus[1].uuid == machine.gpus[1].uuid  # sysfs's unique_id stands in


def test_an_amdsmi_failure_on_one_gpu_does_not_renumber_the_others(
    build_machine: BuildMachineFixture,
) -> None:
    """amdsmi numbered only the handles that answered, so the GPU after a failing one got index 0
    beside the failing GPU's own 0 (label ``numa-gpu-map=0-0_1-0``)."""
    machine = machines.amd_two_gpu()
    fake = fakes.amdsmi_for(machine)
    fake.failures[("amdsmi_get_gpu_device_bdf", 0)] = fakes.AmdSmiLibraryException
    layout = run(build_machine(machine), amdsmi=amdsmi(fake))
    assert [(gpu.pci_bus_id, gpu.index) for gpu in layout.gpus] == [
        ("0000:03:00.0", 0), ("0000:83:00.0", 1),
    ]
    assert [(p.device, p.source) for p in layout.errors] == [("amdsmi device 0", "amdsmi")]
    assert node_labels(layout)["gpunuma.io/numa-gpu-map"] == "0-0_1-1"


def test_when_amdsmi_places_a_gpu_reported_numa_node_is_still_the_firmwares_minus_one(
    build_machine: BuildMachineFixture,
) -> None:
    machine = machines.amd_two_gpu().with_numa_node("0000:83:00.0", -1)
    fake = fakes.amdsmi_for(machine)
    fake.handles[1]["numa"] = 1
    layout = run(build_machine(machine), amdsmi=amdsmi(fake))
    assert (layout.gpus[1].numa_node, layout.gpus[1].reported_numa_node) == (1, -1)
    assert layout.source == "amdsmi"
    assert layout.to_document()["gpus"][1]["reportedNumaNode"] == -1


def test_an_amdsmi_numa_node_that_contradicts_sysfs_is_reported_and_sysfs_wins(
    build_machine: BuildMachineFixture,
) -> None:
    machine = machines.amd_two_gpu()
    fake = fakes.amdsmi_for(machine)
    fake.handles[0]["numa"] = 1
    layout = run(build_machine(machine), amdsmi=amdsmi(fake))
    assert layout.gpus[0].numa_node == 0
    assert any("NUMA node: sysfs says 0, amdsmi says 1" in p.message for p in layout.errors)


def test_a_nvidia_and_amd_node_is_a_mixed_vendor(build_machine: BuildMachineFixture) -> None:
    nvidia, amd = machines.vm_single_node(), machines.amd_two_gpu()
    both = machines.Machine(nodes=amd.nodes, functions=nvidia.functions + amd.functions)
    layout = run(build_machine(both), nvml=nvml(fakes.nvml_for(both)), amdsmi=amdsmi(fakes.amdsmi_for(both)))
    assert node_labels(layout)["gpunuma.io/vendor"] == "mixed"
    # The NVIDIA GPU's numa_node is -1 and its affinity spans both sockets: nothing placed it.
    assert layout.gpus[0].numa_node is None
    assert layout.source == "sysfs"


def test_amdsmis_uuid_format_is_not_a_disagreement_and_sysfs_form_is_published(
    build_machine: BuildMachineFixture,
) -> None:
    machine = machines.amd_two_gpu()
    fake = fakes.amdsmi_for(machine)
    assert fake.handles[0]["uuid"].count("-") == 4  # amdsmi's own rendering
    layout = run(build_machine(machine), amdsmi=amdsmi(fake))
    assert [gpu.uuid for gpu in layout.gpus] == [f.uuid for f in machine.gpus]
    assert layout.errors == ()


def test_amdsmi_raising_keyerror_on_import_makes_the_backend_unavailable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``import amdsmi`` raises KeyError when ROCm's library is missing: a real import does that here."""
    package = tmp_path / "amdsmi"
    package.mkdir()
    (package / "__init__.py").write_text("import os\nos.environ['ROCM_PATH_THAT_IS_NOT_SET']\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "amdsmi", raising=False)
    with pytest.raises(BackendUnavailable, match="cannot import amdsmi: KeyError"):
        AmdSmiBackend().collect(cpu_count=2)


def test_an_amd_node_without_amdsmi_still_gets_its_layout_from_sysfs(
    build_machine: BuildMachineFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "amdsmi", None)  # what a missing package looks like to import
    layout = run(build_machine(machines.amd_two_gpu()), amdsmi=AmdSmiBackend())
    assert [gpu.numa_node for gpu in layout.gpus] == [0, 1]
    assert [(p.device, p.source) for p in layout.errors] == [(None, "amdsmi")]
