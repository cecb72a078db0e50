"""Each LB publishes its state every lb.step_s as an shm frame (C writer), read back here with the
independent pure-Python reader simulator/shm.py and compared with the core's own counters at
that instant; the steps table's features are the frame's; a file region when lb.shm_dir is set.
The feature function is checked against a slow per-server computation written from its
definition."""

from __future__ import annotations

import math

import numpy as np
import pytest

from simulator.config import ExperimentConfig
from simulator.features import FEATURE_NAMES, frame_features, server_features
from simulator.run import build_simulation, collect
from simulator.shm import ShmRegion

STEP_S = 0.25


def _cfg(policy: str = "sed", **lb) -> ExperimentConfig:
    return ExperimentConfig.model_validate({
        "seed": 5, "duration_s": 3.0, "topology": {"preset": "moderate"},
        "traffic": {"load": 0.8, "job": {"mean_s": 0.05}},
        "policy": {"name": policy}, "lb": {"step_s": STEP_S, "reservoir_size": 16, **lb}})


class _Checker:
    """Wraps the run's controller; at every step (right after the frame is published) reads
    the region with simulator.shm and compares it with the core."""

    def __init__(self, sim, inner) -> None:
        self.sim, self.inner = sim, inner
        self.core_policy = inner.core_policy
        self.readers = [ShmRegion.from_buffer(lb.shm.buffer, role="reader") for lb in sim.lbs]
        self.seen: list[tuple[int, float, int]] = []
        self.max_fill = 0

    def static_weights(self, cores):
        return self.inner.static_weights(cores)

    def start(self, sim) -> None:
        self.inner.start(sim)

    def force(self, now_s: float, lb: int) -> int:
        return self.inner.force(now_s, lb)

    def on_step(self, now_s: float, lb: int, feats: dict[str, np.ndarray]):
        f = self.readers[lb].latest_out()
        dp = self.sim.lbs[lb].dp
        n = self.sim.n_servers
        assert f is not None and f.time_s == now_s
        self.seen.append((lb, now_s, f.seq))
        assert f.active == (1 << n) - 1
        assert f.counters["packets"] == dp.counters()["packets"]
        for i in range(n):
            c = dp.server_counters(i)
            sv = f.servers[i]
            assert sv["n_flow_on"] == c["n_flow_on"]
            assert sv["packets"] == c["packets"] and sv["bytes"] == c["bytes"]
            assert sv["n_flow_new"] == c["n_flow_new"]
            for kind, name in ((0, "flow_duration"), (1, "fct")):
                t, v = dp.reservoir(i, name)
                assert sv["fill"][kind] == len(t) == min(16, c[f"n_samples_{name}"])
                r = f.reservoir(i, kind)
                assert np.array_equal(r[:, 0], t) and np.array_equal(r[:, 1], v)
                self.max_fill = max(self.max_fill, len(t))
        assert np.array_equal(f.servers["weight"][:n], dp.weights[:n])
        # the features handed to the controller are the frame's
        assert np.array_equal(feats["n_flow_on"], f.servers["n_flow_on"][:n].astype(float))
        m = frame_features(f, n)
        for j, name in enumerate(FEATURE_NAMES):
            assert np.array_equal(feats[name], m[:, j], equal_nan=True), name
        return self.inner.on_step(now_s, lb, feats)


def test_frames_match_the_core_every_step() -> None:
    sim = build_simulation(_cfg())
    chk = _Checker(sim, sim.controller)
    sim.controller = chk
    sim.run()
    n_steps = int(round(3.0 / STEP_S))
    assert len(chk.seen) == n_steps * sim.n_lbs
    for k in range(sim.n_lbs):
        seqs = [s for lb, _, s in chk.seen if lb == k]
        times = [t for lb, t, _ in chk.seen if lb == k]
        assert seqs == list(range(1, n_steps + 1))
        assert times == pytest.approx([STEP_S * (i + 1) for i in range(n_steps)])
    assert chk.max_fill == 16  # reservoirs did fill up
    steps = collect(sim, 0.0).steps
    assert len(steps) == n_steps * sim.n_lbs * sim.n_servers
    assert steps["n_flow_on"].max() > 0


def test_file_region_when_asked(tmp_path) -> None:
    sim = build_simulation(_cfg(shm_dir=str(tmp_path)))
    sim.run()
    for k, name in enumerate(sim.lb_names):
        with ShmRegion.open(tmp_path / f"{name}.shm", role="reader") as r:
            f = r.latest_out()
            assert f.seq == 12 and f.time_s == pytest.approx(3.0)
            dp = sim.lbs[k].dp
            assert [int(x) for x in f.servers["n_flow_on"][: sim.n_servers]] == [
                dp.server_counters(i)["n_flow_on"] for i in range(sim.n_servers)]
            assert r.max_servers == sim.n_servers and r.reservoir_slots == 16


def test_unread_in_memory_frames_are_not_published_and_change_nothing(tmp_path) -> None:
    """A static policy reads no features: with an in-memory region only the recorded steps
    (every 4th of 12) publish a frame, with a file region every step does; the requests and
    steps tables are the same either way (publishing only reads the core)."""
    mem = build_simulation(_cfg("wcmp", record_every=4))
    assert mem.controller.reads_features is False
    mem.run()
    f = mem.lbs[0].reader.latest_out()
    assert f.seq == 3 and f.time_s == pytest.approx(3.0)  # steps 4, 8 and 12
    dp = mem.lbs[0].dp
    assert [int(x) for x in f.servers["n_flow_on"][: mem.n_servers]] == [
        dp.server_counters(i)["n_flow_on"] for i in range(mem.n_servers)]
    shared = build_simulation(_cfg("wcmp", record_every=4, shm_dir=str(tmp_path)))
    shared.run()
    assert shared.lbs[0].reader.latest_out().seq == 12
    a, b = collect(mem, 0.0), collect(shared, 0.0)
    assert len(a.requests) > 500 and len(a.steps) == 3 * mem.n_lbs * mem.n_servers
    assert a.requests.equals(b.requests) and a.steps.equals(b.steps)


def _slow_stats(t: np.ndarray, v: np.ndarray, now: float) -> list[float]:
    if len(v) == 0:
        return [math.nan] * 5
    w = 0.9 ** (now - t)
    order = np.argsort(v, kind="stable")
    acc, dp90 = 0.0, math.nan
    for j in order:  # smallest value whose cumulative weight reaches 90 % of the total
        acc += w[j]
        if acc >= 0.9 * w.sum() * (1 - 1e-12):
            dp90 = v[j]
            break
    return [v.mean(), float(np.quantile(v, 0.9)), v.std(), float((w * v).sum() / w.sum()), dp90]


def test_features_from_definitions() -> None:
    rng = np.random.default_rng(3)
    n_s, k, now = 5, 12, 10.0
    samples = np.zeros((n_s, 2, k, 2))
    fill = rng.integers(0, k + 1, (n_s, 2))
    fill[0, 0] = 0
    fill[1, 1] = 1
    fill[2, 0] = k
    for s in range(n_s):
        for r in range(2):
            samples[s, r, : fill[s, r], 0] = now - rng.uniform(0, 8, fill[s, r])
            samples[s, r, : fill[s, r], 1] = rng.lognormal(-2, 1, fill[s, r])
    n_on = rng.integers(0, 30, n_s)
    got = server_features(n_on, samples, fill)
    assert got.shape == (n_s, len(FEATURE_NAMES))
    for s in range(n_s):
        want = [float(n_on[s])]
        for r in range(2):
            want += _slow_stats(samples[s, r, : fill[s, r], 0], samples[s, r, : fill[s, r], 1], now)
        np.testing.assert_allclose(got[s], want, rtol=1e-12, equal_nan=True)
    # decay favours recent samples: an old large value moves the decayed mean less than the mean
    samples2 = np.zeros((1, 2, 2, 2))
    samples2[0, 0] = [[now - 20.0, 1.0], [now, 0.1]]
    f = server_features([0], samples2, [[2, 0]])[0]
    assert f[1] == pytest.approx(0.55) and f[4] == pytest.approx((0.9 ** 20 + 0.1) / (0.9 ** 20 + 1))


def test_feature_cache_equals_recomputing_every_step() -> None:
    """Reservoirs change a few at a time (a sample replaced, a reservoir filled, one emptied as
    when a server is re-added, one refilled with other samples to its old fill); the cached
    matrix equals a fresh computation every time, and only changed reservoirs are recomputed."""
    from types import SimpleNamespace

    from simulator.features import FeatureCache, frames_features

    rng = np.random.default_rng(11)
    n_s, k = 40, 8
    rec = np.dtype([("n_flow_on", "<i8"), ("fill", "<u4", (2,))])
    frame = SimpleNamespace(servers=np.zeros(n_s, rec), samples_SRK2=np.zeros((n_s, 2, k, 2)))
    samples, fill = frame.samples_SRK2, frame.servers["fill"]
    cache = FeatureCache()
    now = 0.0
    for step in range(60):
        now += 0.25
        changed = rng.choice(n_s * 2, size=rng.integers(0, 6), replace=False)
        for c in changed:
            s, r = divmod(int(c), 2)
            if fill[s, r] < k:
                fill[s, r] += 1
                slot = fill[s, r] - 1
            else:
                slot = rng.integers(k)
            samples[s, r, slot] = [now - rng.uniform(0, 0.2), rng.lognormal(-2, 1)]
        if step == 30:  # server 3 re-added: reservoirs emptied
            samples[3] = 0.0
            fill[3] = 0
        if step == 40:  # and refilled to its old fill with other samples
            fill[3] = fill[4]
            samples[3] = samples[4] * 1.5
        n_on = frame.servers["n_flow_on"] = rng.integers(0, 9, n_s)
        before = cache.recomputed
        got = frames_features([frame], n_s, cache)
        np.testing.assert_array_equal(got, server_features(n_on, samples, fill))
        if step:
            assert cache.recomputed - before <= len(changed) + (2 if step in (30, 40) else 0)


def test_feature_cache_hands_out_its_statistics_read_only() -> None:
    from simulator.features import FeatureCache

    cache = FeatureCache()
    stats = cache.update(np.zeros((3, 3)), lambda idx: np.ones((len(idx), 5)))
    assert stats.shape == (3, 5) and not stats.flags.writeable
    with pytest.raises(ValueError):
        stats[0, 0] = 2.0  # the cache's own rows: a caller cannot change them


def test_frames_features_equal_the_concatenated_computation() -> None:
    """Several LBs' frames at once (the simulator's step) give the rows server_features gives
    for their concatenated arrays, step after step with the reservoirs changing."""
    from types import SimpleNamespace

    from simulator.features import FeatureCache, frames_features

    rng = np.random.default_rng(5)
    n_lb, n_s, n, k = 3, 7, 5, 6  # frames carry 7 servers, the run uses the first 5
    rec = np.dtype([("n_flow_on", "<i8"), ("fill", "<u4", (2,))])
    frames = [SimpleNamespace(servers=np.zeros(n_s, rec), samples_SRK2=np.zeros((n_s, 2, k, 2))) for _ in range(n_lb)]
    cache = FeatureCache()
    for step in range(20):
        for f in frames:
            f.servers["n_flow_on"] = rng.integers(0, 9, n_s)
            for _ in range(rng.integers(0, 4)):
                s, r = rng.integers(n_s), rng.integers(2)
                slot = min(int(f.servers["fill"][s, r]), k - 1)
                f.servers["fill"][s, r] = slot + 1
                f.samples_SRK2[s, r, slot] = [step * 0.25 - rng.uniform(0, 0.2), rng.lognormal(-2, 1)]
        got = frames_features(frames, n, cache)
        np.testing.assert_array_equal(got, server_features(
            np.concatenate([f.servers["n_flow_on"][:n] for f in frames]),
            np.concatenate([f.samples_SRK2[:n] for f in frames]),
            np.concatenate([f.servers["fill"][:n] for f in frames])))


def test_robust_features_by_hand() -> None:
    """The robust set's four statistics per reservoir, computed by hand for two reservoirs, come
    after the paper's eleven columns (which stay exactly as without it)."""
    from simulator.features import FEATURE_SETS, ROBUST_NAMES, as_dict

    samples = np.zeros((2, 2, 4, 2))
    # server 0, fd: values 0.1, 0.2, 0.4, 0.8 taken at 0, 0.5, 1.2, 1.6 s (newest 1.6: the last
    # second holds the samples at 1.2 and 1.6); its fct reservoir is empty
    samples[0, 0] = [[0.0, 0.1], [0.5, 0.2], [1.2, 0.4], [1.6, 0.8]]
    # server 1, fct: one sample of 0 (counts as 1 µs in the logarithm) and one of 0.5, 3 s apart
    samples[1, 1, :2] = [[1.0, 0.0], [4.0, 0.5]]
    fill = np.array([[4, 0], [0, 2]])
    paper = server_features([3, 1], samples, fill)
    got = server_features([3, 1], samples, fill, robust=True)
    assert got.shape == (2, len(FEATURE_SETS["robust"])) == (2, 19)
    np.testing.assert_array_equal(got[:, :len(FEATURE_NAMES)], paper)
    d = as_dict(got)
    assert list(d) == list(FEATURE_NAMES) + list(ROBUST_NAMES) == list(FEATURE_SETS["robust"])
    assert d["fd_gmean_s"][0] == pytest.approx((0.1 * 0.2 * 0.4 * 0.8) ** 0.25)
    assert d["fd_median_s"][0] == pytest.approx(0.3)
    assert d["fd_recent_gmean_s"][0] == pytest.approx((0.4 * 0.8) ** 0.5)
    assert d["fd_recent_n"][0] == 2
    assert all(math.isnan(d[f"fct_{s}"][0]) for s in ("gmean_s", "median_s", "recent_gmean_s", "recent_n"))
    assert all(math.isnan(d[f"fd_{s}"][1]) for s in ("gmean_s", "median_s", "recent_gmean_s", "recent_n"))
    assert d["fct_gmean_s"][1] == pytest.approx((1e-6 * 0.5) ** 0.5)
    assert d["fct_median_s"][1] == pytest.approx(0.25)
    assert d["fct_recent_gmean_s"][1] == pytest.approx(0.5) and d["fct_recent_n"][1] == 1


def test_robust_frames_features_equal_the_direct_computation_and_switch_sets() -> None:
    """The cached multi-frame path gives server_features' robust matrix; a cache that held the
    paper's statistics recomputes every reservoir when the robust set is asked for, and back."""
    from types import SimpleNamespace

    from simulator.features import FeatureCache, frames_features

    rng = np.random.default_rng(8)
    n_s, k = 6, 5
    rec = np.dtype([("n_flow_on", "<i8"), ("fill", "<u4", (2,))])
    frame = SimpleNamespace(servers=np.zeros(n_s, rec), samples_SRK2=np.zeros((n_s, 2, k, 2)))
    frame.servers["fill"] = rng.integers(0, k + 1, (n_s, 2))
    frame.samples_SRK2[..., 0] = rng.uniform(0, 3, (n_s, 2, k))
    frame.samples_SRK2[..., 1] = rng.lognormal(-2, 1, (n_s, 2, k))
    direct = {robust: server_features(frame.servers["n_flow_on"], frame.samples_SRK2, frame.servers["fill"],
                                      robust=robust) for robust in (False, True)}
    cache = FeatureCache()
    for robust in (False, True, True, False):
        before = cache.recomputed
        np.testing.assert_array_equal(frames_features([frame], n_s, cache, robust=robust), direct[robust])
    assert cache.recomputed - before == 2 * n_s  # the switch back recomputed all 12 reservoirs


@pytest.mark.parametrize("to_file", [False, True])
def test_frames_are_read_in_place_only_from_the_runs_own_memory(tmp_path, to_file) -> None:
    """A step reads an in-memory region's frame in place (this thread is its only writer) but
    copies a file region's (another process may write or read it): the reader is asked for
    in_place exactly when the region lives in this process's memory."""
    sim = build_simulation(_cfg("wcmp", record_every=2, **({"shm_dir": str(tmp_path)} if to_file else {})))
    asked: list[bool] = []
    for lb in sim.lbs:
        read = lb.reader.latest_out

        def spy(in_place: bool = False, read=read):  # type: ignore[no-untyped-def]
            asked.append(in_place)
            return read(in_place=in_place)

        lb.reader.latest_out = spy
    sim.run()
    assert len(asked) >= len(sim.lbs) * 5 and set(asked) == {not to_file}
