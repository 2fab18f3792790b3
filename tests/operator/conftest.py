"""The operator against kmock: a Kubernetes API emulator on loopback, and helpers to drive it.

kmock keeps objects in memory and streams watch events for changes made through its HTTP API, so
tests change objects with HTTP requests (as kubectl would), never by editing ``kmock.objects``
directly (that would not reach the watchers). It ignores label and field selectors and replays
every object when a watch restarts: the operator must (and does) filter and be idempotent itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any

import kmock
import kopf
import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature

from gpunuma import names
from gpunuma.operator.controller import Controller
from gpunuma.operator.run import serve
from gpunuma.rfc3339 import format_rfc3339
from gpunuma.settings import CertificateSettings, OperatorSettings

LAYOUTS = f"{names.CRD_GROUP}/{names.CRD_VERSION}/{names.CRD_PLURAL}"
LAYOUTS_URL = f"/apis/{names.CRD_GROUP}/{names.CRD_VERSION}/{names.CRD_PLURAL}"


def free_port() -> int:
    """A port free right now on 127.0.0.1 (the kernel's pick)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def signed_by(leaf: x509.Certificate, ca: x509.Certificate) -> bool:
    """Whether ``ca`` signed ``leaf``: checked here with cryptography, not with the operator's code."""
    try:
        leaf.verify_directly_issued_by(ca)
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True


def now_rfc3339(offset_s: float = 0.0) -> str:
    return format_rfc3339(dt.datetime.now(dt.UTC) + dt.timedelta(seconds=offset_s))


def two_socket_spec(**extra: Any) -> dict[str, Any]:
    """An 8-GPU two-socket host: GPUs 0-3 on node 0, 4-7 on node 1."""
    return {
        "numaNodes": [
            {"id": 0, "cpus": "0-31", "memoryMiB": 515000, "distances": [10, 21]},
            {"id": 1, "cpus": "32-63", "memoryMiB": 515000, "distances": [21, 10]},
        ],
        "gpus": [
            {"index": i, "vendor": "nvidia", "model": "NVIDIA H100 80GB HBM3",
             "uuid": f"GPU-{i:08d}-0000-0000-0000-000000000000",
             "pciBusId": f"0000:{0x1b + i:02x}:00.0", "minor": i,
             "numaNode": 0 if i < 4 else 1, "reportedNumaNode": 0 if i < 4 else 1}
            for i in range(8)
        ],
        "source": "sysfs",
        "errors": [],
        "heartbeatTime": now_rfc3339(),
        **extra,
    }


def layout_body(node: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": f"{names.CRD_GROUP}/{names.CRD_VERSION}",
        "kind": names.CRD_KIND,
        "metadata": {"name": node, "generation": 1},
        "spec": spec,
    }


def node_body(name: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "uid": f"uid-{name}", "labels": dict(labels or {})}}


def fast_settings(**overrides: Any) -> OperatorSettings:
    base: dict[str, Any] = {
        "standalone": True,
        "liveness_endpoint": None,
        "metrics_listen": None,  # tests that scrape set 127.0.0.1:<free port>
        "check_interval_s": 3600.0,  # tests that need the periodic loop set it
        "certificates": CertificateSettings(namespace="gpunuma-system"),
    }
    base.update(overrides)
    return OperatorSettings(**base)


def tune_for_tests(settings: kopf.OperatorSettings) -> None:
    settings.scanning.disabled = True
    settings.watching.reconnect_backoff = 0.01
    settings.queueing.exit_timeout = 0.2
    settings.posting.enabled = False


@pytest.fixture
def cluster(kmock: kmock.KubernetesEmulator) -> kmock.KubernetesEmulator:
    kmock.resources.load_bundled()
    kmock.resources[LAYOUTS] = kmock.ResourceInfo(
        kind=names.CRD_KIND, singular="gpunumalayout", namespaced=False,
        shortnames={names.CRD_SHORT_NAME}, subresources={"status"},
        verbs={"get", "list", "watch", "create", "update", "patch", "delete"},
    )
    return kmock


Runner = Callable[..., contextlib.AbstractAsyncContextManager[Controller]]


@pytest.fixture
def operator(cluster: kmock.KubernetesEmulator) -> Runner:
    """``async with operator(settings) as controller:`` runs the operator against kmock."""

    @contextlib.asynccontextmanager
    async def run(settings: OperatorSettings | None = None) -> AsyncIterator[Controller]:
        stop, ready = asyncio.Event(), asyncio.Event()
        started: list[Controller] = []
        task = asyncio.create_task(serve(
            settings or fast_settings(),
            login=lambda: kopf.ConnectionInfo(server=str(cluster.url)),
            stop_flag=stop, ready_flag=ready, tune=tune_for_tests, started=started.append,
        ))
        try:
            await asyncio.wait_for(ready.wait(), 10)
            yield started[0]
        finally:
            stop.set()
            await asyncio.wait_for(task, 10)

    return run


def requests_to(cluster: kmock.KubernetesEmulator, method: str, path: str) -> list[Any]:
    """Bodies of the requests with this method and exact path, in order."""
    return [r.data for r in list(cluster)
            if str(r.method.value).upper() == method and r.url.path == path]


def labels_of(cluster: kmock.KubernetesEmulator, node: str) -> dict[str, str]:
    return dict(cluster.objects["v1/nodes", None, node].raw["metadata"].get("labels") or {})


def status_of(cluster: kmock.KubernetesEmulator, layout: str) -> dict[str, Any]:
    return dict(cluster.objects[LAYOUTS, None, layout].raw.get("status") or {})


def condition(cluster: kmock.KubernetesEmulator, layout: str, kind: str) -> dict[str, Any]:
    found = [c for c in status_of(cluster, layout).get("conditions", []) if c["type"] == kind]
    return found[0] if found else {}


def pytest_configure(config: pytest.Config) -> None:
    # kmock 0.8 reads its bundled resource list with a deprecated importlib call; not ours to fix.
    config.addinivalue_line("filterwarnings",
                            "ignore:read_binary is deprecated:DeprecationWarning")
