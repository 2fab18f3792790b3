"""What one client can cost the webhook (issue #16, items 2 and 7), against the real TLS server.

Each test is a finding of the adversarial review and failed before its fix: warnings and denial
text grew with the pod; the answer memory held ~7x its bound; idle and slow connections stayed
open for an hour, without a cap; a large review blocked the event loop; a body that lied about its
Content-Encoding got HTTP 500 with a traceback; malformed HTTP logged a traceback per request; a
megabyte apiVersion was echoed whole; TLS 1.2 offered CBC suites.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
import threading
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest

from gpunuma import names
from gpunuma.settings import MutationSettings
from gpunuma.webhook import guard, mutation
from gpunuma.webhook import server as server_module
from gpunuma.webhook.review import MAX_DENIAL_CHARS, MAX_WARNINGS, Memory, admit
from gpunuma.webhook.server import WebhookServer
from tests.webhook import pods
from tests.webhook.tls import Certificates, read_response, serving

SETTINGS = MutationSettings(launcher_image="registry.example/gpunuma:1.2.3")


@pytest.fixture
async def server(certificates: Certificates, monkeypatch: pytest.MonkeyPatch
                 ) -> AsyncIterator[WebhookServer]:
    monkeypatch.setattr(server_module, "HEADER_TIMEOUT_S", 0.5)
    monkeypatch.setattr(server_module, "BODY_TIMEOUT_S", 0.5)
    async for webhook in serving(certificates, reload_interval=3600):
        yield webhook


async def _connect(server: WebhookServer, certificates: Certificates
                   ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.wait_for(asyncio.open_connection(
        "127.0.0.1", server.port, ssl=certificates.client_context(),
        server_hostname="localhost"), 5)


def _request(body: bytes, *headers: str) -> bytes:
    head = "".join(f"{h}\r\n" for h in headers)
    return (f"POST /mutate HTTP/1.1\r\nHost: webhook\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n{head}\r\n").encode() + body


def _review_bytes(pod: dict[str, Any], uid: str = "uid-1") -> bytes:
    return orjson.dumps(pods.admission_review(pod, uid=uid))


# --- (a) warnings and denials --------------------------------------------------------------------


@pytest.mark.parametrize("count", [2_000, 200_000], ids=["under-16KiB", "1.5MB"])
def test_unknown_names_in_the_containers_annotation_give_a_bounded_answer(count: int) -> None:
    pod = pods.vllm_server()
    names_list = ",".join(f"c{i}" for i in range(count))
    if count < 10_000:
        names_list = ",".join(f"c{i % 2_000}" for i in range(count))[:16_000]
    pod["metadata"]["annotations"][names.ANNOTATION_CONTAINERS] = names_list
    answer = admit(_review_bytes(pod), SETTINGS, namespace_opted_in=False)
    warnings = answer.response["response"].get("warnings", [])
    assert 1 <= len(warnings) <= MAX_WARNINGS
    assert len(orjson.dumps(answer.response)) < 8 * 1024
    assert any(names.ANNOTATION_CONTAINERS in w for w in warnings)


def test_many_warnings_are_deduplicated_and_capped_with_a_count() -> None:
    pod = pods.vllm_server()
    template = pod["spec"]["containers"][0]
    pod["spec"]["containers"] = [
        {**template, "name": f"c{i}", "env": [{"name": "GPUNUMA_POLICY", "value": "x"}]}
        for i in range(200)
    ]
    answer = admit(_review_bytes(pod), SETTINGS, namespace_opted_in=False)
    warnings = answer.response["response"]["warnings"]
    assert len(warnings) == MAX_WARNINGS
    assert len(set(warnings)) == len(warnings)
    assert "more warnings" in warnings[-1]


def test_a_strict_denial_of_thousands_of_containers_stays_short() -> None:
    pod = pods.vllm_server()
    template = {k: v for k, v in pod["spec"]["containers"][0].items() if k != "command"}
    pod["spec"]["containers"] = [{**template, "name": f"worker-{i}" + "x" * 50}
                                 for i in range(250)]
    pod["metadata"]["annotations"][names.ANNOTATION_POLICY] = "strict"
    response = admit(_review_bytes(pod), SETTINGS, namespace_opted_in=False).response["response"]
    assert response["allowed"] is False
    message = response["status"]["message"]
    assert len(message) <= MAX_DENIAL_CHARS
    assert "'worker-0" in message
    assert "and 245 more" in message


@pytest.mark.parametrize("policy", ["preferred", "strict"])
def test_a_pod_of_thousands_of_containers_is_not_mutated(policy: str) -> None:
    """Bounded CPU per review: such a pod is not worked through container by container."""
    pod = pods.vllm_server()
    template = pod["spec"]["containers"][0]
    pod["spec"]["containers"] = [{**template, "name": f"c{i}"} for i in range(10_000)]
    pod["metadata"]["annotations"][names.ANNOTATION_POLICY] = policy
    response = admit(_review_bytes(pod), SETTINGS, namespace_opted_in=False).response["response"]
    assert "patch" not in response
    if policy == "strict":
        assert response["allowed"] is False
        assert "10000 containers" in response["status"]["message"]
    else:
        assert response["allowed"] is True
        assert response["warnings"] == [
            "gpunuma: pod not bound: the pod has 10000 containers, more than the 256 gpunuma binds"]


# --- (d) the answer memory, in bytes ---------------------------------------------------------------


def test_the_answer_memory_counts_its_patches_and_stays_under_its_bound() -> None:
    memory = Memory(max_bytes=2 * 1024 * 1024)
    template = pods.vllm_server()
    for i in range(200):
        pod = pods.vllm_server()
        container = template["spec"]["containers"][0]
        pod["spec"]["containers"] = [{**container, "name": f"c{i}-{j}"} for j in range(60)]
        body = _review_bytes(pod, uid=f"u{i}")
        assert len(body) <= memory.max_body_bytes
        admit(body, SETTINGS, namespace_opted_in=False, memory=memory)
    held = sum(len(key[1]) + len(entry[0].members)
               for key, entry in memory._answers.items())
    assert 0 < held <= memory.max_bytes
    assert memory.bytes >= held


# --- (b) connections and time ----------------------------------------------------------------------


async def test_a_connection_that_sends_no_complete_request_is_closed(
    server: WebhookServer, certificates: Certificates,
) -> None:
    reader, writer = await _connect(server, certificates)
    writer.write(b"POST /mutate HTTP/1.1\r\nHost: webhook\r\n")  # and nothing more
    await writer.drain()
    assert await asyncio.wait_for(reader.read(), 5) == b""
    writer.close()


async def test_a_body_that_does_not_arrive_gets_408_and_the_connection_closes(
    server: WebhookServer, certificates: Certificates,
) -> None:
    reader, writer = await _connect(server, certificates)
    writer.write(b"POST /mutate HTTP/1.1\r\nHost: webhook\r\nContent-Length: 1000\r\n\r\n{")
    await writer.drain()
    status, body = await read_response(reader)
    assert status == 408
    assert b"did not arrive" in body
    assert await asyncio.wait_for(reader.read(), 5) == b""
    writer.close()


async def test_at_the_connection_cap_an_idle_connection_makes_room(
    manual_server: WebhookServer, certificates: Certificates,
) -> None:
    server = manual_server
    assert server.site is not None
    server.site.max_connections = 4
    idle = [await _connect(server, certificates) for _ in range(4)]
    for _ in range(250):  # the server side of each handshake may finish after the client's
        if len(server.site._runner.server.connections) == 4:  # type: ignore[union-attr]
            break
        await asyncio.sleep(0.02)
    reader, writer = await _connect(server, certificates)
    writer.write(_request(_review_bytes(pods.amd_pod())))
    await writer.drain()
    status, _ = await read_response(reader)
    assert status == 200
    assert server.site.evicted >= 1
    assert await asyncio.wait_for(idle[0][0].read(), 5) == b""
    for _, w in (*idle, (reader, writer)):
        w.close()


async def test_too_many_large_bodies_at_once_get_503(
    server: WebhookServer, certificates: Certificates,
) -> None:
    server.budget.limit = 100 * 1024
    pod = pods.vllm_server()
    pod["metadata"]["annotations"]["padding"] = "x" * 200_000
    reader, writer = await _connect(server, certificates)
    writer.write(_request(_review_bytes(pod)))
    await writer.drain()
    status, body = await read_response(reader)
    assert status == 503
    assert b"too many large requests" in body
    assert server.budget.used == 0
    writer.close()


# --- (c) CPU: large reviews off the event loop -------------------------------------------------------


async def test_a_small_review_is_answered_while_a_large_one_is_being_decided(
    server: WebhookServer, certificates: Certificates, monkeypatch: pytest.MonkeyPatch,
) -> None:
    release, large_done = threading.Event(), threading.Event()
    real_mutate = mutation.mutate

    def slow_for_large_pods(pod: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        if "padding" in pod["metadata"]["annotations"]:
            release.wait(5)  # stands for the CPU a 10,000-container pod takes
            large_done.set()
        return real_mutate(pod, *args, **kwargs)

    from gpunuma.webhook import review
    monkeypatch.setattr(review, "mutate", slow_for_large_pods)
    large = pods.vllm_server()
    large["metadata"]["annotations"]["padding"] = "x" * 200_000
    big_reader, big_writer = await _connect(server, certificates)
    big_writer.write(_request(_review_bytes(large)))
    await big_writer.drain()
    await asyncio.sleep(0.2)
    reader, writer = await _connect(server, certificates)
    writer.write(_request(_review_bytes(pods.amd_pod())))
    await writer.drain()
    try:
        status, _ = await read_response(reader, within=10)
        assert status == 200
        # On the event loop, the large review would have had to finish first (the test's client
        # shares the loop, so only the order can tell).
        assert not large_done.is_set()
    finally:
        release.set()
    status, _ = await read_response(big_reader)
    assert status == 200
    for w in (writer, big_writer):
        w.close()


# --- Hygiene (item 7) ------------------------------------------------------------------------------


async def test_a_body_that_is_not_what_its_content_encoding_says_gets_400(
    server: WebhookServer, certificates: Certificates,
) -> None:
    reader, writer = await _connect(server, certificates)
    writer.write(_request(_review_bytes(pods.amd_pod()), "Content-Encoding: gzip"))
    await writer.drain()
    status, body = await read_response(reader)
    assert status == 400
    assert "Content-Encoding" in json.loads(body)["reason"]
    writer.close()


async def test_malformed_http_is_one_log_line_without_a_traceback(
    server: WebhookServer, certificates: Certificates, caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.DEBUG):
        for _ in range(3):
            reader, writer = await _connect(server, certificates)
            # A request, then a broken one on the same connection (aiohttp logs a broken first
            # request at debug level already: it takes it for TLS or non-HTTP traffic).
            writer.write(_request(b"{}"))
            await writer.drain()
            assert (await read_response(reader))[0] == 400
            writer.write(b"POST /mutate HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n")
            await writer.drain()
            assert (await read_response(reader))[0] == 400
            writer.close()
    assert not [r for r in caplog.records if r.exc_info], "a traceback was logged"
    assert len([r for r in caplog.records if "malformed HTTP" in r.getMessage()]) == 3


async def test_a_huge_api_version_is_not_echoed_whole(
    server: WebhookServer, certificates: Certificates, caplog: pytest.LogCaptureFixture,
) -> None:
    review = pods.admission_review(pods.amd_pod())
    review["apiVersion"] = "\x1b[31m" + "v" * 1_000_000
    reader, writer = await _connect(server, certificates)
    with caplog.at_level(logging.INFO):
        writer.write(_request(orjson.dumps(review)))
        await writer.drain()
        status, body = await read_response(reader)
    assert status == 400
    reason = json.loads(body)["reason"]
    assert len(reason) < 400
    assert "\x1b" not in reason
    assert "characters)" in reason
    assert max(len(r.getMessage()) for r in caplog.records) < 1000
    writer.close()


@pytest.mark.parametrize("ciphers", [
    "ECDHE-ECDSA-AES128-SHA:ECDHE-RSA-AES128-SHA:ECDHE-ECDSA-AES256-SHA384:ECDHE-RSA-AES256-SHA384",
    "AES128-GCM-SHA256:AES256-GCM-SHA384",  # AEAD but no forward secrecy
], ids=["cbc", "static-rsa"])
async def test_tls_1_2_offers_only_forward_secret_aead_suites(
    server: WebhookServer, certificates: Certificates, ciphers: str,
) -> None:
    context = certificates.client_context()
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(ciphers)
    with pytest.raises((ssl.SSLError, ConnectionResetError)):
        await asyncio.wait_for(asyncio.open_connection(
            "127.0.0.1", server.port, ssl=context, server_hostname="localhost"), 5)
    context = certificates.client_context()
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    _, writer = await asyncio.wait_for(asyncio.open_connection(
        "127.0.0.1", server.port, ssl=context, server_hostname="localhost"), 5)
    assert "GCM" in writer.get_extra_info("cipher")[0] or "CHACHA" in writer.get_extra_info(
        "cipher")[0]
    writer.close()


def test_guard_constants_fit_the_chart() -> None:
    """Eviction and bounded bodies keep the worst case under the chart's 256 Mi limit: 256
    connections at ~280 KB and 16 MiB of large bodies (see benchmarks/webhook_attacks.py)."""
    assert guard.MAX_CONNECTIONS * 280 * 1024 + guard.LARGE_BODIES_BYTES < 128 * 1024 * 1024


async def test_at_the_cap_a_connection_that_sent_requests_outlives_idle_ones(
    manual_server: WebhookServer, certificates: Certificates,
) -> None:
    """The API server's keep-alive connections are not what an attacker's idle ones evict."""
    server = manual_server
    assert server.site is not None
    server.site.max_connections = 3
    reader, writer = await _connect(server, certificates)
    writer.write(_request(_review_bytes(pods.amd_pod(), uid="first")))
    await writer.drain()
    assert (await read_response(reader))[0] == 200
    held = []
    for _ in range(4):  # idle connections arriving after it, each evicting an idle one
        held.append(await _connect(server, certificates))
        await asyncio.sleep(0.2)  # the server side of the handshake finishes after the client's
    writer.write(_request(_review_bytes(pods.amd_pod(), uid="second")))
    await writer.drain()
    assert (await read_response(reader))[0] == 200
    assert server.site.evicted >= 2
    for _, other in (*held, (reader, writer)):
        other.close()
