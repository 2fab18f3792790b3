"""numa-exec's dry-run plans (README.md, "numa-exec") on fixture machines, for every build of it.

Every test runs the real executable with GPUNUMA_DRY_RUN=1 and an empty PATH (it needs no tool
from the image) and asserts the key=value plan it prints. A dry run decides but makes no call: what
the kernel answers to the binding itself is tested for real in test_real_binding.py.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from tests.conftest import BuildMachineFixture
from tests.fixtures import machines
from tests.launcher.conftest import EXIT_REFUSED, Launcher

NODE0 = "0-55,112-167"
NODE1 = "56-111,168-223"
BOTH = "0-223"
BUS0 = ["0000:1b:00.0", "0000:43:00.0", "0000:52:00.0", "0000:61:00.0"]
BUS1 = ["0000:9d:00.0", "0000:c3:00.0", "0000:d1:00.0", "0000:df:00.0"]
ALL8 = BUS0 + BUS1
CMD = ("python3", "-m", "vllm.entrypoints.openai.api_server")


def dgx(*visible: str, cpus_allowed: str | None = None) -> machines.Machine:
    return replace(
        machines.two_socket_8gpu(), visible=visible or None, cpus_allowed=cpus_allowed
    )


def uuid_of(machine: machines.Machine, bus_id: str) -> str:
    uuid = next(gpu.uuid for gpu in machine.gpus if gpu.bdf == bus_id)
    assert uuid is not None
    return uuid


def planned(gpus: list[str], numa: str, cpus: str, mem: str, exec_: str) -> dict[str, str]:
    return {"gpus": ",".join(gpus), "numa": numa, "cpus": cpus, "mem": mem, "exec": exec_}


# GPUs on one node, and across nodes ---------------------------------------------------------------


@pytest.mark.parametrize("count", [1, 2, 4])
def test_gpus_on_one_node_prefer_that_nodes_memory_and_bind_its_cpus(
    launcher: Launcher, build_machine: BuildMachineFixture, count: int
) -> None:
    result = launcher.run(build_machine(dgx(*BUS0[:count])), *CMD)

    assert result.returncode == 0, result.stderr
    assert result.plan == planned(BUS0[:count], "0", NODE0, "preferred", " ".join(CMD))
    assert result.stderr == (f"gpunuma: policy=preferred gpus={','.join(BUS0[:count])} numa=0 "
                             f"cpus={NODE0} mem=preferred\n")


def test_gpus_across_two_nodes_bind_the_union_of_cpus_and_prefer_both_nodes(
    launcher: Launcher, build_machine: BuildMachineFixture
) -> None:
    result = launcher.run(build_machine(dgx(BUS0[0], BUS1[3])), *CMD)

    # Several nodes: MPOL_PREFERRED_MANY where the kernel has it (see test_real_binding.py).
    assert result.plan == planned([BUS0[0], BUS1[3]], "0,1", BOTH, "preferred", " ".join(CMD))


def test_a_container_that_sees_every_gpu_is_bound_to_every_gpu_node(
    launcher: Launcher, build_machine: BuildMachineFixture
) -> None:
    result = launcher.run(build_machine(dgx()), "true")

    assert result.plan["gpus"] == ",".join(ALL8)
    assert result.plan["numa"] == "0,1"


# Policies -----------------------------------------------------------------------------------------


def test_strict_binds_memory_to_the_gpu_node(
    launcher: Launcher, build_machine: BuildMachineFixture
) -> None:
    result = launcher.run(build_machine(dgx(*BUS1[:2])), *CMD, env={"GPUNUMA_POLICY": "strict"})

    assert result.returncode == 0, result.stderr
    assert result.plan == planned(BUS1[:2], "1", NODE1, "bind", " ".join(CMD))


def test_strict_binds_memory_to_every_gpu_node_when_they_span_two(
    launcher: Launcher, build_machine: BuildMachineFixture
) -> None:
    result = launcher.run(build_machine(dgx(BUS0[1], BUS1[1])), "true",
                          env={"GPUNUMA_POLICY": "strict"})

    assert result.plan == planned([BUS0[1], BUS1[1]], "0,1", BOTH, "bind", "true")


def test_cpu_only_binds_cpus_and_leaves_memory_alone(
    launcher: Launcher, build_machine: BuildMachineFixture
) -> None:
    result = launcher.run(build_machine(dgx(BUS0[0])), *CMD, env={"GPUNUMA_POLICY": "cpu-only"})

    assert result.plan == planned([BUS0[0]], "0", NODE0, "local", " ".join(CMD))


def test_an_empty_policy_means_preferred(
    launcher: Launcher, build_machine: BuildMachineFixture
) -> None:
    result = launcher.run(build_machine(dgx(BUS0[0])), "true", env={"GPUNUMA_POLICY": ""})

    assert result.plan["mem"] == "preferred"


# Cpus_allowed_list --------------------------------------------------------------------------------


def test_cpus_allowed_list_cuts_the_nodes_cpus(
    launcher: Launcher, build_machine: BuildMachineFixture
) -> None:
    tree = build_machine(dgx(BUS0[0], cpus_allowed="2-5,60-63,112"))

    result = launcher.run(tree, "true")

    assert result.plan == planned([BUS0[0]], "0", "2-5,112", "preferred",
           "true")


def test_cpus_allowed_list_that_excludes_the_node_leaves_the_command_unpinned(
    launcher: Launcher, build_machine: BuildMachineFixture
) -> None:
    result = launcher.run(build_machine(dgx(BUS0[0], cpus_allowed="56-60")), "true")

    assert result.returncode == 0
    assert result.plan == planned([BUS0[0]], "0", "", "local", "true")
    assert "Cpus_allowed_list" in result.stderr


def test_cpus_allowed_list_that_excludes_the_node_fails_strict(
    launcher: Launcher, build_machine: BuildMachineFixture
) -> None:
    result = launcher.run(build_machine(dgx(BUS0[0], cpus_allowed="56-60")), "true",
                          env={"GPUNUMA_POLICY": "strict"})

    assert result.returncode == EXIT_REFUSED
    assert result.stderr.startswith("gpunuma: strict policy: none of the CPUs of NUMA node 0")


# Where the NUMA node comes from -------------------------------------------------------------------


def test_numa_node_minus_one_on_a_one_node_machine_is_that_node(
    launcher: Launcher, build_machine: BuildMachineFixture
) -> None:
    result = launcher.run(build_machine(machines.vm_single_node()), "true")

    assert result.plan == planned(["0000:00:1e.0"], "0", "0-7", "preferred",
           "true")


def test_numa_node_minus_one_on_a_two_node_machine_is_unknown_and_runs_unpinned(
    launcher: Launcher, build_machine: BuildMachineFixture
) -> None:
    result = launcher.run(build_machine(machines.vm_two_node()), "true")

    assert result.returncode == 0
    assert result.plan == planned(["0000:00:04.0", "0000:00:05.0"], "", "", "local", "true")
    assert "the NUMA node of GPU 0000:00:04.0 is unknown" in result.stderr


def test_numa_node_minus_one_on_a_two_node_machine_fails_strict(
    launcher: Launcher, build_machine: BuildMachineFixture
) -> None:
    result = launcher.run(build_machine(machines.vm_two_node()), "true",
                          env={"GPUNUMA_POLICY": "strict"})

    assert result.returncode == EXIT_REFUSED
    assert "unknown" in result.stderr


def test_a_gpu_on_a_memory_only_node_binds_to_the_nearest_cpu_node(
    launcher: Launcher, build_machine: BuildMachineFixture
) -> None:
    gh200 = launcher.run(build_machine(machines.gh200_like()), "true")
    gb200 = launcher.run(build_machine(replace(machines.gb200_like(), visible=("0018:01:00.0",))),
                         "true")

    assert gh200.plan == planned(["0009:01:00.0"], "0", "0-71", "preferred",
           "true")
    assert gb200.plan == planned(["0018:01:00.0"], "1", "72-143", "preferred",
           "true")


def test_a_gpu_whose_numa_node_is_offline_on_a_two_node_machine_is_unknown(
    launcher: Launcher, build_machine: BuildMachineFixture
) -> None:
    machine = dgx(BUS0[0]).with_numa_node(BUS0[0], 5)

    result = launcher.run(build_machine(machine), "true")

    assert result.plan["numa"] == ""
    assert result.plan["exec"] == "true"


# Narrowing by the *_VISIBLE_DEVICES variables and the rank ----------------------------------------


def test_cuda_visible_devices_by_index_picks_from_the_visible_gpus_in_bus_order(
    launcher: Launcher, build_machine: BuildMachineFixture
) -> None:
    everything = launcher.run(build_machine(dgx()), "true", env={"CUDA_VISIBLE_DEVICES": "5"})
    some = launcher.run(build_machine(dgx(BUS0[1], BUS0[2], BUS1[2])), "true",
                        env={"CUDA_VISIBLE_DEVICES": "2"})

    assert everything.plan["gpus"] == BUS1[1]
    assert everything.plan["numa"] == "1"
    assert some.plan["gpus"] == BUS1[2]


def test_cuda_visible_devices_keeps_its_order(
    launcher: Launcher, build_machine: BuildMachineFixture
) -> None:
    result = launcher.run(build_machine(dgx()), "true", env={"CUDA_VISIBLE_DEVICES": "7,1"})

    # GPU 7 is the application's device 0: the order is the variable's, not the bus's.
    assert result.plan["gpus"] == f"{BUS1[3]},{BUS0[1]}"
    assert result.plan["numa"] == "0,1"


def test_cuda_visible_devices_by_uuid_and_by_unique_uuid_prefix(
    launcher: Launcher, build_machine: BuildMachineFixture
) -> None:
    machine = dgx()
    full = uuid_of(machine, BUS1[2])
    prefix = uuid_of(machine, BUS0[3])[:12]

    result = launcher.run(build_machine(machine), "true",
                          env={"CUDA_VISIBLE_DEVICES": f"{full},{prefix}"})

    assert result.plan["gpus"] == f"{BUS1[2]},{BUS0[3]}"


# CUDA's rule (CUDA C++ Programming Guide, "CUDA Environment Variables"): the devices are those
# listed, in the list's order; an invalid entry ends the list; an empty value means no device.
@pytest.mark.parametrize(
    ("value", "kept", "why"),
    [
        ("7,1,-1", [BUS1[3], BUS0[1]], "entry 3 (\"-1\") matches none"),
        ("7,1,", [BUS1[3], BUS0[1]], "entry 3 (\"\") is empty"),
        ("3,GPU-ffffffff,5", [BUS0[3]], "entry 2 (\"GPU-ffffffff\") matches none"),
        ("1,8,2", [BUS0[1]], "entry 2 (\"8\") is not one of the 8 visible GPUs"),
        ("2,GPU-0000000", [BUS0[2]], "entry 2 (\"GPU-0000000\") matches several"),
        ("4,2,4", [BUS1[0], BUS0[2]], "entry 3 (\"4\") repeats one"),
    ],
)
def test_an_invalid_cuda_visible_devices_entry_ends_the_list_there(
    launcher: Launcher, build_machine: BuildMachineFixture, value: str, kept: list[str], why: str
) -> None:
    result = launcher.run(build_machine(dgx()), "true", env={"CUDA_VISIBLE_DEVICES": value})

    assert result.returncode == 0
    assert result.plan["gpus"] == ",".join(kept)
    assert f"CUDA_VISIBLE_DEVICES {why}" in result.stderr
    assert "CUDA stops there" in result.stderr


def test_the_rank_counts_only_the_entries_before_an_invalid_one(
    launcher: Launcher, build_machine: BuildMachineFixture
) -> None:
    """Issue #15 item 5: with "7,1," the sh launcher gave up narrowing and bound rank 0 to GPU 0
    on node 0, while CUDA's device 0 is GPU 7 on node 1 (SGLang #24766 in another form)."""
    tree = build_machine(dgx())
    rank = {"GPUNUMA_RANK_ENV": "LOCAL_RANK"}

    trailing_comma = launcher.run(tree, "true", env=rank | {
        "LOCAL_RANK": "0", "CUDA_VISIBLE_DEVICES": "7,1,"})
    minus_one = launcher.run(tree, "true", env=rank | {
        "LOCAL_RANK": "1", "CUDA_VISIBLE_DEVICES": "7,1,-1,0"})

    assert trailing_comma.plan == planned([BUS1[3]], "1", NODE1, "preferred", "true")
    assert minus_one.plan["gpus"] == BUS0[1]


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("", "CUDA_VISIBLE_DEVICES is empty, which hides every GPU"),
        ("  ", "CUDA_VISIBLE_DEVICES is empty, which hides every GPU"),
        ("-1", 'entry "-1" matches none of the 8 visible GPUs'),
        ("GPU-0000000", 'entry "GPU-0000000" matches several'),
        ("9", 'entry "9" is not one of the 8 visible GPUs'),
    ],
)
def test_cuda_visible_devices_that_hides_every_gpu_leaves_nothing_to_bind(
    launcher: Launcher, build_machine: BuildMachineFixture, value: str, why: str
) -> None:
    tree = build_machine(dgx())

    preferred = launcher.run(tree, "true", env={"CUDA_VISIBLE_DEVICES": value})
    strict = launcher.run(tree, "true", env={"CUDA_VISIBLE_DEVICES": value,
                                             "GPUNUMA_POLICY": "strict"})

    assert preferred.returncode == 0
    assert preferred.plan == planned([], "", "", "local", "true")
    assert why in preferred.stderr
    assert strict.returncode == EXIT_REFUSED
    assert strict.stderr.startswith("gpunuma: strict policy: ")
    assert why in strict.stderr


def test_a_mig_device_narrows_nothing_and_the_rank_is_not_applied(
    launcher: Launcher, build_machine: BuildMachineFixture
) -> None:
    """A MIG UUID is valid to CUDA, but procfs cannot map it to its GPU here. Binding rank k to
    the container's k-th GPU could be another GPU than the slice's (two slices of one GPU make
    rank 1 the second GPU), so the binding covers every GPU of the container instead."""
    mig = "MIG-4a1f5e2b-7c3d-5e6f-8a9b-0c1d2e3f4a5b"
    tree = build_machine(dgx(BUS0[0], BUS1[0]))

    result = launcher.run(tree, "true", env={
        "CUDA_VISIBLE_DEVICES": mig, "GPUNUMA_RANK_ENV": "LOCAL_RANK", "LOCAL_RANK": "1"})

    assert result.plan["gpus"] == f"{BUS0[0]},{BUS1[0]}"
    assert result.plan["numa"] == "0,1"
    assert "is a MIG device, which numa-exec cannot map to its GPU" in result.stderr
    assert "LOCAL_RANK=1 not applied" in result.stderr


def test_nvidia_visible_devices_all_does_not_narrow(
    launcher: Launcher, build_machine: BuildMachineFixture
) -> None:
    result = launcher.run(build_machine(dgx()), "true", env={"NVIDIA_VISIBLE_DEVICES": "all"})

    assert result.plan["gpus"] == ",".join(ALL8)


def test_nvidia_visible_devices_picks_a_set_that_cuda_still_numbers_in_bus_order(
    launcher: Launcher, build_machine: BuildMachineFixture
) -> None:
    machine = dgx()
    tree = build_machine(machine)

    by_uuid = launcher.run(tree, "true", env={"NVIDIA_VISIBLE_DEVICES": uuid_of(machine, BUS1[1])})
    by_index = launcher.run(tree, "true", env={"NVIDIA_VISIBLE_DEVICES": "6,2"})
    then_cuda = launcher.run(tree, "true",
                             env={"NVIDIA_VISIBLE_DEVICES": "6,2", "CUDA_VISIBLE_DEVICES": "0"})

    assert by_uuid.plan["gpus"] == BUS1[1]
    assert by_index.plan["gpus"] == f"{BUS0[2]},{BUS1[2]}"
    assert then_cuda.plan["gpus"] == BUS0[2]


def test_nvidia_visible_devices_already_applied_by_the_runtime_changes_nothing(
    launcher: Launcher, build_machine: BuildMachineFixture
) -> None:
    # The runtime exposed host GPUs 5 and 7 only; their host indices are not indices into the two.
    result = launcher.run(build_machine(dgx(BUS1[1], BUS1[3])), "true",
                          env={"NVIDIA_VISIBLE_DEVICES": "5,7"})

    assert result.plan["gpus"] == f"{BUS1[1]},{BUS1[3]}"


def mixed_models() -> machines.Machine:
    """Two GPU models in one host: CUDA's default order (fastest first) is then not bus order."""
    base = machines.two_socket_8gpu()
    functions = tuple(
        replace(f, model="NVIDIA L40S") if f.bdf in BUS1 else f for f in base.functions
    )
    return replace(base, functions=functions)


def test_cuda_indices_are_ignored_when_models_differ_and_the_order_is_not_pci_bus_id(
    launcher: Launcher, build_machine: BuildMachineFixture
) -> None:
    tree = build_machine(mixed_models())

    fastest_first = launcher.run(tree, "true", env={"CUDA_VISIBLE_DEVICES": "1"})
    bus_order = launcher.run(tree, "true",
                             env={"CUDA_VISIBLE_DEVICES": "1", "CUDA_DEVICE_ORDER": "PCI_BUS_ID"})
    by_uuid = launcher.run(
        tree, "true", env={"CUDA_VISIBLE_DEVICES": uuid_of(tree.machine, BUS1[0])}
    )

    assert fastest_first.plan["gpus"] == ",".join(ALL8)
    assert "different models" in fastest_first.stderr
    with_rank = launcher.run(tree, "true", env={
        "CUDA_VISIBLE_DEVICES": "1", "GPUNUMA_RANK_ENV": "LOCAL_RANK", "LOCAL_RANK": "0"})
    # The order is unknown, so device 0 of the application is too: no GPU is picked by the rank.
    assert with_rank.plan["gpus"] == ",".join(ALL8)
    assert "LOCAL_RANK=0 not applied" in with_rank.stderr
    assert bus_order.plan["gpus"] == BUS0[1]
    assert by_uuid.plan["gpus"] == BUS1[0]


def test_the_rank_variable_picks_one_gpu_of_the_list(
    launcher: Launcher, build_machine: BuildMachineFixture
) -> None:
    tree = build_machine(dgx())
    rank = {"GPUNUMA_RANK_ENV": "LOCAL_RANK"}

    fifth = launcher.run(tree, "true", env=rank | {"LOCAL_RANK": "5"})
    after_cuda = launcher.run(
        tree, "true", env=rank | {"LOCAL_RANK": "0", "CUDA_VISIBLE_DEVICES": "7,6,5,4"}
    )

    assert fifth.plan == planned([BUS1[1]], "1", NODE1, "preferred",
           "true")
    assert after_cuda.plan["gpus"] == BUS1[3]


@pytest.mark.parametrize(
    ("value", "why"), [(None, "which is not set"), ("x", "is not a rank"), ("8", "has 8 GPUs")]
)
def test_a_missing_or_bad_rank_keeps_every_gpu(
    launcher: Launcher, build_machine: BuildMachineFixture, value: str | None, why: str
) -> None:
    env = {"GPUNUMA_RANK_ENV": "LOCAL_RANK"} | ({"LOCAL_RANK": value} if value is not None else {})

    result = launcher.run(build_machine(dgx()), "true", env=env)

    assert result.plan["gpus"] == ",".join(ALL8)
    assert why in result.stderr


# AMD ----------------------------------------------------------------------------------------------


def test_amd_render_nodes_resolve_through_sysfs(
    launcher: Launcher, build_machine: BuildMachineFixture
) -> None:
    tree = build_machine(machines.amd_two_gpu())

    both = launcher.run(tree, "true")
    second = launcher.run(tree, "true", env={"ROCR_VISIBLE_DEVICES": "1"})
    by_uuid = launcher.run(tree, "true", env={"HIP_VISIBLE_DEVICES": "GPU-5c2b7a1f00000001"})

    assert both.plan == planned(["0000:03:00.0", "0000:83:00.0"], "0,1", "0-63", "preferred",
           "true")
    assert second.plan == planned(["0000:83:00.0"], "1", "32-63", "preferred",
           "true")
    assert by_uuid.plan["gpus"] == "0000:03:00.0"


def test_an_amd_partition_render_node_maps_to_its_parent_gpu_through_the_kfd_topology(
    launcher: Launcher, build_machine: BuildMachineFixture
) -> None:
    machine = machines.amd_mi300x_cpx()
    tree = build_machine(machine)
    sixth = machine.gpus[5]
    partition_minor = sixth.partitions[3][1]
    # The container was given one partition (amdgpu_xcp_N): only its render node is in /dev.
    for node in (tree.dev / "dri").iterdir():
        if node.name != f"renderD{partition_minor}":
            node.unlink()

    result = launcher.run(tree, "true")

    assert result.plan == planned([sixth.bdf], "1", "96-191,288-383", "preferred",
           "true")


def test_every_partition_of_a_cpx_gpu_counts_as_one_gpu(
    launcher: Launcher, build_machine: BuildMachineFixture
) -> None:
    machine = machines.amd_mi300x_cpx()
    tree = build_machine(replace(machine, visible=(machine.gpus[0].bdf, machine.gpus[4].bdf)))

    result = launcher.run(tree, "true")

    assert result.plan["gpus"] == f"{machine.gpus[0].bdf},{machine.gpus[4].bdf}"
    assert result.plan["numa"] == "0,1"


# No GPU, bad usage, quiet -------------------------------------------------------------------------


def test_no_gpu_runs_the_command_unpinned(
    launcher: Launcher, build_machine: BuildMachineFixture
) -> None:
    result = launcher.run(build_machine(machines.cpu_only()), *CMD)

    assert result.returncode == 0
    assert result.plan == planned([], "", "", "local", " ".join(CMD))
    assert "no GPU found" in result.stderr


def test_no_gpu_fails_strict(launcher: Launcher, build_machine: BuildMachineFixture) -> None:
    result = launcher.run(build_machine(machines.cpu_only()), *CMD,
                          env={"GPUNUMA_POLICY": "strict"})

    assert result.returncode == EXIT_REFUSED
    assert result.stderr.startswith("gpunuma: strict policy: no GPU found")
    assert result.stderr.rstrip("\n").endswith("not starting python3")


def test_nvidia_gpus_whose_device_file_is_absent_are_not_the_containers(
    launcher: Launcher, build_machine: BuildMachineFixture
) -> None:
    tree = build_machine(dgx(BUS1[0]))
    (tree.dev / "nvidia4").unlink()

    result = launcher.run(tree, "true")

    assert result.plan["gpus"] == ""


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ([], "no command given"),
        (["python3"], 'expected -- before the command, got "python3"'),
        (["--"], "no command after --"),
        (["-x", "--", "true"], "expected -- before the command"),
    ],
)
def test_bad_usage_exits_125_with_a_gpunuma_message(
    launcher: Launcher, build_machine: BuildMachineFixture, arguments: list[str], message: str
) -> None:
    result = launcher.run(build_machine(dgx()), arguments=arguments)

    assert result.returncode == EXIT_REFUSED
    assert result.stderr.startswith(f"gpunuma: {message}")
    assert "usage: numa-exec -- COMMAND" in result.stderr
    assert result.stdout == ""


def test_an_unknown_policy_exits_125(
    launcher: Launcher, build_machine: BuildMachineFixture
) -> None:
    result = launcher.run(build_machine(dgx()), "true", env={"GPUNUMA_POLICY": "Strict"})

    assert result.returncode == EXIT_REFUSED
    assert result.stderr == (
        'gpunuma: unknown GPUNUMA_POLICY "Strict"; use preferred, strict or cpu-only\n'
    )


def test_help_prints_usage(launcher: Launcher) -> None:
    result = launcher.run(None, arguments=["--help"])

    assert result.returncode == 0
    assert result.stdout.startswith("usage: numa-exec -- COMMAND")


def test_quiet_silences_the_decision_but_not_a_refusal(
    launcher: Launcher, build_machine: BuildMachineFixture
) -> None:
    tree = build_machine(machines.cpu_only())

    ran = launcher.run(tree, "true", env={"GPUNUMA_QUIET": "1"})
    refused = launcher.run(tree, "true", env={"GPUNUMA_QUIET": "1", "GPUNUMA_POLICY": "strict"})

    assert ran.stderr == ""
    assert refused.stderr.startswith("gpunuma: strict policy")


def test_the_exec_line_joins_the_arguments_with_single_spaces(
    launcher: Launcher, build_machine: BuildMachineFixture
) -> None:
    result = launcher.run(build_machine(dgx(BUS0[0])), "printf", "%s|", "a b", "*", "$HOME",
                          env={"GPUNUMA_POLICY": "cpu-only"})

    assert result.plan["exec"] == "printf %s| a b * $HOME"


def test_relative_roots_work_like_absolute_ones(
    launcher: Launcher, build_machine: BuildMachineFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    tree = build_machine(machines.amd_two_gpu())
    monkeypatch.chdir(tree.root)

    result = launcher.run(None, "true", env={
        "GPUNUMA_SYSFS_ROOT": "sys", "GPUNUMA_PROCFS_ROOT": "proc", "GPUNUMA_DEV_ROOT": "dev",
    })

    assert result.plan["gpus"] == "0000:03:00.0,0000:83:00.0"


def test_render_nodes_of_other_vendors_are_not_gpus_of_the_container(
    launcher: Launcher, build_machine: BuildMachineFixture
) -> None:
    igpu = machines.Function(bdf="0000:00:02.0", vendor=0x8086, pci_class=machines.CLASS_VGA,
                             numa_node=-1, device_id=0x56C0)
    base = machines.amd_two_gpu()
    tree = build_machine(replace(base, functions=(igpu, *base.functions)))
    # An Intel render node, as i915 would create it: the device link leads to a PCI function.
    drm = tree.sysfs / "devices/pci0000:00/0000:00:01.0/0000:00:02.0/drm/renderD200"
    drm.mkdir(parents=True)
    (drm / "device").symlink_to("../..")
    (tree.sysfs / "class/drm/renderD200").symlink_to(drm)
    (tree.dev / "dri/renderD200").write_text("")

    result = launcher.run(tree, "true")

    assert result.plan["gpus"] == "0000:03:00.0,0000:83:00.0"


def test_a_host_with_nvidia_and_amd_gpus_lists_nvidia_first(
    launcher: Launcher, build_machine: BuildMachineFixture
) -> None:
    amd = machines.amd_two_gpu()
    nvidia = next(f for f in machines.two_socket_8gpu().gpus if f.bdf == BUS1[0])
    tree = build_machine(replace(amd, functions=(*amd.functions, replace(nvidia, numa_node=1))))

    result = launcher.run(tree, "true")

    assert result.plan["gpus"] == f"{BUS1[0]},0000:03:00.0,0000:83:00.0"
