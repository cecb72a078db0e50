"""numpy's transparent huge pages off while the simulation runs.

numpy asks the kernel for transparent huge pages (madvise) on every array of 4 MB or more. A run
at data-center scale makes and frees such arrays at every recorded step (64 LBs x 4,096 servers:
a 262,144-row feature matrix, its columns for the steps table, their concatenation at the end),
and on this 2-CPU VM a huge-page fault on them, which zeroes 2 MB and may first compact memory,
cost more than the small pages it saves: with it off, that case (6,144 flows/s, 16 s) ran at
23,100-23,200 requests per CPU-second instead of 18,600-18,700 in two alternating pairs of
bench/sim_scale (``--numpy-hugepages`` leaves it on; its LB steps 23-24 % -> 15 % of the CPU);
the other cases moved within this VM's noise (-5 to +5 %; bench/sim_scale/results/README.md).
:func:`small_pages` turns it off for the body and restores the previous setting on exit.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator


def _setter() -> Callable[[bool], bool] | None:
    """numpy's switch (returns the previous setting), or None if this numpy has none."""
    try:
        from numpy._core import multiarray  # numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core import multiarray
    return getattr(multiarray, "_set_madvise_hugepage", None)


_set_hugepage = _setter()  # looked up once: the RL envs enter small_pages at every step


@contextmanager
def small_pages() -> Iterator[None]:
    """Run the body with numpy's huge-page advice off (nested uses keep it off until the
    outermost one ends); without numpy's switch the body just runs."""
    set_hugepage = _set_hugepage
    if set_hugepage is None:  # pragma: no cover - numpy without the switch
        yield
        return
    was = set_hugepage(False)
    try:
        yield
    finally:
        set_hugepage(was)
