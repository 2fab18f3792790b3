"""A small Kubernetes API server for staging races: objects by path, real HTTP, real semantics.

It does what the operator's guards rely on and nothing else: GET; merge patches (RFC 7386) with
the ``metadata.resourceVersion`` precondition (409 Conflict when it is not the stored one) and the
``/status`` subresource; JSON patches (RFC 6902, ``test`` included: 422 when one fails); POST
creating an object (409 when it exists). Every write bumps the object's ``resourceVersion``.

Tests stage a race with :attr:`FakeApi.before_write`: an async callback run when a write arrives,
before it is applied, so that "another writer" (a second replica, a Helm upgrade, a kubelet status
update) can change the object in between a client's read and its write. :attr:`FakeApi.requests`
records every request, which is what the tests assert on: behaviour on the wire, not internals.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import jsonpatch
from aiohttp import web

__all__ = ["FakeApi", "Request", "fake_api", "merge"]


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    body: Any
    user_agent: str


@dataclass
class FakeApi:
    url: str = ""
    objects: dict[str, dict[str, Any]] = field(default_factory=dict)
    requests: list[Request] = field(default_factory=list)
    before_write: Callable[[Request], Awaitable[None]] | None = None
    opaque_versions: bool = False  # resourceVersions that are not integers (allowed by the API)
    _versions: itertools.count[int] = field(default_factory=lambda: itertools.count(100))

    def put(self, path: str, obj: dict[str, Any]) -> dict[str, Any]:
        """Store an object as another writer would (a new resourceVersion); returns it."""
        stored = copy.deepcopy(obj)
        stored.setdefault("metadata", {})["resourceVersion"] = self._next_version()
        self.objects[path] = stored
        return copy.deepcopy(stored)

    def writes(self, method: str, path: str) -> list[Request]:
        return [r for r in self.requests if r.method == method and r.path == path]

    def _next_version(self) -> str:
        number = next(self._versions)
        return f"v{number:x}" if self.opaque_versions else str(number)

    async def handle(self, request: web.Request) -> web.Response:
        path = request.path
        body = await request.json() if request.can_read_body else None
        seen = Request(request.method, path, body, request.headers.get("User-Agent", ""))
        self.requests.append(seen)
        if request.method == "GET":
            obj = self.objects.get(path)
            return web.json_response(obj) if obj is not None else _status(404, "NotFound", path)
        if self.before_write is not None:
            await self.before_write(seen)
        if request.method == "POST":
            name = ((body or {}).get("metadata") or {}).get("name", "")
            target = f"{path}/{name}"
            if target in self.objects:
                return _status(409, "AlreadyExists", f"{target} already exists")
            return web.json_response(self.put(target, body), status=201)
        if request.method == "PATCH":
            return self._patch(path, body, request.content_type)
        return _status(405, "MethodNotAllowed", request.method)

    def _patch(self, path: str, body: Any, content_type: str) -> web.Response:
        subresource = path.endswith("/status")
        target = path.removesuffix("/status") if subresource else path
        current = self.objects.get(target)
        if current is None:
            return _status(404, "NotFound", target)
        if content_type == "application/json-patch+json":
            try:
                result = jsonpatch.apply_patch(current, body)
            except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as exc:
                return _status(422, "Invalid", f"the JSON patch cannot be applied: {exc}")
        else:
            wanted = ((body or {}).get("metadata") or {}).get("resourceVersion")
            if wanted is not None and wanted != current["metadata"]["resourceVersion"]:
                return _status(409, "Conflict", "the object has been modified; please apply "
                               "your changes to the latest version and try again")
            if subresource:
                body = {"status": (body or {}).get("status")}
            result = merge(current, body)
        result["metadata"]["resourceVersion"] = self._next_version()
        self.objects[target] = result
        return web.json_response(result)


def merge(target: Any, patch: Any) -> Any:
    """RFC 7386."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge(result.get(key), value)
    return result


def _status(code: int, reason: str, message: str) -> web.Response:
    return web.json_response({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                              "code": code, "reason": reason, "message": message}, status=code)


@asynccontextmanager
async def fake_api(**options: Any) -> AsyncIterator[FakeApi]:
    api = FakeApi(**options)
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", api.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    api.url = f"http://127.0.0.1:{port}"
    try:
        yield api
    finally:
        await runner.cleanup()
