"""The launcher image (the Dockerfile's ``launcher`` target), checked without Docker.

Docker cannot run here, so these tests read the Dockerfile and check it against what it must agree
with: the webhook's init container command, the files the build copies, the chart's securityContext
(runAsNonRoot needs a numeric USER), and the package data install-launcher copies.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import yaml

from gpunuma import __version__, names
from gpunuma.webhook.edits import INSTALL_COMMAND, LAUNCHER_UID
from tests.chart.test_image import dockerfile_instructions, included_by_dockerignore
from tests.launcher.conftest import ROOT


def stages() -> dict[str, list[tuple[str, str]]]:
    """Instructions per stage name (``FROM … AS name``)."""
    named: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] = []
    for keyword, arguments in dockerfile_instructions():
        if keyword == "FROM":
            words = arguments.split()
            current = []
            named[words[2] if len(words) > 2 and words[1].upper() == "AS" else f"#{len(named)}"] = current
        current.append((keyword, arguments))
    return named


def test_the_launcher_image_holds_nothing_but_the_binary() -> None:
    launcher = stages()["launcher"]

    assert launcher[0] == ("FROM", "scratch AS launcher")
    copies = [arguments for keyword, arguments in launcher if keyword in ("COPY", "ADD")]
    assert copies == ["--from=launcher-build /numa-exec /numa-exec"]
    assert not [keyword for keyword, _ in launcher if keyword == "RUN"]  # scratch has no shell


def test_its_entrypoint_is_what_the_webhook_injects() -> None:
    launcher = dict(stages()["launcher"])

    assert launcher["ENTRYPOINT"] == f'["{INSTALL_COMMAND[0]}"]'
    assert INSTALL_COMMAND == ("/numa-exec", "--install", names.LAUNCHER_MOUNT_PATH)
    assert launcher["CMD"] == f'["--install", "{names.LAUNCHER_MOUNT_PATH}"]'


def test_it_runs_as_a_numeric_non_root_user() -> None:
    user, _, group = dict(stages()["launcher"])["USER"].partition(":")

    assert user.isdigit()
    assert int(user) != 0
    # The webhook names this UID for the init container of pods that run as root.
    assert int(user) == LAUNCHER_UID
    assert group.isdigit()
    assert int(group) != 0


def test_the_build_stage_compiles_with_the_makefile_from_files_in_the_context() -> None:
    build = stages()["launcher-build"]
    runs = " ".join(arguments for keyword, arguments in build if keyword == "RUN")
    copied = [arguments.split()[0] for keyword, arguments in build if keyword == "COPY"]

    assert "musl-tools" in runs
    assert "make -C launcher native" in runs
    assert "$TARGETARCH" in runs
    for source in copied:
        assert (ROOT / source).exists(), source
        assert included_by_dockerignore(source), source
    assert included_by_dockerignore("launcher/src/main.c")
    assert included_by_dockerignore("launcher/Makefile")
    assert not included_by_dockerignore("launcher/build/numa-exec-amd64")
    assert not included_by_dockerignore("gpunuma/launcher/bin/numa-exec-amd64")


def test_the_main_image_carries_the_binary_as_install_launchers_package_data() -> None:
    build = stages()["build"]
    copies = [arguments for keyword, arguments in build if keyword == "COPY"]
    package_data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-data"]["gpunuma.launcher"]

    assert "--from=launcher-build /src/launcher/build/numa-exec-* ./gpunuma/launcher/bin/" in copies
    assert package_data == ["bin/numa-exec-*"]
    # The copy comes before the package is installed, or pip would not see it.
    keywords = [(keyword, arguments) for keyword, arguments in build]
    copy_at = next(i for i, (k, a) in enumerate(keywords) if k == "COPY" and "launcher-build" in a)
    install_at = next(i for i, (k, a) in enumerate(keywords) if k == "RUN" and "pip install" in a)
    assert copy_at < install_at


def test_gpunuma_inject_produces_pods_that_install_from_the_launcher_image(tmp_path: Path) -> None:
    manifest = tmp_path / "pod.yaml"
    manifest.write_text(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: trainer\n"
        "  annotations: {gpunuma.io/inject: 'true'}\nspec:\n  containers:\n"
        "  - {name: main, image: pytorch, command: [torchrun], resources: {limits: {nvidia.com/gpu: 1}}}\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("GPUNUMA_")}

    result = subprocess.run([sys.executable, "-m", "gpunuma", "inject", "-f", str(manifest)],
                            capture_output=True, text=True, check=False,
                            env=env | {"PYTHONPATH": str(ROOT)})

    assert result.returncode == 0, result.stderr
    (init,) = yaml.safe_load(result.stdout)["spec"]["initContainers"]
    launcher = dict(stages()["launcher"])
    assert init["image"] == f"ghcr.io/gpunuma/numa-exec:{__version__}"
    # What the image would run by itself (ENTRYPOINT + CMD) is what the pod asks it to run.
    assert init["command"] == [*json.loads(launcher["ENTRYPOINT"]), *json.loads(launcher["CMD"])]
