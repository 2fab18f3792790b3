"""Running the real numa-exec script under a chosen shell, with exactly the tools a test allows.

Each run gets a PATH made of one directory of symlinks: awk, cat and readlink (busybox's under
``busybox sh``, so busybox awk is exercised too), plus numactl and taskset only when the test says
so. A script that used any other tool would fail here, which is how the tests hold numa-exec to
its promise of needing nothing else. numactl in dry-run tests is a stand-in that records the probe
and can fail the ways a real one does: refuse memory policies (containerd's default seccomp profile
without SYS_NICE), refuse CPUs (a CPU list the kernel does not have) or not run at all (a slim image
whose numactl lacks libnuma).
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from gpunuma.launcher import script_path
from tests.conftest import require_tool
from tests.fixtures import machines

SCRIPT = script_path()
EXIT_REFUSED = 125


@dataclass(frozen=True)
class Shell:
    """A shell to run numa-exec with, and where its awk/cat/readlink come from."""

    name: str
    argv: tuple[str, ...]
    coreutils: str | None  # a multi-call binary for awk/cat/readlink, or None for the system's

    def link_tools(self, directory: Path) -> None:
        for tool in ("awk", "cat", "readlink"):
            target = self.coreutils or shutil.which(tool)
            assert target is not None, f"{tool} is not installed"
            (directory / tool).symlink_to(target)


SHELLS = {
    "dash": ("dash", None),
    "busybox": ("busybox", "busybox"),
    "bash-posix": ("bash", None),
}


def make_shell(name: str) -> Shell:
    program, coreutils = SHELLS[name]
    path = require_tool(program)
    argv = {"dash": (path,), "busybox": (path, "sh"), "bash-posix": (path, "--posix")}[name]
    return Shell(name, argv, path if coreutils else None)


@pytest.fixture(params=sorted(SHELLS))
def shell(request: pytest.FixtureRequest) -> Shell:
    """A test that takes this runs under dash, busybox sh (with busybox awk) and bash --posix."""
    return make_shell(request.param)


FAKE_NUMACTL = """#!/bin/sh
# Stand-in numactl: records each call; with NUMACTL_UNLOADABLE=1 it cannot start, the way a numactl
# without its libnuma fails; NUMACTL_REFUSE_CPUS=1 refuses --physcpubind as libnuma does a CPU the
# kernel lacks; NUMACTL_REFUSE_MEMORY=1 refuses memory policies as seccomp does without SYS_NICE.
[ -n "$NUMACTL_LOG" ] && printf '%s\\n' "$*" >>"$NUMACTL_LOG"
if [ "$NUMACTL_UNLOADABLE" = 1 ]; then
    echo "numactl: error while loading shared libraries: libnuma.so.1: cannot open shared \\
object file: No such file or directory" >&2
    exit 127
fi
for arg; do
    case $arg in
    --physcpubind=*)
        if [ "$NUMACTL_REFUSE_CPUS" = 1 ]; then
            printf '%s\\n' "libnuma: Warning: cpu argument 223 out of range" "" \\
                "<${arg#*=}> is invalid" >&2
            exit 1
        fi ;;
    --preferred=* | --membind=*)
        if [ "$NUMACTL_REFUSE_MEMORY" = 1 ]; then
            echo "set_mempolicy: Operation not permitted" >&2
            exit 1
        fi ;;
    --) break ;;
    esac
done
if [ -n "$NUMACTL_REAL" ]; then exec "$NUMACTL_REAL" "$@"; fi
exit 0
"""


@dataclass(frozen=True)
class Result:
    returncode: int
    stdout: str
    stderr: str
    probes: tuple[str, ...]  # the stand-in numactl's calls

    @property
    def plan(self) -> dict[str, str]:
        """The dry-run plan: key=value lines of stdout (DESIGN §6)."""
        return dict(line.split("=", 1) for line in self.stdout.splitlines())


@dataclass
class Launcher:
    """Runs numa-exec against a fixture tree; ``tools`` chooses what is on PATH besides awk, cat
    and readlink, ``extra`` adds commands the test runs (e.g. ``sleep``)."""

    shell: Shell
    workdir: Path

    def run(
        self,
        tree: machines.Tree | None,
        *command: str,
        arguments: Sequence[str] | None = None,
        timeout: float = 20,
        **options: Any,
    ) -> Result:
        argv, environment, log = self.prepare(tree, command, arguments, **options)
        completed = subprocess.run(
            argv, env=environment, capture_output=True, text=True, timeout=timeout, check=False
        )
        probes = tuple(log.read_text().splitlines()) if log.exists() else ()
        return Result(completed.returncode, completed.stdout, completed.stderr, probes)

    def start(self, tree: machines.Tree, *command: str, **options: Any) -> subprocess.Popen[bytes]:
        argv, environment, _ = self.prepare(tree, command, None, **options)
        return subprocess.Popen(argv, env=environment)

    def prepare(
        self,
        tree: machines.Tree | None,
        command: Sequence[str],
        arguments: Sequence[str] | None,
        *,
        env: Mapping[str, str] | None = None,
        tools: Sequence[str] = ("numactl", "taskset"),
        extra: Sequence[str] = (),
        refuse_memory_policy: bool = False,
        refuse_cpus: bool = False,
        numactl_unloadable: bool = False,
        real_numactl: bool = False,
        dry_run: bool = True,
    ) -> tuple[list[str], dict[str, str], Path]:
        number = len(list(self.workdir.iterdir()))
        bin_dir = self._bin_dir(self.workdir / f"bin-{number}", tools, extra)
        log = self.workdir / f"numactl-{number}.log"
        environment = {"PATH": str(bin_dir), "NUMACTL_LOG": str(log)}
        if tree is not None:
            environment |= {
                "GPUNUMA_SYSFS_ROOT": str(tree.sysfs),
                "GPUNUMA_PROCFS_ROOT": str(tree.procfs),
                "GPUNUMA_DEV_ROOT": str(tree.dev),
            }
        if dry_run:
            environment["GPUNUMA_DRY_RUN"] = "1"
        if refuse_memory_policy:
            environment["NUMACTL_REFUSE_MEMORY"] = "1"
        if refuse_cpus:
            environment["NUMACTL_REFUSE_CPUS"] = "1"
        if numactl_unloadable:
            environment["NUMACTL_UNLOADABLE"] = "1"
        if real_numactl:
            environment["NUMACTL_REAL"] = require_tool("numactl")
        environment |= dict(env or {})
        argv = [*self.shell.argv, str(SCRIPT)]
        argv += list(arguments) if arguments is not None else ["--", *command]
        return argv, environment, log

    def _bin_dir(self, bin_dir: Path, tools: Sequence[str], extra: Sequence[str]) -> Path:
        bin_dir.mkdir()
        self.shell.link_tools(bin_dir)
        for tool in (*tools, *extra):
            if tool == "numactl":
                fake = bin_dir / "numactl"
                fake.write_text(FAKE_NUMACTL)
                fake.chmod(0o755)
            else:
                (bin_dir / tool).symlink_to(require_tool(tool))
        return bin_dir


@pytest.fixture
def launcher(shell: Shell, tmp_path: Path) -> Launcher:
    workdir = tmp_path / "launcher"
    workdir.mkdir()
    return Launcher(shell, workdir)

