"""A burst of new flows shorter than one RTT, through the whole simulated model.

SED scores a server by its load (n + 1) / w. If n counts only established flows, every SYN of
a burst that arrives before the first handshake completes sees the same loads: with equal
servers the burst is spread by random tie-breaking (binomial, sd ~10 of 125 per server), with
a dominant server all of it goes there. The core counts a flow from its SYN, so a burst is
spread exactly by the weights. Independent truth: the arithmetic of SED over a known burst.
"""

from __future__ import annotations

import numpy as np

from simulator.config import ExperimentConfig
from simulator.run import run_experiment

N_BURST = 1000
BURST_SPAN_S = 100e-6  # 1,000 SYNs in 0.1 ms; the client-LB-server RTT is >= 4 x 50 us


def _burst_run(tmp_path, cores: list[float], policy: str = "sed"):
    t = 1.0 + np.arange(N_BURST) * (BURST_SPAN_S / N_BURST)
    trace = tmp_path / "burst.csv"
    trace.write_text("time,size\n" + "".join(f"{x:.9f},0.5\n" for x in t))
    cfg = ExperimentConfig.model_validate({
        "duration_s": 3, "seed": 1, "policy": {"name": policy},
        "traffic": {"kind": "trace", "path": str(trace)},
        "topology": {"lbs": 1, "servers": [{"cores": c, "workers": 256, "backlog": 1024}
                                           for c in cores]}})
    r = run_experiment(cfg, progress=False)
    per_server = r.requests.groupby("server").size().reindex(range(len(cores)), fill_value=0)
    return per_server.to_numpy(), r


def test_burst_to_equal_servers_is_spread_exactly(tmp_path) -> None:
    counts, r = _burst_run(tmp_path, [1.0] * 8)
    assert counts.sum() == N_BURST
    # SED with pending flows counted: 1,000 over 8 equal servers = 125 each. Random tie-breaking
    # (pending not counted) gives a multinomial spread whose range is < 3 with probability
    # well below 1e-6 (each count has sd 10.5).
    assert counts.max() - counts.min() <= 1, counts


def test_burst_follows_weights_instead_of_herding(tmp_path) -> None:
    # one 8-core and seven 1-core servers: with only established flows counted, the big
    # server's score 1/8 beats every empty small server's 1/1, so the whole burst (which
    # finishes before any handshake) would herd onto it. Counting from the SYN, SED fills the
    # big server to (n+1)/8 ~ the small ones' (n+1)/1: shares 8/15 and 1/15 each.
    counts, _ = _burst_run(tmp_path, [8.0] + [1.0] * 7)
    assert counts.sum() == N_BURST
    expect_big = N_BURST * 8 / 15
    assert abs(counts[0] - expect_big) <= 8, counts
    assert counts[1:].min() >= N_BURST / 15 - 2, counts
