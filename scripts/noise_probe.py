"""Device probe: where does the between-process offset of host-bound detector cells come from?

Starts K fresh worker processes of the same software for one cell (set up by the suite's own CellSession:
built, BatchNorm and post-processing calibrated, warmed up), keeps them all alive, and alternates ~1 s timed
blocks between them round by round (rotated order, one worker on the GPU at a time). Each block also times
- the host canary (a fixed pure-Python loop: the CPU's single-thread speed for this process),
- a launch probe (2000 tiny in-place CUDA ops, wall time: torch's dispatch + launch cost on the host),
- a GPU-bound probe (the detector's backbone+FPN on the cell's batch, CUDA events: cuDNN's algorithm choice),
and the CPU the main thread is on. Conditions vary cudnn.benchmark and CPU placement (free, all workers on
the same two cores, each worker on its own two cores), so an offset can be attributed.

Usage on the GPU machine: ``python3 scripts/noise_probe.py study OUT_DIR [CONDITION ...]``; the worker side is
``noise_probe.py worker ...`` (started by the study). Prints a table per condition; writes OUT_DIR/noise-*.json.
``noise_probe.py table OUT_DIR`` prints the closing table again from those files (docs/ab.md quotes it).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
TAG = "@@ "
CONDITIONS: dict[str, dict[str, Any]] = {
    # name: cell model, precision, cudnn benchmark, placement ("free" | "same" | "own")
    "retina-free": {"model": "retinanet_resnet50_fpn", "precision": "fp32", "bench": True, "place": "free"},
    "retina-nobench": {"model": "retinanet_resnet50_fpn", "precision": "fp32", "bench": False, "place": "free"},
    "retina-same": {"model": "retinanet_resnet50_fpn", "precision": "fp32", "bench": True, "place": "same"},
    "retina-own": {"model": "retinanet_resnet50_fpn", "precision": "fp32", "bench": True, "place": "own"},
    "ssdlite-free": {"model": "ssdlite320_mobilenet_v3_large", "precision": "fp32", "bench": True, "place": "free"},
    "ssdlite-same": {"model": "ssdlite320_mobilenet_v3_large", "precision": "fp32", "bench": True, "place": "same"},
}
WORKERS = int(os.environ.get("PROBE_WORKERS", "6"))
ROUNDS = int(os.environ.get("PROBE_ROUNDS", "6"))
BLOCK_S = float(os.environ.get("PROBE_BLOCK_S", "1.0"))
METRICS = ("step_ms", "canary_ms", "launch_us", "backbone_ms")


# --- worker -----------------------------------------------------------------------------------------------


def _current_cpu() -> int:
    """The CPU this thread last ran on (field 39 of /proc/thread-self/stat)."""
    try:
        text = Path("/proc/thread-self/stat").read_text()
        return int(text.rsplit(")", 1)[1].split()[36])
    except (OSError, ValueError, IndexError):
        return -1


def _pin_all_threads(cpus: set[int]) -> None:
    for tid in os.listdir("/proc/self/task"):
        with contextlib.suppress(OSError):
            os.sched_setaffinity(int(tid), cpus)


def worker(model: str, precision: str, bench: bool) -> int:
    import torch

    from detbench.bench.core.options import RunOptions
    from detbench.bench.core.schema import Cell
    from detbench.bench.runtime.build import GroupShared
    from detbench.bench.runtime.session import CellSession

    device = torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")  # CPU: a dry run
    options = RunOptions(profile="probe", telemetry_hz=0, cudnn_benchmark=bench, count_flops=False)
    cell = Cell(model, "infer", "eager", precision, 8)
    began = time.perf_counter()
    session = CellSession(cell, options, device, shared=GroupShared())
    session.set_up()
    iterations = session.iterations_for(BLOCK_S, 3)
    prepared = session.prepared
    assert prepared is not None
    with torch.no_grad():
        images, _ = prepared.model.transform(prepared.inputs)
    backbone_input = images.tensors
    counter = torch.zeros(1, device=device)
    ready = {"pid": os.getpid(), "setup_s": round(time.perf_counter() - began, 2), "iterations": iterations,
             "hashseed": os.environ.get("PYTHONHASHSEED"), "postprocess": session.postprocess,
             "affinity": sorted(os.sched_getaffinity(0)), "backbone_input": list(backbone_input.shape),
             "cudnn_benchmark": torch.backends.cudnn.benchmark}
    print(TAG + json.dumps(ready), flush=True)
    for line in sys.stdin:
        words = line.split()
        if not words or words[0] == "quit":
            break
        if words[0] == "pin":
            _pin_all_threads({int(c) for c in words[1].split(",")})
            print(TAG + json.dumps({"pinned": sorted(os.sched_getaffinity(0))}), flush=True)
            continue
        cpu_before = _current_cpu()
        times = session.time_block(iterations, round_index=int(words[1]))
        block = session.blocks[-1]
        sync = torch.cuda.synchronize if device.type == "cuda" else (lambda _device: None)
        sync(device)
        t0 = time.perf_counter()
        for _ in range(2000):
            counter.add_(1.0)
        launch_us = (time.perf_counter() - t0) / 2000 * 1e6
        sync(device)
        with torch.no_grad(), torch.autocast(device.type, enabled=precision != "fp32", dtype=torch.bfloat16):
            prepared.model.backbone(backbone_input)
            sync(device)
            t0 = time.perf_counter()
            for _ in range(5):
                prepared.model.backbone(backbone_input)
            sync(device)  # GPU-bound: wall time after a sync is the GPU's time
        backbone_ms = (time.perf_counter() - t0) * 1000 / 5
        reply = {"step_ms": statistics.median(times), "canary_ms": block.host_canary_ms, "launch_us": launch_us,
                 "backbone_ms": backbone_ms, "iterations": len(times), "wall_s": block.wall_s,
                 "cpu_before": cpu_before, "cpu_after": _current_cpu()}
        print(TAG + json.dumps(reply), flush=True)
    return 0


# --- study ------------------------------------------------------------------------------------------------


class Worker:
    def __init__(self, index: int, condition: dict[str, Any], log: Path) -> None:
        self.index = index
        env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
        env.pop("PYTHONHASHSEED", None)  # each process its own hash seed, as users' processes have
        command = [sys.executable, __file__, "worker", condition["model"], condition["precision"],
                   "on" if condition["bench"] else "off"]
        self.log = open(log, "w")  # noqa: SIM115
        self.proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log,
                                     text=True, env=env)

    def ask(self, line: str | None) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        if line is not None:
            self.proc.stdin.write(line + "\n")
            self.proc.stdin.flush()
        while True:
            out = self.proc.stdout.readline()
            if not out:
                raise RuntimeError(f"worker {self.index} ended (see its log)")
            if out.startswith(TAG):
                return json.loads(out[len(TAG):])

    def close(self) -> None:
        try:
            assert self.proc.stdin is not None
            self.proc.stdin.write("quit\n")
            self.proc.stdin.flush()
            self.proc.wait(timeout=30)
        except Exception:  # noqa: BLE001
            self.proc.kill()
        self.log.close()


def _log(values: list[float]) -> list[float]:
    return [math.log(v) for v in values]


def components(by_worker: dict[int, list[float]]) -> dict[str, float]:
    """One-way random-effects split of log values: within-worker SD, between-worker SD, ICC, F-test p, range."""
    from scipy import stats

    groups = [_log(v) for v in by_worker.values() if len(v) >= 2]
    k = len(groups)
    n = statistics.mean(len(g) for g in groups)
    grand = statistics.mean(x for g in groups for x in g)
    means = [statistics.mean(g) for g in groups]
    msw = sum((x - m) ** 2 for g, m in zip(groups, means) for x in g) / sum(len(g) - 1 for g in groups)
    msb = sum(len(g) * (m - grand) ** 2 for g, m in zip(groups, means)) / (k - 1)
    between = max((msb - msw) / n, 0.0)
    medians = [statistics.median(v) for v in by_worker.values()]
    return {"within_sd": math.sqrt(msw), "between_sd": math.sqrt(between),
            "icc": between / (between + msw) if between + msw > 0 else 0.0,
            "p": float(stats.f_oneway(*groups).pvalue), "range": max(medians) / min(medians) - 1}


def study(out: Path, names: list[str]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    cpus = sorted(os.sched_getaffinity(0))
    summary = []
    for name in names:
        condition = CONDITIONS[name]
        began = time.perf_counter()
        logs = Path(os.environ.get("PROBE_LOGS", out))
        logs.mkdir(parents=True, exist_ok=True)
        workers = [Worker(i, condition, logs / f"{name}-w{i}.log") for i in range(WORKERS)]
        record: dict[str, Any] = {"condition": name, **condition, "workers": WORKERS, "rounds": ROUNDS,
                                  "block_s": BLOCK_S, "host_cpus": cpus, "ready": [], "blocks": []}
        try:
            record["ready"] = [w.ask(None) for w in workers]
            record["startup_s"] = round(time.perf_counter() - began, 1)
            if condition["place"] != "free":
                for w in workers:
                    pair = {cpus[2], cpus[3]} if condition["place"] == "same" else {cpus[2 + 2 * w.index],
                                                                                 cpus[3 + 2 * w.index]}
                    w.ask("pin " + ",".join(map(str, sorted(pair))))
            for r in range(ROUNDS):
                order = [(r + i) % WORKERS for i in range(WORKERS)]
                for i in order:
                    reply = workers[i].ask(f"block {r}")
                    record["blocks"].append({"worker": i, "round": r, **reply})
        finally:
            for w in workers:
                w.close()
        record["wall_s"] = round(time.perf_counter() - began, 1)
        record["split"] = {}
        for metric in METRICS:
            by_worker: dict[int, list[float]] = {}
            for b in record["blocks"]:
                by_worker.setdefault(b["worker"], []).append(b[metric])
            # the same with each block divided by its round's mean over workers: drift common to a round removed
            round_mean = {r: statistics.mean(b[metric] for b in record["blocks"] if b["round"] == r)
                          for r in range(ROUNDS)}
            normed: dict[int, list[float]] = {}
            for b in record["blocks"]:
                normed.setdefault(b["worker"], []).append(b[metric] / round_mean[b["round"]])
            record["split"][metric] = {"raw": components(by_worker), "round_normalised": components(normed),
                                       "worker_medians": {i: statistics.median(v) for i, v in by_worker.items()}}
        (out / f"noise-{name}.json").write_text(json.dumps(record, indent=1))
        summary.append(record)
        print(f"== {name}: start-up {record.get('startup_s')} s, wall {record['wall_s']} s", flush=True)
        for metric in METRICS:
            s = record["split"][metric]
            med = " ".join(f"{v:.3g}" for v in s["worker_medians"].values())
            raw, nrm = s["raw"], s["round_normalised"]
            print(f"  {metric:12s} workers [{med}]  range {raw['range']:.1%}  within {nrm['within_sd']:.2%}  "
                  f"between {nrm['between_sd']:.2%}  icc {nrm['icc']:.2f}  p {nrm['p']:.1e}", flush=True)
        cpus_seen = {b["worker"]: sorted({b["cpu_before"], b["cpu_after"]}) for b in record["blocks"]}
        print(f"  cpus seen per worker: {cpus_seen}", flush=True)
    print("\ncondition        metric        range   within  between  icc   p")
    for record in summary:
        for metric in METRICS:
            nrm = record["split"][metric]["round_normalised"]
            print(f"{record['condition']:16s} {metric:12s} {record['split'][metric]['raw']['range']:6.1%}  "
                  f"{nrm['within_sd']:6.2%}  {nrm['between_sd']:6.2%}  {nrm['icc']:4.2f}  {nrm['p']:.1e}")


def table(folder: Path) -> None:
    """The study's closing table again, from its noise-*.json files."""
    print("condition        metric        range   within  between  icc   p")
    for path in sorted(folder.glob("noise-*.json")):
        record = json.loads(path.read_text())
        for metric in METRICS:
            nrm = record["split"][metric]["round_normalised"]
            print(f"{record['condition']:16s} {metric:12s} {record['split'][metric]['raw']['range']:6.1%}  "
                  f"{nrm['within_sd']:6.2%}  {nrm['between_sd']:6.2%}  {nrm['icc']:4.2f}  {nrm['p']:.1e}")


if __name__ == "__main__":
    if sys.argv[1] == "table":
        table(Path(sys.argv[2]))
        sys.exit(0)
    if sys.argv[1] == "worker":
        sys.exit(worker(sys.argv[2], sys.argv[3], sys.argv[4] == "on"))
    study(Path(sys.argv[2]), sys.argv[3:] or list(CONDITIONS))
