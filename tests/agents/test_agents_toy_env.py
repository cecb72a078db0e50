"""The toy env itself must be an honest PettingZoo ParallelEnv (and a Gymnasium env via the wrapper)."""

from __future__ import annotations

import numpy as np
from gymnasium.utils.env_checker import check_env
from pettingzoo.test import parallel_api_test, parallel_seed_test
from toy_lb_env import ToyLBGymEnv, ToyLBParallelEnv


def test_parallel_api_discrete_and_box():
    parallel_api_test(ToyLBParallelEnv(n_lbs=2), num_cycles=100)
    parallel_api_test(ToyLBParallelEnv(n_lbs=1, action="box"), num_cycles=100)


def test_parallel_seed():
    parallel_seed_test(lambda: ToyLBParallelEnv(n_lbs=2))


def test_gym_wrapper_passes_check_env():
    check_env(ToyLBGymEnv(), skip_render_check=True)


def test_favouring_fast_server_lowers_cost():
    """Ground truth the learning tests rely on: weights (1.0, 2.0) beat uniform on capacities 1:3."""
    def mean_cost(levels):
        costs = []
        for s in range(20):
            env = ToyLBParallelEnv()
            env.reset(seed=s)
            while env.agents:
                *_, infos = env.step({"lb0": np.asarray(levels)})
                costs.append(infos["lb0"]["cost"])
        return np.mean(costs)

    assert mean_cost((0, 5)) < 0.6 * mean_cost((0, 0))
