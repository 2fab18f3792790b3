"""The webhook serves the certificates the operator issues, and follows the operator's rotations.

The operator writes a ``kubernetes.io/tls`` Secret (``tls.crt``, ``tls.key``, ``ca.crt``) that the
webhook Deployment mounts; the API server trusts ``ca.crt`` through the caBundle. Here the Secret's
files are written as the kubelet would, and the client trusts only the bundle and checks the
Service's DNS name, as the API server does.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
import ssl
from pathlib import Path

from cryptography.hazmat.primitives import serialization

from gpunuma.operator.certificates import (
    Pki,
    pki_to_secrets,
    plan,
    service_dns_names,
)
from gpunuma.settings import CertificateSettings, WebhookSettings
from gpunuma.webhook.server import WebhookServer
from tests.webhook import pods

SERVICE_NAME = "gpunuma-webhook.gpunuma.svc"
NAMES = service_dns_names("gpunuma-webhook", "gpunuma")


def _mount(pki: Pki, directory: Path) -> ssl.SSLContext:
    """Write the serving Secret's files; a client context that trusts its ca.crt only."""
    serving, _ = pki_to_secrets(pki)
    files = {key: base64.b64decode(value) for key, value in serving.items()}
    (directory / "tls.crt").write_bytes(files["tls.crt"])
    (directory / "tls.key").write_bytes(files["tls.key"])
    return ssl.create_default_context(cadata=files["ca.crt"].decode())


async def _admit(port: int, context: ssl.SSLContext) -> dict[str, object]:
    body = json.dumps(pods.admission_review(pods.vllm_server())).encode()
    reader, writer = await asyncio.wait_for(asyncio.open_connection(
        "127.0.0.1", port, ssl=context, server_hostname=SERVICE_NAME), 5)
    try:
        writer.write(b"POST /mutate HTTP/1.1\r\nHost: gpunuma-webhook\r\nConnection: close\r\n"
                     b"Content-Length: %d\r\n\r\n" % len(body) + body)
        reply = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
    head, _, payload = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    response: dict[str, object] = json.loads(payload)["response"]
    return response


async def test_the_operators_certificate_is_served_and_its_ca_rotation_followed(tmp_path):
    now = dt.datetime.now(dt.UTC)
    policy = CertificateSettings(leaf_validity_days=3650)
    # Issued long ago: still valid, but the CA is now due for its rotation.
    created = plan(None, now - (policy.ca_validity - policy.ca_renew_before), NAMES, policy)
    assert created is not None
    pki, _ = created
    first_client = _mount(pki, tmp_path)
    server = WebhookServer(WebhookSettings(listen="127.0.0.1:0", tls_cert_file=tmp_path / "tls.crt",
                                           tls_key_file=tmp_path / "tls.key", shutdown_delay=0),
                           reload_interval=3600)
    await server.start()
    try:
        assert "patch" in await _admit(server.port, first_client)

        # The operator issues a new CA and leaf, and keeps the old CA in the bundle.
        rotated = plan(pki, now, NAMES, policy)
        assert rotated is not None
        new_pki, reason = rotated
        assert reason == "CARotated"
        _mount(new_pki, tmp_path)
        assert server.reload_certificate() is True
        # Trusting the new CA alone: only the new leaf passes.
        new_ca_only = ssl.create_default_context(
            cadata=new_pki.ca_cert.public_bytes(serialization.Encoding.PEM).decode())
        assert "patch" in await _admit(server.port, new_ca_only)
    finally:
        await server.stop()
