"""Link detection for the NCCL check, over the shared fake NVML: NVLink direct, NVSwitch, PCIe, no NVML."""

import pytest

from detbench.envcheck import nvml
from detbench.envcheck.links import describe_links
from tests.fakes.nvml import NOT_SUPPORTED, FakeGpu, FakeNvLink

NVSWITCH = "0000:c0:00.0"


def gpus(count: int, links=None, **kwargs) -> list[FakeGpu]:
    """``count`` fake H100s on distinct bus ids; ``links(i)`` gives GPU i's NVLinks."""
    return [FakeGpu(uuid=f"GPU-{i:08d}-0000-0000-0000-000000000000", pci_bus_id=f"00000000:{0x18 + i:02X}:00.0",
                    nvlinks=links(i) if links else NOT_SUPPORTED, **kwargs) for i in range(count)]


def uuids(fakes: list[FakeGpu]) -> list[str]:
    return [g.uuid for g in fakes]


def bus(i: int) -> str:
    return f"0000:{0x18 + i:02x}:00.0"


def test_two_gpus_joined_by_18_nvlink4_links_allow_450_gbs(fake_nvml):
    fakes = gpus(2, lambda i: [FakeNvLink(bus(1 - i))] * 18)
    fake_nvml(fakes)
    budget = describe_links(uuids(fakes))
    assert budget.link_type == "nvlink"
    assert budget.per_direction_gbs == pytest.approx(450.0)
    assert "NVLink 4.0, 18 links" in budget.detail and "direct" in budget.detail
    assert budget.pairs[0]["nvlinks"] == 18


def test_gpus_on_an_nvswitch_count_their_links_to_the_switch(fake_nvml):
    fakes = gpus(4, lambda i: [FakeNvLink(NVSWITCH, remote_type=2)] * 18)
    fake_nvml(fakes)
    budget = describe_links(uuids(fakes))
    assert budget.link_type == "nvlink" and budget.per_direction_gbs == pytest.approx(450.0)
    assert "via NVSwitch" in budget.detail
    assert all(p["via_nvswitch"] for p in budget.pairs) and len(budget.pairs) == 6


def test_down_links_and_the_weakest_gpu_bound_the_budget(fake_nvml):
    def links(i):
        down = 6 if i == 1 else 0
        return [FakeNvLink(bus(1 - i), active=k >= down) for k in range(18)]

    fakes = gpus(2, links)
    fake_nvml(fakes)
    budget = describe_links(uuids(fakes))
    assert budget.per_direction_gbs == pytest.approx(12 * 25.0)
    assert "GPU 1" in budget.detail


def test_nvlink_bridged_pairs_in_a_four_gpu_set_are_judged_as_pcie(fake_nvml):
    fakes = gpus(4, lambda i: [FakeNvLink(bus(i ^ 1), version=4)] * 12, pcie_max_gen=4, pcie_max_width=16)
    fake_nvml(fakes, topology=50)
    budget = describe_links(uuids(fakes))
    assert budget.link_type == "pcie"
    assert budget.per_direction_gbs == pytest.approx(31.5, abs=0.01)
    assert "SYS (across the CPU interconnect" in budget.detail


def test_pcie_only_gpus_use_the_slot_generation_and_width(fake_nvml):
    fakes = gpus(2, pcie_max_gen=5, pcie_max_width=16)
    fake_nvml(fakes, topology=10, p2p_status=4)
    budget = describe_links(uuids(fakes))
    assert budget.link_type == "pcie"
    assert budget.per_direction_gbs == pytest.approx(63.0, abs=0.01)
    assert budget.pairs[0]["pcie_topology"].startswith("PIX") and budget.pairs[0]["p2p_read"] == "disabled by regkey"


def test_without_nvml_the_budget_is_unknown_with_the_reason(no_nvml):
    budget = describe_links(["GPU-a", "GPU-b"])
    assert budget.link_type == "unknown" and budget.per_direction_gbs is None
    assert "NVML not available" in budget.detail


def test_unmatched_gpus_leave_the_budget_unknown(fake_nvml):
    fake_nvml(gpus(2))
    budget = describe_links(["GPU-not-there", "GPU-nor-this"])
    assert budget.link_type == "unknown" and "0 of 2 GPUs matched" in budget.detail


def test_nvlink_queries_degrade_on_a_gpu_that_fell_off_the_bus(fake_nvml):
    fakes = gpus(2, lambda i: [FakeNvLink(bus(1 - i))] * 18)
    fake_nvml(fakes)
    handle = nvml.handle_by_index(0)
    fakes[0].gone = True
    assert nvml.active_nvlinks(handle) == [] and nvml.topology_level(handle, 1) is None
    assert nvml.pcie_max_link(handle) == (None, None)
