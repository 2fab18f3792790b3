"""The GPUNumaLayout CRD, served by a real API server, holds what the real agent writes.

Every fixture machine's agent publishes through the chart's agent ServiceAccount; the stored spec
must equal the layout document `gpunuma inspect -o json` prints for the same tree: a field the
structural schema does not declare would be pruned silently, a null it does not allow refused.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.cluster import agents
from tests.cluster.conftest import Release, assert_every_request_allowed
from tests.cluster.controlplane import Process
from tests.fixtures import machines

LAYOUTS = "/apis/gpunuma.io/v1alpha1/gpunumalayouts"


def node_name(shape: str) -> str:
    return "crd-" + shape.replace("_", "-")


def test_the_served_crd_keeps_every_agent_document_and_kubectl_shows_the_columns(
    release: Release, tmp_path: Path,
) -> None:
    cluster = release.cluster
    nodes = {shape: node_name(shape) for shape in sorted(machines.SHAPES)}
    cluster.apply({"apiVersion": "v1", "kind": "Node", "metadata": {"name": node}}
                  for node in nodes.values())
    trees = {shape: machines.build(machines.SHAPES[shape](), tmp_path / shape) for shape in nodes}
    processes: list[Process] = []

    def published() -> dict[str, dict[str, Any]] | None:
        items = cluster.request("GET", LAYOUTS)["items"]
        found = {item["metadata"]["name"]: item for item in items
                 if item["metadata"]["name"] in nodes.values()}
        return found if len(found) == len(nodes) else None

    try:
        for shape, node in nodes.items():
            # Each agent with its own pod-bound token, as on a node: the chart's admission
            # policy lets it write only the layout of that node.
            kubeconfig = release.agent_kubeconfig(node)
            processes.append(agents.agent(node, trees[shape], kubeconfig, tmp_path / f"{node}.log",
                                          kubelet_socket=tmp_path / "no-kubelet.sock"))
        try:
            layouts = cluster.wait_for("a GPUNumaLayout from every agent", published, timeout=120)
        except AssertionError as error:
            logs = "\n".join(f"--- {p.name} ---\n{p.tail(15)}" for p in processes)
            raise AssertionError(f"{error}\n{logs}") from None
    finally:
        for process in processes:
            process.stop()

    documents = {shape: agents.inspect_document(tree) for shape, tree in trees.items()}
    assert assert_every_request_allowed(release, "agent") >= 2 * len(nodes)  # get node, create
    for shape, node in nodes.items():
        expected = documents[shape]
        spec = layouts[node]["spec"]
        for key in ("numaNodes", "gpus", "source", "errors"):
            assert spec[key] == expected[key], (
                f"{shape}: spec.{key} stored by the API server differs from the agent's document")
        owners = layouts[node]["metadata"]["ownerReferences"]
        assert [(o["kind"], o["name"]) for o in owners] == [("Node", node)]

    table = cluster.kubectl("get", "gnl", "-o", "wide").stdout.splitlines()
    assert table[0].split() == ["NAME", "NODE", "GPUS", "NUMA", "LAYOUT", "SOURCE", "AGE",
                                "HEARTBEAT"]
    rows = {line.split()[0]: line.split() for line in table[1:]}
    for shape, node in nodes.items():
        expected = documents[shape]
        labels = expected["labels"]
        numa_count = labels.get("gpunuma.io/numa-count",
                                str(sum(1 for n in expected["numaNodes"] if n["cpus"])))
        assert rows[node][:6] == [
            node, node, str(len(expected["gpus"])), numa_count,
            labels.get("gpunuma.io/layout", "<none>"), expected["source"],
        ], f"{shape}: kubectl get gnl row"
