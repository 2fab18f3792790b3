"""The cgroup mechanism against this machine's real cgroup v1 cpuset hierarchy.

Processes are started in container-like cgroups; the binder sees the directories appear through
inotify, identifies each container from its process's mounts, and writes the cpuset; the result is
read back from the kernel's /proc/PID/status.
"""

from __future__ import annotations

import asyncio
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from gpunuma.agent.binder import BindRequest, CgroupBinder
from gpunuma.agent.cgroupfs import CpusetHierarchy
from tests.agent.cgroupv1 import Tree, cgroup_tree_in

# The GPU of these tests is "local" to CPU 1 of this 2-CPU, 1-node machine: a narrowing the kernel
# really applies, and visible in Cpus_allowed_list.
LOCAL = frozenset({1})


@pytest.fixture
def cgroup_tree(tmp_path: Path) -> Iterator[Tree]:
    with cgroup_tree_in(tmp_path) as tree:
        yield tree


def _resolver(selected: dict[tuple[str, str], str], asked: list[tuple[str, str]]):  # type: ignore[no-untyped-def]
    async def resolve(uid: str, container: str) -> BindRequest | None:
        asked.append((uid, container))
        policy = selected.get((uid, container))
        if policy is None:
            return None
        return BindRequest("ns", "pod", container, policy, LOCAL, frozenset({0}))
    return resolve


async def _until(predicate, within: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not predicate():
        assert loop.time() < deadline, "not reached in time"
        await asyncio.sleep(0.005)


async def test_binds_a_new_container_and_never_its_unselected_sibling(cgroup_tree: Tree) -> None:
    uid = str(uuid.uuid4())
    asked: list[tuple[str, str]] = []
    binder = CgroupBinder(CpusetHierarchy(cgroup_tree.base, "v1"), Path("/proc"),
                          _resolver({(uid, "server"): "preferred"}, asked))
    binder.start()
    try:
        pod = cgroup_tree.pod(uid)
        server = cgroup_tree.start(pod, uid, "server")
        sidecar = cgroup_tree.start(pod, uid, "sidecar")
        await _until(lambda: server.status("Cpus_allowed_list") == "1")
        await binder.idle()
        assert (uid, "sidecar") in asked
        assert sidecar.status("Cpus_allowed_list") == "0-1"
        assert (sidecar.directory / "cpuset.cpus").read_text().strip() == "0-1"
        # preferred writes CPUs only
        assert (server.directory / "cpuset.memory_migrate").read_text().strip() == "0"
        assert binder.bound[server.directory].cpus == LOCAL
        assert sidecar.directory in binder.ignored
    finally:
        await binder.close()


async def test_strict_binds_memory_with_migration_and_reapplies_after_a_reset(
        cgroup_tree: Tree) -> None:
    uid = str(uuid.uuid4())
    binder = CgroupBinder(CpusetHierarchy(cgroup_tree.base, "v1"), Path("/proc"),
                          _resolver({(uid, "trainer"): "strict"}, []))
    binder.start()
    try:
        pod = cgroup_tree.pod(uid, qos=None, systemd=True)
        trainer = cgroup_tree.start(pod, uid, "trainer",
                                    dirname=f"cri-containerd-{uuid.uuid4().hex * 2}.scope")
        await _until(lambda: trainer.status("Cpus_allowed_list") == "1")
        assert (trainer.directory / "cpuset.memory_migrate").read_text().strip() == "1"
        assert trainer.status("Mems_allowed_list") == "0"
        # Something (a runtime update) resets the cpuset: the binder answers the write event.
        (trainer.directory / "cpuset.cpus").write_text("0-1")
        await _until(lambda: trainer.status("Cpus_allowed_list") == "1")
        assert binder.bound[trainer.directory].applied == 2
    finally:
        await binder.close()


async def test_containers_already_running_at_start_are_bound(cgroup_tree: Tree) -> None:
    uid = str(uuid.uuid4())
    pod = cgroup_tree.pod(uid, qos="besteffort")
    early = cgroup_tree.start(pod, uid, "early", dirname=f"crio-{uuid.uuid4().hex * 2}")
    await asyncio.sleep(0.2)  # its mounts are in place before the agent starts
    binder = CgroupBinder(CpusetHierarchy(cgroup_tree.base, "v1"), Path("/proc"),
                          _resolver({(uid, "early"): "cpu-only"}, []))
    binder.start()
    try:
        await _until(lambda: early.status("Cpus_allowed_list") == "1")
    finally:
        await binder.close()


async def test_paused_binder_writes_nothing(cgroup_tree: Tree) -> None:
    uid = str(uuid.uuid4())
    binder = CgroupBinder(CpusetHierarchy(cgroup_tree.base, "v1"), Path("/proc"),
                          _resolver({(uid, "server"): "preferred"}, []))
    binder.pause("the kubelet's CPU manager policy is static")
    binder.start()
    try:
        pod = cgroup_tree.pod(uid)
        server = cgroup_tree.start(pod, uid, "server")
        await asyncio.sleep(0.3)
        await binder.idle()
        assert server.status("Cpus_allowed_list") == "0-1"
        assert (server.directory / "cpuset.cpus").read_text().strip() == "0-1"
    finally:
        await binder.close()


async def test_a_container_that_ends_before_it_is_bound_is_normal(cgroup_tree: Tree) -> None:
    uid = str(uuid.uuid4())
    binder = CgroupBinder(CpusetHierarchy(cgroup_tree.base, "v1"), Path("/proc"),
                          _resolver({(uid, "short"): "preferred"}, []), start_timeout=2)
    binder.start()
    try:
        pod = cgroup_tree.pod(uid)
        short = cgroup_tree.start(pod, uid, "short", command=("true",))
        short.process.wait(timeout=5)
        short.directory.rmdir()
        await binder.idle()
        binder.recheck()
        assert short.directory not in binder.bound
    finally:
        await binder.close()


async def test_a_container_whose_gpus_were_not_known_yet_is_bound_on_a_later_pass(
        cgroup_tree: Tree) -> None:
    uid = str(uuid.uuid4())
    known = False

    async def resolve(pod_uid: str, container: str) -> BindRequest | None:
        if (pod_uid, container) != (uid, "late"):
            return None
        if not known:  # the kubelet has not reported its devices yet
            return BindRequest("ns", "pod", container, "preferred", frozenset(), frozenset())
        return BindRequest("ns", "pod", container, "preferred", LOCAL, frozenset({0}))

    binder = CgroupBinder(CpusetHierarchy(cgroup_tree.base, "v1"), Path("/proc"), resolve)
    binder.start()
    try:
        late = cgroup_tree.start(cgroup_tree.pod(uid), uid, "late")
        await _until(lambda: late.directory in binder.bound)
        assert binder.bound[late.directory].cpus is None
        assert late.status("Cpus_allowed_list") == "0-1"
        known = True
        await binder.idle()
        binder.recheck()  # the agent's next pass
        await _until(lambda: late.status("Cpus_allowed_list") == "1")
    finally:
        await binder.close()


async def test_the_pods_sandbox_is_recognised_at_once_and_never_written(
        cgroup_tree: Tree, tmp_path: Path) -> None:
    uid = str(uuid.uuid4())
    pause = tmp_path / "pause"  # the sandbox image's binary: its process is named "pause"
    shutil.copy(shutil.which("sleep") or "/bin/sleep", pause)
    asked: list[tuple[str, str]] = []
    binder = CgroupBinder(CpusetHierarchy(cgroup_tree.base, "v1"), Path("/proc"),
                          _resolver({}, asked))
    binder.start()
    try:
        sandbox = cgroup_tree.start(cgroup_tree.pod(uid), uid, "POD",
                                    command=(str(pause), "300"), termination_log=False)
        await _until(lambda: sandbox.directory in binder.ignored, within=2)
        assert asked == []
        assert (sandbox.directory / "cpuset.cpus").read_text().strip() == "0-1"
    finally:
        await binder.close()
