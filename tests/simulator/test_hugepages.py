"""simulator.hugepages.small_pages: numpy's huge-page advice off inside, restored on exit (also
after an error and when nested), as the kernel sees it (an array's mapping in /proc/self/smaps
carries MADV_HUGEPAGE's "hg" flag only outside), and in force while a simulation's steps run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from simulator.config import ExperimentConfig
from simulator.hugepages import _setter, small_pages
from simulator.run import build_simulation

set_hugepage = _setter()
pytestmark = pytest.mark.skipif(set_hugepage is None, reason="this numpy has no huge-page switch")


def advice_on() -> bool:
    """numpy's current setting (its switch returns the previous one, so set it back)."""
    was = set_hugepage(True)
    set_hugepage(was)
    return bool(was)


def vm_flags(addr: int) -> list[str]:
    """The kernel's VmFlags of the mapping holding ``addr`` (/proc/self/smaps)."""
    inside = False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        head = line.split()[0]
        if "-" in head and ":" not in head:  # a mapping's first line: start-end perms ...
            lo, hi = (int(x, 16) for x in head.split("-"))
            inside = lo <= addr < hi
        elif inside and line.startswith("VmFlags:"):
            return line.split()[1:]
    raise AssertionError(f"no mapping holds {addr:#x}")


def test_off_inside_restored_after_errors_and_nesting() -> None:
    before = advice_on()
    try:
        with small_pages():
            assert not advice_on()
            with small_pages():
                assert not advice_on()
            assert not advice_on()  # the inner exit restores the outer's "off"
            raise RuntimeError("boom")
    except RuntimeError:
        pass
    assert advice_on() == before
    set_hugepage(False)
    try:
        with small_pages():
            pass
        assert not advice_on()  # a caller's "off" stays off
    finally:
        set_hugepage(before)


@pytest.mark.skipif(not Path("/sys/kernel/mm/transparent_hugepage/enabled").exists(),
                    reason="this kernel has no transparent huge pages")
def test_the_kernel_sees_no_huge_page_advice_inside() -> None:
    was = set_hugepage(True)
    try:
        # 64 MB each: numpy advises huge pages from 4 MB on, and above 32 MB glibc always maps
        # fresh memory (smaller blocks may reuse memory an earlier array had advised)
        outside = np.ones(8 << 20)
        with small_pages():
            inside = np.ones(8 << 20)
        # numpy advises from the array's first page boundary on: look at its middle
        assert "hg" in vm_flags(outside.ctypes.data + outside.nbytes // 2)
        assert "hg" not in vm_flags(inside.ctypes.data + inside.nbytes // 2)
    finally:
        set_hugepage(was)


class _Recorder:
    """The run's controller, noting numpy's setting at every step."""

    def __init__(self, inner) -> None:  # type: ignore[no-untyped-def]
        self.inner, self.core_policy, self.seen = inner, inner.core_policy, []

    def static_weights(self, cores):  # type: ignore[no-untyped-def]
        return self.inner.static_weights(cores)

    def start(self, sim) -> None:  # type: ignore[no-untyped-def]
        self.inner.start(sim)

    def force(self, now_s: float, lb: int) -> int:
        return self.inner.force(now_s, lb)

    def on_step(self, now_s, lb, feats):  # type: ignore[no-untyped-def]
        self.seen.append(advice_on())
        return self.inner.on_step(now_s, lb, feats)


def test_a_simulations_steps_run_without_it() -> None:
    was = set_hugepage(True)
    try:
        sim = build_simulation(ExperimentConfig.model_validate({
            "seed": 1, "duration_s": 2.0, "topology": {"preset": "moderate"},
            "traffic": {"load": 0.5}, "policy": {"name": "sed"}}))
        sim.controller = rec = _Recorder(sim.controller)
        sim.run()
        assert len(rec.seen) > 10 and not any(rec.seen)
        assert advice_on()  # restored once the loop returns
    finally:
        set_hugepage(was)
