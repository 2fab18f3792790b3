"""An async client for the kubelet's PodResources API (v1) over its unix socket.

The kubelet serves ``PodResourcesLister`` on ``/var/lib/kubelet/pod-resources/kubelet.sock``; the
agent mounts that directory from the host. Devices of DRA ResourceClaims come in each container's
``dynamic_resources`` (kubelet feature ``KubeletPodResourcesDynamicResources``, on by default since
Kubernetes 1.34) as driver, pool and device names. The wire definitions are our own subset of the kubelet's
``api.proto`` (``podresources.proto`` beside this file); the stubs ``podresources_pb2*.py`` are
generated from it and committed. Regenerate them from the repository root with::

    python3 -m grpc_tools.protoc -I. --python_out=. --pyi_out=. --grpc_python_out=. \\
        gpunuma/agent/podresources.proto

Every call has a deadline. A failed call closes the channel, so that the next one dials the socket
afresh: a restarting kubelet replaces the socket file, and a gRPC channel left to reconnect on its
own backs off for up to two minutes. Failures surface as :class:`KubeletUnavailable` with a message
that says what to check; the caller decides when to retry (the agent backs off and keeps the last
allocations it saw).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import grpc

from gpunuma.agent import podresources_pb2 as pb
from gpunuma.agent import podresources_pb2_grpc as pb_grpc
from gpunuma.agent.allocations import (
    ClaimDevice,
    ContainerDevices,
    ContainerResources,
    PodResources,
)

__all__ = ["KubeletUnavailable", "PodResourcesClient", "pod_from_message"]

# The kubelet caps its own messages at 16 MiB (podresources.DefaultMaxMsgSize); a node with many
# pods can exceed gRPC's 4 MiB default.
MAX_MESSAGE_BYTES = 16 * 1024 * 1024


class KubeletUnavailable(Exception):
    """The kubelet's PodResources API could not be asked (missing socket, restart, refusal)."""


class PodResourcesClient:
    """``List`` of ``v1.PodResourcesLister``, decoded into plain dataclasses."""

    def __init__(self, socket_path: Path, *, timeout: float = 5.0) -> None:
        self.socket_path = socket_path
        self.timeout = timeout
        self._channel: grpc.aio.Channel | None = None
        self._stub: Any = None

    async def list(self) -> list[PodResources]:
        """Every pod the kubelet knows, with the devices and exclusive CPUs of its containers."""
        response = await self._call("List", pb.ListPodResourcesRequest())
        return [pod_from_message(pod) for pod in response.pod_resources]

    async def close(self) -> None:
        channel, self._channel, self._stub = self._channel, None, None
        if channel is not None:
            await channel.close()

    async def _call(self, method: str, request: Any) -> Any:
        if not self.socket_path.exists():
            await self.close()
            raise KubeletUnavailable(
                f"the kubelet's PodResources socket {self.socket_path} does not exist: is the "
                "kubelet running, and is /var/lib/kubelet/pod-resources mounted into the agent?"
            )
        if self._stub is None:
            self._channel = grpc.aio.insecure_channel(
                f"unix:{self.socket_path}",
                options=[
                    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                    ("grpc.enable_http_proxy", 0),
                ],
            )
            self._stub = pb_grpc.PodResourcesListerStub(self._channel)  # type: ignore[no-untyped-call]
        try:
            return await getattr(self._stub, method)(request, timeout=self.timeout)
        except grpc.aio.AioRpcError as error:
            await self.close()
            raise KubeletUnavailable(
                f"PodResources {method} on {self.socket_path} failed: "
                f"{error.code().name}: {error.details() or 'no details'}"
            ) from error


def pod_from_message(message: Any) -> PodResources:
    """A ``v1.PodResources`` message (ours or any wire-compatible one) as a plain dataclass."""
    return PodResources(
        namespace=message.namespace,
        name=message.name,
        containers=tuple(
            ContainerResources(
                name=container.name,
                devices=tuple(
                    ContainerDevices(
                        resource_name=devices.resource_name, device_ids=tuple(devices.device_ids)
                    )
                    for devices in container.devices
                ),
                cpu_ids=frozenset(container.cpu_ids),
                claims=tuple(
                    ClaimDevice(
                        claim_namespace=claim.claim_namespace or message.namespace,
                        claim_name=claim.claim_name,
                        driver=resource.driver_name,
                        pool=resource.pool_name,
                        device=resource.device_name,
                    )
                    for claim in container.dynamic_resources
                    for resource in claim.claim_resources
                    if resource.driver_name and resource.device_name
                ),
            )
            for container in message.containers
        ),
        cpu_ids=frozenset(message.cpu_ids),
    )
