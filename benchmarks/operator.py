"""The operator at cluster scale: 1,000 GPU nodes' layouts in kmock, the real ``gpunuma operator``.

Run: ``python3 benchmarks/operator.py [--nodes N] [--changed M]``. kmock (the Kubernetes API
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
from typing import Any

import aiohttp
import kmock

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gpunuma import names
from gpunuma.topology import Layout, node_labels
from tests.operator.conftest import LAYOUTS, LAYOUTS_URL, layout_body, now_rfc3339, two_socket_spec

ROOT = Path(__file__).resolve().parents[1]


def declare(cluster: kmock.KubernetesEmulator) -> None:
    cluster.resources.load_bundled()
    cluster.resources[LAYOUTS] = kmock.ResourceInfo(
        kind=names.CRD_KIND, singular="gpunumalayout", namespaced=False, subresources={"status"},
        verbs={"get", "list", "watch", "create", "update", "patch", "delete"},
    )


def requests_by_kind(cluster: kmock.KubernetesEmulator, since: int) -> Counter[str]:
    counts: Counter[str] = Counter()
    for request in list(cluster)[since:]:
        method = str(request.method.value).upper()
        path = request.url.path
        if method == "PATCH" and path.startswith("/api/v1/nodes/"):
            counts["node patch"] += 1
        elif method == "PATCH" and path.endswith("/status"):
            counts["status patch"] += 1
        elif request.url.query.get("watch") == "true":
            counts["watch"] += 1
        else:
            counts[f"{method.lower()} other"] += 1
    return counts


def labelled(cluster: kmock.KubernetesEmulator, nodes: list[str], key: str, value: str) -> int:
    return sum(
        1 for name in nodes
        if (cluster.objects["v1/nodes", None, name].raw["metadata"].get("labels") or {}).get(key)
        == value
    )


def observed(cluster: kmock.KubernetesEmulator, nodes: list[str], generation: int) -> int:
    return sum(
        1 for name in nodes
        if (cluster.objects[LAYOUTS, None, name].raw.get("status") or {}).get("observedGeneration")
        == generation
    )


async def wait_for(check: Any, total: int, timeout: float, what: str) -> float:
    start = time.perf_counter()
    while (done := check()) < total:
        if time.perf_counter() - start > timeout:
            raise SystemExit(f"timed out after {timeout} s: {what}: {done}/{total}")
        await asyncio.sleep(0.05)
    return time.perf_counter() - start


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


async def run(count: int, changed: int, timeout: float) -> None:
    async with kmock.KubernetesEmulator() as cluster, kmock.Server(cluster):
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

        with tempfile.TemporaryDirectory() as tmp:
            kubeconfig = Path(tmp, "kubeconfig")
            kubeconfig.write_text(
                "apiVersion: v1\nkind: Config\ncurrent-context: bench\n"
                f"clusters: [{{name: bench, cluster: {{server: '{cluster.url}'}}}}]\n"
                "contexts: [{name: bench, context: {cluster: bench, user: bench}}]\n"
                "users: [{name: bench, user: {token: bench}}]\n"
            )
            env = {**os.environ, "KUBECONFIG": str(kubeconfig), "PYTHONPATH": str(ROOT)}
            mark = len(list(cluster))
            log = Path(tmp, "operator.log").open("w+")
            process = subprocess.Popen(
                [sys.executable, "-m", "gpunuma", "operator", "--standalone", "--liveness", "",
                 "--certificates", "cert-manager", "--log-format", "plain"],
                env=env, stdout=log, stderr=subprocess.STDOUT,
            )
            try:
                startup = await wait_for(
                    lambda: min(labelled(cluster, nodes, names.LABEL_LAYOUT, "4-4"),
                                observed(cluster, nodes, 1)),
                    count, timeout, "nodes labelled at start-up")
                await asyncio.sleep(0.5)
                start_counts = requests_by_kind(cluster, mark)

                mark = len(list(cluster))
                async with aiohttp.ClientSession() as session:
                    for name in nodes:
                        await patch(session, cluster, name,
                                    {"metadata": {"generation": 2},
                                     "spec": {"heartbeatTime": now_rfc3339()}})
                    beats = await wait_for(lambda: observed(cluster, nodes, 2), count, timeout,
                                           "heartbeats observed")
                    await asyncio.sleep(0.5)
                    beat_counts = requests_by_kind(cluster, mark)

                    mark = len(list(cluster))
                    spec_changed = two_socket_spec()
                    spec_changed["gpus"][7]["numaNode"] = None
                    for name in nodes[:changed]:
                        await patch(session, cluster, name,
                                    {"metadata": {"generation": 3}, "spec": spec_changed})
                    changes = await wait_for(
                        lambda: labelled(cluster, nodes[:changed], names.LABEL_LAYOUT, "unknown"),
                        changed, timeout, "changed layouts relabelled")
                    await asyncio.sleep(0.5)
                    change_counts = requests_by_kind(cluster, mark)
                memory = memory_kib(process.pid)
            finally:
                process.terminate()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(10)
                if process.poll() is None:
                    process.kill()
                if process.returncode not in (0, -15):
                    log.seek(0)
                    print(log.read()[-5000:], file=sys.stderr)
                log.close()

    print(f"nodes: {count}, changed layouts: {changed}")
    print(f"baseline: {count} bare sequential node patches: {floor:.2f} s")
    print(f"start-up: every node labelled and every status written in {startup:.2f} s "
          f"({startup / floor:.1f}× baseline)")
    print(f"  requests: {dict(start_counts)}")
    print(f"  node patches per node: {start_counts['node patch'] / count:.2f} (target 1.00)")
    print(f"heartbeats: {count} observed in {beats:.2f} s; node patches: "
          f"{beat_counts['node patch']} (target 0); status patches per heartbeat: "
          f"{beat_counts['status patch'] / count:.2f}")
    print(f"changes: {changed} relabelled in {changes:.2f} s; node patches per changed layout: "
          f"{change_counts['node patch'] / changed:.2f} (target 1.00)")
    print(f"operator memory: VmRSS {memory['VmRSS'] / 1024:.0f} MiB, "
          f"VmHWM {memory['VmHWM'] / 1024:.0f} MiB "
          f"({memory['VmRSS'] / count:.0f} KiB per node)")


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
