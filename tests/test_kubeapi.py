"""The shared API client over real TLS on loopback (kmock has none): every way to build a
connection, token rotation, re-login on 401, error mapping, and transport failures as status 0.

Every test runs over both transports (aiohttp, the standard library's): the client must behave
the same whichever carries its requests."""

from __future__ import annotations

import base64
import json
import os
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import kopf
import pytest
import trustme
from aiohttp import web

from gpunuma.kubeapi import ApiError, Connection, KubeClient, StdlibTransport, tls_context
from gpunuma.kubeapi.client import _resource_of
from tests.tlsserver import client_name, serving

N1 = "/api/v1/nodes/n1"  # the test server's node that answers
GOOD = "good"  # a bearer token the test server accepts
EXPIRED = "Bearer expired"  # the one credential the test server rejects with 401
BASIC_PASSWORD = "basic"  # noqa: S105 - a test credential for basic authentication


TRANSPORTS = ("aiohttp", "stdlib")
_chosen = {"transport": TRANSPORTS[0]}


@pytest.fixture(autouse=True, params=TRANSPORTS)
def transport(request: pytest.FixtureRequest) -> str:
    _chosen["transport"] = request.param
    return str(request.param)


def new_client(connection: Connection | None = None, **options: Any) -> KubeClient:
    """A client over the transport this test runs with."""
    if _chosen["transport"] == "stdlib":
        options["transport"] = StdlibTransport()
    return KubeClient(connection, **options)


@dataclass
class ApiServer:
    url: str
    port: int
    seen: list[str] = field(default_factory=list)  # "METHOD Authorization content-type", in order


@pytest.fixture
def authority() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
async def api_server(authority: trustme.CA) -> AsyncIterator[ApiServer]:
    """An HTTPS server for 127.0.0.1 that asks for (does not require) a client certificate.

    ``/api/v1/nodes/n1`` echoes the Authorization header, the client certificate's common name and
    a PATCH's body; ``n2`` is missing (a Status without reason); ``n3`` is forbidden (a Status with
    one); ``html`` answers 200 with a proxy's page. The token ``expired`` gets a 401 everywhere.
    """
    server = ApiServer(url="", port=0)

    async def node(request: web.Request) -> web.Response:
        authorization = request.headers.get("Authorization", "")
        server.seen.append(f"{request.method} {authorization} {request.content_type}")
        if authorization == EXPIRED:
            return web.json_response({"kind": "Status", "message": "Unauthorized"}, status=401)
        name = request.match_info["name"]
        if name == "n2":
            return web.json_response({"kind": "Status", "message": 'nodes "n2" not found'},
                                     status=404)
        if name == "n3":
            return web.json_response({"kind": "Status", "code": 403, "reason": "Forbidden",
                                      "message": "nodes is forbidden"}, status=403)
        if name == "html":
            return web.Response(text="<html>proxy says hi</html>", content_type="text/html")
        return web.json_response({
            "authorization": authorization or None,
            "client": client_name(request),
            "body": await request.json() if request.method == "PATCH" else None,
        })

    app = web.Application()
    app.router.add_route("*", "/api/v1/nodes/{name}", node)
    async with serving(app, authority, "127.0.0.1") as port:
        server.port = port
        server.url = f"https://127.0.0.1:{port}"
        yield server


@pytest.fixture
def service_account(tmp_path: Path, authority: trustme.CA) -> Path:
    directory = tmp_path / "serviceaccount"
    directory.mkdir()
    (directory / "token").write_text("first-token\n")
    authority.cert_pem.write_to_path(str(directory / "ca.crt"))
    return directory


def echo(authorization: str) -> dict[str, Any]:
    """What the test server answers a GET of ``n1`` with this header and no client certificate."""
    return {"authorization": authorization, "client": None, "body": None}


def cluster_env(port: int | str, host: str = "127.0.0.1") -> dict[str, str]:
    return {"KUBERNETES_SERVICE_HOST": host, "KUBERNETES_SERVICE_PORT": str(port)}


async def get_once(connection: Connection, path: str = N1) -> dict[str, Any] | None:
    """One GET by a fresh client, closed afterwards."""
    client = new_client(connection)
    try:
        return await client.get(path)
    finally:
        await client.close()


async def error_of(connection: Connection, path: str = N1, *, patch: Any = None) -> ApiError:
    """The error of one GET (or merge patch) by a fresh client, closed afterwards."""
    client = new_client(connection)
    try:
        with pytest.raises(ApiError) as error:
            await (client.get(path) if patch is None else client.merge_patch(path, patch))
    finally:
        await client.close()
    return error.value


# Connections --------------------------------------------------------------------------------------

async def test_the_in_cluster_account_talks_tls_and_follows_token_rotation(
    api_server: ApiServer, service_account: Path,
) -> None:
    client = new_client(Connection.in_cluster(service_account, cluster_env(api_server.port)))
    try:
        first = await client.get(N1)
        (service_account / "token").write_text("rotated-token\n")
        second = await client.get(N1)
    finally:
        await client.close()
    assert first == echo("Bearer first-token")
    assert second == echo("Bearer rotated-token")


async def test_a_token_that_cannot_be_read_is_an_api_error_not_a_crash(
    service_account: Path,
) -> None:
    connection = Connection.in_cluster(service_account, cluster_env(1))
    (service_account / "token").unlink()  # between two rotations
    error = await error_of(connection)
    assert "cannot get API credentials" in str(error)
    assert error.retryable


def test_outside_a_cluster_the_message_says_to_pass_a_kubeconfig(service_account: Path) -> None:
    with pytest.raises(ApiError, match="pass --kubeconfig"):
        Connection.in_cluster(service_account, {})


def test_a_missing_token_names_the_file(service_account: Path) -> None:
    (service_account / "token").unlink()
    with pytest.raises(ApiError, match=r"serviceaccount/token is missing"):
        Connection.in_cluster(service_account, cluster_env(443, "10.96.0.1"))


def test_an_ipv6_service_address_is_bracketed(service_account: Path) -> None:
    connection = Connection.in_cluster(service_account, cluster_env(443, "fd00::1"))
    assert connection.server == "https://[fd00::1]:443"


async def test_a_kubeconfig_with_a_ca_and_a_token_is_read_by_the_kubernetes_loader(
    api_server: ApiServer, authority: trustme.CA, tmp_path: Path,
) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "test",
        "clusters": [{"name": "test", "cluster": {
            "server": api_server.url,
            "certificate-authority-data": base64.b64encode(authority.cert_pem.bytes()).decode()}}],
        "users": [{"name": "test", "user": {"token": "from-kubeconfig"}}],
        "contexts": [{"name": "test", "context": {"cluster": "test", "user": "test"}}],
    }))
    assert await get_once(Connection.from_kubeconfig(kubeconfig)) == echo("Bearer from-kubeconfig")


def test_a_kubeconfig_that_cannot_be_loaded_is_named(tmp_path: Path) -> None:
    with pytest.raises(ApiError, match=f"cannot load kubeconfig {tmp_path / 'missing'}"):
        Connection.from_kubeconfig(tmp_path / "missing")


@pytest.mark.parametrize("encode", [bytes.decode, lambda pem: base64.b64encode(pem).decode()],
                         ids=["pem", "base64-pem"])
async def test_kopf_connection_info_trusts_its_ca_and_sends_its_token(
    api_server: ApiServer, authority: trustme.CA, encode: Any,
) -> None:
    info = kopf.ConnectionInfo(server=api_server.url, ca_data=encode(authority.cert_pem.bytes()),
                               token=GOOD)
    assert await get_once(Connection.from_kopf(info)) == echo(f"Bearer {GOOD}")


async def test_an_insecure_kopf_connection_still_presents_its_client_certificate(
    api_server: ApiServer, authority: trustme.CA,
) -> None:
    # kubeconfig's insecure-skip-tls-verify with a client certificate: no CA, but mutual TLS.
    leaf = authority.issue_cert("admin.gpunuma.test", common_name="admin.gpunuma.test")
    info = kopf.ConnectionInfo(server=api_server.url, insecure=True,
                               certificate_data=b"".join(p.bytes() for p in leaf.cert_chain_pems),
                               private_key_data=leaf.private_key_pem.bytes())
    answer = await get_once(Connection.from_kopf(info))
    assert answer == {"authorization": None, "client": "admin.gpunuma.test", "body": None}


def test_kopf_basic_credentials_become_a_basic_header() -> None:
    info = kopf.ConnectionInfo(server="http://127.0.0.1:1", username="admin", password=BASIC_PASSWORD)
    connection = Connection.from_kopf(info)
    encoded = base64.b64encode(f"admin:{BASIC_PASSWORD}".encode()).decode()
    assert connection.authorization() == f"Basic {encoded}"
    assert connection.ssl_context is None


@pytest.mark.parametrize("connect", ["in-cluster", "kopf"])
async def test_a_server_with_a_certificate_of_another_authority_is_refused(
    api_server: ApiServer, service_account: Path, connect: str,
) -> None:
    stranger = trustme.CA()
    if connect == "in-cluster":
        stranger.cert_pem.write_to_path(str(service_account / "ca.crt"))
        connection = Connection.in_cluster(service_account, cluster_env(api_server.port))
    else:
        connection = Connection.from_kopf(kopf.ConnectionInfo(
            server=api_server.url, ca_data=stranger.cert_pem.bytes().decode(), token=GOOD))
    error = await error_of(connection)
    assert "certificate verify failed" in str(error)
    assert error.status == 0
    assert error.retryable


# The client -----------------------------------------------------------------------------------

async def test_a_merge_patch_is_sent_as_one_and_counted_by_resource(
    api_server: ApiServer, authority: trustme.CA,
) -> None:
    client = new_client(Connection.from_kopf(kopf.ConnectionInfo(
        server=api_server.url, ca_data=authority.cert_pem.bytes(), token=GOOD)))
    try:
        answer = await client.merge_patch(N1, {"labels": {"a": "b"}})
        await client.json_patch(N1, [{"op": "add", "path": "/x", "value": 1}])
    finally:
        await client.close()
    assert answer["body"] == {"labels": {"a": "b"}}
    assert api_server.seen == ["PATCH Bearer good application/merge-patch+json",
                               "PATCH Bearer good application/json-patch+json"]
    assert client.requests == {("PATCH", "nodes"): 2}


async def test_a_missing_object_is_none_for_a_read_and_an_error_for_a_write(
    api_server: ApiServer, service_account: Path,
) -> None:
    connection = Connection.in_cluster(service_account, cluster_env(api_server.port))
    assert await get_once(connection, "/api/v1/nodes/n2") is None
    error = await error_of(connection, "/api/v1/nodes/n2", patch={"x": 1})
    assert str(error) == 'PATCH /api/v1/nodes/n2: HTTP 404: nodes "n2" not found'
    assert error.status == 404
    assert error.retryable  # the object was deleted under us: the next pass re-creates it


async def test_a_forbidden_call_names_the_reason_and_is_not_retryable(
    api_server: ApiServer, service_account: Path,
) -> None:
    connection = Connection.in_cluster(service_account, cluster_env(api_server.port))
    error = await error_of(connection, "/api/v1/nodes/n3")
    assert str(error) == "GET /api/v1/nodes/n3: HTTP 403 Forbidden: nodes is forbidden"
    assert (error.status, error.reason) == (403, "Forbidden")
    assert not error.retryable


async def test_a_rejected_token_makes_the_client_log_in_again_once(
    api_server: ApiServer, authority: trustme.CA,
) -> None:
    tokens = iter(["expired", "good"])
    logins: list[str] = []

    def login() -> Connection:
        logins.append("login")
        return Connection.from_kopf(kopf.ConnectionInfo(
            server=api_server.url, ca_data=authority.cert_pem.bytes(), token=next(tokens)))

    client = new_client(login=login)
    try:
        answer = await client.merge_patch(N1, {"x": 1})
        await client.get(N1)  # the new credential is kept
    finally:
        await client.close()
    assert answer["body"] == {"x": 1}
    assert len(logins) == 2
    assert [line.split()[1:3] for line in api_server.seen] == [
        ["Bearer", "expired"], ["Bearer", "good"], ["Bearer", "good"]]


async def test_without_a_login_a_rejected_token_is_an_error_sent_once(
    api_server: ApiServer, authority: trustme.CA,
) -> None:
    connection = Connection(server=api_server.url, authorization=lambda: EXPIRED,
                            ssl_context=tls_context(ca_data=authority.cert_pem.bytes()))
    error = await error_of(connection)
    assert str(error) == "GET /api/v1/nodes/n1: HTTP 401: Unauthorized"
    assert len(api_server.seen) == 1


async def test_a_login_without_credentials_says_so() -> None:
    client = new_client(login=lambda: None)
    try:
        with pytest.raises(ApiError, match="no credentials") as error:
            await client.get(N1)
    finally:
        await client.close()
    assert error.value.status == 401


def test_a_client_needs_a_connection_or_a_login() -> None:
    with pytest.raises(ValueError, match="needs a connection or a login"):
        KubeClient()


async def test_an_answer_that_is_not_json_counts_as_no_answer(
    api_server: ApiServer, service_account: Path,
) -> None:
    connection = Connection.in_cluster(service_account, cluster_env(api_server.port))
    error = await error_of(connection, "/api/v1/nodes/html")
    assert "not a JSON object: '<html>proxy says hi</html>'" in str(error)
    assert error.status == 0
    assert error.retryable


async def test_an_unreachable_server_is_an_api_error_not_a_transport_exception() -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    error = await error_of(Connection(server=f"http://127.0.0.1:{port}"))
    assert f"no answer from the API server at http://127.0.0.1:{port}" in str(error)
    assert error.status == 0
    assert error.retryable


@pytest.mark.parametrize(("path", "resource"), [
    (N1, "nodes"),
    ("/api/v1/namespaces/ml/pods/train-0?fieldManager=gpunuma", "pods"),
    ("/api/v1/namespaces/ml/events", "events"),
    ("/apis/gpunuma.io/v1alpha1/gpunumalayouts/n1", "gpunumalayouts"),
    ("/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/x", "leases"),
    ("/version", "version"),
])
def test_requests_are_counted_by_resource(path: str, resource: str) -> None:
    assert _resource_of(path) == resource


async def test_a_kubeconfig_context_with_an_exec_plugin_and_its_namespace(
    api_server: ApiServer, authority: trustme.CA, tmp_path: Path,
) -> None:
    """The kubeconfig loader: the chosen (not the current) context, its namespace, and an exec plugin's
    token (as cloud kubeconfigs authenticate)."""
    plugin = tmp_path / "credential"
    plugin.write_text('#!/bin/sh\necho \'{"apiVersion": "client.authentication.k8s.io/v1beta1", '
                      '"kind": "ExecCredential", "status": {"token": "from-exec"}}\'\n')
    plugin.chmod(0o755)
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "other",
        "clusters": [{"name": "test", "cluster": {
            "server": api_server.url,
            "certificate-authority-data": base64.b64encode(authority.cert_pem.bytes()).decode()}}],
        "users": [{"name": "exec", "user": {"exec": {
            "apiVersion": "client.authentication.k8s.io/v1beta1", "command": str(plugin)}}}],
        "contexts": [{"name": "other", "context": {"cluster": "nowhere", "user": "exec"}},
                     {"name": "lab", "context": {"cluster": "test", "user": "exec",
                                                 "namespace": "ml"}}],
    }))
    connection = Connection.from_kubeconfig(kubeconfig, "lab")
    assert connection.namespace == "ml"
    assert await get_once(connection) == echo("Bearer from-exec")


async def test_delete_answers_the_object_and_none_when_it_is_already_gone(
    api_server: ApiServer, service_account: Path,
) -> None:
    client = new_client(Connection.in_cluster(service_account, cluster_env(api_server.port)))
    try:
        assert await client.delete(N1) == echo("Bearer first-token")
        assert await client.delete("/api/v1/nodes/n2") is None
    finally:
        await client.close()
    assert client.requests == {("DELETE", "nodes"): 2}


async def test_a_kubeconfig_list_is_merged_as_kubectl_merges_it(
    api_server: ApiServer, authority: trustme.CA, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """KUBECONFIG=a:b: the first file's current-context, the cluster from the second file with its
    CA named relative to that file, a missing file in the list skipped."""
    (tmp_path / "b").mkdir()
    authority.cert_pem.write_to_path(str(tmp_path / "b" / "ca.crt"))
    first, second = tmp_path / "a.kubeconfig", tmp_path / "b" / "b.kubeconfig"
    first.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "lab",
        "contexts": [{"name": "lab", "context": {"cluster": "test", "user": "me"}}],
        "users": [{"name": "me", "user": {"token": "merged"}}], "clusters": []}))
    second.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "elsewhere",
        "clusters": [{"name": "test", "cluster": {"server": api_server.url,
                                                  "certificate-authority": "ca.crt"}}],
        "users": [{"name": "me", "user": {"token": "not-this-one"}}], "contexts": []}))
    monkeypatch.setenv("KUBECONFIG", os.pathsep.join([str(first), str(tmp_path / "gone"),
                                                      str(second)]))
    assert await get_once(Connection.from_kubeconfig()) == echo("Bearer merged")
