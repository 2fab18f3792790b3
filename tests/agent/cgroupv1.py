"""A container-like cgroup tree in this machine's writable cgroup v1 cpuset hierarchy, for real.

Each test gets its own directory under /sys/fs/cgroup/cpuset (a unique name: other test runs share
the hierarchy) and it is removed afterwards, processes first. Containers are made like runc makes
them: ``mkdir``, copy the parent's ``cpuset.cpus``/``mems`` (a v1 child starts empty and cannot hold
tasks), put a process in, and give it the termination-log bind mount the kubelet gives every
container, in a mount namespace of its own.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

DEFAULT_V1_CPUSET = Path("/sys/fs/cgroup/cpuset")


def find_v1_cpuset() -> Path | None:
    """Where a cgroup v1 hierarchy with the cpuset controller is mounted (first found), if any.

    /sys/fs/cgroup/cpuset on legacy and hybrid hosts; .ci/run mounts one elsewhere on a machine
    whose cpuset controller is free of cgroup v2.
    """
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        before, _, after = line.partition(" - ")
        fields, tail = before.split(), after.split()
        if len(fields) >= 5 and len(tail) >= 3 and tail[0] == "cgroup" and (
                "cpuset" in tail[2].split(",")):
            return Path(fields[4])
    return None


def require_cgroup_v1() -> Path:
    """The writable v1 cpuset hierarchy; skipped locally without one, a failure in CI."""
    problem = None
    root = find_v1_cpuset()
    if root is None or not (root / "cpuset.cpus").is_file():
        problem = ("no cgroup v1 cpuset hierarchy is mounted (.ci/run mounts one: mount -t cgroup "
                   "-o cpuset cpuset DIR, as root, while no cgroup v2 tree uses the controller)")
    elif not os.access(root, os.W_OK):
        problem = f"{root} is not writable (run as root)"
    elif shutil.which("unshare") is None:
        problem = "unshare is not installed (apt-get install util-linux)"
    if problem:
        if os.environ.get("CI"):
            pytest.fail(problem)
        pytest.skip(problem)
    assert root is not None
    return root


def new_container_id() -> str:
    return uuid.uuid4().hex + uuid.uuid4().hex


def _copy_parent(directory: Path) -> None:
    for name in ("cpuset.cpus", "cpuset.mems"):
        (directory / name).write_text((directory.parent / name).read_text())


def make_cgroup(directory: Path) -> Path:
    directory.mkdir()
    _copy_parent(directory)
    return directory


def spawn_container_process(procs: Path, scratch: Path, uid: str, container: str,
                            container_id: str, command: tuple[str, ...] = ("sleep", "300"),
                            *, termination_log: bool = True) -> subprocess.Popen[bytes]:
    """A process that writes its PID into ``procs`` (joining a real cgroup, or recording itself
    in a fixture tree's file), then runs ``command`` with the termination-log bind mount the
    kubelet gives container ``container`` of pod ``uid``, in a mount namespace of its own (none
    without ``termination_log``: the pod's sandbox, which the runtime starts without one)."""
    if not termination_log:
        script = f'echo $$ > {procs} && exec {" ".join(command)}'
        return subprocess.Popen(["sh", "-c", script], start_new_session=True)
    source = scratch / "pods" / uid / "containers" / container / container_id[:8]
    source.mkdir(parents=True)
    target = scratch / f"termination-log-{container_id[:8]}"
    target.mkdir()
    script = (f'echo $$ > {procs} && '
              f'exec unshare --mount --propagation private sh -c '
              f'"mount --bind {source} {target} && exec {" ".join(command)}"')
    return subprocess.Popen(["sh", "-c", script], start_new_session=True)


@dataclass
class Container:
    directory: Path
    process: subprocess.Popen[bytes]

    @property
    def pid(self) -> int:
        """The host PID of the container's command (unshare execs into it)."""
        return self.process.pid

    def status(self, key: str) -> str:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            name, _, value = line.partition(":")
            if name == key:
                return value.strip()
        raise KeyError(key)


@dataclass
class Tree:
    """A kubepods tree of one test; :meth:`remove` deletes it bottom-up."""

    base: Path
    scratch: Path
    containers: list[Container] = field(default_factory=list)

    def pod(self, uid: str, *, qos: str | None = "burstable", systemd: bool = False) -> Path:
        if systemd:
            kubepods = self._ensure(self.base / "kubepods.slice")
            parent = kubepods
            if qos:
                parent = self._ensure(kubepods / f"kubepods-{qos}.slice")
            prefix = f"kubepods-{qos}-pod" if qos else "kubepods-pod"
            return make_cgroup(parent / f"{prefix}{uid.replace('-', '_')}.slice")
        parent = self._ensure(self.base / "kubepods")
        if qos:
            parent = self._ensure(parent / qos)
        return make_cgroup(parent / f"pod{uid}")

    def _ensure(self, directory: Path) -> Path:
        return directory if directory.is_dir() else make_cgroup(directory)

    def start(self, pod_dir: Path, uid: str, container: str, *, dirname: str | None = None,
              command: tuple[str, ...] = ("sleep", "300"),
              container_id: str | None = None, termination_log: bool = True) -> Container:
        """A process in a new container cgroup, with the kubelet's termination-log mount."""
        container_id = container_id or new_container_id()
        directory = make_cgroup(pod_dir / (dirname or container_id))
        process = spawn_container_process(directory / "cgroup.procs", self.scratch, uid,
                                          container, container_id, command,
                                          termination_log=termination_log)
        started = Container(directory, process)
        self.containers.append(started)
        return started

    def remove(self) -> None:
        for container in self.containers:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(container.process.pid, signal.SIGKILL)
            container.process.wait(timeout=10)
        for directory in sorted((p for p in self.base.rglob("*") if p.is_dir()),
                                key=lambda p: len(p.parts), reverse=True):
            _rmdir(directory)
        _rmdir(self.base)


def _rmdir(directory: Path) -> None:
    deadline = time.monotonic() + 5
    while True:
        try:
            directory.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError:  # EBUSY while a killed task is still leaving the cgroup
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)


@contextlib.contextmanager
def cgroup_tree_in(tmp_path: Path) -> Iterator[Tree]:
    """A fresh tree under the real hierarchy (use from a fixture); removed on exit."""
    root = require_cgroup_v1()
    base = make_cgroup(root / f"gpunuma-test-{uuid.uuid4().hex[:12]}")
    tree = Tree(base, tmp_path)
    try:
        yield tree
    finally:
        tree.remove()
