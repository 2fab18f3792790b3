"""numa-exec and the Python model must map a GPU's reported NUMA node to the same CPU node.

The agent publishes placements computed by ``gpunuma.topology.resolve_cpu_node``; numa-exec binds
with its own awk copy of that rule (DESIGN §5). These tests run both on every fixture shape and on
generated machines (memory-only nodes, sparse node ids, numa_node -1 or offline) and compare.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gpunuma.topology import NumaNode, parse_cpulist, resolve_cpu_node
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
