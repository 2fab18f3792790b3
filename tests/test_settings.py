"""Pieces of the settings tree that the agent and the webhook share."""

from __future__ import annotations

import pytest

from gpunuma.settings import DEFAULT_GPU_RESOURCES, gpu_resource_pattern


@pytest.mark.parametrize(
    ("resource", "expected"),
    [
        ("nvidia.com/gpu", True),
        ("nvidia.com/mig-1g.10gb", True),
        ("amd.com/gpu", True),
        ("nvidia.com/gpu.shared", False),  # globs match the whole name
        ("NVIDIA.COM/GPU", False),  # resource names are case-sensitive
        ("rdma/hca_shared_devices_a", False),
    ],
)
def test_the_default_gpu_resources_match_whole_names(resource: str, expected: bool) -> None:
    assert (gpu_resource_pattern(DEFAULT_GPU_RESOURCES).match(resource) is not None) is expected


def test_no_globs_match_nothing() -> None:
    assert gpu_resource_pattern(()).match("nvidia.com/gpu") is None
    assert gpu_resource_pattern(()).match("") is None
