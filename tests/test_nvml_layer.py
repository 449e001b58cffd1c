"""The thin NVML layer: degrade to None, map CUDA ordinals to NVML devices by UUID."""

from detbench.envcheck import nvml
from tests.fakes.nvml import NOT_SUPPORTED, FakeGpu, NVMLError_LibraryNotFound


def test_missing_library_is_a_reason_not_an_exception(fake_nvml):
    fake_nvml(init_error=NVMLError_LibraryNotFound())
    assert nvml.driver_version() is None
    assert "NVML could not start" in nvml.unavailable_reason()


def test_missing_module_names_the_install(no_nvml):
    assert "pip install nvidia-ml-py" in nvml.unavailable_reason()
    assert nvml.device_count() is None


def test_unsupported_query_is_none(fake_nvml):
    nv = fake_nvml([FakeGpu(power_mw=NOT_SUPPORTED)])
    assert nvml.query(nv.nvmlDeviceGetPowerUsage, 0) is None


def test_cuda_driver_version_decoded(fake_nvml):
    fake_nvml(cuda_driver=12040)
    assert nvml.cuda_driver_version() == (12, 4)


def test_mapping_uses_uuid_not_index(fake_nvml, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,0")
    gpus = [FakeGpu(uuid=f"GPU-aaaaaaaa-0000-0000-0000-00000000000{i}") for i in range(3)]
    fake_nvml(gpus)
    mapped = nvml.map_cuda_to_nvml([gpus[2].uuid.lower(), gpus[0].uuid[4:]])
    assert [(d.cuda_index, d.nvml_index) for d in mapped] == [(0, 2), (1, 0)]


def test_mapping_falls_back_to_visible_devices(fake_nvml, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    fake_nvml([FakeGpu(uuid="GPU-a"), FakeGpu(uuid="GPU-b")])
    mapped = nvml.map_cuda_to_nvml([""])
    assert [(d.cuda_index, d.nvml_index, d.uuid) for d in mapped] == [(0, 1, "b")]
