"""Every Kubernetes API path the operator reads or writes, in one place.

Paths, not clients: the reconcilers pass these to :class:`gpunuma.kubeapi.KubeClient`, and a
change of API group or version is one edit here.
"""

from __future__ import annotations

from gpunuma import names

__all__ = [
    "LAYOUTS",
    "NODES",
    "PEERINGS",
    "WEBHOOK_CONFIGURATIONS",
    "events",
    "layout_status",
    "node",
    "peering",
    "pod",
    "secret",
    "secrets",
    "webhook_configuration",
]

NODES = "/api/v1/nodes"
LAYOUTS = f"/apis/{names.CRD_GROUP}/{names.CRD_VERSION}/{names.CRD_PLURAL}"
PEERINGS = "/apis/kopf.dev/v1/clusterkopfpeerings"
WEBHOOK_CONFIGURATIONS = "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations"


def node(name: str) -> str:
    return f"{NODES}/{name}"


def pod(namespace: str, name: str) -> str:
    return f"/api/v1/namespaces/{namespace}/pods/{name}"


def layout_status(name: str) -> str:
    return f"{LAYOUTS}/{name}/status"


def events(namespace: str) -> str:
    return f"/api/v1/namespaces/{namespace}/events"


def secrets(namespace: str) -> str:
    return f"/api/v1/namespaces/{namespace}/secrets"


def secret(namespace: str, name: str) -> str:
    return f"{secrets(namespace)}/{name}"


def peering(name: str) -> str:
    return f"{PEERINGS}/{name}"


def webhook_configuration(name: str) -> str:
    return f"{WEBHOOK_CONFIGURATIONS}/{name}"
