"""The mutation's output runs: its init container installs numa-exec, its wrapped command execs.

The init container's command and the wrapped container's command and environment are taken from a
mutated pod and run here, with the launcher directory in a temporary folder instead of the
emptyDir and the launcher image's /numa-exec being the binary built from launcher/. This machine
has no GPU, so numa-exec runs the command unpinned under ``preferred`` and refuses it under
``strict``: both show that the policy the webhook set reached it.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from gpunuma import names
from gpunuma.settings import MutationSettings
from gpunuma.webhook.mutation import mutate
from tests.launcher.conftest import BUILD, HOST_ARCH, make
from tests.webhook import pods

REPO = Path(__file__).resolve().parents[2]


def _run(argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False, cwd=REPO,
                          env={**os.environ, "PYTHONPATH": str(REPO), **env})


def _local(argv: list[str], directory: Path) -> list[str]:
    return [arg.replace(names.LAUNCHER_MOUNT_PATH, str(directory)) for arg in argv]


@pytest.mark.parametrize(("policy", "exit_code"), [("preferred", 0), ("strict", 125)])
def test_the_mutated_pod_installs_and_runs_numa_exec_in_front_of_the_command(
    tmp_path, policy, exit_code
):
    pod = pods.vllm_server()
    pod["metadata"]["annotations"][names.ANNOTATION_POLICY] = policy
    pod["spec"]["containers"][0]["command"] = ["sh", "-c", 'echo "ran: $0 $1"', "two words", "x"]
    out = mutate(pod, MutationSettings()).pod
    launcher: dict[str, Any] = out["spec"]["initContainers"][0]
    container: dict[str, Any] = out["spec"]["containers"][0]

    # The launcher image's only file: the static binary, at /numa-exec.
    assert launcher["command"][0] == "/numa-exec"
    if not HOST_ARCH:
        pytest.skip("numa-exec is built for amd64 and arm64 only")
    make("native")
    image_binary = BUILD / f"numa-exec-{HOST_ARCH}"
    install = _run([str(image_binary), *_local(launcher["command"][1:], tmp_path)], {})
    assert install.returncode == 0, install.stderr
    assert (tmp_path / "numa-exec").read_bytes() == image_binary.read_bytes()
    env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    assert env == {"GPUNUMA_POLICY": policy}

    result = _run(_local(container["command"], tmp_path), env)
    assert result.returncode == exit_code, result.stderr
    if exit_code == 0:
        assert result.stdout == "ran: two words x\n"
    assert result.stderr.startswith("gpunuma:")
