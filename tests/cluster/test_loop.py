"""The whole loop on kwok GPU Nodes: agent → GPUNumaLayout → operator → Node labels; webhook →
pod → kwok Running → kubelet allocations → operator → placement annotations; kubectl gpunuma.

Every component is the real command with the chart's configuration and its own ServiceAccount;
the operator's watches use the server-side label selector of the real API server.
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.cluster import agents
from tests.cluster.conftest import KWOK_NODE_ANNOTATION, Release, assert_every_request_allowed
from tests.cluster.controlplane import ControlPlane, Process
from tests.cluster.kubelets import PodResourcesServer
from tests.cluster.webhooks import Webhook
from tests.fixtures import machines

NODES = {"gpu-a": machines.two_socket_8gpu, "gpu-b": machines.epyc_nps4_8node}


def gpu_node(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "annotations": {KWOK_NODE_ANNOTATION: "fake"},
                     "labels": {"feature.node.kubernetes.io/pci-10de.present": "true",
                                "kubernetes.io/hostname": name}},
        "status": {"capacity": {"cpu": "64", "memory": "1Ti", "pods": "110",
                                "nvidia.com/gpu": "8"}},
    }


@pytest.fixture
def socket_dir() -> Iterator[Path]:
    """A short directory for the unix sockets (paths are limited to 107 bytes)."""
    with tempfile.TemporaryDirectory(prefix="gn-cp-") as directory:
        yield Path(directory)


def table(text: str) -> list[dict[str, str]]:
    """kubectl-style columns (three spaces apart; a header or cell may hold single spaces)."""
    header, *lines = text.splitlines()
    names = re.split(r"\s{2,}", header.strip())
    return [dict(zip(names, re.split(r"\s{2,}", line.strip()), strict=True)) for line in lines]


def _node(cluster: ControlPlane, name: str) -> dict[str, Any]:
    node: dict[str, Any] = cluster.request("GET", f"/api/v1/nodes/{name}")
    return node


def _ready(node: dict[str, Any]) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True"
               for c in node.get("status", {}).get("conditions", []))


def test_agents_operator_webhook_and_kubectl_plugin_on_kwok_gpu_nodes(
    release: Release, operator: Process, webhook: Webhook, kwok: Process,
    tmp_path: Path, socket_dir: Path,
) -> None:
    cluster = release.cluster
    cluster.apply(gpu_node(name) for name in NODES)
    for name in NODES:
        cluster.wait_for(f"kwok to make {name} Ready", lambda n=name: _ready(_node(cluster, n)),
                         60)
    trees = {name: machines.build(shape(), tmp_path / name) for name, shape in NODES.items()}
    documents = {name: agents.inspect_document(tree) for name, tree in trees.items()}
    kubelets = {name: PodResourcesServer(socket_dir / f"{name}.sock") for name in NODES}
    env = agents.workload_env(cluster, release.namespace, "DaemonSet",
                              release.service_account("agent"))
    processes = [
        # Each agent with its node's pod-bound token, as on a node (the chart's admission policy
        # lets it write only that node's layout).
        agents.agent(name, trees[name], release.agent_kubeconfig(name), tmp_path / f"agent-{name}.log",
                     kubelet_socket=kubelets[name].socket,
                     extra=("--allocations-interval", "0.5",
                            "--heartbeat", env.get("GPUNUMA_HEARTBEAT", "600")))
        for name in NODES
    ]
    try:
        _loop(cluster, release, documents, kubelets, tmp_path)
    except AssertionError as error:
        logs = "\n".join(f"--- {p.name} ---\n{p.tail(20)}" for p in [*processes, operator])
        raise AssertionError(f"{error}\n{logs}") from None
    finally:
        for process in processes:
            process.stop()
        for kubelet in kubelets.values():
            kubelet.stop()
    assert assert_every_request_allowed(release, "agent") > 0
    assert_every_request_allowed(release, "operator")
    # The operator reads pods only through a server-side selector on the managed label.
    operator_user = f"system:serviceaccount:{release.namespace}:{release.service_account('operator')}"
    pod_reads = [e["requestURI"] for e in cluster.audit_events(operator_user)
                 if e["verb"] in ("list", "watch") and e["objectRef"]["resource"] == "pods"]
    assert pod_reads
    assert all("labelSelector=gpunuma.io/managed" in uri for uri in pod_reads), pod_reads


def _loop(cluster: ControlPlane, release: Release, documents: dict[str, dict[str, Any]],
          kubelets: dict[str, PodResourcesServer], tmp_path: Path) -> None:
    # Node labels, from each node's layout, by the operator through its watches.
    for name, document in documents.items():
        expected = document["labels"]
        cluster.wait_for(
            f"the operator to label {name}",
            lambda n=name, e=expected: all(_node(cluster, n)["metadata"].get("labels", {}).get(k)
                                           == v for k, v in e.items()), 60)

    # An opted-in pod through the webhook, bound to gpu-a, given GPUs 4 and 5 (NUMA node 1).
    namespace = cluster.namespace("ml")
    pod = cluster.request("POST", f"/api/v1/namespaces/{namespace}/pods", {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "trainer-0", "annotations": {"gpunuma.io/inject": "true",
                                                          "gpunuma.io/policy": "strict"}},
        "spec": {"nodeName": "gpu-a", "containers": [{
            "name": "trainer", "image": "registry.example/pytorch:24", "command": ["torchrun"],
            "resources": {"limits": {"nvidia.com/gpu": "2"}}}]},
    })
    assert pod["metadata"]["labels"]["gpunuma.io/managed"] == "true"
    kubelets["gpu-a"].allocate({(namespace, "trainer-0"): {"trainer": {"nvidia.com/gpu": ["4", "5"]}}})
    path = f"/api/v1/namespaces/{namespace}/pods/trainer-0"
    cluster.wait_for("kwok to run trainer-0",
                     lambda: cluster.request("GET", path)["status"].get("phase") == "Running", 60)
    numa1 = next(node["cpus"] for node in documents["gpu-a"]["numaNodes"] if node["id"] == 1)
    annotations = cluster.wait_for(
        "the operator to write trainer-0's placement",
        lambda: (cluster.request("GET", path)["metadata"].get("annotations", {})
                 if "gpunuma.io/placement" in cluster.request("GET", path)["metadata"]
                 .get("annotations", {}) else None), 60)
    assert annotations["gpunuma.io/numa-nodes"] == "1"
    assert annotations["gpunuma.io/cpuset"] == numa1

    # The kubectl plugin, run by kubectl, as the admin; tables read by their headers.
    shims = tmp_path / "plugins"
    nodes = agents.kubectl_gpunuma(["nodes", "-o", "wide"], cluster.admin_kubeconfig, shims)
    assert nodes.returncode == 0, nodes.stderr
    rows = {row["NODE"]: row for row in table(nodes.stdout)}
    for name, document in documents.items():
        assert rows[name]["LAYOUT"] == document["labels"]["gpunuma.io/layout"], nodes.stdout
        assert rows[name]["GPUS"] == "8", nodes.stdout
        assert rows[name]["LABELED"] == "yes", nodes.stdout
        assert rows[name]["STALE"] == "no", nodes.stdout
    pods = agents.kubectl_gpunuma(["pods", "-A"], cluster.admin_kubeconfig, shims)
    assert pods.returncode == 0, pods.stderr
    (row,) = [row for row in table(pods.stdout) if row["POD"] == "trainer-0"]
    assert (row["NAMESPACE"], row["NODE"], row["POLICY"], row["NUMA NODES"], row["CPUSET"]) == (
        "ml", "gpu-a", "strict", "1", numa1), pods.stdout
    explain = agents.kubectl_gpunuma(["explain", "trainer-0", "-n", "ml"],
                                     cluster.admin_kubeconfig, shims)
    assert explain.returncode == 0, explain.stderr
    assert "Phase:       Running" in explain.stdout
    # kwok runs no processes: the agent finds none to observe, and explain says so beside the plan.
    assert (f"planned for NUMA node(s) 1, CPUs {numa1}; not observed: the node's agent has not "
            "found every container's processes") in explain.stdout
