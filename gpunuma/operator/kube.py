"""A small asyncio Kubernetes API client on aiohttp, fed by the same credentials as kopf.

kopf's own client is internal, and the official clients are either blocking or not installed; the
operator needs only GET, POST, merge and JSON patches. Credentials come from kopf's login handlers
(service account or kubeconfig), so both see the same server; a 401 makes the client log in again
once (service-account tokens are rotated under a running pod).
"""

from __future__ import annotations

import base64
import json
import ssl
import tempfile
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp

__all__ = ["ApiError", "Endpoint", "KubeClient"]

MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"


class ApiError(Exception):
    """A non-2xx answer from the API server, with its status code and message."""

    def __init__(self, status: int, method: str, path: str, message: str) -> None:
        super().__init__(f"{method} {path}: HTTP {status}: {message}")
        self.status = status


class Endpoint:
    """Where and how to connect; built from a ``kopf.ConnectionInfo``-like object."""

    def __init__(self, info: Any) -> None:
        self.server = str(info.server).rstrip("/")
        self.headers: dict[str, str] = {}
        if info.token:
            self.headers["Authorization"] = f"{info.scheme or 'Bearer'} {info.token}"
        elif info.username and info.password:
            basic = base64.b64encode(f"{info.username}:{info.password}".encode()).decode()
            self.headers["Authorization"] = f"Basic {basic}"
        self.ssl: ssl.SSLContext | bool = True
        if self.server.startswith("https:"):
            self.ssl = self._ssl_context(info)

    @staticmethod
    def _ssl_context(info: Any) -> ssl.SSLContext | bool:
        if info.insecure:
            return False
        cadata = info.ca_data.decode() if isinstance(info.ca_data, bytes) else info.ca_data
        if cadata and "-----BEGIN" not in cadata:
            cadata = base64.b64decode(cadata).decode()  # kubeconfig carries it base64-encoded
        context = ssl.create_default_context(
            cafile=str(info.ca_path) if info.ca_path else None, cadata=cadata or None,
        )
        cert, key = info.certificate_path, info.private_key_path
        with tempfile.TemporaryDirectory() as private:
            # ssl can load a client certificate only from files; the directory is private (0700)
            # and gone once the context holds the key.
            if info.certificate_data:
                cert = Path(private, "cert.pem")
                cert.write_bytes(_pem_bytes(info.certificate_data))
            if info.private_key_data:
                key = Path(private, "key.pem")
                key.write_bytes(_pem_bytes(info.private_key_data))
            if cert:
                context.load_cert_chain(str(cert), str(key) if key else None)
        return context


def _pem_bytes(data: str | bytes) -> bytes:
    raw = data.encode() if isinstance(data, str) else data
    return raw if b"-----BEGIN" in raw else base64.b64decode(raw)


class KubeClient:
    """JSON in, JSON out. ``requests`` counts calls by (method, resource) for benchmarks and logs."""

    def __init__(self, login: Callable[[], Endpoint | None], *, timeout_s: float = 30.0) -> None:
        self._login = login
        self._endpoint: Endpoint | None = None
        self._session: aiohttp.ClientSession | None = None
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self.requests: Counter[tuple[str, str]] = Counter()

    def use(self, endpoint: Endpoint) -> None:
        self._endpoint = endpoint

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def get(self, path: str) -> dict[str, Any]:
        return await self.request("GET", path)

    async def create(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        return await self.request("POST", path, body)

    async def merge_patch(self, path: str, patch: dict[str, Any]) -> dict[str, Any]:
        return await self.request("PATCH", path, patch, content_type=MERGE_PATCH)

    async def json_patch(self, path: str, ops: list[dict[str, Any]]) -> dict[str, Any]:
        return await self.request("PATCH", path, ops, content_type=JSON_PATCH)

    async def request(
        self, method: str, path: str, body: object = None, *, content_type: str = "application/json",
    ) -> dict[str, Any]:
        for attempt in (1, 2):
            endpoint = self._endpoint or self._relogin()
            if self._session is None:
                self._session = aiohttp.ClientSession(timeout=self._timeout)
            self.requests[method, _resource_of(path)] += 1
            headers = dict(endpoint.headers)
            data = None
            if body is not None:
                headers["Content-Type"] = content_type
                data = json.dumps(body)
            try:
                async with self._session.request(
                    method, endpoint.server + path, data=data, headers=headers, ssl=endpoint.ssl,
                ) as response:
                    status, text = response.status, await response.text()
            except (aiohttp.ClientError, TimeoutError) as exc:
                # Status 0: no answer at all. Callers treat it like any failed call (log, retry on
                # the next event or round) instead of dying on a transport exception.
                raise ApiError(0, method, path, f"no answer from the API server: {exc!r}") from exc
            if status == 401 and attempt == 1:
                self._endpoint = None
                continue
            if status >= 400:
                raise ApiError(status, method, path, _message(text))
            try:
                result = json.loads(text) if text else {}
            except ValueError:
                raise ApiError(status, method, path, f"not JSON: {text[:100]!r}") from None
            return result if isinstance(result, dict) else {"items": result}
        raise AssertionError("unreachable: the second attempt returns or raises")  # pragma: no cover

    def _relogin(self) -> Endpoint:
        endpoint = self._login()
        if endpoint is None:
            raise ApiError(401, "LOGIN", "", "no credentials: neither in-cluster nor a kubeconfig")
        self._endpoint = endpoint
        return endpoint


def _message(text: str) -> str:
    try:
        body = json.loads(text)
    except ValueError:
        return text[:300]
    return str(body.get("message", text[:300])) if isinstance(body, dict) else text[:300]


def _resource_of(path: str) -> str:
    """``/api/v1/nodes/n1`` → ``nodes``; ``/api/v1/namespaces/ns/pods/p`` → ``pods``."""
    parts = [p for p in path.split("?", maxsplit=1)[0].split("/") if p]
    if "namespaces" in parts:
        index = parts.index("namespaces")
        if len(parts) > index + 2:
            return parts[index + 2]
    base = 2 if parts[:1] == ["api"] else 3
    return parts[base] if len(parts) > base else "/".join(parts)
