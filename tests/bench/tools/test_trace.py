"""The profiler summary: kernel-interval union, and a real profiled CPU cell through CellSession."""

from __future__ import annotations

import json

import pytest

from detbench.bench.tools.trace import main, union_ms


def test_overlapping_kernels_count_once_and_gaps_do_not_count():
    # us: [0,100] and [50,150] overlap -> 150; [300,400] -> 100; nested [310,320] adds nothing
    assert union_ms([(300, 400), (0, 100), (50, 150), (310, 320)]) == pytest.approx(0.25)
    assert union_ms([]) == 0.0


def test_a_cpu_cell_is_profiled_through_the_session_and_summarised(tmp_path, capsys):
    out = tmp_path / "trace.json"
    code = main(["--model", "tiny_convnet", "--image-size", "32x32", "--batch-size", "2", "--steps", "3",
                 "--model-modules", "tests.bench.tiny_models", "--json", str(out)])
    assert code == 0
    data = json.loads(out.read_text())
    assert data["schema"] == "detbench.trace" and data["steps"] == 3 and data["cell_id"].startswith("tiny_convnet")
    assert data["gpu_busy_share"] is None and "CPU run" in data["note"]
    names = [op["name"] for op in data["top_cpu"]]
    assert any("conv" in n for n in names) and data["cpu_ms_per_step"] > 0 and data["wall_ms_per_step"] > 0
    assert "top self CPU ms/step" in capsys.readouterr().out


def test_bad_steps_is_a_usage_error():
    with pytest.raises(SystemExit) as exc:
        main(["--model", "tiny_convnet", "--steps", "0"])
    assert exc.value.code == 2


def test_the_summary_line_reads_a_written_trace(tmp_path, capsys):
    path = tmp_path / "t.json"
    path.write_text(json.dumps({"cell_id": "c", "wall_ms_per_step": 40.0, "cuda_kernel_ms_per_step": 10.0,
                                "gpu_busy_share": 0.25, "cpu_ms_per_step": 30.0}))
    assert main(["--summary", str(path)]) == 0
    assert capsys.readouterr().out.strip() == ("trace c: 40.0 ms/step wall, GPU kernels 10.0 ms/step (GPU busy 25%, "
                                               "idle 75%), host op time 30.0 ms/step")
