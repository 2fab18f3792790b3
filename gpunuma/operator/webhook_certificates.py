"""The webhook's serving certificates kept current: the I/O around :mod:`certificates`' plan.

Reads the two Secrets, asks :func:`certificates.plan` what must change, writes the CA bundle into
the MutatingWebhookConfiguration first and then the Secrets. Only with ``--certificates
self-managed``; a 403 says how to run without this.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from gpunuma.kubeapi import ApiError, KubeClient
from gpunuma.operator import paths
from gpunuma.operator.certificates import (
    Pki,
    PkiError,
    ca_bundle,
    pki_from_secrets,
    pki_to_secrets,
    plan,
    served_cas,
    service_dns_names,
)
from gpunuma.operator.events import EVENT_SOURCE
from gpunuma.rfc3339 import format_rfc3339
from gpunuma.settings import CertificateSettings

__all__ = ["CertificateReconciler"]

logger = logging.getLogger("gpunuma.operator")

Outcome = Literal["skipped", "unchanged", "written", "failed"]


@dataclass
class CertificateReconciler:
    settings: CertificateSettings
    client: KubeClient
    clock: Callable[[], dt.datetime]
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    # When the certificates in the Secrets expire ("serving", "ca"), as of the last round: /metrics.
    not_after: dict[str, dt.datetime] = field(default_factory=dict)

    async def reconcile(self) -> Outcome:
        if self.settings.mode != "self-managed":
            return "skipped"
        async with self._lock:
            try:
                return await self._reconcile()
            except ApiError as exc:
                hint = (" (no permission: without a webhook, or with certificates issued "
                        "elsewhere, run with --certificates cert-manager)"
                        if exc.status == 403 else "")
                logger.warning("webhook certificates: %s%s", exc, hint)
                return "failed"

    async def _reconcile(self) -> Literal["unchanged", "written"]:
        certs = self.settings
        serving = await self.client.get(paths.secret(certs.namespace, certs.secret_name))
        authority = await self.client.get(paths.secret(certs.namespace, f"{certs.secret_name}-ca"))
        try:
            current: Pki | None = pki_from_secrets(
                (serving or {}).get("data"), (authority or {}).get("data")
            )
        except PkiError as exc:
            if serving is not None or authority is not None:
                logger.warning("webhook certificates: %s; issuing new ones", exc)
            current = None
        now = self.clock()
        decision = plan(current, now, service_dns_names(certs.service_name, certs.namespace),
                        certs, served=served_cas((serving or {}).get("data"), now))
        if decision is None:
            assert current is not None
            self._record_expiry(current)
            await self._patch_ca_bundle(ca_bundle(current))
            return "unchanged"
        pki, reason = decision
        # The bundle first: the API server must trust the new CA before any webhook serves a
        # leaf from it (the old CA stays in the bundle, so the old leaf keeps working too).
        await self._patch_ca_bundle(ca_bundle(pki))
        serving_data, authority_data = pki_to_secrets(pki)
        await self._write_secret(f"{certs.secret_name}-ca", authority, authority_data, "Opaque")
        await self._write_secret(certs.secret_name, serving, serving_data, "kubernetes.io/tls")
        self._record_expiry(pki)
        logger.info("webhook certificates: %s (leaf valid until %s)", reason,
                    format_rfc3339(pki.leaf_cert.not_valid_after_utc))
        return "written"

    def _record_expiry(self, pki: Pki) -> None:
        self.not_after = {"serving": pki.leaf_cert.not_valid_after_utc,
                          "ca": pki.ca_cert.not_valid_after_utc}

    async def _write_secret(
        self, name: str, existing: Mapping[str, Any] | None, data: dict[str, str], kind: str,
    ) -> None:
        namespace = self.settings.namespace
        labels = {"app.kubernetes.io/managed-by": EVENT_SOURCE}
        if existing is None:
            await self.client.create(paths.secrets(namespace), {
                "apiVersion": "v1", "kind": "Secret", "type": kind,
                "metadata": {"name": name, "namespace": namespace, "labels": labels},
                "data": data,
            })
            return
        meta: dict[str, Any] = {"labels": labels}
        version = (existing.get("metadata") or {}).get("resourceVersion")
        if version:
            # A precondition: if another replica renewed meanwhile, this write fails (409)
            # instead of replacing its certificate; the next round adopts the winner's.
            meta["resourceVersion"] = version
        stale_keys = {key: None for key in (existing.get("data") or {}) if key not in data}
        await self.client.merge_patch(paths.secret(namespace, name),
                                      {"metadata": meta, "data": {**stale_keys, **data}})

    async def _patch_ca_bundle(self, bundle: bytes) -> None:
        name = self.settings.webhook_configuration
        path = paths.webhook_configuration(name)
        configuration = await self.client.get(path)
        if configuration is None:
            logger.warning("MutatingWebhookConfiguration %s does not exist; its caBundle will be "
                           "set once it does", name)
            return
        encoded = base64.b64encode(bundle).decode("ascii")
        ops: list[dict[str, Any]] = []
        for index, webhook in enumerate(configuration.get("webhooks") or []):
            if (webhook.get("clientConfig") or {}).get("caBundle") != encoded:
                # `test` pins the index to the webhook we read, should the list change meanwhile.
                ops.append({"op": "test", "path": f"/webhooks/{index}/name",
                            "value": webhook.get("name")})
                ops.append({"op": "add", "path": f"/webhooks/{index}/clientConfig/caBundle",
                            "value": encoded})
        if ops:
            await self.client.json_patch(path, ops)
            logger.info("MutatingWebhookConfiguration %s: caBundle updated", name)
