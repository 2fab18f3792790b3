"""The few reads ``kubectl gpunuma`` makes, through the chosen kubeconfig context, as kubectl does.

The only part of the plugin that talks to the API server, with gpunuma's one client
(:mod:`gpunuma.kubeapi`, the agent's and the operator's too); a failure becomes a
:class:`ClusterError` phrased for the user.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from gpunuma import names
from gpunuma.kubeapi import ApiError, Connection, KubeClient, StdlibTransport

__all__ = ["ClusterError", "KubeApi"]

# Bytes read from the start of a container's log: numa-exec writes its line before the workload.
LOG_HEAD_BYTES = 64 * 1024
LAYOUTS = f"/apis/{names.CRD_GROUP}/{names.CRD_VERSION}/{names.CRD_PLURAL}"
WEBHOOK_CONFIGURATIONS = "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations"


class ClusterError(Exception):
    """A failure talking to the cluster, phrased for the user (what failed, what to do)."""


class KubeApi:
    """The plugin's reads, as plain JSON. Use it as an async context manager (it closes the client)."""

    def __init__(
        self, kubeconfig: str | None = None, context: str | None = None, timeout: float = 15.0,
    ) -> None:
        path = Path(kubeconfig) if kubeconfig else None
        try:
            connection = Connection.from_kubeconfig(path, context)
        except ApiError as exc:
            where = kubeconfig or os.environ.get("KUBECONFIG") or "~/.kube/config"
            raise ClusterError(f"cannot load the kubeconfig ({where}): "
                               f"{exc.__cause__ or exc.message}") from exc
        self.namespace: str = connection.namespace or "default"
        self.server: str = connection.server
        # The standard library's transport: aiohttp's import alone would double the start-up.
        self._client = KubeClient(connection, user_agent="kubectl-gpunuma",
                                  transport=StdlibTransport(timeout))

    async def __aenter__(self) -> KubeApi:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self._client.close()

    async def _get(self, what: str, path: str, **query: str | int) -> dict[str, Any] | None:
        """The object at ``path``; None for 404; anything else becomes a ClusterError."""
        try:
            return await self._client.get(_with_query(path, query))
        except ApiError as exc:
            raise self._error(what, exc) from exc

    def _error(self, what: str, exc: ApiError) -> ClusterError:
        if exc.status in (401, 403):
            return ClusterError(f"not allowed to {what}: {exc.message}")
        if exc.status == 0:
            return ClusterError(f"cannot reach the cluster at {self.server} to {what}: {exc.message}")
        return ClusterError(f"cannot {what}: HTTP {exc.status} {exc.message}")

    def _not_installed(self) -> ClusterError:
        return ClusterError(
            f"gpunuma is not installed in this cluster: the GPUNumaLayout CRD "
            f"({names.CRD_PLURAL}.{names.CRD_GROUP}) was not found at {self.server}. "
            "Install the chart (helm install gpunuma charts/gpunuma -n gpunuma-system "
            "--create-namespace), or check --context."
        )

    async def list_layouts(self) -> list[dict[str, Any]]:
        found = await self._get("list GPUNumaLayouts", LAYOUTS)
        if found is None:
            raise self._not_installed()
        items: list[dict[str, Any]] = found.get("items") or []
        return items

    async def require_installed(self) -> None:
        """Raise the plain "gpunuma is not installed" error when the GPUNumaLayout API is not served."""
        if await self._get("list GPUNumaLayouts", LAYOUTS, limit=1) is None:
            raise self._not_installed()

    async def list_nodes(self, selector: str | None = None) -> list[dict[str, Any]]:
        query: dict[str, str | int] = {"labelSelector": selector} if selector else {}
        found = await self._get("list nodes", "/api/v1/nodes", **query)
        return list((found or {}).get("items") or [])

    async def list_managed_pods(
        self, namespace: str | None, selector: str | None = None,
    ) -> list[dict[str, Any]]:
        selector = ",".join(filter(None, (f"{names.LABEL_MANAGED}=true", selector)))
        if namespace is None:
            found = await self._get("list pods", "/api/v1/pods", labelSelector=selector)
        else:
            found = await self._get(f"list pods in {namespace}",
                                    f"/api/v1/namespaces/{namespace}/pods", labelSelector=selector)
        return list((found or {}).get("items") or [])

    async def read_pod(self, namespace: str, name: str) -> dict[str, Any] | None:
        return await self._get(f"read pod {namespace}/{name}",
                               f"/api/v1/namespaces/{namespace}/pods/{name}")

    async def read_namespace(self, name: str) -> dict[str, Any] | None:
        """The namespace, or None when it cannot be read (its label then shows as unknown)."""
        try:
            return await self._get(f"read namespace {name}", f"/api/v1/namespaces/{name}")
        except ClusterError:
            return None

    async def list_webhook_configurations(self) -> list[dict[str, Any]]:
        """gpunuma's MutatingWebhookConfigurations; empty when they cannot be read (RBAC)."""
        selector = ",".join(f"{key}={value}" for key, value in names.WEBHOOK_LABELS.items())
        try:
            found = await self._get("list MutatingWebhookConfigurations", WEBHOOK_CONFIGURATIONS,
                                    labelSelector=selector)
        except ClusterError:
            return []
        return list((found or {}).get("items") or [])

    async def read_log_head(self, namespace: str, pod: str, container: str) -> str | None:
        """The first bytes of a container's log (numa-exec writes first); None when there is none."""
        path = _with_query(f"/api/v1/namespaces/{namespace}/pods/{pod}/log",
                           {"container": container, "limitBytes": LOG_HEAD_BYTES})
        try:
            return await self._client.read_text(path)
        except ApiError:
            return None  # e.g. 400 while the container is still waiting to start


def _with_query(path: str, query: dict[str, str | int]) -> str:
    return f"{path}?{urlencode(query)}" if query else path
