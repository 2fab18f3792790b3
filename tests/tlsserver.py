"""An aiohttp app served over real TLS on loopback, asking for (not requiring) a client
certificate: the API server stand-in of the client's tests (kmock speaks plain HTTP)."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trustme
from aiohttp import web


@asynccontextmanager
async def serving(app: web.Application, authority: trustme.CA, name: str) -> AsyncIterator[int]:
    """Serve ``app`` on 127.0.0.1 with a certificate for ``name`` from ``authority``; yields the port."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert(name).configure_cert(context)
    authority.configure_trust(context)
    context.verify_mode = ssl.CERT_OPTIONAL
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    try:
        yield site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    finally:
        await runner.cleanup()


def client_name(request: web.Request) -> str | None:
    """The common name of the client certificate the request came with, if any."""
    peer = request.transport.get_extra_info("peercert") if request.transport else None
    subject = dict(pair for rdn in peer["subject"] for pair in rdn) if peer else {}
    return subject.get("commonName")
