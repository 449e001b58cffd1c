"""The run's calibration cache (issue 37): a fresh worker of the same run (a repeat, a resumed run) takes the group's
BatchNorm statistics and each batch size's FP32 threshold from it instead of calibrating again, and gets exactly
what calibrating gives; another seed is another key."""

from __future__ import annotations

import dataclasses

import torch
from torch.nn.modules.batchnorm import _BatchNorm

from detbench.bench.core.options import RunOptions
from detbench.bench.core.schema import Cell
from detbench.bench.models.postprocess import CACHE_ENV
from detbench.bench.runtime.build import GroupShared
from detbench.bench.runtime.session import CellSession
from tests.bench.runtime.test_session import FAST

CPU = torch.device("cpu")
CELL = Cell("ssdlite320_mobilenet_v3_large", "infer", batch_size=1, image_size=(160, 160))


def worker() -> CellSession:
    """One cell set up as a fresh worker would (nothing shared with an earlier session)."""
    options = RunOptions(model_modules=(), count_flops=False, warmup=FAST["warmup"], rounds=FAST["rounds"])
    session = CellSession(CELL, options, CPU, shared=GroupShared(), warm_up=False)
    session.set_up()
    return session


def batchnorm(session: CellSession) -> list[torch.Tensor]:
    return [b for m in session.prepared.model.modules() if isinstance(m, _BatchNorm)
            for b in (m.running_mean, m.running_var)]


def test_a_fresh_worker_of_the_run_takes_the_calibration_from_the_cache_and_gets_the_same(tmp_path, monkeypatch):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    first = worker()
    assert "postprocess_calibration" not in first.config  # calibrated here, and stored
    assert sorted(p.name.split("-")[-2] for p in (tmp_path / "cache").iterdir()) == ["batchnorm", "bs1"]
    again = worker()
    assert again.config["postprocess_calibration"].startswith("cached")
    assert again.postprocess["score_thresh"] == first.postprocess["score_thresh"]
    assert again.postprocess == first.postprocess  # its own calibration, as calibrating again gives it
    assert all(torch.equal(a, b) for a, b in zip(batchnorm(again), batchnorm(first), strict=True))
    key = again._calibration_key()
    assert key.file_name() != dataclasses.replace(key, seed=1).file_name()  # other random weights: another key
    assert key.file_name() != dataclasses.replace(key, device="NVIDIA H100 80GB HBM3").file_name()
