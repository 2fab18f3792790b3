"""Combines the sysfs report with vendor-library reports into one :class:`Layout`, by bus id.

sysfs is the ground truth for *which* PCI functions are GPUs and which NUMA node the firmware
assigned them; vendor libraries add identity (UUIDs, MIG devices, their enumeration index) and, for
NVIDIA, the CPU affinity that stands in when the firmware says nothing. Where a vendor library and
sysfs disagree on a fact both know, the vendor's value is kept and the disagreement is reported.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from gpunuma.discovery.backend import BackendReport, GpuFacts
from gpunuma.topology import Gpu, Layout, NumaNode, Problem, node_for_cpus, resolve_cpu_node

__all__ = ["merge_reports"]


def merge_reports(
    nodes: Sequence[NumaNode],
    sysfs: BackendReport,
    vendor_reports: Sequence[BackendReport],
    problems: Sequence[Problem] = (),
) -> Layout:
    found = list(problems)
    from_sysfs = {facts.pci_bus_id: facts for facts in sysfs.gpus}
    from_vendor: dict[str, tuple[str, GpuFacts]] = {}
    for report in vendor_reports:
        for facts in report.gpus:
            from_vendor[facts.pci_bus_id] = (report.source, facts)

    gpus: list[Gpu] = []
    sources: set[str] = set()
    positions: Counter[str] = Counter()
    for bus_id in sorted(set(from_sysfs) | set(from_vendor)):
        base = from_sysfs.get(bus_id)
        source, extra = from_vendor.get(bus_id, (None, None))
        if extra is not None and source is not None:
            sources.add(source)
        if base is None and source is not None:
            found.append(Problem(
                bus_id, source,
                f"seen by {source} but not under bus/pci/devices in sysfs "
                "(is --sysfs-root the host's /sys?)",
            ))
        primary = extra or base
        assert primary is not None  # the bus id came from one of the two maps
        position = positions[primary.vendor]
        positions[primary.vendor] += 1
        gpus.append(_combine(nodes, base, extra, source, position, found))
    vendor_sources = sorted(sources)
    layout_source = "sysfs" if not vendor_sources else (
        vendor_sources[0] if len(vendor_sources) == 1 else "mixed"
    )
    return Layout(numa_nodes=tuple(nodes), gpus=tuple(gpus), source=layout_source,
                  errors=tuple(found))


def _combine(
    nodes: Sequence[NumaNode],
    base: GpuFacts | None,
    extra: GpuFacts | None,
    source: str | None,
    position: int,
    problems: list[Problem],
) -> Gpu:
    primary = extra or base
    assert primary is not None
    bus_id = primary.pci_bus_id

    def pick(field: str, *, compare: bool = True) -> object:
        ours = getattr(base, field) if base is not None else None
        theirs = getattr(extra, field) if extra is not None else None
        if compare and ours is not None and theirs is not None and ours != theirs:
            problems.append(Problem(
                bus_id, source or "sysfs",
                f"{field}: sysfs says {ours!r}, {source} says {theirs!r}; using {source}'s",
            ))
        return theirs if theirs is not None else ours

    reported = base.reported_numa_node if base is not None else None
    vendor_reported = extra.reported_numa_node if extra is not None else None
    if reported is not None and reported >= 0 and vendor_reported is not None \
            and vendor_reported >= 0 and vendor_reported != reported:
        problems.append(Problem(
            bus_id, source or "sysfs",
            f"NUMA node: sysfs says {reported}, {source} says {vendor_reported}; using sysfs's",
        ))
    if reported is None or reported < 0:
        reported = vendor_reported if vendor_reported is not None else -1
    affinity = extra.cpu_affinity if extra is not None else None
    affinity_node = node_for_cpus(affinity, nodes) if affinity else None
    index = extra.index if extra is not None and extra.index is not None else position
    minor = pick("minor")
    return Gpu(
        index=index,
        vendor=primary.vendor,
        pci_bus_id=bus_id,
        model=_str(pick("model", compare=False)),
        uuid=_str(pick("uuid")),
        minor=minor if isinstance(minor, int) else None,
        render_node=_str(pick("render_node")),
        numa_node=resolve_cpu_node(reported, nodes, affinity_node=affinity_node),
        reported_numa_node=reported,
        mig_devices=(extra.mig_devices if extra is not None else ()) or
        (base.mig_devices if base is not None else ()),
        partitions=(base.partitions if base is not None else ()) or
        (extra.partitions if extra is not None else ()),
    )


def _str(value: object) -> str | None:
    return value if isinstance(value, str) else None
