"""`kubectl gpunuma` against kmock's Kubernetes emulator: the tables and explanations users read."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest
import yaml

from gpunuma import names
from gpunuma.kubectl import excluded_namespaces, explain, format_table
from gpunuma.settings import MutationSettings
from gpunuma.webhook.mutation import mutate
from tests.kubectl.conftest import (
    TRAINER_GPUS,
    TRAINER_LINE,
    VLLM_LINE,
    gpu_container,
    pod_object,
    run_kubectl,
)

NODES_TABLE = """\
NODE                  GPUS   NUMA   LAYOUT            SOURCE   STALE   HEARTBEAT
gpu-a                 8      2      4-4               sysfs    no      4m
gpu-b                 2      2      unknown           sysfs    yes     1h
gpu-c                 8      8      0-2-0-2-0-2-0-2   sysfs    no      3m
gpu-old (node gone)   1      1      1                 sysfs    yes     5h
"""

NODES_TABLE_WIDE = (
    "NODE                  GPUS   NUMA   LAYOUT            GPUS PER NUMA NODE        SOURCE   LABELED   STALE"
    "   HEARTBEAT\n"
    """\
gpu-a                 8      2      4-4               0:0-3 1:4-7               sysfs    yes       no      4m
gpu-b                 2      2      unknown           ?:0-1                     sysfs    yes       yes     1h
gpu-c                 8      8      0-2-0-2-0-2-0-2   1:2-3 3:0-1 5:6-7 7:4-5   sysfs    no        no      3m
gpu-old (node gone)   1      1      1                 0:0                       sysfs    no        yes     5h
""")

PODS_TABLE = """\
POD          NODE    POLICY      NUMA NODES   CPUSET           BINDING
batch-0      -       cpu-only    -            -                -
notebook-0   gpu-b   -           <pending>    <pending>        <pending>
trainer-0    gpu-a   strict      1            56-111,168-223   -
vllm-0       gpu-a   preferred   <pending>    <pending>        <pending>
"""

PODS_TABLE_WIDE = """\
POD          NODE    POLICY      WRAPPED   NUMA NODES   CPUSET           BINDING
batch-0      -       cpu-only    job       -            -                -
notebook-0   gpu-b   -           -         <pending>    <pending>        <pending>
trainer-0    gpu-a   strict      trainer   1            56-111,168-223   -
vllm-0       gpu-a   preferred   server    <pending>    <pending>        <pending>
"""


WEBHOOK_CONFIGURATIONS = "admissionregistration.k8s.io/v1/mutatingwebhookconfigurations"


async def kubectl(
    capsys: pytest.CaptureFixture[str], kubeconfig: Path, *argv: str,
) -> tuple[int, str, str]:
    return await run_kubectl(capsys, "--kubeconfig", str(kubeconfig), *argv)


async def test_nodes_shows_every_gpu_node_with_layout_gpus_per_numa_node_source_and_staleness(
    cluster: Any, kubeconfig: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, err = await kubectl(capsys, kubeconfig, "nodes")
    assert (code, err) == (0, "")
    assert out == NODES_TABLE
    assert max(map(len, out.splitlines())) <= 120


async def test_nodes_wide_adds_gpus_per_numa_node_and_whether_the_node_is_labelled(
    cluster: Any, kubeconfig: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, err = await kubectl(capsys, kubeconfig, "nodes", "-o", "wide")
    assert (code, err) == (0, "")
    assert out == NODES_TABLE_WIDE


async def test_nodes_says_gpunuma_is_not_installed_when_the_crd_is_missing(
    kmock: Any, kubeconfig: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    kmock.resources["v1/nodes"] = {}
    code, out, err = await kubectl(capsys, kubeconfig, "nodes")
    assert code == 1
    assert out == ""
    assert err.startswith("kubectl gpunuma: gpunuma is not installed in this cluster: the GPUNumaLayout CRD "
                          "(gpunumalayouts.gpunuma.io) was not found at http://127.0.0.1:")
    assert "helm install gpunuma" in err


async def test_nodes_with_no_layout_yet_points_at_the_agent(
    kmock: Any, kubeconfig: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    kmock.resources["gpunuma.io/v1alpha1/gpunumalayouts"] = {}
    kmock.resources["v1/nodes"] = {}
    code, out, _ = await kubectl(capsys, kubeconfig, "nodes")
    assert code == 0
    assert out.startswith("No GPU nodes found: no GPUNumaLayout exists yet. Is the gpunuma agent running")


async def test_pods_lists_the_managed_pods_of_the_contexts_namespace(
    cluster: Any, kubeconfig: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, _ = await kubectl(capsys, kubeconfig, "pods")
    assert code == 0
    assert out == PODS_TABLE  # opted-out-0 is not managed: left out although kmock returns it


async def test_pods_wide_adds_the_wrapped_containers(
    cluster: Any, kubeconfig: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, _ = await kubectl(capsys, kubeconfig, "-o", "wide", "pods")
    assert code == 0
    assert out == PODS_TABLE_WIDE


async def test_pods_across_all_namespaces_adds_the_namespace_column(
    cluster: Any, kubeconfig: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, _ = await kubectl(capsys, kubeconfig, "pods", "-A")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["NAMESPACE", "POD", "NODE", "POLICY", "NUMA", "NODES", "CPUSET",
                               "BINDING"]
    assert [line.split()[:2] for line in lines[1:]] == [
        ["ml", "batch-0"], ["ml", "notebook-0"], ["ml", "trainer-0"], ["ml", "vllm-0"], ["research", "sim-0"]]
    assert lines[-1].split() == ["research", "sim-0", "gpu-c", "preferred", "0,1,2,3", "0-95", "-"]


@pytest.mark.parametrize("argv", [("pods", "-n", "research"), ("--context", "research", "pods"),
                                  ("pods", "--context", "research"), ("-n", "research", "pods"),
                                  ("--namespace=research", "pods")])
async def test_pods_follows_the_namespace_flag_and_the_chosen_context(
    cluster: Any, kubeconfig: Path, capsys: pytest.CaptureFixture[str], argv: tuple[str, ...],
) -> None:
    code, out, _ = await kubectl(capsys, kubeconfig, *argv)
    assert code == 0
    assert out.splitlines()[1].split() == ["sim-0", "gpu-c", "preferred", "0,1,2,3", "0-95", "-"]
    assert len(out.splitlines()) == 2


async def test_pods_in_a_namespace_without_managed_pods_says_so(
    cluster: Any, kubeconfig: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, _ = await kubectl(capsys, kubeconfig, "pods", "-n", "kube-system")
    assert (code, out) == (0, "No gpunuma-managed pods in namespace kube-system.\n")


async def test_explain_a_bound_pod_shows_placement_and_the_numa_exec_line(
    cluster: Any, kubeconfig: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, _ = await kubectl(capsys, kubeconfig, "explain", "trainer-0")
    assert code == 0
    assert out == f"""\
Pod:         ml/trainer-0
Node:        gpu-a
Phase:       Running
Verdict:     bound to NUMA node(s) 1, CPUs 56-111,168-223
Opt-in:      annotation gpunuma.io/inject="true"
Policy:      strict
Injected:    by gpunuma 0.1.0
Containers:
  NAME      GPU REQUEST        STATUS
  trainer   nvidia.com/gpu=2   wrapped: numa-exec runs in front of its command
  metrics   -                  not selected: requests no GPU
Placement:
  NAME      GPUS{" " * (len(TRAINER_GPUS) - 4)}   NUMA   CPUS
  trainer   {TRAINER_GPUS}   1      56-111,168-223
numa-exec:
  trainer: {TRAINER_LINE}
"""


async def test_explain_a_pod_opted_in_by_its_namespace_waiting_for_placement(
    cluster: Any, kubeconfig: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, _ = await kubectl(capsys, kubeconfig, "explain", "vllm-0", "-n", "ml")
    assert code == 0
    assert "Opt-in:      namespace ml is labelled gpunuma.io/inject=enabled\n" in out
    assert ("Verdict:     wrapped; no placement yet: the operator writes it once the agent on gpu-a reports "
            "the pod's GPUs") in out
    assert "Policy:      preferred\n" in out
    assert out.endswith(f"numa-exec:\n  server: {VLLM_LINE}\n")


async def test_explain_a_container_without_command_says_it_was_skipped_and_how_to_fix_it(
    cluster: Any, kubeconfig: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, _ = await kubectl(capsys, kubeconfig, "explain", "notebook-0")
    assert code == 0
    assert "Verdict:     not bound: no container could be wrapped (see Containers)\n" in out
    assert ("  jupyter   nvidia.com/gpu=1   skipped: no command (the webhook cannot see the image's "
            "ENTRYPOINT); set command: in the pod spec\n") in out
    assert "numa-exec:" not in out


async def test_explain_a_pending_pod_without_log_yet(
    cluster: Any, kubeconfig: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, _ = await kubectl(capsys, kubeconfig, "explain", "batch-0")
    assert code == 0
    assert "Node:        (not scheduled)\n" in out
    assert "Verdict:     wrapped; the placement is written once the pod runs (phase Pending)\n" in out
    assert out.endswith("numa-exec:\n  job: (no log yet)\n")


async def test_explain_a_wrapped_container_whose_log_has_no_numa_exec_line(
    cluster: Any, kubeconfig: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, _ = await kubectl(capsys, kubeconfig, "explain", "sim-0", "-n", "research")
    assert code == 0
    assert "  sim    amd.com/gpu=4   wrapped: numa-exec runs in front of its command\n" in out
    assert out.endswith("  sim: (no gpunuma: line in the log: GPUNUMA_QUIET=1, or the log was rotated)\n")


@pytest.mark.parametrize(("pod", "namespace", "verdict", "container"), [
    ("opted-out-0", "ml", 'not bound: opted out by the annotation gpunuma.io/inject="false"',
     "app    nvidia.com/gpu=1   GPU container, not wrapped"),
    ("plain-0", "research", "not bound: the pod did not opt in",
     "app    nvidia.com/gpu=1   GPU container, not wrapped"),
    ("late-0", "research", "not bound: the webhook did not mutate this pod. It was created before gpunuma "
     "was installed, or the webhook was unreachable",
     "app    nvidia.com/gpu=1   would be wrapped, had the webhook mutated the pod"),
    ("cpu-0", "research", "not bound: no container requests a GPU (nvidia.com/gpu, nvidia.com/mig-*, "
     "amd.com/gpu) and gpunuma.io/containers is not set",
     "app    -             not selected: requests no GPU"),
])
async def test_explain_says_why_a_pod_was_not_bound(
    cluster: Any, kubeconfig: Path, capsys: pytest.CaptureFixture[str],
    pod: str, namespace: str, verdict: str, container: str,
) -> None:
    code, out, _ = await kubectl(capsys, kubeconfig, "explain", pod, "-n", namespace)
    assert code == 0
    assert f"Verdict:     {verdict}" in out
    assert f"  {container}\n" in out
    assert "Injected:    no\n" in out


@pytest.mark.parametrize("namespace", ["gpunuma-system", "monitoring"])
async def test_explain_reads_the_excluded_namespaces_from_the_webhook_configuration(
    cluster: Any, kubeconfig: Path, capsys: pytest.CaptureFixture[str], namespace: str,
) -> None:
    # The configuration the chart renders for release namespace gpunuma-system, one more excluded.
    from tests.chart.render import load_chart, render

    rendered = render(load_chart(), {"webhook": {"additionalExcludedNamespaces": ["monitoring"]}},
                      namespace="gpunuma-system")
    configuration = rendered.one("MutatingWebhookConfiguration")
    cluster.objects[WEBHOOK_CONFIGURATIONS, None, configuration["metadata"]["name"]] = configuration
    # kmock ignores label selectors: another project's configuration must not count.
    other = {"apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
             "metadata": {"name": "other", "labels": {"app.kubernetes.io/part-of": "other"}},
             "webhooks": [{**configuration["webhooks"][0], "name": "other.example.com"}]}
    other["webhooks"][0]["namespaceSelector"] = {"matchExpressions": [
        {"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": ["research"]}]}
    cluster.objects[WEBHOOK_CONFIGURATIONS, None, "other"] = other
    for pod in (pod_object(namespace, "late-1", [gpu_container("app", ["python", "app.py"])],
                           annotations={names.ANNOTATION_INJECT: "true"}),
                pod_object("research", "late-1", [gpu_container("app", ["python", "app.py"])],
                           annotations={names.ANNOTATION_INJECT: "true"})):
        cluster.objects["v1/pods", pod["metadata"]["namespace"], "late-1"] = pod
    code, out, _ = await kubectl(capsys, kubeconfig, "explain", "late-1", "-n", namespace)
    assert code == 0
    assert f"Verdict:     not bound: the webhook is never called for pods in {namespace}\n" in out
    code, out, _ = await kubectl(capsys, kubeconfig, "explain", "late-1", "-n", "research")
    assert "Verdict:     not bound: the webhook did not mutate this pod." in out


async def test_explain_a_pod_that_does_not_exist(
    cluster: Any, kubeconfig: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, err = await kubectl(capsys, kubeconfig, "explain", "trainer-9")
    assert (code, out) == (1, "")
    assert err == 'kubectl gpunuma: pod "trainer-9" not found in namespace ml\n'


def point_at_a_closed_port(kubeconfig: Path) -> int:
    with socket.socket() as probe:  # a port nobody listens on once closed
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    config = yaml.safe_load(kubeconfig.read_text())
    config["clusters"][0]["cluster"]["server"] = f"http://127.0.0.1:{port}"
    kubeconfig.write_text(yaml.safe_dump(config))
    return port


async def test_an_unreachable_cluster_is_reported_with_its_address(
    tmp_path: Path, kubeconfig: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    port = point_at_a_closed_port(kubeconfig)
    code, _, err = await kubectl(capsys, kubeconfig, "nodes")
    assert code == 1
    assert err.startswith(f"kubectl gpunuma: cannot reach the cluster at http://127.0.0.1:{port} to list "
                          "GPUNumaLayouts")


async def test_a_missing_kubeconfig_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = await kubectl(capsys, tmp_path / "nowhere", "nodes")
    assert code == 1
    assert err.startswith(f"kubectl gpunuma: cannot load the kubeconfig ({tmp_path / 'nowhere'})")


# --- the pure parts, for what the emulated cluster does not cover -------------------------------------

def test_a_table_pads_columns_like_kubectl() -> None:
    assert format_table(["A", "LONG"], [["xyz", "1"], ["b", ""]]) == "A     LONG\nxyz   1\nb\n"


def test_a_mirror_pod_is_never_bound() -> None:
    pod = pod_object("ml", "static-0", [gpu_container("app", ["run"])],
                     annotations={names.ANNOTATION_INJECT: "true", "kubernetes.io/config.mirror": "abc"})
    assert "Verdict:     not bound: a static (mirror) pod" in explain(pod, None)


def test_containers_named_by_annotation_are_selected_without_gpu_requests() -> None:
    dra = {"name": "dra", "image": "img", "command": ["run"]}
    pod = pod_object("ml", "dra-0", [dra, {"name": "side", "image": "img", "command": ["x"]}],
                     annotations={names.ANNOTATION_INJECT: "true", names.ANNOTATION_CONTAINERS: "dra"})
    text = explain(pod, {"metadata": {"name": "ml"}})
    assert "  dra    -             would be wrapped, had the webhook mutated the pod\n" in text
    assert f"  side   -             not selected: not listed in {names.ANNOTATION_CONTAINERS}\n" in text
    assert "the webhook did not mutate this pod" in text


def test_a_container_using_a_gpu_claim_is_selected_and_shows_the_claim() -> None:
    """DRA: selected by the claim's name, as the webhook selects it; a NIC claim's is not."""
    server = {"name": "server", "image": "vllm/vllm-openai:v0.6.3", "command": ["serve"],
              "resources": {"claims": [{"name": "gpu"}, {"name": "rdma"}]}}
    router = {"name": "router", "image": "img", "command": ["route"],
              "resources": {"claims": [{"name": "rdma"}]}}
    pod = pod_object("ml", "vllm-dra", [server, router], annotations={names.ANNOTATION_INJECT: "true"})
    pod["spec"]["resourceClaims"] = [{"name": "gpu", "resourceClaimTemplateName": "single-gpu"},
                                     {"name": "rdma", "resourceClaimName": "ib-nic"}]
    assert mutate(pod, MutationSettings()).wrapped == ("server",)
    text = explain(pod, {"metadata": {"name": "ml"}})
    assert "  server   claim gpu     would be wrapped, had the webhook mutated the pod\n" in text
    assert "  router   -             not selected: requests no GPU\n" in text


def test_a_zero_gpu_quantity_is_no_gpu_request_as_for_the_webhook() -> None:
    pod = pod_object("ml", "zero-0", [gpu_container("app", ["run"], 0)],
                     annotations={names.ANNOTATION_INJECT: "true"})
    assert mutate(pod, MutationSettings()).reason == "no GPU containers"
    text = explain(pod, {"metadata": {"name": "ml"}})
    assert ("Verdict:     not bound: no container requests a GPU (nvidia.com/gpu, nvidia.com/mig-*, "
            "amd.com/gpu) and gpunuma.io/containers is not set\n") in text
    assert "  app    -             not selected: requests no GPU\n" in text


def test_the_excluded_namespaces_of_unknown_configurations_are_ignored() -> None:
    assert excluded_namespaces([]) is None
    assert excluded_namespaces([{"metadata": {"name": "x"}, "webhooks": []}]) is None


def test_custom_gpu_resources_decide_what_counts_as_a_gpu_request() -> None:
    pod = pod_object("ml", "fake-0", [gpu_container("app", ["run"], 1, "example.com/fake-gpu")],
                     annotations={names.ANNOTATION_INJECT: "true"})
    assert "no container requests a GPU" in explain(pod, None)
    custom = explain(pod, None, gpu_resources=["example.com/*"])
    assert "  app    example.com/fake-gpu=1   would be wrapped" in custom


# --- the emulated cluster holds objects a real API server would accept ---------------------------

def openapi_to_jsonschema(schema: Any) -> Any:
    """A CRD's structural schema as JSON Schema: `nullable: true` becomes a null-able type."""
    if isinstance(schema, list):
        return [openapi_to_jsonschema(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    converted = {key: openapi_to_jsonschema(value) for key, value in schema.items()
                 if not key.startswith("x-kubernetes-") and key != "nullable"}
    if schema.get("nullable") and "type" in schema:
        converted["type"] = [schema["type"], "null"]
    return converted


def test_the_emulated_objects_are_valid_for_the_api_server(cluster: Any) -> None:
    import jsonschema
    import kubernetes_validate

    from tests.chart.render import crds

    layout_schemas = [version["schema"]["openAPIV3Schema"] for _, crd in crds()
                      if crd["spec"]["names"]["kind"] == names.CRD_KIND
                      for version in crd["spec"]["versions"]]
    assert layout_schemas, "the GPUNumaLayout CRD is not in charts/gpunuma/crds"
    checked = 0
    for (resource, _, _), obj in cluster.objects.items():
        body = dict(obj.raw)
        if resource.group == names.CRD_GROUP:
            jsonschema.validate(body, openapi_to_jsonschema(layout_schemas[0]))
        else:
            kubernetes_validate.validate(body, "1.30.0", strict=True)
        checked += 1
    assert checked >= 15


def test_explain_names_gpunumas_own_init_container_for_what_it_is() -> None:
    pod = pod_object("ml", "train-0", [gpu_container("app", ["run"])],
                     annotations={names.ANNOTATION_INJECT: "true"})
    injected = mutate(pod, MutationSettings()).pod
    text = explain(injected, {"metadata": {"name": "ml"}})
    assert f"  {names.LAUNCHER_INIT_CONTAINER}   -                  gpunuma's init container: copies " \
           f"numa-exec into {names.LAUNCHER_MOUNT_PATH}\n" in text
    assert "not selected" not in text


def _wrapped_pod(**annotations: str) -> dict[str, Any]:
    pod = pod_object("ml", "job-0", [gpu_container("app", ["run"], wrapped_policy="preferred")],
                     annotations={names.ANNOTATION_INJECT: "true",
                                  names.ANNOTATION_INJECTED: "0.1.0",
                                  names.ANNOTATION_WRAPPED: "app", **annotations})
    return pod


def test_explain_shows_only_numa_exec_lines_not_a_workloads_fake_gpunuma_line() -> None:
    """Issue #16 item 7: numa-exec writes before the exec; a gpunuma: line after the workload's
    first output is the workload's, and must not pass for numa-exec's decision."""
    log = ("gpunuma: no GPU found; running unpinned\n"
           "Loading model...\n"
           "gpunuma: bound to NUMA node 0, CPUs 0-55 (policy strict)\n")
    text = explain(_wrapped_pod(), None, logs={"app": log})
    assert "  app: gpunuma: no GPU found; running unpinned\n" in text
    assert "bound to NUMA node 0" not in text


def test_explain_escapes_control_characters_from_annotations_and_logs() -> None:
    placement = '{"app":{"gpus":["\\u001b[2J\\u001b[Hgpu"],"numaNodes":[0],"cpus":"0-3"}}'
    pod = _wrapped_pod(**{names.ANNOTATION_PLACEMENT: placement,
                          names.ANNOTATION_NUMA_NODES: "0\x1b]0;owned\x07",
                          names.ANNOTATION_CPUSET: "0-3"})
    text = explain(pod, None, logs={"app": "gpunuma: bound\x1b[31m red\u202eevil\x08\n"})
    assert "\x1b" not in text
    assert "\x08" not in text
    assert "\u202e" not in text
    assert "\x07" not in text
    assert "\\x1b[2J" in text
    assert "gpunuma: bound\\x1b[31m red\\u202eevil\\x08" in text
