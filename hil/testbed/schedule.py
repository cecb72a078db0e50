"""The testbed's request schedule: the simulator's own traffic for a config and seed, as arrays.

:func:`build_schedule` draws the arrivals and job sizes with
:func:`simulator.run.make_traffic_source` -- the very source ``marllb sim run`` uses -- so request
``id`` k of the testbed is request k of the simulation (same ``t_arrive_s`` and ``work_s``). On
top of that it fixes, per request:

* ``n_iter`` -- the PHP loop count of ``hil/testbed/www/work.php``:
  ``round(work_s * cpu_per_core * iters_per_cpu_s)``. One simulated core is ``cpu_per_core``
  real CPUs, so a job alone on one simulated core takes ``work_s`` wall seconds;
  ``iters_per_cpu_s`` is the measured loop speed of one real CPU.
* ``lb`` -- the LB the request goes through: a deterministic 64-bit hash of (seed, id) mod
  ``n_lbs`` (the role of the edge router's ECMP; not the simulator's per-5-tuple hash, whose
  ports the testbed's kernel picks).
* ``client`` -- ``id mod n_clients``.

A schedule is saved to / loaded from one ``.npz`` (arrays plus a JSON ``meta`` entry).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np

from simulator.config import ExperimentConfig

__all__ = ["Schedule", "build_schedule", "lb_hash"]

_ARRAYS = ("id", "t_s", "work_s", "n_iter", "lb", "client")
_M64 = (1 << 64) - 1


@dataclasses.dataclass
class Schedule:
    """One run's requests, sorted by ``t_s`` (= by ``id``). ``meta`` holds the scalars it was
    built from (seed, duration_s, n_lbs, n_clients, iters_per_cpu_s, cpu_per_core, ...)."""

    id: np.ndarray        # int64
    t_s: np.ndarray       # float64, arrival time relative to the run start
    work_s: np.ndarray    # float64, CPU seconds on one simulated core
    n_iter: np.ndarray    # int64, PHP loop iterations
    lb: np.ndarray        # int32, LB index 0..n_lbs-1
    client: np.ndarray    # int32, client index 0..n_clients-1
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.id)

    def rows(self, client: int) -> "Schedule":
        """The sub-schedule of one client (same meta)."""
        m = self.client == client
        return Schedule(**{k: getattr(self, k)[m] for k in _ARRAYS}, meta=dict(self.meta))

    def save(self, path: str | Path) -> None:
        """Write one .npz (uncompressed; np.load reads it back exactly)."""
        with open(path, "wb") as fh:  # a file object: np.savez would append .npz to a bare name
            np.savez(fh, **{k: getattr(self, k) for k in _ARRAYS},
                     meta=np.array(json.dumps(self.meta, sort_keys=True)))

    @classmethod
    def load(cls, path: str | Path) -> "Schedule":
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in (*_ARRAYS, "meta") if k not in z.files]
            if missing:
                raise ValueError(f"{path}: not a schedule (missing {', '.join(missing)})")
            return cls(**{k: z[k] for k in _ARRAYS}, meta=json.loads(str(z["meta"])))


def lb_hash(seed: int, ids: np.ndarray, n_lbs: int) -> np.ndarray:
    """splitmix64(splitmix64(seed) + id) mod n_lbs, vectorised: deterministic across runs,
    machines and Python versions (unlike ``hash()`` of str), uniform over the LBs."""
    if n_lbs < 1:
        raise ValueError(f"n_lbs must be >= 1, got {n_lbs}")
    with np.errstate(over="ignore"):
        salt = _splitmix64(np.array([seed & _M64], dtype=np.uint64))[0]
        h = _splitmix64(np.asarray(ids).astype(np.uint64) + salt)
    return (h % np.uint64(n_lbs)).astype(np.int32)


def _splitmix64(x: np.ndarray) -> np.ndarray:
    x = x + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def build_schedule(cfg: ExperimentConfig, *, iters_per_cpu_s: float, cpu_per_core: float,
                   n_lbs: int, n_clients: int) -> Schedule:
    """The requests of ``marllb sim run`` for cfg (and cfg.seed) that arrive by
    ``cfg.duration_s`` -- the simulator's own cut-off (it stops drawing at the first arrival
    ``> duration_s``), so the ids and times equal its requests table row for row."""
    from simulator.run import make_traffic_source

    if not iters_per_cpu_s > 0 or not cpu_per_core > 0:
        raise ValueError("iters_per_cpu_s and cpu_per_core must be > 0")
    if n_clients < 1:
        raise ValueError(f"n_clients must be >= 1, got {n_clients}")
    src = make_traffic_source(cfg)
    end = cfg.duration_s
    ts: list[float] = []
    ws: list[float] = []
    nxt = src.next_request
    while True:
        r = nxt()
        if r is None or r[0] > end:
            break
        ts.append(r[0])
        ws.append(r[1])
    t = np.array(ts, dtype=np.float64)
    w = np.array(ws, dtype=np.float64)
    ids = np.arange(len(t), dtype=np.int64)
    n_iter = np.rint(w * cpu_per_core * iters_per_cpu_s).astype(np.int64)
    meta = {"name": cfg.name, "seed": cfg.seed, "duration_s": cfg.duration_s,
            "warmup_s": cfg.warmup_s, "n_lbs": n_lbs, "n_clients": n_clients,
            "iters_per_cpu_s": iters_per_cpu_s, "cpu_per_core": cpu_per_core,
            "response_bytes": cfg.traffic.response_bytes, "close": cfg.traffic.close}
    return Schedule(id=ids, t_s=t, work_s=w, n_iter=n_iter, lb=lb_hash(cfg.seed, ids, n_lbs),
                    client=(ids % n_clients).astype(np.int32), meta=meta)
