"""A thin asyncio Kubernetes API client: the four calls the agent makes, over aiohttp.

Why not the ``kubernetes`` package's generated client: it is synchronous (every call would need a
thread, and a SIGTERM could not cancel one in flight), and the agent needs exact control of the
patch types: a JSON patch to replace ``spec`` (a JSON merge patch would turn the layout document's
``null`` values into deletions) and a merge patch that touches ``spec.heartbeatTime`` alone. What we
do reuse from it is kubeconfig loading (client certificates, tokens, exec plugins), imported only
with ``--kubeconfig``; the in-cluster service account, the DaemonSet's case, is read directly.
The same client works against a real API server and against kmock in the tests.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import aiohttp

__all__ = ["ApiError", "Connection", "KubeClient", "load_connection"]

logger = logging.getLogger(__name__)

JSON_PATCH = "application/json-patch+json"
MERGE_PATCH = "application/merge-patch+json"

# Statuses worth a prompt retry: a vanished object (the CR deleted under the agent: re-created),
# conflicts, throttling, and the API server or its etcd being unwell. Others (403, 422…) need a fix.
RETRYABLE_STATUSES = frozenset({404, 409, 429, 500, 502, 503, 504})

SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")


class ApiError(Exception):
    """A Kubernetes API call that failed; ``status`` 0 means no HTTP answer (connection, timeout)."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}" if status else message)
        self.status = status
        self.reason = reason
        self.message = message

    @property
    def retryable(self) -> bool:
        return self.status == 0 or self.status in RETRYABLE_STATUSES


@dataclass(frozen=True)
class Connection:
    """Where the API server is and how to authenticate; ``authorization`` is asked per request."""

    server: str
    ssl_context: ssl.SSLContext | None = None
    authorization: Callable[[], str | None] = lambda: None


def load_connection(kubeconfig: Path | None) -> Connection:
    """In-cluster configuration when ``kubeconfig`` is None, else that kubeconfig's current context."""
    return in_cluster_connection() if kubeconfig is None else kubeconfig_connection(kubeconfig)


def in_cluster_connection(
    service_account: Path = SERVICE_ACCOUNT, environ: Mapping[str, str] = os.environ
) -> Connection:
    """The pod's service account. Done by hand: the ``kubernetes`` package costs 20 MiB of RSS.

    The token is read again for every request: the kubelet rotates bound tokens (hourly by
    default) by replacing the file, and the agent makes only a few requests an hour.
    """
    host = environ.get("KUBERNETES_SERVICE_HOST")
    port = environ.get("KUBERNETES_SERVICE_PORT")
    if not host or not port:
        raise ApiError(0, "", "not running in a cluster (KUBERNETES_SERVICE_HOST and "
                       "KUBERNETES_SERVICE_PORT are unset): pass --kubeconfig")
    token_file, ca_file = service_account / "token", service_account / "ca.crt"
    for required in (token_file, ca_file):
        if not required.is_file():
            raise ApiError(0, "", f"the service account file {required} is missing: is "
                           "automountServiceAccountToken disabled for the agent's pod?")
    context = ssl.create_default_context(cafile=str(ca_file))
    server_host = f"[{host}]" if ":" in host else host  # an IPv6 service address

    def authorization() -> str | None:
        return "Bearer " + token_file.read_text().strip()

    return Connection(server=f"https://{server_host}:{port}", ssl_context=context,
                      authorization=authorization)


def kubeconfig_connection(kubeconfig: Path) -> Connection:
    """A kubeconfig's current context, read by the ``kubernetes`` package's loader.

    It knows every way a kubeconfig can authenticate (certificates, tokens, exec plugins).
    """
    from kubernetes import config as kube_config  # noqa: PLC0415 - heavy; only with --kubeconfig
    from kubernetes.client import Configuration  # noqa: PLC0415

    configuration = Configuration()
    try:
        kube_config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=str(kubeconfig), client_configuration=configuration
        )
    except (kube_config.ConfigException, OSError) as error:
        raise ApiError(0, "", f"cannot load kubeconfig {kubeconfig}: {error}") from error
    context: ssl.SSLContext | None = None
    if configuration.host.startswith("https:"):
        context = ssl.create_default_context(cafile=configuration.ssl_ca_cert)
        if configuration.cert_file:
            context.load_cert_chain(configuration.cert_file, configuration.key_file)
        if not configuration.verify_ssl:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE

    def authorization() -> str | None:
        # Asked per request: the loader re-runs an exec plugin when its credential expires.
        settings = cast(Mapping[str, Mapping[str, Any]], configuration.auth_settings())
        for setting in settings.values():
            if setting.get("in") == "header" and str(setting.get("key")).lower() == "authorization":
                value = setting.get("value")
                return str(value) if value else None
        return None

    return Connection(server=configuration.host, ssl_context=context, authorization=authorization)


class KubeClient:
    """GET, POST and PATCH of JSON objects; errors become :class:`ApiError`."""

    def __init__(self, connection: Connection, *, timeout: float = 30.0) -> None:
        self._connection = connection
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    async def get(self, path: str) -> dict[str, Any] | None:
        """The object at ``path``, or None if it does not exist."""
        try:
            return await self._request("GET", path)
        except ApiError as error:
            if error.status == 404:
                return None
            raise

    async def create(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        return await self._request("POST", path, body)

    async def patch(self, path: str, body: Any, *, content_type: str) -> dict[str, Any]:
        return await self._request("PATCH", path, body, content_type=content_type)

    async def _request(
        self, method: str, path: str, body: Any = None, *, content_type: str = "application/json"
    ) -> dict[str, Any]:
        if self._session is None:
            connector = aiohttp.TCPConnector(ssl=self._connection.ssl_context or False, limit=4)
            self._session = aiohttp.ClientSession(connector=connector, timeout=self._timeout)
        headers = {"Accept": "application/json", "User-Agent": "gpunuma-agent"}
        try:
            authorization = await asyncio.to_thread(self._connection.authorization)
        except Exception as error:  # a token file being replaced, a failing exec plugin
            raise ApiError(0, "", f"cannot get API credentials: {type(error).__name__}: "
                           f"{error}") from error
        if authorization:
            headers["Authorization"] = authorization
        data = None
        if body is not None:
            headers["Content-Type"] = content_type
            data = json.dumps(body, separators=(",", ":")).encode()
        url = self._connection.server.rstrip("/") + path
        try:
            async with self._session.request(method, url, data=data, headers=headers) as response:
                for warning in response.headers.getall("Warning", []):
                    # e.g. unknown fields pruned because the installed CRD is older than the agent.
                    logger.warning("API server warns on %s %s: %s", method, path, warning)
                text = await response.text()
                if response.status >= 400:
                    raise _error_from(response.status, text)
                result: dict[str, Any] = json.loads(text) if text else {}
                return result
        except (aiohttp.ClientError, TimeoutError, ValueError) as error:
            # ValueError: a 2xx answer that is not JSON (a proxy's page, say); worth a retry.
            raise ApiError(0, "", f"{method} {url}: {type(error).__name__}: {error}") from error


def _error_from(status: int, text: str) -> ApiError:
    try:
        document = json.loads(text)
    except ValueError:
        document = None
    if isinstance(document, dict) and document.get("kind") == "Status":
        return ApiError(status, str(document.get("reason", "")), str(document.get("message", "")))
    return ApiError(status, "", text[:200])
