"""`gpunuma inspect --backend sysfs --output json` on every machine shape: bus id → NUMA node, labels.

These run the real command in a subprocess, as a user would, against fixture trees written the way
the kernel lays out sysfs (symlinks included).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from gpunuma import names
from tests.conftest import BuildMachineFixture as BuildMachine
from tests.fixtures import machines


def inspect(tree: machines.Tree, *extra: str, output: str = "json") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gpunuma", "inspect", "--sysfs-root", str(tree.sysfs),
         "--procfs-root", str(tree.procfs), "--backend", "sysfs", "--output", output, *extra],
        capture_output=True, text=True, check=False, timeout=60,
    )


def inspect_json(tree: machines.Tree) -> dict[str, Any]:
    result = inspect(tree)
    assert result.returncode == 0, result.stderr
    document: dict[str, Any] = json.loads(result.stdout)
    return document


EXPECTED: dict[str, tuple[dict[str, int | None], dict[str, str]]] = {
    "two_socket_8gpu": (
        {"0000:1b:00.0": 0, "0000:43:00.0": 0, "0000:52:00.0": 0, "0000:61:00.0": 0,
         "0000:9d:00.0": 1, "0000:c3:00.0": 1, "0000:d1:00.0": 1, "0000:df:00.0": 1},
        {names.LABEL_LAYOUT: "4-4", names.LABEL_NUMA_GPU_MAP: "0-0.1.2.3_1-4.5.6.7",
         names.LABEL_GPU_COUNT: "8", names.LABEL_NUMA_COUNT: "2", names.LABEL_GPU_NUMA_COUNT: "2",
         names.LABEL_MAX_GPUS_PER_NUMA: "4", names.LABEL_VENDOR: "nvidia", names.LABEL_SOURCE: "sysfs"},
    ),
    "epyc_nps4_8node": (
        {"0000:01:00.0": 3, "0000:02:00.0": 3, "0000:41:00.0": 1, "0000:42:00.0": 1,
         "0000:81:00.0": 7, "0000:82:00.0": 7, "0000:c1:00.0": 5, "0000:c2:00.0": 5},
        {names.LABEL_LAYOUT: "0-2-0-2-0-2-0-2", names.LABEL_NUMA_GPU_MAP: "1-2.3_3-0.1_5-6.7_7-4.5",
         names.LABEL_NUMA_COUNT: "8", names.LABEL_GPU_NUMA_COUNT: "4",
         names.LABEL_MAX_GPUS_PER_NUMA: "2"},
    ),
    "gh200_like": (
        {"0009:01:00.0": 0},
        {names.LABEL_LAYOUT: "1", names.LABEL_NUMA_COUNT: "1", names.LABEL_NUMA_GPU_MAP: "0-0"},
    ),
    "gb200_like": (
        {"0008:01:00.0": 0, "0009:01:00.0": 0, "0018:01:00.0": 1, "0019:01:00.0": 1},
        {names.LABEL_LAYOUT: "2-2", names.LABEL_NUMA_COUNT: "2", names.LABEL_NUMA_GPU_MAP: "0-0.1_1-2.3"},
    ),
    "vm_single_node": (
        {"0000:00:1e.0": 0},
        {names.LABEL_LAYOUT: "1", names.LABEL_NUMA_GPU_MAP: "0-0"},
    ),
    "vm_two_node": (
        {"0000:00:04.0": None, "0000:00:05.0": None},
        {names.LABEL_LAYOUT: "unknown", names.LABEL_GPU_NUMA_COUNT: "0", names.LABEL_GPU_COUNT: "2"},
    ),
    "workstation": (
        {"0000:01:00.0": 0},
        {names.LABEL_LAYOUT: "1", names.LABEL_GPU_COUNT: "1"},
    ),
    "amd_mi300x_cpx": (
        {"0000:05:00.0": 0, "0000:26:00.0": 0, "0000:46:00.0": 0, "0000:65:00.0": 0,
         "0000:85:00.0": 1, "0000:a6:00.0": 1, "0000:c6:00.0": 1, "0000:e5:00.0": 1},
        {names.LABEL_LAYOUT: "4-4", names.LABEL_VENDOR: "amd", names.LABEL_GPU_COUNT: "8"},
    ),
    "amd_two_gpu": (
        {"0000:03:00.0": 0, "0000:83:00.0": 1},
        {names.LABEL_LAYOUT: "1-1", names.LABEL_VENDOR: "amd"},
    ),
    "cpu_only": (
        {},
        {names.LABEL_GPU_COUNT: "0", names.LABEL_LAYOUT: "0-0", names.LABEL_NUMA_COUNT: "2"},
    ),
}


@pytest.mark.parametrize("shape", sorted(EXPECTED))
def test_every_machine_shape_gives_the_right_numa_map_and_labels(
    shape: str, build_machine: BuildMachine
) -> None:
    document = inspect_json(build_machine(machines.SHAPES[shape]()))
    numa_map, labels = EXPECTED[shape]
    assert {gpu["pciBusId"]: gpu["numaNode"] for gpu in document["gpus"]} == numa_map
    assert {key: document["labels"][key] for key in labels} == labels
    if names.LABEL_LAYOUT in labels and labels[names.LABEL_LAYOUT] == "unknown":
        assert names.LABEL_NUMA_GPU_MAP not in document["labels"]
    assert document["errors"] == []


def test_audio_functions_nvswitches_and_nics_are_not_gpus(build_machine: BuildMachine) -> None:
    tree = build_machine(machines.two_socket_8gpu())
    bus_ids = [gpu["pciBusId"] for gpu in inspect_json(tree)["gpus"]]
    assert not {"0000:05:00.0", "0000:06:00.0", "0000:1a:00.0"} & set(bus_ids)
    assert [gpu["pciBusId"] for gpu in inspect_json(build_machine(machines.workstation()))["gpus"]] \
        == ["0000:01:00.0"]


def test_nvidia_identity_comes_from_the_drivers_procfs_file(build_machine: BuildMachine) -> None:
    machine = machines.two_socket_8gpu()
    document = inspect_json(build_machine(machine))
    expected = {f.bdf: (f.uuid, f.minor, f.model) for f in machine.gpus}
    assert {g["pciBusId"]: (g["uuid"], g["minor"], g["model"]) for g in document["gpus"]} == expected
    assert [g["index"] for g in document["gpus"]] == list(range(8))


def test_memory_only_nodes_are_listed_with_no_cpus_and_gpus_report_their_memory_node(
    build_machine: BuildMachine,
) -> None:
    document = inspect_json(build_machine(machines.gb200_like()))
    assert [node["cpus"] for node in document["numaNodes"]] == ["0-71", "72-143", "", "", "", ""]
    assert [gpu["reportedNumaNode"] for gpu in document["gpus"]] == [2, 3, 4, 5]
    assert document["numaNodes"][2]["distances"] == [80, 120, 10, 40, 120, 120]


def test_amd_partitions_hang_off_their_physical_gpu(build_machine: BuildMachine) -> None:
    machine = machines.amd_mi300x_cpx()
    document = inspect_json(build_machine(machine))
    assert len(document["gpus"]) == 8
    for gpu, function in zip(document["gpus"], machine.gpus, strict=True):
        assert gpu["renderNode"] == f"renderD{function.render_minor}"
        assert gpu["partitions"] == [
            {"id": f"amdgpu_xcp_{xcp}", "renderNode": f"renderD{minor}"}
            for xcp, minor in function.partitions
        ]
        assert gpu["uuid"] == function.uuid
        assert gpu["model"] == "AMD Instinct MI300X"


def test_a_machine_without_gpus_says_so_plainly_and_still_shows_its_nodes(
    build_machine: BuildMachine,
) -> None:
    result = inspect(build_machine(machines.cpu_only()), output="table")
    assert result.returncode == 0
    assert "No GPUs found on this machine" in result.stdout
    assert "0-15" in result.stdout
    assert "16-31" in result.stdout


def test_the_table_shows_nodes_gpus_and_labels(build_machine: BuildMachine) -> None:
    result = inspect(build_machine(machines.gh200_like()), output="table")
    assert result.returncode == 0, result.stderr
    assert "NVIDIA GH200 480GB" in result.stdout
    assert "0009:01:00.0" in result.stdout
    assert "0 (reported 1)" in result.stdout
    assert "(none: memory only)" in result.stdout
    assert "gpunuma.io/layout=1" in result.stdout


def test_labels_output_is_sorted_key_value_lines(build_machine: BuildMachine) -> None:
    result = inspect(build_machine(machines.two_socket_8gpu()), output="labels")
    lines = result.stdout.splitlines()
    assert lines == sorted(lines)
    assert "gpunuma.io/layout=4-4" in lines
    assert all(line.startswith("gpunuma.io/") and "=" in line for line in lines)


@pytest.mark.parametrize("which", ["--sysfs-root", "--procfs-root"])
def test_a_missing_root_is_one_line_on_stderr_and_exit_2(which: str, tmp_path: Path,
                                                         build_machine: BuildMachine) -> None:
    tree = build_machine(machines.vm_single_node())
    result = inspect(tree, which, str(tmp_path / "nowhere"))
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1
    assert f"{which} {tmp_path / 'nowhere'}: no such directory" in result.stderr


def test_a_directory_that_is_not_sysfs_is_refused(tmp_path: Path, build_machine: BuildMachine) -> None:
    tree = build_machine(machines.vm_single_node())
    result = inspect(tree, "--sysfs-root", str(tmp_path))
    assert result.returncode == 2
    assert "does not look like sysfs" in result.stderr


def test_an_unknown_output_format_is_an_argparse_error(build_machine: BuildMachine) -> None:
    result = inspect(build_machine(machines.vm_single_node()), output="yaml")
    assert result.returncode == 2
    assert "invalid choice: 'yaml'" in result.stderr
