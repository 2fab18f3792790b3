"""The real webhook server over TLS on loopback: AdmissionReviews, bad input, rotation, shutdown."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import socket
import ssl
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import trustme

from gpunuma import names
from gpunuma.settings import WebhookSettings, parse_listen
from gpunuma.webhook import review as review_module
from gpunuma.webhook.certificate import TLSError
from gpunuma.webhook.server import MAX_BODY_BYTES, WebhookServer
from tests.polling import eventually
from tests.webhook import pods
from tests.webhook.tls import Certificates, read_response, serving

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
async def server(certificates: Certificates) -> AsyncIterator[WebhookServer]:
    async for webhook in serving(certificates, reload_interval=0.02):
        yield webhook


@pytest.fixture
async def session(certificates: Certificates) -> AsyncIterator[aiohttp.ClientSession]:
    connector = aiohttp.TCPConnector(ssl=certificates.client_context(), limit=8)
    async with aiohttp.ClientSession(connector=connector,
                                     timeout=aiohttp.ClientTimeout(total=20)) as client:
        yield client


def url(server: WebhookServer, path: str) -> str:
    return f"https://127.0.0.1:{server.port}{path}"


async def post_review(session: aiohttp.ClientSession, server: WebhookServer, pod: dict[str, Any],
                      *, path: str = "/mutate", uid: str = "uid-1") -> dict[str, Any]:
    async with session.post(url(server, path), json=pods.admission_review(pod, uid=uid)) as reply:
        assert reply.status == 200, await reply.text()
        body: dict[str, Any] = await reply.json()
    assert body["apiVersion"] == "admission.k8s.io/v1"
    assert body["kind"] == "AdmissionReview"
    assert body["response"]["uid"] == uid
    return body


# --- AdmissionReviews ----------------------------------------------------------------------------


@pytest.mark.parametrize("make_pod", [make for make, _ in pods.REALISTIC_PODS.values()],
                         ids=list(pods.REALISTIC_PODS))
async def test_a_realistic_pod_is_patched_over_tls_and_the_result_validates(
    server, session, make_pod
):
    pod = make_pod()
    body = await post_review(session, server, pod)
    assert body["response"]["allowed"] is True
    out = pods.patched(pod, body)
    pods.assert_valid_pod(out)
    assert out["spec"]["initContainers"][0]["image"] == "registry.example/gpunuma:1.2.3"


async def test_the_namespace_path_mutates_pods_without_the_annotation(server, session):
    pod = pods.vllm_server()
    del pod["metadata"]["annotations"]
    assert "patch" not in (await post_review(session, server, pod))["response"]
    namespace_reply = await post_review(session, server, pod, path="/mutate-namespace")
    assert "patch" in namespace_reply["response"]


async def test_concurrent_requests_each_get_their_own_answer(server, session):
    cases = [(pods.vllm_server() if i % 2 else pods.amd_pod(), f"uid-{i}") for i in range(40)]
    replies = await asyncio.gather(*(post_review(session, server, pod, uid=uid)
                                     for pod, uid in cases))
    for (pod, _), reply in zip(cases, replies, strict=True):
        out = pods.patched(pod, reply)
        assert out["metadata"]["annotations"][names.ANNOTATION_WRAPPED] == (
            pod["spec"]["containers"][0]["name"])


async def test_a_mutated_pod_sent_again_gets_no_patch(server, session):
    pod = pods.torchrun_worker()
    out = pods.patched(pod, await post_review(session, server, pod))
    again = await post_review(session, server, out)
    assert again["response"] == {"uid": "uid-1", "allowed": True}


async def test_identical_pods_are_answered_from_memory_and_a_changed_one_is_not(server, session):
    pod = pods.ray_gpu_worker()
    first = await post_review(session, server, pod, uid="replica-1")
    second = await post_review(session, server, pod, uid="replica-2")
    assert server.memory.hits == 1
    assert second["response"] == {**first["response"], "uid": "replica-2"}
    pod["metadata"]["annotations"][names.ANNOTATION_POLICY] = "strict"
    third = await post_review(session, server, pod, uid="replica-3")
    assert server.memory.hits == 1
    assert pods.patched(pod, third)["spec"]["containers"][0]["env"][-1] == {
        "name": "GPUNUMA_POLICY", "value": "strict"}


async def test_a_strict_pod_that_cannot_be_wrapped_is_denied_with_a_message(server, session):
    pod = pods.mig_pod()
    del pod["spec"]["containers"][0]["command"]
    pod["metadata"]["annotations"][names.ANNOTATION_POLICY] = "strict"
    response = (await post_review(session, server, pod))["response"]
    assert response["allowed"] is False
    assert "patch" not in response
    assert response["status"]["code"] == 403
    assert "'jupyter'" in response["status"]["message"]


async def test_warnings_reach_the_response_and_stay_short(server, session):
    pod = pods.amd_pod()
    pod["metadata"]["annotations"][names.ANNOTATION_POLICY] = "fastest-please" * 20
    response = (await post_review(session, server, pod))["response"]
    assert response["warnings"]
    assert all(len(w) <= 120 for w in response["warnings"])
    assert "patch" in response


async def test_a_request_that_is_not_a_pod_create_is_allowed_unchanged(server, session):
    review = pods.admission_review(pods.vllm_server(), operation="UPDATE")
    async with session.post(url(server, "/mutate"), json=review) as reply:
        assert (await reply.json())["response"] == {"uid": review["request"]["uid"],
                                                     "allowed": True}


async def test_a_pod_the_mutation_cannot_read_is_allowed_with_a_warning(server, session):
    pod = pods.vllm_server()
    pod["spec"]["containers"][0]["command"] = "python3 -m vllm"
    response = (await post_review(session, server, pod))["response"]
    assert response["allowed"] is True
    assert "patch" not in response
    assert "command must be a list" in response["warnings"][0]


async def test_an_internal_error_allows_the_pod_unchanged_and_logs_its_name(
    server, session, monkeypatch, caplog
):
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("boom")

    monkeypatch.setattr(review_module, "mutate", broken)
    with caplog.at_level(logging.ERROR, logger="gpunuma.webhook"):
        response = (await post_review(session, server, pods.ray_gpu_worker()))["response"]
    assert response["allowed"] is True
    assert "patch" not in response
    assert "internal error" in response["warnings"][0]
    assert "ml/raycluster-gpu-worker-a100-9xk2z" in caplog.text
    assert "boom" in caplog.text
    async with session.get(url(server, "/healthz")) as reply:
        assert reply.status == 200


# --- Bad input -----------------------------------------------------------------------------------


def _review_without(*path: str) -> bytes:
    review = pods.admission_review(pods.vllm_server())
    target = review
    for key in path[:-1]:
        target = target[key]
    del target[path[-1]]
    return json.dumps(review).encode()


def _review_with(**changes: Any) -> bytes:
    return json.dumps({**pods.admission_review(pods.vllm_server()), **changes}).encode()


@pytest.mark.parametrize(("body", "reason"), [
    (b"{not json", "not JSON"),
    (b"\xff\xfe", "not JSON"),
    (b"[1, 2]", "JSON object"),
    (_review_with(apiVersion="admission.k8s.io/v1beta1"), "admissionReviewVersions: [v1]"),
    (_review_with(kind="ConversionReview"), "kind AdmissionReview"),
    (_review_without("request"), "no request"),
    (_review_without("request", "uid"), "request.uid is missing"),
    (_review_without("request", "object"), "request.object"),
], ids=["bad-json", "not-utf8", "not-an-object", "v1beta1", "wrong-kind", "no-request",
        "no-uid", "no-object"])
async def test_a_malformed_request_gets_http_400_with_a_reason(server, session, body, reason):
    async with session.post(url(server, "/mutate"), data=body) as reply:
        assert reply.status == 400
        assert reason in (await reply.json())["reason"]


async def test_a_body_over_3_mib_gets_http_400(server, session):
    big = b" " * (MAX_BODY_BYTES + 1)
    async with session.post(url(server, "/mutate"), data=big) as reply:
        assert reply.status == 400
        assert "over 3145728 bytes" in (await reply.json())["reason"]


async def test_a_chunked_body_over_3_mib_gets_http_400(server, session):
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(4):
            yield b" " * (1024 * 1024)

    async with session.post(url(server, "/mutate"), data=chunks()) as reply:
        assert reply.status == 400
        assert "over" in (await reply.json())["reason"]


# --- Health, readiness, metrics ------------------------------------------------------------------


async def test_health_readiness_and_metrics_are_served(server, session):
    await post_review(session, server, pods.amd_pod())
    async with session.post(url(server, "/mutate"), data=b"nope") as reply:
        assert reply.status == 400
    for path in ("/healthz", "/readyz"):
        async with session.get(url(server, path)) as reply:
            assert reply.status == 200
    async with session.get(url(server, "/metrics")) as reply:
        text = await reply.text()
    assert 'gpunuma_webhook_requests_total{outcome="patched"} 1.0' in text
    assert 'gpunuma_webhook_requests_total{outcome="invalid"} 1.0' in text
    assert 'gpunuma_webhook_requests_total{outcome="denied"} 0.0' in text
    assert "gpunuma_webhook_request_duration_seconds_count 2.0" in text


async def test_an_unknown_path_is_404_and_a_wrong_method_405_with_the_allowed_ones(server, session):
    async with session.get(url(server, "/mutate/extra")) as reply:
        assert reply.status == 404
    async with session.get(url(server, "/mutate")) as reply:
        assert (reply.status, reply.headers["Allow"]) == (405, "POST")
    async with session.post(url(server, "/healthz"), data=b"") as reply:
        assert (reply.status, set(reply.headers["Allow"].split(","))) == (405, {"GET", "HEAD"})
    async with session.head(url(server, "/readyz")) as reply:
        assert (reply.status, await reply.read()) == (200, b"")
    # None of them is counted as an admission.
    async with session.get(url(server, "/metrics")) as reply:
        assert "gpunuma_webhook_request_duration_seconds_count 0.0" in await reply.text()
    # The API server adds its timeout to the webhook's URL as a query.
    await post_review(session, server, pods.vllm_server(), path="/mutate?timeout=5s")


async def test_a_client_that_expects_100_continue_gets_it_before_sending_the_body(
        server, certificates):
    reader, writer = await _open(server, certificates.client_context(), "localhost")
    body = json.dumps(pods.admission_review(pods.vllm_server())).encode()
    writer.write(f"POST /mutate HTTP/1.1\r\nHost: webhook\r\nContent-Type: application/json\r\n"
                 f"Expect: 100-continue\r\nContent-Length: {len(body)}\r\n\r\n".encode())
    await writer.drain()
    interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
    writer.write(body)
    status, payload = await read_response(reader)
    assert status == 200
    assert "patch" in json.loads(payload)["response"]
    writer.close()


# --- Certificate rotation ------------------------------------------------------------------------


async def _open(server: WebhookServer, context: ssl.SSLContext, server_name: str | None
                ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.wait_for(asyncio.open_connection(
        "127.0.0.1", server.port, ssl=context, server_hostname=server_name), 5)


def _peer_pem(writer: asyncio.StreamWriter) -> bytes:
    der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
    return ssl.DER_cert_to_PEM_cert(der).encode()


async def _raw_post(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, path: str,
                    body: bytes) -> tuple[int, bytes]:
    writer.write(f"POST {path} HTTP/1.1\r\nHost: webhook\r\nContent-Type: application/json\r\n"
                 f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
    await writer.drain()
    return await read_response(reader, within=10)


async def _wait_for_certificate(server: WebhookServer, context: ssl.SSLContext,
                                expected: bytes) -> None:
    async def served() -> bool:
        _, writer = await _open(server, context, "localhost")
        pem = _peer_pem(writer)
        writer.close()
        return pem.strip() == expected.strip()

    await eventually(served, within=5.0, message="the rotated certificate was never served")


@pytest.mark.parametrize("server_name", ["localhost", None], ids=["sni", "no-sni"])
async def test_a_rotated_certificate_is_served_without_dropping_open_connections(
    server, certificates, server_name
):
    new_ca = trustme.CA()
    context = certificates.client_context()
    new_ca.configure_trust(context)
    review = json.dumps(pods.admission_review(pods.vllm_server())).encode()
    old_reader, old_writer = await _open(server, context, server_name)
    old_pem = _peer_pem(old_writer)
    assert (await _raw_post(old_reader, old_writer, "/mutate", review))[0] == 200

    new_pem = certificates.issue(new_ca)
    await _wait_for_certificate(server, context, new_pem)

    reader, writer = await _open(server, context, server_name)
    assert _peer_pem(writer).strip() == new_pem.strip() != old_pem.strip()
    assert (await _raw_post(reader, writer, "/mutate", review))[0] == 200
    # The connection opened before the rotation still answers, on its old certificate.
    assert (await _raw_post(old_reader, old_writer, "/mutate", review))[0] == 200
    assert _peer_pem(old_writer) == old_pem
    for w in (writer, old_writer):
        w.close()


async def test_a_half_written_rotation_keeps_the_old_certificate_until_the_key_arrives(
    manual_server, certificates, session
):
    server = manual_server
    context = certificates.client_context()
    _, writer = await _open(server, context, "localhost")
    old_pem = _peer_pem(writer)
    writer.close()
    old_key = certificates.key_file.read_bytes()
    new_pem = certificates.issue()
    new_key = certificates.key_file.read_bytes()
    certificates.key_file.write_bytes(old_key)  # the new certificate with the old key

    assert server.reload_certificate() is False
    assert server.reload_certificate() is None  # the same broken pair is not retried
    _, writer = await _open(server, context, "localhost")
    assert _peer_pem(writer) == old_pem
    writer.close()

    certificates.key_file.write_bytes(new_key)
    assert server.reload_certificate() is True
    _, writer = await _open(server, context, "localhost")
    assert _peer_pem(writer).strip() == new_pem.strip()
    writer.close()
    async with session.get(url(server, "/metrics")) as reply:
        text = await reply.text()
    assert 'gpunuma_webhook_certificate_reloads_total{result="loaded"} 1.0' in text
    assert 'gpunuma_webhook_certificate_reloads_total{result="failed"} 1.0' in text


def test_an_unreadable_certificate_is_refused_at_start_naming_the_files(certificates):
    certificates.key_file.write_text("not a key")
    settings = WebhookSettings(tls_cert_file=certificates.cert_file,
                               tls_key_file=certificates.key_file)
    with pytest.raises(TLSError, match=str(certificates.key_file)):
        WebhookServer(settings)


@pytest.mark.parametrize(("text", "expected"), [
    ("0.0.0.0:8443", ("0.0.0.0", 8443)),
    ("[::]:9443", ("::", 9443)),
    (":8443", (None, 8443)),
])
def test_listen_addresses_are_parsed(text, expected):
    assert parse_listen(text) == expected


@pytest.mark.parametrize("text", ["8443", "host:", "host:http", "host:70000"])
def test_a_bad_listen_address_is_refused_with_an_example(text):
    with pytest.raises(ValueError, match=r"e\.g\. :8443 for every address, 0\.0\.0\.0:8443"):
        parse_listen(text)


def _port_free_on_both_families() -> int:
    with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        probe.bind(("::", 0))
        port: int = probe.getsockname()[1]
        return port


def _ipv6_loopback_available() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not _ipv6_loopback_available(), reason="no IPv6 loopback on this machine")
async def test_a_listen_address_without_host_answers_on_ipv4_and_ipv6(certificates):
    # The chart's default (":8443"): an IPv6-only or dual-stack pod network reaches it too.
    port = _port_free_on_both_families()
    webhook = WebhookServer(WebhookSettings(listen=f":{port}", tls_cert_file=certificates.cert_file,
                                            tls_key_file=certificates.key_file, shutdown_delay=0))
    await webhook.start()
    try:
        connector = aiohttp.TCPConnector(ssl=certificates.client_context())
        async with aiohttp.ClientSession(connector=connector,
                                         timeout=aiohttp.ClientTimeout(total=10)) as client:
            for host in ("[::1]", "127.0.0.1"):
                review = pods.admission_review(pods.vllm_server(), uid=f"via-{host}")
                async with client.post(f"https://{host}:{port}/mutate", json=review,
                                       server_hostname="localhost") as reply:
                    assert reply.status == 200
                    assert (await reply.json())["response"]["uid"] == f"via-{host}"
    finally:
        await webhook.stop()


# --- The real command: start-up errors and graceful shutdown -------------------------------------


async def _start_cli(certificates: Certificates, *extra: str, **env: str
                     ) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gpunuma", "webhook", "--listen", "127.0.0.1:0",
        "--tls-cert-file", str(certificates.cert_file),
        "--tls-key-file", str(certificates.key_file), *extra,
        cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO), **env},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )


async def test_after_sigterm_new_requests_are_answered_until_the_delay_then_in_flight_ones_finish(
    certificates,
):
    # Endpoints keep routing admissions to a terminating pod for a while: it must answer them.
    delay = 1.5
    process = await _start_cli(certificates, GPUNUMA_SHUTDOWN_DELAY=str(delay))
    try:
        assert process.stderr is not None
        port = 0
        for _ in range(50):
            line = (await asyncio.wait_for(process.stderr.readline(), 20)).decode()
            if "serving https://127.0.0.1:" in line:
                port = int(line.split("https://127.0.0.1:")[1].split()[0])
                break
        assert port, "the webhook did not report its address"
        body = json.dumps(pods.admission_review(pods.vllm_server(), uid="in-flight")).encode()
        reader, writer = await asyncio.wait_for(asyncio.open_connection(
            "127.0.0.1", port, ssl=certificates.client_context(), server_hostname="localhost"), 5)
        # A first request makes sure the server has taken the connection before the second one
        # starts on it.
        assert (await _raw_post(reader, writer, "/mutate", body))[0] == 200
        half = len(body) // 2
        writer.write(f"POST /mutate HTTP/1.1\r\nHost: webhook\r\nContent-Length: {len(body)}\r\n"
                     f"\r\n".encode() + body[:half])
        await writer.drain()
        await asyncio.sleep(0.3)  # the handler is now reading the body

        process.send_signal(signal.SIGTERM)
        signalled = asyncio.get_running_loop().time()
        await asyncio.sleep(0.3)
        # During the delay: not ready, yet a new connection still gets its admission answered.
        late_reader, late_writer = await asyncio.wait_for(asyncio.open_connection(
            "127.0.0.1", port, ssl=certificates.client_context(), server_hostname="localhost"), 5)
        late_writer.write(b"GET /readyz HTTP/1.1\r\nHost: webhook\r\n\r\n")
        await late_writer.drain()
        assert (await read_response(late_reader, within=10))[0] == 503
        late = json.dumps(pods.admission_review(pods.vllm_server(), uid="during-delay")).encode()
        status, reply = await _raw_post(late_reader, late_writer, "/mutate", late)
        assert status == 200
        assert json.loads(reply)["response"]["uid"] == "during-delay"
        assert asyncio.get_running_loop().time() - signalled < delay
        late_writer.close()
        # After it: no longer listening.
        for _ in range(100):
            try:
                _, probe = await asyncio.open_connection("127.0.0.1", port)
            except ConnectionRefusedError:
                break
            probe.close()
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("still listening long after the shutdown delay")
        assert asyncio.get_running_loop().time() - signalled >= delay
        writer.write(body[half:])
        await writer.drain()
        status, reply = await read_response(reader, within=10)
        assert status == 200
        assert json.loads(reply)["response"]["uid"] == "in-flight"
        assert await asyncio.wait_for(process.wait(), 15) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_the_command_reports_a_missing_certificate_and_exits_1(certificates):
    certificates.cert_file.unlink()
    process = await _start_cli(certificates)
    _, stderr = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 1
    assert str(certificates.cert_file) in stderr.decode()


async def test_the_command_reports_a_bad_listen_address_and_exits_2(certificates):
    process = await _start_cli(certificates, "--listen", "everywhere")
    _, stderr = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 2
    assert "--listen 'everywhere' is not HOST:PORT" in stderr.decode()


async def test_a_bad_default_policy_from_the_environment_is_reported_and_exits_2(certificates):
    process = await _start_cli(certificates, GPUNUMA_DEFAULT_POLICY="fastest")
    _, stderr = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 2
    assert ("GPUNUMA_DEFAULT_POLICY='fastest' is not a valid --default-policy; "
            "choose from preferred, strict, cpu-only") in stderr.decode()
