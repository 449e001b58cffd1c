"""Host: a small /dev/shm fails with the docker --shm-size remedy; low disk fails."""

from collections import namedtuple

from detbench.envcheck.checks import host

Usage = namedtuple("Usage", "total used free")
GIB = 1024**3


def test_small_shm_fails(make_ctx, monkeypatch):
    monkeypatch.setattr(host, "shm_total_bytes", lambda: 64 * 1024**2)
    outcome = host.check_host(make_ctx())
    assert outcome.status == "fail"
    assert "/dev/shm is 64 MiB" in outcome.detail
    assert "docker run --shm-size=8g" in outcome.remedy


def test_shm_read_through_disk_usage(monkeypatch):
    real = host.shutil.disk_usage
    monkeypatch.setattr(
        host.shutil, "disk_usage", lambda p: Usage(64 * 2**20, 0, 64 * 2**20) if p == "/dev/shm" else real(p)
    )
    assert host.shm_total_bytes() == 64 * 2**20


def test_full_disk_fails(make_ctx, monkeypatch, tmp_path):
    monkeypatch.setattr(host, "shm_total_bytes", lambda: 16 * GIB)
    monkeypatch.setattr(host, "disk_free_bytes", lambda path: 1 * GIB)
    outcome = host.check_host(make_ctx(results_dir=str(tmp_path)))
    assert outcome.status == "fail"
    assert "results_dir" in outcome.detail and "1.0 GiB free" in outcome.detail


def test_roomy_host_passes(make_ctx, monkeypatch):
    monkeypatch.setattr(host, "shm_total_bytes", lambda: 16 * GIB)
    monkeypatch.setattr(host, "usable_cpu_count", lambda: 32)
    monkeypatch.setattr(host, "available_memory_bytes", lambda: 200 * GIB)
    monkeypatch.setattr(host, "disk_free_bytes", lambda path: 500 * GIB)
    outcome = host.check_host(make_ctx())
    assert outcome.status == "pass", outcome.detail
    assert outcome.measured["shm_bytes"] == 16 * GIB


def test_cache_dir_follows_torch_home(monkeypatch):
    monkeypatch.setenv("TORCH_HOME", "/data/torch")
    assert host.cache_dir() == "/data/torch"


def test_disk_free_of_missing_dir_uses_parent(tmp_path):
    assert host.disk_free_bytes(str(tmp_path / "not" / "yet")) > 0


def test_results_dir_that_cannot_be_written_fails(make_ctx, monkeypatch, tmp_path):
    monkeypatch.setattr(host, "shm_total_bytes", lambda: 16 * GIB)
    monkeypatch.setattr(host, "disk_free_bytes", lambda path: 500 * GIB)
    blocker = tmp_path / "file"
    blocker.write_text("")
    outcome = host.check_host(make_ctx(results_dir=str(blocker / "results")))
    assert outcome.status == "fail"
    assert "not writable" in outcome.detail and str(blocker / "results") in outcome.detail
    assert outcome.measured["results_dir_writable"] is False


def test_results_dir_writability_is_reported(make_ctx, monkeypatch, tmp_path):
    monkeypatch.setattr(host, "shm_total_bytes", lambda: 16 * GIB)
    monkeypatch.setattr(host, "disk_free_bytes", lambda path: 500 * GIB)
    outcome = host.check_host(make_ctx(results_dir=str(tmp_path / "not" / "yet")))  # can be created
    assert outcome.measured["results_dir_writable"] is True
    assert "results_dir writable" in (outcome.measured.get("summary") or outcome.detail)
    assert not (tmp_path / "not").exists()  # checking leaves nothing behind

