"""Checkpoints (save -> load gives identical actions, signature mismatch errors, resume) and determinism
(same seed -> identical parameters, whatever the number of rollout workers)."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
from toy_lb_env import ToyLBParallelEnv, make_toy

from agents.common.spaces import EnvSignature, SignatureMismatchError
from agents.deploy import load_policy
from agents.qmix import QmixAgent, QmixConfig
from agents.sac_gru import SacGruAgent, SacGruConfig
from agents.training import collect_episode, train

SMALL = dict(hidden=16, batch_episodes=3, updates_per_episode=2, learning_starts_episodes=1)
CONFIGS = {
    "qmix": lambda: QmixConfig(**SMALL, epsilon_anneal_episodes=4, target_update_interval=3),
    "isac": lambda: SacGruConfig(**SMALL),
    "ssac": lambda: SacGruConfig(**SMALL, mode="single"),
    "isac_shared": lambda: SacGruConfig(**SMALL, mode="shared"),
}


def _params(agent) -> list[torch.Tensor]:
    mods = [agent.net, agent.mixer] if isinstance(agent, QmixAgent) else agent.learners
    return [p.detach().clone() for m in mods for p in m.state_dict().values()]


def _same(a, b) -> bool:
    return len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b))


def _rollout_actions(policy, seed=5, n_lbs=2):
    ep = collect_episode(ToyLBParallelEnv(n_lbs=n_lbs, horizon=15), policy, seed, deterministic=True)
    return ep.actions_TNH


@pytest.mark.parametrize("name", CONFIGS)
def test_save_load_identical_actions(name, tmp_path):
    env_fn = functools.partial(make_toy, n_lbs=2, horizon=10)
    agent = train(env_fn, CONFIGS[name](), 4, seed=3, progress=False).agent
    assert agent.updates_done > 0
    agent.save(tmp_path / "a.pt")
    sig = EnvSignature.from_env(ToyLBParallelEnv(n_lbs=2))
    loaded = load_policy(tmp_path / "a.pt", sig)
    np.testing.assert_array_equal(_rollout_actions(agent.greedy_policy()), _rollout_actions(loaded))


@pytest.mark.parametrize("name", ["qmix", "isac"])
def test_checkpoint_for_other_topology_is_a_clear_error(name, tmp_path):
    sig2 = EnvSignature.from_env(ToyLBParallelEnv(n_lbs=2))
    agent = (QmixAgent(CONFIGS[name](), sig2) if name == "qmix" else SacGruAgent(CONFIGS[name](), sig2))
    agent.save(tmp_path / "a.pt")
    other = EnvSignature.from_env(ToyLBParallelEnv(n_lbs=1, capacities=(1.0, 2.0, 3.0)))
    with pytest.raises(SignatureMismatchError, match="n_servers"):
        load_policy(tmp_path / "a.pt", other)


@pytest.mark.parametrize("name", CONFIGS)
def test_same_seed_same_parameters(name):
    env_fn = functools.partial(make_toy, n_lbs=2, horizon=10)
    a = train(env_fn, CONFIGS[name](), 4, seed=7, progress=False).agent
    b = train(env_fn, CONFIGS[name](), 4, seed=7, progress=False).agent
    c = train(env_fn, CONFIGS[name](), 4, seed=8, progress=False).agent
    assert _same(_params(a), _params(b))
    assert not _same(_params(a), _params(c))


def test_resume_gives_same_parameters_as_uninterrupted(tmp_path):
    env_fn = functools.partial(make_toy, n_lbs=2, horizon=10)
    full = train(env_fn, CONFIGS["qmix"](), 6, seed=4, progress=False).agent
    train(env_fn, CONFIGS["qmix"](), 3, seed=4, run_dir=tmp_path, progress=False)
    resumed = train(env_fn, CONFIGS["qmix"](), 6, seed=4, run_dir=tmp_path, resume=True, progress=False).agent
    assert resumed.episodes_seen == 6
    assert _same(_params(full), _params(resumed))
    assert (tmp_path / "scalars.csv").read_text().count("charts/episode_return") == 6


def test_worker_count_does_not_change_results():
    env_fn = functools.partial(make_toy, n_lbs=2, horizon=10)
    kw = dict(seed=11, episodes_per_round=2, progress=False)
    a = train(env_fn, CONFIGS["isac"](), 4, workers=0, **kw)
    b = train(env_fn, CONFIGS["isac"](), 4, workers=2, **kw)
    assert a.returns == b.returns
    assert _same(_params(a.agent), _params(b.agent))


def test_box_action_env_gets_weights():
    env = ToyLBParallelEnv(n_lbs=1, action="box")
    sig = EnvSignature.from_env(env)
    agent = SacGruAgent(CONFIGS["isac"](), sig)
    ep = collect_episode(env, agent.behaviour_policy(0), seed=1)
    assert ep.actions_TNH.dtype == np.int64 and ep.actions_TNH.max() < 6
    w = agent.greedy_policy().act({"lb0": env.reset(seed=0)[0]["lb0"]})["lb0"]
    assert w.dtype == np.float32 and np.all((w >= 1.0) & (w <= 2.0))
