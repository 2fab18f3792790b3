"""Exec credential plugins (``aws eks get-token``, ``gke-gcloud-auth-plugin``…), run by client-go's
protocol: the plugin's env added to ours, the request in ``KUBERNETES_EXEC_INFO``, stdin shared
only when interactive, an ``ExecCredential`` (a token, or a client certificate and key) on stdout.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gpunuma.rfc3339 import parse_rfc3339

__all__ = ["ExecCredential", "ExecPlugin", "ExecPluginError"]


class ExecPluginError(Exception):
    """The plugin could not run, or did not answer a credential: what it did, and the fix."""


@dataclass(frozen=True)
class ExecCredential:
    """What an exec plugin answered: a bearer token, or a client certificate and key (PEM)."""

    token: str | None = None
    client_certificate: bytes | None = None
    client_key: bytes | None = None
    expires: dt.datetime | None = None  # None: valid until the server refuses it

    def expired(self, now: dt.datetime | None = None) -> bool:
        return self.expires is not None and (now or dt.datetime.now(dt.UTC)) >= self.expires


@dataclass(frozen=True)
class ExecPlugin:
    """A user's ``exec`` credential plugin (``aws eks get-token``, ``gke-gcloud-auth-plugin``…)."""

    user: str
    api_version: str
    command: str
    args: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    interactive_mode: str = "IfAvailable"
    install_hint: str = ""
    cluster_info: Mapping[str, Any] | None = None  # sent only when provideClusterInfo is true

    def run(self, environ: Mapping[str, str] = os.environ, timeout_s: float = 60.0,
            ) -> ExecCredential:
        """Run the plugin as client-go does: its env added to ours, the request in
        ``KUBERNETES_EXEC_INFO``, stdin shared only when interactive, the credential on stdout."""
        interactive = self.interactive_mode != "Never" and sys.stdin is not None and sys.stdin.isatty()
        if self.interactive_mode == "Always" and not interactive:
            raise self._error("its interactiveMode is Always and standard input is not a terminal")
        spec: dict[str, Any] = {"interactive": interactive}
        if self.cluster_info is not None:
            spec["cluster"] = dict(self.cluster_info)
        request = {"apiVersion": self.api_version, "kind": "ExecCredential", "spec": spec}
        env = {**environ, **dict(self.env), "KUBERNETES_EXEC_INFO": json.dumps(request)}
        try:
            done = subprocess.run(  # the user's own configured command
                [self.command, *self.args], env=env, stdout=subprocess.PIPE, check=False,
                stdin=None if interactive else subprocess.DEVNULL, timeout=timeout_s,
            )
        except FileNotFoundError:
            hint = f" {self.install_hint.strip()}" if self.install_hint.strip() else ""
            raise self._error(f"{self.command} is not installed or not on PATH.{hint}") from None
        except (OSError, subprocess.TimeoutExpired) as error:
            raise self._error(f"{self.command} could not run: {error}") from None
        if done.returncode != 0:
            raise self._error(f"{self.command} exited with status {done.returncode} (its own "
                              "message is above)")
        return self._credential(done.stdout)

    def _credential(self, stdout: bytes) -> ExecCredential:
        try:
            answer = json.loads(stdout)
        except ValueError:
            raise self._error(f"{self.command} did not print an ExecCredential (JSON): "
                              f"{stdout[:80]!r}") from None
        if not isinstance(answer, dict) or answer.get("kind") != "ExecCredential":
            raise self._error(f"{self.command} did not print an ExecCredential")
        if answer.get("apiVersion") != self.api_version:
            raise self._error(f"{self.command} answered apiVersion {answer.get('apiVersion')!r}; "
                              f"the kubeconfig asks for {self.api_version}")
        status = answer.get("status")
        if not isinstance(status, dict):
            raise self._error(f"{self.command} answered an ExecCredential without a status")
        token = status.get("token") or None
        certificate, key = status.get("clientCertificateData"), status.get("clientKeyData")
        if bool(certificate) != bool(key):
            raise self._error(f"{self.command} answered a client certificate or key, not both")
        if not token and not certificate:
            raise self._error(f"{self.command} answered neither a token nor a certificate and key")
        expires = None
        if status.get("expirationTimestamp"):
            try:
                expires = parse_rfc3339(str(status["expirationTimestamp"]))
            except ValueError as error:
                raise self._error(f"{self.command} answered expirationTimestamp: {error}") from None
        return ExecCredential(token=token,
                              client_certificate=str(certificate).encode() if certificate else None,
                              client_key=str(key).encode() if key else None, expires=expires)

    def _error(self, what: str) -> ExecPluginError:
        return ExecPluginError(f"the exec credential plugin of kubeconfig user {self.user!r} "
                               f"failed: {what}")
