"""A fake ``detbench.bench.runtime.launch.run_group``: synthetic results with blocks, a call log, planted failures.

Used by the suite tests to check repeats, ordering, merging and resuming without starting a worker."""

from __future__ import annotations

from dataclasses import dataclass, field

from detbench.bench.core.schema import BlockRecord, Cell, CellResult, Measurement, SetupTimes


def measured(cell: Cell, median_ms: float, rounds: int = 3, iterations: int = 4, setup_s: float = 1.0) -> CellResult:
    """An ok result whose blocks all have ``median_ms`` (+0.1 ms per round) and whose times match them."""
    blocks = [BlockRecord(round=r, median_ms=median_ms + 0.1 * r, iterations=iterations, host_canary_ms=1.0,
                          start_offset_s=0.5 * r, wall_s=0.5) for r in range(rounds)]
    times = [b.median_ms for b in blocks for _ in range(iterations)]
    throughput = cell.batch_size * 1000.0 / median_ms
    return CellResult(cell, times_ms=times, throughput_ips=throughput, timer="perf-counter+sync", first_call_s=2.0,
                      setup=SetupTimes(total_s=setup_s),
                      measurement=Measurement(timer="perf-counter+sync", iterations=len(times), timed_s=0.5 * rounds,
                                              isolation="inline", rounds=rounds, blocks=blocks, setup_wall_s=setup_s,
                                              cell_wall_s=setup_s + 0.5 * rounds, overhead_s=setup_s))


@dataclass
class FakeLauncher:
    """Callable like ``run_group``; call ``n`` (0-based) measures every cell at ``median_ms(cell, n)``.

    ``fail``: ``{(cell id, call number): status}`` makes that call's result a failure of that status."""

    median_ms: dict[str, float] = field(default_factory=dict)
    fail: dict[tuple[str, int], str] = field(default_factory=dict)
    calls: list[list[str]] = field(default_factory=list)
    baselines_seen: list[list[str]] = field(default_factory=list)
    priors_seen: list[list[str]] = field(default_factory=list)  # per call: the cut cells it was asked to continue

    def __call__(self, cells: list[Cell], options: object, *, baselines: dict | None = None,
                 prior: dict | None = None, on_result: object = None) -> list[CellResult]:
        call = len(self.calls)
        self.calls.append([c.id for c in cells])
        self.priors_seen.append(sorted(prior or {}))
        self.baselines_seen.append(sorted(baselines or {}))
        out = []
        for cell in cells:
            status = self.fail.get((cell.id, call))
            if status:
                out.append(CellResult(cell, status=status, reason=f"planted {status} in call {call}"))
            else:
                out.append(measured(cell, self.median_ms.get(cell.model, 10.0) * (1 + 0.01 * call), setup_s=1.0 + call))
        return out
