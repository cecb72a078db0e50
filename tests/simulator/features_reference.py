"""The vectorised numpy reservoir statistics that simulator/_stats.c replaced (the simulator's
version until 2026-12-04), kept as the reference tests/simulator/test_features_c.py compares the
C pass with."""

from __future__ import annotations

import numpy as np

from simulator.features import _MIN_LOG_S, DECAY_PER_S, RECENT_S, ROBUST_STAT_NAMES, STAT_NAMES


def reservoir_stats_numpy(t_RK: np.ndarray, v_RK: np.ndarray, fill_R: np.ndarray,
                          decay: float = DECAY_PER_S, robust: bool = False) -> np.ndarray:
    """Statistics of R reservoirs at once: row r uses slots [0, fill_R[r]) of t_RK[r]
    (sample times, s) and v_RK[r] (values, s). Returns (R, 5): mean, p90, std, decayed mean,
    decayed p90 (see the module docstring), and with ``robust`` (R, 9): those and geometric
    mean, median, recent geometric mean, recent count; NaN rows for empty reservoirs."""
    t_RK = np.asarray(t_RK, dtype=np.float64)
    v_RK = np.asarray(v_RK, dtype=np.float64)
    fill = np.asarray(fill_R, dtype=np.int64)
    n_r, k = v_RK.shape
    n_stats = len(STAT_NAMES) + (len(ROBUST_STAT_NAMES) if robust else 0)
    out = np.full((n_r, n_stats), np.nan)
    if n_r == 0 or k == 0 or not fill.any():
        return out
    valid = np.arange(k)[None, :] < fill[:, None]
    has = fill > 0
    c = np.maximum(fill, 1)
    vz = np.where(valid, v_RK, 0.0)
    order = np.argsort(np.where(valid, v_RK, np.inf), axis=1, kind="stable")  # padding last
    vs = np.take_along_axis(vz, order, axis=1)
    mean = vz.sum(axis=1) / c
    var = np.where(valid, (v_RK - mean[:, None]) ** 2, 0.0).sum(axis=1) / c
    h = (c - 1) * 0.9
    lo = np.floor(h).astype(np.int64)
    hi = np.minimum(lo + 1, c - 1)
    rows = np.arange(n_r)
    p90 = vs[rows, lo] + (h - lo) * (vs[rows, hi] - vs[rows, lo])
    newest = np.where(valid, t_RK, -np.inf).max(axis=1, keepdims=True)
    newest = np.where(has[:, None], newest, 0.0)
    w = np.where(valid, decay ** (newest - np.where(valid, t_RK, newest)), 0.0)
    wsum = w.sum(axis=1)
    dmean = (w * vz).sum(axis=1) / np.where(wsum > 0, wsum, 1.0)
    cw = np.cumsum(np.take_along_axis(w, order, axis=1), axis=1)
    idx = np.minimum((cw < 0.9 * cw[:, -1:]).sum(axis=1), c - 1)
    dp90 = vs[rows, idx]
    cols = [mean, p90, np.sqrt(var), dmean, dp90]
    if robust:
        logv = np.where(valid, np.log(np.maximum(v_RK, _MIN_LOG_S)), 0.0)
        gmean = np.exp(logv.sum(axis=1) / c)
        h = (c - 1) * 0.5
        lo = np.floor(h).astype(np.int64)
        hi = np.minimum(lo + 1, c - 1)
        median = vs[rows, lo] + (h - lo) * (vs[rows, hi] - vs[rows, lo])
        recent = valid & (t_RK >= newest - RECENT_S)  # holds the newest sample: never empty
        n_recent = recent.sum(axis=1)
        recent_gmean = np.exp(np.where(recent, logv, 0.0).sum(axis=1) / np.maximum(n_recent, 1))
        cols += [gmean, median, recent_gmean, n_recent.astype(np.float64)]
    out[has] = np.stack(cols, axis=1)[has]
    return out
