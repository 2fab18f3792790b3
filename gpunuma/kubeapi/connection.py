"""Where the API server is and how to authenticate: in a pod, from a kubeconfig, or kopf's login."""

from __future__ import annotations

import base64
import os
import ssl
import tempfile
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeAlias

from gpunuma.kubeapi import kubeconfig as kubeconfig_loader
from gpunuma.kubeapi.errors import ApiError
from gpunuma.kubeapi.execplugin import ExecCredential, ExecPluginError

__all__ = ["SERVICE_ACCOUNT", "Connection", "tls_context"]

SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")

PathLike: TypeAlias = str | bytes | os.PathLike[str] | os.PathLike[bytes]  # as kopf's fields


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
    ``Authorization`` header's value and is asked again for every request, so that rotated
    credentials are picked up: a constant, or a token file read (a small file, read on the event
    loop). ``authorization_blocks``: it may run a kubeconfig's exec plugin, a process that can take
    seconds, so it is asked in a worker thread.
    """

    server: str
    ssl_context: ssl.SSLContext | None = None
    authorization: Callable[[], str | None] = lambda: None
    authorization_blocks: bool = False
    namespace: str = "default"  # a kubeconfig context's namespace, for clients that default to it
    headers: tuple[tuple[str, str], ...] = ()  # sent with every request (impersonation)
    server_hostname: str | None = None  # the name to verify the certificate for, if not the URL's
    proxy: str | None = None  # an http:// proxy's URL (CONNECT for https servers)

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
                        environ: Mapping[str, str] = os.environ) -> Connection:
        """A kubeconfig's context (default: its current one), loaded as kubectl loads it.

        ``kubeconfig`` None: the ``$KUBECONFIG`` list, then ``~/.kube/config``
        (:mod:`gpunuma.kubeapi.kubeconfig` says how they merge). A token file is read again for every
        request; an exec plugin runs now (its answer may be a client certificate) and again once
        its token expires. A client with a ``login`` that loads the kubeconfig again also gets a
        fresh credential after a 401.
        """
        try:
            found = kubeconfig_loader.load(kubeconfig, context, environ)
            credential = found.exec_plugin.run(environ) if found.exec_plugin else None
        except (kubeconfig_loader.KubeconfigError, ExecPluginError) as error:
            where = kubeconfig or environ.get("KUBECONFIG") or kubeconfig_loader.DEFAULT_PATH
            raise ApiError(0, f"cannot load kubeconfig {where}: {error}") from error
        ssl_context = None
        if found.server.startswith("https:"):
            # As client-go: *-data wins over the file it replaces, and a plugin's pair over both.
            cert_data = (credential and credential.client_certificate) or found.client_certificate_data
            key_data = (credential and credential.client_key) or found.client_key_data
            try:
                ssl_context = tls_context(
                    ca_path=None if found.certificate_authority_data else found.certificate_authority,
                    ca_data=found.certificate_authority_data,
                    cert_path=None if cert_data else found.client_certificate, cert_data=cert_data,
                    key_path=None if key_data else found.client_key, key_data=key_data,
                    insecure=found.insecure_skip_tls_verify)
            except (OSError, ValueError) as error:  # ssl.SSLError is an OSError
                raise ApiError(0, f"cannot use the TLS files of context {found.name!r} "
                               f"({', '.join(found.files)}): {error}") from error
        authorization, blocks = _kubeconfig_authorization(found, credential, environ)
        return cls(server=found.server.rstrip("/"), ssl_context=ssl_context,
                   authorization=authorization, authorization_blocks=blocks,
                   namespace=found.namespace, headers=found.impersonate,
                   server_hostname=found.tls_server_name, proxy=found.proxy_url)

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


def _kubeconfig_authorization(
    found: kubeconfig_loader.Context, credential: ExecCredential | None,
    environ: Mapping[str, str],
) -> tuple[Callable[[], str | None], bool]:
    """The ``Authorization`` header of a kubeconfig user, by client-go's precedence: token, token
    file (read each time: it may be rotated), basic, else the exec plugin's token (run again
    once expired); and whether asking for it may block (only the plugin's may)."""
    if found.token:
        return (lambda: f"Bearer {found.token}"), False
    if found.token_file:
        token_file = Path(found.token_file)
        return (lambda: "Bearer " + token_file.read_text(encoding="utf-8").strip()), False
    if found.username or found.password:
        basic = base64.b64encode(f"{found.username or ''}:{found.password or ''}".encode()).decode()
        return (lambda: f"Basic {basic}"), False
    plugin = found.exec_plugin
    if plugin is None or credential is None or not credential.token:
        return (lambda: None), False
    latest, lock = [credential], threading.Lock()

    def from_plugin() -> str | None:
        with lock:  # concurrent requests run an expired plugin once
            if latest[0].expired():
                latest[0] = plugin.run(environ)
            return f"Bearer {latest[0].token}" if latest[0].token else None

    return from_plugin, True


