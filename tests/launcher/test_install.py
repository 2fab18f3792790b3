"""``gpunuma install-launcher DIR``: what the webhook's init container runs in every pod."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from gpunuma.launcher import script_path
from gpunuma.launcher.install import InstallError, install, main

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("kopf", "kubernetes", "aiohttp", "grpc", "pynvml")


def test_it_installs_an_identical_executable_copy(tmp_path: Path) -> None:
    target = install(tmp_path)

    assert target == tmp_path / "numa-exec"
    assert target.read_bytes() == script_path().read_bytes()
    assert stat.S_IMODE(target.stat().st_mode) == 0o755
    assert sorted(p.name for p in tmp_path.iterdir()) == ["numa-exec"]


def test_the_mode_is_0755_whatever_the_umask(tmp_path: Path) -> None:
    previous = os.umask(0o077)
    try:
        target = install(tmp_path)
    finally:
        os.umask(previous)

    assert stat.S_IMODE(target.stat().st_mode) == 0o755


def test_a_second_install_replaces_the_file_by_renaming(tmp_path: Path) -> None:
    old = tmp_path / "numa-exec"
    old.write_text("#!/bin/sh\necho stale\n")
    inode = old.stat().st_ino
    reader = old.open()  # a process still running the old file keeps reading the old content

    install(tmp_path)

    assert reader.read() == "#!/bin/sh\necho stale\n"
    reader.close()
    assert (tmp_path / "numa-exec").stat().st_ino != inode
    assert (tmp_path / "numa-exec").read_bytes() == script_path().read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["numa-exec"]


def test_the_installed_script_runs(tmp_path: Path) -> None:
    target = install(tmp_path)

    result = subprocess.run([str(target), "--help"], capture_output=True, text=True, check=False)

    assert result.returncode == 0
    assert result.stdout.startswith("usage: numa-exec")


def test_a_missing_directory_is_one_clear_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(tmp_path / "absent")

    err = capsys.readouterr().err
    assert code != 0
    assert err.count("\n") == 1
    assert err.startswith(f"gpunuma install-launcher: {tmp_path / 'absent'} does not exist")


def test_a_file_in_place_of_the_directory_is_refused(tmp_path: Path) -> None:
    file = tmp_path / "file"
    file.write_text("")

    with pytest.raises(InstallError, match="is not a directory"):
        install(file)


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


def test_an_unwritable_directory_is_one_clear_line_and_leaves_nothing_behind(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    directory = unwritable_directory(tmp_path)
    before = sorted(p.name for p in directory.iterdir())

    code = main(directory)

    err = capsys.readouterr().err
    assert code != 0
    assert err.count("\n") == 1
    assert f"cannot write into {directory}" in err
    assert sorted(p.name for p in directory.iterdir()) == before


def test_the_command_starts_without_kubernetes_kopf_aiohttp_grpc_or_nvml(tmp_path: Path) -> None:
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


def test_python_dash_m_gpunuma_install_launcher_works_end_to_end(tmp_path: Path) -> None:
    env = os.environ | {"PYTHONPATH": str(ROOT)}

    result = subprocess.run([sys.executable, "-m", "gpunuma", "install-launcher", str(tmp_path)],
                            capture_output=True, text=True, env=env, check=False)

    assert result.returncode == 0, result.stderr
    assert os.access(tmp_path / "numa-exec", os.X_OK)
