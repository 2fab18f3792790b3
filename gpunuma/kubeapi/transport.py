"""How a request reaches the API server: the interface, and the standard library's transport.

:class:`~gpunuma.kubeapi.client.KubeClient` builds each request (path, headers, JSON body) and reads
each answer the same way whatever carries it; a transport only moves bytes. Two carry them:

- aiohttp (:mod:`gpunuma.kubeapi.aiohttp_transport`), the default: pooled connections and
  asynchronous I/O for the agent and the operator, which run for days and already import it;
- :class:`StdlibTransport` here: ``http.client`` in a worker thread, one connection per request,
  for ``kubectl gpunuma``, which makes a few requests and exits. Importing aiohttp alone took
  0.15 s of the plugin's start (its connector loads the system's CA bundle at import); this
  imports nothing outside the standard library.

Both are held to the same tests (tests/test_kubeapi.py runs its TLS cases over each).
"""

from __future__ import annotations

import asyncio
import http.client
import socket
import ssl
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import urlsplit

from gpunuma.kubeapi.connection import Connection

__all__ = ["Answer", "NoAnswer", "StdlibTransport", "Transport"]


@dataclass(frozen=True)
class Answer:
    status: int
    text: str
    warnings: tuple[str, ...] = ()  # the Warning headers, as the API server sends them


class NoAnswer(Exception):
    """No HTTP answer came back: refused, reset, timed out, TLS failed, or a proxy failed."""


class Transport(Protocol):
    async def exchange(
        self, connection: Connection, method: str, path: str, headers: list[tuple[str, str]],
        body: bytes | None,
    ) -> Answer: ...

    async def close(self) -> None: ...


class StdlibTransport:
    """``http.client`` in a thread: no import cost beyond the standard library.

    ``timeout_s`` bounds each blocking step (connect, send, each read), as sockets time out.
    """

    def __init__(self, timeout_s: float = 30.0) -> None:
        self.timeout_s = timeout_s

    async def exchange(
        self, connection: Connection, method: str, path: str, headers: list[tuple[str, str]],
        body: bytes | None,
    ) -> Answer:
        return await asyncio.to_thread(self._exchange, connection, method, path, headers, body)

    async def close(self) -> None:
        pass  # nothing is kept between requests

    def _exchange(
        self, connection: Connection, method: str, path: str, headers: list[tuple[str, str]],
        body: bytes | None,
    ) -> Answer:
        url = urlsplit(connection.server)
        https = url.scheme == "https"
        port = url.port or (443 if https else 80)
        host = url.hostname or ""
        target = path  # the request line: a path, or the whole URL through a plain-HTTP proxy
        if connection.proxy:
            proxy = urlsplit(connection.proxy)
            if proxy.scheme != "http":
                raise NoAnswer(f"proxy {connection.proxy}: only http:// proxies are supported")
            address = (proxy.hostname or "", proxy.port or 80)
            if not https:
                target = connection.server.rstrip("/") + path
        else:
            address = (host, port)
        if https:
            context = connection.ssl_context or ssl.create_default_context()
            conn: http.client.HTTPConnection = _TLSConnection(
                *address, context=context, server_hostname=connection.server_hostname or host,
                timeout=self.timeout_s)
            if connection.proxy:
                conn.set_tunnel(host, port)
        else:
            conn = http.client.HTTPConnection(*address, timeout=self.timeout_s)
        try:
            conn.putrequest(method, target, skip_accept_encoding=True)
            for name, value in headers:
                conn.putheader(name, value)
            if body is not None:
                conn.putheader("Content-Length", str(len(body)))
            conn.endheaders(body)
            response = conn.getresponse()
            raw = response.read()
            charset = response.headers.get_content_charset() or "utf-8"
            return Answer(response.status, raw.decode(charset, errors="replace"),
                          tuple(response.headers.get_all("Warning") or ()))
        except (OSError, http.client.HTTPException) as error:  # ssl and socket errors are OSErrors
            raise NoAnswer(f"{type(error).__name__}: {error}") from error
        finally:
            conn.close()


class _TLSConnection(http.client.HTTPConnection):
    """HTTPS with the certificate verified for ``server_hostname``, which a kubeconfig may set
    apart from the URL's host (``tls-server-name``); the stdlib's HTTPSConnection always uses the
    URL's host."""

    default_port = 443

    def __init__(self, host: str, port: int, *, context: ssl.SSLContext, server_hostname: str,
                 timeout: float) -> None:
        super().__init__(host, port, timeout=timeout)
        self._tls, self._server_hostname = context, server_hostname

    def connect(self) -> None:
        super().connect()  # TCP, and through a proxy the CONNECT tunnel
        self.sock: socket.socket = self._tls.wrap_socket(self.sock,
                                                         server_hostname=self._server_hostname)
