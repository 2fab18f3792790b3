"""Fixtures shared by the tests that talk to the real webhook server over TLS."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trustme

from gpunuma.webhook.server import WebhookServer
from tests.webhook.tls import Certificates, serving


@pytest.fixture
def certificates(tmp_path: Path) -> Certificates:
    certs = Certificates(trustme.CA(), tmp_path / "tls.crt", tmp_path / "tls.key")
    certs.issue()
    return certs


@pytest.fixture
async def manual_server(certificates: Certificates) -> AsyncIterator[WebhookServer]:
    """A server with its real timeouts whose certificate is reloaded only when the test says so
    (idle connections stay until evicted)."""
    async for webhook in serving(certificates, reload_interval=3600):
        yield webhook
