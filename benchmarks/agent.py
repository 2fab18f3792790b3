"""The agent's steady-state API writes per hour and its resident memory.

Run: ``python3 benchmarks/agent.py [--hours H] [--speed S]``. Starts the real ``gpunuma agent``
process against kmock (a Kubernetes API in this process) and a real gRPC kubelet stand-in with 64
GPU pods on the 8 × MI300X CPX fixture (56 partitions), with every period divided by ``--speed``
(1000: one simulated hour takes 3.6 s). The layout and the pods never change, so the target is
heartbeats only: ``3600 / heartbeat`` writes per hour (6 with the default 600 s).

Printed, each against a baseline measured in the same run:
- steady-state writes per simulated hour (after the first create) against the heartbeat-only
  target, and against the writes an agent without change detection would have made (one per
  discovery pass and per kubelet poll, counted from the agent's metrics and the kubelet's calls);
- the agent's resident memory (VmRSS, and its peak VmHWM) against a bare Python interpreter
  started the same way; target under 100 MiB. kmock speaks plain HTTP, so the agent runs with
  ``--kubeconfig``, which loads the kubeconfig reader (and PyYAML) that the in-cluster path does
  without: the figure is an upper bound for the DaemonSet.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import socket
import sys
import tempfile
from pathlib import Path

import aiohttp
import kmock

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.agent.conftest import FakeKubelet, KubeletServer, container, layout_of, pod
from tests.fixtures import machines

ROOT = Path(__file__).resolve().parents[1]
NODE = "bench-node"
TARGET_RSS_MIB = 100.0
HEARTBEAT = 600.0


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _memory_mib(pid: int) -> tuple[float, float]:
    status = Path(f"/proc/{pid}/status").read_text()
    rss = int(re.search(r"VmRSS:\s+(\d+) kB", status)[1])  # type: ignore[index]
    peak = int(re.search(r"VmHWM:\s+(\d+) kB", status)[1])  # type: ignore[index]
    return rss / 1024, peak / 1024


async def _bare_python_rss() -> float:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", "import sys; sys.stdin.read()", stdin=asyncio.subprocess.PIPE)
    await asyncio.sleep(0.5)
    rss, _ = _memory_mib(process.pid)
    assert process.stdin is not None
    process.stdin.close()
    await process.wait()
    return rss


async def _metric(port: int, name: str) -> float:
    async with aiohttp.ClientSession() as session, \
            session.get(f"http://127.0.0.1:{port}/metrics") as response:
        text = await response.text()
    match = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    return float(match[1]) if match else 0.0


async def run(hours: float, speed: float) -> int:
    with tempfile.TemporaryDirectory(prefix="gn-bench-", dir="/tmp") as directory:
        root = Path(directory)
        tree = machines.build(machines.amd_mi300x_cpx(), root / "machine")
        layout = layout_of(tree)
        partitions = [part.id for gpu in layout.gpus for part in gpu.partitions]
        kubelet = KubeletServer(socket=root / "kubelet.sock", servicer=FakeKubelet())
        kubelet.servicer.pods = [
            pod("ml", f"shard-{i}", container("main", [("amd.com/gpu", [partitions[i]])],
                                              cpu_ids=[i * 2, i * 2 + 1]))
            for i in range(min(64, len(partitions)))
        ] + [pod("web", f"frontend-{i}", container("nginx")) for i in range(36)]
        await kubelet.start()
        async with kmock.KubernetesEmulator() as api, kmock.Server(api):
            api.objects["v1/nodes", None, NODE] = {"metadata": {"name": NODE, "uid": "bench"}}
            kubeconfig = root / "kubeconfig"
            kubeconfig.write_text(json.dumps({
                "apiVersion": "v1", "kind": "Config", "current-context": "k",
                "clusters": [{"name": "k", "cluster": {"server": str(api.url)}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "k", "context": {"cluster": "k", "user": "u"}}],
            }))
            port = _free_port()
            agent = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "gpunuma", "agent", "--node-name", NODE,
                "--kubeconfig", str(kubeconfig), "--backend", "sysfs",
                "--sysfs-root", str(tree.sysfs), "--procfs-root", str(tree.procfs),
                "--kubelet-socket", str(kubelet.socket), "--listen", f"127.0.0.1:{port}",
                "--interval", str(60 / speed), "--heartbeat", str(HEARTBEAT / speed),
                "--allocations-interval", str(10 / speed),
                stderr=asyncio.subprocess.DEVNULL, cwd=ROOT,
                env={**os.environ, "PYTHONPATH": str(ROOT)},
            )
            try:
                for _ in range(3000):  # the create, within 30 s
                    if any(r.method.value == "POST" for r in api):
                        break
                    await asyncio.sleep(0.01)
                else:
                    raise SystemExit("the agent created no GPUNumaLayout within 30 s")
                passes_before = await _metric(port, "gpunuma_agent_discovery_duration_seconds_count")
                polls_before = kubelet.servicer.calls
                await asyncio.sleep(hours * 3600 / speed)
                writes = [r for r in api if r.method.value in ("POST", "PATCH", "PUT")]
                passes = await _metric(port, "gpunuma_agent_discovery_duration_seconds_count")
                polls = kubelet.servicer.calls - polls_before
                rss, peak = _memory_mib(agent.pid)
            finally:
                agent.terminate()
                await agent.wait()
        await kubelet.stop()
    bare = await _bare_python_rss()
    steady = len(writes) - 1  # everything after the create
    per_hour = steady / hours
    target = 3600 / HEARTBEAT
    naive = (passes - passes_before + polls) / hours
    allocations = len(kubelet.servicer.pods) - 36
    print(f"simulated {hours:g} h at speed {speed:g}: {len(writes)} writes "
          f"(1 create + {steady}), {passes - passes_before:.0f} discovery passes, "
          f"{polls} kubelet polls, {allocations} GPU pods")
    print(f"steady-state writes per hour: {per_hour:.1f}; heartbeat-only target {target:.1f} "
          f"(ratio {per_hour / target:.2f}); a change-blind agent: {naive:.0f} "
          f"(ratio {per_hour / naive:.4f})")
    print(f"agent RSS {rss:.1f} MiB (peak {peak:.1f} MiB); bare python {bare:.1f} MiB "
          f"(ratio {rss / bare:.2f}); target < {TARGET_RSS_MIB:.0f} MiB")
    ok = per_hour <= target * 1.2 and peak < TARGET_RSS_MIB
    print("targets met" if ok else "TARGET MISSED")
    return 0 if ok else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hours", type=float, default=2.0, help="simulated hours (default 2)")
    parser.add_argument("--speed", type=float, default=1000.0,
                        help="how much faster than real time (default 1000)")
    args = parser.parse_args()
    return asyncio.run(run(args.hours, args.speed))


if __name__ == "__main__":
    sys.exit(main())
