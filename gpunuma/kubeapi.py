"""The one asyncio Kubernetes API client of gpunuma: the agent, the operator and ``kubectl gpunuma``.

Requests go by path, as JSON, over aiohttp; kubeconfigs are read by lightkube. Judged against the
three maintained async clients (sizes measured in fresh virtual environments, see the README's
"Kubernetes client"):

- kubernetes_asyncio is generated like the ``kubernetes`` package, about as large, and slow to
  import; it would replace one heavy dependency with another.
- kr8s wraps every object in its own classes and pulls in eight more packages (python-box,
  cachetools, python-jsonpath, httpx-ws…) for features gpunuma does not use.
- lightkube is small, typed and maintained, and its kubeconfig loader knows every way to
  authenticate (client certificates, tokens, token files, exec plugins). Its client, though,
  speaks httpx while every gpunuma process already carries aiohttp (kopf, the webhook, the agent's
  /metrics server), and returns typed models where the operator keeps three fields of each Node
  and Pod. So gpunuma takes lightkube's configuration, the part that is hard to keep right, and
  keeps its transport here: JSON and merge patches, the retryable-error rule, a request counter
  for the probes, re-login on 401, per-request token re-reading in a pod.

A :class:`Connection` says where the API server is and how to authenticate; its constructors read
the pod's service account (by hand: no loader needed), a kubeconfig (lightkube, imported only then),
or kopf's ``ConnectionInfo`` (so that the operator's client and kopf see the same server).
:class:`KubeClient` sends JSON and returns JSON; every failure is an :class:`ApiError`, status 0 when
no usable answer came back. The same client works against a real API server and against kmock in
the tests. This module imports nothing from gpunuma.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import ssl
import tempfile
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeAlias

import aiohttp

__all__ = [
    "ApiError",
    "Connection",
    "KubeClient",
    "tls_context",
]

logger = logging.getLogger(__name__)

JSON_PATCH = "application/json-patch+json"
MERGE_PATCH = "application/merge-patch+json"

# Statuses worth a prompt retry: a vanished object (deleted under us: re-created), conflicts,
# throttling, and the API server or its etcd being unwell. Others (403, 422…) need a fix.
RETRYABLE_STATUSES = frozenset({404, 409, 429, 500, 502, 503, 504})

SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")

PathLike: TypeAlias = str | bytes | os.PathLike[str] | os.PathLike[bytes]  # as kopf's fields


class ApiError(Exception):
    """A Kubernetes API call that failed; ``status`` 0 means no usable HTTP answer.

    ``reason`` is the Status object's reason (``Forbidden``, ``AlreadyExists``…) when it has one;
    ``method`` and ``path`` name the call in the message.
    """

    def __init__(
        self, status: int, message: str, *, reason: str = "", method: str = "", path: str = "",
    ) -> None:
        where = f"{method} {path}: " if method else ""
        answer = f"HTTP {status} {reason}".rstrip() + ": " if status else ""
        super().__init__(where + answer + message)
        self.status = status
        self.reason = reason
        self.message = message

    @property
    def retryable(self) -> bool:
        return self.status == 0 or self.status in RETRYABLE_STATUSES


def tls_context(
    *,
    ca_path: PathLike | None = None,
    ca_data: str | bytes | None = None,
    cert_path: PathLike | None = None,
    cert_data: str | bytes | None = None,
    key_path: PathLike | None = None,
    key_data: str | bytes | None = None,
    insecure: bool = False,
) -> ssl.SSLContext:
    """A client context that trusts the cluster's CA and presents a client certificate, if any.

    ``*_data`` is PEM, or PEM in base64 as kubeconfigs carry it. Without a CA the system's
    authorities are trusted; ``insecure`` (kubeconfig's ``insecure-skip-tls-verify``) verifies
    nothing but still presents the client certificate.
    """
    cadata = _pem_bytes(ca_data).decode() if ca_data else None
    context = ssl.create_default_context(cafile=os.fsdecode(ca_path) if ca_path else None,
                                         cadata=cadata)
    if insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    with tempfile.TemporaryDirectory() as private:
        # ssl loads a client certificate only from files; the directory is private (0700) and
        # gone once the context holds the key.
        if cert_data:
            cert_path = Path(private, "cert.pem")
            cert_path.write_bytes(_pem_bytes(cert_data))
        if key_data:
            key_path = Path(private, "key.pem")
            key_path.write_bytes(_pem_bytes(key_data))
        if cert_path:
            context.load_cert_chain(os.fsdecode(cert_path),
                                    os.fsdecode(key_path) if key_path else None)
    return context


def _pem_bytes(data: str | bytes) -> bytes:
    raw = data.encode() if isinstance(data, str) else data
    return raw if b"-----BEGIN" in raw else base64.b64decode(raw)


@dataclass(frozen=True)
class Connection:
    """Where the API server is and how to authenticate.

    ``ssl_context`` None trusts the system's authorities. ``authorization`` gives the
    ``Authorization`` header's value and is asked again for every request (in a thread: it may
    read a file or run a kubeconfig's exec plugin), so that rotated credentials are picked up.
    """

    server: str
    ssl_context: ssl.SSLContext | None = None
    authorization: Callable[[], str | None] = lambda: None
    namespace: str = "default"  # a kubeconfig context's namespace, for clients that default to it

    @classmethod
    def in_cluster(
        cls, service_account: Path = SERVICE_ACCOUNT, environ: Mapping[str, str] = os.environ,
    ) -> Connection:
        """The pod's service account: two files and two variables, read here.

        The token is read again for every request: the kubelet rotates bound tokens (hourly by
        default) by replacing the file.
        """
        host = environ.get("KUBERNETES_SERVICE_HOST")
        port = environ.get("KUBERNETES_SERVICE_PORT")
        if not host or not port:
            raise ApiError(0, "not running in a cluster (KUBERNETES_SERVICE_HOST and "
                           "KUBERNETES_SERVICE_PORT are unset): pass --kubeconfig")
        token_file, ca_file = service_account / "token", service_account / "ca.crt"
        for required in (token_file, ca_file):
            if not required.is_file():
                raise ApiError(0, f"the service account file {required} is missing: is "
                               "automountServiceAccountToken disabled for this pod?")
        server_host = f"[{host}]" if ":" in host else host  # an IPv6 service address

        def authorization() -> str | None:
            return "Bearer " + token_file.read_text().strip()

        return cls(server=f"https://{server_host}:{port}", ssl_context=tls_context(ca_path=ca_file),
                   authorization=authorization)

    @classmethod
    def from_kubeconfig(cls, kubeconfig: Path | None = None, context: str | None = None,
                        ) -> Connection:
        """A kubeconfig's context (default: its current one), read by lightkube's loader.

        ``kubeconfig`` None: ``$KUBECONFIG``, then ``~/.kube/config``, as kubectl looks. lightkube
        knows the ways a kubeconfig authenticates (client certificates, tokens, token files,
        exec plugins); its credential is asked for per request, and a client with a ``login``
        that loads the kubeconfig again gets a fresh one after a 401 (an expired exec token).
        """
        import httpx2  # noqa: PLC0415 - only for a kubeconfig: lightkube's auth flows are httpx's
        from lightkube.config import client_adapter  # noqa: PLC0415
        from lightkube.config.kubeconfig import KubeConfig  # noqa: PLC0415
        from lightkube.core.exceptions import ConfigError  # noqa: PLC0415

        listed = os.environ.get("KUBECONFIG") or "~/.kube/config"
        path = kubeconfig or Path(listed).expanduser()
        try:
            if kubeconfig is None and os.pathsep in listed:
                config = _merged_kubeconfig(listed).get(context_name=context)
            else:
                config = KubeConfig.from_file(path).get(context_name=context)
            if config is None:
                raise ConfigError("it has no current-context; pass --context")
            auth = client_adapter.user_auth(config.user)
            ssl_context = None
            if config.cluster.server.startswith("https:"):
                user = config.user or _no_user()
                ssl_context = client_adapter.verify_cluster(config.cluster, user, config.abs_file,
                                                            trust_env=False)
        except (ConfigError, OSError, ValueError, KeyError) as error:
            raise ApiError(0, f"cannot load kubeconfig {path}: {error}") from error

        def authorization() -> str | None:
            if auth is None:
                return None
            flow = auth.sync_auth_flow(httpx2.Request("GET", config.cluster.server))
            header: str | None = next(flow).headers.get("Authorization")
            return header

        return cls(server=config.cluster.server.rstrip("/"), ssl_context=ssl_context,
                   authorization=authorization, namespace=config.namespace)

    @classmethod
    def from_kopf(cls, info: Any) -> Connection:
        """kopf's ``ConnectionInfo`` (from its login handlers), so the client sees kopf's server.

        Typed ``Any`` so that this module need not import kopf; the fields read are kopf's.
        """
        server = str(info.server).rstrip("/")
        header: str | None = None
        if info.token:
            header = f"{info.scheme or 'Bearer'} {info.token}"
        elif info.username and info.password:
            header = "Basic " + base64.b64encode(f"{info.username}:{info.password}".encode()).decode()
        context = None
        if server.startswith("https:"):
            context = tls_context(ca_path=info.ca_path, ca_data=info.ca_data,
                                  cert_path=info.certificate_path, cert_data=info.certificate_data,
                                  key_path=info.private_key_path, key_data=info.private_key_data,
                                  insecure=bool(info.insecure))
        return cls(server=server, ssl_context=context, authorization=lambda: header)


class KubeClient:
    """GET, POST, merge and JSON patches of JSON objects; every failure is an :class:`ApiError`.

    Give it a ``connection``, a ``login`` that returns one (asked before the first request), or
    both. With a ``login``, a 401 makes the client log in again and retry once: a rotated token
    under a running pod. :meth:`use` swaps the connection (kopf's login handler does, on re-login).
    ``requests`` counts calls by (method, resource), for the liveness probe and benchmarks.
    """

    def __init__(
        self,
        connection: Connection | None = None,
        *,
        login: Callable[[], Connection | None] | None = None,
        user_agent: str = "gpunuma",
        timeout_s: float = 30.0,
    ) -> None:
        if connection is None and login is None:
            raise ValueError("KubeClient needs a connection or a login")
        self._connection = connection
        self._login = login
        self._user_agent = user_agent
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session: aiohttp.ClientSession | None = None
        self.requests: Counter[tuple[str, str]] = Counter()

    def use(self, connection: Connection) -> None:
        self._connection = connection

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

    async def read_text(self, path: str) -> str | None:
        """A text answer (a container's log), or None if there is none."""
        try:
            answer = await self._request("GET", path, text=True)
        except ApiError as error:
            if error.status == 404:
                return None
            raise
        return str(answer["text"])

    async def create(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        return await self._request("POST", path, body)

    async def merge_patch(self, path: str, patch: dict[str, Any]) -> dict[str, Any]:
        return await self._request("PATCH", path, patch, content_type=MERGE_PATCH)

    async def json_patch(self, path: str, ops: list[dict[str, Any]]) -> dict[str, Any]:
        return await self._request("PATCH", path, ops, content_type=JSON_PATCH)

    async def delete(self, path: str) -> dict[str, Any] | None:
        """Delete the object at ``path``; None if it was already gone."""
        try:
            return await self._request("DELETE", path)
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
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        self.requests[method, _resource_of(path)] += 1
        headers = {"Accept": "*/*" if text_answer else "application/json",
                   "User-Agent": self._user_agent}
        try:
            authorization = await asyncio.to_thread(connection.authorization)
        except Exception as error:  # a token file being replaced, a failing exec plugin
            raise ApiError(0, f"cannot get API credentials: {type(error).__name__}: {error}",
                           method=method, path=path) from error
        if authorization:
            headers["Authorization"] = authorization
        data = None
        if body is not None:
            headers["Content-Type"] = content_type
            data = json.dumps(body, separators=(",", ":")).encode()
        url = connection.server.rstrip("/") + path
        verify = connection.ssl_context if connection.ssl_context is not None else True
        try:
            async with self._session.request(
                method, url, data=data, headers=headers, ssl=verify,
            ) as response:
                for warning in response.headers.getall("Warning", []):
                    # e.g. unknown fields pruned because the installed CRD is older than we are.
                    logger.warning("API server warns on %s %s: %s", method, path, warning)
                status, text = response.status, await response.text()
        except (aiohttp.ClientError, TimeoutError) as error:
            # No answer at all. Callers treat it like any failed call (log, retry on the next
            # event or round) instead of dying on a transport exception.
            raise ApiError(0, f"no answer from the API server at {connection.server}: "
                           f"{type(error).__name__}: {error}", method=method, path=path) from error
        if status >= 400:
            raise _error_from(status, text, method, path)
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


# Kubeconfig fields that name files: relative to the kubeconfig that holds them.
_FILE_FIELDS = ("certificate-authority", "client-certificate", "client-key", "tokenFile")


def _merged_kubeconfig(listed: str) -> Any:
    """``KUBECONFIG=a:b``, merged as kubectl merges it: the first file to name a cluster, user or
    context (or to set current-context) wins, missing files are skipped, and file paths stay
    relative to the file that holds them. lightkube loads one file only."""
    import yaml  # noqa: PLC0415 - only for a kubeconfig
    from lightkube.config.kubeconfig import KubeConfig  # noqa: PLC0415
    from lightkube.core.exceptions import ConfigError  # noqa: PLC0415

    files = [Path(item).expanduser() for item in listed.split(os.pathsep) if item]
    merged: dict[str, Any] = {"clusters": [], "contexts": [], "users": []}
    found = False
    for file in files:
        if not file.is_file():
            continue
        found = True
        document = yaml.safe_load(file.read_text(encoding="utf-8")) or {}
        if not merged.get("current-context") and document.get("current-context"):
            merged["current-context"] = document["current-context"]
        for section, inner in (("clusters", "cluster"), ("contexts", "context"), ("users", "user")):
            names = {item["name"] for item in merged[section]}
            for item in document.get(section) or []:
                if not isinstance(item, dict) or item.get("name") in names:
                    continue
                fields = dict(item.get(inner) or {})
                for key in _FILE_FIELDS:
                    if isinstance(fields.get(key), str):
                        fields[key] = str(file.parent / Path(fields[key]).expanduser())
                merged[section].append({**item, inner: fields})
                names.add(item["name"])
    if not found:
        raise ConfigError(f"none of the files in KUBECONFIG exists ({listed})")
    return KubeConfig.from_dict(merged, fname=files[0])


def _no_user() -> Any:
    from lightkube.config.models import User  # noqa: PLC0415

    return User()


def _error_from(status: int, text: str, method: str, path: str) -> ApiError:
    try:
        document = json.loads(text)
    except ValueError:
        document = None
    if isinstance(document, dict) and document.get("message"):  # a Status object
        return ApiError(status, str(document["message"]), reason=str(document.get("reason") or ""),
                        method=method, path=path)
    return ApiError(status, text[:300], method=method, path=path)


def _resource_of(path: str) -> str:
    """``/api/v1/nodes/n1`` → ``nodes``; ``/api/v1/namespaces/ns/pods/p`` → ``pods``."""
    parts = [p for p in path.split("?", maxsplit=1)[0].split("/") if p]
    if "namespaces" in parts:
        index = parts.index("namespaces")
        if len(parts) > index + 2:
            return parts[index + 2]
    base = 2 if parts[:1] == ["api"] else 3
    return parts[base] if len(parts) > base else "/".join(parts)
