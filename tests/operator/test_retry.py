"""A write that failed is retried by the next round; one that succeeded is not repeated."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from gpunuma import names
from gpunuma.kubeapi import Connection, KubeClient
from gpunuma.operator.controller import Controller
from tests.operator.conftest import fast_settings, layout_body, two_socket_spec
from tests.operator.test_operator import ALLOCATION, running_pod


@pytest.fixture
async def flaky_api() -> AsyncIterator[tuple[str, list[int]]]:
    """An API server whose first pod PATCH fails with 500; it answers the rest with the patch."""
    answered: list[int] = []

    async def patch_pod(request: web.Request) -> web.Response:
        status = 500 if not answered else 200
        answered.append(status)
        if status == 500:
            return web.json_response({"kind": "Status", "message": "etcd timeout"}, status=500)
        body: dict[str, Any] = running_pod("train-0", "gpu-1")
        body["metadata"].update((await request.json())["metadata"])
        return web.json_response(body)

    app = web.Application()
    app.router.add_patch("/api/v1/namespaces/ml/pods/train-0", patch_pod)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}", answered
    finally:
        await runner.cleanup()


async def test_a_failed_pod_patch_is_retried_and_a_successful_one_is_not_repeated(
    flaky_api: tuple[str, list[int]],
) -> None:
    url, answered = flaky_api
    controller = Controller(settings=fast_settings(), client=KubeClient(Connection(server=url)))
    controller.observe_layout(layout_body("gpu-1", two_socket_spec(allocations=[ALLOCATION])))
    controller.observe_pod(running_pod("train-0", "gpu-1"))
    try:
        await controller.reconcile_pod("ml", "train-0", node="gpu-1")  # 500: logged
        await controller.reconcile_pod("ml", "train-0", node="gpu-1")  # retried: 200
        await controller.reconcile_pod("ml", "train-0", node="gpu-1")  # nothing left to do
    finally:
        await controller.client.close()
    assert answered == [500, 200]
    pod = controller.pods["gpu-1"]["ml", "train-0"]
    assert pod.annotations[names.ANNOTATION_NUMA_NODES] == "1"
