"""cgroup names and layouts: cgroup v2 and v1 (hybrid), systemd and cgroupfs drivers, containerd
and CRI-O, as fixture trees; the binder on a v2 fixture tree with real processes' mounts."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from gpunuma.agent.binder import BindRequest, CgroupBinder
from gpunuma.agent.cgroupfs import CgroupGone, CpusetHierarchy, detect_hierarchy
from gpunuma.agent.cgroups import (
    ContainerRef,
    container_id_of_status,
    container_of_dirname,
    container_of_mountinfo,
    cpu_manager_policy,
    cpuset_plan,
    pod_uid_of_dirname,
)
from tests.agent.cgroupv1 import new_container_id, spawn_container_process

UID = "0f1e2d3c-4b5a-4968-8776-a5b4c3d2e1f0"
CID = "4f" * 32


@pytest.mark.parametrize(("name", "uid"), [
    (f"pod{UID}", UID),                                                    # cgroupfs
    (f"kubepods-burstable-pod{UID.replace('-', '_')}.slice", UID),         # systemd, burstable
    (f"kubepods-besteffort-pod{UID.replace('-', '_')}.slice", UID),        # systemd, besteffort
    (f"kubepods-pod{UID.replace('-', '_')}.slice", UID),                   # systemd, guaranteed
    ("kubepods-burstable.slice", None),
    ("burstable", None),
    (f"pod{UID}x", None),
])
def test_pod_directories_of_both_drivers(name: str, uid: str | None) -> None:
    assert pod_uid_of_dirname(name) == uid


@pytest.mark.parametrize(("name", "ref"), [
    (CID, ContainerRef("containerd", CID)),                                # containerd, cgroupfs
    (f"cri-containerd-{CID}.scope", ContainerRef("containerd", CID)),      # containerd, systemd
    (f"crio-{CID}.scope", ContainerRef("cri-o", CID)),                     # CRI-O, systemd
    (f"crio-{CID}", ContainerRef("cri-o", CID)),                           # CRI-O, cgroupfs
    (f"docker-{CID}.scope", ContainerRef("docker", CID)),                  # cri-dockerd, systemd
    (f"crio-conmon-{CID}.scope", None),                                    # CRI-O's monitor
    (f"{CID}.scope", None),
    ("cpuset.cpus", None),
])
def test_container_directories_of_both_runtimes(name: str, ref: ContainerRef | None) -> None:
    assert container_of_dirname(name) == ref


def test_container_ids_of_a_pod_status() -> None:
    assert container_id_of_status(f"containerd://{CID}") == CID
    assert container_id_of_status(f"cri-o://{CID}") == CID
    assert container_id_of_status("containerd://short") is None
    assert container_id_of_status("") is None


def test_the_container_is_named_by_its_termination_log_mount() -> None:
    kubelet_on_root = (
        f"1210 1190 259:2 /var/lib/kubelet/pods/{UID}/containers/vllm/7c0a9e2f "
        "/dev/termination-log rw,relatime - ext4 /dev/nvme0n1p2 rw\n")
    kubelet_own_fs = (
        f"812 790 259:5 /pods/{UID}/etc-hosts /etc/hosts rw - xfs /dev/sdb rw\n"
        f"813 790 259:5 /pods/{UID}/containers/triton/d41d8cd9 /dev/termination-log rw - xfs "
        "/dev/sdb rw\n")
    subpath = (f"900 790 259:5 /pods/{UID}/volume-subpaths/cfg/app/0 /etc/app rw - xfs "
               "/dev/sdb rw\n")
    assert container_of_mountinfo(kubelet_on_root) == (UID, "vllm")
    assert container_of_mountinfo(kubelet_own_fs) == (UID, "triton")
    assert container_of_mountinfo(subpath) is None
    assert container_of_mountinfo("") is None


def test_the_cpuset_plan_narrows_and_binds_memory_only_under_strict() -> None:
    local, allowed = frozenset(range(56, 112)), frozenset(range(0, 224))
    preferred = cpuset_plan(policy="preferred", local_cpus=local, allowed_cpus=allowed,
                            gpu_nodes=frozenset({1}), allowed_mems=frozenset({0, 1}))
    assert (preferred.cpus, preferred.mems) == (local, None)
    strict = cpuset_plan(policy="strict", local_cpus=local, allowed_cpus=allowed,
                         gpu_nodes=frozenset({1}), allowed_mems=frozenset({0, 1}))
    assert (strict.cpus, strict.mems) == (local, frozenset({1}))
    # The kubelet's exclusive CPUs on the other socket: nothing to narrow to, nothing written.
    elsewhere = cpuset_plan(policy="strict", local_cpus=local, allowed_cpus=frozenset({2, 3}),
                            gpu_nodes=frozenset({1}), allowed_mems=frozenset({0, 1}))
    assert (elsewhere.cpus, elsewhere.mems) == (None, None)
    assert "56-111" in elsewhere.reason
    unknown = cpuset_plan(policy="preferred", local_cpus=frozenset(), allowed_cpus=allowed,
                          gpu_nodes=frozenset(), allowed_mems=frozenset({0}))
    assert unknown.cpus is None


def test_the_cpu_manager_checkpoint() -> None:
    assert cpu_manager_policy('{"policyName":"static","defaultCpuSet":"0-1,56-57",'
                              '"entries":{},"checksum":1}') == "static"
    assert cpu_manager_policy('{"policyName":"none","defaultCpuSet":"","checksum":1}') == "none"
    assert cpu_manager_policy("not json") is None
    assert cpu_manager_policy("[]") is None


def test_hierarchy_detection_v1_hybrid_v2_and_none(tmp_path: Path) -> None:
    hybrid = tmp_path / "hybrid"
    (hybrid / "cpuset").mkdir(parents=True)
    (hybrid / "cpuset" / "cpuset.cpus").write_text("0-7\n")
    (hybrid / "unified").mkdir()
    (hybrid / "unified" / "cgroup.controllers").write_text("\n")  # v2 mount without controllers
    assert detect_hierarchy(hybrid) == CpusetHierarchy(hybrid / "cpuset", "v1")
    v2 = tmp_path / "v2"
    v2.mkdir()
    (v2 / "cgroup.controllers").write_text("cpuset cpu io memory hugetlb pids rdma misc\n")
    assert detect_hierarchy(v2) == CpusetHierarchy(v2, "v2")
    (v2 / "cgroup.controllers").write_text("cpu io memory pids\n")
    assert detect_hierarchy(v2) is None
    assert detect_hierarchy(tmp_path / "absent") is None


def _v2_container(root: Path, uid: str, dirname: str) -> Path:
    """A systemd-driver v2 tree down to one container directory, files as the kernel shows them."""
    pod = (root / "kubepods.slice" / "kubepods-burstable.slice"
           / f"kubepods-burstable-pod{uid.replace('-', '_')}.slice")
    for directory in (root / "kubepods.slice", root / "kubepods.slice" / "kubepods-burstable.slice",
                      pod):
        directory.mkdir(exist_ok=True)
        (directory / "cpuset.cpus.effective").write_text("0-63\n")
        (directory / "cpuset.mems.effective").write_text("0-1\n")
    container = pod / dirname
    container.mkdir()
    (container / "cpuset.cpus").write_text("\n")  # v2: empty means "inherit"
    (container / "cpuset.mems").write_text("\n")
    (container / "cpuset.cpus.effective").write_text("0-63\n")
    (container / "cpuset.mems.effective").write_text("0-1\n")
    return container


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for process in started:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


async def test_the_binder_on_a_v2_systemd_cri_o_tree(
        tmp_path: Path, processes: list[subprocess.Popen[bytes]]) -> None:
    if os.geteuid() != 0:
        pytest.skip("mount namespaces need root")
    root = tmp_path / "cgroup"
    root.mkdir()
    (root / "cgroup.controllers").write_text("cpuset cpu memory\n")
    hierarchy = detect_hierarchy(root)
    assert hierarchy is not None
    assert hierarchy.version == "v2"
    uid = str(uuid.uuid4())

    async def resolve(pod_uid: str, container: str) -> BindRequest | None:
        if (pod_uid, container) != (uid, "triton"):
            return None
        return BindRequest("ns", "pod", container, "strict", frozenset(range(32, 64)),
                           frozenset({1}))

    binder = CgroupBinder(hierarchy, Path("/proc"), resolve)
    binder.start()
    try:
        cid, sidecar_id = new_container_id(), new_container_id()
        container = _v2_container(root, uid, f"crio-{cid}.scope")
        # CRI-O's monitor lives beside the container: never a container, never written.
        conmon = container.parent / f"crio-conmon-{cid}.scope"
        conmon.mkdir()
        (conmon / "cpuset.cpus").write_text("\n")
        processes.append(spawn_container_process(container / "cgroup.procs", tmp_path, uid,
                                                 "triton", cid))
        sidecar = container.parent / f"crio-{sidecar_id}.scope"
        sidecar.mkdir()
        (sidecar / "cpuset.cpus").write_text("\n")
        processes.append(spawn_container_process(sidecar / "cgroup.procs", tmp_path, uid,
                                                 "envoy", sidecar_id))
        loop = asyncio.get_running_loop()
        # As long as the binder itself waits for a container's first process (start_timeout):
        # a shared machine that stalls for seconds must not fail what works.
        deadline = loop.time() + binder.start_timeout
        while (container / "cpuset.cpus").read_text().strip() != "32-63":
            assert loop.time() < deadline, "the v2 container was not bound"
            await asyncio.sleep(0.01)
        await binder.idle()
        assert (container / "cpuset.mems").read_text() == "1"  # strict; v2 migrates by itself
        assert not (container / "cpuset.memory_migrate").exists()
        assert (sidecar / "cpuset.cpus").read_text() == "\n"
        assert (conmon / "cpuset.cpus").read_text() == "\n"
        assert hierarchy.container_directory(container.parent, cid) == container
        assert dict(hierarchy.pod_directories()) == {uid: container.parent}
    finally:
        await binder.close()


def test_a_container_that_vanishes_mid_write_is_the_normal_end_of_a_container(
        tmp_path: Path) -> None:
    hierarchy = CpusetHierarchy(tmp_path, "v1")
    gone = tmp_path / f"crio-{CID}"
    with pytest.raises(CgroupGone):
        hierarchy.write(gone, cpus=frozenset({1}), mems=frozenset({0}))
    with pytest.raises(CgroupGone):
        hierarchy.effective(gone)
    with pytest.raises(CgroupGone):
        hierarchy.procs(gone)
    assert hierarchy.container_directory(gone, CID) is None
