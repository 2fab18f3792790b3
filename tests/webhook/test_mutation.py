"""The pure mutation: who is mutated, what changes, what is refused, and that it is idempotent."""

from __future__ import annotations

import copy
import json
from typing import Any

import jsonpatch
import kubernetes_validate
import pytest

from gpunuma import names
from gpunuma.settings import MutationSettings
from gpunuma.webhook.messages import WARNING_LIMIT, admission_warning
from gpunuma.webhook.mutation import Mutation, mutate
from gpunuma.webhook.podshape import InvalidPod
from gpunuma.webhook.selection import gpu_requests
from tests.chart.podsecurity import restricted_violations
from tests.webhook import pods
from tests.webhook.differ import json_patch

SETTINGS = MutationSettings(launcher_image="registry.example/gpunuma:1.2.3")


def gpu_pod(*, annotations: dict[str, str] | None = None, command: list[str] | None = None,
            resources: dict[str, Any] | None = None) -> dict[str, Any]:
    container: dict[str, Any] = {
        "name": "main", "image": "nvcr.io/nvidia/pytorch:24.08-py3",
        "resources": resources or {"limits": {"nvidia.com/gpu": 1}},
    }
    if command is not None:
        container["command"] = command
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "namespace": "ml",
                         "annotations": dict(pods.OPT_IN if annotations is None else annotations)},
            "spec": {"containers": [container]}}


def applied(pod: dict[str, Any], result: Mutation) -> dict[str, Any]:
    """The original pod with the webhook's patch applied, checked against the mutated pod."""
    out: dict[str, Any] = jsonpatch.apply_patch(pod, result.patch)
    assert out == result.pod
    return out


def container(pod: dict[str, Any], name: str) -> dict[str, Any]:
    spec = pod["spec"]
    found: dict[str, Any] = next(c for c in [*spec.get("initContainers", []), *spec["containers"]]
                                 if c["name"] == name)
    return found


# --- Realistic pods ------------------------------------------------------------------------------


@pytest.mark.parametrize(("make_pod", "expected_wrapped"), list(pods.REALISTIC_PODS.values()),
                         ids=list(pods.REALISTIC_PODS))
def test_a_realistic_gpu_pod_gets_a_patch_that_applies_and_validates(make_pod, expected_wrapped):
    pod = make_pod()
    original = copy.deepcopy(pod)
    result = mutate(pod, SETTINGS)
    assert pod == original, "the input pod must not be modified"
    assert result.changed
    assert result.denial is None
    assert list(result.wrapped) == expected_wrapped
    out = applied(pod, result)
    pods.assert_valid_pod(out)
    assert out["metadata"]["annotations"][names.ANNOTATION_WRAPPED] == ",".join(expected_wrapped)
    assert out["metadata"]["labels"][names.LABEL_MANAGED] == "true"
    assert out["spec"]["initContainers"][0]["name"] == names.LAUNCHER_INIT_CONTAINER
    for name in expected_wrapped:
        before, after = container(original, name), container(out, name)
        assert after["command"] == [names.LAUNCHER_PATH, "--", *before["command"]]
        assert after.get("args") == before.get("args")
        assert {"name": "GPUNUMA_POLICY", "value": "preferred"} in after["env"]
        assert {"name": names.LAUNCHER_VOLUME, "mountPath": names.LAUNCHER_MOUNT_PATH,
                "readOnly": True} in after["volumeMounts"]
    untouched = [c for c in [*original["spec"].get("initContainers", []),
                             *original["spec"]["containers"]] if c["name"] not in expected_wrapped]
    for before in untouched:
        assert json.dumps(container(out, before["name"])) == json.dumps(before)
    assert mutate(out, SETTINGS).changed is False


def test_a_pod_injected_by_a_release_before_the_launcher_image_is_not_injected_twice():
    out = applied(pods.vllm_server(), mutate(pods.vllm_server(), SETTINGS))
    out["spec"]["initContainers"][0]["command"] = ["gpunuma", "install-launcher", "/opt/gpunuma"]

    again = mutate(out, SETTINGS)

    assert again.changed is False


def test_the_init_container_is_restricted_and_installs_numa_exec():
    out = applied(pods.vllm_server(), mutate(pods.vllm_server(), SETTINGS))
    launcher = out["spec"]["initContainers"][0]
    assert launcher["image"] == "registry.example/gpunuma:1.2.3"
    # The launcher image holds only the static binary, which copies itself into the volume.
    assert launcher["command"] == ["/numa-exec", "--install", "/opt/gpunuma"]
    assert "restartPolicy" not in launcher
    security = launcher["securityContext"]
    assert security["runAsNonRoot"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["readOnlyRootFilesystem"] is True
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert security["seccompProfile"] == {"type": "RuntimeDefault"}
    # The init container alone meets Pod Security "restricted".
    assert restricted_violations({"initContainers": [launcher], "containers": []}) == []
    assert launcher["volumeMounts"] == [{"name": "gpunuma-launcher", "mountPath": "/opt/gpunuma"}]
    assert {"name": "gpunuma-launcher", "emptyDir": {"medium": "Memory", "sizeLimit": "8Mi"}} in (
        out["spec"]["volumes"])


def test_the_init_container_leaves_the_uid_to_the_platform():
    # OpenShift's restricted-v2 SCC assigns a UID from the namespace's range and rejects a fixed
    # one; runAsNonRoot alone makes the kubelet check the image's numeric USER.
    out = applied(pods.vllm_server(), mutate(pods.vllm_server(), SETTINGS))
    security = out["spec"]["initContainers"][0]["securityContext"]
    assert "runAsUser" not in security
    assert "runAsGroup" not in security
    assert security["runAsNonRoot"] is True


def test_a_guaranteed_pod_stays_guaranteed():
    """requests == limits on every container, init ones included, or the QoS class drops."""
    out = applied(pods.vllm_server(), mutate(pods.vllm_server(), SETTINGS))
    resources = out["spec"]["initContainers"][0]["resources"]
    assert resources["requests"] == resources["limits"]
    assert set(resources["limits"]) == {"cpu", "memory"}


def test_a_best_effort_pod_stays_best_effort():
    out = applied(gpu_pod(command=["run"]), mutate(gpu_pod(command=["run"]), SETTINGS))
    assert "resources" not in out["spec"]["initContainers"][0]


def test_the_injected_annotation_carries_the_version():
    settings = MutationSettings(version="9.8.7")
    result = mutate(gpu_pod(command=["run"]), settings)
    assert result.pod["metadata"]["annotations"][names.ANNOTATION_INJECTED] == "9.8.7"


# --- Who is mutated ------------------------------------------------------------------------------


def test_a_pod_without_the_annotation_is_left_alone():
    result = mutate(gpu_pod(annotations={}, command=["run"]), SETTINGS)
    assert (result.changed, result.reason) == (False, "not opted in")


def test_a_pod_in_an_opted_in_namespace_is_mutated_without_the_annotation():
    result = mutate(gpu_pod(annotations={}, command=["run"]), SETTINGS, namespace_opted_in=True)
    assert result.changed
    assert result.wrapped == ("main",)


def test_the_pod_annotation_false_opts_out_even_in_an_opted_in_namespace():
    pod = gpu_pod(annotations={names.ANNOTATION_INJECT: "false"}, command=["run"])
    result = mutate(pod, SETTINGS, namespace_opted_in=True)
    assert (result.changed, result.reason) == (False, "opted out")
    assert mutate(pod, SETTINGS, explicit=True).reason == "opted out"


def test_an_unknown_inject_value_is_a_warning_and_counts_as_unset():
    pod = gpu_pod(annotations={names.ANNOTATION_INJECT: "yes"}, command=["run"])
    result = mutate(pod, SETTINGS)
    assert not result.changed
    assert any("gpunuma.io/inject='yes' ignored" in w for w in result.warnings)
    assert mutate(pod, SETTINGS, namespace_opted_in=True).changed


def test_a_mirror_pod_is_never_mutated():
    pod = gpu_pod(command=["run"])
    pod["metadata"]["annotations"]["kubernetes.io/config.mirror"] = "5f2b1a"
    assert mutate(pod, SETTINGS).reason == "mirror pod"


@pytest.mark.parametrize("where", ["os", "nodeSelector"])
def test_a_windows_gpu_pod_is_left_alone_with_a_warning(where):
    pod = gpu_pod(command=["run.exe"])
    if where == "os":
        pod["spec"]["os"] = {"name": "windows"}
    else:
        pod["spec"]["nodeSelector"] = {"kubernetes.io/os": "windows"}
    result = mutate(pod, SETTINGS)
    assert (result.changed, result.reason) == (False, "windows pod")
    assert "numa-exec is a Linux executable" in result.warnings[0]


def test_a_pod_without_gpu_containers_gets_no_patch():
    pod = gpu_pod(command=["run"], resources={"limits": {"cpu": "1"}})
    result = mutate(pod, SETTINGS)
    assert (result.changed, result.reason, result.warnings) == (False, "no GPU containers", ())
    assert json_patch(pod, result.pod) == []


def test_a_zero_gpu_limit_is_not_a_gpu_request():
    pod = gpu_pod(command=["run"], resources={"limits": {"nvidia.com/gpu": "0"}})
    assert not mutate(pod, SETTINGS).changed


@pytest.mark.parametrize("policy", ["preferred", "strict"])
def test_a_null_gpu_quantity_is_not_a_gpu_request(policy):
    # A Helm value left empty renders `nvidia.com/gpu: null`, which Kubernetes reads as 0.
    pod = gpu_pod(annotations={**pods.OPT_IN, names.ANNOTATION_POLICY: policy},
                  resources={"limits": {"nvidia.com/gpu": None}, "requests": {"amd.com/gpu": None}})
    result = mutate(pod, SETTINGS)  # no command: strict would refuse a GPU container
    assert (result.changed, result.denial, result.reason) == (False, None, "no GPU containers")
    assert gpu_requests(pod["spec"]["containers"][0], SETTINGS.gpu_resources) == {}


def test_gpu_requests_count_as_well_as_limits():
    pod = gpu_pod(command=["run"], resources={"requests": {"amd.com/gpu": 1}})
    assert mutate(pod, SETTINGS).wrapped == ("main",)


@pytest.mark.parametrize(("resource", "wrapped"), [
    ("nvidia.com/mig-3g.40gb", True),
    ("nvidia.com/mig-1g.10gb.me", True),
    ("nvidia.com/gpu.shared", False),
    ("example.com/gpu", False),
])
def test_gpu_resource_names_are_matched_with_globs(resource, wrapped):
    pod = gpu_pod(command=["run"], resources={"limits": {resource: 1}})
    assert bool(mutate(pod, SETTINGS).wrapped) is wrapped


def test_configured_gpu_resource_names_replace_the_defaults():
    settings = MutationSettings(gpu_resources=("gpu.intel.com/*",))
    intel = gpu_pod(command=["run"], resources={"limits": {"gpu.intel.com/i915": 1}})
    assert mutate(intel, settings).wrapped == ("main",)
    assert not mutate(gpu_pod(command=["run"]), settings).changed


def test_the_containers_annotation_selects_exactly_those_containers():
    pod = gpu_pod(command=["run"])
    pod["spec"]["containers"].append({"name": "dra", "image": "x", "command": ["infer"]})
    pod["metadata"]["annotations"][names.ANNOTATION_CONTAINERS] = " dra , ghost"
    result = mutate(pod, SETTINGS)
    assert result.wrapped == ("dra",)
    assert container(result.pod, "main") == pod["spec"]["containers"][0]
    assert any("'ghost', which is not a container" in w for w in result.warnings)


# --- DRA ------------------------------------------------------------------------------------------


def dra_pod(claims: list[dict[str, Any]], uses: dict[str, list[str]]) -> dict[str, Any]:
    """A vLLM pod whose GPU comes from a ResourceClaim (Kubernetes ≥ 1.31 field names)."""
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "vllm-dra", "namespace": "ml", "annotations": dict(pods.OPT_IN)},
            "spec": {"resourceClaims": claims, "containers": [
                {"name": name, "image": "vllm/vllm-openai:v0.6.3",
                 "command": ["python3", "-m", "vllm.entrypoints.openai.api_server"],
                 "resources": {"claims": [{"name": claim} for claim in used]}}
                for name, used in uses.items()]}}


def test_a_container_using_a_gpu_claim_is_wrapped_and_a_nic_claims_container_is_not():
    pod = dra_pod(
        [{"name": "gpu", "resourceClaimTemplateName": "single-gpu"},
         {"name": "rdma", "resourceClaimName": "ib-nic"}],
        {"server": ["gpu", "rdma"], "router": ["rdma"]},
    )
    result = mutate(pod, SETTINGS)
    assert result.wrapped == ("server",)
    out = applied(pod, result)
    kubernetes_validate.validate(out, kubernetes_validate.latest_version(), strict=True)
    assert container(out, "server")["command"][:2] == [names.LAUNCHER_PATH, "--"]
    assert container(out, "router") == pod["spec"]["containers"][1]


@pytest.mark.parametrize("entry", [
    {"name": "accel", "resourceClaimName": "shared-gpus"},  # the claim's name
    {"name": "accel", "resourceClaimTemplateName": "a100-gpu-template"},  # the template's
    {"name": "gpu-0", "resourceClaimTemplateName": "accelerator"},  # the pod's own entry name
    {"name": "accel", "source": {"resourceClaimTemplateName": "gpu"}},  # Kubernetes 1.30 form
])
def test_any_name_a_pod_gives_its_claim_can_match_the_gpu_claims_globs(entry):
    pod = dra_pod([entry], {"main": [entry["name"]]})
    assert mutate(pod, SETTINGS).wrapped == ("main",)


def test_gpu_claims_are_configurable_and_can_be_turned_off():
    pod = dra_pod([{"name": "acc", "resourceClaimTemplateName": "h100-x1"}], {"main": ["acc"]})
    assert not mutate(pod, SETTINGS).changed  # "h100-x1" does not say gpu
    assert mutate(pod, MutationSettings(gpu_claims=("h100-*",))).wrapped == ("main",)
    gpu = dra_pod([{"name": "gpu", "resourceClaimTemplateName": "gpu"}], {"main": ["gpu"]})
    assert not mutate(gpu, MutationSettings(gpu_claims=())).changed


# --- Policy --------------------------------------------------------------------------------------


@pytest.mark.parametrize("policy", names.POLICIES)
def test_each_known_policy_reaches_the_environment(policy):
    pod = gpu_pod(annotations={**pods.OPT_IN, names.ANNOTATION_POLICY: policy}, command=["run"])
    env = container(mutate(pod, SETTINGS).pod, "main")["env"]
    assert env == [{"name": "GPUNUMA_POLICY", "value": policy}]


def test_an_unknown_policy_is_a_warning_and_falls_back_to_the_default():
    hostile = "strict; rm -rf / #$(reboot)"
    pod = gpu_pod(annotations={**pods.OPT_IN, names.ANNOTATION_POLICY: hostile}, command=["run"])
    result = mutate(pod, MutationSettings(default_policy="cpu-only"))
    assert container(result.pod, "main")["env"] == [{"name": "GPUNUMA_POLICY", "value": "cpu-only"}]
    assert hostile not in json.dumps(result.pod["spec"])
    assert any("unknown gpunuma.io/policy" in w and "using cpu-only" in w for w in result.warnings)


def test_a_default_policy_outside_the_known_ones_is_refused():
    with pytest.raises(ValueError, match="default policy 'fast'"):
        MutationSettings(default_policy="fast")


def test_a_different_policy_variable_already_in_the_env_is_replaced_with_a_warning():
    pod = gpu_pod(command=["run"])
    pod["spec"]["containers"][0]["env"] = [{"name": "A", "value": "1"},
                                           {"name": "GPUNUMA_POLICY", "value": "strict"}]
    result = mutate(pod, SETTINGS)
    assert container(result.pod, "main")["env"] == [{"name": "A", "value": "1"},
                                                   {"name": "GPUNUMA_POLICY", "value": "preferred"}]
    assert any("GPUNUMA_POLICY replaced" in w for w in result.warnings)


# --- Containers without a command ----------------------------------------------------------------


def test_a_gpu_container_without_command_is_skipped_with_a_warning():
    pod = gpu_pod()
    pod["spec"]["containers"].append({"name": "second", "image": "x", "command": ["serve"],
                                      "resources": {"limits": {"nvidia.com/gpu": 1}}})
    result = mutate(pod, SETTINGS)
    out = applied(pod, result)
    pods.assert_valid_pod(out)
    assert (result.wrapped, result.skipped) == (("second",), ("main",))
    assert out["metadata"]["annotations"][names.ANNOTATION_SKIPPED] == "main"
    assert out["spec"]["containers"][0] == pod["spec"]["containers"][0]
    assert any("'main' not wrapped" in w and "ENTRYPOINT" in w for w in result.warnings)


def test_a_pod_whose_only_gpu_container_has_no_command_gets_only_annotations_and_managed_false():
    pod = gpu_pod()
    result = mutate(pod, SETTINGS)
    out = applied(pod, result)
    assert out["spec"] == pod["spec"]
    assert out["metadata"]["annotations"][names.ANNOTATION_SKIPPED] == "main"
    # Unbound: not "true" (no placement to report), but visible to the operator for its warnings.
    assert out["metadata"]["labels"][names.LABEL_MANAGED] == "false"
    assert out["metadata"]["annotations"][names.ANNOTATION_WARNINGS] == "\n".join(result.warnings)
    assert mutate(out, SETTINGS).patch == []


def test_warnings_are_kept_on_the_mutated_pod_for_the_operator_to_turn_into_events():
    pod = gpu_pod(command=["python3"], annotations={**pods.OPT_IN, names.ANNOTATION_POLICY: "fast"})
    result = mutate(pod, SETTINGS)
    out = applied(pod, result)
    assert out["metadata"]["labels"][names.LABEL_MANAGED] == "true"
    assert result.warnings
    assert out["metadata"]["annotations"][names.ANNOTATION_WARNINGS].split("\n") == list(result.warnings)
    quiet = applied(gpu_pod(command=["python3"]), mutate(gpu_pod(command=["python3"]), SETTINGS))
    assert names.ANNOTATION_WARNINGS not in quiet["metadata"]["annotations"]


def test_strict_with_a_container_without_command_is_denied_with_how_to_fix_it():
    pod = gpu_pod(annotations={**pods.OPT_IN, names.ANNOTATION_POLICY: "strict"})
    result = mutate(pod, SETTINGS)
    assert result.denial is not None
    assert not result.changed
    assert "'main'" in result.denial
    assert "set command" in result.denial
    assert names.ANNOTATION_CONTAINERS in result.denial


def test_an_empty_command_counts_as_no_command():
    assert mutate(gpu_pod(command=[]), SETTINGS).skipped == ("main",)


# --- Name clashes --------------------------------------------------------------------------------


def clash_outcome(pod: dict[str, Any], policy: str) -> str:
    """The clash message: a denial under strict; under preferred, a warning and no change."""
    pod["metadata"]["annotations"][names.ANNOTATION_POLICY] = policy
    result = mutate(pod, SETTINGS)
    assert result.changed is False
    assert result.pod is pod
    if policy == "strict":
        assert result.denial is not None
        return result.denial
    assert result.denial is None
    [warning] = result.warnings
    assert warning.startswith("gpunuma: pod not bound: ")
    return warning


CLASH_POLICIES = pytest.mark.parametrize("policy", ["strict", "preferred", "cpu-only"])


@CLASH_POLICIES
def test_a_foreign_volume_with_our_name_is_refused_not_replaced(policy):
    pod = gpu_pod(command=["run"])
    pod["spec"]["volumes"] = [{"name": "gpunuma-launcher", "configMap": {"name": "mine"}}]
    assert "volume named 'gpunuma-launcher'" in clash_outcome(pod, policy)


@CLASH_POLICIES
def test_a_foreign_init_container_with_our_name_is_refused(policy):
    pod = gpu_pod(command=["run"])
    pod["spec"]["initContainers"] = [{"name": "gpunuma-launcher", "image": "busybox",
                                      "command": ["true"]}]
    assert "init container named" in clash_outcome(pod, policy)


@CLASH_POLICIES
def test_an_app_container_with_our_name_is_refused(policy):
    pod = gpu_pod(command=["run"])
    pod["spec"]["containers"].append({"name": "gpunuma-launcher", "image": "busybox"})
    assert "a container named" in clash_outcome(pod, policy)


@CLASH_POLICIES
@pytest.mark.parametrize("path", ["/opt/gpunuma", "/opt/gpunuma/", "//opt//gpunuma",
                                  "/opt/./gpunuma", "/opt/gpunuma/cache", "/opt/gpunuma/a/b"])
def test_another_mount_at_or_below_our_path_is_refused(policy, path):
    pod = gpu_pod(command=["run"])
    pod["spec"]["volumes"] = [{"name": "tools", "emptyDir": {}}]
    pod["spec"]["containers"][0]["volumeMounts"] = [{"name": "tools", "mountPath": path}]
    assert f"mounts 'tools' at {path!r}" in clash_outcome(pod, policy)


@CLASH_POLICIES
@pytest.mark.parametrize("path", ["/opt/gpunuma", "/opt/gpunuma/", "/opt/gpunuma/disk", "/opt"])
def test_a_block_device_overlapping_our_path_is_refused(policy, path):
    # The API server refuses a devicePath equal to a mountPath; a device file cannot hold a
    # mount point, and our read-only volume cannot hold a device file.
    pod = gpu_pod(command=["run"])
    pod["spec"]["volumes"] = [{"name": "raw", "persistentVolumeClaim": {"claimName": "raw"}}]
    pod["spec"]["containers"][0]["volumeDevices"] = [{"name": "raw", "devicePath": path}]
    assert "block device 'raw'" in clash_outcome(pod, policy)


@CLASH_POLICIES
@pytest.mark.parametrize("volume", [{"configMap": {"name": "c"}}, {"secret": {"secretName": "s"}},
                                    {"emptyDir": {}, "readOnly": True}])
def test_a_read_only_volume_above_our_path_is_refused(policy, volume):
    volume = dict(volume)
    read_only = volume.pop("readOnly", False)
    pod = gpu_pod(command=["run"])
    pod["spec"]["volumes"] = [{"name": "opt", **volume}]
    mount = {"name": "opt", "mountPath": "/opt", **({"readOnly": True} if read_only else {})}
    pod["spec"]["containers"][0]["volumeMounts"] = [mount]
    assert "cannot be created" in clash_outcome(pod, policy)


def test_a_writable_volume_above_our_path_or_a_neighbour_is_fine():
    pod = gpu_pod(command=["run"])
    pod["spec"]["volumes"] = [{"name": "opt", "emptyDir": {}}, {"name": "x", "emptyDir": {}}]
    pod["spec"]["containers"][0]["volumeMounts"] = [{"name": "opt", "mountPath": "/opt"},
                                                    {"name": "x", "mountPath": "/opt/gpunumax"}]
    result = mutate(pod, SETTINGS)
    assert result.wrapped == ("main",)
    assert result.warnings == ()


def test_a_clash_in_a_pod_with_nothing_to_wrap_is_not_our_business():
    pod = gpu_pod(command=["run"], resources={"limits": {"cpu": "1"}})
    pod["spec"]["volumes"] = [{"name": "gpunuma-launcher", "configMap": {"name": "mine"}}]
    assert mutate(pod, SETTINGS).denial is None


# --- Idempotency and reinvocation ----------------------------------------------------------------


def test_a_mutated_pod_gets_no_patch():
    pod = pods.gpu_sidecar_and_init()
    once = mutate(pod, SETTINGS).pod
    twice = mutate(once, SETTINGS)
    assert (twice.changed, twice.reason) == (False, "already mutated")
    assert twice.pod is once
    assert json_patch(once, twice.pod) == []


def test_a_reinvoked_pod_defaulted_by_the_api_server_gets_no_patch():
    out = mutate(pods.vllm_server(), SETTINGS).pod
    defaulted = copy.deepcopy(out)
    for c in [*defaulted["spec"]["initContainers"], *defaulted["spec"]["containers"]]:
        c.setdefault("terminationMessagePath", "/dev/termination-log")
        c.setdefault("terminationMessagePolicy", "File")
        c.setdefault("imagePullPolicy", "IfNotPresent")
    assert mutate(defaulted, SETTINGS).changed is False


def test_a_container_added_by_another_webhook_after_us_is_wrapped_on_reinvocation():
    out = mutate(pods.vllm_server(), SETTINGS).pod
    out["spec"]["containers"].append({"name": "late", "image": "x", "command": ["go"],
                                      "resources": {"limits": {"nvidia.com/gpu": 1}}})
    again = mutate(out, SETTINGS)
    assert again.changed
    assert again.wrapped == ("vllm", "late")
    assert len(again.pod["spec"]["initContainers"]) == 1
    assert again.pod["metadata"]["annotations"][names.ANNOTATION_WRAPPED] == "vllm,late"


def test_our_init_container_is_moved_first_when_another_was_put_before_it():
    out = mutate(pods.gpu_sidecar_and_init(), SETTINGS).pod
    inits = out["spec"]["initContainers"]
    out["spec"]["initContainers"] = [{"name": "istio-init", "image": "istio/proxyv2"}, *inits]
    again = applied(out, mutate(out, SETTINGS))
    assert [c["name"] for c in again["spec"]["initContainers"]][:2] == [
        "gpunuma-launcher", "istio-init"]


def test_an_upgraded_webhook_keeps_an_existing_launcher_container():
    out = mutate(pods.ray_gpu_worker(), MutationSettings(launcher_image="old:1")).pod
    again = mutate(out, MutationSettings(launcher_image="new:2", version=SETTINGS.version))
    assert again.changed is False
    assert again.pod["spec"]["initContainers"][0]["image"] == "old:1"


# --- Malformed input and warnings ----------------------------------------------------------------


@pytest.mark.parametrize(("break_pod", "message"), [
    (lambda p: p.pop("spec"), "no spec"),
    (lambda p: p["spec"].update(containers={"main": {}}), "containers must be a list"),
    (lambda p: p["spec"]["containers"][0].update(command="python3 serve.py"),
     "command must be a list of strings"),
    (lambda p: p["metadata"].update(annotations=["a"]), "metadata.annotations must be a map"),
    (lambda p: p["metadata"]["annotations"].update({"x": 1}), "values must be strings"),
    (lambda p: p["spec"]["containers"][0]["resources"].update(limits=["nvidia.com/gpu"]),
     "resources.limits must be a map"),
])
def test_a_malformed_pod_raises_invalid_pod_naming_the_field(break_pod, message):
    pod = gpu_pod(command=["run"])
    break_pod(pod)
    with pytest.raises(InvalidPod, match=message):
        mutate(pod, SETTINGS)


def test_warnings_are_whole_lines_and_admission_cuts_them_to_the_limit():
    long_name = "c" * 63
    pod = gpu_pod(annotations={**pods.OPT_IN, names.ANNOTATION_POLICY: "x" * 500 + "\n\x1b[2J",
                               names.ANNOTATION_CONTAINERS: "main," + long_name})
    result = mutate(pod, SETTINGS)
    assert len(result.warnings) == 3
    for warning in result.warnings:
        assert "\n" not in warning
        assert "\x1b" not in warning
        assert warning.startswith("gpunuma: ")
        assert len(admission_warning(warning)) <= WARNING_LIMIT
    # gpunuma inject prints them whole: only admission has a length limit.
    clashing = gpu_pod(command=["run"])
    clashing["spec"]["volumes"] = [{"name": "gpunuma-launcher", "configMap": {"name": "mine"}}]
    [warning] = mutate(clashing, SETTINGS).warnings
    assert len(warning) > WARNING_LIMIT
    assert warning.endswith('opt the pod out with gpunuma.io/inject: "false"')


def test_a_warning_the_second_pass_no_longer_sees_is_kept_so_the_pod_is_final():
    # Found by hypothesis: the first pass warns that it replaced the container's GPUNUMA_POLICY;
    # the second sees its own value and does not warn, yet must not patch the warnings away.
    pod = gpu_pod(command=["python3"])
    pod["spec"]["containers"][0]["env"] = [{"name": "GPUNUMA_POLICY", "value": "strict"}]
    first = mutate(pod, SETTINGS)
    out = applied(pod, first)
    assert any("GPUNUMA_POLICY" in w for w in first.warnings)
    second = mutate(out, SETTINGS)
    assert not any("GPUNUMA_POLICY" in w for w in second.warnings)
    assert second.patch == []
    assert out["metadata"]["annotations"][names.ANNOTATION_WARNINGS] == "\n".join(first.warnings)
