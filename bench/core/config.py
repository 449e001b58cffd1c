"""Every option of a benchmark run, in one table, turned into one frozen configuration in one place.

:data:`OPTION_TABLE` lists each option once (name, type, default, help); the pytest plugin and ``detbench-ab``
both build their command lines from it, and :func:`resolve` turns the parsed values into a :class:`RunConfig`:
validated (one :class:`~detbench.bench.core.options.OptionError` line naming the valid choices), with the defaults that
depend on the device (isolation, rounds, block length, warm-up) taken for the device the run has.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from detbench.bench.core import matrix
from detbench.bench.core.options import CELL_TIMEOUT_S, ISOLATION_ALIASES, ISOLATIONS, OptionError, RunOptions
from detbench.bench.core.schema import COMPILE_ALIASES, COMPILE_MODES, MEMORY_FORMATS, MODES, PRECISIONS, Cell

# A CPU rank (gloo, no CUDA) holds torch itself (~0.4 GiB resident) and a whole model: a ResNet-50-FPN detector's
# weights, gradients, optimizer state and activations at benchmark sizes come to ~1.5 GiB more.
RANK_MEMORY_BYTES = 2 * 1024**3


@dataclass(frozen=True)
class Option:
    """One command-line option of a run. ``kind``: str, int, float, flag (on when given) or append (repeatable).
    ``default`` is the value when not given (None: decided by :func:`resolve`, per device where it says so)."""

    name: str
    help: str
    kind: str = "str"
    default: Any = None
    metavar: str | None = None
    gate: bool = True  # also an option of detbench-ab's long-lived sides (the matrix a gate runs)

    @property
    def dest(self) -> str:
        return self.name.lstrip("-").replace("-", "_")


OPTION_TABLE: tuple[Option, ...] = (
    Option("--profile", "matrix profile: auto, smoke, quick, full, tune, deploy (auto = smoke without CUDA, quick with "
                        "it)", default="auto"),
    Option("--models", "comma-separated model names (only these; see --list-models)"),
    Option("--modes", "comma-separated: infer,train (replaces the profile's modes)"),
    Option("--precisions", "comma-separated: fp32,amp-fp16,amp-bf16"),
    Option("--compile", "comma-separated compile modes: eager, default, reduce-overhead, max-autotune, "
                        "max-autotune-no-cudagraphs, compiled (= --compile-mode's mode), both (= eager,compiled); "
                        "default: the profile's choice"),
    Option("--compile-mode", "the torch.compile mode --compile compiled stands for (default 'default')",
           default="default"),
    Option("--memory-format", "comma-separated: contiguous,channels_last (channels_last: convolutional models only; "
                              "default: the profile's choice)"),
    Option("--runtimes", "comma-separated deployment runtimes: eager, torchscript, onnxruntime, aot-inductor "
                         "(inference cells without torch.compile; default: the profile's choice, eager)"),
    Option("--cudnn-benchmark", "torch.backends.cudnn.benchmark: on (default) or off", default="on"),
    Option("--batch-sizes", "comma-separated positive integers or max (the largest batch that fits, searched), "
                            "e.g. 1,8,max"),
    Option("--image-size", "HEIGHTxWIDTH for every cell, e.g. 480x640"),
    Option("--weights", "local state dict for a model (repeatable); default random init, never downloads",
           kind="append", metavar="NAME=PATH"),
    Option("--gpus", "comma-separated GPU counts, e.g. 1,2,4 (default 1; the quick profile adds every visible "
                     "count on a multi-GPU machine; without CUDA, that many CPU ranks over gloo: at most one per "
                     f"core and per {RANK_MEMORY_BYTES // 1024**3} GiB of available memory)", gate=False),
    Option("--isolation", "model (a worker per model group, variants interleaved; default on GPU), cell (a process "
                          "per cell) or inline (this process; default on CPU)", gate=False),
    Option("--rounds", "interleaved rounds per group (default 4 on GPU, 3 on CPU)", kind="int", gate=False),
    Option("--block-s", "seconds per timed block (default 0.5 on GPU, 0.1 on CPU)", kind="float"),
    Option("--repeats", "measure every cell N separate times at different moments of the run (the whole matrix "
                        "again per repeat, order rotated); the comparison then judges by between-repeat spread",
           kind="int", default=1, gate=False),
    Option("--cell-timeout", f"seconds a worker may go without progress before it is killed (the cell is recorded "
                             f"as timeout); default {CELL_TIMEOUT_S:g}", kind="float", default=CELL_TIMEOUT_S),
    Option("--telemetry-hz", "NVML sampling rate; 0 disables (default 50)", kind="float", default=50.0),
    Option("--optimizer", "training optimizer: sgd (momentum 0.9) or adamw", default="sgd"),
    Option("--seed", "seed for weights and synthetic inputs (0..2**64-1)", kind="int", default=0),
    Option("--model-modules", "comma-separated modules to import that register extra models "
                              "(default: $DETBENCH_MODEL_MODULES)"),
    Option("--detbench-journal", "JSONL journal of finished cells (default: next to --benchmark-json, else "
                                 ".detbench/journal-<time>.jsonl)", gate=False),
    Option("--detbench-resume", "journal of an interrupted run with the same options: its finished cells and "
                                "repeats are taken as they are, the rest is measured; a journal of other measurement "
                                "options or another environment is refused", metavar="JOURNAL", gate=False),
    Option("--detbench-strict", "fail (not xfail) oom/error/timeout cells", kind="flag", default=False, gate=False),
    Option("--list-models", "print the registered models and exit", kind="flag", default=False, gate=False),
)


def option_defaults() -> dict[str, Any]:
    """dest -> default for every option (what a value is when not given)."""
    return {o.dest: ([] if o.kind == "append" else o.default) for o in OPTION_TABLE}


def add_to_argparse(parser: Any, *, gate_only: bool = False) -> None:
    """Add the table's options to an ``argparse`` parser (pytest's option group takes the same calls)."""
    for option in OPTION_TABLE:
        if gate_only and not option.gate:
            continue
        parser.add_argument(option.name, **argument_spec(option))


def argument_spec(option: Option) -> dict[str, Any]:
    """The ``add_argument`` keywords of one option."""
    spec: dict[str, Any] = {"help": option.help, "dest": option.dest}
    if option.kind == "flag":
        spec.update(action="store_true", default=False)
    elif option.kind == "append":
        spec.update(action="append", default=[], metavar=option.metavar)
    else:
        converters: dict[str, Callable[[str], Any]] = {"int": int, "float": float, "str": str}
        spec.update(type=converters[option.kind], default=option.default)
        if option.metavar:
            spec["metavar"] = option.metavar
    return spec


# --- one cell, as the studies take it --------------------------------------------------------------------------

def table_option(name: str) -> Option:
    return next(o for o in OPTION_TABLE if o.name == name)


def add_cell_arguments(parser: Any, *, model_required: bool = True, measuring: bool = False) -> None:
    """The flags of one cell for a study (``detbench.bench.tools.fidelity``, ``trace``, a multi-GPU request): the
    matrix's axes in the singular, with the matrix's defaults (eager FP32 inference, batch 1, contiguous, the model's
    own image size). ``measuring`` adds the timing knobs (``--rounds``, ``--block-s``, ``--telemetry-hz``) with the
    option table's defaults; :func:`cell_from` turns the parsed values into a :class:`Cell`."""
    parser.add_argument("--model", required=model_required, default=None,
                        help="the cell's model, a registry name (pytest bench/ --list-models lists them)")
    parser.add_argument("--mode", default=MODES[0], choices=MODES)
    parser.add_argument("--compile", default="eager", choices=(*COMPILE_MODES, *COMPILE_ALIASES),
                        help="eager or a torch.compile mode (compiled = default)")
    parser.add_argument("--precision", default=PRECISIONS[0], choices=PRECISIONS)
    parser.add_argument("--memory-format", default=MEMORY_FORMATS[0], choices=MEMORY_FORMATS)
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--image-size", default=None, help="HEIGHTxWIDTH (default: the model's native size)")
    parser.add_argument("--model-modules", **argument_spec(table_option("--model-modules")))
    if measuring:
        for name in ("--rounds", "--block-s", "--telemetry-hz"):
            parser.add_argument(name, **argument_spec(table_option(name)))


def cell_from(values: Any, gpus: int = 1) -> Cell:
    """The :class:`Cell` that :func:`add_cell_arguments`' values name; :class:`OptionError` (one line) when the
    values do not make one."""
    try:
        return Cell(values.model, values.mode, values.compile, values.precision, values.batch_size, gpus,
                    _parsed("--image-size", matrix.parse_image_size, values.image_size),
                    memory_format=values.memory_format)
    except OptionError:
        raise
    except ValueError as exc:
        raise OptionError(str(exc)) from None


@dataclass(frozen=True)
class RunConfig:
    """A run's fully resolved configuration: which cells (profile + filters) and how (options)."""

    profile: str
    filters: Any  # detbench.bench.core.matrix.MatrixFilters
    options: RunOptions
    strict: bool = False
    journal: str | None = None
    resume: str | None = None
    notes: tuple[str, ...] = ()  # options that take no effect as given: said once at the start (stderr)


def resolve(values: Mapping[str, Any], *, cuda_available: bool, known_models: list[str],
            cpu_host: CpuHost | None = None, local_files: bool = True) -> RunConfig:
    """The one place that turns option values (``dest`` -> value, as parsed) into a validated RunConfig; defaults
    that depend on the device are taken for ``cuda_available``; without CUDA, ``--gpus`` is bounded by what
    ``cpu_host`` (default: this machine) can hold; ``local_files`` checks that --weights files exist here (not for
    a coordinator whose sides read their own folders). Raises :class:`OptionError` (one line)."""
    v = {**option_defaults(), **{k: val for k, val in values.items() if val is not None}}
    _refuse_empty(v)
    filters = matrix.MatrixFilters(
        models=matrix.parse_csv(v["models"]), modes=matrix.parse_csv(v["modes"]),
        precisions=matrix.parse_csv(v["precisions"]),
        compile=_parsed("--compile", matrix.parse_compile, v["compile"], v["compile_mode"]),
        batch_sizes=_parsed("--batch-sizes", matrix.parse_batch_sizes, v["batch_sizes"]),
        image_size=_parsed("--image-size", matrix.parse_image_size, v["image_size"]),
        gpus=_parsed("--gpus", matrix.parse_gpus, v["gpus"]),
        memory_formats=matrix.parse_memory_formats(v["memory_format"]), runtimes=matrix.parse_runtimes(v["runtimes"]))
    if not cuda_available and filters.gpus and max(filters.gpus) > 1:
        (cpu_host or CpuHost.probe()).check_ranks(max(filters.gpus))
    if v["cudnn_benchmark"] not in ("on", "off"):
        raise OptionError(f"bad --cudnn-benchmark {v['cudnn_benchmark']!r}; valid: on, off")
    isolation = v["isolation"]
    if isolation is not None and ISOLATION_ALIASES.get(isolation, isolation) not in ISOLATIONS:
        raise OptionError(f"unknown isolation {isolation!r}; valid: {', '.join(ISOLATIONS)}")
    profile = matrix.resolve_profile(v["profile"], cuda_available)
    options = RunOptions(
        profile=profile, seed=v["seed"], weights=parse_weights(v["weights"], known_models, local_files=local_files),
        isolation=isolation or ("model" if cuda_available else "inline"), cell_timeout_s=v["cell_timeout"],
        telemetry_hz=v["telemetry_hz"], cudnn_benchmark=v["cudnn_benchmark"] == "on", optimizer=v["optimizer"],
        model_modules=matrix.parse_csv(v["model_modules"]) or (), rounds_count=v["rounds"], block_s=v["block_s"],
        repeats=v["repeats"])
    notes = []
    if options.isolation == "inline" and options.cell_timeout_s != CELL_TIMEOUT_S:
        notes.append(f"--cell-timeout {options.cell_timeout_s:g} bounds nothing here: inline isolation (the default "
                     "on CPU) runs the cells in this process, which nothing stops; add --isolation model or cell")
    return RunConfig(profile, filters, options, bool(v["detbench_strict"]), v["detbench_journal"],
                     v["detbench_resume"], tuple(notes))


def _saved_by_torch(path: str) -> bool:
    """Whether ``path`` starts as torch.save's files do: a zip archive (torch >= 1.6) or a pickle (the legacy
    format); reading 2 bytes, so a wrong file (``/etc/passwd``) is refused before any cell instead of erroring each."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(2)
    except OSError:
        return False
    return head == b"PK" or head[:1] == b"\x80"


def parse_weights(items: list[str], known: list[str], *, local_files: bool = True) -> dict[str, str]:
    """``NAME=PATH`` items (comma-separated or repeated) -> {model: path}; the model must be known and, with
    ``local_files``, the file must exist here (a missing one would error every cell of the model)."""
    weights = {}
    for item in items:
        for part in item.split(","):
            name, sep, path = part.partition("=")
            if not sep or not name or not path:
                raise OptionError(f"bad --weights {part!r}; use NAME=PATH, e.g. retinanet_resnet50_fpn=r.pth")
            if name not in known:
                raise OptionError(f"unknown model {name!r} in --weights; valid: {', '.join(known)}")
            if local_files and not os.path.isfile(path):
                what = "is a directory" if os.path.isdir(path) else "does not exist"
                raise OptionError(f"--weights {name}={path}: {path} {what}; give a local state-dict file "
                                  "(nothing is downloaded)")
            if local_files and not _saved_by_torch(path):
                raise OptionError(f"--weights {name}={path}: not a file torch.save wrote (neither its zip format nor "
                                  "a pickle); give a state dict saved with torch.save(model.state_dict(), PATH)")
            weights[name] = path
    return weights


# Options whose empty value would silently mean "the profile's choice": an empty one is refused instead.
_NON_EMPTY = {"models": "retinanet_resnet50_fpn (--list-models lists them)", "modes": "infer,train",
              "precisions": "fp32,amp-bf16", "compile": "eager,default", "memory_format": "channels_last",
              "batch_sizes": "1,8,max", "image_size": "480x640", "gpus": "1,2", "runtimes": "eager,onnxruntime"}


def _refuse_empty(values: Mapping[str, Any]) -> None:
    """An option given with nothing in it (``--compile ''``, ``--batch-sizes ,``) is a mistake, not a default."""
    for dest, example in _NON_EMPTY.items():
        if values.get(dest) is not None and matrix.parse_csv(values[dest]) is None:
            name = "--" + dest.replace("_", "-")
            raise OptionError(f"{name} is empty; name at least one value, e.g. {name} {example}, or leave it out "
                              "for the profile's choice")


def _parsed(name: str, parse: Callable[..., Any], text: str | None, *args: Any) -> Any:
    """``parse(text, *args)``; a ValueError that is not already a one-line OptionError (``int('²')``) becomes one
    naming the option and its expected form (the table's help)."""
    try:
        return parse(text, *args)
    except OptionError:
        raise
    except ValueError:
        help_text = next(o.help for o in OPTION_TABLE if o.name == name)
        raise OptionError(f"bad {name} {text!r}; expected {help_text}") from None


@dataclass(frozen=True)
class CpuHost:
    """What a machine without CUDA can give ``--gpus`` ranks: usable cores and available memory (bytes)."""

    cores: int
    memory_bytes: int | None  # None: unknown (no /proc/meminfo); the cores bound alone

    @classmethod
    def probe(cls) -> CpuHost:
        from detbench.envcheck.checks.host import available_memory_bytes, usable_cpu_count  # noqa: PLC0415

        return cls(usable_cpu_count() or 1, available_memory_bytes())

    @property
    def max_ranks(self) -> int:
        """One rank per core (more only time contention) and per RANK_MEMORY_BYTES; at least 1."""
        by_memory = self.cores if self.memory_bytes is None else self.memory_bytes // RANK_MEMORY_BYTES
        return max(1, min(self.cores, by_memory))

    def check_ranks(self, ranks: int) -> None:
        """Refuse (one line) more ranks than this machine can hold."""
        if ranks <= self.max_ranks:
            return
        memory = "memory unknown" if self.memory_bytes is None else \
            f"{self.memory_bytes / 1024**3:.1f} GiB available"
        raise OptionError(
            f"--gpus {ranks} needs {ranks} CPU ranks (no CUDA: gloo processes), more than this machine holds: at "
            f"most {self.max_ranks} (one rank per core, {self.cores} cores; {RANK_MEMORY_BYTES // 1024**3} GiB per "
            f"rank for torch and a model's weights, gradients and activations, {memory}); valid here: --gpus "
            f"1..{self.max_ranks}")
