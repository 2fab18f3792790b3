"""The real webhook server on loopback TLS for tests: a throwaway CA's certificates and a server
started on them (the fixtures are in this folder's conftest.py)."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import trustme

from gpunuma.settings import MutationSettings, WebhookSettings
from gpunuma.webhook.server import WebhookServer


@dataclass
class Certificates:
    ca: trustme.CA
    cert_file: Path
    key_file: Path

    def issue(self, ca: trustme.CA | None = None) -> bytes:
        """Write a fresh leaf certificate and key; returns the certificate's PEM."""
        leaf = (ca or self.ca).issue_cert("127.0.0.1", "localhost",
                                          "gpunuma-webhook.gpunuma.svc")
        self.cert_file.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
        self.key_file.write_bytes(leaf.private_key_pem.bytes())
        return leaf.cert_chain_pems[0].bytes()

    def client_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context()
        self.ca.configure_trust(context)
        return context


async def serving(certificates: Certificates, reload_interval: float
                  ) -> AsyncIterator[WebhookServer]:
    settings = WebhookSettings(
        listen="127.0.0.1:0", tls_cert_file=certificates.cert_file,
        tls_key_file=certificates.key_file, shutdown_delay=0,
        mutation=MutationSettings(launcher_image="registry.example/gpunuma:1.2.3"),
    )
    webhook = WebhookServer(settings, reload_interval=reload_interval)
    await webhook.start()
    yield webhook
    await webhook.stop()


async def read_response(reader: asyncio.StreamReader, within: float = 5) -> tuple[int, bytes]:
    """The status and body of one HTTP/1.1 response, each read within ``within`` seconds."""
    status = int((await asyncio.wait_for(reader.readline(), within)).split()[1])
    length = 0
    while (line := await asyncio.wait_for(reader.readline(), within)) not in (b"\r\n", b""):
        key, _, value = line.decode().partition(":")
        if key.lower() == "content-length":
            length = int(value)
    return status, await asyncio.wait_for(reader.readexactly(length), within)
