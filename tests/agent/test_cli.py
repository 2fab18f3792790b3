"""``gpunuma agent``: its flags, and the real process against kmock, stopped by SIGTERM."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gpunuma.cli import build_parser
from gpunuma.settings import parse_listen
from tests.agent.conftest import NODE, NODE_UID, cr, published
from tests.fixtures import machines
from tests.polling import eventually

ROOT = Path(__file__).resolve().parents[2]


def test_the_agent_flags_default_to_the_documented_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NODE_NAME", "gpu-node-3")
    args = build_parser().parse_args(["agent"])
    assert args.node_name == "gpu-node-3"
    assert (args.interval, args.heartbeat, args.allocations_interval) == (60, 600, 10)
    assert args.discovery_timeout == 30
    assert args.kubelet_socket == Path("/var/lib/kubelet/pod-resources/kubelet.sock")
    assert args.listen == ":8081"  # every address, IPv4 and IPv6
    assert args.kubeconfig is None
    assert args.gpu_resources == ("nvidia.com/gpu", "nvidia.com/mig-*", "amd.com/gpu")


def test_the_discovery_timeout_reads_its_environment_variable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("GPUNUMA_DISCOVERY_TIMEOUT", "7.5")
    assert build_parser().parse_args(["agent", "--node-name", "n"]).discovery_timeout == 7.5
    monkeypatch.setenv("GPUNUMA_DISCOVERY_TIMEOUT", "never")
    with pytest.raises(SystemExit):
        build_parser().parse_args(["agent", "--node-name", "n"])
    assert "'never'" in capsys.readouterr().err


def test_the_agent_needs_a_node_name(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("NODE_NAME", raising=False)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["agent"])
    assert "--node-name" in capsys.readouterr().err


@pytest.mark.parametrize("value", ["0", "-5", "soon"])
def test_a_period_that_is_not_a_positive_number_is_refused(
    value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["agent", "--node-name", "n", "--interval", value])
    assert f"'{value}'" in capsys.readouterr().err


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _kubeconfig(path: Path, server: str) -> Path:
    path.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "kmock",
        "clusters": [{"name": "kmock", "cluster": {"server": server}}],
        "users": [{"name": "agent", "user": {"token": "t0ken"}}],
        "contexts": [{"name": "kmock", "context": {"cluster": "kmock", "user": "agent"}}],
    }))
    return path


async def test_the_agent_process_publishes_serves_probes_and_stops_on_sigterm(
    kmock: Any, tmp_path: Path, build_machine: Callable[[machines.Machine], machines.Tree],
) -> None:
    kmock.objects["v1/nodes", None, NODE] = {"metadata": {"name": NODE, "uid": NODE_UID}}
    tree = build_machine(machines.two_socket_8gpu())
    port = _free_port()
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gpunuma", "agent", "--node-name", NODE,
        "--kubeconfig", str(_kubeconfig(tmp_path / "kubeconfig", str(kmock.url))),
        "--sysfs-root", str(tree.sysfs), "--procfs-root", str(tree.procfs), "--backend", "sysfs",
        "--kubelet-socket", str(tmp_path / "no-kubelet.sock"), "--listen", f"127.0.0.1:{port}",
        "--interval", "0.2",
        stderr=asyncio.subprocess.PIPE, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        await eventually(lambda: published(kmock), within=20)
        assert cr(kmock)["spec"]["summary"]["gpus"] == 8
        assert all(r.headers.get("Authorization") == "Bearer t0ken" for r in kmock)
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{port}/healthz") as response:
                health = await response.json()
                assert response.status == 200
            async with session.get(f"http://127.0.0.1:{port}/metrics") as response:
                metrics = await response.text()
        assert health["ok"] is True
        assert "does not exist" in health["errors"]["kubelet"]
        assert 'gpunuma_agent_api_writes_total{kind="created"} 1.0' in metrics
        assert 'gpunuma_agent_gpus{numa_node="1"} 4.0' in metrics
        assert "gpunuma_agent_discovery_duration_seconds_count" in metrics
        process.send_signal(signal.SIGTERM)
        await asyncio.wait_for(process.wait(), timeout=10)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.stderr is not None
    log = (await process.stderr.read()).decode()
    assert process.returncode == 0, log
    assert "stopping" in log


async def test_an_unreadable_kubeconfig_is_a_clear_error(tmp_path: Path) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gpunuma", "agent", "--node-name", NODE,
        "--kubeconfig", str(tmp_path / "missing"), "--listen", "127.0.0.1:0",
        stderr=asyncio.subprocess.PIPE, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    _, stderr = await asyncio.wait_for(process.communicate(), timeout=20)
    assert process.returncode == 2
    assert stderr.decode().startswith("gpunuma agent: cannot load kubeconfig")


@pytest.mark.parametrize(("text", "expected"), [
    (":8081", (None, 8081)),  # no host: aiohttp listens on every address of both families
    ("0.0.0.0:8081", ("0.0.0.0", 8081)),
    ("[::]:8081", ("::", 8081)),
])
def test_agent_listen_addresses_are_parsed(text: str, expected: tuple[str | None, int]) -> None:
    assert parse_listen(text) == expected
