"""Hidden server effects (config ``effects`` and ``traffic.job.io_s`` / ``mixture``): exact
hand computations on tiny scenarios, queueing formulas on long runs, determinism, bad values
named by field path, and the oracle reference ``sed_true``."""

from __future__ import annotations

import math

import numpy as np
import pytest

from simulator.config import ConfigError, ExperimentConfig, ServerEffectsConfig, UserError, parse_config
from simulator.policies import CapacityWeightsPolicy
from simulator.run import build_simulation, effective_capacities, run_experiment
from simulator.traffic import JobSizes, mean_job_s
from simhelpers import batch_means_ci, single_server_cfg
from test_server_model import Clock, Req, _server


def _jobs(s, clock, works, io=None):
    for i, w in enumerate(works):
        r = Req(i + 1, w)
        if io is not None:
            r.io_s = io[i]
        assert s.admit(r, 0.0)
        s.request_arrived(r, 0.0)
    clock.run()
    return [t for _, _, t in sorted(clock.log, key=lambda e: e[1])]


def test_speed_scales_the_service_rate():
    ck = Clock()
    s = _server(1, 4, 0, ck)
    s.set_effects(ServerEffectsConfig(speed=0.5))
    # one 1-s job at half speed: 2 s; the oracle capacity is 0.5
    assert _jobs(s, ck, [1.0]) == [pytest.approx(2.0)] and s.capacity == 0.5


def test_smt_two_threads_on_one_physical_core():
    # 2 logical CPUs on 1 physical core, smt_gain 0.3: two 1-s jobs share R(2) = 1 + 0.3 = 1.3,
    # each at 0.65 -> both done at 1 / 0.65; one job alone runs at 1.0 (a whole core)
    ck = Clock()
    s = _server(2, 4, 0, ck)
    s.set_effects(ServerEffectsConfig(threads_per_core=2, smt_gain=0.3))
    assert _jobs(s, ck, [1.0, 1.0]) == [pytest.approx(1 / 0.65)] * 2
    assert s.capacity == pytest.approx(1.3)
    ck = Clock()
    s = _server(2, 4, 0, ck)
    s.set_effects(ServerEffectsConfig(threads_per_core=2, smt_gain=0.3))
    # jobs of 1 s and 2 s: both at 0.65 until t1 = 1/0.65 (1 s done each), then the 2-s job
    # alone at rate 1 for its last 1 - 0 ... = 2 - 1 = 1 s: done at t1 + 1
    t1 = 1 / 0.65
    assert _jobs(s, ck, [1.0, 2.0]) == [pytest.approx(t1), pytest.approx(t1 + 1.0)]


def test_contention_beyond_the_cores():
    # 1 core, contention 0.5, three 1-s jobs: R(3) = 1 / (1 + 0.5 * 2) = 0.5, each 1/6 ->
    # all three done at 6 s (equal work finishes together)
    ck = Clock()
    s = _server(1, 8, 0, ck)
    s.set_effects(ServerEffectsConfig(contention=0.5))
    assert _jobs(s, ck, [1.0, 1.0, 1.0]) == [pytest.approx(6.0)] * 3
    # works 1, 2: R(2) = 1/1.5, each 1/3 -> first done at 3 (1 s of work each), then the
    # second alone at rate 1 for 1 s more -> 4
    ck = Clock()
    s = _server(1, 8, 0, ck)
    s.set_effects(ServerEffectsConfig(contention=0.5))
    assert _jobs(s, ck, [1.0, 2.0]) == [pytest.approx(3.0), pytest.approx(4.0)]
    assert s.total_rate(1) == 1.0 and s.total_rate(3) == pytest.approx(0.5)


def test_effects_with_background_load():
    # 4 cores, background 0.5 -> 2 logical CPUs, SMT 2 -> 1 physical; speed 2, smt_gain 0.5:
    # R(2) = 2 * (1 + 0.5) = 3; two 3-s jobs at 1.5 each -> 2 s
    ck = Clock()
    s = _server(4, 4, 0, ck)
    s.set_background(0.5, 0.0)
    s.set_effects(ServerEffectsConfig(speed=2.0, threads_per_core=2, smt_gain=0.5))
    assert _jobs(s, ck, [3.0, 3.0]) == [pytest.approx(2.0)] * 2


def test_non_cpu_part_through_shared_slots():
    # one slot: I/O of 1 s each, FIFO; CPU work 0.5 s each on 2 cores (no CPU contention):
    # job 1: I/O [0,1], CPU [1,1.5]; job 2 waits for the slot: I/O [1,2], CPU [2,2.5]
    ck = Clock()
    s = _server(2, 4, 0, ck)
    s.set_effects(ServerEffectsConfig(io_slots=1))
    assert _jobs(s, ck, [0.5, 0.5], io=[1.0, 1.0]) == [pytest.approx(1.5), pytest.approx(2.5)]
    # unlimited slots: both I/O [0,1], then both CPU [1,1.5]
    ck = Clock()
    s = _server(2, 4, 0, ck)
    assert _jobs(s, ck, [0.5, 0.5], io=[1.0, 1.0]) == [pytest.approx(1.5)] * 2
    # the worker is held through the I/O: 1 worker -> the second request waits for it
    ck = Clock()
    s = _server(2, 1, 4, ck)
    assert _jobs(s, ck, [0.5, 0.5], io=[1.0, 1.0]) == [pytest.approx(1.5), pytest.approx(3.0)]


def test_failure_drops_requests_in_their_io_part():
    ck = Clock()
    s = _server(1, 4, 0, ck)
    s.set_effects(ServerEffectsConfig(io_slots=1))
    for i in (1, 2):
        r = Req(i, 0.1)
        r.io_s = 1.0
        s.admit(r, 0.0)
        s.request_arrived(r, 0.0)
    ck.schedule(0.5, lambda _: s.fail(0.5), None)
    ck.run()
    assert sorted(ck.log) == [("drop", 1, 0.5), ("drop", 2, 0.5)]
    assert s.n_requests() == 0 and s.remaining_work_s(1.0) == 0.0


def test_io_queue_is_mm1_for_the_slot():
    # tiny CPU work, exponential I/O of mean 1/mu through one slot: the I/O is an M/M/1 queue,
    # mean time in system 1/(mu - lambda) (+ the CPU work); 95 % batch-means CI
    lam, mu = 60.0, 100.0
    cfg = single_server_cfg(cores=4, workers=10_000, rate=lam,
                            job={"dist": "deterministic", "mean_s": 1e-6, "io_s": 1 / mu},
                            duration_s=600, warmup_s=20)
    cfg = ExperimentConfig.model_validate({**cfg.model_dump(), "effects": [{"io_slots": 1}]})
    q = run_experiment(cfg, progress=False).requests
    done = q[(q.t_server_arrive_s >= cfg.warmup_s) & q.sojourn_s.notna()].sort_values("t_server_arrive_s")
    mean, hw = batch_means_ci(done.sojourn_s.to_numpy())
    want = 1 / (mu - lam) + 1e-6
    assert hw < 0.1 * mean
    assert abs(mean - want) <= hw, f"{mean:.5f} +- {hw:.5f} vs M/M/1 {want:.5f}"


def test_speed_is_mm1_with_the_effective_rate():
    lam, mu, speed = 50.0, 100.0, 0.7  # effective rate 70: rho 0.71
    cfg = single_server_cfg(cores=1, workers=1, rate=lam, job={"dist": "exp", "mean_s": 1 / mu},
                            duration_s=600, warmup_s=20)
    cfg = ExperimentConfig.model_validate({**cfg.model_dump(), "effects": [{"speed": speed}]})
    q = run_experiment(cfg, progress=False).requests
    done = q[(q.t_server_arrive_s >= cfg.warmup_s) & q.sojourn_s.notna()].sort_values("t_server_arrive_s")
    mean, hw = batch_means_ci(done.sojourn_s.to_numpy())
    want = 1 / (mu * speed - lam)
    assert abs(mean - want) <= hw, f"{mean:.5f} +- {hw:.5f} vs M/M/1 {want:.5f}"


def test_mixture_sizes_follow_their_components():
    from simulator.config import JobConfig

    job = JobConfig(dist="mixture", components=[
        {"weight": 9, "dist": "deterministic", "mean_s": 0.01},
        {"weight": 1, "dist": "exp", "mean_s": 0.5}])
    assert mean_job_s(job) == pytest.approx(0.9 * 0.01 + 0.1 * 0.5)
    sizes = JobSizes(job, np.random.default_rng(3))
    x = np.array([sizes.next() for _ in range(40_000)])
    cheap = x == 0.01
    # the share of cheap requests ~ Binomial(n, 0.9): within 5 sigma
    n = len(x)
    assert abs(cheap.sum() - 0.9 * n) <= 5 * math.sqrt(n * 0.9 * 0.1)
    # the expensive ones are exp(0.5): mean within 5 standard errors
    big = x[~cheap]
    assert abs(big.mean() - 0.5) <= 5 * 0.5 / math.sqrt(len(big))
    again = JobSizes(job, np.random.default_rng(3))
    assert [again.next() for _ in range(100)] == x[:100].tolist()  # same seed, same draws


def _effects_cfg(**kw) -> ExperimentConfig:
    return parse_config({"name": "fx", "seed": kw.pop("seed", 4), "duration_s": 20, "topology": {"preset": "moderate"},
                         "traffic": {"rate": 300, "job": {"dist": "lognormal", "mean_s": 0.02, "sigma": 1.5,
                                                          "io_s": 0.005}},
                         "effects": [{"servers": [4, 5, 6], "threads_per_core": 2, "smt_gain": 0.25,
                                      "contention": 0.05, "io_slots": 8}], **kw})


def _dynamic_cfg(policy: str, duration_s: float, drop_s: float, fail_s: float, recover_s: float) -> ExperimentConfig:
    """SMT 4-CPU servers 4-6 with 1-s co-located bursts; server 0 drops to 1 core at drop_s,
    server 1 fails at fail_s and returns at recover_s."""
    return _effects_cfg(policy={"name": policy}, duration_s=duration_s,
                        effects=[{"servers": [4, 5, 6], "threads_per_core": 2, "smt_gain": 0.25}],
                        background={"servers": [4, 5, 6], "fraction": 0.5, "on_s": 1.0, "off_s": 1.0},
                        events=[{"at_s": drop_s, "server": 0, "kind": "capacity", "cores": 1.0},
                                {"at_s": fail_s, "server": 1, "kind": "fail"},
                                {"at_s": recover_s, "server": 1, "kind": "recover"}])


def _summary(r) -> dict:
    return {k: v for k, v in r.summary.items() if k != "wall_s"}


def test_runs_with_effects_are_deterministic():
    a = run_experiment(_effects_cfg(), progress=False)
    b = run_experiment(_effects_cfg(), progress=False)
    assert _summary(a) == _summary(b)
    assert a.requests.equals(b.requests)
    assert a.requests.sojourn_s.mean() != run_experiment(_effects_cfg(seed=5), progress=False).requests.sojourn_s.mean()


def test_defaults_change_nothing():
    base = {"name": "q", "seed": 2, "duration_s": 10, "topology": {"preset": "unittest"},
            "traffic": {"load": 0.8}}
    a = run_experiment(parse_config(base), progress=False)
    b = run_experiment(parse_config({**base, "effects": [{}]}), progress=False)  # all defaults
    assert _summary(a) == _summary(b)


def test_sed_true_weighs_by_effective_capacity():
    cfg = _effects_cfg(policy={"name": "sed_true"})
    cores = [2.0] * 4 + [4.0] * 3
    # the 4-CPU servers are 2 physical cores with SMT: 2 + 0.25 * 2 = 2.5
    assert effective_capacities(cfg, cores) == [2.0] * 4 + [2.5] * 3
    sim = build_simulation(cfg)
    assert list(sim.lbs[0].dp.weights) == [2.0] * 4 + [2.5] * 3
    assert list(build_simulation(_effects_cfg(policy={"name": "sed"})).lbs[0].dp.weights) == cores


def test_sed_now_follows_the_true_capacities_every_step():
    """The oracle reference sed_now: after every step each LB's SED weights are the servers'
    capacities at that moment, computed here by hand: 2-CPU servers 2 (1 after server 0's
    capacity event, 0 while server 1 is failed); the 4-CPU SMT servers (2 physical cores,
    smt_gain 0.25) 2 + 0.25 * 2 = 2.5 without their co-located burst and, with half the cores
    taken, 2 logical CPUs on 1 physical core: 1 + 0.25 * 1 = 1.25."""
    cfg = _dynamic_cfg("sed_now", duration_s=12, drop_s=4.1, fail_s=6.1, recover_s=8.1)
    sim = build_simulation(cfg)
    sim.start()
    seen = set()
    for k in range(1, 48):
        t = k * cfg.lb.step_s
        sim.advance(t + 1e-9)  # just after step k
        want = []
        for i, srv in enumerate(sim.servers):
            if i == 1 and 6.1 < t < 8.1:
                want.append(0.0)
            elif i == 0 and t > 4.1:
                want.append(1.0)
            elif i < 4:
                want.append(2.0)
            else:
                want.append(1.25 if srv.background > 0 else 2.5)
        for lb in sim.lbs:
            assert list(lb.dp.weights[:7]) == pytest.approx(want), f"step {k}"
        seen.update(want[4:])
    assert seen == {1.25, 2.5}  # both burst states were checked
    sim.finish()


def test_capacity_weights_of_some_servers_only():
    """CapacityWeightsPolicy(known): the known servers' weights follow their true capacity (0
    while failed), the others keep sed_true's static weights: here server 1 fails from 2.1 s to
    4.1 s and server 4's co-located burst halves its SMT capacity (2.5 -> 1.25), but only
    server 1 is known, so server 4 stays at 2.5 throughout."""
    cfg = _effects_cfg(policy={"name": "sed_true"}, duration_s=6,
                       effects=[{"servers": [4, 5, 6], "threads_per_core": 2, "smt_gain": 0.25}],
                       background={"servers": [4], "fraction": 0.5, "on_s": 1.0, "off_s": 1.0},
                       events=[{"at_s": 2.1, "server": 1, "kind": "fail"},
                               {"at_s": 4.1, "server": 1, "kind": "recover"}])
    sim = build_simulation(cfg, controller=CapacityWeightsPolicy([1]))
    sim.start()
    bursts = 0
    for k in range(1, 24):
        t = k * cfg.lb.step_s
        sim.advance(t + 1e-9)
        want = [2.0, 0.0 if 2.1 < t < 4.1 else 2.0, 2.0, 2.0, 2.5, 2.5, 2.5]
        bursts += sim.servers[4].background > 0
        for lb in sim.lbs:
            assert list(lb.dp.weights[:7]) == pytest.approx(want), f"step {k}"
    assert bursts > 0  # server 4's burst was on during some checked steps
    sim.finish()
    with pytest.raises(UserError, match="servers 0..6"):
        build_simulation(cfg, controller=CapacityWeightsPolicy([7])).start()


def test_lagged_capacity_weights_are_the_truth_of_lag_s_ago():
    """CapacityWeightsPolicy(lag_s=0.5) with 0.25 s steps: the weights set at step k are the
    true capacities at step k - 2 (read here from the servers at that step), sed_true's static
    weights at steps 1 and 2; the capacity drop (server 0), the failure (server 1) and the
    co-located bursts (servers 4-6) all reach the weights two steps late."""
    cfg = _dynamic_cfg("sed_true", duration_s=8, drop_s=2.1, fail_s=3.1, recover_s=5.1)
    sim = build_simulation(cfg, controller=CapacityWeightsPolicy(lag_s=0.5))
    sim.start()
    static = [2.0] * 4 + [2.5] * 3
    truth = {}
    changed = 0
    for k in range(1, 32):
        sim.advance(k * cfg.lb.step_s + 1e-9)  # just after step k
        truth[k] = [0.0 if srv.failed else srv.capacity for srv in sim.servers]
        want = truth[k - 2] if k > 2 else static
        changed += want != truth[k]
        for lb in sim.lbs:
            assert list(lb.dp.weights[:7]) == pytest.approx(want), f"step {k}"
    assert changed >= 4  # the drop, the failure, the return and bursts were seen late
    sim.finish()
    with pytest.raises(UserError, match="lag_s -1"):
        CapacityWeightsPolicy(lag_s=-1)


def test_capacity_weights_of_no_server_is_sed_true_and_of_all_is_sed_now():
    cfg = _effects_cfg(policy={"name": "sed_true"}, duration_s=6,
                       effects=[{"servers": [4, 5, 6], "threads_per_core": 2, "smt_gain": 0.25}],
                       background={"servers": [4, 5, 6], "fraction": 0.5, "on_s": 1.0, "off_s": 1.0})
    assert _summary(run_experiment(cfg, progress=False, controller=CapacityWeightsPolicy([]))) == \
        _summary(run_experiment(cfg, progress=False))
    now = cfg.model_copy(update={"policy": cfg.policy.model_copy(update={"name": "sed_now"})})
    assert _summary(run_experiment(now, progress=False, controller=CapacityWeightsPolicy(range(7)))) == \
        _summary(run_experiment(now, progress=False))


@pytest.mark.parametrize("effects, where", [
    ([{"speed": 0}], "effects.0.speed"),
    ([{"threads_per_core": 0}], "effects.0.threads_per_core"),
    ([{"smt_gain": 1.5}], "effects.0.smt_gain"),
    ([{"contention": -1}], "effects.0.contention"),
    ([{"io_slots": 0}], "effects.0.io_slots"),
    ([{"spead": 1}], "effects.0.spead"),
])
def test_bad_effects_name_the_field(effects, where):
    with pytest.raises(ConfigError, match=where.replace(".", r"\.")):
        parse_config({"effects": effects})


def test_bad_job_fields_name_the_field():
    with pytest.raises(ConfigError, match=r"traffic\.job\.io_s"):
        parse_config({"traffic": {"load": 0.5, "job": {"io_s": -1}}})
    with pytest.raises(ConfigError, match="needs a non-empty 'components'"):
        parse_config({"traffic": {"load": 0.5, "job": {"dist": "mixture"}}})
    with pytest.raises(ConfigError, match=r"traffic\.job\.components\.0\.weight"):
        parse_config({"traffic": {"load": 0.5, "job": {"dist": "mixture", "components": [
            {"weight": 0, "mean_s": 1}]}}})


def test_effects_servers_out_of_range_or_twice():
    with pytest.raises(UserError, match=r"effects\.0\.servers: no server 9"):
        build_simulation(parse_config({"topology": {"preset": "unittest"}, "effects": [{"servers": [9]}]}))
    with pytest.raises(UserError, match=r"effects\.1\.servers: server 1 is already in effects\.0"):
        build_simulation(parse_config({"topology": {"preset": "unittest"},
                                       "effects": [{"servers": [0, 1]}, {"servers": [1]}]}))
