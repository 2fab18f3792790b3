"""``gpunuma inject`` through the real command line (``python3 -m gpunuma inject -f …``)."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from gpunuma import names
from tests.webhook import pods

REPO = Path(__file__).resolve().parents[2]


def run_inject(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gpunuma", "inject", *args], input=stdin, capture_output=True,
        text=True, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=60, check=False,
    )


def template_of(pod: dict[str, Any]) -> dict[str, Any]:
    return {"metadata": {"labels": {"app": "x"}}, "spec": copy.deepcopy(pod["spec"])}


def workload(api_version: str, kind: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": api_version, "kind": kind,
            "metadata": {"name": kind.lower(), "namespace": "ml"}, "spec": spec}


def manifests() -> list[dict[str, Any]]:
    """Every kind inject knows, built around realistic GPU pods, plus kinds it must not touch."""
    selector = {"matchLabels": {"app": "x"}}
    pod = pods.vllm_server()
    del pod["metadata"]["annotations"]  # inject needs no opt-in
    return [
        pod,
        workload("apps/v1", "Deployment", {"replicas": 2, "selector": selector,
                                           "template": template_of(pods.vllm_server())}),
        workload("apps/v1", "StatefulSet", {"serviceName": "ray", "selector": selector,
                                            "template": template_of(pods.ray_gpu_worker())}),
        workload("apps/v1", "DaemonSet", {"selector": selector,
                                          "template": template_of(pods.amd_pod())}),
        workload("apps/v1", "ReplicaSet", {"selector": selector,
                                           "template": template_of(pods.mig_pod())}),
        workload("batch/v1", "Job", {"backoffLimit": 0,
                                     "template": template_of(pods.torchrun_worker())}),
        workload("batch/v1", "CronJob", {"schedule": "0 3 * * *", "jobTemplate": {"spec": {
            "template": template_of(pods.gpu_sidecar_and_init())}}}),
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "script"},
         "data": {"run.sh": "#!/bin/sh\nexec python3 serve.py\n"}},
        {"apiVersion": "batch.volcano.sh/v1alpha1", "kind": "Job", "metadata": {"name": "vc"},
         "spec": {"tasks": [{"name": "w", "template": template_of(pods.vllm_server())}]}},
    ]


def pod_template(document: dict[str, Any]) -> dict[str, Any]:
    spec = document["spec"]
    if document["kind"] == "Pod":
        return document
    if document["kind"] == "CronJob":
        template: dict[str, Any] = spec["jobTemplate"]["spec"]["template"]
        return template
    result: dict[str, Any] = spec["template"]
    return result


@pytest.fixture
def manifest_file(tmp_path: Path) -> Path:
    path = tmp_path / "workloads.yaml"
    path.write_text("# GPU workloads\n" + yaml.safe_dump_all(manifests(), sort_keys=False)
                    + "---\n")
    return path


def test_inject_mutates_every_workload_kind_and_passes_others_through(manifest_file):
    result = run_inject("-f", str(manifest_file))
    assert result.returncode == 0, result.stderr
    documents = [d for d in yaml.safe_load_all(result.stdout) if d is not None]
    originals = manifests()
    assert [d["kind"] for d in documents] == [d["kind"] for d in originals]
    for document, original in zip(documents[:7], originals[:7], strict=True):
        template = pod_template(document)
        assert template["metadata"]["annotations"][names.ANNOTATION_INJECTED]
        assert template["spec"]["initContainers"][0]["name"] == names.LAUNCHER_INIT_CONTAINER
        wrapped = template["metadata"]["annotations"][names.ANNOTATION_WRAPPED].split(",")
        before = {c["name"]: c for c in [*pod_template(original)["spec"].get("initContainers", []),
                                         *pod_template(original)["spec"]["containers"]]}
        for container in [*template["spec"]["initContainers"], *template["spec"]["containers"]]:
            if container["name"] in wrapped:
                assert container["command"] == [names.LAUNCHER_PATH, "--",
                                                *before[container["name"]]["command"]]
        for version in pods.KUBERNETES_VERSIONS:
            kubernetes_validate.validate(document, version, strict=True)
    assert documents[7:] == originals[7:]
    assert "exec python3 serve.py" in result.stdout  # the script survives, as a block


def test_inject_twice_gives_the_same_output(manifest_file):
    once = run_inject("-f", str(manifest_file))
    twice = run_inject("-f", "-", stdin=once.stdout)
    assert twice.returncode == 0, twice.stderr
    assert twice.stdout == once.stdout


def test_policy_and_containers_flags_are_written_as_annotations(tmp_path):
    pod = pods.torchrun_worker()
    path = tmp_path / "pod.yaml"
    path.write_text(yaml.safe_dump(pod))
    result = run_inject("-f", str(path), "--policy", "cpu-only", "--containers", "init-pytorch")
    assert result.returncode == 0, result.stderr
    out = yaml.safe_load(result.stdout)
    annotations = out["metadata"]["annotations"]
    assert annotations[names.ANNOTATION_POLICY] == "cpu-only"
    assert annotations[names.ANNOTATION_WRAPPED] == "init-pytorch"
    init = out["spec"]["initContainers"][1]
    assert init["command"][:2] == [names.LAUNCHER_PATH, "--"]
    assert {"name": "GPUNUMA_POLICY", "value": "cpu-only"} in init["env"]
    assert out["spec"]["containers"] == pod["spec"]["containers"]


def test_a_strict_denial_writes_nothing_and_says_how_to_fix_it(tmp_path):
    pod = pods.mig_pod()
    del pod["spec"]["containers"][0]["command"]
    path = tmp_path / "pod.yaml"
    path.write_text(yaml.safe_dump_all([pods.amd_pod(), pod]))
    result = run_inject("-f", str(path), "--policy", "strict")
    assert result.returncode == 1
    assert result.stdout == ""
    assert "error: Pod ml/notebook-mig:" in result.stderr
    assert "set command" in result.stderr


def test_an_opted_out_pod_and_a_pod_without_gpus_are_left_unchanged_with_a_note():
    opted_out = pods.vllm_server()
    opted_out["metadata"]["annotations"] = {names.ANNOTATION_INJECT: "false"}
    cpu_only = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web"},
                "spec": {"containers": [{"name": "nginx", "image": "nginx", "command": ["nginx"]}]}}
    result = run_inject("-f", "-", stdin=yaml.safe_dump_all([opted_out, cpu_only]))
    assert result.returncode == 0
    assert list(yaml.safe_load_all(result.stdout)) == [opted_out, cpu_only]
    assert 'left unchanged, it has gpunuma.io/inject: "false"' in result.stderr
    assert "Pod web: left unchanged, no container requests a GPU" in result.stderr


def test_skipped_containers_are_reported_on_stderr():
    pod = pods.amd_pod()
    del pod["spec"]["containers"][0]["command"]
    result = run_inject("-f", "-", stdin=yaml.safe_dump(pod))
    assert result.returncode == 0
    assert "Pod ml/rocm-bench: container 'bench' not wrapped" in result.stderr
    assert yaml.safe_load(result.stdout)["metadata"]["annotations"][
        names.ANNOTATION_SKIPPED] == "bench"


@pytest.mark.parametrize(("stdin", "args", "message"), [
    ("kind: Pod\n  bad: [indent", ("-f", "-"), "standard input is not valid YAML"),
    (None, ("-f", "/nonexistent/pods.yaml"), "cannot read /nonexistent/pods.yaml"),
    ("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: {main: {}}}\n",
     ("-f", "-"), "error: Pod p: containers must be a list"),
    ("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\nspec: {replicas: 1}\n",
     ("-f", "-"), "error: Deployment d: has no pod template at spec.template"),
], ids=["bad-yaml", "missing-file", "malformed-pod", "no-template"])
def test_bad_input_is_reported_with_what_is_wrong(stdin, args, message):
    result = run_inject(*args, stdin=stdin)
    assert result.returncode in (1, 2)
    assert result.stdout == ""
    assert message in result.stderr
