"""Serving study: how many queries per second one detector sustains under a p99 latency bound, on each runtime and
batching (MLPerf LoadGen's SingleStream, Server and Offline scenarios against a server loop in its own process).

    detbench serve --model ssdlite320_mobilenet_v3_large --image-size 224x224 --runtimes eager,onnxruntime \\
        --scenarios single-stream,server --p99-bound-ms 100 --output serve.json

For each runtime and each --max-batch, one server process (detbench.bench.runtime.serve_loop) builds the model with
random weights and calibrated post-processing and serves it; LoadGen, inside it, times every query from its scheduled
arrival. The Server scenario searches the Poisson arrival rate (detbench.bench.core.serving.RateSearch). Each scenario
is a cell of an ordinary run file (``--output``), which detbench report and detbench history read.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from dataclasses import asdict
from pathlib import Path
from typing import Any

from detbench.bench.core import matrix
from detbench.bench.core.config import argument_spec, table_option
from detbench.bench.core.options import OptionError, import_model_modules
from detbench.bench.core.record import RunRecord
from detbench.bench.core.schema import SCENARIOS, CellResult, DeployInfo, ServeTrial
from detbench.bench.core.serving import (
    DEFAULT_QUERIES,
    MAX_TRIAL_S,
    SEARCH_TRIALS,
    ServerFacts,
    ServeSettings,
    TrialReply,
    TrialRequest,
    serve_configuration,
    serving_advice,
)
from detbench.bench.runtime.serve_loop import REPLY
from detbench.envcheck.isolate import Supervisor, python_module, reap, tail

SETUP_TIMEOUT_S = 900.0  # build, calibrate and export (ONNX export of an R-CNN on 2 cores takes minutes)
TRIAL_SLACK_S = 60.0  # a trial may take this much beyond 3x its planned duration before it is called hung


class ServerError(RuntimeError):
    """The server process hung (``status`` timeout) or died (error); the message carries its output's tail."""

    def __init__(self, status: str, message: str) -> None:
        super().__init__(message)
        self.status = status


class ServerProcess:
    """``python -m detbench.bench.runtime.serve_loop`` under the one supervisor (envcheck.isolate.Supervisor: a
    session of its own, its whole tree killed on a timeout or a signal): commands in, replies out. Its stderr is
    kept (the last lines go into a failure's message)."""

    def __init__(self, log_dir: Path) -> None:
        self.supervisor = Supervisor(python_module("detbench.bench.runtime.serve_loop", str(log_dir)),
                                     log_dir / "server-stderr.txt", stdin_pipe=True, stdout_pipe=True).start()
        self._replies: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._noise: deque[str] = deque(maxlen=20)
        threading.Thread(target=self._read, daemon=True).start()

    @property
    def _proc(self) -> subprocess.Popen[Any]:
        assert self.supervisor.proc is not None
        return self.supervisor.proc

    def _read(self) -> None:
        with contextlib.suppress(OSError, ValueError):  # the pipe closed under it: the server was ended
            for line in self._proc.stdout or ():
                if line.startswith(REPLY):
                    self._replies.put(json.loads(line[len(REPLY):]))
                else:
                    self._noise.append(line.rstrip())
        self._replies.put(None)  # the process closed its output: it ended

    def call(self, command: dict[str, Any], timeout_s: float) -> dict[str, Any]:
        try:
            assert self._proc.stdin is not None
            self._proc.stdin.write(json.dumps(command) + "\n")
            self._proc.stdin.flush()
        except BrokenPipeError:
            raise ServerError("error", f"the server process had ended{self._tail()}") from None
        try:
            answer = self._replies.get(timeout=timeout_s)
        except queue.Empty:
            self.kill()
            raise ServerError("timeout", f"no reply within {timeout_s:.0f} s; the server process was killed"
                                           f"{self._tail()}") from None
        if answer is None:
            code = reap(self._proc)
            raise ServerError("error", f"the server process ended (exit status {code}){self._tail()}")
        if answer.get("reply") == "error":
            raise ServerError("error", str(answer.get("error")))
        return answer

    def _tail(self) -> str:
        lines = tail(self.supervisor.output).splitlines()[-5:] + list(self._noise)[-3:]
        return ("; its last output: " + " | ".join(lines)) if lines else ""

    def kill(self) -> None:
        self.supervisor.kill()

    def close(self) -> None:
        """Ask it to end; kill it if it does not within 30 s."""
        if self._proc.poll() is None:
            with contextlib.suppress(BrokenPipeError, OSError, ValueError):
                assert self._proc.stdin is not None
                self._proc.stdin.write(json.dumps({"command": "end"}) + "\n")
                self._proc.stdin.close()
            if reap(self._proc, 30.0) is None:
                self.kill()
        self.kill()  # what it started dies with it
        self.supervisor.finish()


class SupervisedServer:
    """One configuration's server process, supervised: a trial that hangs or kills it is recorded (timeout, error)
    and a fresh process is set up for the next trial."""

    def __init__(self, spec: dict[str, Any], log_dir: Path, setup_timeout_s: float = SETUP_TIMEOUT_S,
                 trial_timeout_s: float | None = None) -> None:
        self.spec, self.log_dir, self.setup_timeout_s = spec, log_dir, setup_timeout_s
        self.trial_timeout_s = trial_timeout_s  # None: trial_timeout_s() of each trial
        self.process: ServerProcess | None = None
        self.facts: ServerFacts | None = None
        self.trials = 0
        self.starts = 0

    def start(self) -> ServerFacts:
        self.starts += 1
        self.process = ServerProcess(self.log_dir / f"server-{self.starts}")
        answer = self.process.call({"command": "setup", "spec": self.spec}, self.setup_timeout_s)
        facts = dict(answer["facts"])
        if isinstance(facts.get("deploy"), dict):
            facts["deploy"] = _deploy_info(facts["deploy"])
        self.facts = ServerFacts(**facts)
        return self.facts

    def run(self, request: TrialRequest) -> TrialReply:
        self.trials += 1
        assert self.facts is not None
        try:
            if self.process is None:
                self.start()
            assert self.process is not None
            answer = self.process.call({"command": "trial", "request": request.to_dict(),
                                        "name": f"trial-{self.trials:02d}-{request.scenario}"},
                                       self.trial_timeout_s or trial_timeout_s(request, self.facts.step_ms))
        except ServerError as failure:
            if self.process is not None:
                self.process.kill()
                self.process.close()
            self.process = None  # the next trial starts a fresh server
            return TrialReply(ServeTrial(failure.status, target_qps=request.target_qps, reason=str(failure)[:2000]))
        return TrialReply(ServeTrial(**answer["trial"]), [float(t) for t in answer["latencies_ms"]])

    def close(self) -> None:
        if self.process is not None:
            self.process.close()
            self.process = None

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()


def trial_timeout_s(request: TrialRequest, step_ms: float) -> float:
    """3x the trial's planned duration (its queries at the offered rate, or one service time each) plus slack."""
    planned = request.queries / request.target_qps if request.target_qps else request.queries * step_ms / 1000.0
    if request.max_duration_s:
        planned = min(planned, request.max_duration_s)
    return 3 * planned + TRIAL_SLACK_S


def _deploy_info(data: dict[str, Any]) -> DeployInfo:
    from detbench.bench.core.schema import Parity  # noqa: PLC0415

    data = dict(data)
    if isinstance(data.get("parity"), dict):
        data["parity"] = Parity(**data["parity"])
    return DeployInfo(**data)


# --- the command line ------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="detbench serve", description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n".join(__doc__.splitlines()[2:]))
    parser.add_argument("--model", required=True, help="a registered detector (detbench run --list-models)")
    parser.add_argument("--image-size", help="HEIGHTxWIDTH the detector resizes to (default: its native size)")
    parser.add_argument("--runtimes", help="comma-separated deployment runtimes: eager, torchscript, onnxruntime, "
                                           "aot-inductor (default eager); a server process each")
    parser.add_argument("--scenarios", default="single-stream,server",
                        help=f"comma-separated: {', '.join(SCENARIOS)} (default single-stream,server)")
    parser.add_argument("--p99-bound-ms", type=float, default=100.0,
                        help="the Server scenario's bound on the 99th-percentile latency (default 100)")
    parser.add_argument("--queries", type=int, default=DEFAULT_QUERIES,
                        help=f"queries per LoadGen trial (default {DEFAULT_QUERIES}: the p99 is the 5th slowest)")
    parser.add_argument("--max-batch", default="1",
                        help="comma-separated largest dynamic batches, a server each (default 1: no batching)")
    parser.add_argument("--batch-wait-ms", type=float, default=None,
                        help="how long a batch's first query waits for more (default 0; with --max-batch > 1: 5)")
    parser.add_argument("--search-trials", type=int, default=SEARCH_TRIALS,
                        help=f"the Server rate search's most trials per cell (default {SEARCH_TRIALS})")
    parser.add_argument("--max-trial-s", type=float, default=MAX_TRIAL_S,
                        help=f"LoadGen ends a trial after this many seconds even short of --queries (a low rate's "
                             f"trial; default {MAX_TRIAL_S:g})")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads in the server (default: "
                                                                   "torch's)")
    parser.add_argument("--target-candidates", type=int, default=None,
                        help="candidates per image entering NMS (post-processing calibration; default: the "
                             "detector kind's, 1000 dense / 300 R-CNN)")
    parser.add_argument("--plant-slowdown", type=float, default=0.0,
                        help="self-check: busy-wait this fraction of every model call after it (0.5 = 50 %% slower)")
    parser.add_argument("--seed", **argument_spec(table_option("--seed")))
    parser.add_argument("--model-modules", **argument_spec(table_option("--model-modules")))
    parser.add_argument("--output", help="write the run file (pytest-benchmark JSON, one cell per scenario) here")
    parser.add_argument("--log-dir", help="keep LoadGen's logs here (default: a temporary folder, removed)")
    parser.add_argument("--setup-timeout", type=float, default=SETUP_TIMEOUT_S,
                        help=f"seconds the server may take to build, calibrate and export (default "
                             f"{SETUP_TIMEOUT_S:g})")
    parser.add_argument("--trial-timeout", type=float, default=None,
                        help=f"seconds a trial may run before its server is called hung, killed and replaced (default: "
                             f"3x the trial's planned duration + {TRIAL_SLACK_S:g})")
    return parser


def resolve(args: argparse.Namespace) -> tuple[list[str], list[ServeSettings], tuple[int, int] | None]:
    """The runtimes, one ServeSettings per --max-batch, and the image size; OptionError (one line) on bad input."""
    runtimes = list(matrix.parse_runtimes(args.runtimes) or ("eager",))
    batches = []
    for part in matrix.parse_csv(args.max_batch) or ("1",):
        if not part.isdecimal() or int(part) < 1:
            raise OptionError(f"bad --max-batch {part!r}; valid: positive integers, e.g. 1,4")
        batches.append(int(part))
    scenarios = matrix.parse_csv(args.scenarios) or ()
    image_size = matrix.parse_image_size(args.image_size)
    settings = []
    if args.batch_wait_ms is not None and max(batches) == 1:
        ServeSettings(batch_wait_ms=args.batch_wait_ms)  # refused there, in its words
    for batch in dict.fromkeys(batches):
        wait = args.batch_wait_ms if args.batch_wait_ms is not None else 5.0
        settings.append(ServeSettings(tuple(scenarios), args.p99_bound_ms, args.queries, batch,
                                      wait if batch > 1 else 0.0, args.search_trials,
                                      max_trial_s=args.max_trial_s, plant_slowdown=args.plant_slowdown))
    for name, value in (("--threads", args.threads), ("--trial-timeout", args.trial_timeout),
                        ("--setup-timeout", args.setup_timeout)):
        if value is not None and not value > 0:
            raise OptionError(f"bad {name} {value}; valid: a positive number")
    import_model_modules(tuple(matrix.parse_csv(args.model_modules) or ()))
    from detbench.bench.models import get_model  # noqa: PLC0415 - imports torch: only once the cheap checks passed

    if not get_model(args.model).is_detector:
        raise OptionError(f"{args.model} is not a detector; the serving study serves detectors")
    return runtimes, settings, image_size


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if threading.current_thread() is threading.main_thread():  # SIGTERM ends the study as Ctrl-C does
        signal.signal(signal.SIGTERM, _interrupt)
    try:
        runtimes, all_settings, image_size = resolve(args)
    except (OptionError, ValueError) as exc:
        parser.error(str(exc))
    log_root = Path(args.log_dir) if args.log_dir else Path(tempfile.mkdtemp(prefix="detbench-serve-"))
    results: list[CellResult] = []
    try:
        for runtime in runtimes:
            for settings in all_settings:
                results.extend(serve_one(args, runtime, settings, image_size, log_root))
                if args.output:
                    write_run(args.output, results, args, all_settings)
    finally:
        if not args.log_dir:
            shutil.rmtree(log_root, ignore_errors=True)
    print_table(results)
    return 0 if all(r.status == "ok" for r in results) else 1


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def serve_one(args: argparse.Namespace, runtime: str, settings: ServeSettings, image_size: tuple[int, int] | None,
              log_root: Path) -> list[CellResult]:
    """One runtime and batching: a supervised server, every scenario; a server that cannot be set up gives its
    cells as errors (the study goes on with the next configuration)."""
    spec = {"model": args.model, "runtime": runtime, "image_size": image_size, "max_batch": settings.max_batch,
            "batch_wait_ms": settings.batch_wait_ms, "plant_slowdown": settings.plant_slowdown, "seed": args.seed,
            "threads": args.threads, "model_modules": list(matrix.parse_csv(args.model_modules) or ()),
            "target_candidates": args.target_candidates}
    name = f"{args.model}-{runtime}-batch{settings.max_batch}"
    print(f"{name}: setting the server up ({runtime}, max batch {settings.max_batch})", flush=True)
    server = SupervisedServer(spec, log_root / name, args.setup_timeout, args.trial_timeout)
    began = time.perf_counter()
    try:
        facts = server.start()
    except BaseException as failure:
        server.kill()
        server.close()
        if not isinstance(failure, ServerError):
            raise
        status = "not-supported" if "NotSupportedError" in str(failure) else failure.status
        return [CellResult(settings.cell(args.model, runtime, image_size, s), status=status,
                           reason=str(failure)[:2000]) for s in settings.scenarios]
    print(f"  ready in {time.perf_counter() - began:.1f} s; one query alone {facts.step_ms:.2f} ms", flush=True)
    try:
        cells = serve_configuration(settings, args.model, runtime, image_size, facts, server.run,
                                    lambda line: print(line, flush=True))
    except BaseException:  # Ctrl-C, SIGTERM: the server (in a session of its own) goes with this process
        server.kill()
        raise
    finally:
        server.close()
    for cell in cells:
        if cell.serve is not None and server.starts > 1:
            cell.serve.notes["server_restarts"] = str(server.starts - 1)
    return cells


def write_run(path: str, results: list[CellResult], args: argparse.Namespace,
              all_settings: list[ServeSettings]) -> None:
    from detbench.bench.core.journal import new_run_id  # noqa: PLC0415
    from detbench.envcheck.fingerprint import collect  # noqa: PLC0415

    options = {"study": "serve", "model": args.model, "image_size": args.image_size, "runtimes": args.runtimes,
               "seed": args.seed, "threads": args.threads, "target_candidates": args.target_candidates,
               "settings": [asdict(s) for s in all_settings]}
    RunRecord(results, options, collect(), new_run_id(), "detbench.bench.tools.serve", {"study": "serve"}).write(path)


def print_table(results: list[CellResult]) -> None:
    print(f"\n{'cell':78} {'status':8} {'p50 ms':>8} {'p99 ms':>8} {'queries/s':>10}")
    for result in results:
        serve = result.serve
        rate = (serve.sustainable_qps if serve and serve.scenario == "server" else result.throughput_ips) or 0.0
        latency = result.latency
        p50 = f"{latency.median_ms:8.2f}" if latency else f"{'-':>8}"
        p99 = f"{latency.p99_ms:8.2f}" if latency else f"{'-':>8}"
        print(f"{result.cell.id:78} {result.status:8} {p50} {p99} {rate:10.2f}")
        if result.status != "ok" and result.reason:
            print(f"  {result.reason[:300]}")
    for advice in serving_advice(results):
        print(f"\n{advice.line}" + (f"\n  others: {'; '.join(advice.others)}" if advice.others else ""))


if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError):
        sys.exit(main())
