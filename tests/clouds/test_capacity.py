"""Capacity: the contract's arithmetic, Nova flavours as Placement requests, the local host."""

from __future__ import annotations

import os
from pathlib import Path

from visa.clouds.base import MEMORY_MB, VCPU, Capacity, HostCapacity, Pool, is_gpu_class
from visa.clouds.local import LocalProvider
from visa.clouds.openstack import flavour_needs


def _host(name: str, **pools: tuple[int, int]) -> HostCapacity:
    return HostCapacity(name, {rc: Pool(total, used) for rc, (total, used) in pools.items()})


def test_a_machine_must_fit_on_one_host() -> None:
    cap = Capacity((_host("a", VCPU=(8, 6), MEMORY_MB=(100, 0)), _host("b", VCPU=(8, 0), MEMORY_MB=(100, 90))))
    # 4 cores fit on a, 50 MB on b, but no host has both: refused though the sums would do.
    assert cap.totals()[VCPU] == Pool(16, 6)
    refusal = cap.refusal({VCPU: 4, MEMORY_MB: 50})
    assert refusal is not None and "VCPU 4 needed, 10 of 16 free" in refusal and "MEMORY_MB" in refusal
    assert cap.refusal({VCPU: 2, MEMORY_MB: 50}) is None


def test_gpu_classes_and_max_unit() -> None:
    cap = Capacity((HostCapacity("gpu", {"CUSTOM_GPU_A40": Pool(4, 3), VCPU: Pool(64, 0, max_unit=16)}),))
    assert cap.refusal({"CUSTOM_GPU_A40": 1, VCPU: 16}) is None
    assert "CUSTOM_GPU_A40 2 needed, 1 of 4 free" in (cap.refusal({"CUSTOM_GPU_A40": 2}) or "")
    assert "VCPU" in (cap.refusal({VCPU: 32}) or "")  # more than one allocation may take
    assert "PCI_DEVICE 1 needed, none on this cloud" in (cap.refusal({"PCI_DEVICE": 1}) or "")
    assert Capacity().refusal({VCPU: 1}) is not None  # no host at all
    assert [rc for rc in ("CUSTOM_GPU_A40", "VGPU", "PCI_DEVICE", "VCPU", "CUSTOM_X") if is_gpu_class(rc)] == [
        "CUSTOM_GPU_A40", "VGPU", "PCI_DEVICE"]


def test_flavour_extra_specs_become_the_placement_request() -> None:
    assert flavour_needs(16, 32768, 20, {"resources:CUSTOM_GPU_A40": "1", "hw:cpu_policy": "dedicated"}) == {
        "VCPU": 16, "MEMORY_MB": 32768, "DISK_GB": 20, "CUSTOM_GPU_A40": 1}
    # The unnumbered group replaces the flavour's own figure; numbered groups add; junk is skipped.
    assert flavour_needs(8, 1024, 0, {"resources:VCPU": "0", "resources:PCPU": "8", "resources1:VGPU": "1",
                                      "resources2:VGPU": "1", "resources:CUSTOM_BAD": "many",
                                      "trait:CUSTOM_X": "required"}) == {"MEMORY_MB": 1024, "PCPU": 8, "VGPU": 2}


def test_local_capacity_is_this_host(tmp_path: Path) -> None:
    prov = LocalProvider("local", {"root_dir": str(tmp_path / "sessions"), "cpu_allocation_ratio": 2})
    cap = prov.capacity()
    (host,) = cap.hosts
    assert host.pools[VCPU] == Pool((os.cpu_count() or 1) * 2, 0)
    meminfo = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines())
    total_mb = int(meminfo["MemTotal"].split()[0]) // 1024
    free_mb = host.pools[MEMORY_MB].free
    assert 0 < free_mb <= total_mb and host.pools[MEMORY_MB].max_unit == total_mb
    assert prov.needs("any", 2, 512) == {VCPU: 2, MEMORY_MB: 512}
    assert cap.refusal({VCPU: 1, MEMORY_MB: 256}) is None
    assert "MEMORY_MB" in (cap.refusal({VCPU: 1, MEMORY_MB: total_mb * 4}) or "")
    capped = LocalProvider("local", {"root_dir": str(tmp_path / "s2"), "max_instances": 0})
    assert "INSTANCES" in (capped.capacity().refusal(capped.needs("any", 1, 1)) or "")
