"""A group's worker process: ``python -m detbench.bench.runtime.worker REQUEST.json EVENTS.jsonl``.

Measures the request's group (detbench.bench.runtime.engine.measure_group), appending its events to EVENTS.jsonl as it
goes (detbench.bench.runtime.protocol); the launcher reads them back whatever happens. Exit 75 after a sticky CUDA error
(recorded as the cell's result first). On the CPU the address space is capped at what the host has available
(detbench.bench.runtime.device.host_memory_cap): a cell too large for the host is its own ``oom`` and the group goes on.
"""

from __future__ import annotations

import sys

EXIT_STICKY = 75  # a worker (or an A/B side) that ended after a sticky CUDA error; its cell's result comes first


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m detbench.bench.runtime.worker REQUEST.json EVENTS.jsonl", file=sys.stderr)
        return 2
    from detbench.bench.core.options import import_model_modules  # noqa: PLC0415 (after the usage check: imports torch)
    from detbench.bench.runtime.device import cell_device, host_memory_cap  # noqa: PLC0415
    from detbench.bench.runtime.engine import measure_group  # noqa: PLC0415
    from detbench.bench.runtime.failures import WorkerMustEnd  # noqa: PLC0415
    from detbench.bench.runtime.protocol import EventLog  # noqa: PLC0415
    from detbench.bench.runtime.request import GroupRequest  # noqa: PLC0415

    request = GroupRequest.read(argv[0])
    import_model_modules(request.options.model_modules)
    device = cell_device()
    try:
        with host_memory_cap(device):
            measure_group(request.cells, request.options, device, events=EventLog(argv[1]),
                          prior={r.cell.id: r for r in request.prior})
    except WorkerMustEnd as exc:
        print(f"detbench.bench.runtime.worker: ending after a sticky CUDA error: {exc}", file=sys.stderr)
        return EXIT_STICKY
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
