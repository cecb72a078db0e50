"""A minimal plain-SimPy flow-level reference model (for the speed benchmark only).

The "naive" way to write the simulator: clients -> LB -> servers with SED on the LB's count of
ongoing flows and static weights = cores, one SimPy process per request, each server a
``simpy.Resource`` with ``cores`` slots (FIFO, M/G/c), fixed one-way network delay per hop.
No packets, no data-plane core. Its requests/s is the yardstick the packet-level model must match.
With ``policy="wcmp"`` the server is drawn at random with probability proportional to its cores
(precomputed draws: O(1) per request, where SED's scan is O(servers)), so that its cost per
request at thousands of servers measures the event loop alone (bench/sim_scale).
"""

from __future__ import annotations

import time
from typing import Sequence

import numpy as np
import simpy

__all__ = ["run_reference"]


def run_reference(cores: Sequence[float], rate_per_s: float, mean_job_s: float, duration_s: float,
                  seed: int = 0, hop_delay_s: float = 50e-6, policy: str = "sed") -> dict[str, float]:
    """Run the reference model; returns requests, completed, mean JCT (s), wall_s, requests/s
    (``policy``: "sed" or "wcmp")."""
    if policy not in ("sed", "wcmp"):
        raise ValueError(f"policy must be 'sed' or 'wcmp', got {policy!r}")
    env = simpy.Environment()
    rng = np.random.default_rng(seed)
    res = [simpy.Resource(env, capacity=max(1, int(round(c)))) for c in cores]
    n_on = [0] * len(cores)
    w = [float(c) for c in cores]
    jcts: list[float] = []
    arrived = [0]

    draws = rng.choice(len(w), size=1 << 20, p=np.array(w) / sum(w)) if policy == "wcmp" else None

    def request(work: float, n: int):
        t0 = env.now
        yield env.timeout(2 * hop_delay_s)  # client -> router -> LB
        if draws is None:
            s = min(range(len(res)), key=lambda i: (n_on[i] + 1) / w[i])  # SED
        else:
            s = int(draws[n & ((1 << 20) - 1)])
        n_on[s] += 1
        yield env.timeout(hop_delay_s)  # LB -> server
        with res[s].request() as slot:
            yield slot
            yield env.timeout(work)
        n_on[s] -= 1
        yield env.timeout(2 * hop_delay_s)  # DSR reply
        jcts.append(env.now - t0)

    def clients():
        gaps = rng.exponential(1.0 / rate_per_s, 1 << 20)
        works = rng.exponential(mean_job_s, 1 << 20)
        i = 0
        while True:
            yield env.timeout(gaps[i])
            env.process(request(works[i], i))
            arrived[0] += 1
            i += 1

    env.process(clients())
    t = time.perf_counter()
    env.run(until=duration_s)
    wall = time.perf_counter() - t
    n = arrived[0]
    return {"requests": float(n), "completed": float(len(jcts)), "jct_mean_s": float(np.mean(jcts)),
            "wall_s": wall, "requests_per_s": n / wall}
