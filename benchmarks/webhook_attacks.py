"""The webhook under the attacks of issue #16, before and after, against the chart's limits.

For each version of the webhook — this tree ("after") and a git revision ("before", default
``69f576f``, the last one without the bounds) extracted with ``git archive`` into a temporary
directory — and for each attack, a fresh ``gpunuma webhook`` process (the CLI, as the Deployment
runs it) serves TLS on loopback while:

- a probe sends normal admissions (a one-GPU pod, different each time) one after another, and
  records each one's latency and whether it failed;
- an attacker process runs one attack for ``--duration`` seconds:
  - ``none``: nothing (the baseline of the same run);
  - ``warnings``: 2 clients loop pods whose gpunuma.io/containers lists 2.9 MB of unknown names;
  - ``connections``: 800 TLS connections held open and idle, plus 50 sending a body 1 byte a second
    (reopened when the server closes them);
  - ``cpu``: 4 clients loop reviews of a 10,000-container pod;
  - ``memory``: 4 clients loop distinct 60 KiB pods (each patched, so each is remembered).

Reported per version and attack: the server's peak RSS (VmHWM) against the chart's memory limit
(256 Mi: above it the pod is OOM-killed), the probe's p50/p99 in ms and its failed requests, and
the ratio of p99 to the no-attack p99 of the same version in the same run.

    python3 benchmarks/webhook_attacks.py [--duration 6] [--before 69f576f]

Targets (after): peak RSS under 256 Mi in every attack; probe p99 under 10x its no-attack p99
(at least 50 ms allowed: one GIL switch interval per step of a request) and no failed probe
request, except under ``connections``, where the cap may evict the probe's idle keep-alive
connection (a reconnect, counted but not a failure of the admission).
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import multiprocessing
import os
import re
import select
import signal
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
CHART_LIMIT_MIB = 256
ATTACKS = ("none", "warnings", "connections", "cpu", "memory")


# --- Requests --------------------------------------------------------------------------------------


def review(pod: dict[str, Any], uid: str) -> bytes:
    return json.dumps({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {"uid": uid, "kind": {"group": "", "version": "v1", "kind": "Pod"},
                    "resource": {"group": "", "version": "v1", "resource": "pods"},
                    "namespace": "ml", "operation": "CREATE", "object": pod},
    }).encode()


def gpu_pod(n: int, containers: int = 1, annotations: dict[str, str] | None = None,
            command: bool = True) -> dict[str, Any]:
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"generateName": "train-", "namespace": "ml",
                     "annotations": {"gpunuma.io/inject": "true", **(annotations or {})}},
        "spec": {"containers": [
            {"name": f"c{i}", "image": "vllm/vllm-openai:v0.6.3",
             **({"command": ["python3", "-m", "vllm.entrypoints.openai.api_server"]}
                if command else {}),
             "env": [{"name": "N", "value": str(n)}],
             "resources": {"limits": {"nvidia.com/gpu": "1"}}}
            for i in range(containers)
        ]},
    }


_CONTEXTS: list[ssl.SSLContext] = []


def _context() -> ssl.SSLContext:
    """One client context per process (building one reads the CA store: milliseconds each)."""
    if not _CONTEXTS:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        _CONTEXTS.append(context)
    return _CONTEXTS[0]


# --- The attacker (its own process, so that its work does not slow the probe) -----------------------


async def _post_loop(port: int, make_body: Any, stop_at: float) -> None:
    context = _context()
    n = 0
    while time.monotonic() < stop_at:
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection("127.0.0.1", port, ssl=context), 10)
            while time.monotonic() < stop_at:
                n += 1
                body = make_body(n)
                writer.write(b"POST /mutate HTTP/1.1\r\nHost: a\r\nContent-Type: application/json"
                             b"\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
                await writer.drain()
                status = await asyncio.wait_for(reader.readline(), 60)
                length = 0
                while (line := await asyncio.wait_for(reader.readline(), 60)) not in (b"\r\n", b""):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                await asyncio.wait_for(reader.readexactly(length), 60)
                if not status:
                    break
            writer.close()
        except (OSError, TimeoutError, asyncio.IncompleteReadError, ssl.SSLError):
            await asyncio.sleep(0.05)


async def _hold_idle(port: int, stop_at: float) -> None:
    context = _context()
    while time.monotonic() < stop_at:
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection("127.0.0.1", port, ssl=context), 10)
            await asyncio.wait_for(reader.read(), max(0.01, stop_at - time.monotonic()))
            writer.close()
        except (OSError, TimeoutError, ssl.SSLError):
            await asyncio.sleep(0.2)


async def _slow_body(port: int, stop_at: float) -> None:
    context = _context()
    while time.monotonic() < stop_at:
        try:
            _, writer = await asyncio.wait_for(
                asyncio.open_connection("127.0.0.1", port, ssl=context), 10)
            writer.write(b"POST /mutate HTTP/1.1\r\nHost: a\r\nContent-Length: 100000\r\n\r\n")
            while time.monotonic() < stop_at:
                writer.write(b" ")
                await writer.drain()
                await asyncio.sleep(1)
        except (OSError, TimeoutError, ssl.SSLError):
            await asyncio.sleep(0.2)


def attack(kind: str, port: int, duration: float) -> None:
    stop_at = time.monotonic() + duration

    async def run() -> None:
        tasks: list[Any] = []
        if kind == "warnings":
            names = ",".join(f"x{i}" for i in range(400_000))[:2_900_000]
            body = review(gpu_pod(0, annotations={"gpunuma.io/containers": names}), "a")
            tasks = [_post_loop(port, lambda n: body, stop_at) for _ in range(2)]
        elif kind == "connections":
            tasks = [_hold_idle(port, stop_at) for _ in range(800)]
            tasks += [_slow_body(port, stop_at) for _ in range(50)]
        elif kind == "cpu":
            body = review(gpu_pod(0, containers=10_000), "a")
            tasks = [_post_loop(port, lambda n: body, stop_at) for _ in range(4)]
        elif kind == "memory":
            def distinct(n: int) -> bytes:  # just under the 64 KiB the memory keeps
                return review(gpu_pod(n, containers=230, annotations={"pad": "x" * 12_000}),
                              f"m{n}")
            tasks = [_post_loop(port, distinct, stop_at) for _ in range(4)]
        await asyncio.gather(*tasks)

    if kind != "none":
        asyncio.run(run())
    else:
        time.sleep(duration)


# --- The server and the probe ---------------------------------------------------------------------


def start_server(code: Path, cert: Path, key: str) -> tuple[subprocess.Popen[bytes], int]:
    env = {**os.environ, "PYTHONPATH": str(code)}
    process = subprocess.Popen(
        [sys.executable, "-m", "gpunuma", "webhook", "--listen", "127.0.0.1:0",
         "--shutdown-delay", "0", "--tls-cert-file", str(cert), "--tls-key-file", key],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=code,
    )
    assert process.stderr is not None
    output = b""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        ready, _, _ = select.select([process.stderr], [], [], 0.2)
        if ready:
            output += os.read(process.stderr.fileno(), 65536)
            if found := re.search(rb"serving https://[^ ]*:(\d+)", output):
                # Drain the log from here on so that the server never blocks writing it.
                drain = multiprocessing.Process(target=_drain, args=(process.stderr.fileno(),))
                drain.start()
                return process, int(found.group(1))
        if process.poll() is not None:
            break
    raise SystemExit(f"the webhook did not start:\n{output.decode(errors='replace')}")


def _drain(fd: int) -> None:
    with open(fd, "rb", closefd=False) as stream:
        while stream.read(65536):
            pass


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def probe(port: int, duration: float) -> tuple[list[float], int, int]:
    """Latencies (ms) of normal admissions one after another; failed requests; reconnects."""
    latencies: list[float] = []
    failed = reconnects = 0
    connection: http.client.HTTPSConnection | None = None
    stop_at = time.monotonic() + duration
    n = 0
    while time.monotonic() < stop_at:
        n += 1
        body = review(gpu_pod(n), f"p{n}")
        for attempt in (1, 2):
            if connection is None:
                connection = http.client.HTTPSConnection("127.0.0.1", port, timeout=5,
                                                         context=_context())
            started = time.perf_counter()
            try:
                connection.request("POST", "/mutate", body,
                                   {"Content-Type": "application/json"})
                reply = connection.getresponse()
                payload = reply.read()
                ok = reply.status == 200 and b'"patch"' in payload
            except (OSError, http.client.HTTPException):
                connection.close()
                connection = None
                if attempt == 1:  # an evicted or timed-out keep-alive: reconnect once
                    reconnects += 1
                    continue
                ok = False
            latencies.append((time.perf_counter() - started) * 1000)
            failed += not ok
            break
        time.sleep(0.01)
    if connection is not None:
        connection.close()
    return latencies, failed, reconnects


def measure(code: Path, cert: Path, key: str, kind: str, duration: float) -> dict[str, float]:
    server, port = start_server(code, cert, key)
    try:
        attacker = multiprocessing.Process(target=attack, args=(kind, port, duration + 1))
        attacker.start()
        time.sleep(1.0)  # let the attack build up
        latencies, failed, reconnects = probe(port, duration)
        attacker.join(30)
        if attacker.is_alive():
            attacker.kill()
        alive = server.poll() is None
        peak = peak_rss_mib(server.pid) if alive else float("nan")
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    ordered = sorted(latencies) or [float("nan")]
    return {
        "peak_mib": peak,
        "p50_ms": statistics.median(ordered),
        "p99_ms": ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))],
        "requests": len(latencies),
        "failed": failed,
        "reconnects": reconnects,
    }


def extract(revision: str, into: Path) -> Path:
    archive = subprocess.run(["git", "-C", str(REPO), "archive", revision, "gpunuma"],
                             check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=6.0)
    parser.add_argument("--before", default="69f576f",
                        help="git revision of the webhook before the bounds (default 69f576f)")
    parser.add_argument("--attacks", default=",".join(ATTACKS))
    args = parser.parse_args()
    import trustme

    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        leaf = trustme.CA().issue_cert("127.0.0.1")
        cert, key = directory / "tls.crt", directory / "tls.key"
        cert.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
        key.write_bytes(leaf.private_key_pem.bytes())
        before = extract(args.before, Path(tempfile.mkdtemp(dir=directory)))
        versions = {"before": before, "after": REPO}
        results: dict[tuple[str, str], dict[str, float]] = {}
        print(f"chart memory limit: {CHART_LIMIT_MIB} MiB; each run {args.duration:g} s")
        print(f"{'version':8} {'attack':12} {'peak MiB':>9} {'p50 ms':>8} {'p99 ms':>8} "
              f"{'p99/base':>9} {'probes':>7} {'failed':>7} {'reconn':>7}")
        for kind in args.attacks.split(","):
            for version, code in versions.items():
                result = measure(code, cert, str(key), kind, args.duration)
                results[(version, kind)] = result
                base = results.get((version, "none"), result)["p99_ms"]
                over = " OOM at the chart's limit" if not result["peak_mib"] < CHART_LIMIT_MIB \
                    else ""
                print(f"{version:8} {kind:12} {result['peak_mib']:9.0f} {result['p50_ms']:8.1f} "
                      f"{result['p99_ms']:8.1f} {result['p99_ms'] / base:9.1f} "
                      f"{result['requests']:7.0f} {result['failed']:7.0f} "
                      f"{result['reconnects']:7.0f}{over}", flush=True)
    failures = []
    base = results.get(("after", "none"), {"p99_ms": 5.0})["p99_ms"]
    for (version, kind), result in results.items():
        if version != "after":
            continue
        if not result["peak_mib"] < CHART_LIMIT_MIB:
            failures.append(f"{kind}: peak {result['peak_mib']:.0f} MiB")
        if result["p99_ms"] > max(10 * base, 50.0):
            failures.append(f"{kind}: p99 {result['p99_ms']:.0f} ms")
        if result["failed"]:
            failures.append(f"{kind}: {result['failed']:.0f} failed probe requests")
    print("targets met" if not failures else "targets missed: " + "; ".join(failures))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
