"""A cluster for `kubectl gpunuma`: kmock's Kubernetes emulator filled with realistic objects.

Layouts come from real discovery over the fixture machines (what an agent would publish on them)
and Node labels from the real label projection; pods look as the webhook and operator leave them.
kmock ignores label selectors, so unmanaged pods in the emulator also check the plugin's own filter.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from gpunuma import names
from gpunuma.discovery import discover
from gpunuma.kubectl import main
from gpunuma.settings import DiscoverySettings
from gpunuma.topology import node_labels
from tests.fixtures import machines

LAYOUTS = "gpunuma.io/v1alpha1/gpunumalayouts"


def timestamp(minutes_ago: float) -> str:
    """RFC 3339, as the API server writes it; relative to now, as the plugin's ages are."""
    return (dt.datetime.now(dt.UTC) - dt.timedelta(minutes=minutes_ago)).strftime("%Y-%m-%dT%H:%M:%SZ")


def layout_object(node: str, machine: machines.Machine, root: Path, *, heartbeat_minutes_ago: float,
                  stale: bool = False) -> tuple[dict[str, Any], dict[str, str]]:
    """The GPUNumaLayout an agent publishes for this machine, and the labels the operator applies."""
    tree = machines.build(machine, root / node)
    layout = discover(DiscoverySettings(sysfs_root=tree.sysfs, procfs_root=tree.procfs, backend="sysfs"))
    per_node = layout.gpus_per_cpu_node()
    unknown = any(gpu.numa_node is None for gpu in layout.gpus)
    spec = {
        **layout.to_document(),
        "summary": {"gpus": len(layout.gpus), "numaNodes": len(layout.cpu_nodes),
                    "layout": "unknown" if unknown else "-".join(map(str, per_node.values()))},
        "allocations": [],
        "heartbeatTime": timestamp(heartbeat_minutes_ago),
    }
    status = {"conditions": [{"type": "Stale", "status": "True" if stale else "False"}]}
    obj = {"apiVersion": "gpunuma.io/v1alpha1", "kind": "GPUNumaLayout",
           "metadata": {"name": node, "ownerReferences": [{"kind": "Node", "name": node}]},
           "spec": spec, "status": status}
    return obj, node_labels(layout)


def node_object(name: str, labels: dict[str, str]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": labels}}


def gpu_container(name: str, command: list[str] | None, gpus: int = 1, resource: str = "nvidia.com/gpu",
                  *, wrapped_policy: str | None = None) -> dict[str, Any]:
    container: dict[str, Any] = {"name": name, "image": "nvcr.io/nvidia/pytorch:24.05-py3",
                                 "resources": {"limits": {resource: str(gpus)}}}
    if command is not None:
        container["command"] = [names.LAUNCHER_PATH, "--", *command] if wrapped_policy else command
    if wrapped_policy:
        container["env"] = [{"name": "GPUNUMA_POLICY", "value": wrapped_policy}]
        container["volumeMounts"] = [{"name": names.LAUNCHER_VOLUME, "mountPath": names.LAUNCHER_MOUNT_PATH,
                                      "readOnly": True}]
    return container


def pod_object(namespace: str, name: str, containers: list[dict[str, Any]], *, node: str | None = "gpu-a",
               phase: str = "Running", annotations: dict[str, str] | None = None,
               managed: bool = False) -> dict[str, Any]:
    labels = {"app": name.rsplit("-", 1)[0]}
    if managed:
        labels[names.LABEL_MANAGED] = "true"
    spec: dict[str, Any] = {"containers": containers}
    if node:
        spec["nodeName"] = node
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace, "labels": labels,
                         "annotations": annotations or {}},
            "spec": spec, "status": {"phase": phase}}


def injected(wrapped: str, *, skipped: str = "", policy: str | None = None, **extra: str) -> dict[str, str]:
    """Annotations of a pod the webhook mutated after it opted in by annotation."""
    annotations = {names.ANNOTATION_INJECT: "true", names.ANNOTATION_INJECTED: "0.1.0",
                   names.ANNOTATION_WRAPPED: wrapped, **extra}
    if skipped:
        annotations[names.ANNOTATION_SKIPPED] = skipped
    if policy:
        annotations[names.ANNOTATION_POLICY] = policy
    return annotations


@pytest.fixture
def kubeconfig(kmock: Any, tmp_path: Path) -> Path:
    """A kubeconfig whose current context points at the emulator with default namespace `ml`."""
    server = str(kmock.url).rstrip("/")
    config = {
        "apiVersion": "v1", "kind": "Config", "current-context": "lab",
        "clusters": [{"name": "kmock", "cluster": {"server": server}}],
        "users": [{"name": "dev", "user": {"token": "not-checked"}}],
        "contexts": [
            {"name": "lab", "context": {"cluster": "kmock", "user": "dev", "namespace": "ml"}},
            {"name": "research", "context": {"cluster": "kmock", "user": "dev", "namespace": "research"}},
        ],
    }
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture
def cluster(kmock: Any, tmp_path: Path) -> Any:
    """Three GPU nodes, one CPU node, one layout whose Node is gone; pods in three namespaces."""
    a, a_labels = layout_object("gpu-a", machines.two_socket_8gpu(), tmp_path, heartbeat_minutes_ago=4.5)
    b, b_labels = layout_object("gpu-b", machines.vm_two_node(), tmp_path, heartbeat_minutes_ago=95,
                                stale=True)
    c, _ = layout_object("gpu-c", machines.epyc_nps4_8node(), tmp_path, heartbeat_minutes_ago=3.5)
    # Its Node is gone, so no label can say it is stale: only the layout's Stale condition does.
    gone, _ = layout_object("gpu-old", machines.vm_single_node(), tmp_path, heartbeat_minutes_ago=300,
                            stale=True)
    for obj in (a, b, c, gone):
        kmock.objects[LAYOUTS, None, obj["metadata"]["name"]] = obj
    for node in (node_object("gpu-a", a_labels),
                 node_object("gpu-b", {**b_labels, names.LABEL_STALE: "true"}),
                 node_object("gpu-c", {}),  # the operator has not labelled it yet
                 node_object("cpu-1", {"kubernetes.io/os": "linux"})):
        kmock.objects["v1/nodes", None, node["metadata"]["name"]] = node
    # kmock reads /api/v1/namespaces/NAME as a namespace prefix, so namespaces are served as reactions.
    namespace_labels = {"ml": {names.LABEL_NAMESPACE_INJECT: names.NAMESPACE_INJECT_ENABLED}, "research": {}}
    for namespace, labels in namespace_labels.items():
        kmock[f"get /api/v1/namespaces/{namespace}"] << {
            "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace, "labels": labels}}

    placement = {"trainer": {"gpus": TRAINER_GPUS.split(","), "numaNodes": [1], "cpus": "56-111,168-223"}}
    pods = [
        pod_object("ml", "trainer-0", [
            gpu_container("trainer", ["torchrun", "train.py"], 2, wrapped_policy="strict"),
            {"name": "metrics", "image": "prom/statsd-exporter", "command": ["statsd"]},
        ], annotations=injected("trainer", policy="strict", **{
            names.ANNOTATION_PLACEMENT: json.dumps(placement),
            names.ANNOTATION_NUMA_NODES: "1", names.ANNOTATION_CPUSET: "56-111,168-223"}), managed=True),
        pod_object("ml", "vllm-0", [
            gpu_container("server", ["vllm", "serve", "meta-llama/Llama-3.1-8B"], 1,
                          wrapped_policy="preferred"),
        ], annotations={names.ANNOTATION_INJECTED: "0.1.0", names.ANNOTATION_WRAPPED: "server"},
            managed=True),
        pod_object("ml", "notebook-0", [gpu_container("jupyter", None, 1)], node="gpu-b",
                   annotations={names.ANNOTATION_INJECTED: "0.1.0", names.ANNOTATION_WRAPPED: "",
                                names.ANNOTATION_SKIPPED: "jupyter"}, managed=True),
        pod_object("ml", "batch-0",
                   [gpu_container("job", ["python", "job.py"], 1, wrapped_policy="cpu-only")],
                   node=None, phase="Pending",
                   annotations={names.ANNOTATION_INJECTED: "0.1.0", names.ANNOTATION_WRAPPED: "job"},
                   managed=True),
        pod_object("ml", "opted-out-0", [gpu_container("app", ["python", "app.py"])],
                   annotations={names.ANNOTATION_INJECT: "false"}),
        pod_object("research", "sim-0", [gpu_container("sim", ["./sim"], 4, "amd.com/gpu",
                                                       wrapped_policy="preferred")], node="gpu-c",
                   annotations=injected("sim", **{names.ANNOTATION_NUMA_NODES: "0,1,2,3",
                                                  names.ANNOTATION_CPUSET: "0-95"}), managed=True),
        pod_object("research", "plain-0", [gpu_container("app", ["python", "app.py"])]),
        pod_object("research", "late-0", [gpu_container("app", ["python", "app.py"])],
                   annotations={names.ANNOTATION_INJECT: "true"}),
        pod_object("research", "cpu-0", [{"name": "app", "image": "busybox", "command": ["sleep", "1d"]}],
                   annotations={names.ANNOTATION_INJECT: "true"}),
    ]
    for pod in pods:
        kmock.objects["v1/pods", pod["metadata"]["namespace"], pod["metadata"]["name"]] = pod
    for (namespace, pod_name, container), log in LOGS.items():
        path = f"get /api/v1/namespaces/{namespace}/pods/{pod_name}/log"
        kmock[path, kmock.params(container=container)] << log
    kmock["get /api/v1/namespaces/ml/pods/batch-0/log", kmock.params(container="job")] << 400 << {
        "apiVersion": "v1", "kind": "Status", "status": "Failure", "code": 400, "reason": "BadRequest",
        "message": 'container "job" in pod "batch-0" is waiting to start: ContainerCreating'}
    return kmock


TRAINER_GPUS = "GPU-00000000-0000-0000-0000-000000000004,GPU-00000000-0000-0000-0000-000000000005"
TRAINER_LINE = ("gpunuma: policy=strict gpus=0000:9a:00.0,0000:ab:00.0 numa=1 cpus=56-111,168-223 mem=bind")
VLLM_LINE = "gpunuma: policy=preferred gpus=0000:1b:00.0 numa=0 cpus=0-55,112-167 mem=preferred"
LOGS = {
    ("ml", "trainer-0", "trainer"): f"{TRAINER_LINE}\n[rank0] epoch 1 step 10 loss 2.31\n".encode(),
    # numa-exec writes before it execs the command: its line comes first.
    ("ml", "vllm-0", "server"): f"{VLLM_LINE}\nINFO starting\nINFO Uvicorn running on :8000\n".encode(),
    ("research", "sim-0", "sim"): b"sim: 4 devices\n",
}


async def run_kubectl(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """Run the plugin as kubectl would, in a thread (its client blocks; the emulator is on this loop)."""
    code = await asyncio.to_thread(main, list(argv))
    out, err = capsys.readouterr()
    return code, out, err
