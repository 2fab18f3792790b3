"""The webhook's warnings about pods that controllers create become Warning Events on the
controller (or the pod), posted by the operator once per object and text; an unbound pod
(managed=false) gets no placement."""

from __future__ import annotations

from typing import Any

import kmock

from gpunuma import names
from tests.operator.conftest import Runner
from tests.operator.test_operator import ALLOCATION, create, running_pod, two_socket_spec
from tests.polling import eventually

NO_COMMAND = "gpunuma: container 'main' not wrapped: it has no command (the image ENTRYPOINT is invisible)"
BAD_POLICY = "gpunuma: unknown gpunuma.io/policy=\"fast\", using preferred"


def warned_pod(name: str, warnings: list[str], *, managed: str, owner: str | None) -> dict[str, Any]:
    pod = running_pod(name, "gpu-1")
    pod["metadata"]["uid"] = f"uid-{name}"
    pod["metadata"]["labels"] = {names.LABEL_MANAGED: managed}
    pod["metadata"]["annotations"] = {names.ANNOTATION_WARNINGS: "\n".join(warnings)}
    if owner is not None:
        pod["metadata"]["ownerReferences"] = [
            {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": owner, "uid": f"uid-{owner}",
             "controller": True},
            {"apiVersion": "v1", "kind": "ConfigMap", "name": "not-the-controller", "uid": "x"},
        ]
    return pod


def warning_events(cluster: kmock.KubernetesEmulator) -> list[dict[str, Any]]:
    return [dict(obj.raw) for (resource, _, _), obj in cluster.objects.items()
            if resource == kmock.resource("v1/events") and not obj.deleted
            and obj.raw.get("reason") == "GPUNumaNotBound"]


async def test_warnings_of_replicas_become_one_event_on_their_replicaset(
    cluster: kmock.KubernetesEmulator, operator: Runner,
) -> None:
    await create(cluster, spec=two_socket_spec(allocations=[{**ALLOCATION, "pod": "web-a"}]))
    for name in ("web-a", "web-b"):
        await cluster.post("/api/v1/namespaces/ml/pods",
                           json=warned_pod(name, [NO_COMMAND], managed="false", owner="web-7d9"))
    async with operator():
        (event,) = await eventually(lambda: warning_events(cluster))
        await cluster.post("/api/v1/namespaces/ml/pods",
                           json=warned_pod("web-c", [NO_COMMAND], managed="false", owner="web-7d9"))
        await eventually(lambda: any(r.url.path.endswith("/pods") or "web-c" in r.url.path
                                     for r in list(cluster)))
    assert len(warning_events(cluster)) == 1
    assert event["type"] == "Warning"
    assert event["metadata"]["namespace"] == "ml"
    assert event["involvedObject"] == {"apiVersion": "apps/v1", "kind": "ReplicaSet",
                                       "name": "web-7d9", "uid": "uid-web-7d9", "namespace": "ml"}
    assert event["message"].startswith("pod web-")
    assert NO_COMMAND in event["message"]
    # Not bound: no placement written, although the agent reports its allocation.
    assert not [r for r in list(cluster) if str(r.method.value).upper() == "PATCH"
                and r.url.path == "/api/v1/namespaces/ml/pods/web-a"]


async def test_a_bare_pods_warnings_go_on_the_pod_and_it_still_gets_its_placement(
    cluster: kmock.KubernetesEmulator, operator: Runner,
) -> None:
    await create(cluster, spec=two_socket_spec(allocations=[ALLOCATION]))
    await cluster.post("/api/v1/namespaces/ml/pods",
                       json=warned_pod("train-0", [BAD_POLICY, NO_COMMAND], managed="true", owner=None))
    async with operator():
        (event,) = await eventually(lambda: warning_events(cluster))

        def placed() -> bool:
            raw = cluster.objects["v1/pods", "ml", "train-0"].raw
            return names.ANNOTATION_CPUSET in raw["metadata"]["annotations"]

        await eventually(placed)
    assert event["involvedObject"]["kind"] == "Pod"
    assert event["involvedObject"]["name"] == "train-0"
    assert event["message"] == f"{BAD_POLICY}; {NO_COMMAND}"
