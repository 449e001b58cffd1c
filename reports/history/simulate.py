"""The step and drift finder's error rates on seeded synthetic histories
(``python -m detbench.reports.history.simulate``).

Each run's figure is the median of 10 blocks (4 % block-to-block noise) times the run's own offset (``noise``: the
run-to-run SD, log scale), as in ``tests/reports/test_history_steps.py``. A scenario is a kind of series (pure noise,
a step of a size after 20 of 30 runs, a drift per run over 30 runs) at a noise level; each is analysed by
:func:`detbench.reports.history.analysis.analyse` and counted: a step anywhere, a step at the right run (the first run
of the new level), within one run, a drift reported. docs/history.md quotes the committed output
(``docs/examples/history-simulation.json``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass

import numpy as np

from detbench.reports.history import analysis

BLOCKS = 10
BLOCK_NOISE = 0.04
RUNS = 30
STEP_AT = 20


@dataclass(frozen=True)
class Scenario:
    name: str
    noise: float  # run-to-run SD (log scale)
    step: float = 0.0  # relative move from run STEP_AT on (negative: slower)
    drift: float = 0.0  # relative move per run, every run


@dataclass
class Rates:
    scenario: Scenario
    series: int
    any_step: int = 0  # a step reported anywhere
    right_run: int = 0  # a step reported at STEP_AT (only for a step scenario)
    within_one: int = 0
    drift: int = 0  # a drift reported (and no step)
    drift_rate_median: float | None = None  # the median reported rate per run, over the series with a drift

    def row(self) -> dict[str, object]:
        s = self.scenario
        counts = {k: v for k, v in asdict(self).items() if k != "scenario"}
        return {"scenario": s.name, "noise": s.noise, "step_size": s.step, "drift_per_run": s.drift, **counts}


SCENARIOS = (
    Scenario("noise", 0.01), Scenario("noise", 0.03), Scenario("noise", 0.05),
    Scenario("step", 0.01, step=-0.03), Scenario("step", 0.01, step=-0.05), Scenario("step", 0.01, step=-0.10),
    Scenario("step", 0.03, step=-0.05), Scenario("step", 0.03, step=-0.10), Scenario("step", 0.03, step=-0.15),
    Scenario("step", 0.05, step=-0.10),
    Scenario("drift", 0.01, drift=-0.005), Scenario("drift", 0.03, drift=-0.005), Scenario("drift", 0.03, drift=-0.002),
)


def series(rng: np.random.Generator, scenario: Scenario, runs: int = RUNS) -> list[float]:
    """One synthetic history (images/s around 100), oldest first."""
    values = []
    for i in range(runs):
        level = 100.0 * (1.0 + scenario.step if scenario.step and i >= STEP_AT else 1.0)
        level *= (1.0 + scenario.drift) ** i
        blocks = level * np.exp(rng.normal(0.0, BLOCK_NOISE, BLOCKS))
        values.append(float(np.median(blocks)) * float(np.exp(rng.normal(0.0, scenario.noise))))
    return values


def run(scenario: Scenario, count: int, seed: int) -> Rates:
    rng = np.random.default_rng(seed)
    rates = Rates(scenario, count)
    drift_rates = []
    for _ in range(count):
        found = analysis.analyse(series(rng, scenario))
        indices = [s.index for s in found.steps]
        rates.any_step += bool(indices)
        rates.right_run += STEP_AT in indices
        rates.within_one += any(abs(i - STEP_AT) <= 1 for i in indices)
        if found.drifts and not indices:
            rates.drift += 1
            drift_rates.append(found.drifts[-1].rate)
    rates.drift_rate_median = float(np.median(drift_rates)) if drift_rates else None
    return rates


def table(results: list[Rates]) -> str:
    lines = ["| series | run-to-run noise | a step anywhere | at the right run | within one run | a drift (no step) |",
             "|---|---|---|---|---|---|"]
    for r in results:
        s = r.scenario
        what = ("noise alone" if s.name == "noise" else f"step {s.step:+.0%} after {STEP_AT} runs"
                if s.name == "step" else f"drift {s.drift:+.1%}/run")
        right = f"{r.right_run} / {r.series}" if s.name == "step" else "-"
        within = f"{r.within_one} / {r.series}" if s.name == "step" else "-"
        drift = f"{r.drift} / {r.series}" + (f" (median {r.drift_rate_median:+.2%}/run)" if r.drift_rate_median
                                             is not None and s.name == "drift" else "")
        lines.append(f"| {what} ({RUNS} runs) | {s.noise:.0%} | {r.any_step} / {r.series} | {right} | {within} | "
                     f"{drift} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m detbench.reports.history.simulate",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--series", type=int, default=1000, help="series per scenario (default 1000)")
    parser.add_argument("--seed", type=int, default=20261205)
    parser.add_argument("--json", default="", help="write the rates here as JSON")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    results = [run(s, args.series, args.seed + i) for i, s in enumerate(SCENARIOS)]
    print(table(results))
    print(f"{args.series} series per scenario, seed {args.seed}, {time.perf_counter() - started:.0f} s")
    if args.json:
        payload = {"series_per_scenario": args.series, "seed": args.seed, "runs": RUNS, "step_at": STEP_AT,
                   "blocks": BLOCKS, "block_noise": BLOCK_NOISE, "rates": [r.row() for r in results]}
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(payload, handle, indent=1)
            handle.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
