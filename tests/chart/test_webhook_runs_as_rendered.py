"""The webhook starts as the chart runs it: its UID and groups, its Secret files with the modes the
kubelet gives them.

A check of the rendered YAML alone missed that the key was unreadable (mode 0440, owner root, no
fsGroup, image user 65532): every pod started, failed to read ``tls.key`` and exited. So this test
renders the chart, lays out the Secret volume as the kubelet would (files owned by root, group
``fsGroup`` when the pod sets one, the volume's ``defaultMode``), then runs the real
``gpunuma webhook`` process with the pod's UID, GID and supplementary groups and fetches ``/readyz``
over TLS from it. The test must run as root to switch users; elsewhere it is skipped (CI runs as root).
"""

from __future__ import annotations

import os
import re
import select
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme

from tests.chart.render import REPO, Rendered, load_chart, render

MODES = {
    "operator": {},
    "cert-manager": {"webhook": {"certificate": {"mode": "cert-manager"}}},
}


def image_user() -> tuple[int, int]:
    """UID and GID of the Dockerfile's final ``USER`` (the chart pins none for the webhook)."""
    users = re.findall(r"^USER\s+(\d+)(?::(\d+))?\s*$", (REPO / "Dockerfile").read_text(), re.M)
    assert users, "the Dockerfile sets no numeric USER"
    uid, gid = users[-1]
    return int(uid), int(gid or uid)


def pod_identity(rendered: Rendered) -> tuple[int, int, list[int], int | None]:
    """(uid, gid, supplementary groups, fsGroup) of the webhook container, as the kubelet runs it."""
    spec = rendered.pod_spec("webhook")
    pod_context: dict[str, Any] = spec.get("securityContext") or {}
    container_context: dict[str, Any] = spec["containers"][0].get("securityContext") or {}
    uid, gid = image_user()
    uid = container_context.get("runAsUser", pod_context.get("runAsUser", uid))
    gid = container_context.get("runAsGroup", pod_context.get("runAsGroup", gid))
    fs_group = pod_context.get("fsGroup")
    groups = list(pod_context.get("supplementalGroups") or [])
    if fs_group is not None:
        groups.append(fs_group)
    return uid, gid, groups, fs_group


def tls_volume(rendered: Rendered) -> tuple[str, int]:
    """(mount path, defaultMode) of the volume holding the serving Secret."""
    spec = rendered.pod_spec("webhook")
    volume = next(v for v in spec["volumes"] if "secret" in v)
    mount = next(m for m in spec["containers"][0]["volumeMounts"] if m["name"] == volume["name"])
    return mount["mountPath"], volume["secret"].get("defaultMode", 0o644)


@pytest.fixture
def public_dir() -> Iterator[Path]:
    """A directory other users can enter (pytest's tmp_path sits under a 0700 directory)."""
    path = Path(tempfile.mkdtemp(prefix="gpunuma-secret-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def write_secret(directory: Path, mode: int, fs_group: int | None) -> trustme.CA:
    """The serving Secret's files as the kubelet writes them: owned by root, group fsGroup when the
    pod has one (then group-readable, as the kubelet's volume ownership step makes them)."""
    ca = trustme.CA()
    leaf = ca.issue_cert("127.0.0.1", "localhost")
    files = {
        "tls.crt": b"".join(blob.bytes() for blob in leaf.cert_chain_pems),
        "tls.key": leaf.private_key_pem.bytes(),
        "ca.crt": ca.cert_pem.bytes(),
    }
    for name, content in files.items():
        path = directory / name
        path.write_bytes(content)
        os.chown(path, 0, 0 if fs_group is None else fs_group)
        path.chmod(mode | (0o440 if fs_group is not None else 0))
    return ca


# The interpreter may live where the chart's user cannot read it (a venv under /root), so the child
# starts as root, imports what the webhook needs, then drops to the pod's UID, GID and groups for
# good (setgroups, setgid, setuid: no way back) before the webhook opens any file. From there on
# every access is checked against the pod's identity, as in the container.
_AS_USER = """
import ast, os, sys
import gpunuma.cli, gpunuma.logs, gpunuma.webhook.server, gpunuma.webhook.mutation, gpunuma.webhook.review
uid, gid, groups, argv = ast.literal_eval(sys.argv[1])
os.setgroups(groups)
os.setgid(gid)
os.setuid(uid)
assert os.getresuid() == (uid, uid, uid) and os.getresgid() == (gid, gid, gid)
sys.exit(gpunuma.cli.main(argv))
"""


def run_webhook_as(uid: int, gid: int, groups: list[int], secret_dir: Path,
                   ca: trustme.CA) -> tuple[bool, str]:
    """Start ``gpunuma webhook`` as uid:gid; (whether /readyz answered over TLS, its stderr)."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(REPO),
           "HOME": "/nonexistent"}
    argv = ["webhook", "--listen", "127.0.0.1:0", "--shutdown-delay", "0",
            "--tls-cert-file", str(secret_dir / "tls.crt"),
            "--tls-key-file", str(secret_dir / "tls.key")]
    process = subprocess.Popen(
        [sys.executable, "-c", _AS_USER, repr((uid, gid, groups, argv))],
        env=env, cwd="/", stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    assert process.stderr is not None
    output = b""
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([process.stderr], [], [], 0.5)
            if ready:
                chunk = os.read(process.stderr.fileno(), 65536)
                if not chunk:
                    break
                output += chunk
            if found := re.search(rb"serving https://[^ ]*:(\d+)", output):
                return _readyz(int(found.group(1)), ca), output.decode(errors="replace")
            if process.poll() is not None and not ready:
                break
        return False, output.decode(errors="replace")
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        output += process.stderr.read()
        process.stderr.close()


def _readyz(port: int, ca: trustme.CA) -> bool:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
            context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
        tls.sendall(b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        return tls.recv(64).startswith(b"HTTP/1.1 200")


@pytest.mark.skipif(os.geteuid() != 0, reason="switching to the chart's UID needs root (CI is root)")
@pytest.mark.parametrize("mode", sorted(MODES))
def test_the_webhook_reads_its_key_as_the_chart_runs_it(mode: str, public_dir: Path) -> None:
    rendered = render(load_chart(), MODES[mode])
    uid, gid, groups, fs_group = pod_identity(rendered)
    assert uid != 0, "the webhook must not run as root"
    _, default_mode = tls_volume(rendered)
    ca = write_secret(public_dir, default_mode, fs_group)
    served, log = run_webhook_as(uid, gid, groups, public_dir, ca)
    assert served, (f"gpunuma webhook as {uid}:{gid} (groups {groups}) with the Secret at mode "
                    f"{default_mode:o} did not serve:\n{log}")


@pytest.mark.skipif(os.geteuid() != 0, reason="switching to the chart's UID needs root (CI is root)")
def test_the_harness_sees_an_unreadable_key(public_dir: Path) -> None:
    """The check above can fail: the old chart's 0440 root:root key does stop the webhook."""
    uid, gid = image_user()
    ca = write_secret(public_dir, 0o440, None)
    served, log = run_webhook_as(uid, gid, [], public_dir, ca)
    assert not served
    assert "tls.key" in log, log
    assert "Permission denied" in log, log
