"""The operator at cluster scale: 1,000 GPU nodes' layouts in kmock, the real ``gpunuma operator``.

Run: ``python3 benchmarks/operator_scale.py [--nodes N] [--changed M]``. kmock (the Kubernetes API
emulator) serves N Nodes and their GPUNumaLayouts in this process; ``gpunuma operator`` runs as a
subprocess with a kubeconfig pointing at it, exactly as it would in a cluster. Measured:

1. start-up: time until every Node carries its labels and every layout its status;
2. heartbeats: every layout's ``heartbeatTime`` moves (the steady state): Node patches sent;
3. changes: M layouts change (a GPU's NUMA node becomes unknown): Node patches sent;
4. the operator's resident memory (VmRSS / VmHWM).

Baseline, measured in the same run against the same kmock: N bare merge patches of the same labels
sent sequentially by one aiohttp client, the least API work any labeller must do. Targets: one Node
patch per changed layout, none for a heartbeat, start-up within a small multiple of the baseline.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import IO, Any

import aiohttp
import kmock

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gpunuma import names
from gpunuma.settings import AgentSettings
from gpunuma.topology import Layout, node_labels
from tests.operator.conftest import LAYOUTS, LAYOUTS_URL, layout_body, now_rfc3339, two_socket_spec

ROOT = Path(__file__).resolve().parents[1]
HEARTBEAT_S = AgentSettings(node_name="").heartbeat


def declare(cluster: kmock.KubernetesEmulator) -> None:
    cluster.resources.load_bundled()
    cluster.resources[LAYOUTS] = kmock.ResourceInfo(
        kind=names.CRD_KIND, singular="gpunumalayout", namespaced=False, subresources={"status"},
        verbs={"get", "list", "watch", "create", "update", "patch", "delete"},
    )


class CountingEmulator(kmock.KubernetesEmulator):
    """kmock that counts requests by kind and keeps only the latest one.

    kmock matches every request against its whole request log, which makes a run quadratic in the
    number of requests; this benchmark sends tens of thousands, and needs only the counts.
    """

    counts: Counter[str]

    async def _handle(self, request: Any) -> Any:
        method, path = str(request.method.value).upper(), request.url.path
        if method == "PATCH" and path.startswith("/api/v1/nodes/"):
            kind = "node patch"
        elif method == "PATCH" and path.endswith("/status"):
            kind = "status patch"
        elif request.url.query.get("watch") == "true":
            kind = "watch"
        else:
            kind = f"{method.lower()} other"
        self.counts[kind] += 1
        del self._requests[:-1]
        return await super()._handle(request)


def since(cluster: CountingEmulator, mark: Counter[str]) -> Counter[str]:
    return cluster.counts - mark


def current(cluster: kmock.KubernetesEmulator, plural: str) -> dict[str, dict[str, Any]]:
    """Name → latest body of every object of a resource, in one pass over kmock's store."""
    return {name: obj.raw for (resource, _, name), obj in cluster.objects.items()
            if resource.plural == plural and not obj.deleted}


def labelled(cluster: kmock.KubernetesEmulator, nodes: list[str], key: str, value: str) -> int:
    bodies = current(cluster, "nodes")
    return sum(1 for name in nodes
               if (bodies[name]["metadata"].get("labels") or {}).get(key) == value)


def observed(cluster: kmock.KubernetesEmulator, nodes: list[str], generation: int) -> int:
    bodies = current(cluster, names.CRD_PLURAL)
    return sum(1 for name in nodes
               if (bodies[name].get("status") or {}).get("observedGeneration") == generation)


def start_operator(url: str, directory: str) -> tuple[subprocess.Popen[bytes], IO[str]]:
    """``gpunuma operator`` as a subprocess, its kubeconfig pointing at kmock, logs to a file."""
    kubeconfig = Path(directory, "kubeconfig")
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: bench\n"
        f"clusters: [{{name: bench, cluster: {{server: '{url}'}}}}]\n"
        "contexts: [{name: bench, context: {cluster: bench, user: bench}}]\n"
        "users: [{name: bench, user: {token: bench}}]\n"
    )
    env = {**os.environ, "KUBECONFIG": str(kubeconfig), "PYTHONPATH": str(ROOT)}
    log = Path(directory, "operator.log").open("w+")  # noqa: SIM115 - closed by stop_operator
    process = subprocess.Popen(
        [sys.executable, "-m", "gpunuma", "operator", "--standalone", "--liveness", "",
         "--certificates", "cert-manager", "--log-format", "plain"],
        env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    return process, log


def stop_operator(process: subprocess.Popen[bytes], log: IO[str]) -> None:
    process.terminate()
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(10)
    if process.poll() is None:
        process.kill()
        process.wait()
    if process.returncode not in (0, -15):
        log.seek(0)
        print(log.read()[-5000:], file=sys.stderr)
    log.close()


async def wait_for(check: Any, total: int, limit_s: float, what: str) -> float:
    start = time.perf_counter()
    while (done := check()) < total:
        if time.perf_counter() - start > limit_s:
            raise SystemExit(f"gave up after {limit_s} s: {what}: {done}/{total}")
        await asyncio.sleep(0.2)  # each check walks every object: keep them rare
    return time.perf_counter() - start


def import_baseline_kib() -> int:
    """VmRSS of a Python that has only imported the operator (kopf, aiohttp, cryptography)."""
    code = ("import gpunuma.operator.run, pathlib; print([l.split()[1] for l in pathlib.Path("
            "'/proc/self/status').read_text().splitlines() if l.startswith('VmRSS')][0])")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    return int(result.stdout)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time the process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def memory_kib(pid: int) -> dict[str, int]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in {"VmRSS", "VmHWM"}:
            fields[key] = int(value.split()[0])
    return fields


async def baseline(cluster: kmock.KubernetesEmulator, nodes: list[str],
                   labels: dict[str, str]) -> float:
    """N bare sequential merge patches of the same labels: the floor for labelling N Nodes.

    Written under another prefix, so the operator still finds every Node unlabelled afterwards.
    """
    foreign = {key.replace(names.PREFIX, "bench.example/"): value for key, value in labels.items()}
    async with aiohttp.ClientSession() as session:
        start = time.perf_counter()
        for name in nodes:
            async with session.patch(
                f"{cluster.url}/api/v1/nodes/{name}", json={"metadata": {"labels": foreign}},
                headers={"Content-Type": "application/merge-patch+json"},
            ) as response:
                response.raise_for_status()
        return time.perf_counter() - start


async def run(count: int, changed: int, limit_s: float) -> None:
    CountingEmulator.counts = Counter()
    async with CountingEmulator() as cluster, kmock.Server(cluster):
        declare(cluster)
        nodes = [f"gpu-{i:04d}" for i in range(count)]
        spec = two_socket_spec()
        labels = node_labels(Layout.from_document(spec))
        for name in nodes:
            cluster.objects["v1/nodes", None, name] = {
                "apiVersion": "v1", "kind": "Node",
                "metadata": {"name": name, "uid": f"uid-{name}",
                             "labels": {"kubernetes.io/hostname": name}},
            }
            cluster.objects[LAYOUTS, None, name] = layout_body(name, two_socket_spec())

        floor = await baseline(cluster, nodes, labels)
        imported = await asyncio.to_thread(import_baseline_kib)

        with tempfile.TemporaryDirectory() as tmp:
            mark = cluster.counts.copy()
            process, log = start_operator(str(cluster.url), tmp)
            try:
                startup = await wait_for(
                    lambda: min(labelled(cluster, nodes, names.LABEL_LAYOUT, "4-4"),
                                observed(cluster, nodes, 1)),
                    count, limit_s, "nodes labelled at start-up")
                startup_cpu = cpu_seconds(process.pid)
                await asyncio.sleep(0.5)
                start_counts = since(cluster, mark)

                mark = cluster.counts.copy()
                async with aiohttp.ClientSession() as session:
                    sent = time.perf_counter()
                    for name in nodes:
                        await patch(session, cluster, name,
                                    {"metadata": {"generation": 2},
                                     "spec": {"heartbeatTime": now_rfc3339()}})
                    await wait_for(lambda: observed(cluster, nodes, 2), count, limit_s,
                                   "heartbeats observed")
                    beats = time.perf_counter() - sent
                    await asyncio.sleep(0.5)
                    beat_counts = since(cluster, mark)

                    mark = cluster.counts.copy()
                    sent = time.perf_counter()
                    spec_changed = two_socket_spec()
                    spec_changed["gpus"][7]["numaNode"] = None
                    for name in nodes[:changed]:
                        await patch(session, cluster, name,
                                    {"metadata": {"generation": 3}, "spec": spec_changed})
                    await wait_for(
                        lambda: labelled(cluster, nodes[:changed], names.LABEL_LAYOUT, "unknown"),
                        changed, limit_s, "changed layouts relabelled")
                    changes = time.perf_counter() - sent
                    await asyncio.sleep(0.5)
                    change_counts = since(cluster, mark)
                memory = memory_kib(process.pid)
            finally:
                stop_operator(process, log)

    print(f"nodes: {count}, changed layouts: {changed}")
    print(f"baseline: {count} bare sequential node patches: {floor:.2f} s")
    print(f"start-up: every node labelled and every status written in {startup:.2f} s "
          f"({startup / floor:.1f}× baseline)")
    print(f"  operator CPU (imports and kopf start included): {startup_cpu:.2f} s, "
          f"{startup_cpu / count * 1000:.1f} ms per node")
    print(f"  requests: {dict(start_counts)}")
    print(f"  node patches per node: {start_counts['node patch'] / count:.2f} (target 1.00)")
    print(f"heartbeats: {count} sent and observed in {beats:.2f} s; node patches: "
          f"{beat_counts['node patch']} (target 0); status patches per heartbeat: "
          f"{beat_counts['status patch'] / count:.2f}")
    # A heartbeat is a spec change (metadata.generation moves), so the status' observedGeneration
    # follows it: the operator's cost of the agents' heartbeats, on a quiet cluster.
    per_hour = beat_counts["status patch"] / count * 3600 / HEARTBEAT_S
    print(f"  status writes per node-hour from heartbeats alone (agent --heartbeat "
          f"{HEARTBEAT_S:g} s): {per_hour:.1f}, {per_hour * count:.0f}/h for {count} nodes")
    print(f"changes: {changed} sent and relabelled in {changes:.2f} s; node patches per changed "
          "layout: "
          f"{change_counts['node patch'] / changed:.2f} (target 1.00)")
    grown = memory["VmRSS"] - imported
    print(f"operator memory: VmRSS {memory['VmRSS'] / 1024:.0f} MiB (peak "
          f"{memory['VmHWM'] / 1024:.0f} MiB); baseline after imports {imported / 1024:.0f} MiB "
          f"({memory['VmRSS'] / imported:.1f}×): {grown / count:.0f} KiB per node")


async def patch(session: aiohttp.ClientSession, cluster: kmock.KubernetesEmulator, name: str,
                body: dict[str, Any]) -> None:
    async with session.patch(f"{cluster.url}{LAYOUTS_URL}/{name}", json=body,
                             headers={"Content-Type": "application/merge-patch+json"}) as response:
        response.raise_for_status()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--changed", type=int, default=100)
    parser.add_argument("--timeout", type=float, default=45.0)
    args = parser.parse_args()
    asyncio.run(run(args.nodes, min(args.changed, args.nodes), args.timeout))


if __name__ == "__main__":
    main()
