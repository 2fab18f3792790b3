from __future__ import annotations

import kmock

from tests.operator.conftest import LAYOUTS, LAYOUTS_URL, Runner, eventually, layout_body, node_body, two_socket_spec


async def test_smoke(cluster: kmock.KubernetesEmulator, operator: Runner) -> None:
    await cluster.post("/api/v1/nodes", json=node_body("gpu-1", {"kubernetes.io/hostname": "gpu-1"}))
    await cluster.post(LAYOUTS_URL, json=layout_body("gpu-1", two_socket_spec()))
    async with operator():
        await eventually(lambda: cluster.objects["v1/nodes", None, "gpu-1"]["metadata"]["labels"].get("gpunuma.io/layout") == "4-4")
        await eventually(lambda: cluster.objects[LAYOUTS, None, "gpu-1"].get("status"))
        print(dict(cluster.objects["v1/nodes", None, "gpu-1"].raw))
        print(dict(cluster.objects[LAYOUTS, None, "gpu-1"].raw)["status"])
        for r in list(cluster):
            print(r.method, r.url.path_qs)
