"""``gpunuma operator``: kopf with peering, a liveness endpoint and structured logs.

:func:`build` wires settings, a fresh kopf registry and the controller together; :func:`serve`
runs them in the current event loop (tests and the benchmark call it against kmock); :func:`main`
is the command.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import secrets
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import kopf

from gpunuma import logs, names
from gpunuma.kubeapi import Connection, KubeClient
from gpunuma.operator.controller import Controller
from gpunuma.operator.handlers import register
from gpunuma.settings import OperatorSettings

__all__ = ["build", "configure_logging", "default_login", "kopf_settings", "main",
           "operator_namespace", "serve"]

logger = logging.getLogger("gpunuma.operator")

DEFAULT_NAMESPACE = "gpunuma-system"  # the chart's documented namespace, outside a pod
SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


def default_login() -> Any:
    """In-cluster service account first, then a kubeconfig (for running it from a laptop)."""
    settings = kopf.OperatorSettings()
    info = kopf.login_with_service_account(settings=settings)
    return info if info is not None else kopf.login_with_kubeconfig(settings=settings)


def kopf_settings(settings: OperatorSettings, priority: int) -> kopf.OperatorSettings:
    tuned = kopf.OperatorSettings()
    tuned.peering.name = settings.peering_name
    tuned.peering.clusterwide = True  # one election for the cluster (kopf.operator sets it too)
    tuned.peering.priority = priority
    tuned.peering.standalone = settings.standalone
    tuned.peering.mandatory = not settings.standalone
    # The webhook labels every pod it changes (managed=true: placements; managed=false: warnings
    # only); the API server sends us only those.
    tuned.watching.label_selectors["v1", "pods"] = names.LABEL_MANAGED
    if settings.certificates.mode == "self-managed":
        tuned.watching.field_selectors[
            "admissionregistration.k8s.io", "mutatingwebhookconfigurations"
        ] = f"metadata.name={settings.certificates.webhook_configuration}"
    return tuned


def build(
    settings: OperatorSettings, login: Callable[[], Any] = default_login,
) -> tuple[kopf.OperatorRegistry, Controller, kopf.OperatorSettings]:
    priority = settings.priority if settings.priority is not None else secrets.randbelow(2**31) + 1
    # In a pod the hostname is the pod's name: readable in the peering object; the suffix keeps
    # two processes on one host (a developer's laptop) apart.
    identity = f"{os.environ.get('POD_NAME') or socket.gethostname()}-{secrets.token_hex(3)}"

    def client_login() -> Connection | None:
        info = login()
        return Connection.from_kopf(info) if info is not None else None

    client = KubeClient(login=client_login, user_agent="gpunuma-operator")
    controller = Controller(settings=settings, client=client,
                            identity=identity, priority=priority)
    registry = kopf.OperatorRegistry()
    register(registry, controller, login)
    return registry, controller, kopf_settings(settings, priority)


async def serve(
    settings: OperatorSettings,
    *,
    login: Callable[[], Any] = default_login,
    stop_flag: asyncio.Event | None = None,
    ready_flag: asyncio.Event | None = None,
    tune: Callable[[kopf.OperatorSettings], None] | None = None,
    started: Callable[[Controller], None] | None = None,
) -> None:
    """Run the operator until ``stop_flag`` is set (or a signal arrives, in the main thread)."""
    if not settings.certificates.namespace:
        certificates = dataclasses.replace(settings.certificates, namespace=operator_namespace())
        settings = dataclasses.replace(settings, certificates=certificates)
    registry, controller, tuned = build(settings, login)
    if tune is not None:
        tune(tuned)
    if started is not None:
        started(controller)
    await kopf.operator(
        registry=registry,
        settings=tuned,
        identity=controller.identity,  # type: ignore[arg-type]  # kopf's NewType over str
        liveness_endpoint=settings.liveness_endpoint,
        # Always cluster-wide, whatever the pod scope: kopf derives the peering object's scope
        # from this flag, and the chart creates (and grants) only the ClusterKopfPeering. A
        # namespaced kopf would wait, paused, for a namespaced KopfPeering that never comes. Pods
        # outside ``pod_namespaces`` are filtered out in the handler (handlers.py).
        clusterwide=True,
        stop_flag=stop_flag,
        ready_flag=ready_flag,
    )


def operator_namespace(default: str = DEFAULT_NAMESPACE) -> str:
    """The namespace the operator runs in (downward API, then the service account's)."""
    from_env = os.environ.get("POD_NAMESPACE")
    if from_env:
        return from_env
    try:
        return SERVICE_ACCOUNT_NAMESPACE.read_text(encoding="utf-8").strip() or default
    except OSError:
        return default


def configure_logging(settings: OperatorSettings) -> None:
    """kopf's formatters (they name the object a line is about), our level, and no success lines."""
    kopf.configure(
        log_format=kopf.LogFormat.JSON if settings.logging.format == "json" else kopf.LogFormat.FULL,
        debug=settings.logging.level == "debug",
    )
    logging.getLogger().setLevel(logs.level_number(settings.logging.level))
    objects = logging.getLogger("kopf.objects")
    if not any(isinstance(f, logs.DropHandlerSuccesses) for f in objects.filters):
        objects.addFilter(logs.DropHandlerSuccesses())


def main(settings: OperatorSettings) -> int:
    configure_logging(settings)
    logger.info("gpunuma operator starting: pods in %s, stale after %d × %g s, certificates %s",
                ", ".join(settings.pod_namespaces) or "all namespaces",
                settings.stale_after_heartbeats, settings.heartbeat_interval_s,
                settings.certificates.mode)
    asyncio.run(serve(settings))
    return 0
