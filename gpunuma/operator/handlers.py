"""The kopf handlers: thin adapters from watch events to :class:`Controller` methods.

DESIGN §8: kopf keeps no state on Nodes or Pods. Only ``@kopf.on.event`` handlers are used — never
``on.create``/``on.update`` (they store progress annotations), timers or daemons (they add
finalizers) — on any resource, the GPUNumaLayout included: a finalizer there would keep a layout
alive after its Node is gone whenever the operator is down. The periodic work runs in one asyncio
task instead (see :meth:`Controller.run_periodically`).

Why no ``@kopf.index``: kopf holds every handler back until all indexed resources are
listed, and that barrier costs start-up time quadratic in the number of objects (measured with
``benchmarks/operator_scale.py`` on 1,000 nodes: 12 s of CPU with indices, 3.3 s without). The event
handlers fill the controller's own caches instead; a layout whose Node has not been seen yet reads
that Node once (``LayoutReconciler._fetch_node``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import kopf

from gpunuma import names
from gpunuma.kubeapi import Connection
from gpunuma.operator.controller import Controller

__all__ = ["LAYOUT_RESOURCE", "register"]

LAYOUT_RESOURCE = (names.CRD_GROUP, names.CRD_VERSION, names.CRD_PLURAL)
MANAGED = {names.LABEL_MANAGED: "true"}


def register(
    registry: kopf.OperatorRegistry,
    controller: Controller,
    login: Callable[[], Any],
) -> None:
    """Register every handler of the operator in ``registry``.

    ``login`` returns a ``kopf.ConnectionInfo`` (or None): kopf and the controller's client both
    connect with it.
    """
    tasks: list[asyncio.Task[None]] = []

    @kopf.on.login(registry=registry)
    def gpunuma_login(**_: Any) -> Any:
        info = login()
        if info is not None:
            controller.client.use(Connection.from_kopf(info))
        return info

    @kopf.on.startup(registry=registry)
    async def gpunuma_startup(**_: Any) -> None:
        tasks.append(asyncio.create_task(controller.run_periodically(), name="gpunuma-periodic"))

    @kopf.on.cleanup(registry=registry)
    async def gpunuma_cleanup(**_: Any) -> None:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await controller.client.close()

    # The liveness endpoint shows these: how much the operator tracks and what it has sent.
    @kopf.on.probe(id="layouts", registry=registry)
    def gpunuma_probe_layouts(**_: Any) -> int:
        return len(controller.layouts)

    @kopf.on.probe(id="api_requests", registry=registry)
    def gpunuma_probe_requests(**_: Any) -> dict[str, int]:
        return {f"{method} {resource}": count
                for (method, resource), count in sorted(controller.client.requests.items())}

    # Nodes ------------------------------------------------------------------------------------

    @kopf.on.event("", "v1", "nodes", registry=registry)
    async def gpunuma_node_event(body: kopf.Body, type: str | None, **_: Any) -> None:
        name = controller.observe_node(body, deleted=type == "DELETED")
        if name in controller.layouts:
            await controller.reconcile_layout(name)

    # GPUNumaLayouts ---------------------------------------------------------------------------

    @kopf.on.event(*LAYOUT_RESOURCE, registry=registry)
    async def gpunuma_layout_event(body: kopf.Body, type: str | None, name: str,
                                   **_: Any) -> None:
        if type == "DELETED":
            await controller.forget_layout(body)
            return
        controller.observe_layout(body)
        await controller.reconcile_layout(name)
        await controller.reconcile_pods_of(name)

    # Pods: the server-side label selector is set in run.py; ``labels=`` is for API servers and
    # mocks that ignore it. kopf watches pods cluster-wide (see run.py): ``when=`` keeps the pods
    # of ``--pod-namespaces`` only, before anything is cached -----------------------------------

    scope = frozenset(controller.settings.pod_namespaces)

    def in_scope(namespace: str | None, **_: Any) -> bool:
        return not scope or namespace in scope

    @kopf.on.event("", "v1", "pods", labels=MANAGED, when=in_scope, registry=registry)
    async def gpunuma_pod_event(body: kopf.Body, type: str | None, **_: Any) -> None:
        pod = controller.observe_pod(body, deleted=type == "DELETED")
        if type != "DELETED" and pod.node:
            await controller.reconcile_pod(pod.namespace, pod.name, node=pod.node)

    # The webhook configuration: a `helm upgrade` resets its caBundle; put it back at once -----

    if controller.settings.certificates.mode == "self-managed":
        configuration = controller.settings.certificates.webhook_configuration

        @kopf.on.event(
            "admissionregistration.k8s.io", "v1", "mutatingwebhookconfigurations",
            when=lambda name, **_: name == configuration, registry=registry,
        )
        async def gpunuma_webhook_configuration(type: str | None, **_: Any) -> None:
            if type != "DELETED":
                await controller.reconcile_certificates()

