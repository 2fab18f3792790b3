"""The operator's API client over real TLS (kmock has none): CA trust, bearer token, re-login."""

from __future__ import annotations

import socket
import ssl
from collections.abc import AsyncIterator
from typing import Any

import kopf
import pytest
import trustme
from aiohttp import web

from gpunuma.operator.kube import ApiError, Endpoint, KubeClient

GOOD = "good"  # the test server's one accepted bearer token


@pytest.fixture
def authority() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
async def api_server(authority: trustme.CA) -> AsyncIterator[tuple[str, list[str]]]:
    """An HTTPS server on loopback that accepts only the token 'good' and records what it saw."""
    seen: list[str] = []

    async def node(request: web.Request) -> web.Response:
        token = request.headers.get("Authorization", "")
        seen.append(f"{request.method} {token} {request.content_type}")
        if token != f"Bearer {GOOD}":
            return web.json_response({"kind": "Status", "message": "Unauthorized"}, status=401)
        if request.method == "PATCH":
            return web.json_response({"metadata": {"name": "n1", **(await request.json())}})
        return web.json_response({"kind": "Status", "message": "nodes \"n2\" not found"},
                                 status=404)

    app = web.Application()
    app.router.add_route("*", "/api/v1/nodes/{name}", node)
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("127.0.0.1").configure_cert(server_context)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_context)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"https://127.0.0.1:{port}", seen
    finally:
        await runner.cleanup()


async def test_the_client_trusts_the_cluster_ca_and_sends_the_token(
    authority: trustme.CA, api_server: tuple[str, list[str]],
) -> None:
    url, seen = api_server
    ca = authority.cert_pem.bytes().decode()
    client = KubeClient(lambda: Endpoint(kopf.ConnectionInfo(server=url, ca_data=ca,
                                                             token=GOOD)))
    try:
        body = await client.merge_patch("/api/v1/nodes/n1", {"labels": {"a": "b"}})
        with pytest.raises(ApiError, match="HTTP 404: nodes \"n2\" not found") as caught:
            await client.get("/api/v1/nodes/n2")
    finally:
        await client.close()
    assert body["metadata"]["labels"] == {"a": "b"}
    assert caught.value.status == 404
    assert seen[0] == "PATCH Bearer good application/merge-patch+json"
    assert client.requests["PATCH", "nodes"] == 1


async def test_a_rejected_token_makes_the_client_log_in_again_once(
    authority: trustme.CA, api_server: tuple[str, list[str]],
) -> None:
    url, seen = api_server
    ca = authority.cert_pem.bytes().decode()
    tokens = iter(["expired", GOOD])
    logins: list[Any] = []

    def login() -> Endpoint:
        logins.append(1)
        return Endpoint(kopf.ConnectionInfo(server=url, ca_data=ca, token=next(tokens)))

    client = KubeClient(login)
    try:
        body = await client.merge_patch("/api/v1/nodes/n1", {"x": 1})
    finally:
        await client.close()
    assert body["metadata"]["x"] == 1
    assert len(logins) == 2
    assert [line.split()[1:3] for line in seen] == [["Bearer", "expired"], ["Bearer", "good"]]


async def test_an_untrusted_server_certificate_is_refused(
    api_server: tuple[str, list[str]],
) -> None:
    url, _ = api_server
    stranger = trustme.CA().cert_pem.bytes().decode()
    client = KubeClient(lambda: Endpoint(kopf.ConnectionInfo(server=url, ca_data=stranger,
                                                             token=GOOD)))
    try:
        with pytest.raises(ApiError, match="certificate verify failed") as caught:
            await client.get("/api/v1/nodes/n1")
    finally:
        await client.close()
    assert caught.value.status == 0


async def test_an_unreachable_server_is_an_api_error_not_a_transport_exception() -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = KubeClient(lambda: Endpoint(kopf.ConnectionInfo(server=f"http://127.0.0.1:{port}")))
    try:
        with pytest.raises(ApiError, match="no answer from the API server") as caught:
            await client.get("/api/v1/nodes/n1")
    finally:
        await client.close()
    assert caught.value.status == 0
