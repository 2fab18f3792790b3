"""An HTTP CONNECT proxy in the test process: the API server reaches Services through it
(tests/cluster), and clients reach an API server through a kubeconfig's proxy-url (tests)."""

from __future__ import annotations

import select
import socket
import socketserver
import threading


class ServiceProxy:
    """An HTTP CONNECT proxy on 127.0.0.1 that forwards ``host:port`` to a local port.

    Routes are added by the tests (:meth:`route`); a CONNECT to anything else is answered 502, which
    the API server sees as an unreachable webhook (as when no endpoint is ready).
    """

    def __init__(self) -> None:
        self.routes: dict[str, int] = {}
        self.connections = 0
        proxy = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                proxy._handle(self.request)

        class Server(socketserver.ThreadingTCPServer):
            daemon_threads = True
            allow_reuse_address = True

        self._server = Server(("127.0.0.1", 0), Handler)
        self.port: int = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def route(self, target: str, local_port: int | None) -> None:
        """Send CONNECTs for ``target`` (``host:port``) to 127.0.0.1:``local_port``; None: refuse."""
        if local_port is None:
            self.routes.pop(target, None)
        else:
            self.routes[target] = local_port

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _handle(self, client: socket.socket) -> None:
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = client.recv(4096)
            if not chunk:
                return
            head += chunk
        request_line = head.split(b"\r\n", 1)[0].decode("latin-1").split()
        if len(request_line) < 2 or request_line[0] != "CONNECT":
            client.sendall(b"HTTP/1.1 405 Method Not Allowed\r\n\r\n")
            return
        local_port = self.routes.get(request_line[1])
        if local_port is None:
            client.sendall(b"HTTP/1.1 502 Bad Gateway\r\n\r\n")
            return
        try:
            upstream = socket.create_connection(("127.0.0.1", local_port), timeout=5)
        except OSError:
            client.sendall(b"HTTP/1.1 502 Bad Gateway\r\n\r\n")
            return
        self.connections += 1
        client.sendall(b"HTTP/1.1 200 Connection Established\r\n\r\n")
        with upstream:
            upstream.settimeout(None)
            sockets = [client, upstream]
            while True:
                readable, _, _ = select.select(sockets, [], [], 60)
                if not readable:
                    return
                for source in readable:
                    data = source.recv(65536)
                    if not data:
                        return
                    (upstream if source is client else client).sendall(data)
