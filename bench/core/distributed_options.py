"""How a multi-GPU cell is distributed: backend and DDP settings, one validated, JSON-able dataclass."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

BACKENDS = ("auto", "nccl", "gloo")  # auto: nccl where CUDA is available, gloo on the CPU


@dataclass(frozen=True)
class DistributedOptions:
    """DDP's own defaults unless changed (so the cell matches what a plain DDP job does); stated in results."""

    backend: str = "auto"
    bucket_cap_mb: float = 25.0  # DistributedDataParallel's default
    find_unused_parameters: bool = False  # True only for models whose loss skips parameters (costs a graph walk)
    gradient_as_bucket_view: bool = False
    time_allreduce: bool = True  # a comm hook marks each bucket's all-reduce (detbench.bench.measure.ddp_comm)

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"unknown backend {self.backend!r}; valid: {', '.join(BACKENDS)}")
        if not self.bucket_cap_mb > 0:
            raise ValueError(f"bucket_cap_mb must be > 0, got {self.bucket_cap_mb!r}")

    def resolve_backend(self, cuda_available: bool) -> str:
        if self.backend == "auto":
            return "nccl" if cuda_available else "gloo"
        if self.backend == "nccl" and not cuda_available:
            raise ValueError("backend 'nccl' needs CUDA GPUs; valid here: auto, gloo")
        return self.backend

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DistributedOptions:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})
