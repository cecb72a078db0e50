"""Shared pieces: episode padding/masks, replay persistence, level<->weight mapping, the fairness step,
and a Gymnasium env driven through the single-agent adapter."""

from __future__ import annotations

import numpy as np
import pytest
from toy_lb_env import ToyLBGymEnv

from agents.common.replay import Episode, EpisodeBatch, EpisodeReplayBuffer
from agents.common.spaces import EnvSignature, levels_to_weights, weights_to_levels
from agents.fairness_potential import FairnessPotentialConfig, potential_step
from agents.sac_gru import SacGruAgent, SacGruConfig
from agents.training import GymAsParallel, collect_episode


def _episode(T, N=2, O=3, H=2, terminated=False, seed=0):
    rng = np.random.default_rng(seed)
    return Episode(rng.random((T + 1, N, O), dtype=np.float32), rng.random((T + 1, 4), dtype=np.float32),
                   rng.integers(0, 6, (T, N, H)), rng.random((T, N), dtype=np.float32), terminated, seed)


def test_batch_pads_and_masks():
    b = EpisodeBatch.from_episodes([_episode(3), _episode(5, terminated=True)])
    assert b.obs_BTNO.shape == (2, 6, 2, 3) and b.actions_BTNH.shape == (2, 5, 2, 2)
    np.testing.assert_array_equal(b.mask_BT, [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    np.testing.assert_array_equal(b.terminated_BT, [[0, 0, 0, 0, 0], [0, 0, 0, 0, 1]])
    assert not b.obs_BTNO[0, 4:].any()


def test_replay_save_load_roundtrip(tmp_path):
    buf = EpisodeReplayBuffer(3, np.random.default_rng(1))
    for i in range(5):
        buf.add(_episode(2 + i, seed=i))
    assert len(buf) == 3
    buf.save(tmp_path / "r.npz")
    other = EpisodeReplayBuffer.load(tmp_path / "r.npz")
    a, b = buf.sample(2), other.sample(2)
    np.testing.assert_array_equal(a.obs_BTNO, b.obs_BTNO)
    np.testing.assert_array_equal(a.actions_BTNH, b.actions_BTNH)


def test_levels_weights_roundtrip():
    levels = np.arange(6)
    np.testing.assert_allclose(levels_to_weights(levels), 1.0 + 0.2 * levels, rtol=1e-6)
    np.testing.assert_array_equal(weights_to_levels(levels_to_weights(levels)), levels)
    np.testing.assert_array_equal(weights_to_levels([0.3, 1.29, 1.31, 7.0]), [0, 1, 2, 5])


def test_relative_levels_and_the_signature_records_the_scale():
    from agents.common.spaces import SignatureMismatchError

    levels = np.arange(6)
    np.testing.assert_allclose(levels_to_weights(levels, "relative"), 2.0 ** ((levels - 3) / 2), rtol=1e-6)
    np.testing.assert_array_equal(weights_to_levels(levels_to_weights(levels, "relative"), "relative"), levels)
    rel = EnvSignature(("lb1",), n_servers=2, obs_dim=4, state_dim=4, action_scale="relative")
    old = rel.to_dict()
    del old["action_scale"]  # a checkpoint from before the field: absolute levels
    assert EnvSignature.from_dict(old).action_scale == "absolute"
    assert EnvSignature.from_dict(rel.to_dict()) == rel
    with pytest.raises(SignatureMismatchError, match="action_scale: checkpoint has 'relative', env has 'absolute'"):
        rel.check_compatible(EnvSignature.from_dict(old))
    cont = EnvSignature(("lb1",), 2, 4, 4, action_kind="continuous", action_low=0.35, action_high=2.0,
                        action_scale="relative")
    np.testing.assert_allclose(cont.encode_action(np.array([0, 3, 5])), [2 ** -1.5, 1.0, 2.0], rtol=1e-6)


def test_potential_step_moves_weight_from_slow_to_fast():
    cfg = FairnessPotentialConfig(step_size=0.5)
    w = np.array([1.5, 1.5])
    d = np.array([0.3, 0.1])  # server 0 slower than average
    new = potential_step(w, d, cfg)
    # hand computation: d_bar = 0.2; grad_j = -(d_j - 0.2) d_j / (0.04 * 1.5)
    np.testing.assert_allclose(new, [1.5 - 0.5 * 0.5, 1.5 + 0.5 * (0.1 * 0.1) / 0.06])
    assert np.array_equal(potential_step(w, np.zeros(2), cfg), w)  # no samples: keep weights
    assert potential_step(w, np.array([100.0, 0.0]), cfg).tolist() == [1.0, 1.5]  # clipped at w_min


def test_gym_env_through_adapter():
    env = GymAsParallel(ToyLBGymEnv(horizon=8))
    sig = EnvSignature.from_env(env)
    assert sig.agents == ("lb0",) and sig.n_servers == 2 and sig.state_dim == sig.obs_dim
    agent = SacGruAgent(SacGruConfig(hidden=8, batch_episodes=2, learning_starts_episodes=0), sig)
    for i in range(2):
        agent.add_episode(collect_episode(env, agent.behaviour_policy(i), seed=i))
    stats = agent.update()
    assert np.isfinite(stats["losses/q"]) and agent.buffer.sample(2).obs_BTNO.shape[1] == 9


@pytest.mark.parametrize("bad", [{"features_per_server": 3}, {"duration_index": 2}])
def test_fairness_rejects_impossible_layout(bad):
    from agents.fairness_potential import FairnessPotentialPolicy

    sig = EnvSignature(("lb0",), n_servers=2, obs_dim=4, state_dim=4)
    with pytest.raises(ValueError):
        FairnessPotentialPolicy(sig, FairnessPotentialConfig(**{"features_per_server": 2, "duration_index": 1, **bad}))
