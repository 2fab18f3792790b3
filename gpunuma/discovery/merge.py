"""Combines the sysfs report with vendor-library reports into one :class:`Layout`, by bus id.

sysfs is the ground truth for *which* PCI functions are GPUs and which NUMA node the firmware
assigned them; vendor libraries add identity (UUIDs, MIG devices, their enumeration index) and, for
NVIDIA, the CPU affinity that stands in when the firmware says nothing. Where a vendor library and
sysfs disagree on a fact both know, the vendor's value is kept and the disagreement is reported.

The layout's ``source`` (and the ``gpunuma.io/source`` label) names what *decided the NUMA nodes*
(DESIGN §3): ``sysfs`` when the firmware's ``numa_node`` did for every GPU, else the vendor library
whose answer (NVML's CPU affinity, amdsmi's node) stood in for it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace

from gpunuma.discovery.backend import BackendReport, GpuFacts
from gpunuma.topology import Gpu, Layout, NumaNode, Problem, node_for_cpus, resolve_cpu_node

__all__ = ["merge_reports"]

SYSFS = "sysfs"


@dataclass(frozen=True, slots=True)
class _Merged:
    gpu: Gpu
    decided_by: str


def merge_reports(
    nodes: Sequence[NumaNode],
    sysfs: BackendReport,
    vendor_reports: Sequence[BackendReport],
    problems: Sequence[Problem] = (),
    *,
    unreadable_nodes: frozenset[int] = frozenset(),
) -> Layout:
    found = list(problems)
    from_sysfs = {facts.pci_bus_id: facts for facts in sysfs.gpus}
    from_vendor: dict[str, tuple[str, GpuFacts]] = {}
    for report in vendor_reports:
        for facts in report.gpus:
            from_vendor[facts.pci_bus_id] = (report.source, facts)

    merged: list[_Merged] = []
    positions: Counter[str] = Counter()
    for bus_id in sorted(set(from_sysfs) | set(from_vendor)):
        base = from_sysfs.get(bus_id)
        source, extra = from_vendor.get(bus_id, (SYSFS, None))
        if base is None:
            found.append(Problem(
                bus_id, source,
                f"seen by {source} but not under bus/pci/devices in sysfs "
                "(is --sysfs-root the host's /sys?)",
            ))
        primary = extra or base
        assert primary is not None  # the bus id came from one of the two maps
        position = positions[primary.vendor]
        positions[primary.vendor] += 1
        merged.append(_combine(nodes, base, extra, source, position, unreadable_nodes, found))
    merged = _unique_indices(merged, found)
    deciders = Counter(m.decided_by for m in merged if m.decided_by != SYSFS)
    # A vendor library that placed any GPU is named; two (a mixed node, both at -1) by majority.
    layout_source = min(deciders, key=lambda name: (-deciders[name], name)) if deciders else SYSFS
    return Layout(numa_nodes=tuple(nodes), gpus=tuple(m.gpu for m in merged),
                  source=layout_source, errors=tuple(found))


def _combine(
    nodes: Sequence[NumaNode],
    base: GpuFacts | None,
    extra: GpuFacts | None,
    source: str,
    position: int,
    unreadable_nodes: frozenset[int],
    problems: list[Problem],
) -> _Merged:
    primary = extra or base
    assert primary is not None
    bus_id = primary.pci_bus_id

    def pick(field: str, *, compare: bool = True, prefer_sysfs: bool = False) -> object:
        ours = getattr(base, field) if base is not None else None
        theirs = getattr(extra, field) if extra is not None else None
        if compare and ours is not None and theirs is not None and ours != theirs:
            problems.append(Problem(
                bus_id, source,
                f"{field}: sysfs says {ours!r}, {source} says {theirs!r}; using {source}'s",
            ))
        first, second = (ours, theirs) if prefer_sysfs else (theirs, ours)
        return first if first is not None else second

    firmware = base.reported_numa_node if base is not None else None
    vendor_reported = extra.reported_numa_node if extra is not None else None
    failed = base is not None and base.failed
    decided_by = SYSFS
    if firmware is not None and firmware >= 0 and vendor_reported is not None \
            and vendor_reported >= 0 and vendor_reported != firmware:
        problems.append(Problem(
            bus_id, source,
            f"NUMA node: sysfs says {firmware}, {source} says {vendor_reported}; using sysfs's",
        ))
    # ``reported`` is the node the rules start from; the document's reportedNumaNode stays what
    # the firmware said (DESIGN §4), even when a vendor library's node stands in for its -1.
    reported = firmware
    if (reported is None or reported < 0) and vendor_reported is not None and vendor_reported >= 0:
        reported, decided_by = vendor_reported, source
    placed_by_vendor = decided_by != SYSFS

    affinity = extra.cpu_affinity if extra is not None else None
    affinity_node = node_for_cpus(affinity, nodes) if affinity else None
    numa_node: int | None
    if failed and not placed_by_vendor and affinity_node is None:
        numa_node = None  # the device failed: no rule for "the firmware says -1" applies
    elif reported is not None and reported in unreadable_nodes:
        # Its CPUs are unknown, not absent: the distance rule for memory-only nodes must not move
        # the GPU to a neighbour. Only the vendor's CPU affinity can still place it.
        numa_node = affinity_node
        decided_by = source if affinity_node is not None else SYSFS
    else:
        start = -1 if reported is None else reported
        numa_node = resolve_cpu_node(start, nodes)
        if numa_node is None and affinity_node is not None:
            numa_node = resolve_cpu_node(start, nodes, affinity_node=affinity_node)
            decided_by = source
    index = extra.index if extra is not None and extra.index is not None else position
    minor = pick("minor")
    gpu = Gpu(
        index=index,
        vendor=primary.vendor,
        pci_bus_id=bus_id,
        model=_str(pick("model", compare=False)),
        # AMD: sysfs's "GPU-<unique_id>" is the form ROCm tools show and ROCR_VISIBLE_DEVICES
        # takes; amdsmi's UUID is another rendering of the same id, not a disagreement.
        uuid=_str(pick("uuid", compare=primary.vendor != "amd", prefer_sysfs=primary.vendor == "amd")),
        minor=minor if isinstance(minor, int) else None,
        render_node=_str(pick("render_node")),
        numa_node=numa_node,
        reported_numa_node=-1 if firmware is None else firmware,
        mig_devices=(extra.mig_devices if extra is not None else ()) or
        (base.mig_devices if base is not None else ()),
        partitions=(base.partitions if base is not None else ()) or
        (extra.partitions if extra is not None else ()),
    )
    return _Merged(gpu=gpu, decided_by=decided_by if numa_node is not None else SYSFS)


def _unique_indices(merged: list[_Merged], problems: list[Problem]) -> list[_Merged]:
    """Each vendor's indices, unique: a library that skipped a failing device and numbered the
    rest from 0 would give two GPUs one index (and the map label ``0-0_1-0``). Bus order, which is
    both vendors' enumeration order (DESIGN §4), then decides every index of that vendor."""
    result = list(merged)
    for vendor in sorted({m.gpu.vendor for m in merged}):
        mine = [i for i, m in enumerate(merged) if m.gpu.vendor == vendor]
        indices = [merged[i].gpu.index for i in mine]
        if len(set(indices)) == len(indices):
            continue
        problems.append(Problem(
            None, "merge", f"{vendor} GPU indices {indices} repeat; using PCI bus order instead",
        ))
        for position, i in enumerate(mine):
            result[i] = replace(merged[i], gpu=replace(merged[i].gpu, index=position))
    return result


def _str(value: object) -> str | None:
    return value if isinstance(value, str) else None
