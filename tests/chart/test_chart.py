"""The Helm chart, rendered for a matrix of values: valid manifests, and the promises schemas miss.

Every manifest is validated with kubernetes-validate (strict) for 1.30 and the newest version it
ships; our own custom resources against the CRDs in crds/. Then the assertions no schema makes:
the webhook's admission settings (DESIGN §9), least-privilege RBAC, Pod Security levels, and the
wiring between components (the Secret the operator writes is the one the webhook mounts).
"""

from __future__ import annotations

import argparse
from typing import Any

import jsonschema
import kubernetes_validate
import pytest

from gpunuma import names
from tests.chart.podsecurity import baseline_violations, restricted_violations
from tests.chart.render import CHART, KUBE_VERSIONS, NAMESPACE, RELEASE, Rendered, crds, load_chart, render

SCENARIOS: dict[str, dict[str, Any]] = {
    "default": {},
    "cert-manager": {"webhook": {"certificate": {"mode": "cert-manager"}}},
    "cert-manager-with-existing-issuer": {"webhook": {"certificate": {
        "mode": "cert-manager",
        "certManager": {"issuerRef": {"name": "corp-ca", "kind": "ClusterIssuer"}},
    }}},
    "kubernetes-before-1.30": {"webhook": {"matchConditions": False}},
    "custom-gpu-resources": {"gpuResources": ["example.com/fake-gpu", "nvidia.com/gpu"]},
    "agent-nvml-off": {"agent": {"nvml": {"enabled": False}}},
    "service-monitor": {"serviceMonitor": {"enabled": True, "labels": {"release": "prom"}}},
    "strict-and-fail-closed": {"defaultPolicy": "strict",
                               "webhook": {"failurePolicy": "Fail", "timeoutSeconds": 30}},
    "no-webhook": {"webhook": {"enabled": False}},
    "webhook-only": {"agent": {"enabled": False}, "operator": {"enabled": False},
                     "webhook": {"certificate": {"mode": "cert-manager"}}},
}

# Kinds of other projects (cert-manager, Prometheus Operator): no schema here; the tests below
# assert the fields that matter.
FOREIGN_KINDS = {"Certificate", "Issuer", "ServiceMonitor"}

WRITE_VERBS = {"create", "update", "patch", "delete", "deletecollection", "escalate", "bind", "impersonate"}


@pytest.fixture(scope="module")
def chart() -> Any:
    return load_chart()


@pytest.fixture(scope="module", params=sorted(SCENARIOS))
def scenario(request: pytest.FixtureRequest, chart: Any) -> tuple[str, Rendered]:
    name: str = request.param
    return name, render(chart, SCENARIOS[name])


@pytest.fixture(scope="module")
def default(chart: Any) -> Rendered:
    return render(chart)


def crd_schemas() -> dict[tuple[str, str], dict[str, Any]]:
    """(apiVersion, kind) → openAPIV3Schema of every CRD the chart ships."""
    schemas = {}
    for _, crd in crds():
        for version in crd["spec"]["versions"]:
            key = (f"{crd['spec']['group']}/{version['name']}", crd["spec"]["names"]["kind"])
            schemas[key] = version["schema"]["openAPIV3Schema"]
    return schemas


# --- validity ------------------------------------------------------------------------------------

@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
def test_every_rendered_manifest_is_valid_kubernetes(
    scenario: tuple[str, Rendered], kube_version: str,
) -> None:
    _, rendered = scenario
    version = kubernetes_validate.latest_version() if kube_version == "latest" else kube_version
    own = crd_schemas()
    for doc in rendered.documents:
        key = (doc["apiVersion"], doc["kind"])
        if key in own:
            jsonschema.validate(doc, own[key])
        elif doc["kind"] not in FOREIGN_KINDS:
            kubernetes_validate.validate(doc, version, strict=True)


def null_fields(node: Any, path: str = "") -> list[str]:
    if node is None:
        return [path]
    if isinstance(node, dict):
        return [p for key, value in node.items() for p in null_fields(value, f"{path}.{key}")]
    if isinstance(node, list):
        return [p for index, value in enumerate(node) for p in null_fields(value, f"{path}[{index}]")]
    return []


def test_no_manifest_has_an_empty_field_left_by_a_template(scenario: tuple[str, Rendered]) -> None:
    # An empty `annotations:` renders as null: valid to the schema, but never what a template means.
    _, rendered = scenario
    for doc in rendered.documents:
        assert null_fields(doc) == [], f"{doc['kind']} {doc['metadata']['name']}"


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
def test_every_crd_is_a_valid_custom_resource_definition(kube_version: str) -> None:
    version = kubernetes_validate.latest_version() if kube_version == "latest" else kube_version
    found = list(crds())
    assert {crd["spec"]["names"]["kind"] for _, crd in found} >= {"ClusterKopfPeering", "KopfPeering"}
    for path, crd in found:
        assert crd["kind"] == "CustomResourceDefinition", path
        kubernetes_validate.validate(crd, version, strict=True)


@pytest.mark.parametrize("kube_version", ["v1.30.0", "v1.36.0"])
@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_the_chart_lints_clean_in_strict_mode(name: str, kube_version: str) -> None:
    import helm_python

    report = helm_python.lint(CHART, SCENARIOS[name], strict=True, kube_version=kube_version)
    problems = [m for m in report["messages"] if m["severity"] >= 2] + report["errors"]
    assert problems == []


def test_every_object_carries_the_release_labels(default: Rendered) -> None:
    for doc in default.documents:
        labels = doc["metadata"]["labels"]
        assert labels["app.kubernetes.io/instance"] == RELEASE
        assert labels["app.kubernetes.io/name"] == "gpunuma"


# --- the webhook configuration (DESIGN §9) -------------------------------------------------------

def webhooks(rendered: Rendered) -> dict[str, dict[str, Any]]:
    configuration = rendered.one("MutatingWebhookConfiguration")
    return {hook["name"]: hook for hook in configuration["webhooks"]}


def test_the_webhook_configuration_has_the_design_settings(default: Rendered) -> None:
    hooks = webhooks(default)
    assert set(hooks) == {"pod.gpunuma.io", "namespace.gpunuma.io"}
    for hook in hooks.values():
        assert hook["failurePolicy"] == "Ignore"
        assert hook["timeoutSeconds"] == 5
        assert hook["reinvocationPolicy"] == "IfNeeded"
        assert hook["sideEffects"] == "None"
        assert hook["rules"] == [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"],
                                  "resources": ["pods"], "scope": "Namespaced"}]
        service = hook["clientConfig"]["service"]
        assert service["name"] == default.one("Service", f"{RELEASE}-webhook")["metadata"]["name"]
        assert service["namespace"] == NAMESPACE
        assert "objectSelector" not in hook
    assert hooks["pod.gpunuma.io"]["clientConfig"]["service"]["path"] == "/mutate"
    assert hooks["namespace.gpunuma.io"]["clientConfig"]["service"]["path"] == "/mutate-namespace"


@pytest.mark.parametrize("timeout", [1, 5, 12, 30])
def test_the_webhook_timeout_is_the_value_set_and_at_most_30_seconds(chart: Any, timeout: int) -> None:
    hooks = webhooks(render(chart, {"webhook": {"timeoutSeconds": timeout}}))
    assert {hook["timeoutSeconds"] for hook in hooks.values()} == {timeout}
    assert timeout <= 30


@pytest.mark.parametrize("policy", ["Ignore", "Fail"])
def test_the_failure_policy_is_the_value_set(chart: Any, policy: str) -> None:
    hooks = webhooks(render(chart, {"webhook": {"failurePolicy": policy}}))
    assert {hook["failurePolicy"] for hook in hooks.values()} == {policy}
    assert all("matchConditions" in hook for hook in hooks.values())


@pytest.mark.parametrize("namespace", [NAMESPACE, "gpunuma", "platform-gpu"])
def test_system_namespaces_and_the_release_namespace_are_never_sent(chart: Any, namespace: str) -> None:
    for hook in webhooks(render(chart, namespace=namespace)).values():
        expressions = hook["namespaceSelector"]["matchExpressions"]
        excluded = [e for e in expressions if e["key"] == "kubernetes.io/metadata.name"]
        assert len(excluded) == 1
        assert excluded[0]["operator"] == "NotIn"
        assert set(excluded[0]["values"]) >= {"kube-system", "kube-node-lease", namespace}


def excluded_namespaces(hook: dict[str, Any]) -> list[str]:
    expressions = hook["namespaceSelector"]["matchExpressions"]
    [excluded] = [e for e in expressions if e["key"] == "kubernetes.io/metadata.name"]
    assert excluded["operator"] == "NotIn"
    values: list[str] = excluded["values"]
    return values


def test_additional_excluded_namespaces_add_to_the_system_ones_never_replace_them(chart: Any) -> None:
    rendered = render(chart, {"webhook": {"additionalExcludedNamespaces": ["monitoring", "kube-system"]}})
    for hook in webhooks(rendered).values():
        values = excluded_namespaces(hook)
        assert set(values) == {"kube-system", "kube-node-lease", NAMESPACE, "monitoring"}
        assert len(values) == len(set(values))


def test_the_old_excluded_namespaces_value_is_refused_rather_than_ignored(chart: Any) -> None:
    import helm_python

    with pytest.raises(helm_python.HelmError, match="excludedNamespaces"):
        render(chart, {"webhook": {"excludedNamespaces": ["monitoring"]}})


def test_the_namespace_entry_selects_only_labelled_namespaces(default: Rendered) -> None:
    expressions = webhooks(default)["namespace.gpunuma.io"]["namespaceSelector"]["matchExpressions"]
    assert {"key": names.LABEL_NAMESPACE_INJECT, "operator": "In",
            "values": [names.NAMESPACE_INJECT_ENABLED]} in expressions


def test_the_pod_entry_leaves_labelled_namespaces_to_the_namespace_entry(default: Rendered) -> None:
    # An annotated pod in a labelled namespace must not go through both entries (two calls, and
    # two chances to be refused under failurePolicy Fail).
    hooks = webhooks(default)
    pod_selector = hooks["pod.gpunuma.io"]["namespaceSelector"]["matchExpressions"]
    assert {"key": names.LABEL_NAMESPACE_INJECT, "operator": "NotIn",
            "values": [names.NAMESPACE_INJECT_ENABLED]} in pod_selector
    namespace_selector = hooks["namespace.gpunuma.io"]["namespaceSelector"]["matchExpressions"]
    assert [e for e in namespace_selector if e["key"] == names.LABEL_NAMESPACE_INJECT] == [
        {"key": names.LABEL_NAMESPACE_INJECT, "operator": "In", "values": [names.NAMESPACE_INJECT_ENABLED]}]


def test_match_conditions_keep_pods_that_did_not_opt_in_away(chart: Any) -> None:
    hooks = webhooks(render(chart, {"webhook": {"matchConditions": True}}))
    opted_in = hooks["pod.gpunuma.io"]["matchConditions"]
    assert len(opted_in) == 1
    assert f"object.metadata.annotations['{names.ANNOTATION_INJECT}'] == 'true'" in opted_in[0]["expression"]
    not_opted_out = hooks["namespace.gpunuma.io"]["matchConditions"]
    assert f"object.metadata.annotations['{names.ANNOTATION_INJECT}'] != 'false'" in (
        not_opted_out[0]["expression"])


def test_match_conditions_are_absent_in_the_fallback_for_clusters_before_1_30(chart: Any) -> None:
    rendered = render(chart, {"webhook": {"matchConditions": False}})
    for hook in webhooks(rendered).values():
        assert "matchConditions" not in hook
        assert "objectSelector" not in hook
    assert "Kubernetes < 1.30" in rendered.notes


def test_match_conditions_auto_follows_the_kubernetes_version_helm_reports(chart: Any) -> None:
    # Offline, Helm reports its own default Kubernetes version, which is ≥ 1.30.
    auto = webhooks(render(chart, {"webhook": {"matchConditions": "auto"}}))
    assert all("matchConditions" in hook for hook in auto.values())


# --- certificates --------------------------------------------------------------------------------

def mounted_secret(rendered: Rendered) -> str:
    volumes = {v["name"]: v for v in rendered.pod_spec("webhook")["volumes"]}
    name: str = volumes["tls"]["secret"]["secretName"]
    return name


def test_in_operator_mode_the_operator_writes_the_secret_the_webhook_mounts(default: Rendered) -> None:
    env = default.env("operator")
    assert env["GPUNUMA_CERTIFICATES"] == "self-managed"
    assert env["GPUNUMA_WEBHOOK_SECRET"] == mounted_secret(default)
    assert env["GPUNUMA_WEBHOOK_SERVICE"] == f"{RELEASE}-webhook"
    configuration = default.one("MutatingWebhookConfiguration")
    assert env["GPUNUMA_WEBHOOK_CONFIGURATION"] == configuration["metadata"]["name"]
    assert "cert-manager.io/inject-ca-from" not in configuration["metadata"].get("annotations", {})
    assert default.of_kind("Certificate") == []
    role = default.one("Role", f"{RELEASE}-operator")
    named = [rule for rule in role["rules"] if rule.get("resourceNames")]
    assert named[0]["resourceNames"] == [mounted_secret(default), f"{mounted_secret(default)}-ca"]


def test_in_cert_manager_mode_cert_manager_issues_the_secret_and_injects_the_ca(chart: Any) -> None:
    rendered = render(chart, SCENARIOS["cert-manager"])
    certificate = rendered.one("Certificate", f"{RELEASE}-webhook")
    annotations = rendered.one("MutatingWebhookConfiguration")["metadata"]["annotations"]
    assert annotations["cert-manager.io/inject-ca-from"] == f"{NAMESPACE}/{certificate['metadata']['name']}"
    assert certificate["spec"]["secretName"] == mounted_secret(rendered)
    assert f"{RELEASE}-webhook.{NAMESPACE}.svc" in certificate["spec"]["dnsNames"]
    # The operator no longer needs Secrets or the webhook configuration.
    assert rendered.of_kind("Role") == []
    operator_rules = rendered.one("ClusterRole", f"{RELEASE}-operator")["rules"]
    assert all("mutatingwebhookconfigurations" not in rule["resources"] for rule in operator_rules)
    assert rendered.env("operator")["GPUNUMA_CERTIFICATES"] == "cert-manager"


def test_cert_manager_mode_issues_the_serving_certificate_from_a_ca_of_its_own(chart: Any) -> None:
    """Issue #16 item 6: self-signed bootstrap → CA Certificate → CA Issuer → serving certificate,
    so that a renewal of the serving certificate is never a change of the trusted CA."""
    rendered = render(chart, SCENARIOS["cert-manager"])
    issuers = {doc["metadata"]["name"]: doc["spec"] for doc in rendered.of_kind("Issuer")}
    certificates = {doc["metadata"]["name"]: doc["spec"] for doc in rendered.of_kind("Certificate")}
    serving = certificates[f"{RELEASE}-webhook"]
    ca_issuer = issuers[serving["issuerRef"]["name"]]
    assert serving["issuerRef"]["kind"] == "Issuer"
    assert "ca" in ca_issuer, "the serving certificate must come from a CA Issuer"
    ca_certificate = next(spec for spec in certificates.values()
                          if spec["secretName"] == ca_issuer["ca"]["secretName"])
    assert ca_certificate["isCA"] is True
    assert ca_certificate["privateKey"]["rotationPolicy"] == "Never"
    assert issuers[ca_certificate["issuerRef"]["name"]] == {"selfSigned": {}}
    assert ca_certificate["secretName"] != serving["secretName"]
    assert serving.get("isCA") is not True


def test_cert_manager_mode_can_use_an_existing_issuer(chart: Any) -> None:
    rendered = render(chart, SCENARIOS["cert-manager-with-existing-issuer"])
    assert rendered.of_kind("Issuer") == []
    assert rendered.one("Certificate")["spec"]["issuerRef"] == {"name": "corp-ca", "kind": "ClusterIssuer"}


# --- RBAC ----------------------------------------------------------------------------------------

def test_no_rbac_rule_grants_a_wildcard(scenario: tuple[str, Rendered]) -> None:
    _, rendered = scenario
    for role in rendered.of_kind("ClusterRole") + rendered.of_kind("Role"):
        for rule in role["rules"]:
            for field in ("verbs", "resources", "apiGroups", "resourceNames"):
                assert not any("*" in item for item in rule.get(field, [])), (role["metadata"]["name"], rule)


def bindings_of(rendered: Rendered, service_account: str) -> list[dict[str, Any]]:
    return [
        binding for binding in rendered.of_kind("RoleBinding") + rendered.of_kind("ClusterRoleBinding")
        if any(s["kind"] == "ServiceAccount" and s["name"] == service_account for s in binding["subjects"])
    ]


def test_the_webhook_has_no_api_access_at_all(scenario: tuple[str, Rendered]) -> None:
    name, rendered = scenario
    if not SCENARIOS[name].get("webhook", {}).get("enabled", True):
        assert bindings_of(rendered, f"{RELEASE}-webhook") == []
        return
    account = rendered.one("ServiceAccount", f"{RELEASE}-webhook")
    assert account["automountServiceAccountToken"] is False
    assert bindings_of(rendered, f"{RELEASE}-webhook") == []
    spec = rendered.pod_spec("webhook")
    assert spec["serviceAccountName"] == f"{RELEASE}-webhook"
    assert spec["automountServiceAccountToken"] is False


def test_the_agent_may_write_only_gpunumalayouts_read_its_node_list_slices_and_pods(
    default: Rendered,
) -> None:
    bindings = bindings_of(default, f"{RELEASE}-agent")
    assert [b["kind"] for b in bindings] == ["ClusterRoleBinding"]
    role = default.one("ClusterRole", bindings[0]["roleRef"]["name"])
    grants = {(group, resource, verb) for rule in role["rules"] for group in rule["apiGroups"]
              for resource in rule["resources"] for verb in rule["verbs"]}
    writes = {(g, r) for g, r, v in grants if v in WRITE_VERBS}
    assert writes == {(names.CRD_GROUP, names.CRD_PLURAL)}
    assert {(g, r, v) for g, r, v in grants if r == "nodes"} == {("", "nodes", "get")}
    # Two lists: DRA ResourceSlices (which GPU a ResourceClaim's device is) and its node's pods
    # (field selector), for the UIDs and container ids of observed bindings.
    assert {(g, r, v) for g, r, v in grants if v in ("list", "watch")} == {
        ("resource.k8s.io", "resourceslices", "list"), ("", "pods", "list")}


def test_the_operator_reads_secrets_only_in_its_namespace_and_only_its_own(default: Rendered) -> None:
    cluster_rules = default.one("ClusterRole", f"{RELEASE}-operator")["rules"]
    assert all("secrets" not in rule["resources"] for rule in cluster_rules)
    role = default.one("Role", f"{RELEASE}-operator")
    assert role["metadata"]["namespace"] == NAMESPACE
    for rule in role["rules"]:
        assert rule["resources"] == ["secrets"]
        assert rule["verbs"] == ["create"] or rule.get("resourceNames")


def test_the_operator_may_write_the_node_labels_pod_annotations_and_layout_status(default: Rendered) -> None:
    rules = default.one("ClusterRole", f"{RELEASE}-operator")["rules"]
    writes = {(group, resource) for rule in rules for group in rule["apiGroups"]
              for resource in rule["resources"] if set(rule["verbs"]) & WRITE_VERBS}
    assert writes >= {("", "nodes"), ("", "pods"), (names.CRD_GROUP, f"{names.CRD_PLURAL}/status")}
    assert ("", "secrets") not in writes
    peering = [rule for rule in rules
               if rule["resources"] == ["clusterkopfpeerings"] and "patch" in rule["verbs"]]
    assert peering[0]["resourceNames"] == ["gpunuma"]


# --- Pod Security --------------------------------------------------------------------------------

@pytest.mark.parametrize("component", ["operator", "webhook"])
def test_operator_and_webhook_pods_pass_the_restricted_level(
    scenario: tuple[str, Rendered], component: str,
) -> None:
    _, rendered = scenario
    if not any(doc["metadata"]["labels"].get("app.kubernetes.io/component") == component
               and doc["kind"] == "Deployment" for doc in rendered.documents):
        pytest.skip(f"{component} disabled in this scenario")
    assert restricted_violations(rendered.pod_spec(component)) == []


def test_the_agent_breaks_baseline_only_by_its_host_mounts_and_sys_ptrace(default: Rendered) -> None:
    spec = default.pod_spec("agent")
    host_paths = {v["hostPath"]["path"] for v in spec["volumes"] if "hostPath" in v}
    assert host_paths == {"/sys", "/proc", "/var/lib/kubelet/pod-resources"}
    for violation in baseline_violations(spec):
        # SYS_PTRACE reads numa_maps for observed bindings (agent.observeMemory).
        assert violation.startswith("HostPath volumes") or violation.endswith(
            "adds ['SYS_PTRACE']"), violation
    # Against restricted, only the mounts and running as root (kubelet.sock is root's 0755).
    for violation in restricted_violations(spec):
        assert violation.startswith(("HostPath volumes", "volume types", "running as non-root",
                                     "capabilities: ")), violation


def test_the_agent_runs_with_the_least_it_needs(default: Rendered) -> None:
    spec = default.pod_spec("agent")
    container = spec["containers"][0]
    context = container["securityContext"]
    assert context["allowPrivilegeEscalation"] is False
    assert context["privileged"] is False
    assert context["readOnlyRootFilesystem"] is True
    # SYS_PTRACE alone, to read numa_maps (agent.observeMemory, on by default).
    assert context["capabilities"] == {"drop": ["ALL"], "add": ["SYS_PTRACE"]}
    assert context["seccompProfile"] == {"type": "RuntimeDefault"}
    assert not any(spec.get(key) for key in ("hostNetwork", "hostPID", "hostIPC"))
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    host_volumes = {v["name"] for v in spec["volumes"] if "hostPath" in v}
    assert all(mounts[name]["readOnly"] is True for name in host_volumes)
    env = default.env("agent")
    assert env["GPUNUMA_SYSFS_ROOT"] == mounts["host-sys"]["mountPath"] == "/host/sys"
    assert env["GPUNUMA_PROCFS_ROOT"] == "/host/proc"
    # The whole /proc, read-only, for the observed binding (agent.hostProc: all, the default).
    assert mounts["host-proc"]["mountPath"] == "/host/proc"
    assert env["NODE_NAME"] == {"fieldRef": {"fieldPath": "spec.nodeName"}}
    assert "--node-name=$(NODE_NAME)" in container["args"]
    assert env["GPUNUMA_KUBELET_SOCKET"] == mounts["pod-resources"]["mountPath"] + "/kubelet.sock"


def readme_section(heading: str) -> str:
    text = (CHART.parents[1] / "README.md").read_text()
    start = text.index(f"\n## {heading}\n")
    end = text.find("\n## ", start + 1)
    return text[start:end if end != -1 else None]


def test_the_notes_and_the_readme_install_the_kubectl_plugin_the_same_way(default: Rendered) -> None:
    readme = (CHART.parents[1] / "README.md").read_text()
    first = next(line for line in readme.splitlines() if line.startswith("python3 -m venv"))
    install = first.split(" && .venv/bin/gpunuma")[0]
    assert install == "python3 -m venv .venv && .venv/bin/pip install ."
    assert install in default.notes
    assert 'export PATH="$PWD/.venv/bin:$PATH"' in default.notes + readme_section("Install on a cluster")
    assert "pip install gpunuma" not in default.notes + readme


def test_the_readme_builds_and_pushes_the_image_before_helm_install() -> None:
    install = readme_section("Install on a cluster")
    build, push, helm = (install.index(command) for command in ("docker build", "docker push",
                                                                 "helm install"))
    assert build < push < helm
    assert "--set image.repository=" in install[helm:]


def test_the_launcher_image_must_be_pullable_from_opted_in_namespaces_is_documented() -> None:
    values = (CHART / "values.yaml").read_text()
    image_block = values[values.index("launcher:"):values.index("imagePullSecrets:")]
    assert "pullable from every opted-in namespace" in image_block
    assert "pullable from every opted-in namespace" in (CHART.parents[1] / "docs/limits.md").read_text()


def test_the_privileged_namespace_label_is_asked_for_only_when_the_agent_runs(
    chart: Any, default: Rendered,
) -> None:
    label = "pod-security.kubernetes.io/enforce=privileged"
    assert f"kubectl label namespace {NAMESPACE} {label}" in default.notes
    assert label not in render(chart, SCENARIOS["webhook-only"]).notes


# --- components and options ----------------------------------------------------------------------

def test_the_agent_asks_for_nvml_but_no_runtime_class_by_default(default: Rendered) -> None:
    # A RuntimeClass the cluster lacks keeps every agent pod from starting (CRI-O, OpenShift, AMD
    # nodes): the default is the node's runtime, which is NVIDIA's where the GPU Operator runs.
    assert "runtimeClassName" not in default.pod_spec("agent")
    assert default.env("agent")["NVIDIA_VISIBLE_DEVICES"] == "all"


def test_the_agent_runtime_class_is_the_value_set(chart: Any) -> None:
    rendered = render(chart, {"agent": {"runtimeClassName": "nvidia"}})
    assert rendered.pod_spec("agent")["runtimeClassName"] == "nvidia"


def test_with_nvml_off_the_agent_has_no_runtime_class_and_sees_no_gpus(chart: Any) -> None:
    rendered = render(chart, SCENARIOS["agent-nvml-off"])
    assert "runtimeClassName" not in rendered.pod_spec("agent")
    assert not any(key.startswith("NVIDIA_") for key in rendered.env("agent"))


def test_custom_gpu_resources_reach_the_webhook_and_the_agent(chart: Any) -> None:
    rendered = render(chart, SCENARIOS["custom-gpu-resources"])
    for component in ("webhook", "agent"):
        assert rendered.env(component)["GPUNUMA_GPU_RESOURCES"] == "example.com/fake-gpu,nvidia.com/gpu"


def test_the_webhook_installs_the_launcher_from_the_launcher_image(chart: Any) -> None:
    rendered = render(chart, {"image": {"tag": "0.2.0"}, "launcher": {"image": {"tag": "0.2.1"}}})
    container = rendered.pod_spec("webhook")["containers"][0]
    assert container["image"] == "ghcr.io/gpunuma/gpunuma:0.2.0"
    assert rendered.env("webhook")["GPUNUMA_LAUNCHER_IMAGE"] == "ghcr.io/gpunuma/numa-exec:0.2.1"
    digest = "sha256:" + "ab" * 32
    pinned = render(chart, {"launcher": {"image": {"repository": "registry.example/numa-exec",
                                                   "digest": digest}}})
    assert pinned.env("webhook")["GPUNUMA_LAUNCHER_IMAGE"] == f"registry.example/numa-exec@{digest}"


def test_the_webhook_is_highly_available_with_https_probes(default: Rendered) -> None:
    deployment = default.workload("webhook")
    assert deployment["spec"]["replicas"] == 2
    spec = deployment["spec"]["template"]["spec"]
    assert spec["affinity"]["podAntiAffinity"]
    container = spec["containers"][0]
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["scheme"] == "HTTPS"
    budget = default.one("PodDisruptionBudget")
    assert budget["spec"]["minAvailable"] == 1
    assert budget["spec"]["selector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]


def test_the_operator_runs_two_peered_replicas(
    monkeypatch: pytest.MonkeyPatch, default: Rendered, chart: Any,
) -> None:
    assert default.workload("operator")["spec"]["replicas"] == 2
    peering = default.one("ClusterKopfPeering")
    assert default.env("operator")["GPUNUMA_PEERING_NAME"] == peering["metadata"]["name"]
    # The operator judges staleness by the agent's heartbeat, by default and when it is set.
    for rendered in (default, render(chart, {"agent": {"heartbeatSeconds": 120}})):
        heartbeat = parse_as_the_container_would(monkeypatch, rendered, "agent").heartbeat
        assert parse_as_the_container_would(monkeypatch, rendered, "operator").heartbeat_interval == heartbeat


def test_every_container_requests_resources(scenario: tuple[str, Rendered]) -> None:
    _, rendered = scenario
    for doc in rendered.documents:
        if doc["kind"] in ("DaemonSet", "Deployment"):
            for container in doc["spec"]["template"]["spec"]["containers"]:
                assert container["resources"]["requests"]["cpu"]
                assert container["resources"]["limits"]["memory"]


def test_service_monitors_scrape_every_component_and_the_webhook_with_its_ca(chart: Any) -> None:
    rendered = render(chart, SCENARIOS["service-monitor"])
    monitors = {m["metadata"]["name"]: m for m in rendered.of_kind("ServiceMonitor")}
    assert set(monitors) == {f"{RELEASE}-agent", f"{RELEASE}-operator", f"{RELEASE}-webhook"}
    operator_service = rendered.one("Service", f"{RELEASE}-operator-metrics")
    operator_ports = {p["name"]: p["containerPort"]
                      for p in rendered.pod_spec("operator")["containers"][0]["ports"]}
    assert operator_service["spec"]["ports"][0]["port"] == operator_ports["metrics"]
    assert rendered.env("operator")["GPUNUMA_METRICS_LISTEN"] == f":{operator_ports['metrics']}"
    agent_service = rendered.one("Service", f"{RELEASE}-agent-metrics")
    agent_pod_labels = rendered.workload("agent")["spec"]["template"]["metadata"]["labels"]
    assert agent_service["spec"]["selector"].items() <= agent_pod_labels.items()
    assert monitors[f"{RELEASE}-agent"]["spec"]["selector"]["matchLabels"].items() <= (
        agent_service["metadata"]["labels"].items())
    webhook = monitors[f"{RELEASE}-webhook"]["spec"]["endpoints"][0]
    assert webhook["scheme"] == "https"
    assert webhook["tlsConfig"]["ca"]["secret"] == {"name": mounted_secret(rendered), "key": "ca.crt"}
    assert all(m["metadata"]["labels"]["release"] == "prom" for m in monitors.values())
    assert render(chart).of_kind("ServiceMonitor") == []


# --- the manifests against the gpunuma command line ----------------------------------------------

def parse_as_the_container_would(monkeypatch: pytest.MonkeyPatch, rendered: Rendered, component: str,
                                 ) -> argparse.Namespace:
    """Parse the container's args with its env, as `gpunuma` would."""
    from gpunuma.cli import build_parser

    env = {k: v for k, v in rendered.env(component).items() if isinstance(v, str)}
    if component == "operator":  # the downward API's metadata.namespace
        env["GPUNUMA_NAMESPACE"] = NAMESPACE
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    parser = build_parser()
    container = rendered.pod_spec(component)["containers"][0]
    args = [arg.replace("$(NODE_NAME)", "gpu-node-1") for arg in container["args"]]
    return parser.parse_args(args)


def test_the_webhook_container_starts_with_the_settings_the_chart_means(
    monkeypatch: pytest.MonkeyPatch, chart: Any,
) -> None:
    rendered = render(chart, {"defaultPolicy": "cpu-only", "gpuResources": ["amd.com/gpu"],
                              "gpuClaims": ["mi300x-*", "*gpu*"], "webhook": {"port": 9443}})
    parsed = parse_as_the_container_would(monkeypatch, rendered, "webhook")
    assert parsed.listen == ":9443"  # every address, IPv4 and IPv6
    assert parsed.shutdown_delay == 5
    assert str(parsed.tls_cert_file) == "/etc/gpunuma/tls/tls.crt"
    assert str(parsed.tls_key_file) == "/etc/gpunuma/tls/tls.key"
    assert tuple(parsed.gpu_resources) == ("amd.com/gpu",)
    assert tuple(parsed.gpu_claims) == ("mi300x-*", "*gpu*")
    assert tuple(parse_as_the_container_would(monkeypatch, render(chart, {"gpuClaims": []}),
                                              "webhook").gpu_claims) == ()
    assert parsed.default_policy == "cpu-only"
    assert parsed.launcher_image == "ghcr.io/gpunuma/numa-exec:0.1.0"
    container = rendered.pod_spec("webhook")["containers"][0]
    assert container["ports"][0]["containerPort"] == 9443


@pytest.mark.parametrize("delay", [0, 5, 30])
def test_the_webhook_pod_may_drain_for_the_shutdown_delay_and_the_in_flight_grace(
    monkeypatch: pytest.MonkeyPatch, chart: Any, delay: int,
) -> None:
    from gpunuma.webhook.server import SHUTDOWN_TIMEOUT_S

    rendered = render(chart, {"webhook": {"shutdownDelaySeconds": delay}})
    assert parse_as_the_container_would(monkeypatch, rendered, "webhook").shutdown_delay == delay
    grace = rendered.pod_spec("webhook")["terminationGracePeriodSeconds"]
    assert grace > delay + SHUTDOWN_TIMEOUT_S


def test_the_agent_container_starts_with_the_settings_the_chart_means(
    monkeypatch: pytest.MonkeyPatch, default: Rendered,
) -> None:
    parsed = parse_as_the_container_would(monkeypatch, default, "agent")
    assert parsed.node_name == "gpu-node-1"
    assert str(parsed.sysfs_root) == "/host/sys"
    assert str(parsed.procfs_root) == "/host/proc"
    assert parsed.backend == "auto"
    assert (parsed.interval, parsed.heartbeat, parsed.allocations_interval) == (60, 600, 10)
    assert parsed.discovery_timeout == 30
    assert str(parsed.kubelet_socket) == "/var/lib/kubelet/pod-resources/kubelet.sock"
    assert parsed.listen == ":8081"
    assert tuple(parsed.gpu_resources) == ("nvidia.com/gpu", "nvidia.com/mig-*", "amd.com/gpu")


def test_the_operator_container_starts_with_the_settings_the_chart_means(
    monkeypatch: pytest.MonkeyPatch, chart: Any,
) -> None:
    rendered = render(chart, {"agent": {"heartbeatSeconds": 300}, "operator": {"podNamespaces": ["ml"]}})
    parsed = parse_as_the_container_would(monkeypatch, rendered, "operator")
    assert parsed.heartbeat_interval == 300
    assert parsed.stale_after == 3
    assert parsed.peering_name == rendered.one("ClusterKopfPeering")["metadata"]["name"]
    assert parsed.certificates == "self-managed"
    assert parsed.namespace == NAMESPACE
    assert parsed.webhook_service == rendered.one("Service", f"{RELEASE}-webhook")["metadata"]["name"]
    assert parsed.webhook_secret == mounted_secret(rendered)
    assert parsed.webhook_configuration == rendered.one("MutatingWebhookConfiguration")["metadata"]["name"]
    assert tuple(parsed.pod_namespaces) == ("ml",)
    assert parsed.liveness == "http://0.0.0.0:8080/healthz"


def test_without_a_webhook_the_operator_manages_no_certificates(
    monkeypatch: pytest.MonkeyPatch, chart: Any,
) -> None:
    rendered = render(chart, SCENARIOS["no-webhook"])
    assert rendered.of_kind("MutatingWebhookConfiguration") == []
    parsed = parse_as_the_container_would(monkeypatch, rendered, "operator")
    assert parsed.certificates == "none"


@pytest.mark.parametrize(("component", "settings_class"), [
    ("agent", "AgentSettings"), ("operator", "OperatorSettings"), ("webhook", "WebhookSettings"),
])
def test_every_variable_the_chart_sets_is_a_setting_of_its_component(
    component: str, settings_class: str, scenario: tuple[str, Rendered],
) -> None:
    """A variable the process does not read would be silently ignored: each one the chart sets
    must be defined by the component's settings (gpunuma/settings.py, where each is defined once)."""
    from gpunuma import settings

    _, rendered = scenario
    workloads = [doc for doc in rendered.of_kind("DaemonSet") + rendered.of_kind("Deployment")
                 if doc["metadata"]["labels"]["app.kubernetes.io/component"] == component]
    if not workloads:
        return  # the component is disabled in this scenario
    env = rendered.env(component)
    known = {option.env for _, _, option in settings.options(getattr(settings, settings_class))}
    unknown = {name for name in env if name.startswith("GPUNUMA_")} - known
    assert not unknown, f"{component}: the chart sets {sorted(unknown)}, which gpunuma never reads"


def test_a_value_that_defaults_to_null_passes_nothing_until_it_is_set(
    monkeypatch: pytest.MonkeyPatch, default: Rendered, chart: Any,
) -> None:
    from gpunuma.settings import AgentSettings

    assert "GPUNUMA_INTERVAL" not in default.env("agent")
    assert parse_as_the_container_would(monkeypatch, default, "agent").interval == AgentSettings(
        node_name="n").interval
    monkeypatch.delenv("GPUNUMA_INTERVAL", raising=False)
    rendered = render(chart, {"agent": {"intervalSeconds": 90, "discoveryTimeoutSeconds": 45}})
    assert rendered.env("agent")["GPUNUMA_INTERVAL"] == "90"
    parsed = parse_as_the_container_would(monkeypatch, rendered, "agent")
    assert (parsed.interval, parsed.discovery_timeout) == (90, 45)
