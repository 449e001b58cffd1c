"""Cold start as a serving process sees it: a fresh Python process imports torch and the runtime, loads the
artifact and makes the first call; it reports each part. Run as ``python -m detbench.bench.runtime.deploy.cold SPEC``
(SPEC: a JSON file naming the artifact, the inputs and the reference outputs, saved with torch.save)."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from detbench.bench.runtime.deploy.base import Artifact

METHOD = ("a fresh `python -m detbench.bench.runtime.deploy.cold` process: artifact load + first call; its start "
          "(interpreter, torch, the model's operator libraries and the runtime's imports, from the parent's spawn) "
          "stated apart as cold_import_s; the OS file cache is warm from the export")


# Libraries of custom operators (torchvision's nms, roi_align) an artifact may call: the serving process imports
# those the exporting process had imported (its model's), before it loads the artifact, as a deployment must.
OP_LIBRARIES = ("torchvision",)


@dataclass
class ColdStart:
    import_s: float
    load_s: float
    first_call_s: float
    peak_rss_bytes: int | None = None
    method: str = METHOD

    @property
    def cold_start_s(self) -> float:
        return round(self.load_s + self.first_call_s, 4)


def measure(artifact: Artifact, inputs: Any, reference: Any, device: torch.device, *,
            timeout_s: float = 600.0) -> ColdStart:
    """Load and call ``artifact`` in a fresh process; raises RuntimeError (its output's tail) when that fails."""
    import torch  # noqa: PLC0415

    folder = artifact.path if artifact.path.is_dir() else artifact.path.parent
    torch.save({"inputs": inputs, "reference": reference}, folder / "cold_inputs.pt")
    spec = folder / "cold_spec.json"
    spec.write_text(json.dumps({"artifact": artifact.to_dict(), "data": str(folder / "cold_inputs.pt"),
                                "device": str(device),
                                "op_libraries": [name for name in OP_LIBRARIES if name in sys.modules]}))
    spawned = time.time()  # wall clock: the child reads it against its own
    done = subprocess.run([sys.executable, "-m", "detbench.bench.runtime.deploy.cold", str(spec), repr(spawned)],
                          capture_output=True,
                          text=True, timeout=timeout_s, check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        raise RuntimeError(f"cold start failed (exit {done.returncode}): {' | '.join(tail)}")
    data = json.loads(lines[-1])
    return ColdStart(data["import_s"], data["load_s"], data["first_call_s"], data.get("peak_rss_bytes"))


def peak_rss_bytes() -> int | None:
    """This process's peak resident memory: VmHWM of /proc/self/status, which exec starts afresh (getrusage's
    ru_maxrss keeps the forking parent's peak across exec, here a pytest process holding several models)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024  # kB
    except OSError:
        pass
    return None


def main(argv: list[str]) -> int:
    import torch  # noqa: PLC0415

    from detbench.bench.runtime.deploy.base import Artifact  # noqa: PLC0415
    from detbench.bench.runtime.deploy.registry import get_runtime  # noqa: PLC0415

    spec = json.loads(Path(argv[0]).read_text())
    artifact = Artifact.from_dict(spec["artifact"])
    runtime = get_runtime(artifact.runtime)
    for module in [*spec["op_libraries"], *runtime.imports]:
        importlib.import_module(module)
    device = torch.device(spec["device"])
    data = torch.load(spec["data"], map_location=device, weights_only=False)
    imported, since_spawn = time.perf_counter(), time.time() - float(argv[1])
    runner = runtime.load(artifact, data["reference"], device)
    loaded = time.perf_counter()
    with torch.no_grad():
        runner(data["inputs"])
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    called = time.perf_counter()
    print(json.dumps({"import_s": round(since_spawn, 4), "load_s": round(loaded - imported, 4),
                      "first_call_s": round(called - loaded, 4), "peak_rss_bytes": peak_rss_bytes()}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
