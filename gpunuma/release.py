"""The settings of the gpunuma release installed in a cluster, as its webhook runs with them.

``gpunuma inject`` mutates manifests offline with the same settings the cluster's webhook would use
(launcher image, GPU resources, GPU claims, default policy), like ``linkerd inject`` reads its
control plane's configuration. The chart hands those settings to the webhook as ``GPUNUMA_*``
variables on its Deployment (labelled ``app.kubernetes.io/part-of=gpunuma``,
``app.kubernetes.io/component=webhook``), so they are read from there: one list request, with a
short timeout, through the user's kubeconfig. Any failure (no kubeconfig, no cluster, no release,
no permission) is a :class:`ReleaseUnavailable` whose message says why; the caller then uses its
defaults and says so.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gpunuma import names
from gpunuma.kubeapi import ApiError, Connection, KubeClient

__all__ = ["Release", "ReleaseUnavailable", "read_release"]

WEBHOOK_SELECTOR = ",".join(f"{key}={value}" for key, value in names.WEBHOOK_LABELS.items())
DEPLOYMENTS = "/apis/apps/v1/deployments"
WEBHOOK_CONTAINER = "webhook"


class ReleaseUnavailable(Exception):
    """No release could be read; the message says why, for one line on stderr."""


@dataclass(frozen=True)
class Release:
    namespace: str
    deployment: str
    environment: Mapping[str, str]
    """The webhook container's ``GPUNUMA_*`` variables that have literal values."""

    @property
    def where(self) -> str:
        return f"the webhook Deployment {self.namespace}/{self.deployment}"


def release_from_deployments(deployments: list[dict[str, Any]]) -> Release:
    """The one release among gpunuma's webhook Deployments (pure; raises ReleaseUnavailable)."""
    if not deployments:
        raise ReleaseUnavailable("no gpunuma release in this cluster (no webhook Deployment labelled "
                                 f"{WEBHOOK_SELECTOR})")
    if len(deployments) > 1:
        found = ", ".join(f"{d['metadata'].get('namespace')}/{d['metadata'].get('name')}"
                          for d in deployments)
        raise ReleaseUnavailable(f"several gpunuma releases ({found}): give the settings as flags")
    deployment = deployments[0]
    template = (deployment.get("spec") or {}).get("template") or {}
    containers = (template.get("spec") or {}).get("containers") or []
    container = next((c for c in containers if c.get("name") == WEBHOOK_CONTAINER), None)
    if container is None:
        raise ReleaseUnavailable("the webhook Deployment has no container named webhook")
    environment = {entry["name"]: str(entry["value"]) for entry in container.get("env") or []
                   if str(entry.get("name", "")).startswith("GPUNUMA_") and "value" in entry}
    metadata = deployment.get("metadata") or {}
    return Release(str(metadata.get("namespace")), str(metadata.get("name")), environment)


def read_release(kubeconfig: Path | None, context: str | None, *, timeout_s: float = 5.0) -> Release:
    """The installed release, through the kubeconfig's context. Raises ReleaseUnavailable."""
    try:
        connection = Connection.from_kubeconfig(kubeconfig, context)
    except ApiError as exc:
        raise ReleaseUnavailable(str(exc.__cause__ or exc.message)) from exc
    return asyncio.run(_read(connection, timeout_s))


async def _read(connection: Connection, timeout_s: float) -> Release:
    client = KubeClient(connection, user_agent="gpunuma-inject", timeout_s=timeout_s)
    try:
        found = await asyncio.wait_for(
            client.get(f"{DEPLOYMENTS}?labelSelector={WEBHOOK_SELECTOR}"), timeout_s)
    except ApiError as exc:
        raise ReleaseUnavailable(f"cannot list Deployments at {connection.server}: {exc.message}") from exc
    except TimeoutError as exc:
        raise ReleaseUnavailable(f"{connection.server} did not answer within {timeout_s:g} s") from exc
    finally:
        await client.close()
    return release_from_deployments(list((found or {}).get("items") or []))
