"""The numpy decision path (agents/common/fast_forward.py) decides exactly what the torch modules decide.

Truth is the torch network run the way training runs it: the whole episode unrolled through `nn.GRU`
(`RecurrentHeadNet.forward`) on inputs built by the training code (`qmix._agent_inputs`,
`nets.prev_action_onehot`) from the policy's own previous actions.  Values must agree within 1e-4; greedy
actions must be identical wherever the two best levels of a head differ by more than that tolerance (a
float32 rounding difference cannot flip an argmax with a larger gap) and the test checks that such near
ties are rare, so the comparison covers almost every head.
"""

from __future__ import annotations

import copy
import pickle
import warnings
from multiprocessing.reduction import ForkingPickler

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from agents.common.fast_forward import FastRecurrentHeadNet
from agents.common.nets import RecurrentHeadNet, prev_action_onehot
from agents.common.spaces import N_LEVELS, EnvSignature
from agents.qmix import QmixAgent, QmixConfig, QmixPolicy, _agent_inputs, _run_agents
from agents.sac_gru import SacGruAgent, SacGruConfig

ATOL = 1e-4
H_SERVERS = 24
OBS_DIM = H_SERVERS * 11  # issue-4 feature layout; any size works


def _sig(n_agents: int, kind: str = "discrete", obs_dim: int = OBS_DIM) -> EnvSignature:
    agents = tuple(f"lb{i}" for i in range(n_agents))
    return EnvSignature(agents, n_servers=H_SERVERS, obs_dim=obs_dim, state_dim=n_agents * obs_dim,
                        action_kind=kind, action_low=1.0, action_high=2.0)


def _episodes(rng: np.random.Generator, n_episodes: int, T: int, N: int, O: int) -> list[np.ndarray]:
    """Observation sequences obs_TNO; scaled so that ReLUs and GRU gates see a spread of values."""
    return [(rng.standard_normal((T, N, O)) * 2.0).astype(np.float32) for _ in range(n_episodes)]


def _levels(sig: EnvSignature, action: np.ndarray) -> np.ndarray:
    return sig.decode_action(action)


def _check_greedy(q_ref_THA: np.ndarray, levels_TH: np.ndarray) -> int:
    """Assert levels == argmax(q_ref) wherever the top-2 gap exceeds ATOL; return the near-tie count."""
    top2 = np.sort(q_ref_THA, axis=-1)[..., -2:]
    clear = (top2[..., 1] - top2[..., 0]) > ATOL
    np.testing.assert_array_equal(levels_TH[clear], q_ref_THA.argmax(-1)[clear])
    return int((~clear).sum())


# ---------------------------------------------------------------------------------------------
# the network alone: values
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("in_dim,heads,hidden,B,scale", [(OBS_DIM + 144, 24, 128, 1, 1.0),
                                                          (7, 3, 16, 4, 1.0), (7, 3, 16, 2, 8.0)])
def test_fast_step_equals_torch_unroll(in_dim, heads, hidden, B, scale):
    """T steps of fast.step == nn.GRU unroll (outputs and hidden state within 1e-4); scale=8 saturates
    the gates (sigmoid/tanh near 0/1) and must not warn (no exp overflow)."""
    torch.manual_seed(0)
    net = RecurrentHeadNet(in_dim, heads, N_LEVELS, hidden)
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(scale)
    fast = FastRecurrentHeadNet(net)
    rng = np.random.default_rng(1)
    T = 25
    x_BTI = rng.standard_normal((B, T, in_dim)).astype(np.float32)
    with torch.no_grad():
        out_ref, h_ref = net(torch.from_numpy(x_BTI))
    h = fast.initial_state(B)
    outs = []
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for t in range(T):
            out_BHA, h = fast.step(x_BTI[:, t], h)
            assert out_BHA.dtype == np.float32 and h.dtype == np.float32
            outs.append(out_BHA)
    out_BTHA = np.stack(outs, axis=1)
    assert out_BTHA.shape == (B, T, heads, N_LEVELS)
    np.testing.assert_allclose(out_BTHA, out_ref.numpy(), rtol=0, atol=ATOL * max(1.0, scale))
    np.testing.assert_allclose(h, h_ref[0].numpy(), rtol=0, atol=ATOL)
    if scale > 1:  # the saturated case really saturates
        assert np.mean(np.abs(h) > 0.99) > 0.2


def test_fast_step_does_not_modify_its_input_state():
    net = RecurrentHeadNet(5, 2, N_LEVELS, 8)
    fast = FastRecurrentHeadNet(net)
    h = np.full((1, 8), 0.3, np.float32)
    fast.step(np.ones((1, 5), np.float32), h)
    assert np.all(h == np.float32(0.3))


def test_weights_are_a_snapshot_robust_to_storage_moves():
    """Later training does not change a built policy, and torch moving the parameters to shared memory
    (what pickling a module to a spawned worker does) leaves the numpy weights valid."""
    torch.manual_seed(3)
    net = RecurrentHeadNet(6, 2, N_LEVELS, 8)
    fast = FastRecurrentHeadNet(net)
    x = np.ones((1, 6), np.float32)
    before, _ = fast.step(x, fast.initial_state(1))
    ptr = net.fc_in[0].weight.data_ptr()
    ForkingPickler.dumps(net)  # torch moves the storages to shm here
    assert net.fc_in[0].weight.data_ptr() != ptr  # the hazard a numpy view of the parameter would hit
    with torch.no_grad():
        for p in net.parameters():
            p.add_(1.0)  # an optimizer step, in place
    after, _ = fast.step(x, fast.initial_state(1))
    np.testing.assert_array_equal(before, after)
    changed, _ = FastRecurrentHeadNet(net).step(x, fast.initial_state(1))
    assert np.abs(changed - before).max() > 1e-3


def test_non_float32_network_is_refused():
    net = RecurrentHeadNet(4, 1, N_LEVELS, 4).double()
    with pytest.raises(TypeError, match="float32"):
        FastRecurrentHeadNet(net)


# ---------------------------------------------------------------------------------------------
# QMIX policy: actions over episodes (state carried, reset between episodes)
# ---------------------------------------------------------------------------------------------
def _qmix_reference(net: RecurrentHeadNet, obs_TNO: np.ndarray, levels_TNH: np.ndarray) -> np.ndarray:
    """Training-path utilities q_TNHA for one episode, previous actions = the policy's own."""
    obs_BTNO = torch.from_numpy(obs_TNO[None])
    act_BTNH = torch.from_numpy(levels_TNH[None, :-1])  # T-1 previous actions for T rows
    with torch.no_grad():
        return _run_agents(net, _agent_inputs(obs_BTNO, act_BTNH))[0].numpy()


@pytest.mark.parametrize("kind", ["discrete", "continuous"])
@pytest.mark.parametrize("obs_dim", [OBS_DIM, OBS_DIM + H_SERVERS])  # + previous weights in the obs
def test_qmix_policy_equals_training_network(kind, obs_dim):
    sig = _sig(2, kind, obs_dim)
    agent = QmixAgent(QmixConfig(hidden=128), sig, seed=5)
    policy = agent.greedy_policy()
    rng = np.random.default_rng(7)
    near_ties = heads = 0
    for obs_TNO in _episodes(rng, 3, 30, sig.n_agents, obs_dim):
        policy.reset()
        levels = []
        for o_NO in obs_TNO:
            act = policy.act({a: o_NO[i] for i, a in enumerate(sig.agents)})
            if kind == "continuous":
                assert act["lb0"].dtype == np.float32 and np.all((act["lb0"] >= 1) & (act["lb0"] <= 2))
            levels.append([_levels(sig, act[a]) for a in sig.agents])
        levels_TNH = np.asarray(levels, np.int64)
        q_ref = _qmix_reference(agent.net, obs_TNO, levels_TNH)
        near_ties += _check_greedy(q_ref, levels_TNH)
        heads += levels_TNH.size
    assert near_ties <= 0.01 * heads, f"{near_ties} near ties of {heads} heads: comparison too weak"


def test_qmix_policy_agents_absent_keep_their_state():
    """lb1 skips some steps: its GRU state and previous action stay as they were; reference built by
    hand per agent: [obs, onehot(own previous action), onehot(id)] over the steps it was present."""
    sig = _sig(2)
    agent = QmixAgent(QmixConfig(hidden=32), sig, seed=2)
    policy = agent.greedy_policy()
    rng = np.random.default_rng(3)
    (obs_TNO,) = _episodes(rng, 1, 20, 2, OBS_DIM)
    present_T = [True, True, False, True, False, False, True] + [True] * 13
    policy.reset()
    seen: dict[int, list[tuple[np.ndarray, np.ndarray]]] = {0: [], 1: []}
    for t, o_NO in enumerate(obs_TNO):
        who = [0, 1] if present_T[t] else [0]
        act = policy.act({sig.agents[i]: o_NO[i] for i in who})
        assert sorted(act) == [sig.agents[i] for i in who]
        for i in who:
            seen[i].append((o_NO[i], act[sig.agents[i]]))
    for i, rows in seen.items():
        obs = np.stack([r[0] for r in rows])
        lv = np.stack([r[1] for r in rows])
        prev = np.zeros((len(rows), H_SERVERS * N_LEVELS), np.float32)
        prev[1:] = np.eye(N_LEVELS, dtype=np.float32)[lv[:-1]].reshape(len(rows) - 1, -1)
        ids = np.tile(np.eye(2, dtype=np.float32)[i], (len(rows), 1))
        x_1TI = torch.from_numpy(np.concatenate([obs, prev, ids], axis=1)[None])
        with torch.no_grad():
            q_THA = agent.net(x_1TI)[0][0].numpy()
        assert _check_greedy(q_THA, lv) <= 0.01 * lv.size


def test_qmix_epsilon_greedy_draws_unchanged():
    """Exploration: same numpy draws as the per-head epsilon rule applied to the torch argmax."""
    sig = _sig(2)
    agent = QmixAgent(QmixConfig(hidden=32), sig, seed=4)
    policy = QmixPolicy(sig, copy.deepcopy(agent.net), epsilon=0.3)
    rng = np.random.default_rng(8)
    (obs_TNO,) = _episodes(rng, 1, 20, 2, OBS_DIM)
    policy.reset(seed=11)
    acts = [policy.act({a: o[i] for i, a in enumerate(sig.agents)}, deterministic=False) for o in obs_TNO]
    levels_TNH = np.asarray([[act[a] for a in sig.agents] for act in acts])
    q_ref = _qmix_reference(agent.net, obs_TNO, levels_TNH)
    draw = np.random.default_rng(11)
    expect = []
    for t in range(len(obs_TNO)):
        greedy_NH = q_ref[t].argmax(-1)
        explore_NH = draw.random(greedy_NH.shape) < 0.3
        expect.append(np.where(explore_NH, draw.integers(0, N_LEVELS, greedy_NH.shape), greedy_NH))
    expect = np.asarray(expect)
    top2 = np.sort(q_ref, axis=-1)[..., -2:]
    clear = (top2[..., 1] - top2[..., 0]) > ATOL
    np.testing.assert_array_equal(levels_TNH[clear], expect[clear])
    assert 0.2 < np.mean(levels_TNH != q_ref.argmax(-1)) < 0.4  # ~0.3 * 5/6 = 0.25 explored away


# ---------------------------------------------------------------------------------------------
# SAC-GRU policy
# ---------------------------------------------------------------------------------------------
def _sac_reference(actor: RecurrentHeadNet, obs_TO: np.ndarray, levels_TH: np.ndarray) -> np.ndarray:
    """Training-path logits_THA: actor unrolled on [obs, prev_action_onehot(own previous actions)]."""
    prev_1TX = prev_action_onehot(torch.from_numpy(levels_TH[None, :-1]), N_LEVELS)
    x_1TI = torch.cat([torch.from_numpy(obs_TO[None]), prev_1TX], dim=-1)
    with torch.no_grad():
        return actor(x_1TI)[0][0].numpy()


def _sac_rollout(sig, policy, obs_TNO, deterministic=True, seed=None):
    policy.reset(seed)
    out = []
    for o_NO in obs_TNO:
        act = policy.act({a: o_NO[i] for i, a in enumerate(sig.agents)}, deterministic=deterministic)
        out.append([_levels(sig, act[a]) for a in sig.agents])
    return np.asarray(out, np.int64)  # levels_TNH


@pytest.mark.parametrize("mode", ["independent", "single"])
@pytest.mark.parametrize("kind", ["discrete", "continuous"])
def test_sac_policy_equals_training_actor(mode, kind):
    sig = _sig(2, kind)
    agent = SacGruAgent(SacGruConfig(hidden=128, mode=mode), sig, seed=6)
    policy = agent.greedy_policy()
    rng = np.random.default_rng(9)
    near_ties = heads = 0
    for obs_TNO in _episodes(rng, 3, 30, 2, OBS_DIM):
        levels_TNH = _sac_rollout(sig, policy, obs_TNO)
        T = len(obs_TNO)
        if mode == "independent":
            for i, lr in enumerate(agent.learners):
                near_ties += _check_greedy(_sac_reference(lr.actor, obs_TNO[:, i], levels_TNH[:, i]),
                                           levels_TNH[:, i])
        else:  # one actor over the concatenated observations, heads LB-major
            lv_TX = levels_TNH.reshape(T, -1)
            near_ties += _check_greedy(_sac_reference(agent.learners[0].actor, obs_TNO.reshape(T, -1), lv_TX),
                                       lv_TX)
        heads += levels_TNH.size
    assert near_ties <= 0.01 * heads, f"{near_ties} near ties of {heads} heads: comparison too weak"


def test_sac_sampling_draws_unchanged():
    """Sampled actions = torch.multinomial on softmax of the torch logits with the same seeded Generator
    (the pre-numpy behaviour), except where float rounding could move a draw across a boundary."""
    sig = _sig(1)
    agent = SacGruAgent(SacGruConfig(hidden=64), sig, seed=1)
    policy = agent.behaviour_policy(0)
    rng = np.random.default_rng(2)
    (obs_TNO,) = _episodes(rng, 1, 40, 1, OBS_DIM)
    levels_TH = _sac_rollout(sig, policy, obs_TNO, deterministic=False, seed=21)[:, 0]
    logits_THA = _sac_reference(agent.learners[0].actor, obs_TNO[:, 0], levels_TH)
    gen = torch.Generator().manual_seed(21)
    expect = np.stack([torch.multinomial(F.softmax(torch.from_numpy(lg), -1), 1, generator=gen).squeeze(-1).numpy()
                       for lg in logits_THA])
    agree = np.mean(expect == levels_TH)
    assert agree >= 0.999, agree
    assert np.mean(levels_TH != logits_THA.argmax(-1)) > 0.3  # really sampled, not greedy


def test_greedy_policy_is_frozen_and_survives_pickling():
    """A greedy policy keeps deciding the same after the agent's network changes and after being sent
    to a worker with torch's pickler; a new greedy policy follows the change."""
    sig = _sig(1)
    agent = SacGruAgent(SacGruConfig(hidden=32), sig, seed=2)
    policy = agent.greedy_policy()
    rng = np.random.default_rng(5)
    (obs_TNO,) = _episodes(rng, 1, 15, 1, OBS_DIM)
    before = _sac_rollout(sig, policy, obs_TNO)
    clone = pickle.loads(ForkingPickler.dumps(policy))
    with torch.no_grad():
        for p in agent.learners[0].actor.parameters():
            p.mul_(-1.0)
    np.testing.assert_array_equal(_sac_rollout(sig, policy, obs_TNO), before)
    np.testing.assert_array_equal(_sac_rollout(sig, clone, obs_TNO), before)
    assert np.mean(_sac_rollout(sig, agent.greedy_policy(), obs_TNO) != before) > 0.3
