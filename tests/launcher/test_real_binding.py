"""numa-exec for real: the kernel's own binding, as the exec'd command sees it.

The fixture tree describes this machine's node 0 (its real CPUs, read at test time) with GPUs on it,
so the plan is one the kernel accepts. The command numa-exec execs is a small Python program that
reports its own ``Cpus_allowed_list`` (/proc/self/status), the memory policy its mappings show in
/proc/self/numa_maps (``bind:0``, ``prefer:0``, ``default``), its PID and its argv. Refusals are the
kernel's too: a real seccomp filter refusing set_mempolicy with EPERM (as containerd's default
profile does without CAP_SYS_NICE), CPUs this kernel does not have, a node that is not online.
"""

from __future__ import annotations

import json
import os
import platform
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gpunuma.topology import format_cpulist, parse_cpulist
from tests.conftest import BuildMachineFixture
from tests.fixtures import machines
from tests.launcher.conftest import EXIT_REFUSED, Launcher

REAL_NODES = Path("/sys/devices/system/node")
POSSIBLE_CPUS = Path("/sys/devices/system/cpu/possible")

REPORT = """
import json, os, sys
status = open("/proc/self/status").read().splitlines()
cpus = next(l.split(":", 1)[1].strip() for l in status if l.startswith("Cpus_allowed_list:"))
policies = sorted({line.split()[1] for line in open("/proc/self/numa_maps") if line.split()[1:]})
raw = [os.fsencode(argument).hex() for argument in sys.argv[1:]]
print(json.dumps({"cpus": cpus, "policies": policies, "pid": os.getpid(), "argv": sys.argv[1:],
                  "raw": raw}))
"""


def real_node_cpus(node: int = 0) -> frozenset[int]:
    cpulist = REAL_NODES / f"node{node}" / "cpulist"
    if not cpulist.exists():
        pytest.skip(f"this kernel shows no NUMA node {node}")
    cpus = parse_cpulist(cpulist.read_text()) & os.sched_getaffinity(0)
    if not cpus:
        pytest.skip(f"none of node {node}'s CPUs is usable by the test process")
    return cpus


def gpu(index: int, node: int) -> machines.Function:
    return machines.Function(
        bdf=f"0000:{index + 1:02x}:00.0", vendor=machines.NVIDIA, pci_class=machines.CLASS_3D,
        numa_node=node, model="NVIDIA H100 80GB HBM3",
        uuid=f"GPU-8e3a1c55-0000-1111-2222-33334444555{index}", minor=index,
    )


def this_host(cpus_allowed: str | None = None, gpu_nodes: tuple[int, ...] = (0,)) -> machines.Machine:
    """This machine's node 0 with its real CPUs and a GPU on it; a GPU on node N > 0 is on a node
    listed with node 0's CPUs, which the kernel does not have online (set_mempolicy: EINVAL)."""
    cpus = format_cpulist(real_node_cpus())
    nodes = tuple(
        machines.Node(n, cpus, 16000000,
                      tuple(10 if n == m else 21 for m in sorted(set(gpu_nodes) | {0})))
        for n in sorted(set(gpu_nodes) | {0})
    )
    gpus = tuple(gpu(i, node) for i, node in enumerate(gpu_nodes))
    return machines.Machine(nodes=nodes, functions=gpus, cpus_allowed=cpus_allowed)


def phantom_host(nodes: int) -> machines.Machine:
    """A GPU on each of ``nodes`` NUMA nodes whose CPUs this kernel does not have."""
    if not POSSIBLE_CPUS.exists():
        pytest.skip("this kernel shows no /sys/devices/system/cpu/possible")
    beyond = max(parse_cpulist(POSSIBLE_CPUS.read_text())) + 1
    numa = tuple(
        machines.Node(i, str(beyond + i), 16000000, tuple(10 if i == j else 21 for j in range(nodes)))
        for i in range(nodes)
    )
    return machines.Machine(nodes=numa, functions=tuple(gpu(i, i) for i in range(nodes)))


def report(launcher: Launcher, tree: machines.Tree, *arguments: str, policy: str = "preferred",
           wrap: tuple[str, ...] = ()) -> tuple[int, dict[str, object], str]:
    result = launcher.run(tree, sys.executable, "-c", REPORT, *arguments, dry_run=False,
                          wrap=wrap, env={"GPUNUMA_POLICY": policy})
    seen = json.loads(result.stdout) if result.returncode == 0 and result.stdout else {}
    return result.returncode, seen, result.stderr


def memory_policies_allowed() -> bool:
    """Whether this process may set a memory policy (ctypes: set_mempolicy(MPOL_PREFERRED, {0}))."""
    number = {"x86_64": 238, "aarch64": 237}.get(platform.machine())
    if number is None:
        pytest.skip(f"no set_mempolicy syscall number known for {platform.machine()}")
    probe = ("import ctypes, sys; mask = ctypes.c_ulong(1); "
             f"sys.exit(ctypes.CDLL(None, use_errno=True).syscall({number}, 1, "
             "ctypes.byref(mask), 65) != 0)")
    return subprocess.run([sys.executable, "-c", probe], check=False).returncode == 0


@pytest.fixture
def real(native_launcher: Launcher) -> Launcher:
    if not memory_policies_allowed():
        pytest.skip("this machine refuses set_mempolicy to the tests (seccomp without SYS_NICE?)")
    return native_launcher


def test_strict_really_binds_cpus_and_memory_to_node_0(
    real: Launcher, build_machine: BuildMachineFixture
) -> None:
    code, seen, stderr = report(real, build_machine(this_host()), policy="strict")

    assert code == 0, stderr
    assert parse_cpulist(str(seen["cpus"])) == real_node_cpus()
    assert seen["policies"] == ["bind:0"]
    assert stderr.endswith(" mem=bind\n")


def test_preferred_really_prefers_node_0_and_binds_the_allowed_cpus(
    real: Launcher, build_machine: BuildMachineFixture
) -> None:
    last = max(real_node_cpus())
    code, seen, stderr = report(real, build_machine(this_host(cpus_allowed=str(last))))

    assert code == 0, stderr
    assert seen["cpus"] == str(last)
    assert seen["policies"] == ["prefer:0"]


def test_cpu_only_binds_the_cpus_and_sets_no_memory_policy(
    real: Launcher, build_machine: BuildMachineFixture
) -> None:
    last = max(real_node_cpus())
    code, seen, stderr = report(real, build_machine(this_host(cpus_allowed=str(last))),
                                policy="cpu-only")

    assert code == 0, stderr
    assert seen["cpus"] == str(last)
    assert seen["policies"] == ["default"]


def test_several_nodes_are_preferred_together_where_the_machine_has_them(
    real: Launcher, build_machine: BuildMachineFixture
) -> None:
    cpu_nodes = [n for n in sorted(REAL_NODES.glob("node[0-9]*"))
                 if (n / "cpulist").read_text().strip()]
    if len(cpu_nodes) < 2:
        pytest.skip("this machine has fewer than two NUMA nodes with CPUs")
    ids = [int(n.name[4:]) for n in cpu_nodes[:2]]
    node_cpus = [format_cpulist(parse_cpulist((n / "cpulist").read_text())) for n in cpu_nodes[:2]]
    nodes = tuple(machines.Node(i, c, 16000000, (10, 21) if k == 0 else (21, 10))
                  for k, (i, c) in enumerate(zip(ids, node_cpus, strict=True)))
    machine = machines.Machine(nodes=nodes, functions=(gpu(0, ids[0]), gpu(1, ids[1])))

    code, seen, stderr = report(real, build_machine(machine))

    assert code == 0, stderr
    release = tuple(int(x) for x in platform.release().split(".")[:2] if x.isdigit())
    if release >= (5, 15):
        assert seen["policies"] == [f"prefer (many):{ids[0]},{ids[1]}"]
    else:
        assert seen["policies"] == ["default"]
        assert "Linux before 5.15" in stderr


# Refusals by the kernel -----------------------------------------------------------------------


@pytest.fixture
def seccomp(seccomp_refuse: Path) -> tuple[str, ...]:
    return (str(seccomp_refuse),)


def test_under_seccomp_preferred_binds_the_cpus_only_and_says_why(
    native_launcher: Launcher, build_machine: BuildMachineFixture, seccomp: tuple[str, ...]
) -> None:
    last = max(real_node_cpus())
    code, seen, stderr = report(native_launcher, build_machine(this_host(cpus_allowed=str(last))),
                                wrap=seccomp)

    assert code == 0, stderr
    assert seen["cpus"] == str(last)
    assert seen["policies"] == ["default"]
    assert f"cpus={last} mem=local: set_mempolicy was refused (Operation not permitted)" in stderr
    assert "SYS_NICE" in stderr
    assert stderr.count("\n") == 1


def test_under_seccomp_strict_exits_125_naming_sys_nice(
    native_launcher: Launcher, build_machine: BuildMachineFixture, seccomp: tuple[str, ...]
) -> None:
    code, _, stderr = report(native_launcher, build_machine(this_host()), policy="strict",
                             wrap=seccomp)

    assert code == EXIT_REFUSED
    assert stderr.startswith(
        "gpunuma: strict policy: the kernel refused to bind memory to NUMA node 0 "
        "(set_mempolicy: Operation not permitted); memory binding needs the SYS_NICE capability"
    )
    assert stderr.count("\n") == 1


def test_under_seccomp_cpu_only_is_not_affected(
    native_launcher: Launcher, build_machine: BuildMachineFixture, seccomp: tuple[str, ...]
) -> None:
    code, seen, stderr = report(native_launcher, build_machine(this_host()), policy="cpu-only",
                                wrap=seccomp)

    assert code == 0, stderr
    assert parse_cpulist(str(seen["cpus"])) == real_node_cpus()
    assert "set_mempolicy" not in stderr


def test_a_node_that_is_not_online_is_refused_without_blaming_sys_nice(
    real: Launcher, build_machine: BuildMachineFixture
) -> None:
    """Issue #15 item 8: the sh launcher's note blamed SYS_NICE for any refused memory policy."""
    if (REAL_NODES / "node1").exists():
        pytest.skip("this machine has a node 1; the test needs one it does not have")
    tree = build_machine(this_host(gpu_nodes=(1,)))

    code, seen, stderr = report(real, tree)
    strict, _, strict_stderr = report(real, tree, policy="strict")

    assert code == 0, stderr
    assert seen["policies"] == ["default"]
    assert parse_cpulist(str(seen["cpus"])) == real_node_cpus()
    assert "the kernel refused to prefer NUMA node 1 (set_mempolicy: Invalid argument)" in stderr
    assert strict == EXIT_REFUSED
    assert "(set_mempolicy: Invalid argument); not starting" in strict_stderr
    assert "SYS_NICE" not in stderr + strict_stderr


@pytest.mark.parametrize(("policy", "nodes"), [("preferred", 1), ("preferred", 2), ("cpu-only", 1)])
def test_cpus_the_kernel_refuses_leave_the_command_running_unpinned(
    native_launcher: Launcher, build_machine: BuildMachineFixture, policy: str, nodes: int
) -> None:
    code, seen, stderr = report(native_launcher, build_machine(phantom_host(nodes)), policy=policy)

    assert code == 0, stderr
    assert parse_cpulist(str(seen["cpus"])) == os.sched_getaffinity(0)
    assert seen["policies"] == ["default"]
    assert "the kernel refused to bind CPUs" in stderr
    assert stderr.endswith("running unpinned\n")


def test_strict_names_the_cpus_when_the_kernel_refuses_them(
    native_launcher: Launcher, build_machine: BuildMachineFixture
) -> None:
    code, _, stderr = report(native_launcher, build_machine(phantom_host(1)), policy="strict")

    assert code == EXIT_REFUSED
    assert stderr.startswith("gpunuma: strict policy: the kernel refused to bind CPUs ")
    assert "(sched_setaffinity: Invalid argument)" in stderr
    assert "SYS_NICE" not in stderr


# The command itself: argv, exit status, PID, signals --------------------------------------------

ARGUMENTS = ["a b", "  two  spaces ", "'single'", '"double"', "*", "?", "[a]", "$HOME", "`id`",
             "$(id)", "", "-", "--", "--physcpubind=0", "-h", "--install", "back\\slash",
             "new\nline", "tab\there", "é", "%s%n"]


@pytest.mark.parametrize("policy", ["preferred", "strict", "cpu-only"])
def test_arguments_pass_through_byte_for_byte(
    real: Launcher, build_machine: BuildMachineFixture, policy: str
) -> None:
    code, seen, stderr = report(real, build_machine(this_host()), *ARGUMENTS, policy=policy)

    assert code == 0, stderr
    assert seen["argv"] == ARGUMENTS


def test_bytes_that_are_not_utf8_pass_through_too(
    real: Launcher, build_machine: BuildMachineFixture
) -> None:
    tree = build_machine(this_host())
    binary = [b"\xff\xfe", b"caf\xe9", b"\x01\x7f", b"-"]
    argv, env = real.prepare(tree, [sys.executable, "-c", REPORT], None, dry_run=False)

    result = subprocess.run([*argv, *binary], env=env, capture_output=True, check=False)

    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["raw"] == [argument.hex() for argument in binary]


def test_the_command_keeps_numa_execs_pid(
    native_launcher: Launcher, build_machine: BuildMachineFixture
) -> None:
    tree = build_machine(this_host())
    read, write = os.pipe()
    process = native_launcher.start(
        tree, sys.executable, "-c", f"import os; os.write({write}, str(os.getpid()).encode())",
        dry_run=False, pass_fds=(write,))
    os.close(write)
    try:
        assert process.wait(timeout=30) == 0
        assert int(os.read(read, 64)) == process.pid
    finally:
        os.close(read)


@pytest.mark.parametrize("status", [0, 1, 42, 124, 125, 127])
def test_the_exit_status_of_the_command_is_numa_execs(
    native_launcher: Launcher, build_machine: BuildMachineFixture, status: int
) -> None:
    result = native_launcher.run(build_machine(this_host()), sys.executable, "-c",
                                 f"raise SystemExit({status})", dry_run=False)

    assert result.returncode == status


def test_a_command_that_does_not_exist_is_127_with_one_line(
    native_launcher: Launcher, build_machine: BuildMachineFixture
) -> None:
    result = native_launcher.run(build_machine(this_host()), "no-such-command-gpunuma",
                                 dry_run=False, env={"GPUNUMA_QUIET": "1"})

    assert result.returncode == 127
    assert result.stderr == ("gpunuma: cannot run no-such-command-gpunuma "
                             "(No such file or directory)\n")


def wait_for_exec(pid: int, program: str, deadline: float = 10.0) -> None:
    """Wait until process ``pid`` itself runs ``program``."""
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


def test_signals_reach_the_command_because_it_replaces_numa_exec(
    native_launcher: Launcher, build_machine: BuildMachineFixture
) -> None:
    tree = build_machine(this_host())
    process = native_launcher.start(tree, "sleep", "30", extra=("sleep",), dry_run=False,
                                    env={"GPUNUMA_QUIET": "1"})
    try:
        wait_for_exec(process.pid, "sleep")
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == -signal.SIGTERM
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_on_this_machines_own_sys_proc_and_dev_the_command_runs(native_launcher: Launcher) -> None:
    result = native_launcher.run(None, sys.executable, "-c", "print('ran')", dry_run=False)

    assert result.returncode == 0, result.stderr
    assert result.stdout == "ran\n"
    assert result.stderr.startswith("gpunuma: policy=preferred gpus=")
