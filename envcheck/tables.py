"""Compatibility and hardware tables, as data. Checks read these; remedies quote them.

Sources: NVIDIA CUDA Toolkit release notes (Table 3, minimum Linux x86_64 driver per toolkit and the
minor-version-compatibility floor per major release), PyTorch's torch/torchvision release pairing, and
NVIDIA datasheets (dense peak rates, no sparsity; memory bandwidth).
"""

from __future__ import annotations

from dataclasses import dataclass

# CUDA toolkit (major.minor) -> minimum Linux driver for full support (toolkit GA driver).
CUDA_MIN_DRIVER: dict[str, str] = {
    "11.8": "520.61.05",
    "12.0": "525.60.13",
    "12.1": "530.30.02",
    "12.2": "535.54.03",
    "12.3": "545.23.06",
    "12.4": "550.54.14",
    "12.5": "555.42.02",
    "12.6": "560.28.03",
    "12.8": "570.26",
    "12.9": "575.51.03",
    "13.0": "580.65.06",
}

# CUDA major -> oldest driver that runs any toolkit of that major under minor-version compatibility
# (no PTX JIT of newer PTX, some APIs unavailable).
CUDA_MINOR_COMPAT_DRIVER: dict[int, str] = {
    11: "450.80.02",
    12: "525.60.13",
    13: "580.65.06",
}

# torch (major.minor) -> the torchvision (major.minor) released with it.
TORCH_TORCHVISION: dict[str, str] = {
    "2.0": "0.15", "2.1": "0.16", "2.2": "0.17", "2.3": "0.18", "2.4": "0.19",
    "2.5": "0.20", "2.6": "0.21", "2.7": "0.22", "2.8": "0.23", "2.9": "0.24",
    "2.10": "0.25", "2.11": "0.26", "2.12": "0.27", "2.13": "0.28", "2.14": "0.29",
    "2.15": "0.30",
}

MIN_TORCH = "2.5"  # oldest torch detbench supports


def expected_torchvision(torch_version: str) -> str | None:
    """The torchvision major.minor that pairs with a torch version (table, then the 2.x rule)."""
    major_minor = ".".join(torch_version.split("+")[0].split(".")[:2])
    if major_minor in TORCH_TORCHVISION:
        return TORCH_TORCHVISION[major_minor]
    major, _, minor = major_minor.partition(".")
    if major == "2" and minor.isdigit():
        return f"0.{int(minor) + 15}"
    return None


def parse_version(text: str) -> tuple[int, ...]:
    """'580.65.06' -> (580, 65, 6); '2.5.1+cu121' -> (2, 5, 1); non-numeric parts are dropped."""
    parts = []
    for piece in text.split("+")[0].split("."):
        digits = "".join(ch for ch in piece if ch.isdigit())
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts)


def min_driver_for_cuda(cuda_version: str) -> tuple[str | None, str | None]:
    """(driver for full support, driver for minor-version compatibility) for a CUDA version."""
    major_minor = ".".join(cuda_version.split(".")[:2])
    major = parse_version(cuda_version)[0] if parse_version(cuda_version) else None
    return CUDA_MIN_DRIVER.get(major_minor), CUDA_MINOR_COMPAT_DRIVER.get(major) if major else None


@dataclass(frozen=True)
class GpuSpec:
    """Datasheet figures for one GPU model: dense peak TFLOP/s per precision, memory bandwidth."""

    name: str
    match: tuple[str, ...]  # substrings of torch's device name, all must appear (case-insensitive)
    fp32_tflops: float
    tf32_tflops: float | None
    fp16_tflops: float
    bf16_tflops: float | None
    memory_bandwidth_gbs: float

    def peak_tflops(self, precision: str) -> float | None:
        """Peak for a benchmark precision: 'fp32' (plain FP32 CUDA cores), 'tf32', 'amp-fp16', 'amp-bf16'."""
        return {
            "fp32": self.fp32_tflops,
            "tf32": self.tf32_tflops,
            "amp-fp16": self.fp16_tflops,
            "fp16": self.fp16_tflops,
            "amp-bf16": self.bf16_tflops,
            "bf16": self.bf16_tflops,
        }.get(precision)


# Most specific first: the first entry whose substrings all appear in the device name wins.
GPU_SPECS: tuple[GpuSpec, ...] = (
    GpuSpec("H100 PCIe", ("h100", "pcie"), 51.2, 378.0, 756.0, 756.0, 2000.0),
    GpuSpec("H100 NVL", ("h100", "nvl"), 60.0, 417.5, 835.5, 835.5, 3900.0),
    GpuSpec("H100 SXM", ("h100",), 66.9, 494.7, 989.4, 989.4, 3350.0),
    GpuSpec("H200", ("h200",), 66.9, 494.7, 989.4, 989.4, 4800.0),
    GpuSpec("A100 PCIe 40GB", ("a100", "pcie", "40gb"), 19.5, 156.0, 312.0, 312.0, 1555.0),
    GpuSpec("A100 PCIe 80GB", ("a100", "80gb", "pcie"), 19.5, 156.0, 312.0, 312.0, 1935.0),
    GpuSpec("A100 SXM 40GB", ("a100", "40gb"), 19.5, 156.0, 312.0, 312.0, 1555.0),
    GpuSpec("A100 SXM 80GB", ("a100",), 19.5, 156.0, 312.0, 312.0, 2039.0),
    GpuSpec("L40S", ("l40s",), 91.6, 183.0, 362.1, 362.1, 864.0),
    GpuSpec("L4", ("l4",), 30.3, 60.0, 121.0, 121.0, 300.0),
    GpuSpec("A10", ("a10",), 31.2, 62.5, 125.0, 125.0, 600.0),
    GpuSpec("T4", ("t4",), 8.1, None, 65.0, None, 320.0),
    GpuSpec("V100", ("v100",), 15.7, None, 125.0, None, 900.0),
    GpuSpec("RTX 4090", ("4090",), 82.6, 82.6, 165.2, 165.2, 1008.0),
)


def gpu_spec(device_name: str) -> GpuSpec | None:
    """Datasheet entry for a torch device name, e.g. 'NVIDIA H100 80GB HBM3' -> H100 SXM."""
    lowered = device_name.lower()
    tokens = set(lowered.replace("-", " ").split())
    for spec in GPU_SPECS:
        # short names like 'l4', 'a10', 't4' must be whole words; longer ones may be substrings
        if all((m in tokens) if len(m) <= 3 else (m in lowered) for m in spec.match):
            return spec
    return None


# --- inter-GPU links: what a link allows per direction (the NCCL check judges busbw against it) ------------
# NVML's nvmlDeviceGetNvLinkVersion answers an nvmlNvlinkVersion_t enum, not the generation (an A100 answers
# 4 or 5 for NVLink 3.x). Per link and direction: NVLink 1.0 20 GB/s; 2.x to 4.0 25 GB/s (V100 6 links = 150,
# A100 12 = 300, H100 SXM 18 = 450 GB/s per direction); 5.0 50 GB/s (B200 18 links = 900). NVIDIA datasheets.
NVLINK_VERSIONS: dict[int, tuple[str, float]] = {
    1: ("NVLink 1.0", 20.0),
    2: ("NVLink 2.0", 25.0),
    3: ("NVLink 2.2", 25.0),
    4: ("NVLink 3.0", 25.0),
    5: ("NVLink 3.1", 25.0),
    6: ("NVLink 4.0", 25.0),
    7: ("NVLink 5.0", 50.0),
}

# PCIe generation -> GB/s per lane per direction after line encoding (8b/10b up to 2.0, 128b/130b from 3.0,
# FLIT from 6.0): x16 Gen4 = 31.5 GB/s, x16 Gen5 = 63 GB/s per direction. PCI-SIG base specifications.
PCIE_GBS_PER_LANE: dict[int, float] = {1: 0.25, 2: 0.5, 3: 0.985, 4: 1.969, 5: 3.938, 6: 7.563}


def nvlink_gbs(version: int | None, links: int) -> float | None:
    """Per-direction GB/s of ``links`` NVLinks of an NVML version enum; None for an unknown version."""
    entry = NVLINK_VERSIONS.get(version) if version is not None else None
    return entry[1] * links if entry and links > 0 else None


def nvlink_name(version: int | None) -> str:
    entry = NVLINK_VERSIONS.get(version) if version is not None else None
    return entry[0] if entry else f"NVLink (NVML version enum {version})"


def pcie_gbs(generation: int | None, width: int | None) -> float | None:
    """Per-direction GB/s of a PCIe link of this generation and lane count; None when either is unknown."""
    per_lane = PCIE_GBS_PER_LANE.get(generation) if generation is not None else None
    return per_lane * width if per_lane and width else None
