"""The operator's race guards, each against the race it exists for, staged on a real HTTP server.

Every test here stages, with :mod:`tests.operator.fakeapi`, an interleaving that happens between
the operator, its watches and other writers (the kubelet, a second replica, a Helm upgrade), and
asserts on what the API server receives. Each fails when its guard is taken out:

- stale watch events do not roll the cache back (``cache.newer``);
- a patch that already succeeded against the same view is not sent again (``PatchOnce``), also
  when only ``lastTransitionTime`` differs (``without_transition_times``);
- a Secret is written with its ``resourceVersion`` as a precondition, so that two replicas renewing
  at once cannot leave a certificate the webhook configuration does not trust;
- the caBundle JSON patch ``test``s each webhook's name, so that it never lands on another webhook
  when the list changed between the read and the write.
"""

from __future__ import annotations

import base64
import copy
import datetime as dt
from collections.abc import AsyncIterator
from typing import Any

import pytest
from cryptography import x509

from gpunuma import names
from gpunuma.kubeapi import Connection, KubeClient
from gpunuma.operator.certificates import pki_from_secrets
from gpunuma.operator.controller import Controller
from gpunuma.operator.metrics import OperatorCollector
from gpunuma.settings import CertificateSettings
from tests.operator.conftest import (
    LAYOUTS_URL,
    fast_settings,
    layout_body,
    node_body,
    signed_by,
    two_socket_spec,
)
from tests.operator.fakeapi import FakeApi, Request, fake_api
from tests.operator.test_operator import ALLOCATION, running_pod

NODE = "/api/v1/nodes/gpu-1"
LAYOUT = f"{LAYOUTS_URL}/gpu-1"
POD = "/api/v1/namespaces/ml/pods/train-0"
NAMESPACE = "gpunuma-system"
SECRETS = f"/api/v1/namespaces/{NAMESPACE}/secrets"
WEBHOOKS = "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/gpunuma"


class Clock:
    def __init__(self, start: dt.datetime) -> None:
        self.now = start

    def __call__(self) -> dt.datetime:
        return self.now


@pytest.fixture
async def controllers() -> AsyncIterator[list[Controller]]:
    made: list[Controller] = []
    yield made
    for controller in made:
        await controller.client.close()


def controller_for(api: FakeApi, made: list[Controller], *, clock: Clock | None = None,
                   replica: str = "a") -> Controller:
    settings = fast_settings(certificates=CertificateSettings(namespace=NAMESPACE))
    client = KubeClient(Connection(server=api.url), user_agent=f"replica-{replica}")
    controller = Controller(settings=settings, client=client, identity=f"replica-{replica}",
                            **({"clock": clock} if clock is not None else {}))
    made.append(controller)
    return controller


# Stale watch events --------------------------------------------------------------------------


async def test_a_watch_event_older_than_our_own_patch_does_not_make_us_patch_again(
    controllers: list[Controller],
) -> None:
    """The kubelet updated the Node just before our label patch landed; the watch delivers that
    update after our patch's response. Taken into the cache, it would say "no labels" and the
    operator would label the Node a second time."""
    async with fake_api() as api:
        node = api.put(NODE, node_body("gpu-1"))
        layout = api.put(LAYOUT, layout_body("gpu-1", two_socket_spec()))
        kubelet_update: dict[str, Any] = {}

        async def kubelet_writes_first(request: Request) -> None:
            if request.method == "PATCH" and request.path == NODE and not kubelet_update:
                changed = copy.deepcopy(api.objects[NODE])
                changed["metadata"]["annotations"] = {"node.alpha.kubernetes.io/ttl": "0"}
                kubelet_update.update(api.put(NODE, changed))

        api.before_write = kubelet_writes_first
        controller = controller_for(api, controllers)
        controller.observe_node(node)
        controller.observe_layout(layout)
        await controller.reconcile_layout("gpu-1")
        assert api.objects[NODE]["metadata"]["labels"][names.LABEL_LAYOUT] == "4-4"

        controller.observe_node(kubelet_update)  # the watch, behind our own write
        await controller.reconcile_layout("gpu-1")
        assert len(api.writes("PATCH", NODE)) == 1


# Repeated patches --------------------------------------------------------------------------------


async def _placed_from_its_layout(api: FakeApi, controllers: list[Controller],
                                  ) -> tuple[Controller, dict[str, Any]]:
    """A running pod on gpu-1, reconciled from its node's layout (the layout path)."""
    pod = api.put(POD, running_pod("train-0", "gpu-1"))
    controller = controller_for(api, controllers)
    controller.observe_layout(layout_body("gpu-1", two_socket_spec(allocations=[ALLOCATION])))
    controller.observe_pod(pod)
    await controller.reconcile_pods_of("gpu-1")
    return controller, pod


async def test_a_pod_patched_from_one_view_is_not_patched_again_when_that_view_comes_back(
    controllers: list[Controller],
) -> None:
    """The layout's allocations and the pod's Running event arrive together: the layout path
    patches the pod from the cached view first, then the pod's own handler observes the event it
    was holding (the same view, older than our patch's response) and reconciles."""
    async with fake_api() as api:
        controller, pod = await _placed_from_its_layout(api, controllers)
        assert api.objects[POD]["metadata"]["annotations"][names.ANNOTATION_NUMA_NODES] == "1"

        controller.observe_pod(pod)  # the pod handler's event: the view the patch was made from
        await controller.reconcile_pod("ml", "train-0", node="gpu-1")
        assert len(api.writes("PATCH", POD)) == 1


async def test_pods_reconciled_from_their_node_s_layout_are_counted_like_the_others(
    controllers: list[Controller],
) -> None:
    """/metrics counts a pod reconcile whichever event started it (the layout's or the pod's)."""
    async with fake_api() as api:
        controller, _ = await _placed_from_its_layout(api, controllers)
        await controller.reconcile_pod("ml", "train-0", node="gpu-1")
        collector = OperatorCollector(controller, lambda: dt.datetime.now(dt.UTC))
        [reconciles] = [m for m in collector.collect() if m.name == "gpunuma_operator_reconciles"]
        counted = {s.labels["kind"]: s.value for s in reconciles.samples if s.name.endswith("_total")}
        assert counted["pod"] == 2


async def test_a_status_patch_that_differs_only_in_transition_times_is_not_sent_again(
    controllers: list[Controller],
) -> None:
    """resourceVersions are opaque to clients (here they are not integers), so an event of the
    layout as it was before our status write cannot be told from a newer one and is taken in.
    The status computed from it a second later differs from the one sent only in
    ``lastTransitionTime`` (a new condition's is "now"): the same write, not sent twice."""
    async with fake_api(opaque_versions=True) as api:
        api.put(NODE, node_body("gpu-1"))
        layout = api.put(LAYOUT, layout_body("gpu-1", two_socket_spec()))
        clock = Clock(dt.datetime.now(dt.UTC))
        controller = controller_for(api, controllers, clock=clock)
        controller.observe_node(api.objects[NODE])
        controller.observe_layout(layout)
        await controller.reconcile_layout("gpu-1")  # the periodic round, from the cached view
        [written] = api.writes("PATCH", f"{LAYOUT}/status")
        assert {c["type"] for c in written.body["status"]["conditions"]} == {"Labeled", "Stale"}

        clock.now += dt.timedelta(seconds=1)
        controller.observe_layout(layout)  # kopf's handler, with the event it was holding
        await controller.reconcile_layout("gpu-1")
        assert len(api.writes("PATCH", f"{LAYOUT}/status")) == 1


# Certificates: two replicas, a Helm upgrade --------------------------------------------------------


def webhook_configuration(*names_: str) -> dict[str, Any]:
    return {"apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
            "metadata": {"name": "gpunuma"},
            "webhooks": [{"name": name, "clientConfig": {"service": {"name": "gpunuma-webhook"}}}
                         for name in names_]}


def trusted_by_bundle(api: FakeApi) -> bool:
    """Whether the serving certificate in the Secret is signed by a CA in every webhook's caBundle:
    what the API server needs to call the webhook."""
    serving = api.objects[f"{SECRETS}/gpunuma-webhook-tls"]["data"]
    authority = api.objects[f"{SECRETS}/gpunuma-webhook-tls-ca"]["data"]
    leaf = pki_from_secrets(serving, authority).leaf_cert
    for webhook in api.objects[WEBHOOKS]["webhooks"]:
        bundle = base64.b64decode(webhook["clientConfig"]["caBundle"])
        if not any(ca.subject == leaf.issuer and signed_by(leaf, ca)
                   for ca in x509.load_pem_x509_certificates(bundle)):
            return False
    return True


async def test_two_replicas_renewing_at_once_leave_a_certificate_the_webhook_trusts(
    controllers: list[Controller],
) -> None:
    """Both replicas see the CA near its end and roll it over. Replica A has read the Secrets and
    patched the bundle with its new CA when replica B does all of it (bundle, then Secrets). A's
    Secret write must then fail rather than put A's certificate beside B's bundle."""
    async with fake_api() as api:
        api.put(WEBHOOKS, webhook_configuration("pod.gpunuma.io", "namespace.gpunuma.io"))
        installed = dt.datetime.now(dt.UTC)
        assert await controller_for(api, controllers, clock=Clock(installed)).reconcile_certificates() \
            == "written"
        later = Clock(installed + dt.timedelta(days=3400))  # within the CA's renewal window
        a = controller_for(api, controllers, clock=later, replica="a")
        b = controller_for(api, controllers, clock=later, replica="b")

        async def b_renews_meanwhile(request: Request) -> None:
            if request.user_agent == "replica-a" and request.path.startswith(SECRETS) \
                    and not any(r.user_agent == "replica-b" for r in api.requests):
                assert await b.reconcile_certificates() == "written"

        api.before_write = b_renews_meanwhile
        assert await a.reconcile_certificates() == "failed"  # 409: B renewed first
        assert trusted_by_bundle(api)
        api.before_write = None
        assert await a.reconcile_certificates() == "unchanged"  # A adopts B's certificates
        assert trusted_by_bundle(api)


async def test_the_ca_bundle_is_never_written_by_a_stale_index_when_the_list_changed(
    controllers: list[Controller],
) -> None:
    """A Helm upgrade reset the pod webhook's caBundle, and is rewriting the configuration again
    (webhooks in another order, bundles reset) between the operator's read and its patch. Written
    by the index it read, the bundle would land on the namespace webhook and leave the pod webhook
    without one while the round reports success. The patch must fail instead (its ``test`` of the
    name), and the next round patch the webhooks where they are now."""
    async with fake_api() as api:
        api.put(WEBHOOKS, webhook_configuration("pod.gpunuma.io", "namespace.gpunuma.io"))
        controller = controller_for(api, controllers)
        assert await controller.reconcile_certificates() == "written"  # the install
        reset = copy.deepcopy(api.objects[WEBHOOKS])
        del reset["webhooks"][0]["clientConfig"]["caBundle"]
        api.put(WEBHOOKS, reset)  # helm upgrade: the pod webhook's bundle is gone

        async def helm_upgrade_meanwhile(request: Request) -> None:
            if request.method == "PATCH" and request.path == WEBHOOKS:
                api.before_write = None
                api.put(WEBHOOKS, webhook_configuration("namespace.gpunuma.io", "pod.gpunuma.io"))

        api.before_write = helm_upgrade_meanwhile
        assert await controller.reconcile_certificates() == "failed"  # 422 from the test op
        assert await controller.reconcile_certificates() == "unchanged"
        assert [w["name"] for w in api.objects[WEBHOOKS]["webhooks"]] == [
            "namespace.gpunuma.io", "pod.gpunuma.io"]
        assert trusted_by_bundle(api)  # every webhook carries the bundle
