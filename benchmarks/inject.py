"""``gpunuma inject`` on a large stream, side by side with a PyYAML re-serialisation in the same run.

Run: ``python3 benchmarks/inject.py [--copies N] [--rounds N]``. The stream is every manifest of
tests/fixtures/manifests (vLLM, Triton, KServe, Ray, PyTorchJob, NIM), repeated N times:
- baseline: what inject did before it kept manifests' meaning: PyYAML's C loader, the same
  mutation (``inject_documents``), PyYAML's C dumper;
- inject: ``inject_text``, which reads by go-yaml's rules, leaves untouched documents byte for byte
  and edits changed ones in place with ruamel.yaml's round-trip model (pure Python).
Prints the median wall time of each, documents per second, and the ratio inject/baseline.
Target: under 20x the baseline, the price of reading and writing in pure Python (ruamel.yaml's
round-trip model has no C parser): about 15x, some 30 documents a second on two busy cores.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import yaml

from gpunuma.settings import MutationSettings
from gpunuma.webhook.inject import inject_documents, inject_text

ROOT = Path(__file__).resolve().parents[1]
TARGET_RATIO = 20.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--copies", type=int, default=20, help="times the fixture set is repeated")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    pieces = [path.read_text() for path in sorted((ROOT / "tests/fixtures/manifests").glob("*.yaml"))]
    text = "---\n".join(pieces * args.copies)
    settings = MutationSettings()
    documents = sum(1 for d in yaml.load_all(text, Loader=yaml.CSafeLoader) if d is not None)

    def baseline() -> None:
        values = list(yaml.load_all(text, Loader=yaml.CSafeLoader))
        result = inject_documents(values, settings)
        yaml.dump_all(result.documents, Dumper=yaml.CSafeDumper, sort_keys=False)

    def inject() -> None:
        output, result = inject_text(text, settings)
        assert not result.errors
        assert output

    timings: dict[str, list[float]] = {"baseline": [], "inject": []}
    for _ in range(args.rounds):
        for name, run in (("baseline", baseline), ("inject", inject)):
            start = time.perf_counter()
            run()
            timings[name].append(time.perf_counter() - start)
    medians = {name: statistics.median(values) for name, values in timings.items()}
    print(f"{len(text) / 1e6:.2f} MB, {documents} documents, {args.rounds} rounds")
    for name, seconds in medians.items():
        print(f"{name:9} {seconds:7.3f} s   {documents / seconds:8.0f} documents/s")
    ratio = medians["inject"] / medians["baseline"]
    print(f"ratio inject/baseline {ratio:.1f} (target < {TARGET_RATIO:.0f})")
    return 0 if ratio < TARGET_RATIO else 1


if __name__ == "__main__":
    sys.exit(main())
