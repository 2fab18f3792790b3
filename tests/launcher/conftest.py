"""Running the real numa-exec executable against fixture trees.

The session builds the binaries with the project's Makefile (``launcher/``) into
``launcher/build/``: the static executable for this machine, the same sources compiled with
``-fsanitize=address,undefined``, and, where Debian's cross compiler and qemu-user are installed,
the arm64 executable, run under ``qemu-aarch64``. The ``launcher`` fixture runs every test with
each of them. PATH holds only what a test asks for, which is how the tests hold numa-exec to its
promise of needing nothing from the image (no shell, awk, numactl or taskset).
"""

from __future__ import annotations

import platform
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import require_tool
from tests.fixtures import machines

ROOT = Path(__file__).resolve().parents[2]
SOURCE = ROOT / "launcher"
BUILD = SOURCE / "build"
EXIT_REFUSED = 125
HOST_ARCH = {"x86_64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(platform.machine(), "")


def make(*targets: str) -> None:
    """Run the launcher's Makefile; a failed build fails the tests with the compiler's words."""
    require_tool("make")
    require_tool("gcc")
    result = subprocess.run(
        ["make", "-s", "-C", str(SOURCE), f"BUILD={BUILD}", *targets],
        capture_output=True, text=True, check=False,
    )
    if result.returncode != 0:
        pytest.fail(f"make {' '.join(targets)} failed:\n{result.stdout}{result.stderr}")


@dataclass(frozen=True)
class Variant:
    """One way of running numa-exec: the binary and what runs it (qemu for a foreign arch)."""

    name: str
    binary: Path
    runner: tuple[str, ...] = ()

    @property
    def argv(self) -> list[str]:
        return [*self.runner, str(self.binary)]

    @property
    def native(self) -> bool:
        """Whether the exec'd command and the binding are this machine's (not under qemu)."""
        return not self.runner


@pytest.fixture(scope="session")
def native_binary() -> Path:
    """The static numa-exec for this machine, as shipped."""
    if not HOST_ARCH:
        pytest.skip(f"numa-exec is built for amd64 and arm64, not {platform.machine()}")
    make("native")
    return BUILD / f"numa-exec-{HOST_ARCH}"


@pytest.fixture(scope="session")
def sanitized_binary() -> Path:
    make("check-build")
    return BUILD / "sanitized" / "numa-exec"


@pytest.fixture(scope="session")
def seccomp_refuse() -> Path:
    """A helper that installs a seccomp filter refusing set_mempolicy with EPERM, then execs."""
    make("check-build")
    return BUILD / "seccomp-refuse"


def arm64_variant() -> Variant:
    require_tool("aarch64-linux-gnu-gcc")
    qemu = shutil.which("qemu-aarch64-static") or require_tool("qemu-aarch64")
    make("arm64")
    return Variant("arm64", BUILD / "numa-exec-arm64", (qemu,))


VARIANTS = ("native", "sanitized", "arm64")


def make_variant(name: str, request: pytest.FixtureRequest) -> Variant:
    if name == "native":
        return Variant(name, request.getfixturevalue("native_binary"))
    if name == "sanitized":
        return Variant(name, request.getfixturevalue("sanitized_binary"))
    if HOST_ARCH == "arm64":
        return Variant(name, request.getfixturevalue("native_binary"))
    return arm64_variant()


@dataclass(frozen=True)
class Result:
    returncode: int
    stdout: str
    stderr: str

    @property
    def plan(self) -> dict[str, str]:
        """The dry-run plan: key=value lines of stdout (README.md, "numa-exec")."""
        return dict(line.split("=", 1) for line in self.stdout.splitlines())


@dataclass
class Launcher:
    """Runs numa-exec against a fixture tree; ``extra`` puts commands on PATH (e.g. ``sleep``),
    ``wrap`` runs numa-exec under another program (the seccomp helper)."""

    variant: Variant
    workdir: Path

    def run(
        self,
        tree: machines.Tree | None,
        *command: str,
        arguments: Sequence[str] | None = None,
        timeout: float = 30,
        **options: Any,
    ) -> Result:
        argv, environment = self.prepare(tree, command, arguments, **options)
        completed = subprocess.run(argv, env=environment, capture_output=True, timeout=timeout,
                                   check=False)
        stdout = completed.stdout.decode(errors="replace")
        stderr = completed.stderr.decode(errors="replace")
        assert "Sanitizer" not in stderr, stderr
        assert "runtime error:" not in stderr, stderr
        return Result(completed.returncode, stdout, stderr)

    def start(self, tree: machines.Tree, *command: str, pass_fds: Sequence[int] = (),
              **options: Any) -> subprocess.Popen[bytes]:
        argv, environment = self.prepare(tree, command, None, **options)
        return subprocess.Popen(argv, env=environment, pass_fds=pass_fds)

    def prepare(
        self,
        tree: machines.Tree | None,
        command: Sequence[str],
        arguments: Sequence[str] | None,
        *,
        env: Mapping[str, str] | None = None,
        extra: Sequence[str] = (),
        wrap: Sequence[str] = (),
        dry_run: bool = True,
    ) -> tuple[list[str], dict[str, str]]:
        number = len(list(self.workdir.iterdir()))
        bin_dir = self.workdir / f"bin-{number}"
        bin_dir.mkdir()
        for tool in extra:
            (bin_dir / tool).symlink_to(require_tool(tool))
        environment = {"PATH": str(bin_dir)}
        if tree is not None:
            environment |= {
                "GPUNUMA_SYSFS_ROOT": str(tree.sysfs),
                "GPUNUMA_PROCFS_ROOT": str(tree.procfs),
                "GPUNUMA_DEV_ROOT": str(tree.dev),
            }
        if dry_run:
            environment["GPUNUMA_DRY_RUN"] = "1"
        # The sanitizers must not hide a leak or stop at the first report without saying so.
        environment["ASAN_OPTIONS"] = "detect_leaks=0:abort_on_error=0"
        environment["UBSAN_OPTIONS"] = "print_stacktrace=1:halt_on_error=1"
        environment |= dict(env or {})
        argv = [*wrap, *self.variant.argv]
        argv += list(arguments) if arguments is not None else ["--", *command]
        return argv, environment


@pytest.fixture(params=VARIANTS)
def launcher(request: pytest.FixtureRequest, tmp_path: Path) -> Launcher:
    """A test that takes this runs the static binary, the sanitized build and arm64 under qemu."""
    workdir = tmp_path / "launcher"
    workdir.mkdir()
    return Launcher(make_variant(request.param, request), workdir)


@pytest.fixture(params=("native", "sanitized"))
def native_launcher(request: pytest.FixtureRequest, tmp_path: Path) -> Launcher:
    """For tests whose command really runs and is really bound: this machine's builds only."""
    workdir = tmp_path / "launcher"
    workdir.mkdir()
    return Launcher(make_variant(request.param, request), workdir)

