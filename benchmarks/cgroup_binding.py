"""Time from a container's cgroup appearing to its processes being bound by the agent's binder.

Run as root: ``python3 benchmarks/cgroup_binding.py [--rounds N]``. Needs a writable cgroup v1
cpuset hierarchy (/sys/fs/cgroup/cpuset, or one mounted elsewhere; everything is created under a
unique sub-directory and removed afterwards) and ``unshare``. Each round does what runc does for
a new container: ``mkdir`` the container's cgroup under a pod directory, copy the parent's
cpuset, start a process in it that sets up the kubelet's termination-log bind mount in a mount
namespace of its own and runs ``sleep``. The real :class:`~gpunuma.agent.binder.CgroupBinder`
runs in the same process (its own event loop thread) and binds the container to CPU 1.

Measured per round, from just before the ``mkdir``:
- baseline: until the container is "started" (its mount is visible in /proc/PID/mountinfo), the
  runtime's own share, which no binder can beat;
- binding: until the kernel reports ``Cpus_allowed_list: 1`` for the process.
Prints median, p95 and max of both and the ratio of the medians. Target: binding under 1 s.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gpunuma.agent.binder import BindRequest, CgroupBinder
from gpunuma.agent.cgroupfs import CpusetHierarchy
from tests.agent.cgroupv1 import Tree, find_v1_cpuset, make_cgroup, new_container_id

TARGET_S = 1.0
LOCAL = frozenset({1})


def _wait(predicate: object, timeout: float = 10.0) -> float:
    deadline = time.perf_counter() + timeout
    while not predicate():  # type: ignore[operator]
        if time.perf_counter() > deadline:
            raise TimeoutError("not reached within 10 s")
        time.sleep(0.0005)
    return time.perf_counter()


def _field(pid: int, key: str) -> str:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            name, _, value = line.partition(":")
            if name == key:
                return value.strip()
    except OSError:
        pass
    return ""


def _mounted(pid: int, container: str) -> bool:
    try:
        return f"/containers/{container}/" in Path(f"/proc/{pid}/mountinfo").read_text()
    except OSError:
        return False


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args()
    root = find_v1_cpuset()
    if root is None or not os.access(root, os.W_OK):
        print("needs a writable cgroup v1 cpuset hierarchy (/sys/fs/cgroup/cpuset; run as root)")
        return 2
    if len(os.sched_getaffinity(0)) < 2:
        print("needs at least 2 CPUs to show a narrowing")
        return 2
    uid = str(uuid.uuid4())
    base = make_cgroup(root / f"gpunuma-bench-{uuid.uuid4().hex[:12]}")
    with tempfile.TemporaryDirectory() as scratch:
        tree = Tree(base, Path(scratch))
        loop = asyncio.new_event_loop()
        ready = threading.Event()

        async def resolve(pod_uid: str, container: str) -> BindRequest | None:
            if pod_uid != uid or not container.startswith("bound-"):
                return None
            return BindRequest("bench", "pod", container, "preferred", LOCAL, frozenset({0}))

        binder = CgroupBinder(CpusetHierarchy(base, "v1"), Path("/proc"), resolve, poll=0.001)

        def begin() -> None:
            binder.start()  # inside the running loop: it registers the inotify descriptor
            ready.set()

        def serve() -> None:
            asyncio.set_event_loop(loop)
            loop.call_soon(begin)
            loop.run_forever()

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        if not ready.wait(timeout=10):
            tree.remove()
            print("the binder did not start")
            return 1
        started: list[float] = []
        bound: list[float] = []
        try:
            pod_dir = tree.pod(uid)
            for index in range(args.rounds):
                name = f"bound-{index}"
                t0 = time.perf_counter()
                container = tree.start(pod_dir, uid, name, container_id=new_container_id())
                pid = container.pid
                started.append(_wait(lambda pid=pid, name=name: _mounted(pid, name)) - t0)
                bound.append(_wait(
                    lambda pid=pid: _field(pid, "Cpus_allowed_list") == "1") - t0)
        finally:
            asyncio.run_coroutine_threadsafe(binder.close(), loop).result(timeout=10)
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=10)
            tree.remove()

    def stats(values: list[float]) -> str:
        ordered = sorted(values)
        p95 = ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]
        return (f"median {statistics.median(values) * 1000:7.1f} ms   p95 {p95 * 1000:7.1f} ms   "
                f"max {max(values) * 1000:7.1f} ms")

    print(f"{args.rounds} containers, from the cgroup's mkdir:")
    print(f"  baseline: container started (mount in place)   {stats(started)}")
    print(f"  binding:  Cpus_allowed_list narrowed by agent  {stats(bound)}")
    ratio = statistics.median(bound) / statistics.median(started)
    print(f"  ratio binding/start (medians): {ratio:.2f}")
    verdict = "meets" if max(bound) < TARGET_S else "MISSES"
    print(f"  target: binding under {TARGET_S:g} s: {verdict} (max {max(bound):.3f} s)")
    return 0 if max(bound) < TARGET_S else 1


if __name__ == "__main__":
    sys.exit(main())
