"""Seeded learning smoke tests on the toy (1 LB, 2 servers with capacities 1:3).

Assert relations only: after training, the greedy policy gives the fast server a higher weight than the
slow one, and its mean cost (Little's-law time in system) on held-out seeds is below equal weights
(ECMP-like).  Ground truth for the toy: equal weights cost ~4.2, weights (1.0, 2.0) ~1.8.
"""

from __future__ import annotations

import functools

import pytest
from toy_lb_env import ConstantLevels, ToyLBParallelEnv, evaluate, make_toy

from agents.common.spaces import EnvSignature
from agents.fairness_potential import FairnessPotentialConfig, FairnessPotentialPolicy
from agents.qmix import QmixConfig
from agents.sac_gru import SacGruConfig
from agents.training import train


@pytest.fixture(scope="module")
def ecmp_cost() -> float:
    sig = EnvSignature.from_env(ToyLBParallelEnv())
    return evaluate(ConstantLevels(sig, [0, 0]))[0]


def test_qmix_learns_to_favour_fast_server(ecmp_cost):
    cfg = QmixConfig(hidden=32, batch_episodes=8, updates_per_episode=8, learning_starts_episodes=4,
                     epsilon_anneal_episodes=24, target_update_interval=20)
    agent = train(functools.partial(make_toy), cfg, 40, seed=1, progress=False).agent
    cost, levels = evaluate(agent.greedy_policy())
    assert levels[1] > levels[0], levels
    assert cost < ecmp_cost, (cost, ecmp_cost)


def test_sac_gru_learns_to_favour_fast_server(ecmp_cost):
    cfg = SacGruConfig(hidden=32, batch_episodes=8, updates_per_episode=8, learning_starts_episodes=4,
                       alpha_lr=3e-3, gamma=0.9, tau=0.05, td_lambda=0.6,
                       target_entropy_mode="ratio", target_entropy_ratio=0.5)
    agent = train(functools.partial(make_toy), cfg, 40, seed=1, progress=False).agent
    cost, levels = evaluate(agent.greedy_policy())
    assert levels[1] > levels[0], levels
    assert cost < ecmp_cost, (cost, ecmp_cost)


def test_fairness_potential_favours_fast_server(ecmp_cost):
    sig = EnvSignature.from_env(ToyLBParallelEnv())
    policy = FairnessPotentialPolicy(sig, FairnessPotentialConfig(features_per_server=2, duration_index=1))
    cost, levels = evaluate(policy)
    assert levels[1] > levels[0], levels
    assert cost < ecmp_cost, (cost, ecmp_cost)
