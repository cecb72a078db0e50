"""The RL environments on the real simulator: API checkers, seeding, observations equal to the
shared frame features, weights reaching the core, and the reward formulas by hand."""

from __future__ import annotations

import numpy as np
import pytest
from gymnasium import spaces
from gymnasium.utils.env_checker import check_env
from pettingzoo.test import parallel_api_test, parallel_seed_test

from simulator.config import UserError, parse_config
from simulator.envs import (DEFAULT_SCENARIO, LEVELS, N_FEATURES, LoadBalanceEnv, frame_observation,
                            parallel_env, reward_from)

MODERATE = {"duration_s": 3.0, "topology": {"preset": "moderate"},
            "traffic": {"load": 0.8, "job": {"mean_s": 0.05}}, "policy": {"name": "sed"}}
UNITTEST = {"duration_s": 3.0, "topology": {"preset": "unittest"},
            "traffic": {"load": 0.7, "job": {"mean_s": 0.05}}, "policy": {"name": "sed"}}


@pytest.mark.parametrize("cfg", [MODERATE, UNITTEST], ids=["moderate", "unittest"])
def test_pettingzoo_api_and_seed(cfg: dict) -> None:
    parallel_api_test(parallel_env(cfg), num_cycles=20)
    parallel_seed_test(lambda: parallel_env(cfg))


@pytest.mark.parametrize("cfg", [MODERATE, UNITTEST], ids=["moderate", "unittest"])
def test_gymnasium_check_env(cfg: dict) -> None:
    check_env(LoadBalanceEnv(cfg), skip_render_check=True)


def test_envs_without_a_config_run_the_default_scenario() -> None:
    """What a Gymnasium or PettingZoo user types first: no config at all."""
    import gymnasium

    env = gymnasium.make("marllb/LoadBalance-v0")
    check_env(env.unwrapped, skip_render_check=True)
    assert env.action_space == spaces.MultiDiscrete([len(LEVELS)] * 4)
    penv = parallel_env()
    assert penv.possible_agents == ["lb1", "lb2"]
    parallel_api_test(penv, num_cycles=50)
    obs, _ = penv.reset(seed=3)
    assert obs["lb1"].shape == (4 * N_FEATURES,)
    assert penv.cfg.model_dump() == parse_config(DEFAULT_SCENARIO).model_dump()


def test_gymnasium_env_on_the_second_lb_of_two() -> None:
    env = LoadBalanceEnv(MODERATE, lb=1)
    check_env(env, skip_render_check=True)
    env.reset(seed=0)
    env.step(np.full(7, 5))
    sim = env._penv.sim
    np.testing.assert_allclose(sim.lbs[1].dp.weights[:7], 2.0)  # the agent LB took the action
    np.testing.assert_allclose(sim.lbs[0].dp.weights[:7], [2, 2, 2, 2, 4, 4, 4])  # lb1 keeps SED's cores


def test_registered_id() -> None:
    import gymnasium

    env = gymnasium.make("marllb/LoadBalance-v0", config=UNITTEST)
    obs, _ = env.reset(seed=0)
    assert obs.shape == (6 * N_FEATURES,)


def _episode(seed: int, actions_seed: int = 0) -> list[np.ndarray]:
    env = parallel_env(MODERATE)
    obs, _ = env.reset(seed=seed)
    rng = np.random.default_rng(actions_seed)
    out = [obs["lb1"].copy()]
    while env.agents:
        obs, *_ = env.step({a: rng.integers(0, 6, env.n_servers) for a in env.agents})
        if obs:
            out.append(obs["lb1"].copy())
    return out


def test_same_seed_same_observations_other_seed_differs() -> None:
    a, b, c = _episode(5), _episode(5), _episode(6)
    assert len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b))
    assert any(not np.array_equal(x, y) for x, y in zip(a, c))


def test_observation_is_the_shared_frame_mapping_and_weights_reach_the_core() -> None:
    env = parallel_env(MODERATE)
    env.reset(seed=1)
    action = {"lb1": np.array([0, 1, 2, 3, 4, 5, 5]), "lb2": np.array([5, 4, 3, 2, 1, 0, 0])}
    for _ in range(4):
        obs, *_ = env.step(action)
    for k, agent in enumerate(env.possible_agents):
        frame = env.sim.lbs[k].reader.latest_out()  # what a real controller would read
        assert frame.time_s == pytest.approx(env._t)
        np.testing.assert_array_equal(obs[agent], frame_observation(frame, env.n_servers))
        np.testing.assert_allclose(env.sim.lbs[k].dp.weights[:env.n_servers], LEVELS[action[agent]])
    assert obs["lb1"].reshape(env.n_servers, N_FEATURES)[:, 0].sum() > 0  # flows are on


def test_rewards_by_hand() -> None:
    f = np.zeros((3, N_FEATURES))
    f[:, 4] = [0.1, 0.2, 0.4]  # decayed mean flow duration (fd_dmean_s)
    assert reward_from("product", f) == pytest.approx(0.25 * 0.5 * 1.0)
    assert reward_from("jain", f) == pytest.approx(0.7**2 / (3 * 0.21))
    x = np.array([0.1, 0.2, 0.4]) / (0.7 / 3)
    assert reward_from("variance", f) == pytest.approx(-np.var(x))
    assert reward_from("jct", f, np.array([0.5, 1.5])) == -1.0
    assert reward_from("product", np.zeros((3, N_FEATURES))) == 1.0
    f[:, 4] = 0.3
    assert reward_from("product", f) == 1.0 and reward_from("jain", f) == pytest.approx(1.0)


def test_jct_reward_counts_finished_requests() -> None:
    env = parallel_env(UNITTEST, reward="jct")
    env.reset(seed=2)
    rewards = []
    while env.agents:
        _, r, *_ = env.step({a: np.full(env.n_servers, 5) for a in env.agents})
        rewards.append(r["lb1"])
    done = [r for r in env.sim.requests if r.t_done >= 0]
    assert done and all(x <= 0 for x in rewards) and min(rewards) < 0


def test_continuous_and_previous_action_variants_pass_the_checkers() -> None:
    cfg = dict(UNITTEST, duration_s=2.0)
    env = parallel_env(cfg, continuous=True, prev_action=True)
    parallel_api_test(env, num_cycles=10)
    check_env(LoadBalanceEnv(cfg, continuous=True, prev_action=True), skip_render_check=True)
    env.reset(seed=3)
    w = np.linspace(1.0, 2.0, env.n_servers).astype(np.float32)
    obs, *_ = env.step({"lb1": w})
    np.testing.assert_allclose(env.sim.lbs[0].dp.weights[:env.n_servers], w, rtol=1e-6)
    # the previous weights (minus 1) close the observation
    np.testing.assert_allclose(obs["lb1"][-env.n_servers:], w - 1.0, rtol=1e-6)
    assert obs["lb1"].shape == (env.n_servers * (N_FEATURES + 1),)


def test_load_range_draws_a_load_per_reset_seed() -> None:
    env = parallel_env(dict(UNITTEST, duration_s=1.0), load_range=(0.3, 0.95))
    drawn = {}
    for seed in (1, 2, 3, 1):
        env.reset(seed=seed)
        while env.agents:
            env.step({a: np.zeros(env.n_servers, np.int64) for a in env.agents})
        drawn.setdefault(seed, []).append((env.sim.cfg.traffic.load, env.sim.cfg.seed, len(env.sim.requests)))
    assert drawn[1][0] == drawn[1][1]  # same seed: same load, run seed and arrivals
    loads = [drawn[s][0][0] for s in (1, 2, 3)]
    assert len(set(loads)) == 3 and all(0.3 <= x <= 0.95 for x in loads)
    assert env.cfg.traffic.load == UNITTEST["traffic"]["load"]  # the base config is untouched


def test_rates_draw_one_listed_rate_per_reset() -> None:
    env = parallel_env(dict(UNITTEST, duration_s=0.5), rates=[30.0, 45.0])
    drawn, infos = [], []
    for seed in range(40):
        env.reset(seed=seed)
        while env.agents:
            *_, info = env.step({a: np.zeros(env.n_servers, np.int64) for a in env.agents})
        drawn.append(env.sim.cfg.traffic.rate)
        infos.append(info["lb1"]["episode"])
        assert env.sim.cfg.traffic.load is None
    # each of 2 rates is drawn with probability 1/2: missing one in 40 resets has p = 2 * 0.5^40
    assert set(drawn) == {30.0, 45.0}
    assert [i["rate"] for i in infos] == drawn and all("load" not in i for i in infos)
    with pytest.raises(UserError, match="load_range or rates, not both"):
        parallel_env(UNITTEST, rates=[30.0], load_range=(0.3, 0.5))
    with pytest.raises(UserError, match="rates > 0"):
        parallel_env(UNITTEST, rates=[])


def test_gymnasium_env_same_seed_same_trajectory() -> None:
    def run(seed: int) -> list[np.ndarray]:
        env = LoadBalanceEnv(dict(UNITTEST, duration_s=2.0))
        obs, _ = env.reset(seed=seed)
        env.action_space.seed(seed)
        out, done = [obs], False
        while not done:
            obs, _, term, trunc, _ = env.step(env.action_space.sample())
            out.append(obs)
            done = term or trunc
        return out

    a, b = run(4), run(4)
    assert len(a) == len(b) == 8 and all(np.array_equal(x, y) for x, y in zip(a, b))


def test_importing_the_simulator_pulls_no_rl_packages() -> None:
    import subprocess
    import sys

    code = ("import sys, simulator, simulator.run, simulator.policies, experiments.cli; "
            "print(sorted(m for m in ('gymnasium', 'pettingzoo', 'torch', 'agents') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_observation_equals_statistics_computed_by_hand_from_the_raw_frame() -> None:
    """Independent of simulator.features: each server's n_flow_on and the reservoir summaries
    recomputed here with plain numpy from the frame's raw (t_s, v_s) samples, normalised as the
    env documents (log1p(n / 8), log1p(d / 0.1 s), clip 20)."""
    env = parallel_env(MODERATE)
    env.reset(seed=9)
    for _ in range(6):
        obs, *_ = env.step({a: np.full(env.n_servers, 2) for a in env.agents})
    frame = env.sim.lbs[0].reader.latest_out()
    got = obs["lb1"].reshape(env.n_servers, N_FEATURES)
    checked = 0
    for j in range(env.n_servers):
        want = [np.log1p(frame.servers["n_flow_on"][j] / 8.0)]
        for kind in (0, 1):
            t, v = frame.reservoir(j, kind).T
            if len(v) == 0:
                want += [0.0] * 5
                continue
            w = 0.9 ** (frame.time_s - t)
            order = np.argsort(v)
            cum = np.cumsum(w[order])
            dp90 = v[order][np.searchsorted(cum, 0.9 * cum[-1])]
            stats = [v.mean(), np.quantile(v, 0.9), v.std(), (w * v).sum() / w.sum(), dp90]
            want += [min(np.log1p(s / 0.1), 20.0) for s in stats]
            checked += 1
        np.testing.assert_allclose(got[j], want, rtol=1e-5, atol=1e-6)
    assert checked >= env.n_servers  # most reservoirs hold samples after 1.75 s


@pytest.mark.parametrize("policy", ["ecmp", "lsq", "gsq"])
def test_a_core_that_ignores_weights_is_refused(policy: str) -> None:
    from simulator.config import UserError

    with pytest.raises(UserError, match="uses weights"):
        parallel_env(dict(UNITTEST, policy={"name": policy}))


def test_relative_scale_levels_are_factors_of_the_cores_that_reach_the_core() -> None:
    """moderate: cores 2,2,2,2,4,4,4. Level 3 is SED as configured; levels 0..5 scale a server's
    cores by 2^((a-3)/2), so a 4-CPU server's weight ranges from 1/2.83 to 11.3 times a 2-CPU one's."""
    from simulator.actions import RELATIVE_FACTORS

    env = parallel_env(MODERATE, action_scale="relative", prev_action=True)
    parallel_api_test(env, num_cycles=10)
    cores = np.array([2, 2, 2, 2, 4, 4, 4], dtype=float)
    np.testing.assert_array_equal(env.static_weights, cores)
    obs, _ = env.reset(seed=4)
    # before any action the weights in force are the static ones: factor 1 on the log2 range
    np.testing.assert_allclose(obs["lb1"][-7:], (0.0 + 1.5) / 2.5, rtol=1e-6)
    action = {"lb1": np.array([5, 5, 5, 5, 0, 0, 0]), "lb2": np.full(7, 3)}
    obs, *_ = env.step(action)
    w1 = env.sim.lbs[0].dp.weights[:7]
    np.testing.assert_allclose(w1, cores * RELATIVE_FACTORS[action["lb1"]])
    assert w1[4] / w1[0] == pytest.approx(2 ** -1.5)  # 4:2 nominal becomes 1:2.83
    np.testing.assert_allclose(env.sim.lbs[1].dp.weights[:7], cores)  # level 3 = static
    np.testing.assert_allclose(obs["lb1"][-7:], [1, 1, 1, 1, 0, 0, 0], atol=1e-6)


def test_relative_continuous_actions_are_clipped_factors() -> None:
    from simulator.actions import RELATIVE_FACTORS

    env = parallel_env(dict(UNITTEST, duration_s=2.0), action_scale="relative", continuous=True)
    check_env(LoadBalanceEnv(dict(UNITTEST, duration_s=2.0), action_scale="relative", continuous=True),
              skip_render_check=True)
    space = env.action_space("lb1")
    assert space.low.min() == pytest.approx(RELATIVE_FACTORS[0]) and space.high.max() == pytest.approx(2.0)
    env.reset(seed=5)
    f = np.linspace(0.1, 3.0, env.n_servers)
    env.step({"lb1": f.astype(np.float32)})
    expected = env.static_weights * np.clip(f.astype(np.float32), RELATIVE_FACTORS[0], 2.0)
    np.testing.assert_allclose(env.sim.lbs[0].dp.weights[:env.n_servers], expected, rtol=1e-6)


def test_an_unknown_action_scale_is_one_clear_error() -> None:
    from simulator.config import UserError

    with pytest.raises(UserError, match="action scale 'log'.*absolute, relative"):
        parallel_env(UNITTEST, action_scale="log")


def test_capacity_info_is_true_capacity_over_cores_by_hand() -> None:
    """The privileged ``capacity`` info (training targets only; never in an observation) on
    hidden_dynamic, by hand: 2-CPU servers 2/2 = 1 (server 0 1/2 after its drop at 20 s, server 1
    0 while failed from 30 s to 45 s); the 4-CPU SMT servers 2 x (1 + 0.25) / 4 = 0.625, and
    1 x 1.25 / 4 = 0.3125 while their co-located burst takes half of the cores."""
    from pathlib import Path

    from simulator.config import load_config

    root = Path(__file__).resolve().parents[2]
    cfg = load_config(root / "experiments" / "configs" / "hidden_dynamic.yaml").model_copy(update={"duration_s": 50.0})
    env = parallel_env(cfg, action_scale="relative")
    env.reset(seed=3)
    seen: set[float] = set()
    while env.agents:
        _, _, _, _, infos = env.step({a: np.zeros(7, np.int64) for a in env.agents})
        t = infos["lb1"]["t_s"]
        cap = infos["lb1"]["capacity"]
        np.testing.assert_array_equal(cap, infos["lb2"]["capacity"])
        assert cap[0] == (1.0 if t < 20 else 0.5) or t == 20
        assert cap[1] == (0.0 if 30 < t < 45 else 1.0) or t in (30, 45)
        assert list(cap[2:4]) == [1.0, 1.0]
        assert set(cap[4:]) <= {0.625, 0.3125}
        seen.update(cap[4:])
    assert seen == {0.625, 0.3125}


def test_collected_episodes_carry_the_capacity_after_each_step() -> None:
    from agents.common.spaces import EnvSignature
    from agents.qmix import QmixAgent, QmixConfig
    from agents.training import collect_episode

    env = parallel_env(MODERATE, action_scale="relative")
    sig = EnvSignature.from_env(env)
    policy = QmixAgent(QmixConfig(agent_net="servers", hidden=8, capacity_loss=1.0), sig).greedy_policy()
    ep = collect_episode(env, policy, seed=5)
    assert ep.capacity_TH is not None and ep.capacity_TH.shape == (ep.length, 7)
    np.testing.assert_array_equal(ep.capacity_TH, np.ones((ep.length, 7), np.float32))  # no hidden effect here


def test_robust_features_extend_the_papers_observation() -> None:
    """features="robust": 19 values per server, the shared frame mapping with the robust set;
    the first 11 of each server are what the paper's env observes on the same run (the feature
    set changes what the agent reads, not the simulation), the sample counts of the last second
    come back as whole numbers within the reservoir, and the set passes the API checkers."""
    from simulator.features import FEATURE_SETS

    width = len(FEATURE_SETS["robust"])
    action = {"lb1": np.array([0, 1, 2, 3, 4, 5, 5]), "lb2": np.array([5, 4, 3, 2, 1, 0, 0])}
    envs = {f: parallel_env(MODERATE, features=f) for f in ("paper", "robust")}
    obs = {}
    for f, env in envs.items():
        env.reset(seed=4)
        for _ in range(6):
            obs[f], *_ = env.step(action)
    robust = envs["robust"]
    assert robust.observation_space("lb1").shape == (robust.n_servers * width,)
    for k, agent in enumerate(robust.possible_agents):
        frame = robust.sim.lbs[k].reader.latest_out()
        np.testing.assert_array_equal(obs["robust"][agent], frame_observation(frame, robust.n_servers, "robust"))
        per_server = obs["robust"][agent].reshape(robust.n_servers, width)
        np.testing.assert_array_equal(per_server[:, :N_FEATURES],
                                      obs["paper"][agent].reshape(robust.n_servers, N_FEATURES))
        for kind in ("fd", "fct"):
            j = FEATURE_SETS["robust"].index(f"{kind}_recent_n")
            n = np.expm1(per_server[:, j].astype(np.float64)) * 8.0  # log1p(n / FLOW_SCALE)
            assert np.allclose(n, np.round(n), atol=1e-4) and n.max() <= robust.sim.cfg.lb.reservoir_size
            assert n.max() >= 1  # flows ended: recent samples exist
    parallel_api_test(parallel_env(UNITTEST, features="robust"), num_cycles=10)


def test_an_unknown_feature_set_is_one_clear_error() -> None:
    with pytest.raises(UserError, match="features 'fancy': unknown; choose one of paper, robust"):
        parallel_env(MODERATE, features="fancy")
