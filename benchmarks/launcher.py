"""Start-up overhead of numa-exec: the launcher in front of a trivial command vs the command alone.

Run: ``python3 benchmarks/launcher.py [--rounds N]``. On the two-socket 8-GPU fixture, numa-exec
under dash runs ``true`` through this machine's real numactl, probing each binding before its exec:
with ``LOCAL_RANK=0`` (one GPU, one node) the preferred policy probes its memory policy and
cpu-only the CPU binding alone; without a rank (every GPU, two nodes) preferred probes the CPU
binding. The fixture's Cpus_allowed_list is this process's own CPUs, so the binding is one the
kernel accepts. Prints the median wall time per start, the overhead over ``true`` alone and the
ratio, next to numactl typed by hand (what numa-exec adds on top of numactl itself). Target: under
15 ms of overhead.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gpunuma.launcher import script_path
from gpunuma.topology import format_cpulist, parse_cpulist
from tests.fixtures import machines

TARGET_MS = 15.0


def median_ms(argv: Sequence[str], env: Mapping[str, str], rounds: int) -> float:
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       check=True)
        samples.append((time.perf_counter() - start) * 1000)
    return statistics.median(samples)


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        sys.exit(f"benchmarks/launcher.py needs {name} (apt-get install {name})")
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=200)
    args = parser.parse_args()
    dash, numactl, true = tool("dash"), tool("numactl"), tool("true")
    busybox = shutil.which("busybox")

    own_cpus = format_cpulist(os.sched_getaffinity(0))
    machine = replace(machines.two_socket_8gpu(), cpus_allowed=own_cpus)
    with tempfile.TemporaryDirectory() as directory:
        tree = machines.build(machine, Path(directory))
        env = os.environ | {
            "GPUNUMA_SYSFS_ROOT": str(tree.sysfs), "GPUNUMA_PROCFS_ROOT": str(tree.procfs),
            "GPUNUMA_DEV_ROOT": str(tree.dev), "GPUNUMA_QUIET": "1",
            "GPUNUMA_RANK_ENV": "LOCAL_RANK", "LOCAL_RANK": "0",
        }
        plan = subprocess.run([dash, str(script_path()), "--", "true"], check=True, text=True,
                              env=env | {"GPUNUMA_DRY_RUN": "1"}, capture_output=True).stdout
        cpus = dict(line.split("=", 1) for line in plan.splitlines())["cpus"]
        if not cpus or not parse_cpulist(cpus):
            sys.exit(f"the fixture plan binds no CPU on this machine:\n{plan}")

        launcher = [str(script_path()), "--", true]
        every_gpu = {k: v for k, v in env.items() if k != "GPUNUMA_RANK_ENV"}
        cases = [
            ("true alone (baseline)", [true], env),
            ("numactl by hand, --preferred", [numactl, f"--physcpubind={cpus}", "--preferred=0",
                                              "--", true], env),
            ("numa-exec (dash), preferred", [dash, *launcher], env),
            ("numa-exec (dash), cpu-only", [dash, *launcher], env | {"GPUNUMA_POLICY": "cpu-only"}),
            ("numa-exec (dash), preferred, 2 nodes", [dash, *launcher], every_gpu),
        ]
        if busybox:
            cases.append(("numa-exec (busybox sh), preferred", [busybox, "sh", *launcher], env))
        print(f"plan: {plan.splitlines()[-1]}")
        print(f"{'case':36} {'median ms':>10} {'overhead ms':>12} {'ratio':>7}")
        baseline = None
        worst = 0.0
        for name, argv, case_env in cases:
            median = median_ms(argv, case_env, args.rounds)
            baseline = baseline if baseline is not None else median
            overhead = median - baseline
            if name.startswith("numa-exec"):
                worst = max(worst, overhead)
            print(f"{name:36} {median:10.2f} {overhead:12.2f} {median / baseline:7.1f}")
    verdict = "meets" if worst < TARGET_MS else "MISSES"
    print(f"numa-exec overhead at most {worst:.2f} ms: {verdict} the {TARGET_MS:.0f} ms target")
    return 0


if __name__ == "__main__":
    sys.exit(main())
