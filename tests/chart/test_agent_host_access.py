"""The agent sees only what it needs of the host's /proc (issue #16, item 5).

The agent runs as root; with the host's whole /proc it could read the status, command line and —
where permissions allow — environment and memory maps of every process on the node. The observed
binding needs the processes' status, so the whole /proc is the default; ``agent.hostProc: driver``
mounts only /proc/driver (the NVIDIA driver's per-GPU files) and /proc/meminfo. These tests show
that is enough for discovery: over exactly those two paths it gives the document it gives over the
whole tree, for every fixture machine.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from gpunuma.discovery import discover
from gpunuma.settings import DiscoverySettings
from tests.chart.render import load_chart, render
from tests.fixtures import machines


def host_proc_mounts(values: dict[str, object]) -> dict[str, str]:
    """mountPath → host path of the agent's mounts from the host's /proc."""
    spec = render(load_chart(), values).pod_spec("agent")
    host_paths = {v["name"]: v["hostPath"]["path"] for v in spec["volumes"] if "hostPath" in v}
    return {m["mountPath"]: host_paths[m["name"]] for m in spec["containers"][0]["volumeMounts"]
            if m["name"] in host_paths and host_paths[m["name"]].startswith("/proc")}


DRIVER_ONLY = {"agent": {"hostProc": "driver"}}


def test_with_host_proc_driver_the_agent_mounts_only_proc_driver_and_meminfo() -> None:
    assert host_proc_mounts(DRIVER_ONLY) == {"/host/proc/driver": "/proc/driver",
                                             "/host/proc/meminfo": "/proc/meminfo"}


def test_by_default_the_whole_proc_read_only_for_the_observed_binding() -> None:
    assert host_proc_mounts({}) == {"/host/proc": "/proc"}
    assert host_proc_mounts({"agent": {"hostProc": "all"}}) == {"/host/proc": "/proc"}


@pytest.mark.parametrize("shape", sorted(machines.SHAPES))
def test_discovery_needs_nothing_else_of_proc(shape: str, tmp_path: Path) -> None:
    tree = machines.build(machines.SHAPES[shape](), tmp_path / "full")
    narrow = tmp_path / "narrow-proc"
    narrow.mkdir()
    for mount in host_proc_mounts(DRIVER_ONLY):
        relative = Path(mount).relative_to("/host/proc")
        source = tree.procfs / relative
        if source.is_dir():
            shutil.copytree(source, narrow / relative)
        elif source.exists():
            shutil.copy(source, narrow / relative)
    full = discover(DiscoverySettings(sysfs_root=tree.sysfs, procfs_root=tree.procfs,
                                      backend="sysfs"))
    reduced = discover(DiscoverySettings(sysfs_root=tree.sysfs, procfs_root=narrow,
                                         backend="sysfs"))
    assert reduced.to_document() == full.to_document()
