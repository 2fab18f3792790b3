"""The docs against the code: a default the docs give is the default the command has."""

from __future__ import annotations

import argparse
import os
import re
from pathlib import Path

import pytest

from gpunuma.cli import build_parser

AGENT_DOC = Path(__file__).resolve().parents[1] / "docs" / "agent.md"
_ROW = re.compile(r"^\| `(--[a-z-]+)` \| ([^|]+) \|")


def _agent_table() -> list[tuple[str, str]]:
    text = AGENT_DOC.read_text(encoding="utf-8")
    return [(m[1], m[2].strip()) for line in text.splitlines() if (m := _ROW.match(line))]


def _agent_defaults(monkeypatch: pytest.MonkeyPatch) -> dict[str, object]:
    for variable in [v for v in os.environ if v.startswith("GPUNUMA_")]:
        monkeypatch.delenv(variable)
    args = build_parser().parse_args(["agent", "--node-name", "n1"])
    assert isinstance(args, argparse.Namespace)
    return vars(args)


def test_every_literal_default_in_the_agent_table_is_the_clis(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rows = _agent_table()
    assert len(rows) >= 8, "the agent's option table moved: update this test"
    defaults = _agent_defaults(monkeypatch)
    checked = 0
    for flag, cell in rows:
        actual = defaults[flag.removeprefix("--").replace("-", "_")]
        if cell.isdecimal():
            assert actual == float(cell), f"docs/agent.md: {flag} defaults to {cell}, CLI {actual}"
        elif re.fullmatch(r"`[^`]+`", cell):
            literal = cell.strip("`")
            shown = ",".join(actual) if isinstance(actual, tuple) else str(actual)
            assert shown == literal, f"docs/agent.md: {flag} defaults to {literal}, CLI {shown}"
        else:
            continue  # prose ("env NODE_NAME", "in-cluster")
        checked += 1
    assert checked >= 6
