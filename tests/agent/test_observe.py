"""Judging what a container's processes got (pure): numa_maps parsing and the classification."""

from __future__ import annotations

from gpunuma.agent.observe import MemoryPolicy, NumaMaps, TaskState, classify, parse_numa_maps

# Shaped like /proc/PID/numa_maps of a process started under `numactl --membind=1`, with one
# mapping of its own (mbind) and one of another policy; file and anon mappings.
NUMA_MAPS = """\
55d4c0a00000 bind:1 file=/usr/bin/python3.11 mapped=512 active=0 N1=512 kernelpagesize_kB=4
55d4c1b00000 bind:1 heap anon=20480 dirty=20480 N0=480 N1=20000 kernelpagesize_kB=4
7f2a3c000000 interleave:0-1 anon=1024 dirty=1024 N0=512 N1=512 kernelpagesize_kB=4
7f2a40000000 bind:1 anon=8 dirty=8 N1=8 kernelpagesize_kB=4
7ffd5e1c0000 bind:1 stack anon=33 dirty=33 N1=33 kernelpagesize_kB=4
"""


def test_the_task_policy_is_the_one_most_mappings_show_and_pages_are_summed() -> None:
    maps = parse_numa_maps(NUMA_MAPS)
    assert maps.policy == MemoryPolicy("bind", frozenset({1}))
    assert dict(maps.pages) == {0: 992, 1: 21065}
    assert str(maps.policy) == "bind:1"


def test_policies_with_spaces_and_flags() -> None:
    many = parse_numa_maps("7f00 prefer (many):0-1 anon=1 N0=1\n")
    assert many.policy == MemoryPolicy("prefer (many)", frozenset({0, 1}))
    relative = parse_numa_maps("7f00 interleave=relative:0-1 anon=1 N1=1\n")
    assert relative.policy == MemoryPolicy("interleave", frozenset({0, 1}))
    assert parse_numa_maps("7f00 default anon=1 N0=1\n").policy == MemoryPolicy("default")
    assert parse_numa_maps("").policy is None


LOCAL = frozenset(range(56, 112))
ALL = frozenset(range(0, 112))


def _task(cpus: frozenset[int], *, cgroup: frozenset[int] = ALL, policy: MemoryPolicy | None = None,
          mems: frozenset[int] = frozenset({0, 1})) -> TaskState:
    maps = NumaMaps(policy, {}) if policy is not None else None
    return TaskState(cpus, mems, cgroup, maps, None)


def _judge(task: TaskState, **overrides: object) -> dict[str, object]:
    arguments: dict[str, object] = {"gpu_nodes": frozenset({1}), "local_cpus": LOCAL,
                                    "all_cpus": ALL, "wrapped": False, "cgroup_written": None,
                                    "exclusive_cpus": frozenset()}
    arguments.update(overrides)
    return classify(task, **arguments)  # type: ignore[arg-type]


def test_numa_exec_and_an_application_binding_itself_are_told_apart() -> None:
    task = _task(LOCAL, policy=MemoryPolicy("preferred", frozenset({1})))
    assert _judge(task, wrapped=True)["by"] == "numa-exec"
    assert _judge(task, wrapped=False)["by"] == "process"
    assert _judge(task)["binding"] == "full"


def test_a_cgroup_the_agent_wrote_is_by_cgroup_and_cpu_only_without_memory_binding() -> None:
    observed = _judge(_task(LOCAL, cgroup=LOCAL, policy=MemoryPolicy("default")),
                      cgroup_written=LOCAL)
    assert (observed["binding"], observed["by"]) == ("cpu-only", "cgroup")
    assert "memory is not bound" in str(observed["reason"])


def test_the_kubelets_exclusive_cpus_on_the_other_socket_are_unbound_and_say_why() -> None:
    exclusive = frozenset({2, 3})
    observed = _judge(_task(exclusive, cgroup=exclusive, policy=MemoryPolicy("default")),
                      exclusive_cpus=exclusive)
    assert (observed["binding"], observed["by"]) == ("none", "kubelet")
    assert "exclusive CPUs 2-3 are not GPU-local" in str(observed["reason"])


def test_without_numa_maps_memory_counts_only_through_mems_allowed() -> None:
    observed = _judge(_task(LOCAL, policy=None))
    assert observed["policy"] == "unknown"
    assert observed["binding"] == "cpu-only"
    assert "CAP_SYS_PTRACE" in str(observed["reason"])
    assert _judge(_task(LOCAL, policy=None, mems=frozenset({1})))["binding"] == "full"


def test_a_wrapped_container_that_ran_unpinned() -> None:
    observed = _judge(_task(ALL, policy=MemoryPolicy("default")), wrapped=True)
    assert (observed["binding"], observed["by"]) == ("none", "none")
    assert str(observed["reason"]).startswith("numa-exec did not bind")
