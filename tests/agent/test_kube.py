"""The thin API client's connection: the in-cluster service account over real TLS on loopback."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trustme
from aiohttp import web

from gpunuma.agent.kube import ApiError, KubeClient, in_cluster_connection


@pytest.fixture
def authority() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
async def api_server(authority: trustme.CA) -> AsyncIterator[int]:
    """An HTTPS server that echoes the Authorization header, with a certificate for 127.0.0.1."""

    async def node(request: web.Request) -> web.Response:
        return web.json_response({"authorization": request.headers.get("Authorization")})

    async def missing(_: web.Request) -> web.Response:
        return web.json_response({"kind": "Status", "code": 403, "reason": "Forbidden",
                                  "message": "nodes is forbidden"}, status=403)

    app = web.Application()
    app.router.add_get("/api/v1/nodes/n1", node)
    app.router.add_get("/api/v1/nodes/n2", missing)
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("127.0.0.1").configure_cert(server_context)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_context)
    await site.start()
    yield site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    await runner.cleanup()


@pytest.fixture
def service_account(tmp_path: Path, authority: trustme.CA) -> Path:
    directory = tmp_path / "serviceaccount"
    directory.mkdir()
    (directory / "token").write_text("first-token\n")
    authority.cert_pem.write_to_path(str(directory / "ca.crt"))
    return directory


async def test_the_in_cluster_account_talks_tls_and_follows_token_rotation(
    api_server: int, service_account: Path
) -> None:
    environ = {"KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": str(api_server)}
    client = KubeClient(in_cluster_connection(service_account, environ))
    try:
        assert await client.get("/api/v1/nodes/n1") == {"authorization": "Bearer first-token"}
        (service_account / "token").write_text("rotated-token\n")
        assert await client.get("/api/v1/nodes/n1") == {"authorization": "Bearer rotated-token"}
        with pytest.raises(ApiError, match="403 Forbidden: nodes is forbidden") as error:
            await client.get("/api/v1/nodes/n2")
        assert not error.value.retryable
    finally:
        await client.close()


async def test_a_server_with_a_certificate_of_another_authority_is_refused(
    api_server: int, service_account: Path
) -> None:
    trustme.CA().cert_pem.write_to_path(str(service_account / "ca.crt"))
    environ = {"KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": str(api_server)}
    client = KubeClient(in_cluster_connection(service_account, environ))
    try:
        with pytest.raises(ApiError, match="certificate verify failed") as error:
            await client.get("/api/v1/nodes/n1")
        assert error.value.status == 0
    finally:
        await client.close()


async def test_a_token_that_cannot_be_read_is_an_api_error_not_a_crash(
    service_account: Path,
) -> None:
    environ = {"KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": "1"}
    client = KubeClient(in_cluster_connection(service_account, environ))
    (service_account / "token").unlink()  # between two rotations
    try:
        with pytest.raises(ApiError, match="cannot get API credentials") as error:
            await client.get("/api/v1/nodes/n1")
        assert error.value.retryable
    finally:
        await client.close()


def test_outside_a_cluster_the_message_says_to_pass_a_kubeconfig(service_account: Path) -> None:
    with pytest.raises(ApiError, match="pass --kubeconfig"):
        in_cluster_connection(service_account, {})


def test_a_missing_token_names_the_file(service_account: Path) -> None:
    (service_account / "token").unlink()
    environ = {"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443"}
    with pytest.raises(ApiError, match=r"serviceaccount/token is missing"):
        in_cluster_connection(service_account, environ)


def test_an_ipv6_service_address_is_bracketed(service_account: Path) -> None:
    environ = {"KUBERNETES_SERVICE_HOST": "fd00::1", "KUBERNETES_SERVICE_PORT": "443"}
    assert in_cluster_connection(service_account, environ).server == "https://[fd00::1]:443"
