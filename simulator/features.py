"""Per-server features an LB agent sees: computed only from what a real data plane publishes.

The input is one msg_out shm frame (``simulator.shm.OutFrame``: per-server ``n_flow_on`` and the
reservoir snapshots of flow duration and flow completion time) or the same arrays taken from
anywhere else (a VPP region, a test). The simulator's LB step, the RL envs and the real-time
controller all call :func:`frame_features` / :func:`server_features`, so a policy trained in
simulation sees exactly the numbers it will see on hardware.

Features per server (columns of the matrix, names in :data:`FEATURE_NAMES`):

* ``n_flow_on`` -- established, not yet closed flows the LB counts for the server;
* for each reservoir r in (``fd`` = flow duration, ``fct`` = flow completion time), over its
  filled slots (values v_i in seconds, sample times t_i):
  ``{r}_mean_s`` mean; ``{r}_p90_s`` 90th percentile interpolated linearly between order
  statistics (numpy's default ``quantile``); ``{r}_std_s`` population standard deviation;
  ``{r}_dmean_s`` decayed mean sum(w_i v_i) / sum(w_i) with w_i = decay ** (now - t_i)
  (``decay`` = 0.9 per second of sample age); ``{r}_dp90_s`` decayed 90th percentile = the
  smallest v whose cumulative weight (values ascending) reaches 90 % of the total weight.
  All NaN for an empty reservoir.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["DECAY_PER_S", "STAT_NAMES", "RESERVOIR_NAMES", "FEATURE_NAMES", "reservoir_stats",
           "server_features", "frame_features", "as_dict"]

DECAY_PER_S = 0.9  #: weight of a sample per second of age, for the decayed statistics
STAT_NAMES = ("mean_s", "p90_s", "std_s", "dmean_s", "dp90_s")
RESERVOIR_NAMES = ("fd", "fct")  #: reservoir kinds 0 (flow duration) and 1 (fct), in order
FEATURE_NAMES = ("n_flow_on",) + tuple(f"{r}_{s}" for r in RESERVOIR_NAMES for s in STAT_NAMES)


def reservoir_stats(t_RK: np.ndarray, v_RK: np.ndarray, fill_R: np.ndarray, now_s: Any,
                    decay: float = DECAY_PER_S) -> np.ndarray:
    """Statistics of R reservoirs at once: row r uses slots [0, fill_R[r]) of t_RK[r]
    (sample times, s) and v_RK[r] (values, s); ``now_s`` is one time or one per row (R,).
    Returns (R, 5): mean, p90, std, decayed mean,
    decayed p90 (see the module docstring); NaN rows for empty reservoirs."""
    t_RK = np.asarray(t_RK, dtype=np.float64)
    v_RK = np.asarray(v_RK, dtype=np.float64)
    fill = np.asarray(fill_R, dtype=np.int64)
    n_r, k = v_RK.shape
    out = np.full((n_r, 5), np.nan)
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
    now = np.asarray(now_s, dtype=np.float64)
    if now.ndim:
        now = now[:, None]
    w = np.where(valid, decay ** (now - np.where(valid, t_RK, now)), 0.0)
    wsum = w.sum(axis=1)
    dmean = (w * vz).sum(axis=1) / np.where(wsum > 0, wsum, 1.0)
    cw = np.cumsum(np.take_along_axis(w, order, axis=1), axis=1)
    idx = np.minimum((cw < 0.9 * cw[:, -1:]).sum(axis=1), c - 1)
    dp90 = vs[rows, idx]
    out[has] = np.stack([mean, p90, np.sqrt(var), dmean, dp90], axis=1)[has]
    return out


def server_features(n_flow_on_S: np.ndarray, samples_SRK2: np.ndarray, fill_SR: np.ndarray,
                    now_s: Any, decay: float = DECAY_PER_S) -> np.ndarray:
    """Feature matrix (S, len(FEATURE_NAMES)) from per-server ``n_flow_on``, reservoir
    snapshots ``samples_SRK2`` [server, kind (0 fd, 1 fct), slot, (t_s, v_s)] and filled-slot
    counts ``fill_SR`` [server, kind], as in a msg_out frame; ``now_s`` (the data plane's
    clock) is one time or one per server (S,), e.g. when rows come from several LBs' frames."""
    samples = np.asarray(samples_SRK2, dtype=np.float64)
    n_s, n_k, k, _ = samples.shape
    now = np.asarray(now_s, dtype=np.float64)
    stats = reservoir_stats(samples[..., 0].reshape(n_s * n_k, k),
                            samples[..., 1].reshape(n_s * n_k, k),
                            np.asarray(fill_SR).reshape(n_s * n_k),
                            np.repeat(now, n_k) if now.ndim else now, decay)
    out = np.empty((n_s, 1 + 5 * n_k))
    out[:, 0] = np.asarray(n_flow_on_S, dtype=np.float64)
    out[:, 1:] = stats.reshape(n_s, n_k * 5)
    return out


def frame_features(frame: Any, n_servers: int | None = None, decay: float = DECAY_PER_S) -> np.ndarray:
    """Feature matrix of the first ``n_servers`` servers (default all) of a msg_out frame
    (``simulator.shm.OutFrame``), at the frame's publish time ``frame.time_s``."""
    n = frame.servers.shape[0] if n_servers is None else n_servers
    sv = frame.servers[:n]
    return server_features(sv["n_flow_on"], frame.samples_SRK2[:n], sv["fill"], frame.time_s, decay)


def as_dict(features_SF: np.ndarray) -> dict[str, np.ndarray]:
    """Columns of a feature matrix by name (views)."""
    return {name: features_SF[:, j] for j, name in enumerate(FEATURE_NAMES)}
