"""NVIDIA driver vs the CUDA runtime torch was built with (minimum driver table, minor-version compat)."""

from __future__ import annotations

from detbench.envcheck import nvml, tables
from detbench.envcheck.check import register_check
from detbench.envcheck.result import Outcome, failed, passed, skipped, warned

DRIVER_DOWNLOAD = "https://www.nvidia.com/Download/index.aspx"


def judge_driver(driver: str, torch_cuda: str) -> Outcome:
    """Compare a driver version string with the CUDA version torch was built for."""
    full, compat = tables.min_driver_for_cuda(torch_cuda)
    have = tables.parse_version(driver)
    measured = {"driver": driver, "torch_cuda": torch_cuda, "min_driver": full, "min_driver_minor_compat": compat}
    if full is None and compat is None:
        return warned(f"driver {driver}; CUDA {torch_cuda} is not in the driver table",
                      "update envcheck/tables.py CUDA_MIN_DRIVER with this CUDA release's minimum driver", **measured)
    if full is not None and have >= tables.parse_version(full):
        return passed(f"driver {driver} supports CUDA {torch_cuda} (needs >= {full})", **measured)
    if compat is not None and have >= tables.parse_version(compat):
        return warned(
            f"driver {driver} runs CUDA {torch_cuda} only under minor-version compatibility (full support from {full})",
            f"upgrade the NVIDIA driver to >= {full} ({DRIVER_DOWNLOAD}); until then PTX JIT of newer "
            "kernels and some CUDA APIs fail",
            **measured,
        )
    needed = full or compat
    return failed(
        f"driver {driver} is too old for CUDA {torch_cuda}: needs >= {needed}",
        f"upgrade the NVIDIA driver to >= {needed} ({DRIVER_DOWNLOAD}), or install a torch build for an older "
        f"CUDA that this driver supports",
        **measured,
    )


@register_check("driver", "NVIDIA driver vs torch CUDA")
def check_driver(ctx) -> Outcome:
    import torch  # noqa: PLC0415

    torch_cuda = torch.version.cuda
    if nvml.load() is None:
        return skipped(f"no NVML: {nvml.unavailable_reason()}", torch_cuda=torch_cuda)
    driver = nvml.driver_version()
    driver_cuda = nvml.cuda_driver_version()
    if driver is None:
        return skipped("NVML does not report a driver version", torch_cuda=torch_cuda)
    if torch_cuda is None:
        return skipped(f"driver {driver}; torch is a CPU-only build, nothing to compare", driver=driver)
    outcome = judge_driver(driver, torch_cuda)
    outcome.measured["driver_cuda"] = ".".join(map(str, driver_cuda)) if driver_cuda else None
    if driver_cuda and outcome.status == "pass" and driver_cuda < tables.parse_version(torch_cuda)[:2]:
        return warned(f"{outcome.detail}, but NVML says the driver supports CUDA {driver_cuda[0]}.{driver_cuda[1]}",
                      f"upgrade the NVIDIA driver ({DRIVER_DOWNLOAD})", **outcome.measured)
    outcome.detail += f"; driver's CUDA {outcome.measured['driver_cuda']}"
    return outcome
