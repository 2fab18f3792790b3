"""Installing numa-exec into the pod's shared volume: the launcher image's ``/numa-exec --install
DIR`` (what the webhook injects) and ``gpunuma install-launcher DIR`` from the main image."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from gpunuma.launcher import binary_path, machine_architecture
from gpunuma.launcher.install import InstallError, install, main, packaged_binary
from tests.launcher.conftest import HOST_ARCH, ROOT, Launcher, arm64_variant, make

HEAVY = ("kopf", "kubernetes", "aiohttp", "grpc", "pynvml")


@pytest.fixture(scope="session")
def packaged() -> Path:
    """The package data install-launcher copies: built and packaged from this checkout."""
    if not HOST_ARCH:
        pytest.skip("numa-exec is built for amd64 and arm64 only")
    make("native", "package")
    return binary_path(HOST_ARCH)


@pytest.fixture
def umask_077() -> Iterator[None]:
    previous = os.umask(0o077)
    try:
        yield
    finally:
        os.umask(previous)


def unwritable_directory(tmp_path: Path) -> Path:
    """A directory this process cannot create files in (root ignores modes; sysfs refuses root)."""
    directory = tmp_path / "read-only"
    directory.mkdir()
    directory.chmod(0o555)
    if not os.access(directory, os.W_OK):
        return directory
    sysfs = Path("/sys/kernel")
    if sysfs.is_dir():
        return sysfs
    pytest.skip("no directory this process cannot write to")


# numa-exec --install DIR (the launcher image) ----------------------------------------------------


@pytest.fixture
def volume(tmp_path: Path) -> Path:
    """The pod's emptyDir (tmp_path itself holds the launcher fixture's work directory)."""
    directory = tmp_path / "volume"
    directory.mkdir()
    return directory


def self_install(launcher: Launcher, directory: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*launcher.variant.argv, "--install", str(directory)],
                          capture_output=True, text=True, check=False, env={})


def test_the_binary_installs_an_identical_executable_copy_of_itself(
    launcher: Launcher, volume: Path, umask_077: None
) -> None:
    result = self_install(launcher, volume)

    target = volume / "numa-exec"
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"numa-exec: installed {target}\n"
    assert target.read_bytes() == launcher.variant.binary.read_bytes()
    assert stat.S_IMODE(target.stat().st_mode) == 0o755
    assert sorted(p.name for p in volume.iterdir()) == ["numa-exec"]
    runs = subprocess.run([*launcher.variant.runner, str(target), "--help"], capture_output=True,
                          text=True, check=False)
    assert runs.stdout.startswith("usage: numa-exec -- COMMAND")


def test_a_second_self_install_replaces_the_file_by_renaming(
    native_launcher: Launcher, volume: Path
) -> None:
    old = volume / "numa-exec"
    old.write_text("stale")
    inode = old.stat().st_ino
    with old.open() as reader:  # a process still running the old file keeps reading it
        result = self_install(native_launcher, volume)
        assert reader.read() == "stale"

    assert result.returncode == 0, result.stderr
    assert old.stat().st_ino != inode
    assert old.read_bytes() == native_launcher.variant.binary.read_bytes()
    assert sorted(p.name for p in volume.iterdir()) == ["numa-exec"]


@pytest.mark.parametrize(("name", "why"), [("absent", "does not exist"),
                                           ("file", "is not a directory")])
def test_self_install_into_a_missing_directory_is_one_clear_line(
    native_launcher: Launcher, tmp_path: Path, name: str, why: str
) -> None:
    (tmp_path / "file").write_text("")

    result = self_install(native_launcher, tmp_path / name)

    assert result.returncode == 1
    assert result.stderr == (f"numa-exec --install: {tmp_path / name} {why}; create it first "
                             "(in a pod: mount the gpunuma-launcher emptyDir there)\n")


def test_self_install_into_an_unwritable_directory_leaves_nothing_behind(
    native_launcher: Launcher, tmp_path: Path
) -> None:
    directory = unwritable_directory(tmp_path)
    before = sorted(p.name for p in directory.iterdir())

    result = self_install(native_launcher, directory)

    assert result.returncode == 1
    assert result.stderr.startswith(f"numa-exec --install: cannot write into {directory} (")
    assert result.stderr.count("\n") == 1
    assert sorted(p.name for p in directory.iterdir()) == before


@pytest.mark.parametrize("arguments", [["--install"], ["--install", ""], ["--install", "a", "b"]])
def test_self_install_wants_exactly_one_directory(
    native_launcher: Launcher, arguments: list[str]
) -> None:
    result = subprocess.run([*native_launcher.variant.argv, *arguments], capture_output=True,
                            text=True, check=False)

    assert result.returncode == 1
    assert result.stderr.startswith("numa-exec --install: expected one directory; usage:")


def program_interpreter(binary: Path) -> bytes | None:
    """The ELF's PT_INTERP (the dynamic loader), or None for a static executable."""
    data = binary.read_bytes()
    assert data[:5] == b"\x7fELF\x02"  # 64-bit
    phoff = int.from_bytes(data[0x20:0x28], "little")
    entry_size = int.from_bytes(data[0x36:0x38], "little")
    for index in range(int.from_bytes(data[0x38:0x3A], "little")):
        header = data[phoff + index * entry_size:phoff + (index + 1) * entry_size]
        if int.from_bytes(header[0:4], "little") == 3:  # PT_INTERP
            offset = int.from_bytes(header[8:16], "little")
            size = int.from_bytes(header[32:40], "little")
            return data[offset:offset + size]
    return None


@pytest.mark.parametrize("architecture", ["native", "arm64"])
def test_the_shipped_binaries_are_static_and_under_1_mb(
    request: pytest.FixtureRequest, architecture: str
) -> None:
    binary = (request.getfixturevalue("native_binary") if architecture == "native"
              else arm64_variant().binary)

    assert binary.stat().st_size < 1024 * 1024
    # No program interpreter: it runs in a FROM scratch image and in any workload image.
    assert program_interpreter(binary) is None
    sanitized = request.getfixturevalue("sanitized_binary")
    assert program_interpreter(sanitized) is not None  # the check itself works


# gpunuma install-launcher DIR (the main image) ---------------------------------------------------


def test_install_launcher_copies_the_binary_of_this_architecture(
    packaged: Path, tmp_path: Path, umask_077: None
) -> None:
    target = install(tmp_path)

    assert target == tmp_path / "numa-exec"
    assert target.read_bytes() == packaged.read_bytes()
    assert stat.S_IMODE(target.stat().st_mode) == 0o755
    result = subprocess.run([str(target), "--help"], capture_output=True, text=True, check=False)
    assert result.stdout.startswith("usage: numa-exec -- COMMAND")


def test_a_second_install_replaces_the_file_by_renaming(packaged: Path, tmp_path: Path) -> None:
    old = tmp_path / "numa-exec"
    old.write_text("stale")
    inode = old.stat().st_ino

    install(tmp_path)

    assert (tmp_path / "numa-exec").stat().st_ino != inode
    assert (tmp_path / "numa-exec").read_bytes() == packaged.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["numa-exec"]


def test_a_package_without_the_binary_says_how_to_build_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("gpunuma.launcher.install.binary_path", lambda arch: tmp_path / arch)

    with pytest.raises(InstallError, match=r"no numa-exec for (amd64|arm64) .*make -C launcher"):
        install(tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_an_architecture_numa_exec_is_not_built_for_is_named() -> None:
    assert machine_architecture("aarch64") == "arm64"
    assert machine_architecture("x86_64") == "amd64"
    with pytest.raises(InstallError, match="built for amd64 and arm64, not riscv64"):
        packaged_binary("riscv64")


def test_a_missing_directory_is_one_clear_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(tmp_path / "absent")

    err = capsys.readouterr().err
    assert code != 0
    assert err.count("\n") == 1
    assert err.startswith(f"gpunuma install-launcher: {tmp_path / 'absent'} does not exist")


def test_an_unwritable_directory_is_one_clear_line_and_leaves_nothing_behind(
    packaged: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    directory = unwritable_directory(tmp_path)
    before = sorted(p.name for p in directory.iterdir())

    code = main(directory)

    err = capsys.readouterr().err
    assert code != 0
    assert err.count("\n") == 1
    assert f"cannot write into {directory}" in err
    assert sorted(p.name for p in directory.iterdir()) == before


def test_the_command_starts_without_kubernetes_kopf_aiohttp_grpc_or_nvml(
    packaged: Path, tmp_path: Path
) -> None:
    probe = (
        "import sys\n"
        "from gpunuma.cli import main\n"
        f"code = main(['install-launcher', {str(tmp_path)!r}])\n"
        f"print(code, sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    env = os.environ | {"PYTHONPATH": str(ROOT)}

    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                            env=env, check=False)

    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "0 []"
    assert (tmp_path / "numa-exec").exists()


def test_python_dash_m_gpunuma_install_launcher_works_end_to_end(
    packaged: Path, tmp_path: Path
) -> None:
    env = os.environ | {"PYTHONPATH": str(ROOT)}

    result = subprocess.run([sys.executable, "-m", "gpunuma", "install-launcher", str(tmp_path)],
                            capture_output=True, text=True, env=env, check=False)

    assert result.returncode == 0, result.stderr
    assert os.access(tmp_path / "numa-exec", os.X_OK)
