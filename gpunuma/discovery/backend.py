"""The narrow interface between discovery and its GPU backends (as in NVIDIA's device plugin).

A backend reports what it knows about each GPU as :class:`GpuFacts`, keyed by PCI bus id, and the
problems it met. Facts it does not know stay ``None``; the merge (``gpunuma.discovery``) combines
backends field by field and decides NUMA nodes with the model's one rule. A vendor backend whose
library is missing or broken raises :class:`BackendUnavailable` from ``collect``: that makes the
backend unavailable, never the caller fail.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from gpunuma.topology import MigDevice, Partition, Problem, Vendor

__all__ = ["BackendReport", "BackendUnavailable", "GpuFacts", "VendorBackend"]


@dataclass(frozen=True, slots=True)
class GpuFacts:
    """What one backend knows about one GPU; ``None`` means "this backend cannot tell"."""

    pci_bus_id: str
    vendor: Vendor
    index: int | None = None
    model: str | None = None
    uuid: str | None = None
    minor: int | None = None
    render_node: str | None = None
    reported_numa_node: int | None = None
    cpu_affinity: frozenset[int] | None = None
    mig_devices: tuple[MigDevice, ...] = ()
    partitions: tuple[Partition, ...] = ()
    # The backend failed to read this device (the failure is in its problems): nothing may guess
    # the GPU's NUMA node from rules meant for a node that *says* -1.
    failed: bool = False


@dataclass(frozen=True, slots=True)
class BackendReport:
    source: str
    gpus: tuple[GpuFacts, ...]
    problems: tuple[Problem, ...] = ()


class BackendUnavailable(Exception):
    """The backend cannot run here (library missing, driver not loaded); the message says why."""


class VendorBackend(Protocol):
    """A vendor library backend: NVML for NVIDIA, amdsmi for AMD."""

    name: str
    vendor: Vendor

    def collect(self, *, cpu_count: int) -> BackendReport:
        """Describe every GPU the library sees. ``cpu_count`` sizes CPU-affinity masks."""
        ...
