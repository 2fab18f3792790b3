"""``gpunuma webhook``: the mutating admission webhook served over TLS with aiohttp (DESIGN §9).

Paths:
- ``POST /mutate``: pods that opted in with the ``gpunuma.io/inject: "true"`` annotation;
- ``POST /mutate-namespace``: pods of namespaces labelled ``gpunuma.io/inject=enabled``. The label
  is visible only to the API server's namespaceSelector, so the chart registers this path for the
  webhook entry that selects those namespaces, and the path is how the mutation learns it;
- ``GET /healthz``, ``/readyz`` (503 while shutting down), ``/metrics`` (Prometheus).

On SIGTERM (a rollout, a node drain) the pod's endpoint is removed only after a while, and the API
server keeps sending admissions to it meanwhile. So the server first reports not-ready and goes on
answering for ``--shutdown-delay`` seconds, then closes its listener and finishes the requests in
flight; the chart's terminationGracePeriodSeconds covers both.

The certificate and key are re-read when they change on disk (a rotated Secret; see
``certificate``); ``guard`` bounds what one client may cost; ``metrics`` is what /metrics shows.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, cast

from aiohttp import HttpVersion11, hdrs, web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestPayloadError
from prometheus_client import CollectorRegistry
from prometheus_client.aiohttp import make_aiohttp_handler

from gpunuma import __version__
from gpunuma.quote import short
from gpunuma.settings import WebhookSettings, parse_listen
from gpunuma.webhook.certificate import CertificateReloader, TLSError
from gpunuma.webhook.guard import (
    BODY_TIMEOUT_S,
    HEADER_TIMEOUT_S,
    SMALL_BODY_BYTES,
    BodyBudget,
    Connection,
    GuardedSite,
    QuietServerLog,
)
from gpunuma.webhook.metrics import WebhookMetrics
from gpunuma.webhook.review import Admission, BadRequest, Memory, admit

__all__ = [
    "MAX_BODY_BYTES",
    "WebhookServer",
    "main",
]

MAX_BODY_BYTES = 3 * 1024 * 1024
# In-flight requests get this long to finish once the listener is closed; the API server gives up
# after the webhook's timeoutSeconds (5 in the chart) anyway. The chart's webhook.yaml spells it
# again in terminationGracePeriodSeconds (tests/chart checks the two agree).
SHUTDOWN_TIMEOUT_S = 10.0


log = logging.getLogger("gpunuma.webhook")
Handler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]


class WebhookServer:
    """The webhook's aiohttp application on a TLS site, started and stopped explicitly."""

    def __init__(self, settings: WebhookSettings, *, reload_interval: float = 2.0) -> None:
        if settings.tls_cert_file is None or settings.tls_key_file is None:
            raise TLSError("the webhook needs --tls-cert-file and --tls-key-file")
        self.settings = settings
        self.reloader = CertificateReloader(settings.tls_cert_file, settings.tls_key_file)
        self.metrics = WebhookMetrics(CollectorRegistry(auto_describe=True))
        self.memory = Memory()
        self.budget = BodyBudget()
        # Large reviews are decided here, one at a time, off the event loop: a client looping
        # 10,000-container pods then delays small admissions by a GIL switch, not by its work.
        self._large = ThreadPoolExecutor(1, thread_name_prefix="gpunuma-large-review")
        self.site: GuardedSite | None = None
        self._reload_interval = reload_interval
        self._ready = False
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._runner: web.ServerRunner | None = None
        self._watcher: asyncio.Task[None] | None = None
        self.port = 0

    def web_server(self) -> web.Server:
        """aiohttp's low-level server with the webhook's five paths.

        Not a ``web.Application``: its router, match info and middleware chain cost about 9 µs of
        CPU per request (measured with the benchmark's bare handler on both), more than a tenth
        of an admission, and five fixed paths need none of it.
        """
        routes: dict[str, tuple[str, Handler]] = {
            "/mutate": (hdrs.METH_POST, self._handler(namespace_opted_in=False)),
            "/mutate-namespace": (hdrs.METH_POST, self._handler(namespace_opted_in=True)),
            "/healthz": (hdrs.METH_GET, self._healthz),
            "/readyz": (hdrs.METH_GET, self._readyz),
            # Typed for web.Request, it reads only the headers and the query, which any has.
            "/metrics": (hdrs.METH_GET,
                         cast(Handler, make_aiohttp_handler(self.metrics.registry))),
        }

        def route(request: web.BaseRequest) -> Awaitable[web.StreamResponse]:
            # Not a coroutine: it hands aiohttp the chosen handler's own coroutine to await, one
            # frame fewer per admission.
            found = routes.get(request.path)
            if found is None:
                return _refuse(web.HTTPNotFound(text="404: Not Found\n"))
            method, handler = found
            if request.method != method and not (
                    method == hdrs.METH_GET and request.method == hdrs.METH_HEAD):
                allowed = [method, hdrs.METH_HEAD] if method == hdrs.METH_GET else [method]
                return _refuse(web.HTTPMethodNotAllowed(request.method, allowed))
            if hdrs.EXPECT in request.headers:
                return _continue_then(handler, request)
            return handler(request)

        loop = asyncio.get_running_loop()

        def make_request(message: Any, payload: Any, protocol: Any, writer: Any,
                         task: asyncio.Task[None]) -> web.BaseRequest:
            return web.BaseRequest(message, payload, protocol, writer, task, loop,
                                   client_max_size=MAX_BODY_BYTES)

        # No access log: a line per admission request is noise (and time); /metrics counts them.
        # keepalive_timeout also bounds the wait for a request's headers: aiohttp arms it when a
        # connection opens and after each response, and data arriving does not re-arm it.
        # lingering_time: after an answer to a body that was not read (too slow, too large),
        # what is left of it is drained for at most this long before the connection closes.
        return web.Server(route, request_factory=make_request, access_log=None,
                          keepalive_timeout=HEADER_TIMEOUT_S, lingering_time=1.0,
                          logger=QuietServerLog())

    async def start(self) -> None:
        host, port = parse_listen(self.settings.listen)
        self._runner = web.ServerRunner(self.web_server(), shutdown_timeout=SHUTDOWN_TIMEOUT_S)
        await self._runner.setup()
        self.site = GuardedSite(self._runner, host, port, ssl_context=self.reloader.context)
        await self.site.start()
        self.port = self._runner.addresses[0][1]
        self._watcher = asyncio.create_task(self._watch_certificate())
        self._ready = True
        log.info("gpunuma webhook %s serving https://%s:%d (/mutate, /mutate-namespace)",
                 __version__, host or "*", self.port)

    async def stop(self) -> None:
        """Report not-ready, keep answering for the shutdown delay, stop listening, finish the
        requests in flight, then close."""
        self._ready = False
        if self._runner is not None and self.settings.shutdown_delay > 0:
            # Endpoints still route here until the kubelet's readiness probe (or the endpoint
            # controller, for a pod being deleted) catches up: closing now would refuse those
            # admissions (failurePolicy Ignore admits the pods unbound, Fail refuses them).
            log.info("not ready; answering for %g s more before closing the listener",
                     self.settings.shutdown_delay)
            await asyncio.sleep(self.settings.shutdown_delay)
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
        if self._runner is not None:
            for site in self._runner.sites:
                await site.stop()
            # aiohttp's own shutdown stops reading from every connection at once, which would cut
            # off a request whose body is still arriving: wait for those first. Open keep-alive
            # connections are still served meanwhile.
            try:
                await asyncio.wait_for(self._idle.wait(), SHUTDOWN_TIMEOUT_S)
            except TimeoutError:
                log.warning("%d request(s) still in flight after %.0f s; closing anyway",
                            self._in_flight, SHUTDOWN_TIMEOUT_S)
            await self._runner.cleanup()
        self._large.shutdown(wait=False, cancel_futures=True)
        log.info("gpunuma webhook stopped")

    def reload_certificate(self) -> bool | None:
        """Load the certificate and key if they changed on disk (see CertificateReloader)."""
        result = self.reloader.reload_if_changed()
        if result is not None:
            self.metrics.reloads.labels("loaded" if result else "failed").inc()
        return result

    async def _watch_certificate(self) -> None:
        while True:
            await asyncio.sleep(self._reload_interval)
            await asyncio.to_thread(self.reload_certificate)

    def _handler(self, *, namespace_opted_in: bool) -> Handler:
        settings, metrics, memory = self.settings.mutation, self.metrics, self.memory

        def decide(body: bytes) -> Admission:
            return admit(body, settings, namespace_opted_in=namespace_opted_in, memory=memory)

        async def handle(request: web.BaseRequest) -> web.Response:
            started = time.perf_counter()
            outcome = "invalid"
            self._in_flight += 1
            self._idle.clear()
            # Every connection is the GuardedSite's (cast: a no-op that tells the type checker).
            connection = cast(Connection, request.protocol)
            connection.busy = True
            declared = request.content_length
            # A body of unknown length may be as large as the largest allowed.
            large = declared is None or declared > SMALL_BODY_BYTES
            reserved = min(declared if declared is not None else MAX_BODY_BYTES, MAX_BODY_BYTES)
            try:
                if (declared or 0) > MAX_BODY_BYTES:
                    return _bad_request(f"the body is over {MAX_BODY_BYTES} bytes")
                if large and not self.budget.take(reserved):
                    return web.json_response(
                        {"reason": "too many large requests at once; try again"}, status=503)
                try:
                    try:
                        if (request.content.is_eof() and declared is not None
                                and hdrs.CONTENT_ENCODING not in request.headers):
                            # Already read whole with the headers (the usual small review), of
                            # the length declared (checked above) and not to be decoded: taken
                            # from the buffer as it is, with no timer and no copy.
                            body = request.content.read_nowait()
                        elif request.content.is_eof():
                            body = await request.read()  # decoded, and its size checked, here
                        else:
                            async with asyncio.timeout(BODY_TIMEOUT_S):
                                body = await request.read()
                    except web.HTTPRequestEntityTooLarge:
                        return _bad_request(f"the body is over {MAX_BODY_BYTES} bytes")
                    except TimeoutError:
                        log.warning("request from %s: the body took over %g s; closing",
                                    request.remote, BODY_TIMEOUT_S)
                        return web.json_response(
                            {"reason": f"the body did not arrive within {BODY_TIMEOUT_S:g} s"},
                            status=408, headers={"Connection": "close"})
                    except (HttpProcessingError, RequestPayloadError) as exc:
                        # A body that is not what its Content-Encoding says (aiohttp decodes
                        # gzip, deflate and br while reading).
                        log.warning("request from %s: unreadable body: %s", request.remote,
                                    short(str(exc.__cause__ or exc), 200))
                        return _bad_request(
                            "the body cannot be decoded as its Content-Encoding "
                            f"{short(request.headers.get('Content-Encoding', ''))} says")
                    try:
                        if len(body) > SMALL_BODY_BYTES:
                            loop = asyncio.get_running_loop()
                            admission = await loop.run_in_executor(self._large, decide, body)
                        else:
                            admission = decide(body)
                    except BadRequest as exc:
                        log.warning("bad admission request from %s: %s", request.remote, exc)
                        return _bad_request(str(exc))
                finally:
                    if large:
                        self.budget.give(reserved)
                outcome = admission.outcome
                _log_admission(admission)
                return web.Response(body=admission.body, content_type="application/json")
            finally:
                connection.busy = False
                connection.served_at = time.monotonic()
                self._in_flight -= 1
                if not self._in_flight:
                    self._idle.set()
                metrics.requests.count(outcome, time.perf_counter() - started)

        return handle

    async def _healthz(self, request: web.BaseRequest) -> web.Response:
        return web.Response(text="ok\n")

    async def _readyz(self, request: web.BaseRequest) -> web.Response:
        if self._ready:
            return web.Response(text="ok\n")
        return web.Response(status=503, text="shutting down\n")


async def _refuse(error: web.HTTPException) -> web.StreamResponse:
    raise error


async def _continue_then(handler: Handler, request: web.BaseRequest) -> web.StreamResponse:
    """``Expect: 100-continue`` answered before the handler reads the body, as a
    ``web.Application`` does (curl asks so for large bodies, and otherwise waits a second)."""
    expect = request.headers[hdrs.EXPECT]
    if request.version == HttpVersion11:
        if expect.lower() != "100-continue":
            raise web.HTTPExpectationFailed(text=f"Unknown Expect: {short(expect)}")
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        request.writer.output_size = 0  # the answer's own bytes start after it
    return await handler(request)


def _bad_request(reason: str) -> web.Response:
    return web.json_response({"reason": reason}, status=400)


def _log_admission(admission: Admission) -> None:
    # Mutated pods say so themselves (gpunuma.io/injected, the API server's audit log has the
    # patch); a log line for each would cost a tenth of a request's time. Denials are rarer and
    # worth a line.
    if admission.outcome == "denied":
        log.info("pod %s: denied (%s)", admission.pod, admission.reason)
    elif admission.outcome in ("patched", "unchanged") and log.isEnabledFor(logging.DEBUG):
        # Checked first: the pod's name is only worked out for a line that is written.
        log.debug("pod %s: %s (%s)", admission.pod, admission.outcome, admission.reason)


async def serve(settings: WebhookSettings) -> None:
    """Run until SIGTERM or SIGINT, then shut down gracefully."""
    server = WebhookServer(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await server.start()
    try:
        await stop.wait()
        log.info("signal received: shutting down")
    finally:
        await server.stop()


# Objects allocated between two runs of the cyclic collector's youngest generation (Python's
# default is 700).
GC_YOUNG_THRESHOLD = 5000


def tune_garbage_collector() -> None:
    """Make the cyclic garbage collector cheap for this process's workload (process-wide).

    Each distinct pod allocates several hundred containers (the parsed review, the mutated lists,
    the patch), all freed by reference counting as soon as the answer is written. With the
    defaults the collector still runs every pod or two, and every ~100 pods walks the ~45,000
    objects the imports left behind. Frozen (``gc.freeze``), those are never walked again, and a
    larger young generation lets most of a request's objects die before a collection sees them:
    in-process, 50 → 33 µs per distinct pod (the same as with the collector off).
    """
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])


def main(settings: WebhookSettings) -> int:
    """Entry of ``gpunuma webhook`` (flags and their conversion in ``gpunuma.cli``)."""
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    tune_garbage_collector()
    try:
        asyncio.run(serve(settings))
    except (TLSError, OSError) as exc:
        print(f"gpunuma webhook: {exc}", file=sys.stderr)
        return 1
    return 0
