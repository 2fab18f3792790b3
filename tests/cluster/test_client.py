"""gpunuma's one Kubernetes client (gpunuma.kubeapi) against the real API server: kubeconfig
loading with a client certificate and with a token, every write the components make,
and the error statuses the retry rule sorts."""

from __future__ import annotations

from typing import Any

import pytest

from gpunuma.kubeapi import ApiError, Connection, KubeClient
from tests.cluster.controlplane import ControlPlane


async def _call(connection: Connection, method: str, *args: Any) -> Any:
    client = KubeClient(connection, user_agent="gpunuma-test")
    try:
        return await getattr(client, method)(*args)
    finally:
        await client.close()


async def test_the_admin_kubeconfig_creates_patches_reads_and_deletes(cluster: ControlPlane) -> None:
    namespace = cluster.namespace("client")
    connection = Connection.from_kubeconfig(cluster.admin_kubeconfig)  # a client certificate
    client = KubeClient(connection, user_agent="gpunuma-test")
    path = f"/api/v1/namespaces/{namespace}/configmaps"
    try:
        created = await client.create(path, {"apiVersion": "v1", "kind": "ConfigMap",
                                             "metadata": {"name": "a"},
                                             "data": {"keep": "1", "drop": "2"}})
        assert created["metadata"]["uid"]
        merged = await client.merge_patch(f"{path}/a", {"data": {"drop": None, "new": "3"}})
        assert merged["data"] == {"keep": "1", "new": "3"}
        # A JSON patch with a test op, as the operator writes the webhook's caBundle.
        patched = await client.json_patch(f"{path}/a", [
            {"op": "test", "path": "/data/keep", "value": "1"},
            {"op": "replace", "path": "/data/keep", "value": "one"}])
        assert patched["data"]["keep"] == "one"
        with pytest.raises(ApiError) as failed_test:
            await client.json_patch(f"{path}/a", [{"op": "test", "path": "/data/keep", "value": "1"}])
        with pytest.raises(ApiError) as exists:
            await client.create(path, {"apiVersion": "v1", "kind": "ConfigMap",
                                       "metadata": {"name": "a"}})
        assert (await client.get(f"{path}/a") or {})["data"] == {"keep": "one", "new": "3"}
        assert await client.delete(f"{path}/a") is not None
        assert await client.get(f"{path}/a") is None
        assert await client.delete(f"{path}/a") is None
    finally:
        await client.close()
    assert failed_test.value.status == 422
    assert not failed_test.value.retryable
    assert (exists.value.status, exists.value.reason) == (409, "AlreadyExists")
    assert exists.value.retryable
    assert client.requests[("PATCH", "configmaps")] == 3


async def test_a_service_account_token_is_authorized_by_rbac_and_a_refusal_is_not_retried(
    cluster: ControlPlane,
) -> None:
    namespace = cluster.namespace("client-rbac")
    cluster.apply([{"apiVersion": "v1", "kind": "ServiceAccount",
                    "metadata": {"name": "nobody", "namespace": namespace}}])
    connection = Connection.from_kubeconfig(cluster.kubeconfig_for(namespace, "nobody"))
    with pytest.raises(ApiError) as refused:
        await _call(connection, "get", "/api/v1/nodes")
    assert (refused.value.status, refused.value.reason) == (403, "Forbidden")
    assert not refused.value.retryable
