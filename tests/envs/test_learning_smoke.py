"""Seeded QMIX training on the real simulator env, tiny scenario (1 LB, 2 servers with 1:3 cores):
the learned weights favour the fast server and the mean JCT on held-out seeds ends below ECMP's;
save -> load gives identical actions; a checkpoint for another topology is refused.

Why QMIX with the per-step ``jct`` reward: with this budget (40 episodes of 20 steps, hidden 32,
8 updates per episode) QMIX met both relations for 7 of 8 training seeds (1-8) with the simulator
at commit 8a58cb2. Since SED counts a flow from its SYN (issue 10), every seed 1-8 still ends far
below ECMP (0.089-0.121 s against 0.396 s mean JCT) but only 5 of 8 (2, 4, 6, 7, 8) give the fast
server the higher mean level; the test uses seed 2. SAC-GRU (I-SAC, same budget) met both for 2
of 4 seeds (1-4) at 8a58cb2. Both stay above SED with
the config's 1:3 core weights (~81 ms vs ~91-105 ms mean JCT): the action levels 1.0..2.0 cannot
express a 3:1 capacity ratio."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from agents.common.spaces import EnvSignature
from agents.deploy import load_policy
from agents.qmix import QmixConfig
from agents.training import train
from simulator.config import UserError, parse_config
from simulator.envs import parallel_env
from simulator.model import COMPLETED
from simulator.run import run_experiment

TINY = {"duration_s": 5.0,
        "topology": {"lbs": 1, "servers": [{"cores": 1, "workers": 32}, {"cores": 3, "workers": 32}]},
        "traffic": {"load": 0.85, "job": {"mean_s": 0.05}}, "policy": {"name": "sed"}}
HELD_OUT = [100, 101, 102]


def make_env():  # module level: picklable for the trainer
    return parallel_env(TINY, reward="jct")


def evaluate(policy) -> tuple[float, np.ndarray]:
    """Mean JCT of completed requests and mean action level per server over the held-out seeds."""
    jcts, levels = [], []
    for seed in HELD_OUT:
        env = make_env()
        obs, _ = env.reset(seed=seed)
        policy.reset(seed=seed)
        while env.agents:
            actions = policy.act(obs, deterministic=True)
            levels.append(actions["lb1"])
            obs, *_ = env.step(actions)
        jcts += [r.t_done - r.t0 for r in env.sim.requests if r.status == COMPLETED]
    return float(np.mean(jcts)), np.mean(levels, axis=0)


@pytest.fixture(scope="module")
def trained():
    cfg = QmixConfig(hidden=32, batch_episodes=8, updates_per_episode=8, learning_starts_episodes=4,
                     epsilon_anneal_episodes=24, target_update_interval=20)
    return train(make_env, cfg, 40, seed=2, progress=False).agent


def test_qmix_learns_fast_server_and_beats_ecmp(trained) -> None:
    jct, levels = evaluate(trained.greedy_policy())
    ecmp = []
    for seed in HELD_OUT:
        cfg = copy.deepcopy(TINY)
        cfg.update(seed=seed, policy={"name": "ecmp"})
        ecmp.append(run_experiment(parse_config(cfg), progress=False).summary["jct_mean_s"])
    assert levels[1] > levels[0], levels  # server 1 has 3 cores, server 0 one
    assert jct < np.mean(ecmp), (jct, ecmp)


def test_save_load_identical_actions_and_signature_check(trained, tmp_path) -> None:
    env = make_env()
    sig = EnvSignature.from_env(env)
    trained.save(tmp_path / "qmix.pt")
    loaded, original = load_policy(tmp_path / "qmix.pt", sig), trained.greedy_policy()
    obs, _ = env.reset(seed=7)
    loaded.reset(seed=7)
    original.reset(seed=7)
    while env.agents:
        a, b = original.act(obs), loaded.act(obs)
        assert all(np.array_equal(a[k], b[k]) for k in a)
        obs, *_ = env.step(a)
    other = dict(TINY, topology={"lbs": 1, "servers": [{"cores": 1}, {"cores": 3}, {"cores": 3}]})
    with pytest.raises(UserError):
        load_policy(tmp_path / "qmix.pt", EnvSignature.from_env(parallel_env(other)))


def test_checkpoint_runs_as_policy_agent_in_sim_run(trained, tmp_path) -> None:
    """`policy: {name: agent, checkpoint}` through the real CLI: the run completes and the
    weights in force are the policy's levels; another topology is one clear error (exit 2)."""
    import json

    import pandas as pd
    import yaml

    from experiments.cli import main

    trained.save(tmp_path / "qmix.pt")
    cfg = dict(TINY, seed=3, policy={"name": "agent", "checkpoint": str(tmp_path / "qmix.pt")})
    (tmp_path / "agent.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["sim", "run", str(tmp_path / "agent.yaml"), "--out", str(tmp_path / "run"),
                 "--no-progress"]) == 0
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["policy"] == "agent" and summary["completed"] > 0
    steps = pd.read_parquet(tmp_path / "run" / "steps.parquet")
    w = steps[steps["t_s"] > 0.5].pivot(index="t_s", columns="server", values="weight")
    assert set(np.round(w.to_numpy().ravel(), 6)) <= set(np.round(1.0 + 0.2 * np.arange(6), 6))
    assert (w[1] >= w[0]).mean() > 0.5  # the fast server mostly gets at least the slow one's weight
    bad = dict(cfg, topology={"lbs": 1, "servers": [{"cores": 1}, {"cores": 3}, {"cores": 3}]})
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(bad))
    assert main(["sim", "run", str(tmp_path / "bad.yaml"), "--out", str(tmp_path / "bad"),
                 "--no-progress"]) == 2


def test_marllb_train_cli_writes_a_usable_checkpoint(tmp_path) -> None:
    """`marllb train` end to end (tiny: 6 episodes): run dir with config, logs and a checkpoint
    that `policy: agent` loads; a bad hyperparameter is one clear error (exit 2)."""
    import yaml

    from experiments.cli import main

    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(dict(TINY, duration_s=2.0)))
    args = ["train", str(tmp_path / "tiny.yaml"), "--episodes", "6", "--seed", "3", "--no-progress",
            "--hp", "learning_starts_episodes=2", "--hp", "batch_episodes=2", "--hp", "hidden=16",
            "--out", str(tmp_path / "run")]
    assert main(args) == 0
    run = tmp_path / "run"
    assert {"config.yaml", "last.pt", "scalars.csv"} <= {p.name for p in run.iterdir()}
    assert main(["sim", "run", str(run / "config.yaml"), "--out", str(tmp_path / "eval"), "--no-progress",
                 "--set", "policy.name=agent", "--set", f"policy.checkpoint={run / 'last.pt'}"]) == 0
    assert main([*args[:-2], "--hp", "no_such_field=1", "--out", str(tmp_path / "bad")]) == 2
