"""simulator.gc_policy.sparse_gc: settings restored, a caller's frozen objects kept frozen,
and reference cycles formed inside still collected automatically."""

from __future__ import annotations

import gc
import weakref

from simulator.gc_policy import YOUNG_THRESHOLD, sparse_gc


class _Node:
    def __init__(self) -> None:
        self.other: _Node | None = None


def test_thresholds_and_freeze_are_restored_even_after_an_error() -> None:
    before = gc.get_threshold()
    assert gc.get_freeze_count() == 0
    try:
        with sparse_gc():
            assert gc.get_threshold()[0] == max(before[0], YOUNG_THRESHOLD)
            assert gc.get_threshold()[1:] == before[1:]
            assert gc.get_freeze_count() > 0  # what was alive on entry is frozen
            raise RuntimeError("boom")
    except RuntimeError:
        pass
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0


def test_a_callers_frozen_objects_stay_frozen() -> None:
    gc.freeze()
    try:
        frozen = gc.get_freeze_count()
        with sparse_gc():
            pass
        assert gc.get_freeze_count() == frozen
    finally:
        gc.unfreeze()


def test_cycles_formed_inside_are_collected_without_an_explicit_collect() -> None:
    assert gc.isenabled()
    with sparse_gc():
        a, b = _Node(), _Node()
        a.other, b.other = b, a  # a cycle: only the cyclic collector can free it
        alive = weakref.ref(a)
        del a, b
        assert alive() is not None
        # net allocations past the raised threshold trigger a pass over the youngest objects
        keep = [[] for _ in range(2 * YOUNG_THRESHOLD)]
        assert alive() is None
    del keep
