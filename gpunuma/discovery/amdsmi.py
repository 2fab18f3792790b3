"""The amdsmi backend (ROCm's AMD SMI): bus ids, UUIDs, models, render nodes, NUMA nodes.

``import amdsmi`` raises ``KeyError`` (not ``ImportError``) when ROCm's shared library is missing,
and other exceptions on a broken install, so *any* exception on import makes the backend
unavailable. In CPX/DPX/QPX partition modes amdsmi returns one handle per compute partition, all on
the same PCI function: those are grouped under their physical bus id here, so that a partition is
never mistaken for a GPU of its own. Which ``amdgpu_xcp_N`` each partition is comes from sysfs.
"""

from __future__ import annotations

import contextlib
from types import ModuleType
from typing import Any

from gpunuma.discovery.backend import BackendReport, BackendUnavailable, GpuFacts
from gpunuma.topology import Problem, Vendor, normalize_pci_bus_id

__all__ = ["AmdSmiBackend"]


class AmdSmiBackend:
    name = "amdsmi"
    vendor: Vendor = "amd"

    def __init__(self, module: ModuleType | None = None) -> None:
        self._module = module  # tests pass a fake with amdsmi's surface

    def _load(self) -> Any:
        if self._module is not None:
            return self._module
        try:
            import amdsmi
        except Exception as exc:  # KeyError when librocm/libamd_smi is missing
            raise BackendUnavailable(
                f"cannot import amdsmi: {type(exc).__name__}: {exc} (is ROCm installed?)"
            ) from exc
        return amdsmi

    def collect(self, *, cpu_count: int) -> BackendReport:
        smi = self._load()
        try:
            flags = getattr(getattr(smi, "AmdSmiInitFlags", None), "INIT_AMD_GPUS", None)
            smi.amdsmi_init() if flags is None else smi.amdsmi_init(flags)
        except Exception as exc:
            raise BackendUnavailable(f"amdsmi cannot start: {exc}") from exc
        try:
            try:
                handles = list(smi.amdsmi_get_processor_handles())
            except Exception as exc:
                raise BackendUnavailable(f"amdsmi cannot list GPUs: {exc}") from exc
            problems: list[Problem] = []
            by_bus_id: dict[str, GpuFacts] = {}
            for position, handle in enumerate(handles):
                facts = self._device(smi, handle, position, problems)
                if facts is None:
                    continue
                first = by_bus_id.get(facts.pci_bus_id)
                # A partition of a GPU already seen: keep the lowest render node as the GPU's own.
                if first is None or _minor(facts.render_node) < _minor(first.render_node):
                    by_bus_id[facts.pci_bus_id] = facts
            # No index: amdsmi enumerates in bus order like HIP, and counting only the handles
            # that answered would renumber every GPU after one that failed. The merge numbers
            # physical GPUs in bus order over everything sysfs sees.
            gpus = tuple(by_bus_id[bus_id] for bus_id in sorted(by_bus_id))
            return BackendReport(source=self.name, gpus=gpus, problems=tuple(problems))
        finally:
            with contextlib.suppress(Exception):  # best effort on the way out
                smi.amdsmi_shut_down()

    def _device(
        self, smi: Any, handle: Any, position: int, problems: list[Problem]
    ) -> GpuFacts | None:
        try:
            bus_id = normalize_pci_bus_id(str(smi.amdsmi_get_gpu_device_bdf(handle)))
        except Exception as exc:
            problems.append(Problem(f"amdsmi device {position}", self.name, str(exc)))
            return None

        def optional(what: str, call: Any) -> Any:
            try:
                return call(handle)
            except Exception as exc:
                problems.append(Problem(bus_id, self.name, f"{what}: {exc}"))
                return None

        uuid = optional("uuid", smi.amdsmi_get_gpu_device_uuid)
        asic = optional("asic info", smi.amdsmi_get_gpu_asic_info)
        numa = optional("numa node", smi.amdsmi_topo_get_numa_node_number)
        enumeration = None
        if hasattr(smi, "amdsmi_get_gpu_enumeration_info"):  # ROCm ≥ 6.4
            enumeration = optional("enumeration info", smi.amdsmi_get_gpu_enumeration_info)
        render = enumeration.get("drm_render") if isinstance(enumeration, dict) else None
        model = asic.get("market_name") if isinstance(asic, dict) else None
        return GpuFacts(
            pci_bus_id=bus_id,
            vendor=self.vendor,
            model=str(model) if model else None,
            uuid=str(uuid) if uuid else None,
            render_node=f"renderD{int(render)}" if isinstance(render, int) and render > 0 else None,
            reported_numa_node=int(numa) if isinstance(numa, int) else None,
        )


def _minor(render_node: str | None) -> int:
    if render_node is None:
        return 1 << 30
    return int(render_node.removeprefix("renderD"))
