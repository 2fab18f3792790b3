"""End to end on a real cluster (kind or any kubeconfig): install the chart, opt pods in, look.

Skipped unless ``GPUNUMA_E2E_KUBECONFIG`` names a kubeconfig. The cluster must be able to pull the
gpunuma image (``GPUNUMA_E2E_IMAGE``, default the chart's; for kind: ``docker build -t
gpunuma:e2e . && kind load docker-image gpunuma:e2e`` and ``GPUNUMA_E2E_IMAGE=gpunuma:e2e``) and the
launcher image (``GPUNUMA_E2E_LAUNCHER_IMAGE``: ``docker build --target launcher -t numa-exec:e2e .
&& kind load docker-image numa-exec:e2e`` and ``GPUNUMA_E2E_LAUNCHER_IMAGE=numa-exec:e2e``).

Without GPUs (kind), a node advertises a fake extended resource (``GPUNUMA_E2E_FAKE_RESOURCE``,
default ``example.com/fake-gpu``) which the release counts as a GPU resource, so the webhook's
whole path runs: opt-in by namespace label, opt-out by annotation, the injected init container,
numa-exec's line in the log, `kubectl gpunuma pods`. Node labels and placement annotations need
a real GPU node: those tests skip when no GPUNumaLayout reports a GPU.

Run: ``GPUNUMA_E2E_KUBECONFIG=~/.kube/config python3 -m pytest tests/e2e -v``
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from gpunuma import names
from gpunuma.kubeapi import Connection, KubeClient
from gpunuma.topology import Layout, node_labels

KUBECONFIG = os.environ.get("GPUNUMA_E2E_KUBECONFIG")
pytestmark = pytest.mark.skipif(not KUBECONFIG, reason="set GPUNUMA_E2E_KUBECONFIG to run against a cluster")

CHART = os.path.join(os.path.dirname(__file__), "..", "..", "charts", "gpunuma")
FAKE_RESOURCE = os.environ.get("GPUNUMA_E2E_FAKE_RESOURCE", "example.com/fake-gpu")
RUN_ID = uuid.uuid4().hex[:6]
RELEASE = "gpunuma-e2e"
SYSTEM_NAMESPACE = f"gpunuma-e2e-{RUN_ID}"
WORK_NAMESPACE = f"gpunuma-e2e-work-{RUN_ID}"
PLAIN_NAMESPACE = f"gpunuma-e2e-plain-{RUN_ID}"
TIMEOUT = float(os.environ.get("GPUNUMA_E2E_TIMEOUT", "300"))

T = TypeVar("T")


def eventually(probe: Callable[[], T | None], what: str, timeout: float = TIMEOUT) -> T:
    """Poll until ``probe`` returns something; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = probe()
        if result is not None:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(2)


def release_values() -> dict[str, Any]:
    image = os.environ.get("GPUNUMA_E2E_IMAGE")
    values: dict[str, Any] = {
        "gpuResources": ["nvidia.com/gpu", "nvidia.com/mig-*", "amd.com/gpu", FAKE_RESOURCE],
        "agent": {
            # Every node: a kind node has no PCI vendor labels.
            "affinity": {}, "nodeSelector": {},
            "nvml": {"enabled": os.environ.get("GPUNUMA_E2E_NVML") == "1"},
        },
    }
    if image:
        repository, _, tag = image.rpartition(":")
        values["image"] = {"repository": repository, "tag": tag, "pullPolicy": "IfNotPresent"}
    launcher = os.environ.get("GPUNUMA_E2E_LAUNCHER_IMAGE")
    if launcher:
        repository, _, tag = launcher.rpartition(":")
        values["launcher"] = {"image": {"repository": repository, "tag": tag}}
    return values


class Cluster:
    """The test's calls to the cluster, through gpunuma's own client (a fresh one per call)."""

    def __init__(self, kubeconfig: str) -> None:
        self.connection = Connection.from_kubeconfig(Path(kubeconfig))

    def _call(self, method: str, *args: Any) -> Any:
        async def call() -> Any:
            client = KubeClient(self.connection, user_agent="gpunuma-e2e")
            try:
                return await getattr(client, method)(*args)
            finally:
                await client.close()

        return asyncio.run(call())

    def get(self, path: str) -> Any:
        return self._call("get", path)

    def create(self, path: str, body: dict[str, Any]) -> Any:
        return self._call("create", path, body)

    def merge_patch(self, path: str, patch: dict[str, Any]) -> Any:
        return self._call("merge_patch", path, patch)

    def delete(self, path: str) -> Any:
        return self._call("delete", path)

    def log(self, namespace: str, pod: str, container: str) -> str | None:
        log: str | None = self._call(
            "read_text", f"/api/v1/namespaces/{namespace}/pods/{pod}/log?container={container}")
        return log

    def create_namespace(self, name: str, labels: dict[str, str] | None = None) -> None:
        self.create("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace",
                                           "metadata": {"name": name, "labels": labels or {}}})


@pytest.fixture(scope="module")
def api() -> Cluster:
    assert KUBECONFIG is not None
    return Cluster(KUBECONFIG)


@pytest.fixture(scope="module")
def release(api: Cluster) -> Iterator[str]:
    import helm_python

    # The agent mounts host paths: its namespace is the one labelled for the privileged level.
    api.create_namespace(SYSTEM_NAMESPACE, {"pod-security.kubernetes.io/enforce": "privileged"})
    api.create_namespace(WORK_NAMESPACE, {names.LABEL_NAMESPACE_INJECT: names.NAMESPACE_INJECT_ENABLED,
                                          "pod-security.kubernetes.io/enforce": "restricted"})
    api.create_namespace(PLAIN_NAMESPACE)
    helm = helm_python.Config(kubeconfig_path=KUBECONFIG, namespace=SYSTEM_NAMESPACE)
    try:
        helm.install(CHART, RELEASE, release_values(), namespace=SYSTEM_NAMESPACE, wait="watcher",
                     timeout=int(TIMEOUT))
        yield SYSTEM_NAMESPACE
    finally:
        with contextlib.suppress(Exception):
            helm.uninstall(RELEASE, timeout=int(TIMEOUT), ignore_not_found=True)
        for namespace in (WORK_NAMESPACE, PLAIN_NAMESPACE, SYSTEM_NAMESPACE):
            with contextlib.suppress(Exception):
                api.delete(f"/api/v1/namespaces/{namespace}")
        helm.close()


@pytest.fixture(scope="module")
def fake_gpu_node(api: Cluster) -> str:
    """A schedulable node advertising the fake GPU resource (status capacity, as a device plugin would)."""
    nodes = [n for n in api.get("/api/v1/nodes")["items"]
             if not n["spec"].get("unschedulable")
             and not any(t.get("effect") == "NoSchedule" for t in n["spec"].get("taints") or [])]
    assert nodes, "no schedulable node without NoSchedule taints"
    name: str = nodes[0]["metadata"]["name"]
    api.merge_patch(f"/api/v1/nodes/{name}/status", {"status": {"capacity": {FAKE_RESOURCE: "4"}}})
    return name


def gpu_pod(name: str, *, annotations: dict[str, str] | None = None) -> dict[str, Any]:
    """A restricted-compliant pod that requests the fake GPU and has a command (so it can be wrapped)."""
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "annotations": annotations or {}},
        "spec": {
            "restartPolicy": "Never",
            "securityContext": {"runAsNonRoot": True, "runAsUser": 65532,
                                "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{
                "name": "work", "image": "busybox:1.36",
                "command": ["sh", "-c", "echo ready; sleep 3600"],
                "resources": {"limits": {FAKE_RESOURCE: "1"}},
                "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
            }],
        },
    }


def create(api: Cluster, namespace: str, pod: dict[str, Any]) -> Any:
    return api.create(f"/api/v1/namespaces/{namespace}/pods", pod)


def test_a_gpu_pod_in_an_opted_in_namespace_is_mutated_and_numa_exec_runs(
    api: Cluster, release: str, fake_gpu_node: str,
) -> None:
    pod = create(api, WORK_NAMESPACE, gpu_pod("wrapped"))
    annotations = pod["metadata"].get("annotations") or {}
    assert annotations.get(names.ANNOTATION_INJECTED)
    assert annotations.get(names.ANNOTATION_WRAPPED) == "work"
    assert (pod["metadata"].get("labels") or {}).get(names.LABEL_MANAGED) == "true"
    assert pod["spec"]["initContainers"][0]["name"] == names.LAUNCHER_INIT_CONTAINER
    container = pod["spec"]["containers"][0]
    assert container["command"][:2] == [names.LAUNCHER_PATH, "--"]
    assert container["command"][2:] == ["sh", "-c", "echo ready; sleep 3600"]
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert volumes[names.LAUNCHER_VOLUME]["emptyDir"]["medium"] == "Memory"

    def log_ready() -> str | None:
        try:
            log = api.log(WORK_NAMESPACE, "wrapped", "work")
        except Exception:  # not started yet
            return None
        return log if log and "ready" in log else None

    log = eventually(log_ready, "the wrapped container to start")
    assert any(line.startswith("gpunuma:") for line in log.splitlines()), log


def test_a_pod_that_opts_out_is_left_alone(api: Cluster, release: str, fake_gpu_node: str) -> None:
    pod = create(api, WORK_NAMESPACE, gpu_pod("opted-out", annotations={names.ANNOTATION_INJECT: "false"}))
    assert names.ANNOTATION_INJECTED not in (pod["metadata"].get("annotations") or {})
    assert pod["spec"]["containers"][0]["command"] == ["sh", "-c", "echo ready; sleep 3600"]


def test_a_pod_opts_in_by_annotation_in_a_namespace_that_did_not(
    api: Cluster, release: str, fake_gpu_node: str,
) -> None:
    plain = create(api, PLAIN_NAMESPACE, gpu_pod("plain"))
    assert names.ANNOTATION_INJECTED not in (plain["metadata"].get("annotations") or {})
    opted = create(api, PLAIN_NAMESPACE, gpu_pod("opted-in", annotations={names.ANNOTATION_INJECT: "true"}))
    assert (opted["metadata"].get("annotations") or {}).get(names.ANNOTATION_WRAPPED) == "work"


def test_kubectl_gpunuma_pods_lists_the_wrapped_pod(api: Cluster, release: str, fake_gpu_node: str) -> None:
    from gpunuma.kubectl import main

    eventually(lambda: api.get(f"/api/v1/namespaces/{WORK_NAMESPACE}/pods/wrapped"), "the wrapped pod")
    output = io.StringIO()
    with contextlib.redirect_stdout(output):
        code = main(["--kubeconfig", str(KUBECONFIG), "pods", "-n", WORK_NAMESPACE])
    assert code == 0
    rows = [line.split() for line in output.getvalue().splitlines()[1:]]
    assert ["wrapped", fake_gpu_node] == rows[0][:2]


def test_gpu_nodes_get_the_labels_of_their_layout(api: Cluster, release: str) -> None:
    def layouts_with_gpus() -> list[dict[str, Any]] | None:
        listed = api.get(f"/apis/{names.CRD_GROUP}/{names.CRD_VERSION}/{names.CRD_PLURAL}")
        items: list[dict[str, Any]] = listed["items"]
        found = [item for item in items if item["spec"]["gpus"]]
        return found or None

    try:
        layouts = eventually(layouts_with_gpus, "a GPUNumaLayout with GPUs", timeout=90)
    except pytest.fail.Exception:
        pytest.skip("no node of this cluster reports a GPU: node labels need a real GPU node")
    for layout in layouts:
        expected = node_labels(Layout.from_document(layout["spec"]))
        name = layout["metadata"]["name"]

        def labelled(name: str = name, expected: dict[str, str] = expected) -> dict[str, str] | None:
            labels = api.get(f"/api/v1/nodes/{name}")["metadata"].get("labels") or {}
            applied = {key: value for key, value in labels.items() if key.startswith(names.PREFIX)}
            return applied if expected.items() <= applied.items() else None

        eventually(labelled, f"the operator to label node {name}")
        annotation = (api.get(f"/api/v1/nodes/{name}")["metadata"].get("annotations") or {}).get(
            names.ANNOTATION_MANAGED_LABELS, "")
        assert all(key in annotation for key in expected), annotation
