"""What one client may cost the webhook: connections, time, bytes in flight, log lines.

The webhook answers the API server, but its port is reachable from the pod network, and a client
there must not be able to take it down (issue #16). Each bound here has a reason:

- **connections**: at most ``MAX_CONNECTIONS``, TLS handshakes in progress included (each costs
  ~300 KB: TLS and parser buffers). At the cap a new connection evicts one that is set up and
  not inside a request — first one that never carried a request, else the one idle longest if
  for over ``SERVED_IDLE_S``; when there is none, the new one is closed before its handshake;
- **time**: a TLS handshake gets ``HANDSHAKE_TIMEOUT_S``; from its start, or from the end of its
  last response, a connection has ``HEADER_TIMEOUT_S`` to deliver a request's headers (idle
  keep-alives are closed by the same timer); a body gets ``BODY_TIMEOUT_S`` to arrive whole;
- **bytes**: bodies over ``SMALL_BODY_BYTES`` draw on a budget of ``LARGE_BODIES_BYTES`` while
  they are read and handled, so that many large bodies at once get HTTP 503 instead of memory;
- **log lines**: malformed HTTP is one warning line, not a traceback per request.

Large bodies are also handled off the event loop, one at a time (see ``server.py``).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
import weakref
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestHandler

from gpunuma.quote import short

__all__ = [
    "BODY_TIMEOUT_S",
    "HANDSHAKE_TIMEOUT_S",
    "HEADER_TIMEOUT_S",
    "LARGE_BODIES_BYTES",
    "MAX_CONNECTIONS",
    "SMALL_BODY_BYTES",
    "BodyBudget",
    "Connection",
    "GuardedSite",
    "QuietServerLog",
]

MAX_CONNECTIONS = 256
HANDSHAKE_TIMEOUT_S = 5.0
# The API server sends a request as soon as it has a connection; 10 s is far beyond that and far
# below the many minutes a slow client could otherwise hold a connection.
HEADER_TIMEOUT_S = 10.0
BODY_TIMEOUT_S = 10.0
# A pod of a few dozen containers is well under this; bigger ones are handled off the event loop.
SMALL_BODY_BYTES = 64 * 1024
LARGE_BODIES_BYTES = 16 * 1024 * 1024
# At the connection cap, a connection that has carried requests is evicted only after this long
# without one.
SERVED_IDLE_S = 1.0

log = logging.getLogger("gpunuma.webhook")



class BodyBudget:
    """Bytes of large request bodies in flight, at most ``limit`` at once."""

    def __init__(self, limit: int = LARGE_BODIES_BYTES) -> None:
        self.limit = limit
        self.used = 0

    def take(self, size: int) -> bool:
        if self.used + size > self.limit:
            return False
        self.used += size
        return True

    def give(self, size: int) -> None:
        self.used -= size


class Connection(RequestHandler):
    """aiohttp's protocol for one connection, with what the connection cap needs to know of it.

    The server's request handler keeps ``busy`` and ``served_at``: attributes of the connection
    itself, where a set and a weak dictionary beside it cost a hash and a weak reference per
    request. Weakly referenceable too (aiohttp's own __slots__ leave that out).
    """

    __slots__ = ("__weakref__", "busy", "served_at")

    busy: bool
    """Inside a request handler: never evicted."""
    served_at: float | None
    """When its last request ended (``time.monotonic``); None while it has carried none."""


def _abort(transport: asyncio.BaseTransport) -> None:
    if isinstance(transport, asyncio.Transport):
        transport.abort()
    else:
        transport.close()


class GuardedSite(web.BaseSite):
    """A TLS TCP site whose connections are capped, with a handshake timeout.

    Its connections are ``Connection`` objects, whose ``busy`` and ``served_at`` the server's
    handler keeps, so that eviction never cuts a request off.
    """

    def __init__(self, runner: web.BaseRunner, host: str | None, port: int, *,
                 ssl_context: ssl.SSLContext, max_connections: int = MAX_CONNECTIONS) -> None:
        super().__init__(runner, ssl_context=ssl_context, backlog=512)
        self._host, self._port = host, port
        self.max_connections = max_connections
        self.evicted = 0
        self.refused = 0
        # Every protocol handed out whose connection still exists: asyncio drops its reference
        # when the connection ends, TLS handshakes that fail included (those never reach
        # connection_made or connection_lost, so only the reference count can tell).
        self._live: weakref.WeakSet[Connection] = weakref.WeakSet()

    @property
    def name(self) -> str:
        return f"https://{self._host or '*'}:{self._port}"

    async def start(self) -> None:
        await super().start()
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            self._protocol, self._host, self._port, ssl=self._ssl_context,
            backlog=self._backlog, reuse_address=True,
            ssl_handshake_timeout=HANDSHAKE_TIMEOUT_S,
        )

    def _protocol(self) -> asyncio.BaseProtocol:
        server = self._runner.server
        assert server is not None
        if len(self._live) >= self.max_connections:
            # An idle connection that never carried a request goes first (an attacker holding
            # connections open), then the one idle longest, if for over a second. A client that
            # keeps sending requests, like the API server, keeps its keep-alive connections.
            idle_ones = [c for c in server.connections if isinstance(c, Connection)
                         and not c.busy and c.transport is not None]
            idle = next((c for c in idle_ones if c.served_at is None), None)
            if idle is None and idle_ones:
                oldest = min(idle_ones, key=lambda c: c.served_at or 0.0)
                if (oldest.served_at or 0.0) < time.monotonic() - SERVED_IDLE_S:
                    idle = oldest
            if idle is None:
                self.refused += 1
                # Raised here, asyncio closes the accepted socket before any TLS handshake (and
                # reports it only in debug mode): a refused client costs an accept, nothing more.
                raise ConnectionRefusedError("the webhook is at its connection cap")
            self.evicted += 1
            # abort, not close: a TLS close waits (up to 30 s) for the peer's close_notify with
            # the connection's buffers held, and a client that reconnects at once would pile up
            # such half-closed connections faster than they go.
            assert idle.transport is not None
            _abort(idle.transport)
            idle.force_close()
            self._live.discard(idle)
        protocol = Connection(server, loop=asyncio.get_running_loop(),
                              **server._kwargs)  # what web.Server() does, with our attributes
        protocol.busy, protocol.served_at = False, None
        self._live.add(protocol)
        return protocol


class QuietServerLog(logging.LoggerAdapter):  # type: ignore[type-arg]
    """aiohttp's server logger, minus a traceback for every malformed request.

    aiohttp logs a bad request line or header (HTTP 400, which it answers itself) with
    ``logger.exception``; a client sending garbage in a loop would fill the log with tracebacks.
    Those become one warning line, the client's bytes cut short; real errors keep their traceback.
    """

    def __init__(self) -> None:
        super().__init__(logging.getLogger("aiohttp.server"), {})

    def exception(self, msg: object, *args: object, exc_info: Any = True,
                  **kwargs: Any) -> None:
        if isinstance(exc_info, HttpProcessingError):
            remote = args[0] if args else "?"
            log.warning("malformed HTTP request from %s: %s", remote,
                        short(str(exc_info.message or exc_info), 200))
            return
        self.logger.exception(msg, *args, exc_info=exc_info, **kwargs)
