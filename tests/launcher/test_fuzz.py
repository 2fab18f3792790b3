"""clang over numa-exec: its static analyzer, and a short run of its libFuzzer harnesses
(launcher/fuzz) over the parsers of cpulists, bus ids, procfs/sysfs files and the
*_VISIBLE_DEVICES/rank rule, under ASan and UBSan, from the committed seeds. The longer run is
``launcher/fuzz/run 20`` (20 s per harness; docs/numa-exec.md, "Building").
"""

from __future__ import annotations

import os
import subprocess

from tests.conftest import require_tool
from tests.launcher.conftest import BUILD, SOURCE

SECONDS = 3


def test_the_fuzzers_find_nothing_in_a_short_run() -> None:
    require_tool("clang")
    require_tool("make")

    result = subprocess.run([str(SOURCE / "fuzz" / "run"), str(SECONDS)], capture_output=True,
                            text=True, env=os.environ | {"BUILD": str(BUILD)}, timeout=300,
                            check=False)

    assert result.returncode == 0, result.stdout + result.stderr
    for harness in ("cpulist", "files", "visible"):
        assert f"fuzzing {harness} for {SECONDS}s" in result.stdout
    runs = [int(line.split()[-1]) for line in result.stdout.splitlines()
            if line.startswith("stat::number_of_executed_units")]
    assert len(runs) == 3
    assert min(runs) > 100  # each harness really ran, not just started


def test_clangs_static_analyzer_finds_nothing() -> None:
    require_tool("clang")
    require_tool("make")

    result = subprocess.run(["make", "-s", "-C", str(SOURCE), "analyze"], capture_output=True,
                            text=True, timeout=300, check=False)

    assert result.returncode == 0, result.stdout + result.stderr
