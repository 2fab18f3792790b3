"""Containers without ``command`` handed to the agent's cgroup mechanism (release opt-in)."""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

import pytest

from gpunuma import names
from gpunuma.webhook.mutation import mutate
from tests.webhook import pods
from tests.webhook.test_mutation import SETTINGS, applied, container, gpu_pod

CGROUP = dataclasses.replace(SETTINGS, cgroup_binding=True)


def test_a_container_without_command_is_cgroup_bound_not_skipped():
    pod = gpu_pod()
    pod["spec"]["containers"].append({"name": "second", "image": "x", "command": ["serve"],
                                      "resources": {"limits": {"nvidia.com/gpu": 1}}})
    pod["spec"]["containers"].append({"name": "sidecar", "image": "envoy"})
    result = mutate(pod, CGROUP)
    out = applied(pod, result)
    pods.assert_valid_pod(out)
    assert (result.wrapped, result.skipped, result.cgroup_bound) == (("second",), (), ("main",))
    annotations = out["metadata"]["annotations"]
    assert annotations[names.ANNOTATION_CGROUP_BOUND] == "main"
    assert names.ANNOTATION_SKIPPED not in annotations
    main = container(out, "main")
    assert "command" not in main  # the image's ENTRYPOINT runs as it is
    assert main["env"] == [{"name": "GPUNUMA_POLICY", "value": "preferred"}]
    assert container(out, "sidecar") == pod["spec"]["containers"][2]
    assert not any("not wrapped" in warning for warning in result.warnings)


def test_strict_is_no_longer_refused_and_a_cgroup_only_pod_is_managed_without_a_launcher():
    pod = gpu_pod(annotations={**pods.OPT_IN, names.ANNOTATION_POLICY: "strict"})
    result = mutate(pod, CGROUP)
    assert result.denial is None
    out = applied(pod, result)
    pods.assert_valid_pod(out)
    assert out["metadata"]["labels"][names.LABEL_MANAGED] == "true"
    assert "initContainers" not in out["spec"]
    assert "volumes" not in out["spec"]
    assert container(out, "main")["env"] == [{"name": "GPUNUMA_POLICY", "value": "strict"}]
    # Reinvocation: nothing more to do.
    assert not mutate(out, CGROUP).changed


def test_an_init_container_without_command_is_cgroup_bound():
    pod = gpu_pod(command=["python", "serve.py"])
    pod["spec"]["initContainers"] = [{"name": "warmup", "image": "x",
                                      "resources": {"limits": {"nvidia.com/gpu": 1}}}]
    result = mutate(pod, CGROUP)
    out = applied(pod, result)
    pods.assert_valid_pod(out)
    assert result.cgroup_bound == ("warmup",)
    assert [c["name"] for c in out["spec"]["initContainers"]] == [names.LAUNCHER_INIT_CONTAINER,
                                                                   "warmup"]
    assert container(out, "warmup")["env"] == [{"name": "GPUNUMA_POLICY", "value": "preferred"}]


def test_without_the_release_option_nothing_changes():
    assert mutate(gpu_pod(), SETTINGS).skipped == ("main",)
    assert mutate(gpu_pod(), SETTINGS).cgroup_bound == ()


def _serving_pod(name: str, image: str, args: list[str] | None) -> dict[str, Any]:
    server: dict[str, Any] = {"name": "server", "image": image,
                              "resources": {"limits": {"nvidia.com/gpu": 1}}}
    if args is not None:
        server["args"] = args
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "serving", "annotations": dict(pods.OPT_IN)},
            "spec": {"containers": [server, {"name": "queue-proxy", "image": "knative/queue"}]}}


# Shapes of serving images run by their ENTRYPOINT (what their own charts and examples do).
WITHOUT_COMMAND = {
    "nim": _serving_pod("nim", "nvcr.io/nim/meta/llama3-8b-instruct:1.0.0", None),
    "tgi": _serving_pod("tgi", "ghcr.io/huggingface/text-generation-inference:2.0",
                        ["--model-id", "mistralai/Mistral-7B-Instruct-v0.2"]),
    "kserve-huggingfaceserver": _serving_pod(
        "kserve", "kserve/huggingfaceserver:v0.13.0",
        ["--model_name=llama3", "--model_id=meta-llama/meta-llama-3-8b-instruct"]),
}


@pytest.mark.parametrize("make_pod", [
    *(make for make, _ in pods.REALISTIC_PODS.values()),
    *(lambda pod=pod: copy.deepcopy(pod) for pod in WITHOUT_COMMAND.values()),
])
def test_every_gpu_container_gets_a_binding_mechanism(make_pod: Any) -> None:
    pod = make_pod()
    result = mutate(pod, CGROUP)
    out = applied(pod, result)
    pods.assert_valid_pod(out)
    gpu_containers = {c["name"] for c in [*pod["spec"].get("initContainers", []),
                                          *pod["spec"]["containers"]]
                      if any(key in ("nvidia.com/gpu", "amd.com/gpu") or key.startswith(
                          "nvidia.com/mig-") for part in ("limits", "requests")
                             for key in (c.get("resources") or {}).get(part, {}))}
    assert gpu_containers
    assert gpu_containers == set(result.wrapped) | set(result.cgroup_bound)
    assert result.skipped == ()
