"""A pod that would start without gpunuma starts with it (DESIGN §9), whatever user it runs as.

The checks that stop a pod over its user are modelled from their sources: the kubelet's
``verifyRunAsNonRoot`` (pkg/kubelet/kuberuntime/security_context_others.go), the Pod Security
Standards (tests/chart/podsecurity.py) and OpenShift's ``MustRunAsRange`` SCC strategy, which
assigns a UID from the namespace's range to every container without one and re-runs after the
mutating webhooks (the API server re-runs built-in mutating admission after a webhook's patch).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import jsonpatch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gpunuma import names
from gpunuma.settings import MutationSettings
from gpunuma.webhook.mutation import mutate
from tests.chart.podsecurity import baseline_violations, restricted_violations
from tests.webhook import pods

SETTINGS = MutationSettings(launcher_image="registry.example/gpunuma:1.2.3")
REPO = Path(__file__).resolve().parents[2]
OPENSHIFT_RANGE = (1000680000, 1000689999)


def image_user(image: str) -> str:
    """The USER of each image in these tests; gpunuma's own is read from the Dockerfile."""
    if image == SETTINGS.launcher_image:
        users = [line.split()[1] for line in (REPO / "Dockerfile").read_text().splitlines()
                 if line.startswith("USER ")]
        return users[-1].split(":")[0]
    return {"root-image": "", "uid-image": "1000", "named-image": "nobody"}[image]


def kubelet_refusal(spec: dict[str, Any], container: dict[str, Any]) -> str | None:
    """Why the kubelet would not start ``container`` over its user, or None."""
    pod_context = spec.get("securityContext") or {}
    context = container.get("securityContext") or {}
    if not context.get("runAsNonRoot", pod_context.get("runAsNonRoot")):
        return None
    uid = context.get("runAsUser", pod_context.get("runAsUser"))
    if uid is not None:
        return "container's runAsUser breaks non-root policy" if uid == 0 else None
    user = image_user(container["image"])
    if user in ("", "0"):  # no USER: the runtime reports UID 0
        return "container has runAsNonRoot and image will run as root"
    if not user.isdigit():
        return f"container has runAsNonRoot and image has non-numeric user ({user})"
    return None


def refusals(spec: dict[str, Any]) -> list[str]:
    return [f"{c['name']}: {reason}" for c in [*spec.get("initContainers", []), *spec["containers"]]
            if (reason := kubelet_refusal(spec, c)) is not None]


def openshift_range_scc(spec: dict[str, Any]) -> dict[str, Any] | str:
    """restricted-v2's UID strategy: the spec with UIDs assigned, or why it is refused."""
    spec = copy.deepcopy(spec)
    pod_uid = (spec.get("securityContext") or {}).get("runAsUser")
    low, high = OPENSHIFT_RANGE
    if pod_uid is not None and not low <= pod_uid <= high:  # the pod's own is checked as well
        return f"pod: runAsUser {pod_uid} is not in {low}-{high}"
    for container in [*spec.get("initContainers", []), *spec["containers"]]:
        context = container.setdefault("securityContext", {})
        uid = context.get("runAsUser", pod_uid)
        if uid is None:
            context["runAsUser"] = low
        elif not low <= uid <= high:
            return f"{container['name']}: runAsUser {uid} is not in {low}-{high}"
    return spec


def injected(spec: dict[str, Any]) -> dict[str, Any]:
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "annotations": pods.OPT_IN},
           "spec": spec}
    result = mutate(pod, SETTINGS)
    assert result.denial is None
    assert result.changed
    spec_out: dict[str, Any] = jsonpatch.apply_patch(pod, result.patch)["spec"]
    return spec_out


def gpu_container(image: str = "root-image", **context: Any) -> dict[str, Any]:
    container: dict[str, Any] = {"name": "main", "image": image, "command": ["python3", "serve.py"],
                                 "resources": {"limits": {"nvidia.com/gpu": 1}}}
    if context:
        container["securityContext"] = context
    return container


RESTRICTED_CONTEXT = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]},
                      "seccompProfile": {"type": "RuntimeDefault"}}


def test_a_pod_running_as_root_still_starts():
    spec = {"securityContext": {"runAsUser": 0}, "containers": [gpu_container()]}
    assert refusals(spec) == []
    out = injected(spec)
    assert refusals(out) == []
    # Ours names the image's non-root UID; the user's containers still run as root.
    assert out["initContainers"][0]["securityContext"]["runAsUser"] == int(
        image_user(SETTINGS.launcher_image))
    assert "runAsUser" not in out["containers"][0].get("securityContext", {})


def test_a_root_pod_with_run_as_non_root_on_each_container_still_starts():
    spec = {"securityContext": {"runAsUser": 0, "runAsNonRoot": True},
            "containers": [gpu_container(runAsUser=1000)]}
    assert refusals(spec) == []
    assert refusals(injected(spec)) == []


def test_a_pod_without_a_uid_on_a_root_image_still_starts():
    spec = {"containers": [gpu_container("root-image")]}
    out = injected(spec)
    assert refusals(out) == []
    # No UID named: the kubelet checks gpunuma's image USER, which is numeric and not root.
    assert "runAsUser" not in out["initContainers"][0]["securityContext"]


def test_openshift_assigns_its_range_to_the_init_container_and_the_pod_starts():
    admitted = openshift_range_scc({"containers": [gpu_container()]})
    assert isinstance(admitted, dict)
    again = openshift_range_scc(injected(admitted))
    assert isinstance(again, dict), again
    assert refusals(again) == []
    assert again["initContainers"][0]["securityContext"]["runAsUser"] == OPENSHIFT_RANGE[0]


def test_a_restricted_pod_stays_restricted():
    for spec in (
        {"securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
         "containers": [gpu_container("uid-image", allowPrivilegeEscalation=False,
                                      capabilities={"drop": ["ALL"]})]},
        {"containers": [gpu_container("uid-image", runAsNonRoot=True, **RESTRICTED_CONTEXT)]},
    ):
        assert restricted_violations(spec) == []
        out = injected(spec)
        assert restricted_violations(out) == []
        assert refusals(out) == []


_uids = st.sampled_from([None, 0, 1000, OPENSHIFT_RANGE[0] + 5])
_non_root = st.sampled_from([None, True, False])


@st.composite
def _contexts(draw: st.DrawFn) -> dict[str, Any]:
    context = {key: value for key, value in (("runAsUser", draw(_uids)),
                                             ("runAsNonRoot", draw(_non_root))) if value is not None}
    if draw(st.booleans()):
        context.update(copy.deepcopy(RESTRICTED_CONTEXT))
    return context


@st.composite
def _specs(draw: st.DrawFn) -> dict[str, Any]:
    images = st.sampled_from(["root-image", "uid-image", "named-image"])
    spec: dict[str, Any] = {"containers": [gpu_container(draw(images), **draw(_contexts()))]}
    if draw(st.booleans()):
        spec["containers"].append({"name": "sidecar", "image": draw(images),
                                   "securityContext": draw(_contexts())})
    pod_context = draw(_contexts())
    if pod_context:
        spec["securityContext"] = {k: v for k, v in pod_context.items()
                                   if k in ("runAsUser", "runAsNonRoot", "seccompProfile")}
    return spec


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_specs())
def test_no_pod_that_starts_without_gpunuma_fails_to_start_with_it(spec):
    out = injected(spec)
    assert out["initContainers"][0]["name"] == names.LAUNCHER_INIT_CONTAINER
    if not refusals(spec):
        assert refusals(out) == []
    if not baseline_violations(spec):
        assert baseline_violations(out) == []
    if not restricted_violations(spec):
        assert restricted_violations(out) == []
    admitted = openshift_range_scc(spec)
    if isinstance(admitted, dict) and not refusals(admitted):
        again = openshift_range_scc(injected(admitted))
        assert isinstance(again, dict), again
        assert refusals(again) == []
