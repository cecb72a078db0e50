"""Behaviour of the Python binding of the C data-plane core (simulator.dataplane)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from simulator.dataplane import (
    KEY_DTYPE,
    DataPlaneCore,
    DataPlaneError,
    FlowState,
    Policy,
    WeightVerdict,
    ffi,
    lib,
    make_keys,
)
from tests.core.trace import ACK, FIN, PSH, RST, SYN, random_trace

POLICIES = ["ecmp", "wcmp", "lsq", "sed", "lsq2", "sed2"]


def make_core(n: int = 8, **kw) -> DataPlaneCore:
    kw.setdefault("table_size", 1 << 12)
    core = DataPlaneCore(16, **kw)
    for i in range(n):
        core.add_server(i, 1.0 + i % 3)
    return core


def test_key_layout_matches_c() -> None:
    """make_keys builds the exact bytes of lb_rl_5tuple_t for 10.0.0.1:1234 -> 10.1.0.1:80."""
    k = make_keys(0x0A000001, 0x0A010001, 1234, 80, 6)
    assert k.dtype == KEY_DTYPE and KEY_DTYPE.itemsize == ffi.sizeof("lb_rl_5tuple_t") == 40
    c = ffi.new("lb_rl_5tuple_t *")
    c.src[10] = c.src[11] = c.dst[10] = c.dst[11] = 0xFF
    for j, b in enumerate((10, 0, 0, 1)):
        c.src[12 + j] = b
    for j, b in enumerate((10, 1, 0, 1)):
        c.dst[12 + j] = b
    c.src_port, c.dst_port, c.proto = 1234, 80, 6
    assert bytes(ffi.buffer(c)) == k.tobytes()
    assert lib.lb_rl_key_hash(c) == make_core(1).key_hash(k[0])


def test_make_keys_broadcasts() -> None:
    k = make_keys(np.arange(5) + 0x0A000000, 0x0A010001, 1000 + np.arange(5), 80)
    assert k.shape == (5,)
    assert list(k["src"][3, 12:]) == [10, 0, 0, 3]
    assert list(k["src_port"]) == [1000, 1001, 1002, 1003, 1004]
    assert np.all(k["proto"] == 6)


def test_tcp_lifecycle_and_gauge() -> None:
    core = make_core(4, policy="lsq")
    k = make_keys(0x0A000001, 0x0A010001, 4000, 80)[0]
    s = core.process(1.0, k, SYN, 60)
    assert core.flow(k)[:2] == (FlowState.SYN, s)
    assert core.process(1.1, k, ACK, 52) == s
    assert core.server_counters(s)["n_flow_on"] == 1
    assert core.process(1.5, k, ACK | PSH, 500) == s
    assert core.process(2.0, k, FIN | ACK, 52) == s
    c = core.server_counters(s)
    assert (c["n_flow_on"], c["n_flow_closed"], c["packets"], c["bytes"]) == (0, 1, 4, 664)
    t, v = core.reservoir(s, "fct")
    assert list(t) == [2.0] and list(v) == [1.0]
    t, v = core.reservoir(s, "flow_duration")
    assert list(t) == [1.5] and list(v) == [0.5]
    # the last ACK within linger still reaches s
    assert core.process(2.5, k, ACK, 52) == s
    # RST of an established flow on another key
    k2 = make_keys(0x0A000002, 0x0A010001, 4000, 80)[0]
    s2 = core.process(3.0, k2, SYN, 60)
    core.process(3.1, k2, ACK, 52)
    assert sum(core.server_counters(i)["n_flow_on"] for i in range(4)) == 1
    core.process(3.2, k2, RST, 40)
    assert all(core.server_counters(i)["n_flow_on"] == 0 for i in range(4))
    assert core.server_counters(s2)["n_flow_closed"] >= 1


def test_timeout_and_expire() -> None:
    core = make_core(2, flow_timeout_s=5.0)
    keys = make_keys(0x0A000000 + np.arange(10), 0x0A010001, 5000, 80)
    for k in keys:
        core.process(0.0, k, SYN, 60)
        core.process(0.1, k, ACK, 52)
    assert sum(core.server_counters(i)["n_flow_on"] for i in range(2)) == 10
    assert core.expire(5.0) == 0
    assert core.expire(5.2, budget=4) == 4
    assert core.expire(5.2) == 6
    c = core.counters()
    assert (c["timeouts"], c["tracked_flows"]) == (10, 0)
    assert sum(core.server_counters(i)["n_flow_on"] for i in range(2)) == 0
    t, v = core.reservoir(0, "fct")
    assert np.allclose(v, 0.1) and np.all(t == 5.2)


@pytest.mark.parametrize("policy", POLICIES)
def test_stickiness_across_weight_and_policy_changes(policy: str, rng: np.random.Generator) -> None:
    core = make_core(8, policy=policy, seed=5)
    keys = make_keys(0x0A000000 + np.arange(500), 0x0A010001, 2000, 80)
    n = len(keys)
    first = core.process_batch(np.zeros(n), keys, np.full(n, SYN), np.full(n, 60))
    core.process_batch(np.full(n, 0.01), keys, np.full(n, ACK), np.full(n, 52))
    for step in range(5):
        assert core.set_weights(rng.uniform(0.5, 3.0, 8)) == WeightVerdict.OK
        core.set_policy(POLICIES[(POLICIES.index(policy) + step + 1) % len(POLICIES)])
        if step == 2:
            core.drain(1)
        out = core.process_batch(np.full(n, 0.1 + step), keys, np.full(n, ACK), np.full(n, 100))
        assert np.array_equal(out, first)


def test_batch_equals_sequential(rng: np.random.Generator) -> None:
    """process_batch (in chunks of random sizes, with forced choices) gives exactly the
    results, counters and reservoirs of one process() call per packet."""
    tr = random_trace(rng, 1500, key_space=1200)
    n = len(tr["now"])
    forced = np.where(rng.random(n) < 0.1, rng.integers(-1, 9, n), -1).astype(np.int32)
    a = make_core(8, policy="sed2", seed=9, table_size=256, flow_timeout_s=0.5)
    b = make_core(8, policy="sed2", seed=9, table_size=256, flow_timeout_s=0.5)
    seq = np.array(
        [
            a.process(tr["now"][i], tr["keys"][i], int(tr["flags"][i]), int(tr["lengths"][i]),
                      int(forced[i]))
            for i in range(n)
        ],
        dtype=np.int32,
    )
    out, i = [], 0
    while i < n:
        m = int(rng.integers(1, 50))
        sl = slice(i, i + m)
        out.append(b.process_batch(tr["now"][sl], tr["keys"][sl], tr["flags"][sl],
                                   tr["lengths"][sl], forced[sl]))
        i += m
    assert np.array_equal(np.concatenate(out), seq)
    assert a.counters() == b.counters()
    c = a.counters()
    assert c["untracked_full"] > 0 and c["timeouts"] > 0  # the small table did fill
    for s in range(8):
        assert a.server_counters(s) == b.server_counters(s)
        for kind in ("flow_duration", "fct"):
            ta, va = a.reservoir(s, kind)
            tb, vb = b.reservoir(s, kind)
            assert np.array_equal(ta, tb) and np.array_equal(va, vb)


def test_every_packet_of_a_tracked_flow_goes_to_one_server(rng: np.random.Generator) -> None:
    tr = random_trace(rng, 3000)
    core = make_core(16, policy="wcmp", table_size=1 << 14)
    out = core.process_batch(tr["now"], tr["keys"], tr["flags"], tr["lengths"])
    assert core.counters()["untracked_full"] == 0
    for f in np.unique(tr["flow"]):
        servers = out[tr["flow"] == f]
        assert np.all(servers == servers[0]), f"flow {f} split over {set(servers)}"


def test_no_leak_after_all_flows_end(rng: np.random.Generator) -> None:
    tr = random_trace(rng, 2000)
    core = make_core(8, policy="lsq2", flow_timeout_s=2.0)
    core.process_batch(tr["now"], tr["keys"], tr["flags"], tr["lengths"])
    core.expire(float(tr["now"][-1]) + 10.0)
    assert core.counters()["tracked_flows"] == 0
    assert all(core.server_counters(i)["n_flow_on"] == 0 for i in range(8))
    ended = sum(core.server_counters(i)["n_flow_closed"] + core.server_counters(i)["n_flow_timeout"]
                for i in range(8))
    assert ended == 2000  # every flow was established once and ended exactly once


@pytest.mark.parametrize("policy", POLICIES)
def test_determinism_by_seed(policy: str, rng: np.random.Generator) -> None:
    tr = random_trace(rng, 800)

    def run(seed: int) -> np.ndarray:
        core = make_core(8, policy=policy, seed=seed)
        return core.process_batch(tr["now"], tr["keys"], tr["flags"], tr["lengths"])

    assert np.array_equal(run(3), run(3))
    if policy != "ecmp":  # every other policy draws from the RNG (ties or candidates)
        assert not np.array_equal(run(3), run(4))


def test_untracked_miss_is_hash_forwarded() -> None:
    core = make_core(8, policy="sed")
    k = make_keys(0x0A0000AA, 0x0A010001, 7777, 80)[0]
    s = core.process(1.0, k, ACK, 100)
    assert s == core.untracked_bucket(core.key_hash(k) & 1023)
    assert core.counters()["untracked_miss"] == 1
    assert core.flow(k)[0] == FlowState.NONE
    # a plain tuple (src_ip_u32, dst_ip_u32, sport, dport, proto) names the same flow
    assert core.process(1.1, (0x0A0000AA, 0x0A010001, 7777, 80, 6), ACK, 100) == s
    assert core.key_hash((0x0A0000AA, 0x0A010001, 7777, 80, 6)) == core.key_hash(k)


def test_weights_verdicts_and_last_good() -> None:
    core = make_core(3)
    assert core.set_weights([1.0, 2.0, 3.0]) == WeightVerdict.OK
    assert core.set_weights([1.0, math.nan, 1.0]) == WeightVerdict.NONFINITE
    assert core.set_weights([1.0, -1.0, 1.0]) == WeightVerdict.NEGATIVE
    assert core.set_weights([0.0, 0.0, 0.0]) == WeightVerdict.ALL_ZERO
    assert core.set_weights([1.0, 1.0, 1.0, 1.0]) == WeightVerdict.ABSENT_SERVER
    assert core.set_weights([]) == WeightVerdict.BAD_COUNT
    assert core.set_weights(np.ones(4097)) == WeightVerdict.BAD_COUNT  # > LB_RL_MAX_SERVERS
    assert core.set_weights(np.ones(65)) == WeightVerdict.ABSENT_SERVER  # servers 3.. absent
    assert list(core.weights[:4]) == [1.0, 2.0, 3.0, 0.0]
    c = core.counters()
    assert (c["weight_updates"], c["weight_rejects"]) == (1, 7)
    core.use_static_weights()
    assert list(core.weights[:3]) == [1.0, 2.0, 3.0]  # static = 1 + i % 3


def test_server_errors_and_remove() -> None:
    core = make_core(2)
    with pytest.raises(DataPlaneError, match="already present"):
        core.add_server(0)
    with pytest.raises(DataPlaneError, match="not present"):
        core.remove_server(5)
    with pytest.raises(DataPlaneError):
        core.add_server(2, -1.0)
    k = make_keys(0x0A000001, 0x0A010001, 1, 80)[0]
    s = core.process(0.0, k, SYN, 60, forced=1)
    assert s == 1
    core.process(0.1, k, ACK, 60)
    core.remove_server(1)
    assert core.present == [0]
    assert core.server_counters(1)["n_flow_on"] == 0
    assert core.process(0.2, k, ACK, 60) == 0  # lost, hash-forwarded to the only server
    assert core.counters()["flows_lost"] == 1
    core.remove_server(0)
    assert core.process(0.3, k, SYN, 60) == lib.LB_RL_E_NO_SERVER


def test_config_errors_and_policy_names() -> None:
    with pytest.raises(DataPlaneError, match="table_size"):
        DataPlaneCore(4, table_size=1000)
    with pytest.raises(DataPlaneError, match="max_servers must be in 1..4096"):
        DataPlaneCore(4097)
    with pytest.raises(DataPlaneError, match="max_servers"):
        DataPlaneCore(0)
    big = DataPlaneCore(4096, table_size=1 << 10)
    big.add_server(4095, 2.0)
    assert big.present == [4095]
    with pytest.raises(ValueError, match="unknown policy"):
        DataPlaneCore(4, policy="round_robin")
    core = DataPlaneCore(4, policy="SED2")
    assert core.policy == Policy.SED2
    core.set_policy(Policy.WCMP)
    assert core.policy == Policy.WCMP
    assert [p.name.lower() for p in Policy] == POLICIES


def test_wcmp_matches_weights(rng: np.random.Generator) -> None:
    """Chi-square goodness of fit of 100k WCMP decisions to the weights (reject if p < 1e-4)."""
    stats = pytest.importorskip("scipy.stats", reason="scipy (dev extra) not installed")

    w = np.array([0.5, 1.0, 2.0, 4.0, 1.5])
    core = DataPlaneCore(5, table_size=1 << 19, policy="wcmp", seed=11)
    for i, wi in enumerate(w):
        core.add_server(i, wi)
    n = 100_000
    keys = make_keys(0x0A000000 + (np.arange(n) >> 10), 0x0A010001, np.arange(n) & 1023, 80)
    out = core.process_batch(np.zeros(n), keys, np.full(n, SYN), np.full(n, 60))
    assert core.counters()["untracked_full"] == 0
    counts = np.bincount(out, minlength=5)
    p = stats.chisquare(counts, n * w / w.sum()).pvalue
    assert p >= 1e-4, (counts, p)


def test_bulk_add_equals_adding_one_by_one() -> None:
    """add_servers (one table rebuild) gives the same servers, weights, ECMP buckets and SED
    choices as n add_server calls; the weighted table of untracked flows may differ (it is
    built with minimal moves from the previous one) but follows the same weights."""
    n, nb = 300, 4096
    ws = [1.0 + i % 3 for i in range(n)]
    one = DataPlaneCore(n, policy="sed", seed=5, ecmp_buckets=nb)
    for i, w in enumerate(ws):
        one.add_server(i, w)
    bulk = DataPlaneCore(n, policy="sed", seed=5, ecmp_buckets=nb)
    bulk.add_servers(ws)
    assert bulk.present == one.present == list(range(n))
    np.testing.assert_array_equal(bulk.weights[:n], one.weights[:n])
    assert [bulk.ecmp_bucket(b) for b in range(nb)] == [one.ecmp_bucket(b) for b in range(nb)]
    keys = make_keys(np.arange(2000, dtype=np.uint64) + 0x0A000001, 0x0A010001, 1000, 80)
    assert [bulk.process(0.0, k, SYN, 60) for k in keys] == [one.process(0.0, k, SYN, 60) for k in keys]
    counts = np.bincount([bulk.untracked_bucket(b) for b in range(nb)], minlength=n)
    share = np.array(ws) / sum(ws)
    assert np.all(np.abs(counts / nb - share) <= 1.0 / nb + 1e-12)  # largest-remainder quotas


def test_bulk_add_is_all_or_nothing() -> None:
    core = DataPlaneCore(8)
    core.add_server(3)
    for bad in ([1.0] * 4, [1.0, math.nan], [1.0] * 9):  # 3 present; NaN; more than max_servers
        with pytest.raises(DataPlaneError):
            core.add_servers(bad)
        assert core.present == [3]
