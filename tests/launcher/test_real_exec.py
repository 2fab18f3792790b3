"""numa-exec for real: through the machine's own numactl and taskset, on its own node 0.

The fixture tree describes this machine's node 0 (its real CPUs, read at test time) with one GPU
on it, so the plan is one the kernel accepts; what the child process then sees in
/proc/self/status and ``numactl --show`` is the binding numa-exec really made.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gpunuma.topology import format_cpulist, parse_cpulist
from tests.conftest import BuildMachineFixture, require_tool
from tests.fixtures import machines
from tests.launcher.conftest import EXIT_REFUSED, Launcher

REAL_NODE0 = Path("/sys/devices/system/node/node0/cpulist")
POSSIBLE_CPUS = Path("/sys/devices/system/cpu/possible")


def real_node0_cpus() -> frozenset[int]:
    if not REAL_NODE0.exists():
        pytest.skip("this kernel shows no NUMA node 0")
    cpus = parse_cpulist(REAL_NODE0.read_text()) & os.sched_getaffinity(0)
    assert cpus, "none of node 0's CPUs is usable by the test process"
    return cpus


def this_host(cpus_allowed: str | None = None) -> machines.Machine:
    """Node 0 of this machine with its real CPUs and one NVIDIA GPU on it."""
    gpu = machines.Function(
        bdf="0000:01:00.0", vendor=machines.NVIDIA, pci_class=machines.CLASS_3D, numa_node=0,
        model="NVIDIA H100 80GB HBM3", uuid="GPU-8e3a1c55-0000-1111-2222-333344445555", minor=0,
    )
    node = machines.Node(0, format_cpulist(real_node0_cpus()), 16000000, (10,))
    return machines.Machine(nodes=(node,), functions=(gpu,), cpus_allowed=cpus_allowed)


def phantom_host(nodes: int) -> machines.Machine:
    """A GPU on each of ``nodes`` NUMA nodes whose CPUs this kernel does not have, so numactl and
    taskset refuse the binding for real (libnuma: "cpu argument N out of range")."""
    if not POSSIBLE_CPUS.exists():
        pytest.skip("this kernel shows no /sys/devices/system/cpu/possible")
    beyond = max(parse_cpulist(POSSIBLE_CPUS.read_text())) + 1
    distances = [tuple(10 if i == j else 21 for j in range(nodes)) for i in range(nodes)]
    gpus = tuple(
        machines.Function(
            bdf=f"0000:{i + 1:02x}:00.0", vendor=machines.NVIDIA, pci_class=machines.CLASS_3D,
            numa_node=i, model="NVIDIA H100 80GB HBM3",
            uuid=f"GPU-8e3a1c55-0000-1111-2222-33334444555{i}", minor=i,
        )
        for i in range(nodes)
    )
    numa = tuple(machines.Node(i, str(beyond + i), 16000000, distances[i]) for i in range(nodes))
    return machines.Machine(nodes=numa, functions=gpus)


def status_field(status: str, name: str) -> str:
    return next(line.split(":", 1)[1].strip() for line in status.splitlines()
                if line.startswith(name + ":"))


@pytest.fixture
def real(launcher: Launcher) -> Launcher:
    require_tool("numactl")
    return launcher


def memory_policies_allowed() -> bool:
    """Whether this machine lets us set a memory policy (a seccomp profile without SYS_NICE won't)."""
    probe = subprocess.run([require_tool("numactl"), "--preferred=0", "--", "true"],
                           capture_output=True, check=False)
    return probe.returncode == 0


def test_strict_really_binds_cpus_and_memory_to_node_0(
    real: Launcher, build_machine: BuildMachineFixture
) -> None:
    tree = build_machine(this_host())

    status = real.run(tree, "cat", "/proc/self/status", dry_run=False, real_numactl=True,
                      env={"GPUNUMA_POLICY": "strict"})
    show = real.run(tree, "numactl", "--show", dry_run=False, real_numactl=True,
                    env={"GPUNUMA_POLICY": "strict"})

    if not memory_policies_allowed():
        # Where the kernel refuses memory policies, strict must refuse rather than run unbound.
        assert status.returncode == EXIT_REFUSED
        assert "SYS_NICE" in status.stderr
        return
    assert status.returncode == 0, status.stderr
    assert parse_cpulist(status_field(status.stdout, "Cpus_allowed_list")) == real_node0_cpus()
    assert "policy: bind" in show.stdout
    assert "membind: 0" in show.stdout
    assert "via=numactl" in status.stderr


def test_preferred_really_prefers_node_0_and_binds_the_allowed_cpus(
    real: Launcher, build_machine: BuildMachineFixture
) -> None:
    last = max(real_node0_cpus())
    tree = build_machine(this_host(cpus_allowed=str(last)))

    status = real.run(tree, "cat", "/proc/self/status", dry_run=False, real_numactl=True)
    show = real.run(tree, "numactl", "--show", dry_run=False, real_numactl=True)

    assert status_field(status.stdout, "Cpus_allowed_list") == str(last)
    assert status_field(show.stdout, "physcpubind").split() == [str(last)]
    if memory_policies_allowed():
        assert "policy: preferred" in show.stdout
        assert "preferred node: 0" in show.stdout
    else:
        assert "policy: default" in show.stdout
        assert "SYS_NICE" in show.stderr


def test_taskset_really_binds_when_numactl_is_absent(
    real: Launcher, build_machine: BuildMachineFixture
) -> None:
    require_tool("taskset")
    last = max(real_node0_cpus())
    tree = build_machine(this_host(cpus_allowed=str(last)))

    result = real.run(tree, "cat", "/proc/self/status", dry_run=False, tools=("taskset",))

    assert result.returncode == 0, result.stderr
    assert status_field(result.stdout, "Cpus_allowed_list") == str(last)
    assert "via=taskset" in result.stderr


def test_a_refused_memory_policy_still_binds_the_cpus_for_real(
    real: Launcher, build_machine: BuildMachineFixture
) -> None:
    last = max(real_node0_cpus())
    tree = build_machine(this_host(cpus_allowed=str(last)))

    result = real.run(tree, "cat", "/proc/self/status", dry_run=False, real_numactl=True,
                      refuse_memory_policy=True)

    assert result.returncode == 0, result.stderr
    assert status_field(result.stdout, "Cpus_allowed_list") == str(last)
    assert "SYS_NICE" in result.stderr


@pytest.mark.parametrize(
    ("policy", "nodes"), [("preferred", 1), ("preferred", 2), ("cpu-only", 1)]
)
def test_cpus_the_kernel_refuses_leave_the_command_running_unpinned(
    real: Launcher, build_machine: BuildMachineFixture, policy: str, nodes: int
) -> None:
    require_tool("taskset")
    tree = build_machine(phantom_host(nodes))

    result = real.run(tree, sys.executable, "-c", "print('ran')", dry_run=False,
                      real_numactl=True, env={"GPUNUMA_POLICY": policy})

    # numactl and taskset were both probed and refused; neither policy may fail the container.
    assert result.returncode == 0, result.stderr
    assert result.stdout == "ran\n"
    assert "via=none: " in result.stderr
    assert "numactl cannot bind CPUs" in result.stderr
    assert "taskset cannot bind CPUs" in result.stderr
    assert result.stderr.endswith("; running unpinned\n")


def test_strict_names_the_cpus_when_the_kernel_refuses_them(
    real: Launcher, build_machine: BuildMachineFixture
) -> None:
    tree = build_machine(phantom_host(1))

    result = real.run(tree, "true", dry_run=False, real_numactl=True,
                      env={"GPUNUMA_POLICY": "strict"})

    assert result.returncode == EXIT_REFUSED
    assert result.stderr.startswith("gpunuma: strict policy: numactl could not bind CPUs ")
    assert "SYS_NICE" not in result.stderr


def test_taskset_really_binds_when_numactl_cannot_run(
    real: Launcher, build_machine: BuildMachineFixture
) -> None:
    require_tool("taskset")
    last = max(real_node0_cpus())
    tree = build_machine(this_host(cpus_allowed=str(last)))

    result = real.run(tree, "cat", "/proc/self/status", dry_run=False, numactl_unloadable=True,
                      env={"GPUNUMA_POLICY": "cpu-only"})

    assert result.returncode == 0, result.stderr
    assert status_field(result.stdout, "Cpus_allowed_list") == str(last)
    assert "via=taskset: numactl cannot bind CPUs" in result.stderr


@pytest.mark.parametrize(
    "arguments",
    [
        ["a b", "  two  spaces ", "'single'", '"double"', "*", "?", "[a]", "$HOME", "`id`",
         "$(id)", "", "-", "--", "--physcpubind=0", "back\\slash", "new\nline", "tab\there", "é"],
    ],
)
@pytest.mark.parametrize("policy", ["preferred", "strict", "cpu-only"])
def test_arguments_pass_through_unchanged(
    real: Launcher, build_machine: BuildMachineFixture, arguments: list[str], policy: str
) -> None:
    tree = build_machine(this_host())
    script = "import json, sys; print(json.dumps(sys.argv[1:]))"

    result = real.run(tree, sys.executable, "-c", script, *arguments, dry_run=False,
                      real_numactl=True, env={"GPUNUMA_POLICY": policy})

    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == arguments


@pytest.mark.parametrize("status", [0, 1, 42, 124, 125, 127])
def test_the_exit_status_of_the_command_is_numa_execs(
    real: Launcher, build_machine: BuildMachineFixture, status: int
) -> None:
    tree = build_machine(this_host())

    result = real.run(tree, sys.executable, "-c", f"raise SystemExit({status})", dry_run=False,
                      real_numactl=True)

    assert result.returncode == status


def wait_for_exec(pid: int, program: str, deadline: float = 10.0) -> None:
    """Wait until process ``pid`` itself runs ``program``: the shell and numactl exec'd into it."""
    cmdline = Path(f"/proc/{pid}/cmdline")
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        try:
            argv0 = cmdline.read_bytes().split(b"\0")[0]
        except FileNotFoundError:
            break
        if Path(argv0.decode()).name == program:
            return
        time.sleep(0.01)
    pytest.fail(f"process {pid} never became {program}")


@pytest.mark.parametrize(
    "tools", [("numactl",), ("taskset",), ()], ids=["numactl", "taskset", "neither"]
)
def test_signals_reach_the_command_because_it_replaces_the_shell(
    launcher: Launcher, build_machine: BuildMachineFixture, tools: tuple[str, ...]
) -> None:
    tree = build_machine(this_host())
    process = launcher.start(tree, "sleep", "30", tools=tools, extra=("sleep",), dry_run=False,
                             real_numactl=True, env={"GPUNUMA_QUIET": "1"})
    try:
        wait_for_exec(process.pid, "sleep")
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == -signal.SIGTERM
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_on_this_machines_own_sys_proc_and_dev_the_command_runs(real: Launcher) -> None:
    result = real.run(None, sys.executable, "-c", "print('ran')", dry_run=False,
                      real_numactl=True)

    assert result.returncode == 0, result.stderr
    assert result.stdout == "ran\n"
    assert result.stderr.startswith("gpunuma: policy=preferred gpus=")
