"""Session fixtures of the real control plane (see controlplane.py).

Locally, a missing binary skips these tests, naming the command that builds them; in CI
(``CI=true``, where .ci/run builds them) it fails the tests instead, like the other real tools.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.chart.render import CHART, NAMESPACE, RELEASE, crds
from tests.cluster import agents
from tests.cluster.controlplane import (
    BINARIES,
    BUILD_SCRIPT,
    ApiError,
    ControlPlane,
    Process,
    binaries_dir,
    free_port,
    missing_binaries,
)
from tests.cluster.webhooks import SecretVolume, Webhook


def require_binaries(*names: str) -> None:
    missing = missing_binaries(names)
    if missing:
        message = (f"{', '.join(missing)} not built in {binaries_dir()}: run {BUILD_SCRIPT} "
                   "(needs Go >= 1.26 and the Go module proxy; about 15 minutes the first time)")
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    """One etcd + kube-apiserver for the whole session."""
    require_binaries(*BINARIES)
    plane = ControlPlane(tmp_path_factory.mktemp("controlplane"))
    try:
        plane.start()
        yield plane
    finally:
        plane.stop()


@dataclass(frozen=True)
class Release:
    """The chart installed by `helm install` into NAMESPACE, and its identities."""

    cluster: ControlPlane
    name: str
    namespace: str

    def service_account(self, component: str) -> str:
        return f"{self.name}-{component}"

    def kubeconfig(self, component: str) -> Path:
        """A kubeconfig with a token of the chart's ServiceAccount for ``component``."""
        return self.cluster.kubeconfig_for(self.namespace, self.service_account(component))

    def agent_token(self, node: str) -> str:
        """The agent's token as its DaemonSet pod on ``node`` has it: bound to a pod of the
        agent's ServiceAccount on that node (the chart's admission policy reads the node from
        it). The pod is created here; with no kubelet it never runs."""
        name = f"agent-{node}"[:63]
        path = f"/api/v1/namespaces/{self.namespace}/pods"
        try:
            pod = self.cluster.request("GET", f"{path}/{name}")
        except ApiError as error:
            if error.status != 404:
                raise
            pod = self.cluster.request("POST", path, {
                "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
                "spec": {"serviceAccountName": self.service_account("agent"), "nodeName": node,
                         "containers": [{"name": "agent", "image": "gpunuma:test"}]}})
        return self.cluster.token(self.namespace, self.service_account("agent"), pod=pod)

    def agent_kubeconfig(self, node: str) -> Path:
        """A kubeconfig for the agent of ``node`` (see ``agent_token``)."""
        path = self.cluster.directory / f"agent-{node}.kubeconfig"
        return self.cluster.write_kubeconfig(path, user={"token": self.agent_token(node)})


# The session's release: the defaults, except NVML (no NVIDIA runtime class here) and the webhook
# enabled with certificates from the operator, as on a user's cluster.
RELEASE_VALUES = ("--set", "agent.nvml.enabled=false")


@pytest.fixture(scope="session")
def release(cluster: ControlPlane) -> Release:
    """`helm install` of the chart (the kopf CRDs from crds/ first, as Helm does; gpunuma's own
    CRD with the release, templates/crd.yaml), CRDs established."""
    require_binaries("helm")
    cluster.helm("install", RELEASE, str(CHART), "--namespace", NAMESPACE, "--create-namespace",
                 *RELEASE_VALUES)
    for path in sorted({path for path, _ in crds()}):
        cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s", "-f", str(path))
    return Release(cluster, RELEASE, NAMESPACE)


def service_account_user(release: Release, component: str) -> str:
    return f"system:serviceaccount:{release.namespace}:{release.service_account(component)}"


def assert_every_request_allowed(release: Release, component: str) -> int:
    """No request the component made so far was refused (401/403) by authentication or RBAC, by
    the API server's audit log; returns how many requests it made. (Refusals by the chart's
    admission policies, which RBAC allowed, are test_admission_policies.py's business.)"""
    events = release.cluster.audit_events(service_account_user(release, component))
    refused = [f"{e['verb']} {e['requestURI']} → {e['responseStatus']['code']}"
               for e in events if e.get("responseStatus", {}).get("code") in (401, 403)
               and (e.get("annotations") or {}).get("authorization.k8s.io/decision") != "allow"]
    assert not refused, f"the {component}'s requests refused by RBAC:\n" + "\n".join(refused)
    return len(events)


@pytest.fixture(scope="session")
def operator(release: Release, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Process]:
    """`gpunuma operator` with the chart's configuration and its ServiceAccount's token."""
    env = agents.workload_env(release.cluster, release.namespace, "Deployment",
                              release.service_account("operator"))
    log = tmp_path_factory.mktemp("operator") / "operator.log"
    process = agents.operator(env, release.kubeconfig("operator"), log)
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture(scope="session")
def webhook(release: Release, operator: Process,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[Webhook]:
    cluster = release.cluster
    directory = tmp_path_factory.mktemp("webhook")
    env = agents.workload_env(cluster, release.namespace, "Deployment",
                              release.service_account("webhook"))
    secret = env.get("GPUNUMA_TLS_CERT_FILE", "")
    configuration = f"/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/" \
                    f"{release.name}"

    secrets = f"/api/v1/namespaces/{release.namespace}/secrets"

    def bundle_written() -> bool:
        # The operator patches the bundle first and writes the Secrets after: wait for both.
        webhooks = cluster.request("GET", configuration)["webhooks"]
        names = {item["metadata"]["name"] for item in cluster.request("GET", secrets)["items"]}
        return (all(w["clientConfig"].get("caBundle") for w in webhooks)
                and f"{release.name}-webhook-tls" in names)

    try:
        cluster.wait_for("the operator to write the webhook's CA bundle and Secret",
                         bundle_written, 120)
    except AssertionError as error:
        raise AssertionError(f"{error}\n--- operator ---\n{operator.tail()}") from None
    assert secret.endswith("/tls.crt"), env
    volume = SecretVolume(cluster, release.namespace, f"{release.name}-webhook-tls",
                          directory / "tls")
    port = free_port()
    env.update(GPUNUMA_LISTEN=f"127.0.0.1:{port}", GPUNUMA_SHUTDOWN_DELAY="0",
               GPUNUMA_TLS_CERT_FILE=str(directory / "tls" / "tls.crt"),
               GPUNUMA_TLS_KEY_FILE=str(directory / "tls" / "tls.key"))
    process = agents.gpunuma("webhook", ["webhook"], directory / "webhook.log", env=env)
    # The API server calls https://<service>.<namespace>.svc:<port> (the chart's Service port),
    # which its CONNECT goes to the harness's proxy for; that Service must exist.
    service = cluster.request(
        "GET", f"/api/v1/namespaces/{release.namespace}/services/"
               f"{release.service_account('webhook')}")
    server_name = f"{service['metadata']['name']}.{release.namespace}.svc"
    route = f"{server_name}:{service['spec']['ports'][0]['port']}"
    assert cluster.proxy is not None
    cluster.proxy.route(route, port)
    hook = Webhook(process, port, route, volume, directory / "tls" / "ca.crt", server_name)
    try:
        cluster.wait_for("the webhook to be ready", hook.ready, 60)
        yield hook
    finally:
        cluster.proxy.route(route, None)
        process.stop()
        volume.close()
    assert_every_request_allowed(release, "operator")


KWOK_STAGES = Path(__file__).with_name("kwok-stages.yaml")
KWOK_NODE_ANNOTATION = "kwok.x-k8s.io/node"


@pytest.fixture(scope="session")
def kwok(cluster: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Process]:
    """kwok playing the kubelet of every Node annotated ``kwok.x-k8s.io/node=fake``."""
    require_binaries("kwok")
    directory = tmp_path_factory.mktemp("kwok")
    process = Process("kwok", [
        str(binaries_dir() / "kwok"), f"--kubeconfig={cluster.admin_kubeconfig}",
        f"--config={KWOK_STAGES}",
        f"--manage-nodes-with-annotation-selector={KWOK_NODE_ANNOTATION}=fake",
        "--node-ip=10.0.0.1", "--cidr=10.0.1.0/24", "--node-lease-duration-seconds=0",
    ], directory / "kwok.log", env=dict(os.environ, HOME=str(directory))).start()
    try:
        yield process
    finally:
        process.stop()
