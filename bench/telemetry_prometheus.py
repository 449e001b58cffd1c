"""Live Prometheus view of the running cell's telemetry: a tiny HTTP server on 127.0.0.1.

The runner starts one exporter for the whole run and points it at each cell's tracker::

    exporter = start_exporter(port=9400)        # port 0 picks a free one: exporter.port
    exporter.attach(tracker) ... exporter.detach()
    exporter.stop()

``GET /metrics`` answers the latest readings in the Prometheus text format (0.0.4), e.g.
``detbench_gpu_power_watts{gpu="0",uuid="...",name="NVIDIA H100 80GB HBM3"} 612.3``.
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from bench.telemetry import TelemetryTracker
from bench.telemetry_stats import IDLE_REASON_BIT

# (reading in TelemetryTracker.latest(), metric name, scale to the metric's unit, help text)
GAUGES = (
    ("power_w", "detbench_gpu_power_watts", 1.0, "Board power (NVML average over its own window), watts."),
    ("gpu_util_pct", "detbench_gpu_utilization_percent", 1.0, "Share of NVML's window with a kernel running."),
    ("mem_util_pct", "detbench_gpu_memory_utilization_percent", 1.0, "Share of NVML's window with memory busy."),
    ("memory_used_bytes", "detbench_gpu_memory_used_bytes", 1.0, "Device memory in use, bytes."),
    ("temperature_c", "detbench_gpu_temperature_celsius", 1.0, "GPU temperature, degrees Celsius."),
    ("sm_clock_mhz", "detbench_gpu_sm_clock_hertz", 1e6, "SM clock, hertz."),
    ("mem_clock_mhz", "detbench_gpu_memory_clock_hertz", 1e6, "Memory clock, hertz."),
    ("energy_mj", "detbench_gpu_energy_joules", 1e-3, "Total energy counter since driver load, joules."),
    ("pcie_tx_bytes_s", "detbench_gpu_pcie_tx_bytes_per_second", 1.0, "PCIe transmit throughput, bytes/s."),
    ("pcie_rx_bytes_s", "detbench_gpu_pcie_rx_bytes_per_second", 1.0, "PCIe receive throughput, bytes/s."),
)


def _label(value: Any) -> str:
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def render(latest: list[dict[str, Any]] | None) -> str:
    """Prometheus text exposition of one set of latest readings (None: no cell running)."""
    lines = ["# HELP detbench_telemetry_up 1 while a benchmark cell is being sampled.",
             "# TYPE detbench_telemetry_up gauge"]
    lines.append(f"detbench_telemetry_up {1 if latest else 0}")
    rows = latest or []
    labels = [f'gpu="{r["cuda_index"]}",uuid="{_label(r["uuid"])}",name="{_label(r["name"])}"' for r in rows]
    for key, metric, scale, help_text in GAUGES:
        lines += [f"# HELP {metric} {help_text}", f"# TYPE {metric} gauge"]
        lines += [f"{metric}{{{lab}}} {r[key] * scale:.6g}" for r, lab in zip(rows, labels) if r.get(key) is not None]
    lines += ["# HELP detbench_gpu_throttled 1 when a clock-event reason other than idle is active.",
              "# TYPE detbench_gpu_throttled gauge"]
    lines += [
        f"detbench_gpu_throttled{{{lab}}} {1 if int(r['throttle_mask']) & ~IDLE_REASON_BIT else 0}"
        for r, lab in zip(rows, labels)
        if r.get("throttle_mask") is not None
    ]
    lines += ["# HELP detbench_gpu_lost 1 when NVML reported the GPU lost.", "# TYPE detbench_gpu_lost gauge"]
    lines += [f"detbench_gpu_lost{{{lab}}} {1 if r['lost'] else 0}" for r, lab in zip(rows, labels)]
    return "\n".join(lines) + "\n"


class PrometheusExporter:
    """HTTP server on a background thread; serves :func:`render` of the attached tracker."""

    def __init__(self, port: int = 0, host: str = "127.0.0.1") -> None:
        if not 0 <= port <= 65535:
            raise ValueError(f"port must be 0..65535 (0 picks a free one), got {port}")
        self._tracker: TelemetryTracker | None = None
        exporter = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.split("?")[0] not in ("/metrics", "/"):
                    self.send_error(404, "only /metrics is served")
                    return
                tracker = exporter._tracker
                body = render(tracker.latest() if tracker is not None else None).encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - keep benchmark output clean
                return

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def attach(self, tracker: TelemetryTracker | None) -> None:
        self._tracker = tracker

    def detach(self) -> None:
        self._tracker = None

    def start(self) -> PrometheusExporter:
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1},
                                        name="detbench-telemetry-prometheus", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join()
            self._thread = None
        self._server.server_close()

    def __enter__(self) -> PrometheusExporter:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_exporter(port: int = 0, host: str = "127.0.0.1") -> PrometheusExporter:
    """Start serving ``/metrics`` on ``host:port`` (loopback by default); call ``.stop()`` when done."""
    return PrometheusExporter(port, host).start()
