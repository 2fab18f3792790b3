"""Pod placement annotations from allocations: merged per container, canonical, patched on change."""

from __future__ import annotations

import json

import pytest

from gpunuma import names
from gpunuma.operator.placement import (
    AllocationError,
    annotation_patch,
    pod_annotations,
    pods_with_allocations,
)


def entry(container: str, resource: str, devices: list[str], nodes: list[int], cpus: str,
          pod: str = "train-0", namespace: str = "ml") -> dict[str, object]:
    return {"namespace": namespace, "pod": pod, "container": container, "resource": resource,
            "deviceIds": devices, "numaNodes": nodes, "cpus": cpus}


ALLOCATIONS = [
    entry("main", "nvidia.com/gpu", ["GPU-a", "GPU-b"], [0], "0-15"),
    entry("main", "nvidia.com/mig-1g.10gb", ["MIG-c"], [1], "32-47"),
    entry("sidecar", "nvidia.com/gpu", ["GPU-d"], [1], "32-33"),
    entry("other", "nvidia.com/gpu", ["GPU-e"], [0], "0-3", pod="someone-else"),
]


def test_entries_of_one_container_are_merged_and_the_pod_gets_the_unions() -> None:
    annotations = pod_annotations(ALLOCATIONS, "ml", "train-0")
    assert annotations is not None
    assert json.loads(annotations[names.ANNOTATION_PLACEMENT]) == {
        "main": {"gpus": ["GPU-a", "GPU-b", "MIG-c"], "numaNodes": [0, 1], "cpus": "0-15,32-47"},
        "sidecar": {"gpus": ["GPU-d"], "numaNodes": [1], "cpus": "32-33"},
    }
    assert annotations[names.ANNOTATION_NUMA_NODES] == "0,1"
    assert annotations[names.ANNOTATION_CPUSET] == "0-15,32-47"


def test_a_dra_claims_entry_places_its_container_like_a_device_plugins() -> None:
    """The agent's entry for a ResourceClaim (resource = the DRA driver, claim, pool/device ids)."""
    dra = {**entry("server", "gpu.nvidia.com", ["gpu-node-7/gpu-5"], [1], "100-101",
                   pod="vllm-dra"), "claim": "single-gpu"}
    annotations = pod_annotations([*ALLOCATIONS, dra], "ml", "vllm-dra")
    assert annotations is not None
    assert json.loads(annotations[names.ANNOTATION_PLACEMENT]) == {
        "server": {"gpus": ["gpu-node-7/gpu-5"], "numaNodes": [1], "cpus": "100-101"}}
    assert annotations[names.ANNOTATION_NUMA_NODES] == "1"


def test_the_placement_json_is_canonical_whatever_the_entry_order() -> None:
    forward = pod_annotations(ALLOCATIONS, "ml", "train-0")
    backward = pod_annotations(list(reversed(ALLOCATIONS[:3])), "ml", "train-0")
    assert forward is not None
    assert backward is not None
    assert forward[names.ANNOTATION_CPUSET] == backward[names.ANNOTATION_CPUSET]
    assert json.loads(forward[names.ANNOTATION_PLACEMENT])["sidecar"] == json.loads(
        backward[names.ANNOTATION_PLACEMENT])["sidecar"]
    assert " " not in forward[names.ANNOTATION_PLACEMENT]


def test_a_pod_without_an_allocation_gets_nothing() -> None:
    assert pod_annotations(ALLOCATIONS, "ml", "not-there") is None
    assert pod_annotations(None, "ml", "train-0") is None


def test_only_differing_annotations_are_patched_and_equal_ones_not_at_all() -> None:
    desired = pod_annotations(ALLOCATIONS, "ml", "train-0")
    assert desired is not None
    assert annotation_patch(desired, {**desired, "other": "x"}) is None
    changed = {**desired, names.ANNOTATION_CPUSET: "0-15"}
    assert annotation_patch(desired, changed) == {
        "metadata": {"annotations": {names.ANNOTATION_CPUSET: "0-15,32-47"}}
    }


def test_the_pods_listed_in_allocations_are_found() -> None:
    assert pods_with_allocations(ALLOCATIONS) == {("ml", "train-0"), ("ml", "someone-else")}


@pytest.mark.parametrize(("allocations", "message"), [
    ({"not": "a list"}, "spec.allocations: expected an array"),
    (["x"], r"spec.allocations\[0\]: expected an object"),
    ([{**entry("main", "r", ["a"], [0], "0"), "cpus": "3-1"}], r"\[0\].cpus: .*descending"),
    ([{**entry("main", "r", ["a"], [0], "0"), "numaNodes": ["0"]}], r"\[0\].numaNodes"),
    ([{**entry("main", "r", ["a"], [0], "0"), "container": ""}], r"\[0\].container"),
])
def test_a_malformed_allocation_is_named_by_its_path(allocations: object, message: str) -> None:
    with pytest.raises(AllocationError, match=message):
        pod_annotations(allocations, "ml", "train-0")
