"""The README's commands, run as a newcomer runs them.

- The two first commands: the test command is what ``.ci/run`` runs, verbatim, in a fresh virtual
  environment (checked here); the install command is run verbatim in a fresh virtual environment by
  ``test_the_first_command_in_a_fresh_virtual_environment``, which downloads or builds every
  dependency and so runs in CI (CI=true) or when GPUNUMA_TEST_INSTALL=1, and skips otherwise.
- The quickstart without a cluster, verbatim, against fixture machines: its output is the README's.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures import machines
from tests.launcher.conftest import HOST_ARCH, make

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def sh_blocks(section: str | None = None) -> list[str]:
    text = README
    if section is not None:
        start = text.index(f"\n## {section}\n")
        end = text.find("\n## ", start + 1)
        text = text[start:end if end != -1 else None]
    return [m.group(1) for m in re.finditer(r"^```sh\n(.*?)^```", text, re.S | re.M)]


def first_commands() -> tuple[str, str]:
    lines = [line for line in sh_blocks()[0].splitlines() if line and not line.startswith("#")]
    install, test = lines
    return install, test


def test_the_first_screen_has_the_two_commands_in_a_virtual_environment() -> None:
    install, test = first_commands()
    assert README.index(install) < 1500, "the install command is on the first screen"
    for command in (install, test):
        assert command.startswith("python3 -m venv .venv && .venv/bin/pip install ")
        assert " pip install" not in command.replace(".venv/bin/pip install", ""), (
            "a bare pip install is refused by Debian's and Ubuntu's Python (PEP 668)"
        )
    assert install.endswith("&& .venv/bin/gpunuma inspect")
    assert test.endswith("&& .venv/bin/python -m pytest")


def test_ci_runs_the_readme_test_command_verbatim() -> None:
    _, test = first_commands()
    ci = (ROOT / ".ci/run").read_text().splitlines()
    assert test in ci, f".ci/run must run the README's test command verbatim: {test}"


def copy_checkout(destination: Path) -> Path:
    """The repository's tracked and untracked-but-not-ignored files: what a fresh clone has."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT, capture_output=True, check=True,
    ).stdout.decode().split("\0")
    for name in filter(None, listed):
        source = ROOT / name
        if source.is_file():
            target = destination / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    return destination


@pytest.mark.skipif(
    not (os.environ.get("CI") or os.environ.get("GPUNUMA_TEST_INSTALL")),
    reason="installs every dependency into a fresh virtual environment (about a minute): "
    "runs under CI=true or GPUNUMA_TEST_INSTALL=1",
)
def test_the_first_command_in_a_fresh_virtual_environment(tmp_path: Path) -> None:
    install, _ = first_commands()
    checkout = copy_checkout(tmp_path / "gpunuma")
    environment = {k: v for k, v in os.environ.items() if k not in {"VIRTUAL_ENV", "PYTHONPATH"}}
    completed = subprocess.run(
        ["bash", "-c", install], cwd=checkout, env=environment, capture_output=True, text=True,
        timeout=900, check=False,
    )
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    assert "NUMA NODES" in completed.stdout
    assert "NODE LABELS" in completed.stdout
    assert "gpunuma.io/numa-count=" in completed.stdout


def quickstart(tmp_path: Path, tree: machines.Tree) -> subprocess.CompletedProcess[str]:
    """Run the README's quickstart block verbatim in a directory whose .venv/bin/gpunuma is this
    checkout's CLI (with numa-exec built into its package data, as pip install does), with numa-exec
    pointed at a fixture machine. PATH holds only what the block itself runs."""
    (block,) = sh_blocks("Quickstart without a cluster")
    if not HOST_ARCH:
        pytest.skip("numa-exec is built for amd64 and arm64 only")
    make("native", "package")
    work = tmp_path / "work"
    (work / ".venv/bin").mkdir(parents=True)
    shim = work / ".venv/bin/gpunuma"
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m gpunuma "$@"\n')
    shim.chmod(0o755)
    tools = tmp_path / "tools"
    tools.mkdir()
    for tool in ("mkdir", "sh"):
        found = shutil.which(tool)
        assert found is not None, tool
        (tools / tool).symlink_to(found)
    environment = {
        "PATH": str(tools),
        "PYTHONPATH": str(ROOT),
        "GPUNUMA_SYSFS_ROOT": str(tree.sysfs),
        "GPUNUMA_PROCFS_ROOT": str(tree.procfs),
        "GPUNUMA_DEV_ROOT": str(tree.dev),
    }
    return subprocess.run(["sh", "-euc", block], cwd=work, env=environment, capture_output=True,
                          text=True, timeout=60, check=False)


def test_the_quickstart_prints_the_plan_the_readme_shows(tmp_path: Path) -> None:
    shown = re.search(r"^```\n(gpunuma install-launcher: .*?)^```", README, re.S | re.M)
    assert shown is not None
    machine = machines.two_socket_8gpu()
    machine = machine.__class__(**{**machine.__dict__, "visible": ("0000:1b:00.0", "0000:43:00.0")})
    tree = machines.build(machine, tmp_path / "machine")
    completed = quickstart(tmp_path, tree)
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout == shown.group(1)
    assert (tmp_path / "work/.venv/launcher/numa-exec").exists()


def test_the_quickstart_on_a_machine_without_gpus_runs_unpinned_and_says_why(tmp_path: Path) -> None:
    tree = machines.build(machines.cpu_only(), tmp_path / "machine")
    completed = quickstart(tmp_path, tree)
    assert completed.returncode == 0, completed.stderr
    installed, *lines = completed.stdout.splitlines()
    assert installed == "gpunuma install-launcher: installed .venv/launcher/numa-exec"
    plan = dict(line.split("=", 1) for line in lines)
    assert plan["gpus"] == plan["cpus"] == ""
    assert plan["exec"] == "python3 train.py"
    assert "gpunuma: policy=preferred" in completed.stderr
    assert "no GPU found" in completed.stderr
