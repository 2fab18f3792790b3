"""numa-exec and the Python model must give the same answers: which GPUs, which nodes, which CPUs.

The agent publishes placements computed by ``gpunuma.topology.resolve_cpu_node``; numa-exec binds
with its own C copy of that rule (DESIGN §5), and of the *_VISIBLE_DEVICES and rank rule of
``gpunuma.topology.visible``. These tests run both on every fixture shape and on generated machines
(memory-only nodes, sparse node ids, numa_node -1 or offline) and generated environments, and
compare.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gpunuma.topology import NumaNode, format_cpulist, parse_cpulist, resolve_cpu_node
from gpunuma.topology.visible import VisibleGpu, select_visible
from tests.conftest import BuildMachineFixture
from tests.fixtures import machines
from tests.launcher.conftest import Launcher


def python_nodes(machine: machines.Machine) -> list[NumaNode]:
    return [
        NumaNode(id=node.id, cpus=parse_cpulist(node.cpus), distances=node.distances)
        for node in machine.nodes
    ]


def expected_numa(machine: machines.Machine, gpus: list[machines.Function]) -> str:
    nodes = python_nodes(machine)
    resolved = [resolve_cpu_node(gpu.numa_node, nodes) for gpu in gpus]
    if not gpus or None in resolved:
        return ""
    return ",".join(str(node) for node in sorted({n for n in resolved if n is not None}))


SHAPES_WITH_GPUS = sorted(name for name, shape in machines.SHAPES.items() if shape().gpus)


@pytest.mark.parametrize("shape", SHAPES_WITH_GPUS)
def test_every_gpu_of_every_shape_gets_the_node_the_python_model_gives(
    launcher: Launcher, build_machine: BuildMachineFixture, shape: str
) -> None:
    machine = machines.SHAPES[shape]()
    tree = build_machine(machine)
    rank = 0  # the launcher's device list: one entry per NVIDIA GPU, per AMD render node

    for gpu in sorted(machine.gpus, key=lambda gpu: gpu.bdf):
        result = launcher.run(tree, "true", env={
            "GPUNUMA_POLICY": "cpu-only", "GPUNUMA_RANK_ENV": "RANK", "RANK": str(rank),
        })
        assert result.plan["gpus"] == gpu.bdf, result.stderr
        assert result.plan["numa"] == expected_numa(machine, [gpu]), (shape, gpu.bdf)
        rank += 1 + len(gpu.partitions)

    everything = launcher.run(tree, "true")
    assert everything.plan["gpus"] == ",".join(sorted(gpu.bdf for gpu in machine.gpus))
    assert everything.plan["numa"] == expected_numa(machine, list(machine.gpus))


@st.composite
def numa_machines(draw: st.DrawFn) -> machines.Machine:
    """1–5 online nodes with sparse ids, some memory-only, any distances; one GPU on any node id."""
    ids = sorted(draw(st.sets(st.integers(0, 7), min_size=1, max_size=5)))
    nodes = []
    next_cpu = 0
    for node_id in ids:
        width = draw(st.sampled_from([0, 0, 2, 4]))
        cpus = f"{next_cpu}-{next_cpu + width - 1}" if width else ""
        next_cpu += width
        distances = tuple(
            10 if other == node_id else draw(st.integers(11, 40)) for other in ids
        )
        nodes.append(machines.Node(node_id, cpus, 1000000, distances))
    reported = draw(st.sampled_from([*ids, -1, 8]))  # 8: a node that is not online
    gpu = machines.Function(
        bdf="0000:3b:00.0", vendor=machines.NVIDIA, pci_class=machines.CLASS_3D,
        numa_node=reported, model="NVIDIA H100 PCIe",
        uuid="GPU-00000000-1111-2222-3333-444455556666", minor=0,
    )
    return machines.Machine(nodes=tuple(nodes), functions=(gpu,))


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(machine=numa_machines())
def test_generated_machines_map_like_the_python_model(
    launcher: Launcher, machine: machines.Machine
) -> None:
    with tempfile.TemporaryDirectory() as root:
        tree = machines.build(machine, Path(root))
        result = launcher.run(tree, "true", env={"GPUNUMA_POLICY": "cpu-only"})

    numa = expected_numa(machine, list(machine.gpus))
    assert result.plan["numa"] == numa, result.stderr
    if numa:
        node = next(n for n in machine.nodes if str(n.id) == numa)
        assert parse_cpulist(result.plan["cpus"]) == parse_cpulist(node.cpus)


# Which GPUs: generated GPU lists and *_VISIBLE_DEVICES / rank environments ------------------------

MODELS = ("NVIDIA H100 80GB HBM3", "NVIDIA L40S")


@st.composite
def gpu_machines(draw: st.DrawFn) -> machines.Machine:
    """Two sockets; 1–6 NVIDIA GPUs (one or two models) and 0–2 AMD GPUs on either node."""
    nvidia = draw(st.integers(1, 6))
    mixed = draw(st.booleans())
    functions = []
    for i in range(nvidia):
        bdf = f"0000:{0x10 + i * 0x20:02x}:00.0"
        uuid = f"GPU-{draw(st.sampled_from(['0a', '0b', 'a0']))}{i:06x}-1111-2222-3333-444455556666"
        functions.append(machines.Function(
            bdf=bdf, vendor=machines.NVIDIA, pci_class=machines.CLASS_3D,
            numa_node=draw(st.integers(0, 1)), model=MODELS[i % 2 if mixed else 0], uuid=uuid,
            minor=i))
    for i in range(draw(st.integers(0, 2))):
        functions.append(machines.Function(
            bdf=f"0000:{0xe1 + i:02x}:00.0", vendor=machines.AMD, pci_class=machines.CLASS_ACCEL,
            numa_node=draw(st.integers(0, 1)), model="AMD Instinct MI300X",
            uuid=f"GPU-5c2b7a1f0000000{i}", render_minor=128 + i))
    nodes = (machines.Node(0, "0-3", 1000000, (10, 21)), machines.Node(1, "4-7", 1000000, (21, 10)))
    return machines.Machine(nodes=nodes, functions=tuple(functions))


@st.composite
def visible_lists(draw: st.DrawFn, uuids: list[str]) -> str:
    """What users write: indices (some past the end), UUIDs and prefixes, -1, MIG, blanks."""
    entry = st.one_of(
        st.integers(0, 8).map(str),
        st.sampled_from(["-1", "", " ", "GPU-ffff", "MIG-4a1f5e2b-7c3d-5e6f-8a9b-0c1d2e3f4a5b",
                         "gpu-0", "GPU-", "01"]),
        st.sampled_from(uuids).flatmap(lambda u: st.integers(4, len(u)).map(lambda n: u[:n])),
        st.sampled_from(uuids).map(str.lower),
    )
    return ",".join(draw(st.lists(entry, min_size=0, max_size=5)))


@st.composite
def environments(draw: st.DrawFn, machine: machines.Machine) -> dict[str, str]:
    uuids = [gpu.uuid for gpu in machine.gpus if gpu.uuid]
    env: dict[str, str] = {}
    for name in ("NVIDIA_VISIBLE_DEVICES", "CUDA_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES",
                 "ROCR_VISIBLE_DEVICES"):
        if draw(st.booleans()) if name == "CUDA_VISIBLE_DEVICES" else draw(st.integers(0, 4)) == 0:
            env[name] = draw(visible_lists(uuids))
    if draw(st.booleans()):
        env["CUDA_DEVICE_ORDER"] = draw(st.sampled_from(["PCI_BUS_ID", "FASTEST_FIRST"]))
    if draw(st.booleans()):
        env["GPUNUMA_RANK_ENV"] = "LOCAL_RANK"
        rank = draw(st.one_of(st.none(), st.integers(0, 7).map(str), st.sampled_from(["x", " 1 ", "1,2"])))
        if rank is not None:
            env["LOCAL_RANK"] = rank
    return env


def python_selection(machine: machines.Machine, env: dict[str, str]) -> list[machines.Function]:
    by_bus = {gpu.bdf: gpu for gpu in machine.gpus}
    listed = [VisibleGpu(bus_id=gpu.bdf, vendor="nvidia" if gpu.vendor == machines.NVIDIA else "amd",
                         uuid=gpu.uuid or "", model=gpu.model or "")
              for gpu in sorted(machine.gpus, key=lambda gpu: gpu.bdf)]
    chosen = select_visible(listed, env).gpus
    return [by_bus[bus] for bus in dict.fromkeys(gpu.bus_id for gpu in chosen)]


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_generated_environments_select_the_gpus_nodes_and_cpus_python_selects(
    launcher: Launcher, data: st.DataObject
) -> None:
    machine = data.draw(gpu_machines())
    env = data.draw(environments(machine))
    with tempfile.TemporaryDirectory() as root:
        tree = machines.build(machine, Path(root))
        result = launcher.run(tree, "true", env=env | {"GPUNUMA_POLICY": "cpu-only"})

    chosen = python_selection(machine, env)
    assert result.plan["gpus"] == ",".join(gpu.bdf for gpu in chosen), result.stderr
    assert result.plan["numa"] == expected_numa(machine, chosen)
    nodes = {node.id: parse_cpulist(node.cpus) for node in machine.nodes}
    cpus = frozenset().union(*(nodes[int(n)] for n in result.plan["numa"].split(",") if n))
    assert result.plan["cpus"] == format_cpulist(cpus)
