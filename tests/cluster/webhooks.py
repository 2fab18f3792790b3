"""Helpers for serving `gpunuma webhook` to the API server: the Secret volume the kubelet would
keep up to date, and the running webhook."""

from __future__ import annotations

import base64
import contextlib
import os
import ssl
import threading
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tests.cluster.controlplane import ApiError, ControlPlane, Process


class SecretVolume:
    """Keeps a directory equal to a Secret's data, as the kubelet does for a mounted Secret."""

    def __init__(self, cluster: ControlPlane, namespace: str, name: str, directory: Path) -> None:
        self.cluster, self.path = cluster, f"/api/v1/namespaces/{namespace}/secrets/{name}"
        self.directory = directory
        self.version = ""
        self.updates = 0
        self._stop = threading.Event()
        self.sync()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def data(self) -> dict[str, bytes]:
        secret = self.cluster.request("GET", self.path)
        return {key: base64.b64decode(value) for key, value in secret.get("data", {}).items()}

    def sync(self) -> None:
        secret = self.cluster.request("GET", self.path)
        if secret["metadata"]["resourceVersion"] == self.version:
            return
        self.version = secret["metadata"]["resourceVersion"]
        target = self.directory / f"..{self.version}"
        target.mkdir(parents=True)
        for key, value in secret["data"].items():
            (target / key).write_bytes(base64.b64decode(value))
            link = self.directory / key
            if not link.is_symlink():
                link.symlink_to(f"..data/{key}")
        swap = self.directory / "..data_tmp"
        swap.symlink_to(target.name)
        os.replace(swap, self.directory / "..data")
        self.updates += 1

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            with contextlib.suppress(ApiError, OSError):  # the next round retries
                self.sync()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)


@dataclass
class Webhook:
    process: Process
    port: int
    route: str
    volume: SecretVolume
    ca_file: Path
    server_name: str

    def get(self, path: str) -> str:
        context = ssl.create_default_context(cafile=str(self.ca_file))
        context.check_hostname = False  # the certificate names the Service, not 127.0.0.1
        with urllib.request.urlopen(f"https://127.0.0.1:{self.port}{path}", context=context,
                                    timeout=10) as answer:
            text: str = answer.read().decode()
            return text

    def ready(self) -> bool:
        try:
            return bool(self.get("/readyz"))
        except OSError:
            assert self.process.alive(), self.process.tail()
            return False

    def requests(self) -> dict[str, float]:
        """Admission requests the webhook counted so far, by outcome (patched, unchanged, …)."""
        counts: dict[str, float] = {}
        for line in self.get("/metrics").splitlines():
            if line.startswith("gpunuma_webhook_requests_total{"):
                outcome = line.split('outcome="', 1)[1].split('"', 1)[0]
                counts[outcome] = float(line.rsplit(" ", 1)[1])
        return counts

    def total(self) -> float:
        return sum(self.requests().values())
