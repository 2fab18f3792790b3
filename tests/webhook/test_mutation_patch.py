"""The mutation's own JSON patch against the differ's, on pods of every shape the mutation reads.

``mutate`` builds its patch where it writes each value; ``json_patch`` (the differ) computes one
from the pod before and after. For any pod, odd ones included (null or missing fields, a launcher
not first or twice, a stale ``GPUNUMA_POLICY``, two containers of one name, metadata missing),
applying the patch with ``jsonpatch`` (an independent RFC 6902 implementation) must give exactly
the pod the mutation returns, and the patch must be empty exactly when the differ's is.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import jsonpatch
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gpunuma import names
from gpunuma.settings import MutationSettings
from gpunuma.webhook.edits import POLICY_ENV
from gpunuma.webhook.mutation import mutate
from tests.webhook import pods
from tests.webhook.differ import json_patch

SETTINGS = {
    False: MutationSettings(launcher_image="registry.example/gpunuma:1.2.3"),
    True: MutationSettings(launcher_image="registry.example/gpunuma:1.2.3", cgroup_binding=True),
}
# Containers named so that some collide (two of one name) when drawn twice.
_NAMES = st.sampled_from(["main", "side", "worker", "init"])


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def _launcher(**changes: Any) -> dict[str, Any]:
    container = copy.deepcopy(mutate(pods.vllm_server(), SETTINGS[False]).pod["spec"][
        "initContainers"][0])
    return {**container, **changes}


def _maybe(draw: st.DrawFn, key: str, target: dict[str, Any], values: st.SearchStrategy[Any],
           empty: type[list[Any]] | type[dict[str, Any]] = list) -> None:
    """Set ``target[key]`` to a drawn value, to null, to an empty one, or leave it absent."""
    choice = draw(st.sampled_from(["absent", "null", "empty", "value", "value"]))
    if choice == "null":
        target[key] = None
    elif choice == "empty":
        target[key] = empty()
    elif choice == "value":
        target[key] = draw(values)


@st.composite
def _containers(draw: st.DrawFn, init: bool) -> dict[str, Any]:
    container: dict[str, Any] = {"name": draw(_NAMES), "image": "pytorch"}
    command = draw(st.sampled_from(["absent", "empty", "plain", "wrapped"]))
    if command == "empty":
        container["command"] = []
    elif command == "plain":
        container["command"] = ["python", "train.py"]
    elif command == "wrapped":
        container["command"] = [names.LAUNCHER_PATH, "--", "python", "train.py"]
    policy = st.sampled_from(["preferred", "strict", "cpu-only", "other"])
    _maybe(draw, "env", container, st.lists(st.one_of(
        st.builds(lambda v: {"name": POLICY_ENV, "value": v}, policy),
        st.just({"name": "A", "value": "1"}),
        st.just({"name": POLICY_ENV, "valueFrom": {"fieldRef": {"fieldPath": "x"}}}),
    ), min_size=1, max_size=3))
    _maybe(draw, "volumeMounts", container, st.lists(st.sampled_from([
        {"name": "data", "mountPath": "/data"},
        {"name": names.LAUNCHER_VOLUME, "mountPath": names.LAUNCHER_MOUNT_PATH, "readOnly": True},
    ]), min_size=1, max_size=2, unique_by=lambda m: m["name"]))
    if draw(st.integers(0, 3)):
        container["resources"] = {"limits": {"nvidia.com/gpu": 1}}
    elif draw(st.booleans()):
        container["resources"] = {"limits": {"cpu": "1", "memory": "1Gi"}}
    if init and draw(st.booleans()):
        container["restartPolicy"] = "Always"
    return container


@st.composite
def odd_pods(draw: st.DrawFn) -> dict[str, Any]:
    spec: dict[str, Any] = {}
    _maybe(draw, "containers", spec, st.lists(_containers(init=False), min_size=1, max_size=3))
    init = draw(st.lists(st.one_of(
        _containers(init=True),
        st.just(_launcher()),
        st.just(_launcher(image="elsewhere/numa-exec:0.0.1")),
        st.just(_launcher(securityContext={"runAsNonRoot": True})),
    ), max_size=3))
    if init or draw(st.booleans()):
        spec["initContainers"] = init
    if draw(st.booleans()):
        spec["initContainers"] = None
    _maybe(draw, "volumes", spec, st.lists(st.sampled_from([
        {"name": "data", "emptyDir": {}},
        {"name": names.LAUNCHER_VOLUME, "emptyDir": {"medium": "Memory", "sizeLimit": "8Mi"}},
    ]), min_size=1, max_size=2, unique_by=lambda v: v["name"]))
    if draw(st.booleans()):
        spec["securityContext"] = {"runAsUser": draw(st.sampled_from([0, 1000]))}
    pod: dict[str, Any] = {"apiVersion": "v1", "kind": "Pod", "spec": spec}
    metadata = draw(st.sampled_from(["absent", "null", "empty", "full"]))
    if metadata != "absent":
        pod["metadata"] = None if metadata == "null" else {}
    if metadata == "full":
        annotations: dict[str, Any] = {
            **pods.OPT_IN,
            **draw(st.dictionaries(st.sampled_from([
                names.ANNOTATION_INJECTED, names.ANNOTATION_WRAPPED, names.ANNOTATION_SKIPPED,
                names.ANNOTATION_CGROUP_BOUND, names.ANNOTATION_WARNINGS, names.ANNOTATION_POLICY,
            ]), st.sampled_from(["", "main", "strict", "0.1.0", "gpunuma: stale"]), max_size=3)),
        }
        pod["metadata"]["annotations"] = draw(st.sampled_from([annotations, None]))
        _maybe(draw, "labels", pod["metadata"], st.fixed_dictionaries(
            {}, optional={names.LABEL_MANAGED: st.sampled_from(["true", "false"]),
                          "app": st.just("x")}), empty=dict)
    return json.loads(json.dumps(pod))  # no object twice, as in a pod decoded from JSON


def _check(pod: dict[str, Any], cgroup_binding: bool) -> None:
    original = copy.deepcopy(pod)
    result = mutate(pod, SETTINGS[cgroup_binding], explicit=True)
    assert _json(pod) == _json(original), "the mutation changed its input"
    if result.denial is not None:
        assert result.patch == []
        return
    # Operations may share values with the mutated pod: applied to a copy, as the API server does.
    applied = jsonpatch.apply_patch(pod, json.loads(json.dumps(result.patch)))
    assert _json(applied) == _json(result.pod)
    differ = json_patch(pod, result.pod)
    assert bool(result.patch) == bool(differ)
    assert _json(jsonpatch.apply_patch(pod, json.loads(json.dumps(differ)))) == _json(applied)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pod=odd_pods(), cgroup_binding=st.booleans())
def test_the_patch_gives_the_mutated_pod_whatever_the_pod_looks_like(pod, cgroup_binding):
    _check(pod, cgroup_binding)
    again = mutate(pod, SETTINGS[cgroup_binding], explicit=True)
    if again.changed:  # and once more on the result: a second pass patches as it should too
        _check(json.loads(json.dumps(again.pod)), cgroup_binding)


def test_the_patch_gives_the_mutated_pod_for_every_realistic_pod_and_its_reinvocation():
    for make_pod, _ in pods.REALISTIC_PODS.values():
        for cgroup_binding in (False, True):
            pod = make_pod()
            _check(pod, cgroup_binding)
            once = json.loads(json.dumps(mutate(pod, SETTINGS[cgroup_binding]).pod))
            # Another webhook put its own init container before ours, and changed the policy.
            once["spec"]["initContainers"].insert(0, {"name": "istio-init", "image": "istio"})
            once["metadata"]["annotations"][names.ANNOTATION_POLICY] = "strict"
            _check(once, cgroup_binding)
            again = mutate(once, SETTINGS[cgroup_binding])
            assert again.changed or again.denial is not None


def _gpu_container(name: str = "main", **fields: Any) -> dict[str, Any]:
    return {"name": name, "image": "pytorch", "command": ["python", "train.py"],
            "resources": {"limits": {"nvidia.com/gpu": 1}}, **fields}


# The rare shapes, each once for sure (the generator reaches them only now and then).
_RARE_PODS = {
    "our launcher refitted for a root pod": {
        "spec": {"securityContext": {"runAsUser": 0}, "initContainers": [_launcher()],
                 "containers": [_gpu_container()]}},
    "our launcher behind another init container": {
        "spec": {"initContainers": [{"name": "istio-init", "image": "istio"}, _launcher()],
                 "containers": [_gpu_container()]}},
    "our launcher twice": {
        "spec": {"initContainers": [_launcher(), {"name": "a", "image": "a"}, _launcher()],
                 "containers": [_gpu_container()]}},
    "two containers of one name": {
        "spec": {"containers": [_gpu_container(), _gpu_container(env=[{"name": "A"}])]}},
    "lists that are empty strings": {
        "spec": {"containers": [_gpu_container(env="", volumeMounts="")], "volumes": "",
                 "initContainers": ""}},
    "a stale policy twice": {
        "spec": {"containers": [_gpu_container(env=[{"name": POLICY_ENV, "value": "strict"},
                                                    {"name": POLICY_ENV, "value": "x"}])]}},
    "no metadata, no containers, a GPU init container": {
        "spec": {"initContainers": [_gpu_container("init")]}},
}


@pytest.mark.parametrize("pod", list(_RARE_PODS.values()), ids=list(_RARE_PODS))
@pytest.mark.parametrize("cgroup_binding", [False, True])
def test_the_patch_gives_the_mutated_pod_for_rare_shapes(pod, cgroup_binding):
    pod = json.loads(json.dumps(pod))
    _check(pod, cgroup_binding)
    assert mutate(pod, SETTINGS[cgroup_binding], explicit=True).changed
