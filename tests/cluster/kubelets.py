"""A node's kubelet PodResources API for the agent: a real gRPC server on a unix socket.

kwok plays the rest of the kubelet (Node status, pod phases); it has no PodResources API, so the
test serves one per node, answering with the devices the test says the device plugin gave.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc

from gpunuma.agent import podresources_pb2 as pb
from gpunuma.agent import podresources_pb2_grpc as pb_grpc

# (namespace, pod) → container → resource → device ids
Allocations = Mapping[tuple[str, str], Mapping[str, Mapping[str, Sequence[str]]]]


class _Lister(pb_grpc.PodResourcesListerServicer):
    def __init__(self) -> None:
        self.allocations: Allocations = {}

    def _pods(self) -> list[pb.PodResources]:
        return [
            pb.PodResources(namespace=namespace, name=name, containers=[
                pb.ContainerResources(name=container, devices=[
                    pb.ContainerDevices(resource_name=resource, device_ids=list(ids))
                    for resource, ids in resources.items()])
                for container, resources in containers.items()])
            for (namespace, name), containers in self.allocations.items()
        ]

    def List(self, request: Any, context: Any) -> pb.ListPodResourcesResponse:
        return pb.ListPodResourcesResponse(pod_resources=self._pods())


class PodResourcesServer:
    """``List`` of ``v1.PodResourcesLister`` on ``socket``, from :attr:`allocations`."""

    def __init__(self, socket: Path) -> None:
        self.socket = socket
        self._lister = _Lister()
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        pb_grpc.add_PodResourcesListerServicer_to_server(  # type: ignore[no-untyped-call]
            self._lister, self._server)
        self._server.add_insecure_port(f"unix:{socket}")
        self._server.start()

    def allocate(self, allocations: Allocations) -> None:
        self._lister.allocations = allocations

    def stop(self) -> None:
        self._server.stop(None)
