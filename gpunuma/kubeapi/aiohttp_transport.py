"""The default transport: one aiohttp session, its connections pooled, for long-running processes."""

from __future__ import annotations

import aiohttp

from gpunuma.kubeapi.connection import Connection
from gpunuma.kubeapi.transport import Answer, NoAnswer

__all__ = ["AiohttpTransport"]


class AiohttpTransport:
    """``timeout_s`` bounds each request as a whole."""

    def __init__(self, timeout_s: float = 30.0) -> None:
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session: aiohttp.ClientSession | None = None

    async def exchange(
        self, connection: Connection, method: str, path: str, headers: list[tuple[str, str]],
        body: bytes | None,
    ) -> Answer:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        verify = connection.ssl_context if connection.ssl_context is not None else True
        try:
            async with self._session.request(
                method, connection.server.rstrip("/") + path, data=body, headers=headers,
                ssl=verify, proxy=connection.proxy, server_hostname=connection.server_hostname,
            ) as response:
                return Answer(response.status, await response.text(),
                              tuple(response.headers.getall("Warning", [])))
        except (aiohttp.ClientError, TimeoutError) as error:
            raise NoAnswer(f"{type(error).__name__}: {error}") from error

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()
