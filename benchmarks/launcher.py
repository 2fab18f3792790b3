"""Start-up overhead of numa-exec: the launcher in front of a trivial command vs the command alone,
side by side with numactl typed by hand, all in the same run.

Run: ``python3 benchmarks/launcher.py [--rounds N]`` (builds the binary with ``make -C launcher``
when it is missing; needs numactl for the comparison: ``apt-get install numactl``). On the
two-socket 8-GPU fixture whose Cpus_allowed_list is this process's own CPUs, numa-exec runs
``true`` and really binds (sched_setaffinity, set_mempolicy, execvp): with ``LOCAL_RANK=0`` one
GPU on one node under each policy; without a rank every GPU, two nodes. numactl by hand binds the
same CPUs and node. Prints the median wall time per start, the overhead over ``true`` alone, and
numa-exec's overhead as a ratio of numactl's. Target: numa-exec's overhead no more than numactl's
(ratio ≤ 1).
"""

from __future__ import annotations

import os.path
import sys

# The repository root instead of benchmarks/, whose operator.py would shadow the standard library's
# operator module (imported by enum, argparse, …) when this file is run as a script.
sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import argparse  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Mapping, Sequence  # noqa: E402
from dataclasses import replace  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

from gpunuma.launcher import machine_architecture  # noqa: E402
from gpunuma.topology import format_cpulist  # noqa: E402
from tests.fixtures import machines  # noqa: E402

TARGET_RATIO = 1.0


def run_once(argv: Sequence[str], env: Mapping[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return (time.perf_counter() - start) * 1000


def interleaved_medians(cases: Sequence[tuple[Sequence[str], Mapping[str, str]]],
                        rounds: int) -> list[float]:
    """Median ms of each case, the cases taking turns within every round, so that the load of a
    shared machine falls on all of them alike rather than on whichever ran during a busy spell."""
    samples: list[list[float]] = [[] for _ in cases]
    for round_number in range(rounds + 5):
        for index, (argv, env) in enumerate(cases):
            elapsed = run_once(argv, env)
            if round_number >= 5:  # the first rounds warm the page cache
                samples[index].append(elapsed)
    return [statistics.median(case) for case in samples]


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        sys.exit(f"benchmarks/launcher.py needs {name} (apt-get install {name})")
    return path


def binary() -> Path:
    architecture = machine_architecture()
    if architecture is None:
        sys.exit(f"numa-exec is built for amd64 and arm64, not {platform.machine()}")
    path = ROOT / "launcher" / "build" / f"numa-exec-{architecture}"
    subprocess.run(["make", "-s", "-C", str(ROOT / "launcher"), "native"], check=True)
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=300)
    args = parser.parse_args()
    numactl, true = tool("numactl"), tool("true")
    numa_exec = str(binary())

    own_cpus = format_cpulist(os.sched_getaffinity(0))
    with tempfile.TemporaryDirectory() as root:
        tree = machines.build(replace(machines.two_socket_8gpu(), cpus_allowed=own_cpus), Path(root))
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "GPUNUMA_SYSFS_ROOT": str(tree.sysfs), "GPUNUMA_PROCFS_ROOT": str(tree.procfs),
            "GPUNUMA_DEV_ROOT": str(tree.dev), "GPUNUMA_QUIET": "1",
        }
        one_gpu = env | {"GPUNUMA_RANK_ENV": "LOCAL_RANK", "LOCAL_RANK": "0"}
        plan = subprocess.run([numa_exec, "--", true], env=one_gpu | {"GPUNUMA_DRY_RUN": "1"},
                              check=True, text=True, capture_output=True).stdout
        cpus = dict(line.split("=", 1) for line in plan.splitlines())["cpus"]
        launcher = [numa_exec, "--", true]
        by_hand = [numactl, f"--physcpubind={cpus}", "--preferred=0", "--", true]
        cases = [
            ("numa-exec, preferred (1 node)", launcher, one_gpu),
            ("numa-exec, strict (1 node)", launcher, one_gpu | {"GPUNUMA_POLICY": "strict"}),
            ("numa-exec, cpu-only", launcher, one_gpu | {"GPUNUMA_POLICY": "cpu-only"}),
            ("numa-exec, preferred, 8 GPUs 2 nodes", launcher, env),
        ]
        medians = interleaved_medians(
            [([true], env), (by_hand, env), *[(argv, case_env) for _, argv, case_env in cases]],
            args.rounds)
        bare, numactl_ms = medians[:2]
        results = [(name, ms) for (name, _, _), ms in zip(cases, medians[2:], strict=True)]

    numactl_overhead = numactl_ms - bare
    print(f"numa-exec {numa_exec} ({os.path.getsize(numa_exec)} bytes), {args.rounds} rounds each, "
          f"cpus={cpus}")
    print(f"{'command':40} {'median ms':>10} {'overhead ms':>12} {'vs numactl':>11}")
    print(f"{'true alone':40} {bare:10.2f} {0:12.2f} {'':>11}")
    print(f"{'numactl by hand, preferred':40} {numactl_ms:10.2f} {numactl_overhead:12.2f} {1:11.2f}")
    worst = 0.0
    for name, ms in results:
        ratio = (ms - bare) / numactl_overhead if numactl_overhead > 0 else float("inf")
        worst = max(worst, ratio)
        print(f"{name:40} {ms:10.2f} {ms - bare:12.2f} {ratio:11.2f}")
    verdict = "meets" if worst <= TARGET_RATIO else "misses"
    print(f"worst ratio {worst:.2f}: {verdict} the target (overhead ≤ numactl by hand)")
    return 0 if worst <= TARGET_RATIO else 1


if __name__ == "__main__":
    raise SystemExit(main())
