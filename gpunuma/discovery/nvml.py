"""The NVML backend (``nvidia-ml-py``): UUIDs, models, minors, MIG devices and CPU affinity.

NVML is imported when the backend runs, not when gpunuma is imported: most nodes of a cluster have
no NVIDIA driver, and a missing ``libnvidia-ml.so.1`` must make this backend unavailable, not the
agent fail. NVML's NUMA node (``nvmlDeviceGetNumaNodeId``) is deliberately not used: on coherent
systems (GH200, GB200) it is the GPU's own memory node, and on many PCIe hosts it is "Not
Supported" (DESIGN §5). The NUMA node comes from sysfs; NVML's CPU affinity is only the fallback when
sysfs says -1.
"""

from __future__ import annotations

import contextlib
from types import ModuleType
from typing import Any

from gpunuma.discovery.backend import BackendReport, BackendUnavailable, GpuFacts
from gpunuma.topology import MigDevice, Problem, Vendor, normalize_pci_bus_id

__all__ = ["NvmlBackend"]

_WORD_BITS = 64  # nvmlDeviceGetCpuAffinity fills an array of unsigned longs


class NvmlBackend:
    name = "nvml"
    vendor: Vendor = "nvidia"

    def __init__(self, module: ModuleType | None = None) -> None:
        # Tests pass a fake module with pynvml's surface; production imports the real one.
        self._module = module

    def _load(self) -> Any:
        if self._module is not None:
            return self._module
        try:
            import pynvml
        except Exception as exc:  # ImportError, or a broken install failing at import time
            raise BackendUnavailable(f"cannot import pynvml (nvidia-ml-py): {exc}") from exc
        return pynvml

    def collect(self, *, cpu_count: int) -> BackendReport:
        nvml = self._load()
        try:
            nvml.nvmlInit()
        except Exception as exc:  # NVMLError_LibraryNotFound, DriverNotLoaded, NoPermission, …
            raise BackendUnavailable(f"NVML cannot start: {_describe(exc)}") from exc
        try:
            try:
                count = int(nvml.nvmlDeviceGetCount())
            except Exception as exc:
                raise BackendUnavailable(f"NVML cannot count devices: {_describe(exc)}") from exc
            gpus: list[GpuFacts] = []
            problems: list[Problem] = []
            for index in range(count):
                facts = self._device(nvml, index, cpu_count, problems)
                if facts is not None:
                    gpus.append(facts)
            return BackendReport(source=self.name, gpus=tuple(gpus), problems=tuple(problems))
        finally:
            with contextlib.suppress(Exception):  # best effort on the way out
                nvml.nvmlShutdown()

    def _device(
        self, nvml: Any, index: int, cpu_count: int, problems: list[Problem]
    ) -> GpuFacts | None:
        """One device's facts; a device whose identity cannot be read is a problem, not a GPU."""
        try:
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
            bus_id = normalize_pci_bus_id(_text(nvml.nvmlDeviceGetPciInfo(handle).busId))
        except Exception as exc:
            problems.append(Problem(f"nvml device {index}", self.name, _describe(exc)))
            return None

        def optional(what: str, call: Any, *args: Any) -> Any:
            """A call whose failure loses one fact: Not Supported silently, others reported."""
            try:
                return call(handle, *args)
            except Exception as exc:
                if not _is_not_supported(nvml, exc):
                    problems.append(Problem(bus_id, self.name, f"{what}: {_describe(exc)}"))
                return None

        uuid = optional("uuid", nvml.nvmlDeviceGetUUID)
        name = optional("name", nvml.nvmlDeviceGetName)
        minor = optional("minor number", nvml.nvmlDeviceGetMinorNumber)
        words = max(1, -(-cpu_count // _WORD_BITS))
        mask = optional("cpu affinity", nvml.nvmlDeviceGetCpuAffinity, words)
        return GpuFacts(
            pci_bus_id=bus_id,
            vendor=self.vendor,
            index=index,
            model=_text(name) if name is not None else None,
            uuid=_text(uuid) if uuid is not None else None,
            minor=int(minor) if minor is not None else None,
            cpu_affinity=_cpus_of_mask(mask) if mask is not None else None,
            mig_devices=self._mig_devices(nvml, handle, bus_id, problems),
        )

    def _mig_devices(
        self, nvml: Any, handle: Any, bus_id: str, problems: list[Problem]
    ) -> tuple[MigDevice, ...]:
        try:
            current, _pending = nvml.nvmlDeviceGetMigMode(handle)
        except Exception as exc:
            if not _is_not_supported(nvml, exc):
                problems.append(Problem(bus_id, self.name, f"MIG mode: {_describe(exc)}"))
            return ()
        if current != getattr(nvml, "NVML_DEVICE_MIG_ENABLE", 1):
            return ()
        devices: list[MigDevice] = []
        try:
            slots = int(nvml.nvmlDeviceGetMaxMigDeviceCount(handle))
        except Exception as exc:
            problems.append(Problem(bus_id, self.name, f"MIG device count: {_describe(exc)}"))
            return ()
        for slot in range(slots):
            try:
                mig = nvml.nvmlDeviceGetMigDeviceHandleByIndex(handle, slot)
                devices.append(MigDevice(uuid=_text(nvml.nvmlDeviceGetUUID(mig))))
            except Exception as exc:
                # Unused slots answer NotFound: the normal case for a partly carved GPU.
                if not _is_error(nvml, exc, "NVMLError_NotFound"):
                    problems.append(Problem(bus_id, self.name, f"MIG slot {slot}: {_describe(exc)}"))
        return tuple(devices)


def _text(value: Any) -> str:
    """pynvml returns str in recent versions and bytes in old ones."""
    return value.decode() if isinstance(value, bytes) else str(value)


def _cpus_of_mask(words: Any) -> frozenset[int]:
    cpus: set[int] = set()
    for word_index, word in enumerate(words):
        bits = int(word)
        position = 0
        while bits:
            if bits & 1:
                cpus.add(word_index * _WORD_BITS + position)
            bits >>= 1
            position += 1
    return frozenset(cpus)


def _is_error(nvml: Any, exc: Exception, class_name: str) -> bool:
    cls = getattr(nvml, class_name, None)
    return isinstance(cls, type) and isinstance(exc, cls)


def _is_not_supported(nvml: Any, exc: Exception) -> bool:
    return _is_error(nvml, exc, "NVMLError_NotSupported")


def _describe(exc: Exception) -> str:
    text = str(exc) or type(exc).__name__
    return text if type(exc).__name__ in text else f"{type(exc).__name__}: {text}"
