"""Exact mean and quantiles of a stream of non-negative floats, in memory independent of its length.

A run's measured JCTs can be far too many to hold (a simulated day at 690 flows/s is 60 M), but
they can be read again (a streamed run's requests.parquet). So the statistics take a *source*: a
callable that returns a fresh iterator over float64 chunks, in any order.

* The mean is the correctly rounded mean: every float is an integer times a power of two, so the
  sum is accumulated exactly as a Python int (mantissas summed per exponent) and divided once
  (int / int is correctly rounded in Python). It does not depend on the order of the values.
* A quantile is numpy's ``linear`` one, bit for bit, from the two order statistics around it.
  An order statistic is found by counting passes over the source: non-negative floats sort like
  their bit patterns, so each pass counts the values under the current prefix by their next
  ``_BITS`` bits, narrows to the bin holding the rank, and gathers that bin's values once it
  holds at most ``_GATHER`` of them. Two passes in the usual case; at most 64 / _BITS + 1.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

Source = Callable[[], Iterable[np.ndarray]]

_BITS = 16  # key bits per counting pass (a 65,536-bin histogram)
_GATHER = 1 << 17  # a bin with at most this many values is gathered and sorted (1 MB)
_MANTISSA = 53
_PIECE = 1 << 25  # values per exact-sum piece: 2**25 * 2**27 < 2**53
_OFFSET = 1074 + _MANTISSA  # 2**(e - 53 + _OFFSET) is an integer for every float64 exponent e


def _chunks(source: Source) -> Iterator[np.ndarray]:
    for c in source():
        c = np.asarray(c, dtype=np.float64).ravel()
        if len(c):
            if not ((c >= 0) & (c < np.inf)).all():  # also refuses NaN
                raise ValueError("jct_stats: the values must be finite non-negative numbers")
            yield c


def exact_sum_count(source: Source) -> tuple[int, int]:
    """(sum of the values times 2**_OFFSET, exactly, as an int; number of values)."""
    total, n = 0, 0
    for chunk in _chunks(source):
        n += len(chunk)
        for at in range(0, len(chunk), _PIECE):
            c = chunk[at:at + _PIECE]
            mant, exp = np.frexp(c)  # c = mant * 2**exp, mant in [0.5, 1) (0 for c == 0)
            m = (mant * float(1 << _MANTISSA)).astype(np.int64)  # exact: an integer below 2**53
            e0 = int(exp.min())
            # per exponent, the sums of the mantissas' high 27 and low 26 bits: below 2**53
            # for _PIECE values, so the float64 sums of bincount are exact
            hi = np.bincount(exp - e0, weights=m >> 26)
            lo = np.bincount(exp - e0, weights=m & ((1 << 26) - 1))
            for i in np.flatnonzero(hi + lo):
                s = (int(hi[i]) << 26) + int(lo[i])
                total += s << (e0 + int(i) - _MANTISSA + _OFFSET)
    return total, n


def exact_mean(source: Source) -> float | None:
    """The correctly rounded mean of the values; None when there are none."""
    total, n = exact_sum_count(source)
    return total / (n << _OFFSET) if n else None


@dataclass
class _Bin:
    """Where a wanted rank stands: among the values whose bit pattern shifted right by ``low``
    equals ``prefix`` (all values when low == 64), it is the ``k``-th; ``size`` of them."""

    prefix: int
    low: int
    k: int
    size: int

    def holds(self, bits: np.ndarray) -> np.ndarray | slice:
        return slice(None) if self.low == 64 else (bits >> np.uint64(self.low)) == np.uint64(self.prefix)


def order_statistics(source: Source, n: int, ranks: Sequence[int]) -> dict[int, float]:
    """{rank: the rank-th smallest value (0-based)} of the ``n`` values of ``source``."""
    for r in ranks:
        if not 0 <= r < n:
            raise ValueError(f"jct_stats: rank {r} outside 0..{n - 1}")
    pending = {r: _Bin(0, 64, r, n) for r in set(ranks)}
    found: dict[int, float] = {}
    while pending:
        # ranks under the same prefix share one pass's histogram (or bag of values)
        bins = {(b.prefix, b.low): b for b in pending.values()}
        hist = {w: np.zeros(1 << _BITS, dtype=np.int64) for w, b in bins.items() if b.size > _GATHER}
        bags: dict[tuple[int, int], list[np.ndarray]] = {w: [] for w in bins if w not in hist}
        for c in _chunks(source):
            bits = c.view(np.uint64)
            for w, h in hist.items():
                under = bits[bins[w].holds(bits)]
                h += np.bincount((under >> np.uint64(w[1] - _BITS)).astype(np.int64) & ((1 << _BITS) - 1),
                                 minlength=1 << _BITS)
            for w, bag in bags.items():
                bag.append(c[bins[w].holds(bits)])
        sorted_bags = {w: np.sort(np.concatenate(bag)) for w, bag in bags.items()}
        for r, b in list(pending.items()):
            w = (b.prefix, b.low)
            del pending[r]
            if w in sorted_bags:
                found[r] = float(sorted_bags[w][b.k])
                continue
            cum = np.cumsum(hist[w])
            key = int(np.searchsorted(cum, b.k, side="right"))  # first bin whose count exceeds k
            below = int(cum[key - 1]) if key else 0
            sub = _Bin((b.prefix << _BITS) | key, b.low - _BITS, b.k - below, int(cum[key]) - below)
            if sub.low == 0:  # every bit is known: that is the value
                found[r] = float(np.array([sub.prefix], dtype=np.uint64).view(np.float64)[0])
            else:
                pending[r] = sub
    return found


def linear_quantiles(source: Source, n: int, qs: Sequence[float]) -> list[float | None]:
    """numpy's default (``linear``) quantiles of the ``n`` values, bit for bit; None if n == 0."""
    if n == 0:
        return [None] * len(qs)
    at = []
    for q in qs:
        h = (n - 1) * q  # numpy's virtual index for "linear"
        lo = int(np.floor(h))
        at.append((lo, min(lo + 1, n - 1), h - lo))
    x = order_statistics(source, n, sorted({r for a, b, _ in at for r in (a, b)}))
    out: list[float | None] = []
    for lo, hi, t in at:
        a, b = x[lo], x[hi]
        # numpy's _lerp: from below for t < 0.5, from above otherwise
        out.append(float(b - (b - a) * (1 - t)) if t >= 0.5 else float(a + (b - a) * t))
    return out
