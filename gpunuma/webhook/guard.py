"""What one client may cost the webhook: connections, time, bytes in flight, log lines.

The webhook answers the API server, but its port is reachable from the pod network, and a client
there must not be able to take it down (issue #16). Each bound here has a reason:

- **connections**: at most ``MAX_CONNECTIONS`` (each costs ~280 KB: TLS and parser buffers). At the
  cap a new connection evicts the oldest one that is not inside a request (an idle keep-alive or
  one still dribbling its headers); only when every connection is inside a request is it refused;
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
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestHandler

__all__ = [
    "BODY_TIMEOUT_S",
    "HANDSHAKE_TIMEOUT_S",
    "HEADER_TIMEOUT_S",
    "LARGE_BODIES_BYTES",
    "MAX_CONNECTIONS",
    "SMALL_BODY_BYTES",
    "BodyBudget",
    "GuardedSite",
    "QuietServerLog",
    "short",
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
# Quoted user values in answers and logs are cut to this many characters.
QUOTE_CHARS = 64

log = logging.getLogger("gpunuma.webhook")


def short(value: object, limit: int = QUOTE_CHARS) -> str:
    """``repr`` of a value from a client, cut to ``limit`` characters (control characters are
    escaped by ``repr``): an answer or a log line must not echo megabytes."""
    if isinstance(value, str) and len(value) > limit:
        return f"{value[:limit]!r}… ({len(value)} characters)"
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text)} characters)"


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


class _Refused(asyncio.Protocol):
    """A connection over the cap: closed as soon as it is made."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.close()


class GuardedSite(web.BaseSite):
    """A TLS TCP site whose connections are capped, with a handshake timeout.

    ``busy`` is the set of connections (aiohttp protocols) inside a request handler; the server's
    handler keeps it, so that eviction never cuts a request off.
    """

    def __init__(self, runner: web.BaseRunner, host: str | None, port: int, *,
                 ssl_context: ssl.SSLContext, busy: set[Any],
                 max_connections: int = MAX_CONNECTIONS) -> None:
        super().__init__(runner, ssl_context=ssl_context, backlog=512)
        self._host, self._port = host, port
        self._busy = busy
        self.max_connections = max_connections
        self.evicted = 0
        self.refused = 0

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
        connections: list[RequestHandler] = server.connections
        if len(connections) >= self.max_connections:
            idle = next((c for c in connections if c not in self._busy), None)
            if idle is None:
                self.refused += 1
                return _Refused()
            self.evicted += 1
            idle.force_close()
            # connection_lost removes it from the list later; take it out of the count now, so
            # that a burst does not evict more than it replaces.
            connections.remove(idle)
        return server()


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
