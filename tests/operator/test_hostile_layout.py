"""A hostile layout (issue #16, item 3) cannot stall or kill the operator.

The review's layouts: ``cpus = "0-65535,"`` a hundred times (1 KiB) blocked the event loop 2.4 s per
reconcile; 100 NUMA nodes of ``0-65535`` (6.8 KiB) peaked at 691 MiB, over the chart's 512 Mi, and
the restarted operator read it again. Now the cpulists are refused as larger than any real machine,
and each layout is parsed once per generation, however many rounds and pods read it.
"""

from __future__ import annotations

import kmock

from gpunuma import names
from gpunuma.kubeapi import Connection, KubeClient
from gpunuma.operator.controller import Controller
from tests.operator.conftest import LAYOUTS, condition, fast_settings, labels_of, two_socket_spec
from tests.operator.test_operator import FOREIGN, create, patch_spec, running_pod


def hostile_spec() -> dict[str, object]:
    spec = two_socket_spec()
    spec["numaNodes"] = [{"id": i, "cpus": "0-65535", "memoryMiB": 1, "distances": []}
                         for i in range(100)]
    return spec


async def test_a_layout_larger_than_a_real_machine_is_refused_and_its_node_left_alone(
    cluster: kmock.KubernetesEmulator,
) -> None:
    await create(cluster, spec=hostile_spec())
    controller = Controller(settings=fast_settings(),
                            client=KubeClient(Connection(server=str(cluster.url))))
    try:
        controller.observe_layout(cluster.objects[LAYOUTS, None, "gpu-1"].raw)
        await controller.reconcile_layout("gpu-1")
    finally:
        await controller.client.close()
    labeled = condition(cluster, "gpu-1", "Labeled")
    assert labeled["reason"] == "InvalidLayout"
    assert "65535" in labeled["message"]
    assert "Linux machine" in labeled["message"]
    assert len(labeled["message"]) < 500
    assert labels_of(cluster, "gpu-1") == FOREIGN


async def test_a_layout_is_parsed_once_per_generation(cluster: kmock.KubernetesEmulator) -> None:
    allocation = {"namespace": "ml", "pod": "train-0", "container": "main",
                  "resource": "nvidia.com/gpu", "deviceIds": ["GPU-x"], "numaNodes": [1],
                  "cpus": "32-63"}
    await create(cluster, spec=two_socket_spec(allocations=[allocation]))
    await cluster.post("/api/v1/namespaces/ml/pods", json=running_pod("train-0", "gpu-1"))
    controller = Controller(settings=fast_settings(),
                            client=KubeClient(Connection(server=str(cluster.url))))
    try:
        controller.observe_pod(cluster.objects["v1/pods", "ml", "train-0"].raw)
        controller.observe_layout(cluster.objects[LAYOUTS, None, "gpu-1"].raw)
        for _ in range(5):  # events and periodic rounds of one generation
            await controller.check_once()
        assert controller.derivations.parses == 1
        await patch_spec(cluster, "gpu-1", {"heartbeatTime": "2026-11-28T10:00:00Z"}, 2)
        controller.observe_layout(cluster.objects[LAYOUTS, None, "gpu-1"].raw)
        await controller.check_once()
        await controller.check_once()
        assert controller.derivations.parses == 2
    finally:
        await controller.client.close()
    pod = cluster.objects["v1/pods", "ml", "train-0"].raw
    assert pod["metadata"]["annotations"][names.ANNOTATION_CPUSET] == "32-63"
