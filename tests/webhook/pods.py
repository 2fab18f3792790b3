"""Realistic GPU pods, as the API server would hand them to the webhook, and checks on the result.

Shapes follow what the workloads' own controllers create: vLLM's OpenAI server Deployment, a
Kubeflow PyTorchJob worker (torchrun, the operator's init container), a KubeRay GPU worker, a pod
with a GPU init container and a GPU native sidecar, a MIG request, an AMD ROCm pod.
"""

from __future__ import annotations

import base64
import copy
import json
import posixpath
from collections import Counter
from typing import Any

import jsonpatch
import kubernetes_validate

from gpunuma import names

# The oldest version the chart supports (matchConditions) and the newest schema bundled here.
KUBERNETES_VERSIONS = ("1.30", kubernetes_validate.latest_version())

OPT_IN = {names.ANNOTATION_INJECT: "true"}


def _pod(name: str, spec: dict[str, Any], *, annotations: dict[str, str] | None = None,
         labels: dict[str, str] | None = None, namespace: str = "ml") -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name, "namespace": namespace}
    if labels:
        metadata["labels"] = labels
    metadata["annotations"] = dict(OPT_IN if annotations is None else annotations)
    if not metadata["annotations"]:
        del metadata["annotations"]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec}


def vllm_server() -> dict[str, Any]:
    return _pod("vllm-llama-7d9f8c6b5-x2kqp", {
        "containers": [{
            "name": "vllm",
            "image": "vllm/vllm-openai:v0.6.3",
            "command": ["python3", "-m", "vllm.entrypoints.openai.api_server"],
            "args": ["--model", "meta-llama/Llama-3.1-70B-Instruct", "--tensor-parallel-size", "4",
                     "--port", "8000"],
            "env": [{"name": "HUGGING_FACE_HUB_TOKEN",
                     "valueFrom": {"secretKeyRef": {"name": "hf-token", "key": "token"}}}],
            "ports": [{"containerPort": 8000, "name": "http", "protocol": "TCP"}],
            "resources": {"limits": {"nvidia.com/gpu": "4", "cpu": "32", "memory": "256Gi"},
                          "requests": {"nvidia.com/gpu": "4", "cpu": "32", "memory": "256Gi"}},
            "volumeMounts": [{"name": "dshm", "mountPath": "/dev/shm"},
                             {"name": "cache", "mountPath": "/root/.cache/huggingface"}],
            "readinessProbe": {"httpGet": {"path": "/health", "port": 8000},
                               "periodSeconds": 5},
        }],
        "volumes": [{"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "16Gi"}},
                    {"name": "cache", "persistentVolumeClaim": {"claimName": "hf-cache"}}],
        "nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"},
        "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
    }, labels={"app": "vllm-llama", "pod-template-hash": "7d9f8c6b5"})


def torchrun_worker() -> dict[str, Any]:
    env = [{"name": "MASTER_ADDR", "value": "llm-pretrain-master-0"},
           {"name": "MASTER_PORT", "value": "23456"},
           {"name": "WORLD_SIZE", "value": "4"},
           {"name": "RANK", "value": "1"},
           {"name": "PET_NPROC_PER_NODE", "value": "8"},
           {"name": "PET_NNODES", "value": "4"}]
    return _pod("llm-pretrain-worker-0", {
        "initContainers": [{
            "name": "init-pytorch",
            "image": "alpine:3.10",
            "command": ["sh", "-c", "err=1;for i in $(seq 100); do if nslookup "
                        "llm-pretrain-master-0; then err=0 && break; fi;echo waiting for master; "
                        "sleep 2; done; exit $err"],
            "resources": {"limits": {"cpu": "100m", "memory": "20Mi"},
                          "requests": {"cpu": "50m", "memory": "10Mi"}},
        }],
        "containers": [{
            "name": "pytorch",
            "image": "nvcr.io/nvidia/pytorch:24.08-py3",
            "command": ["torchrun"],
            "args": ["--nnodes=4", "--nproc-per-node=8", "--rdzv-backend=c10d",
                     "/workspace/train.py", "--config", "/etc/train/config.yaml"],
            "env": env,
            "ports": [{"containerPort": 23456, "name": "pytorchjob-port"}],
            "resources": {"limits": {"nvidia.com/gpu": 8, "rdma/ib": 1}},
            "securityContext": {"capabilities": {"add": ["IPC_LOCK"]}},
        }],
        "restartPolicy": "Never",
        "hostIPC": True,
    }, labels={"training.kubeflow.org/job-name": "llm-pretrain",
               "training.kubeflow.org/replica-type": "worker",
               "training.kubeflow.org/replica-index": "0"})


def ray_gpu_worker() -> dict[str, Any]:
    return _pod("raycluster-gpu-worker-a100-9xk2z", {
        "initContainers": [{
            "name": "wait-gcs-ready",
            "image": "rayproject/ray-ml:2.35.0-gpu",
            "command": ["/bin/bash", "-lc", "--"],
            "args": ["until ray health-check --address raycluster-head-svc:6379; do sleep 5; "
                     "done"],
            "resources": {"limits": {"cpu": "200m", "memory": "256Mi"}},
        }],
        "containers": [{
            "name": "ray-worker",
            "image": "rayproject/ray-ml:2.35.0-gpu",
            "command": ["/bin/bash", "-lc", "--"],
            "args": ["ulimit -n 65536; ray start --address=raycluster-head-svc:6379 "
                     "--num-gpus=1 --block"],
            "env": [{"name": "RAY_IP", "value": "raycluster-head-svc"},
                    {"name": "RAY_USAGE_STATS_ENABLED", "value": "0"}],
            "lifecycle": {"preStop": {"exec": {"command": ["/bin/sh", "-c", "ray stop"]}}},
            "resources": {"limits": {"nvidia.com/gpu": 1, "cpu": "8", "memory": "64Gi"},
                          "requests": {"cpu": "8", "memory": "64Gi"}},
            "volumeMounts": [{"name": "shared-mem", "mountPath": "/dev/shm"}],
        }],
        "volumes": [{"name": "shared-mem", "emptyDir": {"medium": "Memory"}}],
    }, labels={"ray.io/cluster": "raycluster", "ray.io/node-type": "worker",
               "ray.io/group": "gpu-a100"})


def gpu_sidecar_and_init() -> dict[str, Any]:
    """A GPU init container (engine warm-up), a GPU native sidecar, and a plain log sidecar."""
    return _pod("triton-with-sidecars", {
        "initContainers": [
            {"name": "fetch-model", "image": "amazon/aws-cli:2.17",
             "command": ["aws", "s3", "sync", "s3://models/llama", "/models"],
             "volumeMounts": [{"name": "models", "mountPath": "/models"}]},
            {"name": "build-engine", "image": "nvcr.io/nvidia/tensorrt:24.08-py3",
             "command": ["trtexec", "--onnx=/models/model.onnx", "--saveEngine=/models/m.plan"],
             "resources": {"limits": {"nvidia.com/gpu": 1}},
             "volumeMounts": [{"name": "models", "mountPath": "/models"}]},
            {"name": "gpu-profiler",
             "image": "nvcr.io/nvidia/cloud-native/dcgm:3.3.7-1-ubuntu22.04",
             "command": ["dcgmi", "dmon", "-e", "203,204"],
             "restartPolicy": "Always",
             "resources": {"limits": {"nvidia.com/gpu": 1}}},
            {"name": "log-shipper", "image": "fluent/fluent-bit:3.1", "restartPolicy": "Always"},
        ],
        "containers": [{
            "name": "triton", "image": "nvcr.io/nvidia/tritonserver:24.08-py3",
            "command": ["tritonserver"], "args": ["--model-repository=/models"],
            "resources": {"limits": {"nvidia.com/gpu": 1}},
            "volumeMounts": [{"name": "models", "mountPath": "/models"}],
        }],
        "volumes": [{"name": "models", "emptyDir": {}}],
    })


def mig_pod() -> dict[str, Any]:
    return _pod("notebook-mig", {"containers": [{
        "name": "jupyter", "image": "quay.io/jupyter/pytorch-notebook:cuda12-2024-09-02",
        "command": ["start-notebook.py"], "args": ["--NotebookApp.token="],
        "resources": {"limits": {"nvidia.com/mig-1g.10gb": 1},
                      "requests": {"cpu": "2", "memory": "8Gi"}},
    }]})


def amd_pod() -> dict[str, Any]:
    return _pod("rocm-bench", {"containers": [{
        "name": "bench", "image": "rocm/pytorch:rocm6.2_ubuntu22.04_py3.10_pytorch_release_2.3.0",
        "command": ["python3", "benchmark.py"], "args": ["--batch-size", "64"],
        "resources": {"limits": {"amd.com/gpu": 2, "cpu": "16", "memory": "64Gi"},
                      "requests": {"amd.com/gpu": 2, "cpu": "16", "memory": "64Gi"}},
        "securityContext": {"seccompProfile": {"type": "Unconfined"}},
    }], "hostIPC": True})


REALISTIC_PODS = {
    "vllm-openai-server": (vllm_server, ["vllm"]),
    "torchrun-pytorchjob-worker": (torchrun_worker, ["pytorch"]),
    "ray-gpu-worker": (ray_gpu_worker, ["ray-worker"]),
    "gpu-native-sidecar-and-init": (gpu_sidecar_and_init, ["build-engine", "gpu-profiler",
                                                           "triton"]),
    "mig-request": (mig_pod, ["jupyter"]),
    "amd-rocm": (amd_pod, ["bench"]),
}


def admission_review(pod: dict[str, Any], *, uid: str = "705ab4f5-6393-11e8-b7cc-42010a800002",
                     operation: str = "CREATE") -> dict[str, Any]:
    """An AdmissionReview as kube-apiserver sends it for a pod creation."""
    metadata = pod.get("metadata", {})
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
            "requestResource": {"group": "", "version": "v1", "resource": "pods"},
            "name": metadata.get("name", ""),
            "namespace": metadata.get("namespace", "default"),
            "operation": operation,
            "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller",
                         "groups": ["system:serviceaccounts", "system:authenticated"]},
            "object": pod,
            "oldObject": None,
            "dryRun": False,
            "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"},
        },
    }


def patched(pod: dict[str, Any], response: dict[str, Any]) -> dict[str, Any]:
    """The pod after the API server applied the response's patch (the pod itself when none)."""
    body = response["response"]
    if "patch" not in body:
        assert "patchType" not in body
        return copy.deepcopy(pod)
    assert body["patchType"] == "JSONPatch"
    operations = json.loads(base64.b64decode(body["patch"]))
    result: dict[str, Any] = jsonpatch.apply_patch(pod, operations)
    return result


def assert_valid_pod(pod: dict[str, Any]) -> None:
    """The checks kube-apiserver would make that the mutation could break.

    Schema (strict: no unknown fields) for each version in KUBERNETES_VERSIONS, plus the semantic
    rules a schema cannot say: unique container and volume names, mounts that name a volume and
    do not share a path, one GPUNUMA_POLICY per container.
    """
    for version in KUBERNETES_VERSIONS:
        try:
            kubernetes_validate.validate(pod, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            raise AssertionError(f"invalid for Kubernetes {version}: "
                                 f"{str(exc).splitlines()[0]}") from None
    spec = pod["spec"]
    containers = [*spec.get("initContainers", []), *spec["containers"]]
    duplicates = [n for n, k in Counter(c["name"] for c in containers).items() if k > 1]
    assert not duplicates, f"duplicate container names {duplicates}"
    volumes = Counter(v["name"] for v in spec.get("volumes", []))
    assert all(k == 1 for k in volumes.values()), f"duplicate volumes {volumes}"
    for container in containers:
        mounts = container.get("volumeMounts", [])
        for mount in mounts:
            assert mount["name"] in volumes, f"{container['name']} mounts unknown {mount['name']}"
        paths = Counter(mount["mountPath"] for mount in mounts)
        assert all(k == 1 for k in paths.values()), f"{container['name']}: shared mount path"
        policy_env = [e for e in container.get("env", []) if e["name"] == "GPUNUMA_POLICY"]
        assert len(policy_env) <= 1


def api_violations(pod: dict[str, Any]) -> list[str]:
    """What kube-apiserver's pod validation (pkg/apis/core/validation: validateContainers,
    ValidateVolumeMounts, ValidateVolumeDevices) says is wrong with the names and paths of ``pod``:
    unique container names (init, app and ephemeral together), unique volume names, mounts and
    devices that name a volume (a device a PVC), mount and device paths unique per container, no
    path both a mountPath and a devicePath, no name both a mount and a device, no ``..`` in a
    devicePath. Exact strings, as the API server compares them."""
    spec = pod["spec"]
    found: list[str] = []
    containers = [*spec.get("initContainers", []), *spec["containers"],
                  *spec.get("ephemeralContainers", [])]
    for name, count in Counter(c["name"] for c in containers).items():
        if count > 1:
            found.append(f"container name {name!r} is not unique")
    volumes: dict[str, dict[str, Any]] = {}
    for volume in spec.get("volumes", []):
        if volume["name"] in volumes:
            found.append(f"volume name {volume['name']!r} is not unique")
        volumes[volume["name"]] = volume
    for container in containers:
        where = f"container {container['name']!r}"
        mounts = container.get("volumeMounts", [])
        devices = container.get("volumeDevices", [])
        device_names = {d["name"] for d in devices}
        device_paths = {d["devicePath"] for d in devices}
        mount_paths = {m["mountPath"] for m in mounts}
        for path, count in Counter(m["mountPath"] for m in mounts).items():
            if count > 1:
                found.append(f"{where}: mountPath {path!r} is not unique")
        for mount in mounts:
            if mount["name"] not in volumes:
                found.append(f"{where}: mount of unknown volume {mount['name']!r}")
            if mount["name"] in device_names:
                found.append(f"{where}: {mount['name']!r} is a mount and a device")
            if mount["mountPath"] in device_paths:
                found.append(f"{where}: {mount['mountPath']!r} is a mountPath and a devicePath")
        for name, count in Counter(d["name"] for d in devices).items():
            if count > 1:
                found.append(f"{where}: device name {name!r} is not unique")
        for path, count in Counter(d["devicePath"] for d in devices).items():
            if count > 1:
                found.append(f"{where}: devicePath {path!r} is not unique")
        for device in devices:
            if "persistentVolumeClaim" not in volumes.get(device["name"], {}):
                found.append(f"{where}: device {device['name']!r} is not a PVC volume")
            if ".." in device["devicePath"].split("/"):
                found.append(f"{where}: devicePath {device['devicePath']!r} has '..'")
            if device["devicePath"] in mount_paths:
                found.append(f"{where}: {device['devicePath']!r} is a devicePath and a mountPath")
    return found


def launcher_mount_conflicts(pod: dict[str, Any]) -> list[str]:
    """Why the container runtime could not set up gpunuma's mount, paths cleaned: another mount
    or a device at or below /opt/gpunuma, a device above it, or a read-only volume above it."""
    spec = pod["spec"]
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    ours = names.LAUNCHER_MOUNT_PATH
    found = []
    for container in [*spec.get("initContainers", []), *spec["containers"]]:
        mounts = container.get("volumeMounts", [])
        if not any(m["name"] == names.LAUNCHER_VOLUME for m in mounts):
            continue
        others = [(m["mountPath"], m) for m in mounts if m["name"] != names.LAUNCHER_VOLUME]
        others += [(d["devicePath"], None) for d in container.get("volumeDevices", [])]
        for path, mount in others:
            cleaned = posixpath.normpath("/" + path.lstrip("/"))
            at_or_below = cleaned == ours or cleaned.startswith(ours + "/")
            above = ours.startswith(cleaned.rstrip("/") + "/")
            read_only = mount is None or mount.get("readOnly") is True or bool(
                {"configMap", "secret", "downwardAPI", "projected"} & set(volumes[mount["name"]]))
            if at_or_below or (above and read_only):
                found.append(f"container {container['name']!r}: {path!r} and gpunuma's mount")
    return found
