"""Every benchmark starts as the docs run it (``python3 benchmarks/NAME.py``).

A script's folder comes first on ``sys.path``, so a benchmark named like a standard-library module
(``operator.py`` was one) shadows it for every other benchmark: argparse imports ``operator``.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = sorted((Path(__file__).resolve().parents[1] / "benchmarks").glob("*.py"))


def test_no_benchmark_is_named_like_a_standard_library_module() -> None:
    clashes = [path.name for path in BENCHMARKS if path.stem in sys.stdlib_module_names]
    assert not clashes, f"rename these benchmarks: {clashes}"


@pytest.mark.parametrize("script", BENCHMARKS, ids=lambda path: path.name)
def test_every_benchmark_starts_and_shows_its_help(script: Path) -> None:
    result = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert "usage:" in result.stdout
