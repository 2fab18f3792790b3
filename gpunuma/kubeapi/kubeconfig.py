"""Kubeconfig files, read as kubectl reads them: which files, how they merge, which context.

:func:`load` follows client-go's loading rules, so that ``kubectl gpunuma``, ``gpunuma check`` and
an agent run with ``--kubeconfig`` talk to the cluster, as the user, that kubectl would:

- ``--kubeconfig`` names one file, which must exist; otherwise every file of ``$KUBECONFIG`` (a
  ``:``-separated list, missing files skipped), else ``~/.kube/config``;
- merged by name: the first file to define a cluster, user or context wins it whole, and the first
  file that sets ``current-context`` sets it;
- a relative file name (``certificate-authority``, ``client-certificate``, ``client-key``,
  ``tokenFile``, and an exec plugin's ``command`` when it holds a ``/``) is relative to the file
  that holds it; ``~`` is not expanded, as kubectl does not;
- ``*-data`` wins over the file it replaces, ``token`` over ``tokenFile``.

The result is a :class:`Context`: plain data, no connection made. Credentials that need work at
request time (re-reading a token file, running an exec plugin again) are the connection's
(:mod:`gpunuma.kubeapi.connection`); :mod:`gpunuma.kubeapi.execplugin` runs a plugin. This
module imports nothing heavier than PyYAML: the kubectl plugin's start-up depends on it. Every
refusal is a :class:`KubeconfigError` naming the file, the entry and the fix.
"""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gpunuma.kubeapi.execplugin import ExecPlugin

__all__ = ["Context", "KubeconfigError", "load", "merge", "select"]

DEFAULT_PATH = "~/.kube/config"
EXEC_API_VERSIONS = ("client.authentication.k8s.io/v1", "client.authentication.k8s.io/v1beta1")
INTERACTIVE_MODES = ("Never", "IfAvailable", "Always")
# Extension of a cluster passed to exec plugins that ask for the cluster's details.
EXEC_EXTENSION = "client.authentication.k8s.io/exec"
SECTIONS = (("clusters", "cluster"), ("users", "user"), ("contexts", "context"))


class KubeconfigError(Exception):
    """A kubeconfig that cannot be used as it is: what is wrong, where, and what to do."""


@dataclass(frozen=True)
class Context:
    """A kubeconfig context, resolved: the cluster to reach and the user to be.

    File names are absolute; ``*_data`` fields are PEM bytes (decoded from the kubeconfig's
    base64). ``impersonate`` holds the ``Impersonate-*`` headers of the user's ``as*`` fields.
    """

    name: str
    server: str
    namespace: str = "default"
    certificate_authority: str | None = None
    certificate_authority_data: bytes | None = None
    insecure_skip_tls_verify: bool = False
    tls_server_name: str | None = None
    proxy_url: str | None = None
    client_certificate: str | None = None
    client_certificate_data: bytes | None = None
    client_key: str | None = None
    client_key_data: bytes | None = None
    token: str | None = None
    token_file: str | None = None
    username: str | None = None
    password: str | None = None
    impersonate: tuple[tuple[str, str], ...] = ()
    exec_plugin: ExecPlugin | None = None
    files: tuple[str, ...] = field(default=(), compare=False)  # where it came from, for messages


def load(path: Path | None = None, context: str | None = None,
         environ: Mapping[str, str] = os.environ) -> Context:
    """The named (else the current) context of the kubeconfig kubectl would read."""
    if path is not None:
        if not path.is_file():
            raise KubeconfigError(f"{path} does not exist: check --kubeconfig")
        files = [path]
    else:
        listed = environ.get("KUBECONFIG") or DEFAULT_PATH
        candidates = [Path(item).expanduser() for item in listed.split(os.pathsep) if item]
        files = [file for file in candidates if file.is_file()]
        if not files:
            what = "none of the files in KUBECONFIG exists" if environ.get("KUBECONFIG") else \
                f"{DEFAULT_PATH} does not exist"
            raise KubeconfigError(f"no kubeconfig to read: {what} ({listed}); set KUBECONFIG "
                                  "or pass --kubeconfig")
    return select(merge([(file, _read(file)) for file in files]), context)


def _read(file: Path) -> dict[str, Any]:
    import yaml  # noqa: PLC0415 - only where a kubeconfig is read

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        document = yaml.load(file.read_text(encoding="utf-8"), Loader=loader)  # noqa: S506 - safe
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        raise KubeconfigError(f"cannot read the kubeconfig {file}: {error}") from None
    if document is None:
        return {}
    if not isinstance(document, dict):
        raise KubeconfigError(f"the kubeconfig {file} is not a mapping (apiVersion: v1, kind: "
                              "Config, clusters, users, contexts)")
    return document


def merge(documents: Sequence[tuple[Path, Mapping[str, Any]]]) -> dict[str, Any]:
    """Kubeconfig documents merged as client-go merges them, in order of precedence.

    Returns ``current-context`` and, per section, name → (entry, the file that defined it), with
    the entry's relative file names made absolute against that file's folder.
    """
    merged: dict[str, Any] = {"current-context": "", "files": tuple(str(f) for f, _ in documents)}
    for section, _ in SECTIONS:
        merged[section] = {}
    for file, document in documents:
        if not merged["current-context"] and document.get("current-context"):
            merged["current-context"] = str(document["current-context"])
        for section, inner in SECTIONS:
            items = document.get(section) or []
            if not isinstance(items, list):
                raise KubeconfigError(f"the kubeconfig {file}: {section} must be a list")
            for item in items:
                if not isinstance(item, dict) or not isinstance(item.get("name"), str):
                    raise KubeconfigError(f"the kubeconfig {file}: every entry of {section} "
                                          "needs a name")
                body = item.get(inner) or {}
                if not isinstance(body, dict):
                    raise KubeconfigError(f"the kubeconfig {file}: {section[:-1]} "
                                          f"{item['name']!r} must hold a mapping under {inner}")
                merged[section].setdefault(item["name"], (_absolute(body, inner, file), file))
    return merged


def _absolute(body: Mapping[str, Any], inner: str, file: Path) -> dict[str, Any]:
    base = file.absolute().parent
    resolved = dict(body)
    keys = {"cluster": ("certificate-authority",),
            "user": ("client-certificate", "client-key", "tokenFile")}.get(inner, ())
    for key in keys:
        if isinstance(resolved.get(key), str) and resolved[key]:
            resolved[key] = _join(base, resolved[key])
    plugin = resolved.get("exec")
    if isinstance(plugin, dict) and isinstance(plugin.get("command"), str) \
            and os.sep in plugin["command"]:
        resolved["exec"] = {**plugin, "command": _join(base, plugin["command"])}
    return resolved


def _join(base: Path, name: str) -> str:
    """``name`` relative to ``base``, cleaned as Go's filepath.Join does; absolute stays as is."""
    return os.path.normpath(os.path.join(base, name))


def select(merged: Mapping[str, Any], name: str | None = None) -> Context:
    """The context ``name`` (else the current one) of a :func:`merge` result, resolved."""
    where = ", ".join(merged.get("files", ())) or "the kubeconfig"
    chosen = name or merged["current-context"]
    if not chosen:
        raise KubeconfigError(f"{where} has no current-context: pass --context, or run "
                              "`kubectl config use-context NAME`")
    if chosen not in merged["contexts"]:
        known = ", ".join(sorted(merged["contexts"])) or "none"
        raise KubeconfigError(f"{where} has no context {chosen!r} (contexts: {known})")
    context, file = merged["contexts"][chosen]
    cluster_name, user_name = _text(context, "cluster", file), _text(context, "user", file)
    if not cluster_name or cluster_name not in merged["clusters"]:
        raise KubeconfigError(f"context {chosen!r} in {file} names cluster {cluster_name!r}, which "
                              f"no file of {where} defines")
    cluster, cluster_file = merged["clusters"][cluster_name]
    user: dict[str, Any] = {}
    if user_name:
        if user_name not in merged["users"]:
            raise KubeconfigError(f"context {chosen!r} in {file} names user {user_name!r}, which "
                                  f"no file of {where} defines")
        user, user_file = merged["users"][user_name]
    else:
        user_file = file
    server = _text(cluster, "server", cluster_file)
    if not server:
        raise KubeconfigError(f"cluster {cluster_name!r} in {cluster_file} has no server")
    found = Context(
        name=chosen,
        server=server,
        namespace=_text(context, "namespace", file) or "default",
        certificate_authority=_text(cluster, "certificate-authority", cluster_file),
        certificate_authority_data=_pem(cluster, "certificate-authority-data", cluster_file),
        insecure_skip_tls_verify=_flag(cluster, "insecure-skip-tls-verify", cluster_file),
        tls_server_name=_text(cluster, "tls-server-name", cluster_file),
        proxy_url=_text(cluster, "proxy-url", cluster_file),
        client_certificate=_text(user, "client-certificate", user_file),
        client_certificate_data=_pem(user, "client-certificate-data", user_file),
        client_key=_text(user, "client-key", user_file),
        client_key_data=_pem(user, "client-key-data", user_file),
        token=_text(user, "token", user_file),
        token_file=_text(user, "tokenFile", user_file),
        username=_text(user, "username", user_file),
        password=_text(user, "password", user_file),
        impersonate=_impersonation(user, user_file),
        exec_plugin=_exec_plugin(user_name or "", user, user_file, cluster),
        files=tuple(merged.get("files", ())),
    )
    _refuse_unusable(found, user_name or "", user, user_file)
    return found


def _refuse_unusable(found: Context, user_name: str, user: Mapping[str, Any], file: Path) -> None:
    """What kubectl refuses too, said before any request is made."""
    if user.get("auth-provider"):
        provider = user["auth-provider"].get("name", "?") if isinstance(user["auth-provider"], dict) \
            else "?"
        raise KubeconfigError(
            f"user {user_name!r} in {file} authenticates with auth-provider {provider!r}, which "
            "kubectl no longer supports either: switch it to the provider's exec credential "
            "plugin (e.g. kubelogin, gke-gcloud-auth-plugin)")
    if (found.client_certificate or found.client_certificate_data) and \
            not (found.client_key or found.client_key_data):
        raise KubeconfigError(f"user {user_name!r} in {file} has a client certificate without "
                              "client-key or client-key-data")
    if found.token and (found.username or found.password):
        raise KubeconfigError(f"user {user_name!r} in {file} has both a token and a username/"
                              "password: keep one")
    if found.proxy_url and not found.proxy_url.startswith("http://"):
        raise KubeconfigError(f"cluster of context {found.name!r}: proxy-url {found.proxy_url!r} "
                              "is not supported; gpunuma goes through http:// proxies (CONNECT)")


def _text(entry: Mapping[str, Any], key: str, file: Path) -> str | None:
    value = entry.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise KubeconfigError(f"the kubeconfig {file}: {key} must be a string, not {value!r} "
                              "(quote it)")
    return value


def _flag(entry: Mapping[str, Any], key: str, file: Path) -> bool:
    value = entry.get(key, False)
    if not isinstance(value, bool):  # "false", quoted, would otherwise read as true
        raise KubeconfigError(f"the kubeconfig {file}: {key} must be true or false, not {value!r}")
    return value


def _pem(entry: Mapping[str, Any], key: str, file: Path) -> bytes | None:
    value = _text(entry, key, file)
    if value is None:
        return None
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise KubeconfigError(f"the kubeconfig {file}: {key} is not base64 (it holds the PEM "
                              "text base64-encoded, as `base64 -w0 FILE` prints it)") from None


def _impersonation(user: Mapping[str, Any], file: Path) -> tuple[tuple[str, str], ...]:
    headers: list[tuple[str, str]] = []
    if acting := _text(user, "as", file):
        headers.append(("Impersonate-User", acting))
    if uid := _text(user, "as-uid", file):
        headers.append(("Impersonate-Uid", uid))
    headers += [("Impersonate-Group", str(group)) for group in user.get("as-groups") or ()]
    for key, values in (user.get("as-user-extra") or {}).items():
        headers += [(f"Impersonate-Extra-{_header_key(str(key))}", str(value))
                    for value in values or ()]
    return tuple(headers)


# RFC 7230's token characters, less '%': an extra's key (``example.com/team``) travels in a header
# name, so the rest is %-encoded, as client-go does and the API server decodes.
_TOKEN = frozenset(b"!#$&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")


def _header_key(key: str) -> str:
    return "".join(chr(b) if b in _TOKEN else f"%{b:02X}" for b in key.encode())


def _exec_plugin(name: str, user: Mapping[str, Any], file: Path, cluster: Mapping[str, Any],
                 ) -> ExecPlugin | None:
    plugin = user.get("exec")
    if not plugin:
        return None
    if not isinstance(plugin, dict):
        raise KubeconfigError(f"user {name!r} in {file}: exec must be a mapping")
    api_version = _text(plugin, "apiVersion", file)
    if api_version not in EXEC_API_VERSIONS:
        raise KubeconfigError(f"user {name!r} in {file}: exec apiVersion {api_version!r} is not "
                              f"one of {', '.join(EXEC_API_VERSIONS)}")
    command = _text(plugin, "command", file)
    if not command:
        raise KubeconfigError(f"user {name!r} in {file}: exec needs a command")
    mode = _text(plugin, "interactiveMode", file)
    if mode is None and api_version.endswith("v1beta1"):
        mode = "IfAvailable"  # client-go's default for v1beta1; v1 must say
    if mode not in INTERACTIVE_MODES:
        raise KubeconfigError(f"user {name!r} in {file}: exec interactiveMode must be one of "
                              f"{', '.join(INTERACTIVE_MODES)}, not {mode!r}")
    env = []
    for item in plugin.get("env") or ():
        if not isinstance(item, dict) or not item.get("name"):
            raise KubeconfigError(f"user {name!r} in {file}: every exec env entry needs a name")
        env.append((str(item["name"]), str(item.get("value", ""))))
    cluster_info = None
    if _flag(plugin, "provideClusterInfo", file):
        extensions = {str(e.get("name")): e.get("extension") for e in cluster.get("extensions") or ()
                      if isinstance(e, dict)}
        cluster_info = {key: cluster[key] for key in (
            "server", "tls-server-name", "insecure-skip-tls-verify", "certificate-authority-data",
            "proxy-url", "disable-compression") if cluster.get(key) not in (None, "")}
        authority = _text(cluster, "certificate-authority", file)
        if authority and "certificate-authority-data" not in cluster_info:
            try:  # client-go sends the CA's content either way
                cluster_info["certificate-authority-data"] = base64.b64encode(
                    Path(authority).read_bytes()).decode()
            except OSError as error:
                raise KubeconfigError(f"cannot read certificate-authority {authority}: "
                                      f"{error.strerror}") from None
        if extensions.get(EXEC_EXTENSION) is not None:
            cluster_info["config"] = extensions[EXEC_EXTENSION]
    return ExecPlugin(user=name, api_version=api_version, command=command,
                      args=tuple(str(arg) for arg in plugin.get("args") or ()), env=tuple(env),
                      interactive_mode=mode, install_hint=str(plugin.get("installHint") or ""),
                      cluster_info=cluster_info)
