"""The client: JSON in, JSON out, by path; counting, re-login on 401, one error type."""

from __future__ import annotations

import asyncio
import json
import logging
from collections import Counter
from collections.abc import Callable
from typing import Any

from gpunuma.kubeapi.connection import Connection
from gpunuma.kubeapi.errors import ApiError, error_from
from gpunuma.kubeapi.transport import NoAnswer, Transport

__all__ = ["JSON_PATCH", "MERGE_PATCH", "KubeClient"]

logger = logging.getLogger(__name__)

JSON_PATCH = "application/json-patch+json"
MERGE_PATCH = "application/merge-patch+json"


class KubeClient:
    """GET, POST, merge and JSON patches of JSON objects; every failure is an :class:`ApiError`.

    Give it a ``connection``, a ``login`` that returns one (asked before the first request), or
    both. With a ``login``, a 401 makes the client log in again and retry once: a rotated token
    under a running pod. :meth:`use` swaps the connection (kopf's login handler does, on re-login).
    ``requests`` counts calls by (method, resource), for the liveness probe and benchmarks.
    ``transport`` carries the bytes (:mod:`gpunuma.kubeapi.transport`): aiohttp unless given,
    imported only then.
    """

    def __init__(
        self,
        connection: Connection | None = None,
        *,
        login: Callable[[], Connection | None] | None = None,
        user_agent: str = "gpunuma",
        timeout_s: float = 30.0,
        transport: Transport | None = None,
    ) -> None:
        if connection is None and login is None:
            raise ValueError("KubeClient needs a connection or a login")
        self._connection = connection
        self._login = login
        self._user_agent = user_agent
        if transport is None:
            from gpunuma.kubeapi.aiohttp_transport import AiohttpTransport  # noqa: PLC0415

            transport = AiohttpTransport(timeout_s)
        self._transport = transport
        self.requests: Counter[tuple[str, str]] = Counter()

    def use(self, connection: Connection) -> None:
        self._connection = connection

    async def close(self) -> None:
        await self._transport.close()

    async def get(self, path: str) -> dict[str, Any] | None:
        """The object at ``path``, or None if it does not exist."""
        return await self._unless_missing("GET", path)

    async def read_text(self, path: str) -> str | None:
        """A text answer (a container's log), or None if there is none."""
        answer = await self._unless_missing("GET", path, text=True)
        return None if answer is None else str(answer["text"])

    async def create(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        return await self._request("POST", path, body)

    async def merge_patch(self, path: str, patch: dict[str, Any]) -> dict[str, Any]:
        return await self._request("PATCH", path, patch, content_type=MERGE_PATCH)

    async def json_patch(self, path: str, ops: list[dict[str, Any]]) -> dict[str, Any]:
        return await self._request("PATCH", path, ops, content_type=JSON_PATCH)

    async def delete(self, path: str) -> dict[str, Any] | None:
        """Delete the object at ``path``; None if it was already gone."""
        return await self._unless_missing("DELETE", path)

    async def _unless_missing(self, method: str, path: str, *, text: bool = False,
                              ) -> dict[str, Any] | None:
        """The answer, or None for a 404: reads and deletes take a missing object as an answer."""
        try:
            return await self._request(method, path, text=text)
        except ApiError as error:
            if error.status == 404:
                return None
            raise

    async def _request(
        self, method: str, path: str, body: object = None, *, content_type: str = "application/json",
        text: bool = False,
    ) -> dict[str, Any]:
        connection = self._connection or self._relogin(method, path)
        try:
            return await self._send(connection, method, path, body, content_type, text)
        except ApiError as error:
            if error.status != 401 or self._login is None:
                raise
        self._connection = None  # rejected: whatever happens next, never send it again
        return await self._send(self._relogin(method, path), method, path, body, content_type,
                                text)

    def _relogin(self, method: str, path: str) -> Connection:
        connection = self._login() if self._login is not None else None
        if connection is None:
            raise ApiError(401, "no credentials: neither in-cluster nor a kubeconfig",
                           method=method, path=path)
        self._connection = connection
        return connection

    async def _send(
        self, connection: Connection, method: str, path: str, body: object, content_type: str,
        text_answer: bool = False,
    ) -> dict[str, Any]:
        self.requests[method, _resource_of(path)] += 1
        headers = [*connection.headers, ("Accept", "*/*" if text_answer else "application/json"),
                   ("User-Agent", self._user_agent)]
        try:
            authorization = (await asyncio.to_thread(connection.authorization)
                             if connection.authorization_blocks else connection.authorization())
        except Exception as error:  # a token file being replaced, a failing exec plugin
            raise ApiError(0, f"cannot get API credentials: {type(error).__name__}: {error}",
                           method=method, path=path) from error
        if authorization:
            headers.append(("Authorization", authorization))
        data = None
        if body is not None:
            headers.append(("Content-Type", content_type))
            data = json.dumps(body, separators=(",", ":")).encode()
        try:
            answer = await self._transport.exchange(connection, method, path, headers, data)
        except NoAnswer as error:
            # No answer at all. Callers treat it like any failed call (log, retry on the next
            # event or round) instead of dying on a transport exception.
            raise ApiError(0, f"no answer from the API server at {connection.server}: {error}",
                           method=method, path=path) from error
        for warning in answer.warnings:
            # e.g. unknown fields pruned because the installed CRD is older than we are.
            logger.warning("API server warns on %s %s: %s", method, path, warning)
        status, text = answer.status, answer.text
        if status >= 400:
            raise error_from(status, text, method, path)
        if text_answer:
            return {"text": text}
        try:
            result = json.loads(text) if text else {}
        except ValueError:
            result = None
        if not isinstance(result, dict):
            # A proxy's page, say: no usable answer, worth a retry like a lost connection.
            raise ApiError(0, f"the answer is not a JSON object: {text[:100]!r}",
                           method=method, path=path)
        return result


def _resource_of(path: str) -> str:
    """``/api/v1/nodes/n1`` → ``nodes``; ``/api/v1/namespaces/ns/pods/p`` → ``pods``."""
    parts = [p for p in path.split("?", maxsplit=1)[0].split("/") if p]
    if "namespaces" in parts:
        index = parts.index("namespaces")
        if len(parts) > index + 2:
            return parts[index + 2]
    base = 2 if parts[:1] == ["api"] else 3
    return parts[base] if len(parts) > base else "/".join(parts)

