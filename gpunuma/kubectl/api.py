"""The few reads ``kubectl gpunuma`` makes, through the chosen kubeconfig context, as kubectl does.

The only part of the plugin that talks to the API server; the client is imported only when a
command runs.
"""

from __future__ import annotations

import json
import os
from typing import Any

from gpunuma import names
from gpunuma.kubectl.objects import WEBHOOK_CONFIGURATION_LABELS

__all__ = ["ClusterError", "KubeApi"]


# Bytes read from the start of a container's log: numa-exec writes its line before the workload.
LOG_HEAD_BYTES = 64 * 1024

class ClusterError(Exception):
    """A failure talking to the cluster, phrased for the user (what failed, what to do)."""

class KubeApi:
    """The few reads the plugin makes, as plain JSON, through the chosen kubeconfig context."""

    def __init__(
        self, kubeconfig: str | None = None, context: str | None = None, timeout: float = 15.0,
    ) -> None:
        from kubernetes import client, config

        try:
            api_client = config.new_client_from_config(  # type: ignore[no-untyped-call]
                config_file=kubeconfig, context=context)
            contexts, active = config.list_kube_config_contexts(  # type: ignore[no-untyped-call]
                config_file=kubeconfig)
        except (config.ConfigException, OSError) as exc:
            where = kubeconfig or os.environ.get("KUBECONFIG") or "~/.kube/config"
            raise ClusterError(f"cannot load the kubeconfig ({where}): {exc}") from exc
        chosen = next((c for c in contexts if c["name"] == context), active) if context else active
        self.namespace: str = (chosen or {}).get("context", {}).get("namespace") or "default"
        self.server: str = api_client.configuration.host
        self._core = client.CoreV1Api(api_client)
        self._custom = client.CustomObjectsApi(api_client)
        self._timeout = timeout

    def _call(self, what: str, method: Any, *args: Any, **kwargs: Any) -> Any:
        """Call a client method; None for 404; anything else becomes a ClusterError."""
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        try:
            response = method(*args, _preload_content=False, _request_timeout=self._timeout, **kwargs)
        except ApiException as exc:
            if exc.status == 404:
                return None
            if exc.status in (401, 403):
                raise ClusterError(f"not allowed to {what}: {_api_message(exc)}") from exc
            raise ClusterError(f"cannot {what}: HTTP {exc.status} {_api_message(exc)}") from exc
        except HTTPError as exc:
            raise ClusterError(f"cannot reach the cluster at {self.server} to {what}: {exc}") from exc
        return response.data

    def _json(self, what: str, method: Any, *args: Any, **kwargs: Any) -> Any:
        data = self._call(what, method, *args, **kwargs)
        return None if data is None else json.loads(data)

    def list_layouts(self) -> list[dict[str, Any]]:
        found = self._json("list GPUNumaLayouts", self._custom.list_cluster_custom_object,
                           names.CRD_GROUP, names.CRD_VERSION, names.CRD_PLURAL)
        if found is None:
            raise ClusterError(
                f"gpunuma is not installed in this cluster: the GPUNumaLayout CRD "
                f"({names.CRD_PLURAL}.{names.CRD_GROUP}) was not found at {self.server}. "
                "Install the chart (helm install gpunuma charts/gpunuma -n gpunuma-system "
                "--create-namespace), or check --context."
            )
        items: list[dict[str, Any]] = found.get("items") or []
        return items

    def list_nodes(self) -> list[dict[str, Any]]:
        found = self._json("list nodes", self._core.list_node)
        return list((found or {}).get("items") or [])

    def list_managed_pods(self, namespace: str | None) -> list[dict[str, Any]]:
        selector = f"{names.LABEL_MANAGED}=true"
        if namespace is None:
            found = self._json("list pods", self._core.list_pod_for_all_namespaces, label_selector=selector)
        else:
            found = self._json(f"list pods in {namespace}", self._core.list_namespaced_pod, namespace,
                               label_selector=selector)
        return list((found or {}).get("items") or [])

    def read_pod(self, namespace: str, name: str) -> dict[str, Any] | None:
        found: dict[str, Any] | None = self._json(f"read pod {namespace}/{name}",
                                                  self._core.read_namespaced_pod, name, namespace)
        return found

    def read_namespace(self, name: str) -> dict[str, Any] | None:
        """The namespace, or None when it cannot be read (its label then shows as unknown)."""
        try:
            found: dict[str, Any] | None = self._json(f"read namespace {name}", self._core.read_namespace,
                                                      name)
        except ClusterError:
            return None
        return found

    def list_webhook_configurations(self) -> list[dict[str, Any]]:
        """gpunuma's MutatingWebhookConfigurations; empty when they cannot be read (RBAC)."""
        from kubernetes import client

        selector = ",".join(f"{key}={value}" for key, value in WEBHOOK_CONFIGURATION_LABELS.items())
        api = client.AdmissionregistrationV1Api(self._core.api_client)
        try:
            found = self._json("list MutatingWebhookConfigurations",
                               api.list_mutating_webhook_configuration, label_selector=selector)
        except ClusterError:
            return []
        return list((found or {}).get("items") or [])

    def read_log_head(self, namespace: str, pod: str, container: str) -> str | None:
        """The first bytes of a container's log (numa-exec writes first); None when there is none."""
        try:
            data = self._call(f"read the log of {namespace}/{pod}/{container}",
                              self._core.read_namespaced_pod_log, pod, namespace, container=container,
                              limit_bytes=LOG_HEAD_BYTES)
        except ClusterError:
            return None  # e.g. 400 while the container is still waiting to start
        return None if data is None else bytes(data).decode("utf-8", "replace")

def _api_message(exc: Any) -> str:
    try:
        return str(json.loads(exc.body).get("message") or exc.reason)
    except (TypeError, ValueError, AttributeError):
        return str(exc.reason)
