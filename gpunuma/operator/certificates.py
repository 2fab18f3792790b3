"""Webhook serving certificates: a private CA, a leaf for the Service's DNS names, renewal, rollover.

No I/O: the operator reads the two Secrets, asks :func:`plan` what (if anything) must change and
writes the result. Two Secrets, because the webhook pod mounts the serving one and has no business
holding the CA's private key:

- serving Secret (``kubernetes.io/tls``): ``tls.crt``, ``tls.key``, ``ca.crt`` (the CA bundle);
- CA Secret (``<serving>-ca``): ``tls.crt``/``tls.key`` of the CA, ``previous.crt`` (retired CAs).

A CA rollover keeps the retired CA in the bundle until it expires: the API server trusts both while
the new leaf propagates to the webhook pods, so no admission call fails in between. Keys are ECDSA
P-256 (fast to generate, accepted by every supported API server).
"""

from __future__ import annotations

import base64
import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from gpunuma.settings import CertificateSettings

__all__ = [
    "CA_BUNDLE_KEY",
    "Pki",
    "PkiError",
    "ca_bundle",
    "pki_from_secrets",
    "pki_to_secrets",
    "plan",
    "served_cas",
    "service_dns_names",
]

TLS_CERT_KEY = "tls.crt"
TLS_KEY_KEY = "tls.key"
CA_BUNDLE_KEY = "ca.crt"
PREVIOUS_CA_KEY = "previous.crt"


class PkiError(ValueError):
    """Secret contents that are not a usable CA/leaf pair (the operator then issues fresh ones)."""


@dataclass(frozen=True, slots=True)
class Pki:
    ca_cert: x509.Certificate
    ca_key: ec.EllipticCurvePrivateKey
    leaf_cert: x509.Certificate
    leaf_key: ec.EllipticCurvePrivateKey
    previous_cas: tuple[x509.Certificate, ...] = ()


def service_dns_names(service: str, namespace: str) -> list[str]:
    """The names the API server may use to reach a webhook Service."""
    return [
        service,
        f"{service}.{namespace}",
        f"{service}.{namespace}.svc",
        f"{service}.{namespace}.svc.cluster.local",
    ]


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _serial() -> int:
    return x509.random_serial_number()


def new_ca(now: dt.datetime, policy: CertificateSettings, common_name: str) -> tuple[
    x509.Certificate, ec.EllipticCurvePrivateKey
]:
    key = _new_key()
    # A timestamp in the name keeps successive CAs distinguishable in a bundle and in logs.
    name = x509.Name([
        x509.NameAttribute(NameOID.COMMON_NAME, f"{common_name} {now:%Y%m%dT%H%M%SZ}"),
    ])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(_serial())
        .not_valid_before(now - dt.timedelta(minutes=5))  # tolerate clock skew
        .not_valid_after(now + policy.ca_validity)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, key_cert_sign=True, crl_sign=True,
                content_commitment=False, key_encipherment=False, data_encipherment=False,
                key_agreement=False, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def new_leaf(
    ca_cert: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey, dns_names: Sequence[str],
    now: dt.datetime, policy: CertificateSettings,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    if not dns_names:
        raise ValueError("a serving certificate needs at least one DNS name")
    key = _new_key()
    not_after = min(now + policy.leaf_validity, ca_cert.not_valid_after_utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, dns_names[-1])]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(_serial())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(not_after)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in dns_names]),
                       critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, key_encipherment=False, content_commitment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=False,
                crl_sign=False, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_cert.public_key()),  # type: ignore[arg-type]
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    return cert, key


def _dns_names(cert: x509.Certificate) -> list[str]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return []
    return san.value.get_values_for_type(x509.DNSName)


def _matches_key(cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> bool:
    return cert.public_key() == key.public_key()


def _issued_by(leaf: x509.Certificate, ca: x509.Certificate) -> bool:
    try:
        leaf.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def plan(
    current: Pki | None, now: dt.datetime, dns_names: Sequence[str], policy: CertificateSettings,
    *, common_name: str = "gpunuma webhook CA", served: Sequence[x509.Certificate] = (),
) -> tuple[Pki, str] | None:
    """What the certificates should become, with a reason; ``None`` when nothing must change.

    Reasons: ``Created`` (nothing usable yet), ``CARotated`` (CA near expiry: new CA and leaf, old
    CA kept in the bundle), ``Renewed`` (leaf near expiry, for other names, or not from this CA),
    ``PrunedExpiredCA`` (a retired CA expired and leaves the bundle).

    ``served``: the CAs that issued the leaf webhook pods may still be serving (see
    :func:`served_cas`). When a new CA must be created because the CA Secret is gone, they stay in
    the bundle as retired CAs: the pods serve the old leaf until they reload the new one, and a
    bundle of the new CA alone would fail every admission meanwhile.
    """
    if current is None or not _matches_key(current.ca_cert, current.ca_key):
        ca_cert, ca_key = new_ca(now, policy, common_name)
        leaf_cert, leaf_key = new_leaf(ca_cert, ca_key, dns_names, now, policy)
        kept = tuple(ca for ca in served if ca.not_valid_after_utc > now and ca != ca_cert)
        return Pki(ca_cert, ca_key, leaf_cert, leaf_key, kept), "Created"

    previous = tuple(c for c in current.previous_cas if c.not_valid_after_utc > now)
    if now >= current.ca_cert.not_valid_after_utc - policy.ca_renew_before:
        ca_cert, ca_key = new_ca(now, policy, common_name)
        leaf_cert, leaf_key = new_leaf(ca_cert, ca_key, dns_names, now, policy)
        retired = (current.ca_cert, *previous) if current.ca_cert.not_valid_after_utc > now else previous
        return Pki(ca_cert, ca_key, leaf_cert, leaf_key, retired), "CARotated"

    leaf = current.leaf_cert
    if (
        now >= leaf.not_valid_after_utc - policy.leaf_renew_before
        or sorted(_dns_names(leaf)) != sorted(dns_names)
        or not _matches_key(leaf, current.leaf_key)
        or not _issued_by(leaf, current.ca_cert)
    ):
        leaf_cert, leaf_key = new_leaf(current.ca_cert, current.ca_key, dns_names, now, policy)
        return replace(current, leaf_cert=leaf_cert, leaf_key=leaf_key,
                       previous_cas=previous), "Renewed"

    if previous != current.previous_cas:
        return replace(current, previous_cas=previous), "PrunedExpiredCA"
    return None


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def ca_bundle(pki: Pki) -> bytes:
    """PEM bundle the API server should trust: the current CA first, then retired ones."""
    return b"".join(_pem(cert) for cert in (pki.ca_cert, *pki.previous_cas))


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def pki_to_secrets(pki: Pki) -> tuple[dict[str, str], dict[str, str]]:
    """``data`` maps (base64 values) for the serving Secret and the CA Secret."""
    serving = {
        TLS_CERT_KEY: _b64(_pem(pki.leaf_cert)),
        TLS_KEY_KEY: _b64(_key_pem(pki.leaf_key)),
        CA_BUNDLE_KEY: _b64(ca_bundle(pki)),
    }
    authority = {
        TLS_CERT_KEY: _b64(_pem(pki.ca_cert)),
        TLS_KEY_KEY: _b64(_key_pem(pki.ca_key)),
        PREVIOUS_CA_KEY: _b64(b"".join(_pem(c) for c in pki.previous_cas)),
    }
    return serving, authority


def served_cas(serving: Mapping[str, str] | None, now: dt.datetime) -> tuple[x509.Certificate, ...]:
    """The CA of the serving Secret's ``ca.crt`` that signed its ``tls.crt`` (the leaf webhook
    pods serve), if unexpired; nothing when the Secret is missing or unreadable.

    Only a CA that verifiably issued the served leaf is kept: ``ca.crt`` is not otherwise trusted
    into the bundle.
    """
    try:
        leaf = x509.load_pem_x509_certificate(_field(serving or {}, TLS_CERT_KEY, "serving"))
        bundle = x509.load_pem_x509_certificates(_field(serving or {}, CA_BUNDLE_KEY, "serving"))
    except (PkiError, ValueError, TypeError):
        return ()
    return tuple(ca for ca in bundle
                 if ca.not_valid_after_utc > now and _issued_by(leaf, ca))[:1]


def pki_from_secrets(
    serving: Mapping[str, str] | None, authority: Mapping[str, str] | None,
) -> Pki:
    """Read the Secrets' ``data`` back; :class:`PkiError` says what is missing or unreadable.

    A readable CA Secret is kept even when the serving Secret is gone or unreadable (deleted by
    hand to force a new certificate, a partial restore): the API server trusts that CA, while the
    webhook still serves its old leaf until its Secret volume is updated, so a new CA would fail
    (or, under ``Ignore``, silently skip) every admission in between. The CA then stands in for
    the leaf, and :func:`plan` renews it (it names no Service) from the same CA.
    """
    if not authority:
        raise PkiError("the CA Secret does not exist yet")
    try:
        ca_cert = x509.load_pem_x509_certificate(_field(authority, TLS_CERT_KEY, "CA"))
        ca_key = _ec_key(_field(authority, TLS_KEY_KEY, "CA"), "CA")
        previous_pem = base64.b64decode(authority.get(PREVIOUS_CA_KEY) or "")
        previous = tuple(x509.load_pem_x509_certificates(previous_pem)) if previous_pem else ()
    except (ValueError, TypeError) as exc:
        raise PkiError(f"unreadable certificate data: {exc}") from None
    try:
        if not serving:
            raise PkiError("the serving Secret does not exist")
        leaf_cert = x509.load_pem_x509_certificate(_field(serving, TLS_CERT_KEY, "serving"))
        leaf_key = _ec_key(_field(serving, TLS_KEY_KEY, "serving"), "serving")
    except (PkiError, ValueError, TypeError):
        leaf_cert, leaf_key = ca_cert, ca_key
    return Pki(ca_cert, ca_key, leaf_cert, leaf_key, previous)


def _field(data: Mapping[str, str], key: str, which: str) -> bytes:
    value = data.get(key)
    if not value:
        raise PkiError(f"the {which} Secret has no {key!r}")
    return base64.b64decode(value, validate=True)


def _ec_key(pem: bytes, which: str) -> ec.EllipticCurvePrivateKey:
    key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise PkiError(f"the {which} Secret's key is not an EC key")
    return key
