"""``gpunuma inject`` at the level of ``linkerd inject``: the kinds GPU users write (Kubeflow, Ray,
LeaderWorkerSet, JobSet, KServe), a report per resource, warnings for what passes through,
``-o json``, folders and several files, ``gpunuma uninject``, and the installed release's settings."""

from __future__ import annotations

import asyncio
import copy
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from gpunuma import names
from gpunuma.settings import MutationSettings
from gpunuma.webhook.inject import SUPPORTED_KINDS, inject_documents, uninject_documents
from gpunuma.webhook.uninject import remove_mutation
from tests.webhook import pods
from tests.webhook.test_inject import REPO, run_inject

ROOT = Path(__file__).resolve().parents[2]


def template(pod: dict[str, Any]) -> dict[str, Any]:
    """A pod template made from one of the realistic pods (no opt-in needed for inject)."""
    return {"metadata": {"labels": {"app": "x"}}, "spec": copy.deepcopy(pod["spec"])}


def custom(api_version: str, kind: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": api_version, "kind": kind, "metadata": {"name": kind.lower(), "namespace": "ml"},
            "spec": spec}


def workloads() -> dict[str, tuple[dict[str, Any], list[tuple[str | int, ...]]]]:
    """kind → (a manifest of that kind, the paths of its pod templates)."""
    return {
        "PyTorchJob": (custom("kubeflow.org/v1", "PyTorchJob", {"pytorchReplicaSpecs": {
            "Master": {"replicas": 1, "template": template(pods.torchrun_worker())},
            "Worker": {"replicas": 3, "template": template(pods.torchrun_worker())}}}),
            [("spec", "pytorchReplicaSpecs", "Master", "template"),
             ("spec", "pytorchReplicaSpecs", "Worker", "template")]),
        "MPIJob": (custom("kubeflow.org/v2beta1", "MPIJob", {"mpiReplicaSpecs": {
            "Worker": {"replicas": 2, "template": template(pods.vllm_server())}}}),
            [("spec", "mpiReplicaSpecs", "Worker", "template")]),
        "RayCluster": (custom("ray.io/v1", "RayCluster", {
            "headGroupSpec": {"rayStartParams": {}, "template": template(pods.ray_gpu_worker())},
            "workerGroupSpecs": [
                {"groupName": "a", "rayStartParams": {}, "template": template(pods.ray_gpu_worker())},
                {"groupName": "b", "rayStartParams": {}, "template": template(pods.amd_pod())}]}),
            [("spec", "headGroupSpec", "template"), ("spec", "workerGroupSpecs", 0, "template"),
             ("spec", "workerGroupSpecs", 1, "template")]),
        "RayService": (custom("ray.io/v1", "RayService", {"rayClusterConfig": {
            "headGroupSpec": {"rayStartParams": {}, "template": template(pods.ray_gpu_worker())},
            "workerGroupSpecs": [{"groupName": "gpu", "template": template(pods.vllm_server())}]}}),
            [("spec", "rayClusterConfig", "headGroupSpec", "template"),
             ("spec", "rayClusterConfig", "workerGroupSpecs", 0, "template")]),
        "RayJob": (custom("ray.io/v1", "RayJob", {"entrypoint": "python train.py", "rayClusterSpec": {
            "headGroupSpec": {"rayStartParams": {}, "template": template(pods.ray_gpu_worker())},
            "workerGroupSpecs": [{"groupName": "gpu", "template": template(pods.mig_pod())}]}}),
            [("spec", "rayClusterSpec", "headGroupSpec", "template"),
             ("spec", "rayClusterSpec", "workerGroupSpecs", 0, "template")]),
        "LeaderWorkerSet": (custom("leaderworkerset.x-k8s.io/v1", "LeaderWorkerSet", {
            "replicas": 2, "leaderWorkerTemplate": {
                "size": 4, "leaderTemplate": template(pods.vllm_server()),
                "workerTemplate": template(pods.vllm_server())}}),
            [("spec", "leaderWorkerTemplate", "leaderTemplate"),
             ("spec", "leaderWorkerTemplate", "workerTemplate")]),
        "JobSet": (custom("jobset.x-k8s.io/v1alpha2", "JobSet", {"replicatedJobs": [
            {"name": "workers", "replicas": 2,
             "template": {"spec": {"template": template(pods.torchrun_worker())}}}]}),
            [("spec", "replicatedJobs", 0, "template", "spec", "template")]),
    }


def at(document: Any, path: tuple[str | int, ...]) -> Any:
    for key in path:
        document = document[key]
    return document


@pytest.mark.parametrize("kind", sorted(workloads()))
def test_every_pod_template_of_the_kinds_gpu_users_write_is_injected(kind: str) -> None:
    document, paths = workloads()[kind]
    result = inject_documents([document], MutationSettings())
    assert not result.errors, result.errors
    assert result.report == [f"{kind} ml/{kind.lower()}: injected"]
    injected = result.documents[0]
    for path in paths:
        pod = at(injected, path)
        assert pod["spec"]["initContainers"][0]["name"] == names.LAUNCHER_INIT_CONTAINER
        assert pod["metadata"]["labels"][names.LABEL_MANAGED] == "true"
        pods.assert_valid_pod({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
                               "spec": pod["spec"]})
    assert inject_documents([injected], MutationSettings()).documents == [injected]  # idempotent


def test_a_kserve_predictor_is_injected_in_place_with_its_own_annotations() -> None:
    predictor = copy.deepcopy(pods.vllm_server()["spec"])
    isvc = custom("serving.kserve.io/v1beta1", "InferenceService", {"predictor": {
        "minReplicas": 1, **predictor}})
    result = inject_documents([isvc], MutationSettings())
    assert not result.errors
    spec = result.documents[0]["spec"]["predictor"]
    assert spec["minReplicas"] == 1
    assert spec["initContainers"][0]["name"] == names.LAUNCHER_INIT_CONTAINER
    assert spec["containers"][0]["command"][:2] == [names.LAUNCHER_PATH, "--"]
    assert spec["annotations"][names.ANNOTATION_WRAPPED] == predictor["containers"][0]["name"]
    assert spec["labels"][names.LABEL_MANAGED] == "true"
    assert "metadata" not in spec


def test_what_passes_through_is_reported_and_unknown_kinds_warn() -> None:
    old = {"apiVersion": "extensions/v1beta1", "kind": "Deployment", "metadata": {"name": "old"},
           "spec": {"template": template(pods.vllm_server())}}
    foreign = custom("batch.volcano.sh/v1alpha1", "Job", {"tasks": [
        {"name": "w", "template": template(pods.vllm_server())}]})
    config = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"a": "b"}}
    widget = {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}, "spec": {}}
    result = inject_documents([old, foreign, config, widget], MutationSettings())
    assert result.documents == [old, foreign, config, widget]
    warnings = [note for note in result.notes if note.startswith("warning:")]
    assert any("Deployment old" in w and "extensions/v1beta1 Deployment is no longer served" in w
               for w in warnings)
    assert any("Job ml/job" in w and "does not know where batch.volcano.sh/v1alpha1 Job keeps its pods" in w
               for w in warnings)
    assert any("Widget w" in w and "not a kind gpunuma injects" in w for w in warnings)
    assert not any("ConfigMap" in w for w in warnings)
    assert "ConfigMap c: passed through (holds no pod)" in result.report


def all_kinds() -> list[dict[str, Any]]:
    return [document for document, _ in workloads().values()] + [pods.vllm_server(), pods.amd_pod()]


def test_uninject_gives_back_what_inject_was_given() -> None:
    originals = all_kinds()
    injected = inject_documents(originals, MutationSettings())
    assert not injected.errors
    restored = uninject_documents(injected.documents)
    assert restored.documents == [
        {**original, "metadata": original["metadata"]} for original in originals]
    assert all(line.endswith(": uninjected") for line in restored.report)


def test_uninject_also_undoes_the_cgroup_mechanism_and_the_warnings() -> None:
    pod = pods.vllm_server()
    del pod["spec"]["containers"][0]["command"]  # bound through its cgroup, not wrapped
    with_policy = pods.vllm_server()
    with_policy["spec"]["containers"][0]["env"] = [{"name": "GPUNUMA_POLICY", "value": "strict"}]
    settings = MutationSettings(cgroup_binding=True)
    injected = inject_documents([pod, with_policy], settings)
    assert not injected.errors
    cgroup_pod, warned_pod = injected.documents
    assert cgroup_pod["metadata"]["annotations"][names.ANNOTATION_CGROUP_BOUND]
    assert warned_pod["metadata"]["annotations"][names.ANNOTATION_WARNINGS]
    assert remove_mutation(cgroup_pod) == pod
    assert names.ANNOTATION_WARNINGS not in remove_mutation(warned_pod)["metadata"]["annotations"]


def test_uninject_removes_what_the_webhook_and_the_operator_wrote_on_a_live_pod() -> None:
    pod = pods.vllm_server()
    mutated = copy.deepcopy(inject_documents([pod], MutationSettings()).documents[0])
    mutated["metadata"]["annotations"].update({
        names.ANNOTATION_PLACEMENT: "{}", names.ANNOTATION_CPUSET: "0-3", names.ANNOTATION_NUMA_NODES: "0"})
    restored = remove_mutation(mutated)
    assert restored == pod
    assert remove_mutation(pod) == pod


def test_inject_and_uninject_through_the_command_line_on_a_folder_and_several_files(tmp_path: Path) -> None:
    folder = tmp_path / "manifests"
    folder.mkdir()
    documents = all_kinds()
    for index, document in enumerate(documents):
        (folder / f"{index:02d}-{document['kind'].lower()}.yaml").write_text(yaml.safe_dump(document))
    (folder / "notes.txt").write_text("not a manifest")
    extra = tmp_path / "extra.yaml"
    extra.write_text(yaml.safe_dump(pods.mig_pod()))
    injected = run_inject("-f", str(folder), "-f", str(extra), "--ignore-cluster")
    assert injected.returncode == 0, injected.stderr
    outputs = list(yaml.safe_load_all(injected.stdout))
    assert [d["kind"] for d in outputs] == [d["kind"] for d in [*documents, pods.mig_pod()]]
    assert f"{extra}: Pod ml/notebook-mig: injected" in injected.stderr
    assert f"{folder / '00-pytorchjob.yaml'}: PyTorchJob ml/pytorchjob: injected" in injected.stderr
    (tmp_path / "injected.yaml").write_text(injected.stdout)
    restored = run_uninject("-f", str(tmp_path / "injected.yaml"))
    assert restored.returncode == 0, restored.stderr
    assert list(yaml.safe_load_all(restored.stdout)) == [*documents, pods.mig_pod()]


def run_uninject(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gpunuma", "uninject", *args], capture_output=True,
                          text=True, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=60,
                          check=False)


def test_json_output_holds_the_same_objects_as_yaml(tmp_path: Path) -> None:
    path = tmp_path / "all.yaml"
    path.write_text(yaml.safe_dump_all(all_kinds()))
    as_yaml = run_inject("-f", str(path), "--ignore-cluster")
    as_json = run_inject("-f", str(path), "--ignore-cluster", "-o", "json")
    assert as_json.returncode == 0, as_json.stderr
    listed = json.loads(as_json.stdout)
    assert listed["kind"] == "List"
    assert listed["items"] == list(yaml.safe_load_all(as_yaml.stdout))
    single = run_inject("-f", "-", "--ignore-cluster", "-o", "json", stdin=yaml.safe_dump(pods.amd_pod()))
    assert json.loads(single.stdout)["kind"] == "Pod"


def test_the_docs_list_every_supported_kind() -> None:
    text = (ROOT / "docs" / "webhook.md").read_text()
    missing = [f"{kind} ({api})" for kind, api, _ in SUPPORTED_KINDS
               if f"| {kind} | `{api}` |" not in text]
    assert not missing, f"docs/webhook.md does not list {missing}"


WEBHOOK_DEPLOYMENT = {
    "apiVersion": "apps/v1", "kind": "Deployment",
    "metadata": {"name": "gpunuma-webhook", "namespace": "gpunuma-system",
                 "labels": {"app.kubernetes.io/part-of": "gpunuma",
                            "app.kubernetes.io/component": "webhook"}},
    "spec": {"template": {"spec": {"containers": [{"name": "webhook", "image": "gpunuma:1", "env": [
        {"name": "GPUNUMA_LAUNCHER_IMAGE", "value": "registry.example/gpunuma-launcher:9.9"},
        {"name": "GPUNUMA_GPU_RESOURCES", "value": "example.com/accelerator"},
        {"name": "GPUNUMA_DEFAULT_POLICY", "value": "cpu-only"},
        {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
    ]}]}}},
}


@pytest.fixture
def release_cluster(kmock: Any, tmp_path: Path) -> Path:
    kmock["get /apis/apps/v1/deployments"] << {"apiVersion": "apps/v1", "kind": "DeploymentList",
                                               "metadata": {}, "items": [WEBHOOK_DEPLOYMENT]}
    config = tmp_path / "kubeconfig"
    config.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "c", "cluster": {"server": str(kmock.url).rstrip("/")}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}]}))
    return config


def accelerator_pod() -> dict[str, Any]:
    pod = pods.vllm_server()
    pod["spec"]["containers"][0]["resources"] = {"limits": {"example.com/accelerator": "1"}}
    return pod


async def test_inject_uses_the_installed_releases_settings_and_says_so(release_cluster: Path) -> None:
    result = await asyncio.to_thread(run_inject, "-f", "-", "--kubeconfig", str(release_cluster),
                                     stdin=yaml.safe_dump(accelerator_pod()))
    assert result.returncode == 0, result.stderr
    pod = yaml.safe_load(result.stdout)
    assert pod["spec"]["initContainers"][0]["image"] == "registry.example/gpunuma-launcher:9.9"
    assert {"name": "GPUNUMA_POLICY", "value": "cpu-only"} in pod["spec"]["containers"][0]["env"]
    assert ("settings from the webhook Deployment gpunuma-system/gpunuma-webhook: default_policy, "
            "gpu_resources, launcher_image") in result.stderr


async def test_flags_win_over_the_release_and_ignore_cluster_skips_it(release_cluster: Path) -> None:
    flagged = await asyncio.to_thread(
        run_inject, "-f", "-", "--kubeconfig", str(release_cluster), "--launcher-image", "mine:1",
        stdin=yaml.safe_dump(accelerator_pod()))
    pod = yaml.safe_load(flagged.stdout)
    assert pod["spec"]["initContainers"][0]["image"] == "mine:1"
    assert {"name": "GPUNUMA_POLICY", "value": "cpu-only"} in pod["spec"]["containers"][0]["env"]
    ignored = await asyncio.to_thread(
        run_inject, "-f", "-", "--kubeconfig", str(release_cluster), "--ignore-cluster",
        stdin=yaml.safe_dump(accelerator_pod()))
    assert "no container requests a GPU" in ignored.stderr  # example.com/accelerator is not a default


def test_without_a_cluster_inject_says_it_uses_the_defaults(tmp_path: Path) -> None:
    result = run_inject("-f", "-", "--kubeconfig", str(tmp_path / "missing"),
                        stdin=yaml.safe_dump(pods.amd_pod()))
    assert result.returncode == 0, result.stderr
    assert "using gpunuma's defaults, not a release's settings" in result.stderr
