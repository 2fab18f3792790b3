"""Run the real ``gpunuma`` commands (agent, operator, webhook, kubectl plugin) against the control
plane, as processes, with the identities the tests give them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tests.cluster.controlplane import REPO, Process, free_port
from tests.fixtures import machines


def gpunuma_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a ``python -m gpunuma`` child: this checkout first on the path, no
    GPUNUMA_* settings of the developer's shell."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("GPUNUMA_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    env.update(extra or {})
    return env


def gpunuma(name: str, args: Sequence[str], log: Path, *,
            env: Mapping[str, str] | None = None) -> Process:
    """Start ``gpunuma <args>`` as a child process logging to ``log``."""
    return Process(name, [sys.executable, "-m", "gpunuma", *args], log,
                   env=gpunuma_env(env)).start()


def operator(release_env: Mapping[str, str], kubeconfig: Path, log: Path, *,
             extra: Sequence[str] = ()) -> Process:
    """``gpunuma operator`` configured as the chart configures it (``release_env``: the
    Deployment's environment), authenticated by ``kubeconfig``, probes on a free local port."""
    env = dict(release_env, KUBECONFIG=str(kubeconfig),
               GPUNUMA_LIVENESS=f"http://127.0.0.1:{free_port()}/healthz",
               GPUNUMA_LOG_FORMAT="plain")
    return gpunuma("operator", ["operator", *extra], log, env=env)


def agent(node: str, tree: machines.Tree, kubeconfig: Path, log: Path, *,
          kubelet_socket: Path, extra: Sequence[str] = ()) -> Process:
    """``gpunuma agent`` for ``node`` over a fixture machine tree (sysfs backend)."""
    return gpunuma(f"agent-{node}", [
        "agent", "--node-name", node, "--kubeconfig", str(kubeconfig),
        "--sysfs-root", str(tree.sysfs), "--procfs-root", str(tree.procfs),
        "--backend", "sysfs", "--kubelet-socket", str(kubelet_socket),
        "--listen", f"127.0.0.1:{free_port()}", *extra,
    ], log)


def inspect_document(tree: machines.Tree) -> dict[str, Any]:
    """What ``gpunuma inspect -o json`` says for a fixture machine: the layout document."""
    result = subprocess.run(
        [sys.executable, "-m", "gpunuma", "inspect", "-o", "json", "--backend", "sysfs",
         "--sysfs-root", str(tree.sysfs), "--procfs-root", str(tree.procfs)],
        capture_output=True, text=True, env=gpunuma_env(), timeout=60, check=True)
    document: dict[str, Any] = json.loads(result.stdout)
    return document


def kubectl_gpunuma(args: Sequence[str], kubeconfig: Path,
                    shim_dir: Path) -> subprocess.CompletedProcess[str]:
    """``kubectl gpunuma <args>``: kubectl itself finds the plugin on PATH, as for a user. The
    plugin is this checkout's ``kubectl-gpunuma`` entry point (a shim in ``shim_dir``)."""
    shim = shim_dir / "kubectl-gpunuma"
    if not shim.exists():
        shim_dir.mkdir(parents=True, exist_ok=True)
        shim.write_text(f"#!{sys.executable}\nimport sys\nfrom gpunuma.kubectl import main\n"
                        "sys.exit(main())\n")
        shim.chmod(0o755)
    env = gpunuma_env({"KUBECONFIG": str(kubeconfig)})
    env["PATH"] = os.pathsep.join([str(shim_dir), env.get("PATH", "")])
    return subprocess.run(["kubectl", "gpunuma", *args], capture_output=True, text=True,
                          env=env, timeout=60, check=False)


def workload_env(cluster: Any, namespace: str, kind: str, name: str) -> dict[str, str]:
    """The first container's environment of an installed Deployment/DaemonSet, as its pod would
    get it (``fieldRef: metadata.namespace`` resolved): the chart's own configuration."""
    resource = {"Deployment": "deployments", "DaemonSet": "daemonsets"}[kind]
    workload = cluster.request("GET", f"/apis/apps/v1/namespaces/{namespace}/{resource}/{name}")
    env: dict[str, str] = {}
    for item in workload["spec"]["template"]["spec"]["containers"][0].get("env", []):
        if "value" in item:
            env[item["name"]] = item["value"]
        elif item.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "metadata.namespace":
            env[item["name"]] = namespace
    return env
