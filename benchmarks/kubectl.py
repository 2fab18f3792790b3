"""Start-up of ``kubectl gpunuma``, side by side with ``kubectl get --raw`` in the same run.

Run: ``python3 benchmarks/kubectl.py [--rounds N]``. A small HTTP server on 127.0.0.1 serves four
GPUNumaLayouts (real discovery over the fixture machines) and their Nodes; both commands read them
through the same kubeconfig, as a user would type them:
- baseline: ``kubectl get --raw /apis/gpunuma.io/v1alpha1/gpunumalayouts`` (one request, no table);
- plugin: ``kubectl gpunuma nodes`` through kubectl's plugin mechanism (kubectl finds
  ``kubectl-gpunuma`` on PATH and runs it: the plugin's cost includes that hand-over), and the
  plugin's console script alone.
Prints the median wall time of each and the ratio plugin/baseline. Target: the plugin under 0.3 s.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gpunuma.discovery import discover
from gpunuma.settings import DiscoverySettings
from gpunuma.topology import node_labels
from tests.fixtures import machines

ROOT = Path(__file__).resolve().parents[1]
TARGET_S = 0.3
MACHINES = {"gpu-a": machines.two_socket_8gpu, "gpu-b": machines.vm_two_node,
            "gpu-c": machines.epyc_nps4_8node, "gpu-d": machines.gh200_like}


def objects(root: Path) -> dict[str, Any]:
    """API path → JSON body, for the layouts and nodes of the fixture machines."""
    layouts, nodes = [], []
    for name, machine in MACHINES.items():
        tree = machines.build(machine(), root / name)
        layout = discover(DiscoverySettings(sysfs_root=tree.sysfs, procfs_root=tree.procfs, backend="sysfs"))
        layouts.append({"apiVersion": "gpunuma.io/v1alpha1", "kind": "GPUNumaLayout",
                        "metadata": {"name": name}, "spec": layout.to_document()})
        nodes.append({"apiVersion": "v1", "kind": "Node",
                      "metadata": {"name": name, "labels": node_labels(layout)}})
    return {
        "/apis/gpunuma.io/v1alpha1/gpunumalayouts": {"kind": "GPUNumaLayoutList", "items": layouts},
        "/api/v1/nodes": {"kind": "NodeList", "items": nodes},
    }


def serve(bodies: dict[str, Any]) -> ThreadingHTTPServer:
    encoded = {path: json.dumps(body).encode() for path, body in bodies.items()}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = encoded.get(self.path.partition("?")[0])
            self.send_response(200 if body is not None else 404)
            self.send_header("Content-Type", "application/json")
            body = body or b'{"kind":"Status","code":404}'
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def median_seconds(argv: list[str], env: dict[str, str], rounds: int) -> float:
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        subprocess.run(argv, env=env, check=True, stdout=subprocess.DEVNULL)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        print("kubectl is not installed: it is the baseline of this benchmark", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        server = serve(objects(Path(tmp)))
        config = Path(tmp) / "kubeconfig"
        config.write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": "bench",
            "clusters": [{"name": "bench", "cluster": {"server": f"http://127.0.0.1:{server.server_port}"}}],
            "users": [{"name": "bench", "user": {}}],
            "contexts": [{"name": "bench", "context": {"cluster": "bench", "user": "bench"}}],
        }))
        bin_dir = Path(tmp) / "bin"
        bin_dir.mkdir()
        plugin = bin_dir / "kubectl-gpunuma"
        # What pip's console script does, without needing an installed package.
        plugin.write_text(f"#!{sys.executable}\nimport sys\nsys.path.insert(0, {str(ROOT)!r})\n"
                          "from gpunuma.kubectl import main\nsys.exit(main())\n")
        plugin.chmod(0o755)
        env = {**os.environ, "KUBECONFIG": str(config), "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
        median_seconds([kubectl, "gpunuma", "nodes"], env, 2)  # warm the page cache and bytecode
        raw = median_seconds([kubectl, "get", "--raw", "/apis/gpunuma.io/v1alpha1/gpunumalayouts"], env,
                             args.rounds)
        via_kubectl = median_seconds([kubectl, "gpunuma", "nodes"], env, args.rounds)
        alone = median_seconds([str(plugin), "nodes"], env, args.rounds)
        server.shutdown()
    print(f"kubectl get --raw (baseline):      {raw * 1000:7.1f} ms")
    print(f"kubectl gpunuma nodes:             {via_kubectl * 1000:7.1f} ms   "
          f"{via_kubectl / raw:5.2f}× baseline")
    print(f"kubectl-gpunuma nodes (no kubectl): {alone * 1000:6.1f} ms   {alone / raw:5.2f}× baseline")
    verdict = "meets" if via_kubectl <= TARGET_S else "misses"
    print(f"target: kubectl gpunuma under {TARGET_S * 1000:.0f} ms: {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
