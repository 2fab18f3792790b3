"""The webhook's serving certificate: its TLS context, and the pair re-read when it changes on disk.

New connections get the newest pair that loaded, open ones keep theirs, and a pair that fails to
load (mid-rotation, one file new and the other old) leaves the previous one serving.
"""

from __future__ import annotations

import logging
import ssl
from pathlib import Path

__all__ = ["TLS12_CIPHERS", "CertificateReloader", "TLSError"]

# TLS 1.2 offers only forward-secret AEAD suites (TLS 1.3's are all AEAD and not set here).
TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20"

log = logging.getLogger("gpunuma.webhook")


class TLSError(RuntimeError):
    """The certificate or key cannot be loaded; the message names the files."""


def _server_context(cert_file: Path, key_file: Path) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(TLS12_CIPHERS)
    context.set_alpn_protocols(["http/1.1"])
    try:
        context.load_cert_chain(cert_file, key_file)
    except (OSError, ssl.SSLError) as exc:
        raise TLSError(f"cannot load the TLS certificate {cert_file} with the key {key_file}: "
                       f"{exc}") from exc
    return context


def _read_pair(cert_file: Path, key_file: Path) -> tuple[bytes, bytes] | None:
    try:
        return cert_file.read_bytes(), key_file.read_bytes()
    except OSError:
        return None


class CertificateReloader:
    """The listening TLS context, handing each new connection the newest loaded certificate.

    The server's context is fixed when it starts listening; its SNI callback (which OpenSSL calls
    for every handshake, with or without a server name) switches the connection to the context
    loaded last. A new context is built whole and swapped in one assignment, so a handshake never
    sees a new certificate with an old key.
    """

    def __init__(self, cert_file: Path, key_file: Path) -> None:
        self._cert_file, self._key_file = cert_file, key_file
        self._loaded = _read_pair(cert_file, key_file)
        self._failed: tuple[bytes, bytes] | None = None
        self.context = _server_context(cert_file, key_file)
        self._current = self.context
        self.context.sni_callback = self._select

    def _select(self, connection: ssl.SSLObject, server_name: str | None,
                context: ssl.SSLContext) -> None:
        current = self._current
        if connection.context is not current:
            connection.context = current

    def reload_if_changed(self) -> bool | None:
        """Load the files if their contents changed: True when loaded, False when that failed
        (the previous pair keeps serving), None when nothing changed."""
        contents = _read_pair(self._cert_file, self._key_file)
        if contents is None or contents in (self._loaded, self._failed):
            return None
        try:
            context = _server_context(self._cert_file, self._key_file)
        except TLSError as exc:
            # Mid-rotation one file may be new and the other old: the next change is tried again,
            # this pair is not (it would log the same warning every few seconds).
            self._failed = contents
            log.warning("keeping the current certificate: %s", exc)
            return False
        self._current, self._loaded = context, contents
        log.info("loaded the new TLS certificate from %s", self._cert_file)
        return True
