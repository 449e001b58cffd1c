"""Architecture: each visible GPU's compute capability has a kernel in this torch build (sm_XY or PTX)."""

from __future__ import annotations

from detbench.envcheck.check import register_check
from detbench.envcheck.result import Outcome, failed, passed


def arch_support(capability: tuple[int, int], arch_list: list[str]) -> str | None:
    """'sm_90' (native cubin), 'compute_80 (PTX JIT)', or None when no kernel image can run."""
    code = capability[0] * 10 + capability[1]
    if f"sm_{code}" in arch_list:
        return f"sm_{code}"
    # a cubin for the same major with a lower minor runs too (binary compatibility within a major)
    same_major = [a for a in arch_list if a.startswith("sm_") and a[3:].isdigit()
                  and int(a[3:]) // 10 == capability[0] and int(a[3:]) <= code]
    if same_major:
        return f"{max(same_major, key=lambda a: int(a[3:]))} (binary compatible)"
    ptx = [int(a[8:]) for a in arch_list if a.startswith("compute_") and a[8:].isdigit() and int(a[8:]) <= code]
    if ptx:
        return f"compute_{max(ptx)} (PTX JIT)"
    return None


@register_check("arch", "GPU architecture in torch build", needs_gpu=True)
def check_arch(ctx) -> Outcome:
    import torch  # noqa: PLC0415

    arch_list = list(torch.cuda.get_arch_list())
    devices, missing = [], []
    for index in range(torch.cuda.device_count()):
        major, minor = torch.cuda.get_device_capability(index)
        capability = (major, minor)
        support = arch_support(capability, arch_list)
        name = torch.cuda.get_device_name(index)
        devices.append(
            {"index": index, "name": name, "capability": f"{capability[0]}.{capability[1]}", "kernel": support}
        )
        if support is None:
            missing.append(f"cuda:{index} {name} (sm_{capability[0]}{capability[1]})")
    measured = {"arch_list": arch_list, "devices": devices}
    if missing:
        return failed(
            f"no kernel image is available for {', '.join(missing)}; this torch has {' '.join(arch_list)}",
            "install a torch build that includes this architecture (a newer CUDA wheel, e.g. "
            "--index-url https://download.pytorch.org/whl/cu130 for Blackwell; cu118/cu126 for older GPUs), "
            "or build with TORCH_CUDA_ARCH_LIST set to it",
            **measured,
        )
    kernels = ", ".join(sorted({f"{d['capability']} -> {d['kernel']}" for d in devices}))
    return passed(f"kernels for every GPU: {kernels}", **measured)
