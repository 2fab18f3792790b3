"""Two replicas: only the one kopf's peering lets run acts, in kopf's handlers and in the loop."""

from __future__ import annotations

import asyncio

import kmock

from gpunuma import names
from gpunuma.kubeapi import Connection, KubeClient
from gpunuma.operator.controller import Controller
from tests.operator.conftest import (
    LAYOUTS_URL,
    Runner,
    fast_settings,
    labels_of,
    layout_body,
    node_body,
    now_rfc3339,
    two_socket_spec,
)
from tests.operator.test_certificates_kmock import MWC_URL, webhook_configuration
from tests.polling import eventually

PEERINGS = "kopf.dev/v1/clusterkopfpeerings"


def declare_peering(cluster: kmock.KubernetesEmulator, peers: dict[str, object]) -> None:
    cluster.resources[PEERINGS] = kmock.ResourceInfo(
        kind="ClusterKopfPeering", singular="clusterkopfpeering", namespaced=False,
        verbs={"get", "list", "watch", "patch"},
    )
    cluster.objects[PEERINGS, None, "gpunuma"] = {
        "apiVersion": "kopf.dev/v1", "kind": "ClusterKopfPeering",
        "metadata": {"name": "gpunuma"}, "status": peers,
    }


async def seed(cluster: kmock.KubernetesEmulator) -> None:
    await cluster.post("/api/v1/nodes", json=node_body("gpu-1"))
    await cluster.post(LAYOUTS_URL, json=layout_body("gpu-1", two_socket_spec()))
    await cluster.post(MWC_URL, json=webhook_configuration())


async def test_the_highest_replica_acts(
    cluster: kmock.KubernetesEmulator, operator: Runner,
) -> None:
    declare_peering(cluster, {})
    await seed(cluster)
    async with operator(fast_settings(standalone=False, priority=100)):
        await eventually(lambda: labels_of(cluster, "gpu-1").get(names.LABEL_LAYOUT) == "4-4")
        await eventually(lambda: cluster.objects["v1/secrets", "gpunuma-system",
                                                 "gpunuma-webhook-tls"])


async def test_a_replica_below_a_live_peer_does_nothing(
    cluster: kmock.KubernetesEmulator, operator: Runner,
) -> None:
    leader = {"priority": 1000, "lifetime": 60, "lastseen": now_rfc3339()}
    declare_peering(cluster, {"the-leader": leader})
    await seed(cluster)
    async with operator(fast_settings(standalone=False, priority=1, check_interval_s=0.1)):
        await asyncio.sleep(1.0)
    assert names.LABEL_LAYOUT not in labels_of(cluster, "gpu-1")
    assert not [key for key in cluster.objects if key[0] == kmock.resource("v1/secrets")]


async def test_a_namespaced_pod_scope_keeps_the_cluster_wide_election(
    cluster: kmock.KubernetesEmulator, operator: Runner,
) -> None:
    # The chart creates only the ClusterKopfPeering; a pod scope must not send kopf looking for a
    # namespaced KopfPeering (it would wait for it forever, paused).
    declare_peering(cluster, {})
    await seed(cluster)
    settings = fast_settings(standalone=False, priority=100, pod_namespaces=("ml",))
    async with operator(settings) as controller:
        await eventually(lambda: labels_of(cluster, "gpu-1").get(names.LABEL_LAYOUT) == "4-4")
        peers = await eventually(
            lambda: cluster.objects[PEERINGS, None, "gpunuma"].raw.get("status"))
        assert controller.identity in peers
        assert await controller.is_active()


async def test_without_its_peering_object_a_replica_does_nothing_as_kopf_waits(
    cluster: kmock.KubernetesEmulator, operator: Runner,
) -> None:
    # Mandatory peering: kopf keeps every handler paused until the ClusterKopfPeering exists;
    # the periodic loop must not act on its own meanwhile (no certificates, no stale marks).
    declare_peering(cluster, {})
    del cluster.objects[PEERINGS, None, "gpunuma"]
    await seed(cluster)
    async with operator(fast_settings(standalone=False, priority=100, check_interval_s=0.05)) \
            as controller:
        await asyncio.sleep(1.0)
        assert not await controller.is_active()
    assert names.LABEL_LAYOUT not in labels_of(cluster, "gpu-1")
    assert not [key for key in cluster.objects if key[0] == kmock.resource("v1/secrets")]


async def test_a_replica_that_kopf_has_not_announced_yet_does_not_act(
    cluster: kmock.KubernetesEmulator,
) -> None:
    # Two replicas started together both find the peering object empty: neither may lead yet.
    declare_peering(cluster, {})
    client = KubeClient(Connection(server=str(cluster.url)))
    controller = Controller(fast_settings(standalone=False), client, identity="me", priority=5)
    try:
        assert not await controller.is_active()
        assert not controller.peering_joined
        await cluster.patch(f"/apis/{PEERINGS}/gpunuma",
                            json={"status": {"me": {"priority": 5, "lifetime": 60,
                                                    "lastseen": now_rfc3339()}}})
        assert await controller.is_active()
        assert controller.peering_joined
    finally:
        await client.close()
