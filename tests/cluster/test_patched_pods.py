"""A patch never makes a valid pod invalid, as the real kube-apiserver judges it.

Each pod is created with ``dryRun=All``: the API server runs its full validation (names, mount and
device paths, schema) and admission, and stores nothing. A pod it accepts unchanged must be
accepted with gpunuma's patch applied, or (only under ``strict``) denied by the mutation with a
message; the realistic workload pods of tests/webhook/pods.py must be accepted patched.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import jsonpatch
import pytest
from hypothesis import HealthCheck, assume, given, settings

from gpunuma import names
from gpunuma.settings import MutationSettings
from gpunuma.webhook import kubeyaml
from gpunuma.webhook.inject import inject_text
from gpunuma.webhook.mutation import mutate
from tests.cluster.controlplane import ApiError, ControlPlane
from tests.webhook import pods
from tests.webhook.test_pod_start import gpu_container, security_specs
from tests.webhook.test_properties import clashing_pods

SETTINGS = MutationSettings(launcher_image="registry.example/gpunuma:1.2.3")
NAMESPACE = "patched-pods"
MANIFESTS = Path(__file__).resolve().parents[1] / "fixtures" / "manifests"


@pytest.fixture(scope="module")
def api(cluster: ControlPlane) -> ControlPlane:
    for namespace in (NAMESPACE, "llm", "inference", "nim"):  # the last: the fixture manifests'
        cluster.namespace(namespace)
    return cluster


def refusal(api: ControlPlane, pod: dict[str, Any]) -> str | None:
    """Why the API server refuses to create ``pod`` (its message), or None when it accepts it."""
    pod = {**pod, "metadata": {**pod["metadata"], "namespace": NAMESPACE}}
    try:
        api.request("POST", f"/api/v1/namespaces/{NAMESPACE}/pods?dryRun=All", pod)
    except ApiError as error:
        if error.status in (400, 403, 422):
            return error.body
        raise
    return None


@pytest.mark.parametrize("make", [pods.vllm_server, pods.torchrun_worker, pods.ray_gpu_worker,
                                  pods.gpu_sidecar_and_init, pods.mig_pod, pods.amd_pod],
                         ids=lambda make: make.__name__)
def test_the_api_server_accepts_each_realistic_pod_patched(api, make):
    pod = make()
    pod["metadata"].pop("namespace", None)
    assert refusal(api, pod) is None
    result = mutate(pod, SETTINGS)
    assert result.changed
    assert refusal(api, jsonpatch.apply_patch(pod, result.patch)) is None


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                 HealthCheck.filter_too_much])
@given(pod=clashing_pods())
def test_the_api_server_accepts_every_patched_pod_it_accepted_unpatched(api, pod):
    pod = copy.deepcopy(pod)
    pod["spec"].pop("ephemeralContainers", None)  # not settable on create
    assume(refusal(api, pod) is None)
    result = mutate(pod, SETTINGS)
    if result.denial is not None:
        assert pod["metadata"]["annotations"][names.ANNOTATION_POLICY] == "strict"
        return
    assert refusal(api, jsonpatch.apply_patch(pod, result.patch)) is None


def _gpu_pod(**container: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "annotations": dict(pods.OPT_IN)},
            "spec": {"containers": [{"name": "main", "image": "pytorch", "command": ["run"],
                                     "resources": {"limits": {"nvidia.com/gpu": 1}},
                                     **container}],
                     "volumes": [{"name": "raw", "persistentVolumeClaim": {"claimName": "raw"}},
                                 {"name": "tools", "emptyDir": {}}]}}


@pytest.mark.parametrize(("pod", "clash"), [
    (_gpu_pod(volumeDevices=[{"name": "raw", "devicePath": names.LAUNCHER_MOUNT_PATH}]),
     "block device 'raw'"),
    (_gpu_pod(volumeMounts=[{"name": "tools", "mountPath": names.LAUNCHER_MOUNT_PATH}]),
     "mounts 'tools'"),
    (_gpu_pod(volumeMounts=[{"name": "tools", "mountPath": names.LAUNCHER_MOUNT_PATH + "/"}]),
     "mounts 'tools'"),
], ids=["device-at-our-path", "mount-at-our-path", "mount-at-our-path-with-slash"])
@pytest.mark.parametrize("policy", ["preferred", "strict"])
def test_a_clashing_pod_is_left_to_start_unbound_or_denied_never_broken(api, pod, clash, policy):
    pod = copy.deepcopy(pod)
    pod["metadata"]["annotations"][names.ANNOTATION_POLICY] = policy
    assert refusal(api, pod) is None
    result = mutate(pod, SETTINGS)
    if policy == "strict":
        assert result.denial is not None
        assert clash in result.denial
        return
    assert result.denial is None
    assert any(clash in warning for warning in result.warnings)
    assert refusal(api, jsonpatch.apply_patch(pod, result.patch)) is None


BUILT_IN = {"v1", "apps/v1", "batch/v1"}


@pytest.mark.parametrize("name", sorted(p.name for p in MANIFESTS.glob("*.yaml")))
def test_the_api_server_takes_inject_output_of_real_world_manifests(api, name, tmp_path):
    """``kubectl apply --dry-run=server`` of inject's output: a string written back as a number
    ("1e-4", "08", "y") is refused here ("cannot unmarshal number into ... of type string")."""
    output, result = inject_text((MANIFESTS / name).read_text(), SETTINGS)
    assert result.errors == []
    _, documents = kubeyaml.read(output)
    built_in = [d.text for d in documents if isinstance(d.value, dict)
                and d.value.get("apiVersion") in BUILT_IN]
    if not built_in:
        pytest.skip(f"{name} holds only custom resources")
    path = tmp_path / name
    path.write_text("".join(text if text.startswith("---") else "---\n" + text
                            for text in built_in))
    applied = api.kubectl("apply", "--dry-run=server", "-f", str(path), check=False)
    assert applied.returncode == 0, applied.stderr


# --- Pod Security admission, as the API server enforces it ---------------------------------------

LEVELS = ("restricted", "baseline")


@pytest.fixture(scope="module")
def enforced(api: ControlPlane) -> ControlPlane:
    for level in LEVELS:
        api.namespace(f"psa-{level}", {"pod-security.kubernetes.io/enforce": level,
                                       "pod-security.kubernetes.io/enforce-version": "latest"})
    return api


def refusal_in(api: ControlPlane, namespace: str, pod: dict[str, Any]) -> str | None:
    pod = {**pod, "metadata": {**pod["metadata"], "namespace": namespace}}
    try:
        api.request("POST", f"/api/v1/namespaces/{namespace}/pods?dryRun=All", pod)
    except ApiError as error:
        if error.status in (400, 403, 422):
            return error.body
        raise
    return None


def _secured(spec: dict[str, Any]) -> dict[str, Any]:
    for container in spec["containers"]:
        container["image"] = "pytorch"
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "annotations": dict(pods.OPT_IN)}, "spec": spec}


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(spec=security_specs())
def test_pod_security_admission_takes_every_injected_pod_it_took_before(enforced, spec):
    pod = _secured(copy.deepcopy(spec))
    result = mutate(pod, SETTINGS)
    assert result.denial is None
    out = jsonpatch.apply_patch(pod, result.patch)
    for level in LEVELS:
        if refusal_in(enforced, f"psa-{level}", pod) is None:
            assert refusal_in(enforced, f"psa-{level}", out) is None, level


def test_a_root_pod_is_taken_under_baseline_and_a_restricted_pod_under_restricted(enforced):
    root = _secured({"securityContext": {"runAsUser": 0}, "containers": [gpu_container()]})
    restricted = _secured({
        "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [gpu_container("uid-image", allowPrivilegeEscalation=False,
                                     capabilities={"drop": ["ALL"]})]})
    for pod, level in ((root, "baseline"), (restricted, "restricted")):
        assert refusal_in(enforced, f"psa-{level}", pod) is None
        out = jsonpatch.apply_patch(pod, mutate(pod, SETTINGS).patch)
        assert out != pod
        assert refusal_in(enforced, f"psa-{level}", out) is None
