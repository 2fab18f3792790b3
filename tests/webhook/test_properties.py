"""Property tests over generated pods, through the same path the server uses (``admit``).

For any pod: the returned patch applies to it, the result is a valid pod for Kubernetes 1.30 and
the newest bundled version, containers that were not wrapped are byte-for-byte unchanged, and a
second pass yields no patch. Example counts stay small: the suite runs on two cores.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import jsonpatch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from gpunuma import names
from gpunuma.settings import MutationSettings
from gpunuma.webhook.messages import WARNING_LIMIT
from gpunuma.webhook.mutation import mutate
from gpunuma.webhook.review import Memory, admit
from tests.webhook import pods

SETTINGS = MutationSettings(launcher_image="registry.example/gpunuma:1.2.3")
# Shared by all examples, as the server shares one across requests: an answer remembered for one
# pod and wrongly given to another would show as a difference below.
MEMORY = Memory(size=1000)

_names = st.from_regex(r"[a-z]([a-z0-9-]{0,10}[a-z0-9])?", fullmatch=True).filter(
    lambda n: n != names.LAUNCHER_INIT_CONTAINER)
_words = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12)
_quantities = st.one_of(st.integers(0, 8), st.sampled_from(["0", "1", "2", "500m", "4Gi", "1k"]))
_resource_names = st.sampled_from(["cpu", "memory", "nvidia.com/gpu", "nvidia.com/mig-1g.10gb",
                                   "amd.com/gpu", "example.com/fpga", "nvidia.com/gpu.shared"])
_resource_map = st.dictionaries(_resource_names, _quantities, max_size=3)
_env_names = st.sampled_from(["A", "PATH", "CUDA_VISIBLE_DEVICES", "GPUNUMA_POLICY", "LOCAL_RANK"])
_mount_paths = st.sampled_from(["/data", "/models", "/dev/shm", names.LAUNCHER_MOUNT_PATH])


@st.composite
def _container(draw: st.DrawFn, name: str, volumes: list[str], init: bool) -> dict[str, Any]:
    container: dict[str, Any] = {"name": name, "image": draw(st.sampled_from(
        ["nvcr.io/nvidia/pytorch:24.08-py3", "busybox:1.36", "vllm/vllm-openai:v0.6.3"]))}
    if draw(st.integers(0, 2)):
        container["command"] = draw(st.lists(_words, max_size=3))
    if draw(st.booleans()):
        container["args"] = draw(st.lists(_words, max_size=3))
    if draw(st.booleans()):
        env_names = draw(st.lists(_env_names, unique=True, max_size=3))
        container["env"] = [{"name": n, "value": draw(_words)} for n in env_names]
    if volumes and draw(st.booleans()):
        mounts = draw(st.lists(st.tuples(st.sampled_from(volumes), _mount_paths), max_size=2,
                               unique_by=lambda m: m[1]))
        container["volumeMounts"] = [{"name": v, "mountPath": p} for v, p in mounts]
    resources = {key: draw(_resource_map) for key in ("limits", "requests")
                 if draw(st.integers(0, 2))}
    if draw(st.booleans()):  # half the containers surely ask for a GPU
        gpu = draw(st.sampled_from(["nvidia.com/gpu", "nvidia.com/mig-1g.10gb", "amd.com/gpu"]))
        resources.setdefault("limits", {})[gpu] = draw(st.integers(1, 8))
    if resources:
        container["resources"] = resources
    if init and draw(st.booleans()):
        container["restartPolicy"] = "Always"  # a native sidecar
    return container


@st.composite
def generated_pods(draw: st.DrawFn) -> dict[str, Any]:
    container_names = draw(st.lists(_names, min_size=1, max_size=5, unique=True))
    split = draw(st.integers(0, len(container_names) - 1))
    volumes = draw(st.lists(_names, max_size=2, unique=True))
    annotations: dict[str, str] = {}
    # Mostly opted in, so that most examples reach the mutation itself.
    inject = draw(st.sampled_from(["true", "true", "true", "true", "false", "yes", None]))
    if inject is not None:
        annotations[names.ANNOTATION_INJECT] = inject
    if draw(st.booleans()):
        annotations[names.ANNOTATION_POLICY] = draw(st.one_of(st.sampled_from(names.POLICIES),
                                                              _words))
    if draw(st.booleans()):
        listed = draw(st.lists(st.sampled_from([*container_names, "ghost"]), max_size=3))
        annotations[names.ANNOTATION_CONTAINERS] = ",".join(listed)
    spec: dict[str, Any] = {
        "initContainers": [draw(_container(n, volumes, init=True))
                           for n in container_names[:split]],
        "containers": [draw(_container(n, volumes, init=False)) for n in container_names[split:]],
    }
    if volumes:
        spec["volumes"] = [{"name": v, "emptyDir": {}} for v in volumes]
    if not spec["initContainers"]:
        del spec["initContainers"]
    metadata: dict[str, Any] = {"generateName": "job-", "namespace": "ml"}
    if annotations:
        metadata["annotations"] = annotations
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec}


def _all_containers(pod: dict[str, Any]) -> dict[str, dict[str, Any]]:
    spec = pod["spec"]
    return {c["name"]: c for c in [*spec.get("initContainers", []), *spec["containers"]]}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pod=generated_pods(), namespace_opted_in=st.booleans())
def test_every_patch_applies_validates_leaves_other_containers_alone_and_is_final(
    pod, namespace_opted_in
):
    pods.assert_valid_pod(pod)
    original = copy.deepcopy(pod)
    review = json.dumps(pods.admission_review(pod)).encode()

    admission = admit(review, SETTINGS, namespace_opted_in=namespace_opted_in)

    assert pod == original
    response = admission.response["response"]
    assert admission.outcome in ("patched", "unchanged", "denied")
    assert all(len(w) <= WARNING_LIMIT for w in response.get("warnings", []))
    if admission.outcome == "denied":
        assert response["allowed"] is False
        assert "patch" not in response
        return
    out = pods.patched(pod, admission.response)
    pods.assert_valid_pod(out)
    wrapped = set(filter(None, out["metadata"].get("annotations", {}).get(
        names.ANNOTATION_WRAPPED, "").split(",")))
    assert (admission.outcome == "patched") == (out != pod)
    after = _all_containers(out)
    for name, before in _all_containers(pod).items():
        if name not in wrapped:
            assert json.dumps(after[name]) == json.dumps(before)
        else:
            assert after[name]["command"][:2] == [names.LAUNCHER_PATH, "--"]
            assert after[name].get("args") == before.get("args")

    second = mutate(out, SETTINGS, namespace_opted_in=namespace_opted_in)
    assert second.changed is False
    assert second.denial is None


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pod=generated_pods(), namespace_opted_in=st.booleans())
def test_a_remembered_answer_is_the_answer_the_mutation_gives(pod, namespace_opted_in):
    fresh = admit(json.dumps(pods.admission_review(pod, uid="a")).encode(), SETTINGS,
                  namespace_opted_in=namespace_opted_in)
    for uid in ("b", "c"):  # the first may be recalled from another example, the second is
        review = json.dumps(pods.admission_review(pod, uid=uid)).encode()
        remembered = admit(review, SETTINGS, namespace_opted_in=namespace_opted_in,
                           memory=MEMORY)
        assert remembered.response["response"] == {**fresh.response["response"], "uid": uid}
        assert remembered.outcome == fresh.outcome


# --- Pods that collide with what gpunuma adds -----------------------------------------------------

_CLASH_PATHS = ["/data", "/opt/gpunuma", "/opt/gpunuma/", "//opt/gpunuma", "/opt/./gpunuma",
                "/opt/gpunuma/cache", "/opt", "/opt/gpunumax", "/dev/xvda", "/opt/gpunuma/../x"]
_CLASH_NAMES = ["main", "side", names.LAUNCHER_INIT_CONTAINER]
_VOLUME_SOURCES = [{"emptyDir": {}}, {"configMap": {"name": "c"}},
                   {"persistentVolumeClaim": {"claimName": "pvc"}}]


@st.composite
def clashing_pods(draw: st.DrawFn) -> dict[str, Any]:
    """Pods whose names and paths may collide with gpunuma's, valid or not (filtered later)."""
    volume_names = draw(st.lists(st.sampled_from(["data", "raw", "opt", names.LAUNCHER_VOLUME]),
                                 unique=True, max_size=3))
    volumes = [{"name": n, **copy.deepcopy(draw(st.sampled_from(_VOLUME_SOURCES)))}
               for n in volume_names]
    if draw(st.booleans()):
        volumes.append(copy.deepcopy(_launcher_pod_volumes()[0]))

    def container(name: str) -> dict[str, Any]:
        c: dict[str, Any] = {"name": name, "image": "pytorch", "command": ["run"]}
        if draw(st.booleans()):
            c["resources"] = {"limits": {"nvidia.com/gpu": 1}}
        names_ = [v["name"] for v in volumes]
        if names_:
            c["volumeMounts"] = [{"name": draw(st.sampled_from(names_)), "mountPath": p,
                                  **({"readOnly": True} if draw(st.booleans()) else {})}
                                 for p in draw(st.lists(st.sampled_from(_CLASH_PATHS),
                                                        unique=True, max_size=2))]
            c["volumeDevices"] = [{"name": draw(st.sampled_from(names_)), "devicePath": p}
                                  for p in draw(st.lists(st.sampled_from(_CLASH_PATHS),
                                                         unique=True, max_size=1))]
        return {k: v for k, v in c.items() if v != []}

    container_names = draw(st.lists(st.sampled_from(_CLASH_NAMES), min_size=1, max_size=3,
                                    unique=True))
    spec: dict[str, Any] = {"containers": [container(n) for n in container_names]}
    if draw(st.booleans()):
        spec["initContainers"] = [{"name": draw(st.sampled_from(["init", *_CLASH_NAMES])),
                                   "image": "busybox", "command": ["true"]}]
    if draw(st.integers(0, 3)) == 0:
        spec["ephemeralContainers"] = [{"name": draw(st.sampled_from(["debug", *_CLASH_NAMES])),
                                        "image": "busybox"}]
    if volumes:
        spec["volumes"] = volumes
    policy = draw(st.sampled_from(names.POLICIES))
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "annotations": {**pods.OPT_IN,
                                                      names.ANNOTATION_POLICY: policy}},
            "spec": spec}


def _launcher_pod_volumes() -> list[dict[str, Any]]:
    injected = mutate(pods.vllm_server(), SETTINGS).pod
    return [v for v in injected["spec"]["volumes"] if v["name"] == names.LAUNCHER_VOLUME]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                   HealthCheck.filter_too_much])
@given(pod=clashing_pods())
def test_a_patch_never_makes_a_valid_pod_invalid(pod):
    assume(not pods.api_violations(pod))
    assume(not pods.launcher_mount_conflicts(pod))
    policy = pod["metadata"]["annotations"][names.ANNOTATION_POLICY]
    result = mutate(pod, SETTINGS)
    if result.denial is not None:
        assert policy == "strict", result.denial
        return
    out = jsonpatch.apply_patch(pod, result.patch)
    assert pods.api_violations(out) == []
    assert pods.launcher_mount_conflicts(out) == []
    if not result.changed and any(w.startswith("gpunuma: pod not bound") for w in result.warnings):
        assert policy != "strict"
