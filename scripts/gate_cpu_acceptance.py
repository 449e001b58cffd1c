"""The A/B gate's acceptance runs on a small CPU machine (issue 33; docs/ab.md: "On the CPU").

Each run is one ``detbench-ab`` of four small CPU cells, both sides this interpreter, beside a neighbour process
that busy-loops a core 5 s on / 5 s off (scripts/busy_neighbour.py). Conditions, one command each:

    python scripts/gate_cpu_acceptance.py run OUT same --runs 10
    python scripts/gate_cpu_acceptance.py run OUT planted --runs 10
    python scripts/gate_cpu_acceptance.py table OUT --json docs/examples/gate-cpu/acceptance.json

``same``: the same software on both sides (nothing may be flagged). ``planted``: the candidate carries a relative
busy-wait slowdown (``DETBENCH_TEST_SLOWDOWN``: a fraction of the step's own time) of 10 % in one cell and 5 % in
another, in the same run. Each run writes OUT/CONDITION-K/ (ab.json, summary.md, the sides' run files and logs);
``table`` prints every run's verdicts and writes the summary docs/ab.md quotes (the process walls and exit codes
from OUT/driver.log, where the caller keeps ``run``'s output).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MATRIX = ["--models", "ssdlite320_mobilenet_v3_large,resnet50", "--modes", "infer", "--precisions", "fp32",
          "--batch-sizes", "1,2", "--image-size", "160x160"]
CELLS = ("ssdlite320_mobilenet_v3_large-infer-eager-fp32-bs1-gpu1-160x160",  # the four cells MATRIX gives
         "ssdlite320_mobilenet_v3_large-infer-eager-fp32-bs2-gpu1-160x160",
         "resnet50-infer-eager-fp32-bs1-gpu1-160x160",
         "resnet50-infer-eager-fp32-bs2-gpu1-160x160")
PLANTS = {CELLS[0]: 0.10, CELLS[2]: 0.05}  # ten % in SSDlite bs1, five % in ResNet-50 bs1
BUDGET_S = 275.0  # the process wall stays within WALL_LIMIT_S: up to 6 s past the budget measured at load 12-15
LOAD_EVERY_S = 10.0  # the host's 1-minute load average is sampled this often during a run (OUT/loads.jsonl)
WALL_LIMIT_S = 300  # a run is ended (SIGTERM) past this: the 5 minutes


def run(out: Path, condition: str, runs: int, budget_s: float, pairs: int, start: int) -> int:
    out.mkdir(parents=True, exist_ok=True)
    for k in range(start, start + runs):
        folder = out / f"{condition}-{k}"
        command = [sys.executable, "-m", "detbench.bench.tools.ab", "--out", str(folder), "--budget-s", f"{budget_s:g}",
                   "--pairs", str(pairs), "--pin-cpus", "none"]
        if condition == "planted":
            plant = ",".join(f"{cell}:{fraction:g}" for cell, fraction in PLANTS.items())
            command += ["--candidate-env", f"DETBENCH_TEST_SLOWDOWN={plant}"]
        command += ["--", *MATRIX]
        neighbour = subprocess.Popen([sys.executable, str(ROOT / "scripts" / "busy_neighbour.py"), "--on-s", "5",
                                      "--off-s", "5"])
        began = time.monotonic()
        proc = None
        try:
            with open(out / f"{condition}-{k}.log", "w") as log:
                proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
                                        env={**os.environ, "PYTHONPATH": str(ROOT)})
                loads = [os.getloadavg()[0]]
                code = None
                while code is None and time.monotonic() - began < WALL_LIMIT_S:
                    try:
                        code = proc.wait(timeout=min(LOAD_EVERY_S, max(0.1, WALL_LIMIT_S - (time.monotonic() - began))))
                    except subprocess.TimeoutExpired:
                        loads.append(os.getloadavg()[0])
                if code is None:
                    proc.terminate()
                    code = proc.wait(timeout=60)
        finally:
            if proc is not None and proc.poll() is None:  # this script was ended: so is the run (its sides with it)
                proc.terminate()
                proc.wait(timeout=60)
            neighbour.terminate()
            neighbour.wait(timeout=10)
        print(f"{condition}-{k}: exit {code}, {time.monotonic() - began:.0f} s", flush=True)
        with open(out / "loads.jsonl", "a") as handle:
            handle.write(json.dumps({"run": f"{condition}-{k}", "load_1min": [round(x, 2) for x in loads]}) + "\n")
    return 0


def process_walls(out: Path) -> dict[str, tuple[int, float]]:
    """Each run's exit code and process wall (start to exit, the sides' ending included), from the lines ``run``
    printed (``same-1: exit 0, 257 s``) and the caller kept in OUT/driver.log."""
    log = out / "driver.log"
    found = {}
    for line in log.read_text().splitlines() if log.is_file() else []:
        name, _, rest = line.partition(": exit ")
        code, _, wall = rest.partition(", ")
        if code.strip().lstrip("-").isdigit() and wall.endswith(" s"):
            found[name.strip()] = (int(code), float(wall[:-2]))
    return found


def host_loads(out: Path) -> dict[str, list[float]]:
    """Each run's samples of the host's 1-minute load average (``run`` writes OUT/loads.jsonl)."""
    path = out / "loads.jsonl"
    lines = path.read_text().splitlines() if path.is_file() else []
    return {entry["run"]: entry["load_1min"] for entry in map(json.loads, filter(None, lines))}


def table(outs: list[Path], json_path: Path | None) -> int:
    rows = []
    for out in outs:
        walls = process_walls(out)
        loads = host_loads(out)
        for ab_json in sorted(out.glob("*/ab.json")):
            data = json.loads(ab_json.read_text())
            exit_code, process_wall = walls.get(ab_json.parent.name, (None, None))
            planted = _plants(data)
            verdicts = {cid: v for cid, v in data["verdicts"].items()}
            rows.append({
                "run": ab_json.parent.name, "exit": exit_code, "process_wall_s": process_wall,
                "pairs": data["pairs"], "rounds_per_pair": data["rounds_per_pair"],
                "wall_s": data["wall_s"], "setup_s": data["setup_s"], "timed_s": data["timed_s"],
                "duty_cycle": data["duty_cycle"], "cut": data.get("cut", False), "plants": planted,
                "block_s": data["block_s"], "seed": data.get("seed"),
                "load_1min": _spread(loads.get(ab_json.parent.name, [])),
                "log_ratios": {cid: [[round(math.log(r["base_ms"] / r["cand_ms"]), 5) for r in rounds]
                                     for rounds in cell["blocks"].values()] for cid, cell in data["cells"].items()},
                "cells": {cid: {"verdict": v["verdict"], "ratio": _round(v.get("ratio")), "low": _round(v.get("low")),
                                "high": _round(v.get("high")), "detectable": _round(v.get("detectable")),
                                "adjusted_p": _round(v.get("adjusted_p"))} for cid, v in verdicts.items()},
            })
    for row in rows:
        flags = {cid: c["verdict"] for cid, c in row["cells"].items() if c["verdict"] in ("regression", "improvement")}
        print(f"{row['run']:12s} {row['pairs']} pairs x {row['rounds_per_pair']:3d} rounds, "
              f"wall {row['wall_s']:5.0f} s "
              f"(fixed {row['setup_s']:.0f} s, timed {row['timed_s']:.0f} s, duty {row['duty_cycle']:.0%}) "
              f"flagged: {flags or 'none'}")
        for cid, c in sorted(row["cells"].items()):
            plant = row["plants"].get(cid)
            print(f"    {cid:66s} {c['verdict']:12s} {c['ratio']} ({c['low']}-{c['high']}) detectable "
                  f"{c['detectable']}{f'  planted {plant:.0%}' if plant else ''}")
    summary = _summary(rows)
    print(json.dumps(summary, indent=1))
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps({"summary": summary, "runs": rows}, indent=1) + "\n")
    return 0


def _summary(rows: list[dict]) -> dict:
    out: dict = {}
    for condition in ("same", "planted"):
        runs = [r for r in rows if r["run"].startswith(condition + "-")]
        if not runs:
            continue
        entry = {"runs": len(runs),
                 "runs_flagging_an_unplanted_cell": sum(
                     any(c["verdict"] in ("regression", "improvement") for cid, c in r["cells"].items()
                         if cid not in r["plants"]) for r in runs),
                 "process_wall_s_max": max((r["process_wall_s"] or 0.0) for r in runs),
                 "fixed_s_median": sorted(r["setup_s"] for r in runs)[len(runs) // 2],
                 "duty_cycle_median": sorted(r["duty_cycle"] for r in runs)[len(runs) // 2]}
        loads = [r["load_1min"] for r in runs if r.get("load_1min")]
        if loads:
            entry["load_1min"] = {"min": min(x["min"] for x in loads), "median_of_medians": sorted(
                x["median"] for x in loads)[len(loads) // 2], "max": max(x["max"] for x in loads)}
        plants = sorted({(cid, f) for r in runs for cid, f in r["plants"].items()})
        for cid, fraction in plants:
            entry[f"flagged {cid} (planted {fraction:.0%})"] = sum(
                r["cells"].get(cid, {}).get("verdict") == "regression" for r in runs)
        cells = sorted({cid for r in runs for cid in r["cells"]})
        entry["detectable_median"] = {cid: sorted(r["cells"][cid]["detectable"] or 1.0 for r in runs
                                                  if cid in r["cells"])[len(runs) // 2] for cid in cells}
        out[condition] = entry
    return out


def _spread(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    ordered = sorted(values)
    return {"min": ordered[0], "median": ordered[len(ordered) // 2], "max": ordered[-1], "samples": len(ordered)}


def _plants(data: dict) -> dict[str, float]:
    for side in data.get("sides", []):
        for name, value in side.get("env", []):
            if name == "DETBENCH_TEST_SLOWDOWN":
                return {part.rpartition(":")[0]: float(part.rpartition(":")[2]) for part in value.split(",")}
    return {}


def _round(value: float | None) -> float | None:
    return None if value is None else round(float(value), 4)


def main(argv: list[str] | None = None) -> int:
    # ended (SIGTERM): the run under way and its neighbour are ended on the way out (run's finally)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    go = sub.add_parser("run")
    go.add_argument("out", type=Path)
    go.add_argument("condition", choices=("same", "planted"))
    go.add_argument("--runs", type=int, default=10)
    go.add_argument("--start", type=int, default=1)
    go.add_argument("--budget-s", type=float, default=BUDGET_S)
    go.add_argument("--pairs", type=int, default=0, help="0: detbench-ab sizes them (8 on 2 cores)")
    show = sub.add_parser("table")
    show.add_argument("outs", type=Path, nargs="+")
    show.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    if args.command == "run":
        return run(args.out, args.condition, args.runs, args.budget_s, args.pairs, args.start)
    return table(args.outs, args.json)


if __name__ == "__main__":
    sys.exit(main())
