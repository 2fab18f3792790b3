"""DRA ResourceSlices of this node: which hardware a DRA device name stands for.

The kubelet names a device of a ResourceClaim by driver, pool and device (``gpu.nvidia.com``,
``gpu-node-7``, ``gpu-3``). The driver's ResourceSlice for the node lists the same device with its
attributes, and those tie it to a GPU of the layout:

- ``resource.kubernetes.io/pciBusID``, the standard attribute (KEP-4381) drivers of PCI devices
  publish, e.g. ``0000:1b:00.0``;
- the driver's own ``uuid`` (``gpu.nvidia.com/uuid``: ``GPU-…`` for a GPU, ``MIG-…`` for a MIG
  device) and ``parentUUID`` (a MIG device's GPU). An attribute name without a domain is in the
  driver's domain, so ``uuid`` in a ``gpu.nvidia.com`` slice is ``gpu.nvidia.com/uuid``.

:func:`device_identities` is pure; :func:`list_node_slices` asks the API server (``list`` on
``resourceslices``, group ``resource.k8s.io``: v1 since Kubernetes 1.34, v1beta2 and v1beta1 before).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import quote

from gpunuma.kubeapi import KubeClient

__all__ = ["PCI_BUS_ID_ATTRIBUTE", "device_identities", "list_node_slices"]

PCI_BUS_ID_ATTRIBUTE = "resource.kubernetes.io/pciBusID"
# Newest first: the agent takes the first version the API server serves.
API_VERSIONS = ("v1", "v1beta2", "v1beta1")
# Attributes (in the driver's domain unless qualified) whose string value may name a GPU, in the
# order they are tried: the bus id is the hardware's own name, UUIDs are the vendor's.
_ID_ATTRIBUTES = (PCI_BUS_ID_ATTRIBUTE, "uuid", "parentUUID")


def device_identities(slices: Iterable[Mapping[str, Any]]) -> dict[tuple[str, str, str], list[str]]:
    """(driver, pool, device) → the ids its slice gives it that may name a GPU, best first."""
    found: dict[tuple[str, str, str], list[str]] = {}
    for item in slices:
        spec = item.get("spec")
        if not isinstance(spec, Mapping):
            continue
        driver = spec.get("driver")
        pool = spec.get("pool")
        pool_name = pool.get("name") if isinstance(pool, Mapping) else None
        devices = spec.get("devices")
        if not isinstance(driver, str) or not isinstance(pool_name, str) \
                or not isinstance(devices, list):
            continue
        for device in devices:
            if not isinstance(device, Mapping) or not isinstance(device.get("name"), str):
                continue
            found[driver, pool_name, device["name"]] = _ids(driver, _attributes(device))
    return found


def _attributes(device: Mapping[str, Any]) -> Mapping[str, Any]:
    # resource.k8s.io/v1 and v1beta2 list attributes on the device, v1beta1 under "basic".
    attributes = device.get("attributes")
    if attributes is None and isinstance(device.get("basic"), Mapping):
        attributes = device["basic"].get("attributes")
    return attributes if isinstance(attributes, Mapping) else {}


def _ids(driver: str, attributes: Mapping[str, Any]) -> list[str]:
    ids: list[str] = []
    for name in _ID_ATTRIBUTES:
        qualified = name if "/" in name else f"{driver}/{name}"
        value = attributes.get(name, attributes.get(qualified))
        text = value.get("string") if isinstance(value, Mapping) else None
        if isinstance(text, str) and text and text not in ids:
            ids.append(text)
    return ids


async def list_node_slices(kube: KubeClient, node: str) -> list[dict[str, Any]]:
    """Every ResourceSlice of ``node``, from the newest ``resource.k8s.io`` version served.

    Raises ``ApiError`` (403 without the chart's RBAC). A cluster without DRA serves no version:
    that is an empty list, not an error.
    """
    selector = quote(f"spec.nodeName={node}", safe="")
    for version in API_VERSIONS:
        answer = await kube.get(f"/apis/resource.k8s.io/{version}/resourceslices"
                                f"?fieldSelector={selector}")
        if answer is None:
            continue  # 404: this version is not served
        items = answer.get("items")
        # The field selector is the server's filter; the check here keeps a server that ignores it
        # (or a test double) from mixing in other nodes' devices.
        return [item for item in items or [] if isinstance(item, dict)
                and isinstance(item.get("spec"), Mapping) and item["spec"].get("nodeName") == node]
    return []
