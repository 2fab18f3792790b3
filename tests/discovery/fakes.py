"""Fakes of pynvml and amdsmi with their real call surface, describing a fixture machine.

They answer from the same :class:`Machine` the sysfs tree is written from, so that the vendor view
and the kernel's view agree unless a test makes them disagree. Failures are injected per call and
per device, with exception classes named as the real modules name them.
"""

from __future__ import annotations

import types
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tests.fixtures import machines


class NVMLError(Exception):
    def __init__(self, value: int = 999) -> None:
        super().__init__(f"NVML error {value}")
        self.value = value


def _nvml_error(name: str, value: int, text: str) -> type[NVMLError]:
    def __str__(self: NVMLError) -> str:
        return text

    def __init__(self: NVMLError) -> None:
        NVMLError.__init__(self, value)

    return type(name, (NVMLError,), {"__str__": __str__, "__init__": __init__})


NVMLError_NotSupported = _nvml_error("NVMLError_NotSupported", 3, "Not Supported")
NVMLError_NotFound = _nvml_error("NVMLError_NotFound", 6, "Not Found")
NVMLError_Unknown = _nvml_error("NVMLError_Unknown", 999, "Unknown Error")
NVMLError_LibraryNotFound = _nvml_error("NVMLError_LibraryNotFound", 12, "NVML Shared Library Not Found")
NVMLError_GpuIsLost = _nvml_error("NVMLError_GpuIsLost", 15, "GPU is lost")


@dataclass
class NvmlDevice:
    bus_id: str  # NVML's own form: 00000000:1B:00.0
    uuid: str
    name: str
    minor: int
    affinity: list[int]  # 64-bit words
    mig_enabled: bool = False
    mig_uuids: list[str | None] = field(default_factory=list)  # None: an empty slot


@dataclass
class FakeNvml:
    """State behind a fake ``pynvml`` module. ``failures[(call, index)]`` raises that error."""

    devices: list[NvmlDevice]
    failures: dict[tuple[str, int], type[Exception]] = field(default_factory=dict)
    init_error: type[Exception] | None = None
    calls: list[str] = field(default_factory=list)

    def module(self) -> types.ModuleType:
        module = types.ModuleType("pynvml")
        for error in (NVMLError, NVMLError_NotSupported, NVMLError_NotFound, NVMLError_Unknown,
                      NVMLError_LibraryNotFound, NVMLError_GpuIsLost):
            setattr(module, error.__name__, error)
        module.NVML_DEVICE_MIG_ENABLE = 1  # type: ignore[attr-defined]
        module.NVML_DEVICE_MIG_DISABLE = 0  # type: ignore[attr-defined]

        def call(name: str, result: Callable[..., Any]) -> Callable[..., Any]:
            def wrapper(handle: Any = None, *args: Any) -> Any:
                self.calls.append(name)
                index = handle[1] if isinstance(handle, tuple) else -1
                error = self.failures.get((name, index))
                if error is not None:
                    raise error()
                return result(handle, *args)
            return wrapper

        def init(_: Any = None) -> None:
            self.calls.append("nvmlInit")
            if self.init_error is not None:
                raise self.init_error()

        def device(handle: tuple[str, int]) -> NvmlDevice:
            return self.devices[handle[1]]

        def mig_handle(handle: tuple[str, int], slot: int) -> tuple[str, int, int]:
            uuids = device(handle).mig_uuids
            if slot >= len(uuids) or uuids[slot] is None:
                raise NVMLError_NotFound()
            return ("mig", handle[1], slot)

        def uuid(handle: Any) -> str:
            if handle[0] == "mig":
                found = self.devices[handle[1]].mig_uuids[handle[2]]
                assert found is not None
                return found
            return device(handle).uuid

        module.nvmlInit = init  # type: ignore[attr-defined]
        module.nvmlShutdown = lambda: self.calls.append("nvmlShutdown")  # type: ignore[attr-defined]
        module.nvmlDeviceGetCount = lambda: len(self.devices)  # type: ignore[attr-defined]
        def get_handle(index: int) -> tuple[str, int]:
            error = self.failures.get(("nvmlDeviceGetHandleByIndex", index))
            if error is not None:
                raise error()
            return ("gpu", index)

        module.nvmlDeviceGetHandleByIndex = get_handle  # type: ignore[attr-defined]
        module.nvmlDeviceGetPciInfo = call(  # type: ignore[attr-defined]
            "nvmlDeviceGetPciInfo", lambda h: types.SimpleNamespace(busId=device(h).bus_id.encode()))
        module.nvmlDeviceGetUUID = call("nvmlDeviceGetUUID", uuid)  # type: ignore[attr-defined]
        module.nvmlDeviceGetName = call("nvmlDeviceGetName", lambda h: device(h).name)  # type: ignore[attr-defined]
        module.nvmlDeviceGetMinorNumber = call(  # type: ignore[attr-defined]
            "nvmlDeviceGetMinorNumber", lambda h: device(h).minor)
        module.nvmlDeviceGetCpuAffinity = call(  # type: ignore[attr-defined]
            "nvmlDeviceGetCpuAffinity", lambda h, size: (device(h).affinity + [0] * size)[:size])
        module.nvmlDeviceGetNumaNodeId = call(  # type: ignore[attr-defined]
            "nvmlDeviceGetNumaNodeId", lambda h: 7)  # a GPU memory node: must never be used
        module.nvmlDeviceGetMigMode = call(  # type: ignore[attr-defined]
            "nvmlDeviceGetMigMode", lambda h: (int(device(h).mig_enabled), int(device(h).mig_enabled)))
        module.nvmlDeviceGetMaxMigDeviceCount = call(  # type: ignore[attr-defined]
            "nvmlDeviceGetMaxMigDeviceCount", lambda h: 7)
        module.nvmlDeviceGetMigDeviceHandleByIndex = call(  # type: ignore[attr-defined]
            "nvmlDeviceGetMigDeviceHandleByIndex", mig_handle)
        return module


def _mask(cpus: set[int], words: int) -> list[int]:
    mask = [0] * words
    for cpu in cpus:
        mask[cpu // 64] |= 1 << (cpu % 64)
    return mask


def nvml_for(machine: machines.Machine, *, affinity_by_node: bool = True) -> FakeNvml:
    """NVML's view of a machine: devices in bus order, affinity = the CPUs of the GPU's socket.

    ``affinity_by_node`` False gives every GPU all CPUs, as NVML does when it knows nothing.
    """
    all_cpus: set[int] = set()
    node_cpus: dict[int, set[int]] = {}
    for node in machine.nodes:
        cpus: set[int] = set()
        for part in filter(None, node.cpus.split(",")):
            low, _, high = part.partition("-")
            cpus.update(range(int(low), int(high or low) + 1))
        node_cpus[node.id] = cpus
        all_cpus |= cpus
    words = max(all_cpus) // 64 + 1 if all_cpus else 1
    devices = []
    for function in machine.gpus:
        if function.vendor != machines.NVIDIA:
            continue
        domain, rest = function.bdf.split(":", 1)
        cpus = node_cpus.get(function.numa_node, all_cpus) if affinity_by_node else all_cpus
        devices.append(NvmlDevice(
            bus_id=f"{int(domain, 16):08X}:{rest.upper()}",
            uuid=function.uuid or "",
            name=function.model or "",
            minor=function.minor if function.minor is not None else 0,
            affinity=_mask(cpus, words),
        ))
    return FakeNvml(devices=devices)


class AmdSmiLibraryException(Exception):
    pass


@dataclass
class FakeAmdSmi:
    """State behind a fake ``amdsmi`` module: one handle per partition, as in CPX mode."""

    handles: list[dict[str, Any]]
    failures: dict[tuple[str, int], type[Exception]] = field(default_factory=dict)
    init_error: type[Exception] | None = None

    def module(self) -> types.ModuleType:
        module = types.ModuleType("amdsmi")
        module.AmdSmiLibraryException = AmdSmiLibraryException  # type: ignore[attr-defined]
        module.AmdSmiInitFlags = types.SimpleNamespace(INIT_AMD_GPUS=2)  # type: ignore[attr-defined]

        def init(flags: int = 2) -> None:
            assert flags == 2
            if self.init_error is not None:
                raise self.init_error("init failed")

        def call(name: str, key: str) -> Callable[[int], Any]:
            def wrapper(handle: int) -> Any:
                error = self.failures.get((name, handle))
                if error is not None:
                    raise error(f"{name} failed")
                return self.handles[handle][key]
            return wrapper

        module.amdsmi_init = init  # type: ignore[attr-defined]
        module.amdsmi_shut_down = lambda: None  # type: ignore[attr-defined]
        module.amdsmi_get_processor_handles = lambda: list(range(len(self.handles)))  # type: ignore[attr-defined]
        module.amdsmi_get_gpu_device_bdf = call("amdsmi_get_gpu_device_bdf", "bdf")  # type: ignore[attr-defined]
        module.amdsmi_get_gpu_device_uuid = call("amdsmi_get_gpu_device_uuid", "uuid")  # type: ignore[attr-defined]
        module.amdsmi_get_gpu_asic_info = call("amdsmi_get_gpu_asic_info", "asic")  # type: ignore[attr-defined]
        module.amdsmi_topo_get_numa_node_number = call(  # type: ignore[attr-defined]
            "amdsmi_topo_get_numa_node_number", "numa")
        module.amdsmi_get_gpu_enumeration_info = call(  # type: ignore[attr-defined]
            "amdsmi_get_gpu_enumeration_info", "enumeration")
        return module


def _amdsmi_uuid(rocm_uuid: str) -> str:
    """amdsmi renders a GPU's unique id as a dashed 36-character UUID, not ROCm's "GPU-<hex>"."""
    digits = rocm_uuid.removeprefix("GPU-").rjust(32, "0")
    return f"{digits[:8]}-{digits[8:12]}-{digits[12:16]}-{digits[16:20]}-{digits[20:32]}"


def amdsmi_for(machine: machines.Machine) -> FakeAmdSmi:
    """amdsmi's view: a handle per GPU, or per partition in CPX mode, in render-node order."""
    handles = []
    for function in machine.gpus:
        if function.vendor != machines.AMD:
            continue
        minors = [function.render_minor or 0] + [minor for _, minor in function.partitions]
        for minor in minors:
            handles.append({
                "bdf": function.bdf,
                "uuid": _amdsmi_uuid(function.uuid or ""),
                "asic": {"market_name": function.model, "vendor_id": 0x1002},
                "numa": function.numa_node,
                "enumeration": {"drm_render": minor, "drm_card": minor - 128, "hip_id": len(handles)},
            })
    return FakeAmdSmi(handles=handles)
