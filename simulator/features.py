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

With the ``robust`` feature set (opt-in: :data:`FEATURE_SETS`, an env's ``features="robust"``)
four more statistics per reservoir follow, in :data:`ROBUST_NAMES`: ``{r}_gmean_s`` geometric
mean exp(mean(log v_i)) (values below 1 µs count as 1 µs); ``{r}_median_s`` the median (as
``p90_s``, at 50 %); ``{r}_recent_gmean_s`` and ``{r}_recent_n`` the geometric mean and the number
of the samples taken within :data:`RECENT_S` of the reservoir's newest one. Why: with heavy-tailed
jobs one long flow moves the mean, the p90 and the std of 32 samples more than a server that
slowed down for seconds does; the logarithm and the median are robust to it, and the recent
samples show a change that the whole reservoir (an exponential mix of ages) dilutes.

The decayed statistics do not depend on ``now``: every weight carries the same factor
decay ** now, which cancels in both. They are computed with weights relative to the reservoir's
newest sample, decay ** (t_newest - t_i) <= 1 (no underflow however old the samples are), so
every feature is a function of the reservoir's content alone, and :class:`FeatureCache`
recomputes only the reservoirs that changed since the previous frame: per step that work is
proportional to the flows that ended, not to the number of servers.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

try:
    from simulator import _stats
except ImportError as exc:  # pragma: no cover - exercised only on a broken install
    raise ImportError("simulator._stats (the reservoir statistics in C) is not built; run "
                      "`pip install -e .` in the repository root (needs a C compiler)") from exc

__all__ = ["DECAY_PER_S", "RECENT_S", "STAT_NAMES", "ROBUST_STAT_NAMES", "RESERVOIR_NAMES", "FEATURE_NAMES",
           "ROBUST_NAMES", "FEATURE_SETS", "feature_names", "reservoir_stats", "server_features",
           "frame_features", "frames_features", "as_dict", "FeatureCache", "samples_stats"]

DECAY_PER_S = 0.9  #: weight of a sample per second of age, for the decayed statistics
STAT_NAMES = ("mean_s", "p90_s", "std_s", "dmean_s", "dp90_s")
RESERVOIR_NAMES = ("fd", "fct")  #: reservoir kinds 0 (flow duration) and 1 (fct), in order
FEATURE_NAMES = ("n_flow_on",) + tuple(f"{r}_{s}" for r in RESERVOIR_NAMES for s in STAT_NAMES)
RECENT_S = 1.0  #: window (s before the newest sample) of the robust set's recent statistics
ROBUST_STAT_NAMES = ("gmean_s", "median_s", "recent_gmean_s", "recent_n")
ROBUST_NAMES = tuple(f"{r}_{s}" for r in RESERVOIR_NAMES for s in ROBUST_STAT_NAMES)
#: the feature sets an agent can observe: the paper's 11 per server, or those and the robust 8
FEATURE_SETS = {"paper": FEATURE_NAMES, "robust": FEATURE_NAMES + ROBUST_NAMES}
_MIN_LOG_S = 1e-6  # floor of a value before its logarithm (this and RECENT_S are also in _stats.c)


def feature_names(feature_set: str) -> tuple[str, ...]:
    """The columns of a feature set by name; UserError naming the choices for an unknown one."""
    try:
        return FEATURE_SETS[feature_set]
    except KeyError:
        from simulator.config import UserError

        raise UserError(f"features {feature_set!r}: unknown; choose one of {', '.join(FEATURE_SETS)}") from None


def _n_stats(robust: bool) -> int:
    """Statistics per reservoir: the paper's 5, with ``robust`` also the 4 robust ones."""
    return len(STAT_NAMES) + (len(ROBUST_STAT_NAMES) if robust else 0)


def reservoir_stats(t_RK: np.ndarray, v_RK: np.ndarray, fill_R: np.ndarray,
                    decay: float = DECAY_PER_S, robust: bool = False) -> np.ndarray:
    """Statistics of R reservoirs at once: row r uses slots [0, fill_R[r]) of t_RK[r]
    (sample times, s) and v_RK[r] (values, s). Returns (R, 5): mean, p90, std, decayed mean,
    decayed p90 (see the module docstring), and with ``robust`` (R, 9): those and geometric
    mean, median, recent geometric mean, recent count; NaN rows for empty reservoirs. One
    compiled pass over the reservoirs (simulator/_stats.c); ValueError for mismatched shapes or
    a fill outside 0..K."""
    t_RK = np.asarray(t_RK, dtype=np.float64)
    v_RK = np.asarray(v_RK, dtype=np.float64)
    if t_RK.ndim != 2 or t_RK.shape != v_RK.shape:
        raise ValueError(f"reservoir_stats: times {t_RK.shape} and values {v_RK.shape} do not "
                         "describe the same (R, K) reservoirs")
    return samples_stats(np.stack([t_RK, v_RK], axis=-1), fill_R, decay, robust)


def samples_stats(samples_RK2: np.ndarray, fill_R: np.ndarray, decay: float = DECAY_PER_S,
                  robust: bool = False, rows: np.ndarray | None = None) -> np.ndarray:
    """:func:`reservoir_stats` of reservoirs given as (time, value) pairs ``samples_RK2``
    [reservoir, slot, (t_s, v_s)], the layout of a msg_out frame's snapshots (no split); with
    ``rows`` only of those reservoirs, in that order (nothing is gathered)."""
    samples = np.ascontiguousarray(samples_RK2, dtype=np.float64)
    fill = np.ascontiguousarray(fill_R, dtype=np.int64).reshape(-1)
    if samples.ndim != 3 or samples.shape[2] != 2 or len(fill) != samples.shape[0]:
        raise ValueError(f"reservoir_stats: samples {samples.shape} and fill {fill.shape} do not "
                         "describe the same (R, K, (t, v)) reservoirs")
    sel = None if rows is None else np.ascontiguousarray(rows, dtype=np.int64).reshape(-1)
    out = np.full((samples.shape[0] if sel is None else len(sel), _n_stats(robust)), np.nan)
    if samples.size and len(out):
        _stats.reservoir_stats(samples, fill, samples.shape[1], float(decay), bool(robust), out, sel)
    return out


def server_features(n_flow_on_S: np.ndarray, samples_SRK2: np.ndarray, fill_SR: np.ndarray,
                    decay: float = DECAY_PER_S, robust: bool = False) -> np.ndarray:
    """Feature matrix (S, len(FEATURE_NAMES)) (``robust``: (S, len(FEATURE_SETS["robust"])))
    from per-server ``n_flow_on``, reservoir
    snapshots ``samples_SRK2`` [server, kind (0 fd, 1 fct), slot, (t_s, v_s)] and filled-slot
    counts ``fill_SR`` [server, kind], as in a msg_out frame (rows may come from several LBs'
    frames). Step after step, :func:`frames_features` gives the same with a cache."""
    samples = np.asarray(samples_SRK2, dtype=np.float64)
    n_s, n_k, k, _ = samples.shape
    fill_R = np.asarray(fill_SR).reshape(n_s * n_k)
    stats = samples_stats(samples.reshape(n_s * n_k, k, 2), fill_R, decay, robust)
    return _matrix(np.asarray(n_flow_on_S, dtype=np.float64), stats, n_s, n_k)


def _matrix(n_on: np.ndarray, stats: np.ndarray, n_s: int, n_k: int) -> np.ndarray:
    """Feature matrix rows (server-major) from n_flow_on and the (S * kinds, 5 or 9) reservoir
    statistics: the paper's columns first, then the robust ones if present."""
    per = stats.reshape(n_s, n_k, stats.shape[1])
    n_paper = len(STAT_NAMES)
    out = np.empty((n_s, 1 + n_k * stats.shape[1]))
    out[:, 0] = n_on
    out[:, 1:1 + n_k * n_paper] = per[:, :, :n_paper].reshape(n_s, -1)
    out[:, 1 + n_k * n_paper:] = per[:, :, n_paper:].reshape(n_s, -1)
    return out


class FeatureCache:
    """Reservoir statistics of the previous call, reused for reservoirs whose content is
    unchanged. A reservoir is taken as unchanged when its fill and the sums of its sample times
    and of its values (unused slots are 0) are all equal to last time: O(R K) additions instead
    of a sort per reservoir. (A changed reservoir with all three equal would need a new sample
    whose time and value exactly cancel a replaced one's; with continuous times this does not
    happen.)"""

    def __init__(self) -> None:
        self._key: np.ndarray | None = None
        self._stats: np.ndarray | None = None
        self.recomputed = 0  #: reservoirs recomputed so far (for benchmarks)

    def update(self, key: np.ndarray, stats_of: Callable[[np.ndarray], np.ndarray],
               robust: bool = False) -> np.ndarray:
        """Statistics (R, 5) (``robust``: (R, 9)) given each reservoir's key (fill, sum of
        times, sum of values) and ``stats_of(idx)`` -> the statistics of the reservoirs idx,
        called for changed ones only, in ascending order. Returned read-only, valid until the
        next update."""
        width = _n_stats(robust)
        if self._key is None or self._key.shape != key.shape or self._stats.shape[1] != width:
            changed = np.ones(len(key), dtype=bool)
            self._stats = np.full((len(key), width), np.nan)
        else:
            changed = (key != self._key).any(axis=1)
        idx = np.flatnonzero(changed)
        if len(idx):
            self._stats[idx] = stats_of(idx)
        self._key = key
        self.recomputed += len(idx)
        out = self._stats.view()  # the callers copy it into their feature matrix: no copy here
        out.flags.writeable = False
        return out


def frames_features(frames: Sequence[Any], n_servers: int, cache: FeatureCache,
                    decay: float = DECAY_PER_S, robust: bool = False) -> np.ndarray:
    """:func:`server_features` of the first ``n_servers`` servers of several msg_out frames (one
    per LB), rows LB by LB, with ``cache`` holding their reservoirs' statistics between calls.
    Equal to concatenating the frames' arrays and calling server_features on them, but
    without copying the frames' samples: only the reservoirs that changed are recomputed,
    read in place from each frame (at 64 LBs x 1,024 servers a step's samples are ~67 MB; a
    step's changed reservoirs are a few % of them, a recorded step's of a static policy all)."""
    n = n_servers
    n_on = np.concatenate([f.servers["n_flow_on"][:n] for f in frames]).astype(np.float64)
    samples = [f.samples_SRK2[:n] for f in frames]  # (n, kinds, K, (t, v)) views
    n_k, k = samples[0].shape[1], samples[0].shape[2]
    fill = np.concatenate([np.asarray(f.servers["fill"][:n]).reshape(-1) for f in frames])
    # per reservoir (sum of times, sum of values): one matrix product over each frame's
    # contiguous samples (numpy's sum over the slot axis is strided and ~20x slower here)
    pick = np.zeros((2 * k, 2))
    pick[0::2, 0] = pick[1::2, 1] = 1.0
    sums = np.concatenate([np.ascontiguousarray(sm).reshape(-1, 2 * k) @ pick for sm in samples])
    key = np.column_stack([fill.astype(np.float64), sums])
    fill64 = fill.astype(np.int64)
    per = n * n_k

    def stats_of(idx: np.ndarray) -> np.ndarray:
        # idx ascends (FeatureCache.update), so frame j's reservoirs are idx[bounds[j]:bounds[j + 1]],
        # computed straight from the frame's (n * kinds, K, 2) view: nothing gathered
        bounds = np.searchsorted(idx, np.arange(len(samples) + 1) * per)
        return np.concatenate([samples_stats(sm.reshape(per, k, 2), fill64[j * per:(j + 1) * per], decay, robust,
                                             rows=idx[bounds[j]:bounds[j + 1]] - j * per)
                               for j, sm in enumerate(samples) if bounds[j] < bounds[j + 1]])

    return _matrix(n_on, cache.update(key, stats_of, robust), len(frames) * n, n_k)


def frame_features(frame: Any, n_servers: int | None = None, decay: float = DECAY_PER_S,
                   robust: bool = False) -> np.ndarray:
    """Feature matrix of the first ``n_servers`` servers (default all) of a msg_out frame
    (``simulator.shm.OutFrame``)."""
    n = frame.servers.shape[0] if n_servers is None else n_servers
    sv = frame.servers[:n]
    return server_features(sv["n_flow_on"], frame.samples_SRK2[:n], sv["fill"], decay, robust)


def as_dict(features_SF: np.ndarray) -> dict[str, np.ndarray]:
    """Columns of a feature matrix (the paper's set or the robust one) by name (views)."""
    names = FEATURE_SETS["robust"] if features_SF.shape[1] == len(FEATURE_SETS["robust"]) else FEATURE_NAMES
    return {name: features_SF[:, j] for j, name in enumerate(names)}
