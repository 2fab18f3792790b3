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

import contextlib
import io
import os
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import pytest

from gpunuma import names
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


@pytest.fixture(scope="module")
def api() -> Any:
    from kubernetes import client, config

    return client.CoreV1Api(config.new_client_from_config(config_file=KUBECONFIG))


@pytest.fixture(scope="module")
def release(api: Any) -> Iterator[str]:
    import helm_python
    from kubernetes import client

    # The agent mounts host paths: its namespace is the one labelled for the privileged level.
    api.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(
        name=SYSTEM_NAMESPACE, labels={"pod-security.kubernetes.io/enforce": "privileged"})))
    api.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(
        name=WORK_NAMESPACE, labels={names.LABEL_NAMESPACE_INJECT: names.NAMESPACE_INJECT_ENABLED,
                                     "pod-security.kubernetes.io/enforce": "restricted"})))
    api.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=PLAIN_NAMESPACE)))
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
                api.delete_namespace(namespace)
        helm.close()


@pytest.fixture(scope="module")
def fake_gpu_node(api: Any) -> str:
    """A schedulable node advertising the fake GPU resource (status capacity, as a device plugin would)."""
    nodes = [n for n in api.list_node().items
             if not n.spec.unschedulable and not any(t.effect == "NoSchedule" for t in n.spec.taints or [])]
    assert nodes, "no schedulable node without NoSchedule taints"
    name: str = nodes[0].metadata.name
    api.patch_node_status(name, {"status": {"capacity": {FAKE_RESOURCE: "4"}}})
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


def create(api: Any, namespace: str, pod: dict[str, Any]) -> Any:
    return api.create_namespaced_pod(namespace, pod)


def test_a_gpu_pod_in_an_opted_in_namespace_is_mutated_and_numa_exec_runs(
    api: Any, release: str, fake_gpu_node: str,
) -> None:
    pod = create(api, WORK_NAMESPACE, gpu_pod("wrapped"))
    annotations = pod.metadata.annotations or {}
    assert annotations.get(names.ANNOTATION_INJECTED)
    assert annotations.get(names.ANNOTATION_WRAPPED) == "work"
    assert (pod.metadata.labels or {}).get(names.LABEL_MANAGED) == "true"
    assert pod.spec.init_containers[0].name == names.LAUNCHER_INIT_CONTAINER
    container = pod.spec.containers[0]
    assert container.command[:2] == [names.LAUNCHER_PATH, "--"]
    assert container.command[2:] == ["sh", "-c", "echo ready; sleep 3600"]
    volumes = {v.name: v for v in pod.spec.volumes}
    assert volumes[names.LAUNCHER_VOLUME].empty_dir.medium == "Memory"

    def log_ready() -> str | None:
        try:
            log: str = api.read_namespaced_pod_log("wrapped", WORK_NAMESPACE, container="work")
        except Exception:  # not started yet
            return None
        return log if "ready" in log else None

    log = eventually(log_ready, "the wrapped container to start")
    assert any(line.startswith("gpunuma:") for line in log.splitlines()), log


def test_a_pod_that_opts_out_is_left_alone(api: Any, release: str, fake_gpu_node: str) -> None:
    pod = create(api, WORK_NAMESPACE, gpu_pod("opted-out", annotations={names.ANNOTATION_INJECT: "false"}))
    assert names.ANNOTATION_INJECTED not in (pod.metadata.annotations or {})
    assert pod.spec.containers[0].command == ["sh", "-c", "echo ready; sleep 3600"]


def test_a_pod_opts_in_by_annotation_in_a_namespace_that_did_not(
    api: Any, release: str, fake_gpu_node: str,
) -> None:
    plain = create(api, PLAIN_NAMESPACE, gpu_pod("plain"))
    assert names.ANNOTATION_INJECTED not in (plain.metadata.annotations or {})
    opted = create(api, PLAIN_NAMESPACE, gpu_pod("opted-in", annotations={names.ANNOTATION_INJECT: "true"}))
    assert (opted.metadata.annotations or {}).get(names.ANNOTATION_WRAPPED) == "work"


def test_kubectl_gpunuma_pods_lists_the_wrapped_pod(api: Any, release: str, fake_gpu_node: str) -> None:
    from gpunuma.kubectl import main

    eventually(lambda: api.read_namespaced_pod("wrapped", WORK_NAMESPACE) or None, "the wrapped pod")
    output = io.StringIO()
    with contextlib.redirect_stdout(output):
        code = main(["--kubeconfig", str(KUBECONFIG), "pods", "-n", WORK_NAMESPACE])
    assert code == 0
    rows = [line.split() for line in output.getvalue().splitlines()[1:]]
    assert ["wrapped", fake_gpu_node] == rows[0][:2]


def test_gpu_nodes_get_the_labels_of_their_layout(api: Any, release: str) -> None:
    from kubernetes import client, config

    custom = client.CustomObjectsApi(config.new_client_from_config(config_file=KUBECONFIG))

    def layouts_with_gpus() -> list[dict[str, Any]] | None:
        listed = custom.list_cluster_custom_object(names.CRD_GROUP, names.CRD_VERSION, names.CRD_PLURAL)
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
            labels = api.read_node(name).metadata.labels or {}
            applied = {key: value for key, value in labels.items() if key.startswith(names.PREFIX)}
            return applied if expected.items() <= applied.items() else None

        eventually(labelled, f"the operator to label node {name}")
        annotation = api.read_node(name).metadata.annotations.get(names.ANNOTATION_MANAGED_LABELS, "")
        assert all(key in annotation for key in expected), annotation
