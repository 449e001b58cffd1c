"""A fake `pynvml` module: the one shared NVML fake for envcheck and telemetry tests.

Build one with :func:`make_fake_nvml`, install it with ``detbench.envcheck.nvml.load(importer=lambda: fake)``
(or the ``fake_nvml`` fixture in tests/conftest.py). Each GPU is a :class:`FakeGpu` whose fields the test
sets; a field set to ``NOT_SUPPORTED`` makes that query raise NVMLError_NotSupported, ``gone=True`` makes
every query on the GPU raise NVMLError_GpuIsLost (a GPU that fell off the bus mid-run).
"""

from __future__ import annotations

import types
from dataclasses import dataclass, field
from typing import Any

NOT_SUPPORTED = object()


class NVMLError(Exception):
    def __init__(self, value: int = 999, msg: str = "Unknown Error") -> None:
        super().__init__(msg)
        self.value = value


class NVMLError_NotSupported(NVMLError):  # noqa: N801, N818 - pynvml's names
    def __init__(self) -> None:
        super().__init__(3, "Not Supported")


class NVMLError_GpuIsLost(NVMLError):  # noqa: N801, N818
    def __init__(self) -> None:
        super().__init__(15, "GPU is lost")


class NVMLError_LibraryNotFound(NVMLError):  # noqa: N801, N818
    def __init__(self) -> None:
        super().__init__(12, "NVML Shared Library Not Found")


@dataclass(frozen=True)
class FakeNvLink:
    """One NVLink of a FakeGpu: up or down, its NVML version enum (6 = NVLink 4.0), what it reaches."""

    remote_bus_id: str
    version: int = 6
    remote_type: int = 0  # 0 GPU, 2 NVSwitch
    active: bool = True


@dataclass
class FakeGpu:
    name: str = "NVIDIA H100 80GB HBM3"
    uuid: str = "GPU-00000000-0000-0000-0000-000000000000"
    pci_bus_id: str = "00000000:01:00.0"
    memory_total: int = 80 * 1024**3
    memory_used: int = 1 * 1024**3
    util_gpu: int = 0
    util_memory: int = 0
    power_mw: Any = 70_000
    power_limit_mw: Any = 700_000
    power_default_limit_mw: Any = 700_000  # the board's default power limit (a lower enforced limit = capped)
    energy_mj: Any = 1_000_000  # total energy counter, millijoules; NOT_SUPPORTED on old GPUs
    energy_step_mj: int = 0  # added to the counter on every read (a running GPU)
    temperature_c: int = 35
    sm_clock_mhz: int = 1980
    mem_clock_mhz: int = 2619
    max_sm_clock_mhz: int = 1980
    throttle_reasons: int = 0
    pcie_tx_kbs: Any = 0
    pcie_rx_kbs: Any = 0
    pcie_gen: int = 5
    pcie_max_gen: int = 5
    pcie_width: int = 16
    pcie_max_width: int = 16
    ecc_uncorrected_volatile: Any = 0
    ecc_uncorrected_aggregate: Any = 0
    retired_pages_pending: Any = 0
    retired_pages: Any = 0  # count of retired pages (pre-Ampere)
    remapped_rows_uncorrectable: Any = 0
    remapped_rows_pending: Any = 0
    remapped_rows_failed: Any = 0
    mig_mode: Any = 0
    processes: list[tuple[int, int]] = field(default_factory=list)  # (pid, used bytes)
    nvlinks: Any = NOT_SUPPORTED  # a list of FakeNvLink; NOT_SUPPORTED = a PCIe-only GPU
    gone: bool = False


# Throttle-reason bits, as pynvml names them.
THROTTLE_BITS = {
    "nvmlClocksThrottleReasonGpuIdle": 0x1,
    "nvmlClocksThrottleReasonApplicationsClocksSetting": 0x2,
    "nvmlClocksThrottleReasonSwPowerCap": 0x4,
    "nvmlClocksThrottleReasonHwSlowdown": 0x8,
    "nvmlClocksThrottleReasonSyncBoost": 0x10,
    "nvmlClocksThrottleReasonSwThermalSlowdown": 0x20,
    "nvmlClocksThrottleReasonHwThermalSlowdown": 0x40,
    "nvmlClocksThrottleReasonHwPowerBrakeSlowdown": 0x80,
    "nvmlClocksThrottleReasonDisplayClockSetting": 0x100,
}


def make_fake_nvml(
    gpus: list[FakeGpu] | None = None,
    driver: str = "580.159.04",
    cuda_driver: int = 13000,
    init_error: Exception | None = None,
    topology: int | dict[tuple[int, int], int] = 10,
    p2p_status: int = 0,
) -> types.SimpleNamespace:
    """A module-like object with the pynvml functions detbench calls.

    ``topology``: nvmlGpuTopologyLevel_t of every GPU pair (10 = PIX), or per (i, j) pair; ``p2p_status``:
    what nvmlDeviceGetP2PStatus answers (0 ok, 4 disabled by regkey).
    """
    gpus = list(gpus if gpus is not None else [FakeGpu()])
    nv = types.SimpleNamespace(gpus=gpus, init_calls=0, query_calls=0)

    def value(v: Any) -> Any:
        if v is NOT_SUPPORTED:
            raise NVMLError_NotSupported()
        return v

    def gpu(handle: Any) -> FakeGpu:
        nv.query_calls += 1
        g = gpus[handle]
        if g.gone:
            raise NVMLError_GpuIsLost()
        return g

    def init() -> None:
        nv.init_calls += 1
        if init_error is not None:
            raise init_error

    def handle_by_index(index: int) -> int:
        if not 0 <= index < len(gpus):
            raise NVMLError(2, "Invalid Argument")
        return index

    def energy(handle: Any) -> int:
        g = gpu(handle)
        current = value(g.energy_mj)
        g.energy_mj = current + g.energy_step_mj
        return current

    def ecc(handle: Any, error_type: int, counter_type: int) -> int:
        g = gpu(handle)
        volatile = counter_type == nv.NVML_VOLATILE_ECC
        return value(g.ecc_uncorrected_volatile if volatile else g.ecc_uncorrected_aggregate)

    def retired(handle: Any, cause: int) -> list[int]:
        return [0x1000 * i for i in range(value(gpu(handle).retired_pages))]

    def pcie_throughput(handle: Any, counter: int) -> int:
        g = gpu(handle)
        return value(g.pcie_tx_kbs if counter == nv.NVML_PCIE_UTIL_TX_BYTES else g.pcie_rx_kbs)

    def clock(handle: Any, clock_type: int) -> int:
        g = gpu(handle)
        return g.sm_clock_mhz if clock_type == nv.NVML_CLOCK_SM else g.mem_clock_mhz

    def remapped(handle: Any) -> tuple[int, int, int, int]:
        g = gpu(handle)
        value(g.remapped_rows_uncorrectable)
        return (0, g.remapped_rows_uncorrectable, g.remapped_rows_pending, g.remapped_rows_failed)

    def processes(handle: Any) -> list[Any]:
        return [types.SimpleNamespace(pid=pid, usedGpuMemory=used) for pid, used in gpu(handle).processes]

    def nvlink(handle: Any, link: int) -> FakeNvLink:
        links = value(gpu(handle).nvlinks)
        if not 0 <= link < len(links):
            raise NVMLError(2, "Invalid Argument")
        return links[link]

    def topology_level(first: Any, second: Any) -> int:
        gpu(first), gpu(second)
        if isinstance(topology, dict):
            return topology.get((first, second), topology.get((second, first), 50))
        return topology

    def p2p(first: Any, second: Any, index: int) -> int:
        gpu(first), gpu(second)
        return p2p_status

    nv.NVMLError = NVMLError
    nv.NVMLError_NotSupported = NVMLError_NotSupported
    nv.NVMLError_GpuIsLost = NVMLError_GpuIsLost
    nv.NVMLError_LibraryNotFound = NVMLError_LibraryNotFound
    nv.NVML_TEMPERATURE_GPU = 0
    nv.NVML_CLOCK_GRAPHICS, nv.NVML_CLOCK_SM, nv.NVML_CLOCK_MEM = 0, 1, 2
    nv.NVML_PCIE_UTIL_TX_BYTES, nv.NVML_PCIE_UTIL_RX_BYTES = 0, 1
    nv.NVML_MEMORY_ERROR_TYPE_UNCORRECTED = 1
    nv.NVML_VOLATILE_ECC, nv.NVML_AGGREGATE_ECC = 0, 1
    nv.NVML_NVLINK_MAX_LINKS = 18
    nv.NVML_PAGE_RETIREMENT_CAUSE_MULTIPLE_SINGLE_BIT_ECC_ERRORS = 0
    nv.NVML_PAGE_RETIREMENT_CAUSE_DOUBLE_BIT_ECC_ERROR = 1
    for name, bit in THROTTLE_BITS.items():
        setattr(nv, name, bit)
        setattr(nv, name.replace("Throttle", "Event"), bit)

    nv.nvmlInit = init
    nv.nvmlShutdown = lambda: None
    nv.nvmlSystemGetDriverVersion = lambda: driver
    nv.nvmlSystemGetCudaDriverVersion = lambda: cuda_driver
    nv.nvmlSystemGetCudaDriverVersion_v2 = lambda: cuda_driver
    nv.nvmlDeviceGetCount = lambda: len(gpus)
    nv.nvmlDeviceGetHandleByIndex = handle_by_index
    nv.nvmlDeviceGetUUID = lambda h: gpu(h).uuid
    nv.nvmlDeviceGetName = lambda h: gpu(h).name
    nv.nvmlDeviceGetPciInfo = lambda h: types.SimpleNamespace(busId=gpu(h).pci_bus_id)
    nv.nvmlDeviceGetMemoryInfo = lambda h: types.SimpleNamespace(
        total=gpu(h).memory_total, used=gpu(h).memory_used, free=gpu(h).memory_total - gpu(h).memory_used
    )
    nv.nvmlDeviceGetUtilizationRates = lambda h: types.SimpleNamespace(gpu=gpu(h).util_gpu, memory=gpu(h).util_memory)
    nv.nvmlDeviceGetPowerUsage = lambda h: value(gpu(h).power_mw)
    nv.nvmlDeviceGetEnforcedPowerLimit = lambda h: value(gpu(h).power_limit_mw)
    nv.nvmlDeviceGetPowerManagementLimit = lambda h: value(gpu(h).power_limit_mw)
    nv.nvmlDeviceGetPowerManagementDefaultLimit = lambda h: value(gpu(h).power_default_limit_mw)
    nv.nvmlDeviceGetTotalEnergyConsumption = energy
    nv.nvmlDeviceGetTemperature = lambda h, sensor: gpu(h).temperature_c
    nv.nvmlDeviceGetClockInfo = clock
    nv.nvmlDeviceGetMaxClockInfo = lambda h, t: gpu(h).max_sm_clock_mhz
    nv.nvmlDeviceGetCurrentClocksThrottleReasons = lambda h: gpu(h).throttle_reasons
    nv.nvmlDeviceGetCurrentClocksEventReasons = lambda h: gpu(h).throttle_reasons
    nv.nvmlDeviceGetPcieThroughput = pcie_throughput
    nv.nvmlDeviceGetCurrPcieLinkGeneration = lambda h: gpu(h).pcie_gen
    nv.nvmlDeviceGetMaxPcieLinkGeneration = lambda h: gpu(h).pcie_max_gen
    nv.nvmlDeviceGetCurrPcieLinkWidth = lambda h: gpu(h).pcie_width
    nv.nvmlDeviceGetMaxPcieLinkWidth = lambda h: gpu(h).pcie_max_width
    nv.nvmlDeviceGetTotalEccErrors = ecc
    nv.nvmlDeviceGetRetiredPages = retired
    nv.nvmlDeviceGetRetiredPagesPendingStatus = lambda h: value(gpu(h).retired_pages_pending)
    nv.nvmlDeviceGetRemappedRows = remapped
    nv.nvmlDeviceGetMigMode = lambda h: (value(gpu(h).mig_mode), value(gpu(h).mig_mode))
    nv.nvmlDeviceGetComputeRunningProcesses = processes
    nv.nvmlDeviceGetNvLinkState = lambda h, link: int(nvlink(h, link).active)
    nv.nvmlDeviceGetNvLinkVersion = lambda h, link: nvlink(h, link).version
    nv.nvmlDeviceGetNvLinkRemotePciInfo_v2 = lambda h, link: types.SimpleNamespace(busId=nvlink(h, link).remote_bus_id)
    nv.nvmlDeviceGetNvLinkRemoteDeviceType = lambda h, link: nvlink(h, link).remote_type
    nv.nvmlDeviceGetTopologyCommonAncestor = topology_level
    nv.nvmlDeviceGetP2PStatus = p2p
    return nv
