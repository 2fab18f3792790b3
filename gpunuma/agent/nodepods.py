"""The pods on this node as the API server has them: UID, container ids, what the webhook did.

The kubelet's PodResources API names pods and containers but not their UIDs or container ids,
which is what the host's cgroups are named after; the Pod object has both (``metadata.uid``,
``status.containerStatuses[].containerID``), and its annotations say which containers were wrapped
or handed to the cgroup mechanism. The agent lists its node's pods (field selector
``spec.nodeName``) only when it needs to: when the kubelet reports a pod it does not know, when
a cgroup appears for an unknown pod UID, or when a known container's id is missing (started or
restarted since); at most once per ``min_interval``. A node whose pods don't change costs no API
call. Chosen over the container runtime's socket, which would give the agent control of every
container on the node.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from gpunuma import names
from gpunuma.agent.cgroups import container_id_of_status
from gpunuma.kubeapi import ApiError, KubeClient

__all__ = ["NodePods", "PodInfo", "pod_info"]

logger = logging.getLogger(__name__)


def _names(value: str | None) -> frozenset[str]:
    return frozenset(part.strip() for part in (value or "").split(",") if part.strip())


@dataclass(frozen=True, slots=True)
class PodInfo:
    namespace: str
    name: str
    uid: str
    container_ids: Mapping[str, str]  # container name → bare runtime id
    wrapped: frozenset[str]
    cgroup_bound: frozenset[str]
    policies: Mapping[str, str]  # container name → GPUNUMA_POLICY given by the webhook

    def policy(self, container: str) -> str:
        return self.policies.get(container, names.DEFAULT_POLICY)


def pod_info(pod: Mapping[str, Any]) -> PodInfo | None:
    """The parts of a Pod the agent uses, or None for an object without them."""
    metadata = pod.get("metadata") or {}
    namespace, name, uid = metadata.get("namespace"), metadata.get("name"), metadata.get("uid")
    if not (isinstance(namespace, str) and isinstance(name, str) and isinstance(uid, str)):
        return None
    annotations = metadata.get("annotations") or {}
    status = pod.get("status") or {}
    ids: dict[str, str] = {}
    for key in ("initContainerStatuses", "containerStatuses"):
        for entry in status.get(key) or ():
            bare = container_id_of_status(str(entry.get("containerID") or ""))
            if bare and isinstance(entry.get("name"), str):
                ids[entry["name"]] = bare
    policies: dict[str, str] = {}
    spec = pod.get("spec") or {}
    for container in [*(spec.get("initContainers") or ()), *(spec.get("containers") or ())]:
        for variable in container.get("env") or ():
            if variable.get("name") == "GPUNUMA_POLICY" and variable.get("value") in names.POLICIES:
                policies[str(container.get("name"))] = variable["value"]
    return PodInfo(namespace, name, uid, ids, _names(annotations.get(names.ANNOTATION_WRAPPED)),
                   _names(annotations.get(names.ANNOTATION_CGROUP_BOUND)), policies)


@dataclass
class NodePods:
    """A cache of the node's pods, refreshed on demand; see the module docstring."""

    client: KubeClient
    node_name: str
    clock: Callable[[], float]
    min_interval: float = 1.0
    by_key: dict[tuple[str, str], PodInfo] = field(default_factory=dict)
    by_uid: dict[str, PodInfo] = field(default_factory=dict)
    _listed_at: float | None = None
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    error: str | None = None

    async def refresh(self) -> None:
        """List the node's pods, unless that was done less than ``min_interval`` ago."""
        async with self._lock:
            now = self.clock()
            if self._listed_at is not None and now - self._listed_at < self.min_interval:
                return
            self._listed_at = now
            try:
                answer = await self.client.get(
                    f"/api/v1/pods?fieldSelector=spec.nodeName%3D{self.node_name}")
            except ApiError as error:
                if str(error) != self.error:
                    logger.warning("listing this node's pods: %s", error)
                self.error = str(error)
                return
            self.error = None
            pods = [info for info in map(pod_info, (answer or {}).get("items") or ()) if info]
            self.by_key = {(info.namespace, info.name): info for info in pods}
            self.by_uid = {info.uid: info for info in pods}

    async def pod_of_uid(self, uid: str) -> PodInfo | None:
        if uid not in self.by_uid:
            await self.refresh()
        return self.by_uid.get(uid)

    async def ensure(self, keys: set[tuple[str, str]]) -> None:
        """Refresh when a pod of ``keys`` (namespace, name) is unknown."""
        if any(key not in self.by_key for key in keys):
            await self.refresh()
