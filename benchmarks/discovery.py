"""Discovery speed on the two-socket 8-GPU fixture, against reading the same files with ``cat``.

Run: ``python3 benchmarks/discovery.py [--rounds N]``. Prints the median time of one ``discover()``
(sysfs backend, what the agent does every interval), the median time of ``cat`` over exactly the
files that discovery read (the floor for any reader that spawns nothing but a process), the same
files read in-process by Python, and the ratios. Target: under 50 ms per discovery.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gpunuma.discovery import discover
from gpunuma.settings import DiscoverySettings
from tests.fixtures import machines

TARGET_MS = 50.0


def files_read_by_discovery(settings: DiscoverySettings) -> list[Path]:
    """Every file ``discover`` opens, recorded by wrapping ``Path.read_text`` for one run."""
    seen: list[Path] = []
    original = Path.read_text

    def recording(self: Path, *args: Any, **kwargs: Any) -> str:
        seen.append(self)
        return original(self, *args, **kwargs)

    Path.read_text = recording  # type: ignore[method-assign]
    try:
        discover(settings)
    finally:
        Path.read_text = original  # type: ignore[method-assign]
    return seen


def median_ms(action: Any, rounds: int) -> float:
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        action()
        samples.append((time.perf_counter() - start) * 1000)
    return statistics.median(samples)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        tree = machines.build(machines.two_socket_8gpu(), Path(directory))
        settings = DiscoverySettings(sysfs_root=tree.sysfs, procfs_root=tree.procfs, backend="sysfs")
        files = files_read_by_discovery(settings)
        layout = discover(settings)
        assert len(layout.gpus) == 8, "the fixture should have 8 GPUs"

        discovery = median_ms(lambda: discover(settings), args.rounds)
        cat = median_ms(
            lambda: subprocess.run(["cat", *map(str, files)], stdout=subprocess.DEVNULL, check=True),
            max(20, args.rounds // 4),
        )
        python_read = median_ms(lambda: [path.read_bytes() for path in files], args.rounds)

    print(f"fixture: two_socket_8gpu, {len(files)} files read per discovery")
    print(f"discover() (sysfs backend)  median {discovery:8.3f} ms")
    print(f"cat of the same files       median {cat:8.3f} ms   discovery/cat    = {discovery / cat:6.2f}x")
    print(f"python read of same files   median {python_read:8.3f} ms   discovery/python = "
          f"{discovery / python_read:6.2f}x")
    verdict = "PASS" if discovery < TARGET_MS else "FAIL"
    print(f"target: < {TARGET_MS:.0f} ms per discovery: {verdict} ({discovery:.2f} ms)")
    return 0 if verdict == "PASS" else 1


if __name__ == "__main__":
    sys.exit(main())
