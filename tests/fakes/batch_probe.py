"""A fake batch-search probe: a planted OOM boundary, without a process or a GPU."""

from __future__ import annotations

from dataclasses import dataclass, field

from detbench.bench.core.schema import Cell, CellResult

GIB = 2**30


@dataclass
class FakeProbe:
    """Batches up to ``fits_up_to`` run ok (peak memory grows with the batch), larger ones are ``oom``;
    ``fail_at`` (batch -> status) plants a non-OOM failure. ``calls`` lists the batches probed, in order."""

    fits_up_to: int
    fail_at: dict[int, str] = field(default_factory=dict)
    bytes_per_image: int = GIB // 2
    calls: list[int] = field(default_factory=list)

    def __call__(self, cell: Cell) -> CellResult:
        batch = cell.batch_size
        self.calls.append(batch)
        if batch in self.fail_at:
            return CellResult(cell, status=self.fail_at[batch], reason=f"planted {self.fail_at[batch]} at {batch}")
        if batch > self.fits_up_to:
            return CellResult(cell, status="oom", reason="CUDA out of memory (fake)",
                              memory_requested_bytes=self.bytes_per_image)
        # throughput saturates with the batch, as a host-bound detector's does
        return CellResult(cell, status="ok", throughput_ips=100.0 * batch / (batch + 4),
                          peak_memory_bytes=GIB + batch * self.bytes_per_image)
