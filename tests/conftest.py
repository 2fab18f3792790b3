"""Shared test fixtures: machine trees and the rule for tools the tests need from the OS."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.fixtures import machines


def require_tool(name: str) -> str:
    """Path of an OS tool a test needs. Missing: skipped on a laptop, a failure in CI.

    CI installs every tool (.ci/run), so a missing one there means a broken install step, and a
    skip would hide it.
    """
    path = shutil.which(name)
    if path is None:
        message = f"{name} is not installed (apt-get install {name})"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


BuildMachineFixture = Callable[[machines.Machine], machines.Tree]


@pytest.fixture
def build_machine(tmp_path: Path) -> BuildMachineFixture:
    """Write a machine shape under a fresh temporary directory and return its roots."""
    counter = iter(range(1000))

    def _build(machine: machines.Machine) -> machines.Tree:
        return machines.build(machine, tmp_path / f"machine{next(counter)}")

    return _build
