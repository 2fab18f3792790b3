"""Discovery: this node's NUMA nodes and GPUs, from sysfs and the vendor libraries that work.

``discover(settings)`` is the one entry point (the agent and ``gpunuma inspect`` call it). Backends:
``sysfs`` always runs; ``nvml`` and ``amdsmi`` add what only the vendor knows. With ``auto`` a vendor
library is tried only when sysfs shows that vendor's GPUs, and one that cannot load is an entry in
``errors``; naming a backend explicitly makes its absence an error (:class:`DiscoveryUnavailable`).
"""

from __future__ import annotations

from collections.abc import Mapping

from gpunuma.discovery.amdsmi import AmdSmiBackend
from gpunuma.discovery.backend import BackendReport, BackendUnavailable, GpuFacts, VendorBackend
from gpunuma.discovery.hostroot import HostRootError, HostRoots
from gpunuma.discovery.merge import merge_reports
from gpunuma.discovery.nvml import NvmlBackend
from gpunuma.discovery.sysfs import read_gpus, read_numa_nodes
from gpunuma.settings import DiscoverySettings
from gpunuma.topology import Layout, Problem

__all__ = [
    "AmdSmiBackend",
    "BackendReport",
    "BackendUnavailable",
    "DiscoveryUnavailable",
    "GpuFacts",
    "HostRootError",
    "HostRoots",
    "NvmlBackend",
    "VendorBackend",
    "default_vendor_backends",
    "discover",
]


class DiscoveryUnavailable(Exception):
    """The backend the user named explicitly cannot run here."""


def default_vendor_backends() -> dict[str, VendorBackend]:
    return {"nvml": NvmlBackend(), "amdsmi": AmdSmiBackend()}


def discover(
    settings: DiscoverySettings,
    *,
    vendor_backends: Mapping[str, VendorBackend] | None = None,
) -> Layout:
    """Read the host through ``settings``' roots and return its layout. Blocking: file reads."""
    host = HostRoots.checked(settings.sysfs_root, settings.procfs_root)
    node_report = read_numa_nodes(host)
    nodes = node_report.nodes
    sysfs_report = read_gpus(host)
    problems: list[Problem] = [*node_report.problems, *sysfs_report.problems]
    backends = default_vendor_backends() if vendor_backends is None else vendor_backends
    if settings.backend not in ("auto", "sysfs") and settings.backend not in backends:
        raise DiscoveryUnavailable(f"unknown backend {settings.backend!r}")
    present = {gpu.vendor for gpu in sysfs_report.gpus}
    cpu_count = max((max(node.cpus) + 1 for node in nodes if node.cpus), default=1)
    reports: list[BackendReport] = []
    for name, backend in backends.items():
        if settings.backend == "sysfs":
            break
        explicit = settings.backend == name
        if not explicit and (settings.backend != "auto" or backend.vendor not in present):
            continue  # loading NVML on a node without NVIDIA GPUs would only add noise
        try:
            report = backend.collect(cpu_count=cpu_count)
        except BackendUnavailable as exc:
            if explicit:
                raise DiscoveryUnavailable(f"backend {name} is unavailable: {exc}") from exc
            problems.append(Problem(None, name, f"unavailable, using sysfs instead: {exc}"))
            continue
        reports.append(report)
        problems.extend(report.problems)
    return merge_reports(nodes, sysfs_report, reports, problems,
                         unreadable_nodes=node_report.unreadable)
