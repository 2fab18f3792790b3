"""Chart values an admin expects: registries and the launcher image, logs, extra args and env,
security-context overrides, spread constraints, service accounts, NetworkPolicies, the CRD as a
template, the post-delete cleanup hook, NOTES for every combination, and the chart's own message
when cert-manager or the Prometheus Operator is missing."""

from __future__ import annotations

from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.chart.render import CHART, Rendered, load_chart, render
from tests.chart.test_chart import parse_as_the_container_would

COMPONENTS = ("agent", "operator", "webhook")


@pytest.fixture(scope="module")
def chart() -> Any:
    return load_chart()


def failure(chart: Any, values: dict[str, Any], **options: Any) -> str:
    import helm_python

    with pytest.raises(helm_python.HelmError) as raised:
        render(chart, values, **options)
    return str(raised.value)


def images(rendered: Rendered) -> set[str]:
    found = set()
    for doc in rendered.documents:
        spec = doc.get("spec", {}).get("template", {}).get("spec", {})
        found |= {c["image"] for c in spec.get("containers", []) + spec.get("initContainers", [])}
    return found


# --- images --------------------------------------------------------------------------------------

def test_the_global_registry_prefixes_every_image_and_the_launcher(chart: Any) -> None:
    rendered = render(chart, {"global": {"imageRegistry": "mirror.example.com:5000/"}})
    assert images(rendered) == {"mirror.example.com:5000/ghcr.io/gpunuma/gpunuma:0.1.0"}
    assert rendered.env("webhook")["GPUNUMA_LAUNCHER_IMAGE"] == (
        "mirror.example.com:5000/ghcr.io/gpunuma/numa-exec:0.1.0")


def test_the_image_registry_overrides_the_global_one(chart: Any) -> None:
    rendered = render(chart, {"global": {"imageRegistry": "mirror.example.com"},
                              "image": {"registry": "registry.example.com",
                                        "repository": "gpunuma/gpunuma"}})
    assert images(rendered) == {"registry.example.com/gpunuma/gpunuma:0.1.0"}


def test_the_launcher_image_is_set_apart_from_the_components_image(chart: Any) -> None:
    digest = "sha256:" + "cd" * 32
    rendered = render(chart, {"global": {"imageRegistry": "mirror.example.com"},
                              "launcher": {"image": {"repository": "gpunuma/numa-exec",
                                                     "digest": digest}}})
    assert rendered.env("webhook")["GPUNUMA_LAUNCHER_IMAGE"] == (
        f"mirror.example.com/gpunuma/numa-exec@{digest}")
    assert images(rendered) == {"mirror.example.com/ghcr.io/gpunuma/gpunuma:0.1.0"}
    assert "mirror.example.com/gpunuma/numa-exec@" in rendered.notes


def test_the_launcher_image_needs_a_repository(chart: Any) -> None:
    message = failure(chart, {"launcher": {"image": {"repository": ""}}})
    assert "/launcher/image/repository" in message


def test_the_launcher_registry_overrides_the_global_one(chart: Any) -> None:
    rendered = render(chart, {"global": {"imageRegistry": "mirror.example.com"},
                              "launcher": {"image": {"registry": "launchers.example.com"}}})
    assert rendered.env("webhook")["GPUNUMA_LAUNCHER_IMAGE"] == (
        "launchers.example.com/ghcr.io/gpunuma/numa-exec:0.1.0")


def test_a_registry_with_a_scheme_is_refused(chart: Any) -> None:
    assert "/global/imageRegistry" in failure(chart, {"global": {"imageRegistry": "https://x.io"}})


# --- logs, extra args and env -----------------------------------------------------------------------

@pytest.mark.parametrize("component", COMPONENTS)
def test_log_level_and_format_reach_the_components_command_line(
    chart: Any, component: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    rendered = render(chart, {component: {"logLevel": "debug", "logFormat": "plain"}})
    args = parse_as_the_container_would(monkeypatch, rendered, component)
    assert (args.log_level, args.log_format) == ("debug", "plain")
    # Unset (null), the chart sets no variable: gpunuma's own default holds (defined once).
    default_env = render(chart).env(component)
    assert "GPUNUMA_LOG_LEVEL" not in default_env
    assert "GPUNUMA_LOG_FORMAT" not in default_env


@pytest.mark.parametrize("component", COMPONENTS)
def test_extra_args_and_env_are_added_after_the_charts(chart: Any, component: str,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    extra_env = [{"name": "HTTPS_PROXY", "value": "http://proxy:3128"},
                 {"name": "FROM_SECRET", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]
    rendered = render(chart, {component: {"extraArgs": ["--log-level=warning"], "extraEnv": extra_env}})
    container = rendered.pod_spec(component)["containers"][0]
    assert container["args"][-1] == "--log-level=warning"
    assert container["env"][-2:] == extra_env
    assert parse_as_the_container_would(monkeypatch, rendered, component).log_level == "warning"


# --- security contexts, spreading, service accounts ---------------------------------------------

@pytest.mark.parametrize("component", ["operator", "webhook"])
def test_security_contexts_merge_over_the_restricted_defaults(chart: Any, component: str) -> None:
    rendered = render(chart, {component: {"podSecurityContext": {"fsGroup": 2000},
                                          "securityContext": {"runAsUser": 1000,
                                                              "readOnlyRootFilesystem": False}}})
    pod = rendered.pod_spec(component)
    assert pod["securityContext"] == {"fsGroup": 2000, "runAsNonRoot": True,
                                      "seccompProfile": {"type": "RuntimeDefault"}}
    container = pod["containers"][0]["securityContext"]
    assert container["runAsUser"] == 1000
    assert container["readOnlyRootFilesystem"] is False
    assert container["capabilities"] == {"drop": ["ALL"]}
    assert container["allowPrivilegeEscalation"] is False


@pytest.mark.parametrize("component", ["operator", "webhook"])
def test_topology_spread_constraints_get_the_components_selector(chart: Any, component: str) -> None:
    own = {"maxSkew": 1, "topologyKey": "kubernetes.io/hostname", "whenUnsatisfiable": "DoNotSchedule",
           "labelSelector": {"matchLabels": {"team": "x"}}}
    zone = {"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone",
            "whenUnsatisfiable": "ScheduleAnyway"}
    rendered = render(chart, {component: {"topologySpreadConstraints": [zone, own]}})
    spread = rendered.pod_spec(component)["topologySpreadConstraints"]
    selector = rendered.workload(component)["spec"]["selector"]["matchLabels"]
    assert spread == [{**zone, "labelSelector": {"matchLabels": selector}}, own]
    assert "topologySpreadConstraints" not in render(chart).pod_spec(component)


@pytest.mark.parametrize("component", ["agent", "operator"])
def test_an_existing_service_account_is_used_and_bound(chart: Any, component: str) -> None:
    rendered = render(chart, {component: {"serviceAccount": {"create": False, "name": "mine"}}})
    assert rendered.pod_spec(component)["serviceAccountName"] == "mine"
    accounts = {doc["metadata"]["name"] for doc in rendered.of_kind("ServiceAccount")}
    assert f"gpunuma-{component}" not in accounts
    bindings = rendered.of_kind("ClusterRoleBinding") + rendered.of_kind("RoleBinding")
    subjects = [s["name"] for b in bindings if b["metadata"]["name"] == f"gpunuma-{component}"
                for s in b["subjects"]]
    assert subjects
    assert set(subjects) == {"mine"}


def test_service_account_annotations_and_names(chart: Any) -> None:
    role = {"eks.amazonaws.com/role-arn": "arn:aws:iam::1:role/gpunuma"}
    rendered = render(chart, {"operator": {"serviceAccount": {"name": "ops", "annotations": role}},
                              "commonAnnotations": {"team": "ml"}})
    account = rendered.one("ServiceAccount", "ops")
    assert account["metadata"]["annotations"] == {**role, "team": "ml"}
    assert rendered.pod_spec("operator")["serviceAccountName"] == "ops"
    assert rendered.one("ServiceAccount", "gpunuma-webhook")["automountServiceAccountToken"] is False


def test_not_creating_a_service_account_needs_its_name(chart: Any) -> None:
    message = failure(chart, {"agent": {"serviceAccount": {"create": False}}})
    assert "agent.serviceAccount.create=false needs agent.serviceAccount.name" in message


def test_unknown_keys_in_the_new_values_are_still_refused(chart: Any) -> None:
    assert "'create_'" in failure(chart, {"webhook": {"serviceAccount": {"create_": True}}})
    assert "'tags'" in failure(chart, {"launcher": {"image": {"tags": "x"}}})
    assert "'runtimeClassName'" in failure(chart, {"agent": {"nvml": {"runtimeClassName": "nvidia"}}})


# --- network policies ----------------------------------------------------------------------------

def test_network_policies_open_only_each_components_ports(chart: Any) -> None:
    assert render(chart).of_kind("NetworkPolicy") == []
    rendered = render(chart, {"networkPolicy": {"enabled": True}, "operator": {"healthPort": 8090}})
    policies = {doc["metadata"]["name"]: doc["spec"] for doc in rendered.of_kind("NetworkPolicy")}
    expected = {"gpunuma-agent": [8081], "gpunuma-operator": [8090, 8082], "gpunuma-webhook": [8443]}
    assert {name: [p["port"] for p in spec["ingress"][0]["ports"]]
            for name, spec in policies.items()} == expected
    for name, spec in policies.items():
        component = name.removeprefix("gpunuma-")
        assert spec["podSelector"]["matchLabels"] == (
            rendered.workload(component)["spec"]["selector"]["matchLabels"])
        assert spec["policyTypes"] == ["Ingress"]
        container_ports = {p["containerPort"] for p in rendered.pod_spec(component)["containers"][0]["ports"]}
        assert {p["port"] for p in spec["ingress"][0]["ports"]} == container_ports
    only_webhook = render(chart, {"networkPolicy": {"enabled": True}, "agent": {"enabled": False},
                                  "operator": {"enabled": False},
                                  "webhook": {"certificate": {"mode": "cert-manager"}}})
    assert [d["metadata"]["name"] for d in only_webhook.of_kind("NetworkPolicy")] == ["gpunuma-webhook"]


# --- CRD, cleanup hook ---------------------------------------------------------------------------

def test_the_crd_is_a_template_so_upgrades_upgrade_it(chart: Any) -> None:
    file = yaml.safe_load((CHART / "files/crds/gpunumalayouts.gpunuma.io.yaml").read_text())
    upgraded = render(chart, is_upgrade=True).one("CustomResourceDefinition")
    assert upgraded["spec"] == file["spec"]
    assert upgraded["metadata"]["annotations"] == {"helm.sh/resource-policy": "keep"}
    assert upgraded["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "Helm"
    kubernetes_validate.validate(upgraded, "1.30.0", strict=True)
    assert "annotations" not in render(chart, {"crds": {"keep": False}}).one(
        "CustomResourceDefinition")["metadata"]
    assert render(chart, {"crds": {"enabled": False}}).of_kind("CustomResourceDefinition") == []
    # Not in crds/ as well: Helm would install it from there and then fail to adopt the template.
    assert not (CHART / "crds/gpunumalayouts.gpunuma.io.yaml").exists()


def hooks(rendered: Rendered, kind: str = "post-delete") -> dict[str, dict[str, Any]]:
    return {f"{d['kind']}/{d['metadata']['name']}": d for d in rendered.documents
            if d["metadata"].get("annotations", {}).get("helm.sh/hook") == kind}


def test_the_post_delete_hook_removes_node_labels_with_only_list_and_patch_on_nodes(chart: Any) -> None:
    found = hooks(render(chart))
    assert set(found) == {"ServiceAccount/gpunuma-cleanup", "ClusterRole/gpunuma-cleanup",
                          "ClusterRoleBinding/gpunuma-cleanup", "Job/gpunuma-cleanup"}
    weights = {}
    for key, doc in found.items():
        annotations = doc["metadata"]["annotations"]
        assert annotations["helm.sh/hook"] == "post-delete"
        assert "hook-succeeded" in annotations["helm.sh/hook-delete-policy"]
        weights[key.split("/")[0]] = int(annotations["helm.sh/hook-weight"])
    assert weights["ServiceAccount"] < weights["ClusterRoleBinding"] < weights["Job"]
    assert found["ClusterRole/gpunuma-cleanup"]["rules"] == [
        {"apiGroups": [""], "resources": ["nodes"], "verbs": ["list", "patch"]}]
    pod = found["Job/gpunuma-cleanup"]["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "gpunuma-cleanup"
    assert pod["containers"][0]["args"] == ["cleanup-nodes"]
    from gpunuma.cli import build_parser

    assert build_parser().parse_args(pod["containers"][0]["args"]).command == "cleanup-nodes"
    assert hooks(render(chart, {"cleanup": {"enabled": False}})) == {}
    no_operator = render(chart, {"operator": {"enabled": False},
                                 "webhook": {"certificate": {"mode": "cert-manager"}}})
    assert hooks(no_operator) == {}


# --- missing optional APIs, NOTES ------------------------------------------------------------------

def test_cert_manager_mode_without_cert_manager_fails_with_the_charts_message(chart: Any) -> None:
    message = failure(chart, {"webhook": {"certificate": {"mode": "cert-manager"}}},
                      api_versions=("kopf.dev/v1", "monitoring.coreos.com/v1"))
    assert "serves no cert-manager.io/v1 API: install cert-manager" in message
    assert "webhook.certificate.mode=operator" in message


def test_service_monitors_without_the_prometheus_operator_fail_with_the_charts_message(chart: Any) -> None:
    message = failure(chart, {"serviceMonitor": {"enabled": True}}, api_versions=("kopf.dev/v1",))
    assert "serves no monitoring.coreos.com/v1 API" in message
    assert "serviceMonitor.enabled=false" in message


def test_helm_template_without_a_cluster_renders_the_optional_modes(chart: Any) -> None:
    # `helm template` lists Helm's built-in API versions, not a cluster's: no kopf.dev/v1 there
    # (crds/ was never installed), so nothing can be said about cert-manager or Prometheus.
    render(chart, {"webhook": {"certificate": {"mode": "cert-manager"}},
                   "serviceMonitor": {"enabled": True}}, api_versions=())


COMBINATIONS = {
    "all": {},
    "no-agent": {"agent": {"enabled": False}},
    "no-operator": {"operator": {"enabled": False}, "webhook": {"certificate": {"mode": "cert-manager"}}},
    "no-webhook": {"webhook": {"enabled": False}},
    "agent-only": {"operator": {"enabled": False}, "webhook": {"enabled": False}},
    "operator-only": {"agent": {"enabled": False}, "webhook": {"enabled": False}},
    "webhook-only": {"agent": {"enabled": False}, "operator": {"enabled": False},
                     "webhook": {"certificate": {"mode": "cert-manager"}}},
}


@pytest.mark.parametrize("name", sorted(COMBINATIONS))
def test_the_notes_speak_only_of_what_is_installed(chart: Any, name: str) -> None:
    values = COMBINATIONS[name]
    rendered = render(chart, values)
    enabled = {c for c in COMPONENTS if values.get(c, {}).get("enabled", True)}
    notes = rendered.notes
    assert notes.splitlines()[0].endswith(": " + ", ".join(c for c in COMPONENTS if c in enabled) + ".")
    assert ("kubectl get gnl" in notes) == ("agent" in enabled)
    assert ("pod-security.kubernetes.io/enforce=privileged" in notes) == ("agent" in enabled)
    assert ("kubectl get nodes -L gpunuma.io/layout" in notes) == ("operator" in enabled)
    assert ("gpunuma.io/inject" in notes) == ("webhook" in enabled)
    assert ("kubectl gpunuma explain" in notes) == ("webhook" in enabled)
    for component in {"agent", "operator", "webhook"} - enabled:
        assert f"The {component} is disabled" in notes


# --- helm test -----------------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(COMBINATIONS))
def test_helm_test_runs_gpunuma_check_for_the_installed_components(chart: Any, name: str) -> None:
    from gpunuma.cli import build_parser

    values = COMBINATIONS[name]
    found = hooks(render(chart, values), "test")
    assert set(found) == {"ServiceAccount/gpunuma-check", "ClusterRole/gpunuma-check",
                          "ClusterRoleBinding/gpunuma-check", "Pod/gpunuma-check"}
    pod = found["Pod/gpunuma-check"]["spec"]
    assert pod["serviceAccountName"] == "gpunuma-check"
    args = build_parser().parse_args(pod["containers"][0]["args"])
    assert args.command == "check"
    assert (args.heartbeat_interval, args.stale_after) == (600, 3)
    disabled = {c for c in COMPONENTS if not values.get(c, {}).get("enabled", True)}
    assert set(args.skip) == {{"agent": "agents"}.get(c, c) for c in disabled}
    rules = found["ClusterRole/gpunuma-check"]["rules"]
    assert {verb for rule in rules for verb in rule["verbs"]} <= {"get", "list"}
    read = {resource for rule in rules for resource in rule["resources"]}
    assert ("mutatingwebhookconfigurations" in read) == ("webhook" not in disabled)
    assert ("clusterkopfpeerings" in read) == ("operator" not in disabled)
    assert "helm test gpunuma" in render(chart, values).notes


def test_helm_test_can_be_left_out(chart: Any) -> None:
    rendered = render(chart, {"test": {"enabled": False}})
    assert hooks(rendered, "test") == {}
    assert "helm test" not in rendered.notes
