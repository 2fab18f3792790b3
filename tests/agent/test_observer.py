"""The observer over fixture trees: a v2 cgroup tree and a procfs of one container process.

What a launcher does to the process (set the policy, then exec the workload in the same PID) is
played by rewriting its /proc files; the observer must see it at once, while numa_maps itself is
read again only after --memory-interval otherwise.
"""

from __future__ import annotations

from pathlib import Path

from gpunuma.agent.cgroupfs import CpusetHierarchy
from gpunuma.agent.nodepods import PodInfo
from gpunuma.agent.observer import Observer
from gpunuma.topology import Layout

UID = "0f1e2d3c-4b5a-4968-8776-a5b4c3d2e1f0"
CID = "ab" * 32
PID = 4242
LAYOUT = Layout.from_document({
    "numaNodes": [{"id": 0, "cpus": "0-3", "memoryMiB": 1, "distances": [10, 21]},
                  {"id": 1, "cpus": "4-7", "memoryMiB": 1, "distances": [21, 10]}],
    "gpus": [{"index": 0, "vendor": "nvidia", "model": "x", "uuid": "GPU-1",
              "pciBusId": "0000:1b:00.0", "minor": 0, "renderNode": None, "numaNode": 1,
              "reportedNumaNode": 1, "migDevices": [], "partitions": []}],
    "source": "sysfs", "errors": [],
})
ENTRY = {"namespace": "ml", "pod": "p", "container": "server", "resource": "nvidia.com/gpu",
         "deviceIds": ["GPU-1"], "numaNodes": [1], "cpus": "4-7"}
POD = PodInfo("ml", "p", UID, {"server": CID}, frozenset({"server"}), frozenset(), {})


def _process(proc: Path, comm: str, cpus: str, numa_maps: str) -> None:
    directory = proc / str(PID)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "comm").write_text(comm + "\n")
    (directory / "status").write_text(f"Name:\t{comm}\nCpus_allowed_list:\t{cpus}\n"
                                      "Mems_allowed_list:\t0-1\n")
    (directory / "stat").write_text(f"{PID} ({comm}) S 1 " + " ".join(["0"] * 17) + " 777 0\n")
    (directory / "numa_maps").write_text(numa_maps)


def _tree(root: Path) -> CpusetHierarchy:
    pod = root / "kubepods.slice" / f"kubepods-pod{UID.replace('-', '_')}.slice"
    container = pod / f"cri-containerd-{CID}.scope"
    container.mkdir(parents=True)
    (container / "cgroup.procs").write_text(f"{PID}\n")
    (container / "cpuset.cpus.effective").write_text("0-7\n")
    (container / "cpuset.mems.effective").write_text("0-1\n")
    return CpusetHierarchy(root, "v2")


def test_a_launchers_exec_is_seen_at_once_and_numa_maps_is_otherwise_rate_limited(
        tmp_path: Path) -> None:
    proc = tmp_path / "proc"
    now = [1000.0]
    observer = Observer(_tree(tmp_path / "cgroup"), proc, clock=lambda: now[0],
                        memory_interval=300)

    def observed() -> dict[str, object]:
        [entry] = observer.observe([ENTRY], LAYOUT, {("ml", "p"): POD}, {}, {})
        result: dict[str, object] = entry["observed"]
        return result

    # numa-exec has started, not yet bound.
    _process(proc, "numa-exec", "0-7", "7f00 default anon=10 N0=10\n")
    first = observed()
    assert (first["binding"], first["policy"], first["cpus"]) == ("none", "default", "0-7")
    # It bound CPUs and memory and exec'd the workload, same PID: seen on the next pass.
    _process(proc, "python3", "4-7", "7f00 bind:1 anon=10 N1=10\n")
    second = observed()
    assert (second["binding"], second["by"], second["policy"]) == ("full", "numa-exec", "bind:1")
    assert second["localMemoryShare"] == 1.0
    # Pages move, the process is the same: numa_maps is not walked again before the interval...
    _process(proc, "python3", "4-7", "7f00 bind:1 anon=10 N0=5 N1=5\n")
    assert observed()["localMemoryShare"] == 1.0
    # ...and is after it.
    now[0] += 301
    assert observed()["localMemoryShare"] == 0.5


def test_a_container_not_started_or_gone_is_unknown(tmp_path: Path) -> None:
    observer = Observer(_tree(tmp_path / "cgroup"), tmp_path / "proc", clock=lambda: 0.0)
    pending = PodInfo("ml", "p", UID, {}, frozenset(), frozenset(), {})
    [entry] = observer.observe([ENTRY], LAYOUT, {("ml", "p"): pending}, {}, {})
    assert entry["observed"]["binding"] == "unknown"
    assert "not started" in entry["observed"]["reason"]
    # The cgroup lists a process that has exited (no /proc entry): unknown, not an error.
    [entry] = observer.observe([ENTRY], LAYOUT, {("ml", "p"): POD}, {}, {})
    assert entry["observed"] == {"binding": "unknown", "by": "none",
                                 "reason": "the container's cgroup has no process"}
