"""gpunuma.topology.visible: CUDA's rule for the *_VISIBLE_DEVICES variables, in Python.

numa-exec's C copy is held to the same answers by tests/launcher/test_same_rule_as_python.py; these
are the cases of the rule itself, readable without a launcher build.
"""

from __future__ import annotations

import pytest

from gpunuma.topology.visible import VisibleGpu, select_visible

GPUS = [VisibleGpu(f"0000:{i:02x}:00.0", "nvidia", f"GPU-{i:08x}-1111", "H100") for i in range(8)]


def chosen(env: dict[str, str], gpus: list[VisibleGpu] = GPUS) -> list[int]:
    return [int(gpu.bus_id[5:7], 16) for gpu in select_visible(gpus, env).gpus]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("7,1", [7, 1]),  # the application's order, not the bus's
        ("7,1,-1", [7, 1]),  # CUDA: an invalid entry ends the list
        ("7,1,", [7, 1]),  # a trailing comma is an empty, invalid entry
        ("7,1,-1,0", [7, 1]),
        ("3,9,2", [3]),  # an index past the end is invalid
        ("4,2,4", [4, 2]),  # so is a repeat
        ("GPU-00000005,GPU-0000000", [5]),  # an ambiguous prefix is invalid
        ("-1", []),
        ("", []),
        ("  ", []),
    ],
)
def test_cuda_visible_devices_follows_cudas_rule(value: str, expected: list[int]) -> None:
    assert chosen({"CUDA_VISIBLE_DEVICES": value}) == expected


def test_a_variable_that_hides_every_gpu_says_so() -> None:
    selection = select_visible(GPUS, {"CUDA_VISIBLE_DEVICES": "-1"})

    assert selection.gpus == ()
    assert selection.hidden is not None
    assert "CUDA_VISIBLE_DEVICES entry 1 ('-1') is invalid" in selection.hidden


def test_the_rank_is_device_k_of_the_application() -> None:
    env = {"GPUNUMA_RANK_ENV": "LOCAL_RANK", "LOCAL_RANK": "0", "CUDA_VISIBLE_DEVICES": "7,1,"}

    assert chosen(env) == [7]


def test_a_mig_device_narrows_nothing_and_drops_the_rank() -> None:
    env = {"CUDA_VISIBLE_DEVICES": "MIG-4a1f5e2b", "GPUNUMA_RANK_ENV": "R", "R": "1"}

    selection = select_visible(GPUS[:2], env)

    assert [gpu.bus_id for gpu in selection.gpus] == [GPUS[0].bus_id, GPUS[1].bus_id]
    assert any("not applied" in note for note in selection.notes)


def test_indices_among_different_models_narrow_nothing_unless_in_bus_order() -> None:
    mixed = [GPUS[0], VisibleGpu("0000:01:00.0", "nvidia", "GPU-x", "L40S")]

    assert chosen({"CUDA_VISIBLE_DEVICES": "1"}, mixed) == [0, 1]
    assert chosen({"CUDA_VISIBLE_DEVICES": "1", "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}, mixed) == [1]


def test_nvidia_visible_devices_is_a_set_in_bus_order_and_unmatched_means_no_narrowing() -> None:
    assert chosen({"NVIDIA_VISIBLE_DEVICES": "6,2"}) == [2, 6]
    assert chosen({"NVIDIA_VISIBLE_DEVICES": "all"}) == list(range(8))
    assert chosen({"NVIDIA_VISIBLE_DEVICES": "5,9"}) == list(range(8))


def test_amd_partitions_of_one_gpu_are_distinct_devices() -> None:
    parts = [VisibleGpu("0000:83:00.0", "amd", "GPU-5c2b", "MI300X") for _ in range(2)]

    assert len(select_visible(parts, {"ROCR_VISIBLE_DEVICES": "1,0"}).gpus) == 2
    assert len(select_visible(parts, {"HIP_VISIBLE_DEVICES": "0,0"}).gpus) == 1
