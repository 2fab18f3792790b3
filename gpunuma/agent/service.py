"""The node agent's loop (DESIGN §7): discovery → allocations → GPUNumaLayout, plus probes and metrics.

One coroutine schedules everything, so API writes never race each other and SIGTERM has exactly
one place to land: discovery every ``interval`` (in a daemon thread: it reads files and may call
NVML, which can hang on a GPU fallen off the bus; the loop waits ``discovery_timeout`` at most and
starts no second discovery while one is still running, so heartbeats and kubelet polls go on),
the kubelet every ``allocations_interval`` (skipped on a node without GPUs; when it reports DRA
devices the node's ResourceSlices tell which GPUs they are, read again at most once per
``interval`` while a device is missing from them), and a publish pass
after each, which writes only when the spec changed or the heartbeat is due. Failures of any of
the three are logged once per new message, counted in ``/metrics`` and retried with exponential
backoff; none of them ends the process. What was known last (layout, allocations) stays
published while a source is failing. A backend named with ``--backend`` that cannot run here
degrades to sysfs alone, with an ``errors`` entry naming it, rather than publishing nothing.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import random
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.aiohttp import make_aiohttp_handler

from gpunuma.agent.allocations import PodResources, allocations
from gpunuma.agent.podresources import KubeletUnavailable, PodResourcesClient
from gpunuma.agent.publisher import LayoutPublisher, layout_spec
from gpunuma.agent.resourceslices import device_identities, list_node_slices
from gpunuma.discovery import DiscoveryUnavailable
from gpunuma.kubeapi import ApiError, Connection, KubeClient
from gpunuma.settings import AgentSettings, DiscoverySettings, parse_listen
from gpunuma.topology import Layout, Problem

__all__ = ["Agent", "AgentMetrics", "Backoff", "Discover", "run_agent"]

logger = logging.getLogger(__name__)

Discover = Callable[[DiscoverySettings], Layout]


class AgentMetrics:
    """The agent's Prometheus metrics, in a registry of its own (no process-global state)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.discovery_seconds = Histogram(
            "gpunuma_agent_discovery_duration_seconds", "Time one discovery pass took",
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
            registry=self.registry,
        )
        self.gpus = Gauge(
            "gpunuma_agent_gpus", "GPUs of the node by the NUMA node they are local to "
            "(numa_node=\"unknown\" when it cannot be known)", ["numa_node"],
            registry=self.registry,
        )
        self.discovery_timeouts = Counter(
            "gpunuma_agent_discovery_timeouts", "Discoveries still running after "
            "--discovery-timeout (each counted once; no other starts until it returns)",
            registry=self.registry,
        )
        self.api_writes = Counter(
            "gpunuma_agent_api_writes", "Writes to the node's GPUNumaLayout by kind "
            "(created, updated, heartbeat)", ["kind"], registry=self.registry,
        )
        self.errors = Counter(
            "gpunuma_agent_errors", "Failed attempts by stage (discovery, kubelet, api)",
            ["stage"], registry=self.registry,
        )
        self.kubelet_up = Gauge(
            "gpunuma_agent_kubelet_up", "1 when the last PodResources List succeeded",
            registry=self.registry,
        )
        self.allocations = Gauge(
            "gpunuma_agent_allocations", "Entries in spec.allocations", registry=self.registry,
        )

    def observe_layout(self, layout: Layout) -> None:
        self.gpus.clear()
        for gpu in layout.gpus:
            node = "unknown" if gpu.numa_node is None else str(gpu.numa_node)
            self.gpus.labels(numa_node=node).inc()


@dataclass
class Backoff:
    """Exponential delays with ±10 % jitter (so that a fleet of agents does not retry in step)."""

    initial: float = 1.0
    maximum: float = 60.0
    _next: float = field(default=0.0, init=False)

    def delay(self) -> float:
        current = self._next or self.initial
        self._next = min(current * 2, self.maximum)
        return current * random.uniform(0.9, 1.1)  # noqa: S311 - jitter, not cryptography

    def reset(self) -> None:
        self._next = 0.0


class _Stage:
    """Logs a stage's failure once per distinct message, and its recovery once."""

    def __init__(self, name: str, metrics: AgentMetrics, backoff: Backoff) -> None:
        self.name = name
        self._metrics = metrics
        self.error: str | None = None
        self.backoff = backoff

    def failed(self, message: str, *, persistent: bool = False) -> float:
        """Count and log a failure; the delay before the next attempt.

        ``persistent``: an error that waiting alone will not fix (403 Forbidden, 422 Invalid):
        logged as an error and retried at the longest backoff, until someone fixes the cause.
        """
        self._metrics.errors.labels(stage=self.name).inc()
        if message != self.error:
            if persistent:
                logger.error("%s: %s (retrying every %g s)", self.name, message,
                             self.backoff.maximum)
            else:
                logger.warning("%s: %s (retrying with backoff)", self.name, message)
        self.error = message
        delay = self.backoff.delay()
        return self.backoff.maximum if persistent else delay

    def succeeded(self) -> None:
        if self.error is not None:
            logger.info("%s: recovered", self.name)
        self.error = None
        self.backoff.reset()


class Agent:
    """Runs until ``stop`` is set; see the module docstring."""

    def __init__(
        self,
        settings: AgentSettings,
        *,
        kube: KubeClient,
        kubelet: PodResourcesClient | None,
        discover: Discover,
        metrics: AgentMetrics | None = None,
        retry_initial: float = 1.0,
        retry_maximum: float = 60.0,
    ) -> None:
        self.settings = settings
        self.metrics = metrics or AgentMetrics()
        self._kubelet = kubelet
        self._discover = discover
        self._kube = kube
        self._publisher = LayoutPublisher(
            kube, settings.node_name, monotonic=lambda: asyncio.get_running_loop().time()
        )
        self._stages = {
            name: _Stage(name, self.metrics, Backoff(retry_initial, retry_maximum))
            for name in ("discovery", "kubelet", "api", "resourceslices")
        }
        self.layout: Layout | None = None
        self.pods: list[PodResources] = []
        self.dra_devices: dict[tuple[str, str, str], list[str]] = {}  # from ResourceSlices
        self._slices_read: float | None = None  # loop time of the last ResourceSlice read
        self._discovery: asyncio.Future[Layout] | None = None  # the discovery thread's result
        self._discovery_started = 0.0  # loop time
        self._discovery_timed_out = False
        self.last_tick: float | None = None  # loop time of the last completed pass
        self.passes = 0

    def health(self) -> dict[str, Any]:
        """What ``/healthz`` reports: the last error of each stage, and whether a layout exists."""
        health: dict[str, Any] = {
            "layout": self.layout is not None,
            "passes": self.passes,
            "errors": {name: stage.error for name, stage in self._stages.items() if stage.error},
        }
        if self._discovery is not None and self._discovery_timed_out:
            running = asyncio.get_running_loop().time() - self._discovery_started
            health["discoveryRunningSeconds"] = round(running, 1)
        return health

    async def run(self, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        next_discovery = next_allocations = publish_not_before = loop.time()
        while not stop.is_set():
            now = loop.time()
            if now >= next_discovery:
                delay = await self._discover_once()
                next_discovery = loop.time() + (delay if delay is not None else
                                                self.settings.interval)
            if self._polls_kubelet() and now >= next_allocations:
                delay = await self._poll_kubelet()
                interval = self.settings.allocations_interval
                next_allocations = loop.time() + (min(delay, interval) if delay else interval)
            if self.layout is not None and now >= publish_not_before:
                delay = await self._publish_once()
                publish_not_before = loop.time() + (delay or 0.0)
            self.last_tick = loop.time()
            self.passes += 1
            wakes = [next_discovery]
            if self.layout is not None:
                due = self._publisher.heartbeat_due_in(self.settings.heartbeat)
                wakes.append(max(publish_not_before, loop.time() + due))
            if self._polls_kubelet():
                wakes.append(next_allocations)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=max(0.0, min(wakes) - loop.time()))

    def _polls_kubelet(self) -> bool:
        # A node without GPUs has no GPU allocations: it publishes once and then only heartbeats.
        return self._kubelet is not None and self.layout is not None and bool(self.layout.gpus)

    async def _discover_once(self) -> float | None:
        stage = self._stages["discovery"]
        loop = asyncio.get_running_loop()
        if self._discovery is None:
            self._discovery = self._start_discovery()
            self._discovery_started = loop.time()
            self._discovery_timed_out = False
        running = self._discovery
        remaining = self._discovery_started + self.settings.discovery_timeout - loop.time()
        if not running.done() and remaining > 0:
            await asyncio.wait({running}, timeout=remaining)
        if not running.done():
            if not self._discovery_timed_out:
                self._discovery_timed_out = True
                self.metrics.discovery_timeouts.inc()
            return stage.failed(
                f"discovery did not finish within {self.settings.discovery_timeout:g} s "
                "(--discovery-timeout; a GPU that stopped answering can hang NVML); keeping the "
                "last layout and starting no other discovery until it returns"
            )
        # Finished, even if late: a slow discovery's layout is as good as a fast one's.
        self._discovery = None
        self.metrics.discovery_seconds.observe(loop.time() - self._discovery_started)
        try:
            layout = running.result()
        except Exception as error:  # whatever broke in discovery, the agent carries on
            return stage.failed(f"{type(error).__name__}: {error}")
        stage.succeeded()
        if layout != self.layout:
            logger.info("layout: %d GPUs on %d NUMA nodes (source %s)", len(layout.gpus),
                        len(layout.numa_nodes), layout.source)
            self.metrics.observe_layout(layout)
        self.layout = layout
        return None

    def _start_discovery(self) -> asyncio.Future[Layout]:
        """Discover in a daemon thread of its own, not the default executor: a thread stuck in
        NVML must not hold up the process's exit (``asyncio.run`` joins the executor's threads)."""
        result: concurrent.futures.Future[Layout] = concurrent.futures.Future()

        def work() -> None:
            try:
                result.set_result(self._discover_or_degrade(self.settings.discovery))
            except Exception as error:  # delivered to the loop, which logs it and retries
                result.set_exception(error)

        threading.Thread(target=work, name="gpunuma-discovery", daemon=True).start()
        return asyncio.wrap_future(result)

    def _discover_or_degrade(self, settings: DiscoverySettings) -> Layout:
        """Discover; when the backend named with ``--backend`` cannot run here, publish what sysfs
        alone finds, with an ``errors`` entry that names the backend. Runs in the thread."""
        try:
            return self._discover(settings)
        except DiscoveryUnavailable as error:
            layout = self._discover(replace(settings, backend="sysfs"))
            problem = Problem(None, settings.backend,
                              f"--backend {settings.backend} is unavailable, publishing sysfs "
                              f"alone: {error}")
            return layout.with_errors([problem])

    async def _poll_kubelet(self) -> float | None:
        assert self._kubelet is not None
        stage = self._stages["kubelet"]
        try:
            self.pods = await self._kubelet.list()
        except KubeletUnavailable as error:
            self.metrics.kubelet_up.set(0)
            return stage.failed(str(error))
        self.metrics.kubelet_up.set(1)
        stage.succeeded()
        await self._read_slices_if_needed()
        return None

    async def _read_slices_if_needed(self) -> None:
        """Read the node's ResourceSlices when a DRA device is not in the last read, at most once
        per ``interval``. A failure leaves those devices unmapped (``unknownDeviceIds``), and
        never holds up the kubelet polls."""
        wanted = {device.key for pod in self.pods for container in pod.containers
                  for device in container.claims}
        if not wanted - self.dra_devices.keys():
            return
        now = asyncio.get_running_loop().time()
        if self._slices_read is not None and now - self._slices_read < self.settings.interval:
            return
        self._slices_read = now
        stage = self._stages["resourceslices"]
        try:
            slices = await list_node_slices(self._kube, self.settings.node_name)
        except ApiError as error:
            stage.failed(f"cannot list the node's ResourceSlices, DRA devices stay unmapped: "
                         f"{error}", persistent=not error.retryable)
            return
        stage.succeeded()
        self.dra_devices = device_identities(slices)

    async def _publish_once(self) -> float | None:
        assert self.layout is not None
        stage = self._stages["api"]
        entries = (allocations(self.pods, self.layout, self.settings.gpu_resources,
                               self.dra_devices) if self.layout.gpus else [])
        self.metrics.allocations.set(len(entries))
        try:
            result = await self._publisher.publish(
                layout_spec(self.layout, entries), heartbeat=self.settings.heartbeat
            )
        except ApiError as error:
            return stage.failed(str(error), persistent=not error.retryable)
        stage.succeeded()
        if result != "unchanged":
            self.metrics.api_writes.labels(kind=result).inc()
            log = logger.debug if result == "heartbeat" else logger.info
            log("GPUNumaLayout %s: %s", self.settings.node_name, result)
        return None


def health_app(agent: Agent, *, stale_after: float) -> web.Application:
    """``/healthz`` (200 while the loop runs, 503 once it has stalled) and ``/metrics``."""

    async def healthz(_: web.Request) -> web.Response:
        now = asyncio.get_running_loop().time()
        alive = agent.last_tick is not None and now - agent.last_tick <= stale_after
        body = {"ok": alive, **agent.health()}
        return web.json_response(body, status=200 if alive else 503)


    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", make_aiohttp_handler(agent.metrics.registry))
    return app


async def run_agent(settings: AgentSettings, *, discover: Discover | None = None) -> int:
    """The ``gpunuma agent`` process: serve probes, run the loop until SIGTERM/SIGINT."""
    if discover is None:
        from gpunuma.discovery import discover as discover_layout  # noqa: PLC0415

        discover = discover_layout
    host, port = parse_listen(settings.listen)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    if settings.kubeconfig is None:
        connection = await asyncio.to_thread(Connection.in_cluster)
        kube = KubeClient(connection, user_agent="gpunuma-agent")
    else:
        kubeconfig = settings.kubeconfig
        connection = await asyncio.to_thread(Connection.from_kubeconfig, kubeconfig)
        # After a 401 the kubeconfig is read again: a fresh exec-plugin token or token file.
        kube = KubeClient(connection, login=lambda: Connection.from_kubeconfig(kubeconfig),
                          user_agent="gpunuma-agent")
    kubelet = PodResourcesClient(settings.kubelet_socket, timeout=settings.kubelet_timeout)
    agent = Agent(settings, kube=kube, kubelet=kubelet, discover=discover)
    # The loop wakes at least every interval (a pass may wait out one discovery timeout); three
    # missed wake-ups mean it is stuck.
    stale_after = (3 * max(settings.interval, settings.allocations_interval)
                   + settings.discovery_timeout + 30)
    runner = web.AppRunner(health_app(agent, stale_after=stale_after), access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
        logger.info("agent for node %s: /healthz and /metrics on %s", settings.node_name,
                    settings.listen)
        await agent.run(stop)
        logger.info("stopping")
    finally:
        await runner.cleanup()
        await kubelet.close()
        await kube.close()
    return 0
