"""The per-server shared agent network (agents/common/server_net.py).

Truths: a network that scores every server with the same function must (1) permute its outputs
exactly as its servers are permuted, (2) have as many parameters at 64 servers as at 4, (3) give
in one-step inference what the unrolled training pass gives; agents built on it must learn,
save and reload like the flat ones.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from agents.common.server_net import ServerSharedNet, TorchStepper, make_agent_net
from agents.common.spaces import N_LEVELS, EnvSignature
from agents.qmix import QmixAgent, QmixConfig, _agent_inputs, _run_agents
from agents.sac_gru import SacGruAgent, SacGruConfig
from simulator.config import UserError
from simulator.envs import N_FEATURES

F = N_FEATURES


def _row(rng: np.random.Generator, H: int, K: int, E: int, perm: np.ndarray | None = None) -> tuple:
    """One flat input row [features (H*F), K per-server blocks (K*H), prev one-hot (H*A), extra E]
    and the same row with the servers permuted by ``perm``."""
    feat_HF = rng.standard_normal((H, F)).astype(np.float32)
    blocks_KH = rng.standard_normal((K, H)).astype(np.float32)
    prev_HA = np.eye(N_LEVELS, dtype=np.float32)[rng.integers(0, N_LEVELS, H)]
    extra = rng.standard_normal(E).astype(np.float32)
    p = np.arange(H) if perm is None else perm
    make = lambda q: np.concatenate([feat_HF[q].ravel(), blocks_KH[:, q].ravel(), prev_HA[q].ravel(), extra])  # noqa: E731
    return make(np.arange(H)), make(p)


@pytest.mark.parametrize("K", [0, 1])
def test_permuting_servers_permutes_the_utilities(K):
    torch.manual_seed(0)
    rng = np.random.default_rng(1)
    H, E, T = 7, 3, 5
    net = ServerSharedNet(H * (F + K), H, N_LEVELS, hidden=16, extra_dim=E)
    perm = rng.permutation(H)
    rows = [_row(rng, H, K, E, perm) for _ in range(T)]
    x = torch.from_numpy(np.stack([r[0] for r in rows]))[None]
    xp = torch.from_numpy(np.stack([r[1] for r in rows]))[None]
    with torch.no_grad():
        q, h = net(x)
        qp, hp = net(xp)
    torch.testing.assert_close(qp, q[:, :, perm], rtol=0, atol=1e-5)
    torch.testing.assert_close(hp, h, rtol=0, atol=1e-5)
    assert q.shape == (1, T, H, N_LEVELS)
    # a server's utilities do depend on its own features (the test is not vacuous)
    x2 = x.clone()
    x2[0, :, 0] += 3.0
    with torch.no_grad():
        assert not torch.allclose(net(x2)[0][:, :, 0], q[:, :, 0])


def test_parameter_count_does_not_grow_with_servers():
    count = lambda H: sum(p.numel() for p in ServerSharedNet(H * F, H, N_LEVELS, 32, 4).parameters())  # noqa: E731
    assert count(4) == count(64) == count(1024)
    flat = lambda H: sum(p.numel() for p in make_agent_net("flat", H * F, H, N_LEVELS, 32, 4).parameters())  # noqa: E731
    assert flat(64) > 4 * flat(4)  # the flat net grows with H (input and output layers)


def test_step_by_step_inference_equals_the_unrolled_pass():
    torch.manual_seed(2)
    rng = np.random.default_rng(3)
    H, E, T, B = 5, 2, 9, 3
    net = ServerSharedNet(H * (F + 1), H, N_LEVELS, hidden=12, extra_dim=E)
    x_BTI = torch.from_numpy(np.stack([np.stack([_row(rng, H, 1, E)[0] for _ in range(T)]) for _ in range(B)]))
    with torch.no_grad():
        q_ref, _ = net(x_BTI)
    fast = TorchStepper(net)
    h = fast.initial_state(B)
    for t in range(T):
        q_t, h = fast.step(x_BTI[:, t].numpy(), h)
        np.testing.assert_allclose(q_t, q_ref[:, t].numpy(), atol=1e-5)


def test_groups_read_each_lbs_block_of_the_concatenated_observation():
    """S-SAC concatenates the LBs' observations: with 2 groups of 3 servers, server 4's row must
    be group 1's server 1 (its features and its per-server block value)."""
    torch.manual_seed(4)
    H, G = 6, 2
    net = ServerSharedNet(H * (F + 1), H, N_LEVELS, hidden=8, extra_dim=0, groups=G)
    obs = np.zeros(H * (F + 1), np.float32)
    per_group = (H // G) * (F + 1)
    obs[per_group + 1 * F: per_group + 2 * F] = np.arange(F)  # group 1, server 1: features 0..10
    obs[per_group + (H // G) * F + 1] = 99.0  # its block value
    x = torch.from_numpy(np.concatenate([obs, np.zeros(H * N_LEVELS, np.float32)]))[None]
    seen = {}
    net.encoder.register_forward_hook(lambda m, inp, out: seen.update(u=inp[0]))
    with torch.no_grad():
        net.step(x, torch.zeros(1, 8))
    u = seen["u"][0, 4]
    assert u[:F].tolist() == list(range(F)) and u[F].item() == 99.0
    assert float(seen["u"][0, [0, 1, 2, 3, 5], :F + 1].abs().sum()) == 0.0


def _sig(n_agents: int, H: int) -> EnvSignature:
    return EnvSignature(tuple(f"lb{i}" for i in range(n_agents)), n_servers=H, obs_dim=H * F,
                        state_dim=n_agents * H * F, action_kind="discrete", action_low=1.0, action_high=2.0)


def test_qmix_with_shared_server_net_learns_saves_and_reloads(tmp_path):
    from agents.common.replay import Episode

    sig = _sig(2, 6)
    cfg = QmixConfig(agent_net="servers", hidden=16, batch_episodes=2, learning_starts_episodes=1)
    agent = QmixAgent(cfg, sig, seed=0)
    rng = np.random.default_rng(0)
    T = 6
    for _ in range(3):
        obs = rng.standard_normal((T + 1, 2, sig.obs_dim)).astype(np.float32)
        agent.add_episode(Episode(obs_TNO=obs, state_TS=obs.reshape(T + 1, -1),
                                  actions_TNH=rng.integers(0, N_LEVELS, (T, 2, 6)),
                                  rewards_TN=rng.standard_normal((T, 2)).astype(np.float32),
                                  terminated=True))
    before = [p.detach().clone() for p in agent.net.parameters()]
    stats = agent.update()
    assert np.isfinite(stats["losses/td"])
    assert any(not torch.equal(a, b) for a, b in zip(before, agent.net.parameters()))
    agent.save(tmp_path / "a.pt")
    back = QmixAgent.load(tmp_path / "a.pt", sig)
    assert isinstance(back.net, ServerSharedNet)
    obs = {a: rng.standard_normal(sig.obs_dim).astype(np.float32) for a in sig.agents}
    p1, p2 = agent.greedy_policy(), back.greedy_policy()
    for _ in range(4):
        a1, a2 = p1.act(obs), p2.act(obs)
        for k in a1:
            np.testing.assert_array_equal(a1[k], a2[k])
    # the policy decides what the training pass computes
    x = _agent_inputs(torch.from_numpy(np.stack([np.stack([obs[a] for a in sig.agents])] * 2)[None]),
                      torch.zeros(1, 1, 2, 6, dtype=torch.int64))
    with torch.no_grad():
        q = _run_agents(back.net, x)[0, 0]
    p3 = back.greedy_policy()
    got = p3.act(obs)
    for i, a in enumerate(sig.agents):
        np.testing.assert_array_equal(got[a], q[i].argmax(-1).numpy())


@pytest.mark.parametrize("mode", ["independent", "single"])
def test_sac_with_shared_server_net_builds_and_acts(mode):
    sig = _sig(2, 4)
    agent = SacGruAgent(SacGruConfig(mode=mode, agent_net="servers", hidden=8), sig, seed=0)
    assert all(isinstance(m.actor, ServerSharedNet) for m in agent.learners)
    out = agent.greedy_policy().act({a: np.zeros(sig.obs_dim, np.float32) for a in sig.agents})
    assert sorted(out) == list(sig.agents) and all(v.shape == (4,) for v in out.values())


def test_unknown_agent_net_is_one_clear_error():
    from experiments.train import agent_config

    with pytest.raises(UserError, match="agent_net='wide'"):
        agent_config("qmix", ["agent_net=wide"])
    with pytest.raises(ValueError, match="agent_net"):
        make_agent_net("wide", 4 * F, 4, N_LEVELS, 8, 0)


def test_capacity_head_is_per_server_and_optional():
    """The capacity head scores each server with the same function (permuting the servers
    permutes its outputs); a net without it refuses to give one, and the flat net has none."""
    torch.manual_seed(5)
    rng = np.random.default_rng(6)
    H, E, T = 5, 2, 4
    net = ServerSharedNet(H * F, H, N_LEVELS, hidden=8, extra_dim=E, capacity_head=True)
    perm = rng.permutation(H)
    rows = [_row(rng, H, 0, E, perm) for _ in range(T)]
    x = torch.from_numpy(np.stack([r[0] for r in rows]))[None]
    xp = torch.from_numpy(np.stack([r[1] for r in rows]))[None]
    with torch.no_grad():
        q, _, cap = net(x, capacity=True)
        _, _, capp = net(xp, capacity=True)
        q_plain, _ = net(x)
    assert cap.shape == (1, T, H)
    torch.testing.assert_close(capp, cap[:, :, perm], rtol=0, atol=1e-5)
    torch.testing.assert_close(q_plain, q)  # asking for it changes nothing else
    with pytest.raises(ValueError, match="without a capacity head"):
        ServerSharedNet(H * F, H, N_LEVELS, hidden=8, extra_dim=E)(x, capacity=True)
    with pytest.raises(ValueError, match="agent_net=servers"):
        make_agent_net("flat", H * F, H, N_LEVELS, 8, E, capacity_head=True)


def test_qmix_capacity_loss_teaches_the_head_what_it_can_read(tmp_path):
    """Episodes whose capacity target is a function of each server's first feature (2 + tanh):
    with capacity_loss the head's error falls far below the target's variance (what predicting
    its mean would leave); the targets survive the replay's save/load."""
    from agents.common.replay import Episode, EpisodeReplayBuffer

    sig = _sig(2, 4)
    cfg = QmixConfig(agent_net="servers", hidden=16, batch_episodes=8, learning_starts_episodes=1,
                     capacity_loss=1.0, lr=3e-3)
    agent = QmixAgent(cfg, sig, seed=0)
    rng = np.random.default_rng(7)
    T = 10
    for _ in range(16):
        obs = rng.standard_normal((T + 1, 2, sig.obs_dim)).astype(np.float32)
        first_TH = obs[1:, 0].reshape(T, 4, F)[:, :, 0]  # LB 0's view; LB 1's rows get the same target
        obs[:, 1] = obs[:, 0]
        agent.add_episode(Episode(obs, obs.reshape(T + 1, -1), rng.integers(0, N_LEVELS, (T, 2, 4)),
                                  np.zeros((T, 2), np.float32), True, capacity_TH=2 + np.tanh(first_TH)))
    variance = float(np.var(np.concatenate([e.capacity_TH.ravel() for e in agent.buffer._episodes])))
    first = agent.update()["losses/capacity"]
    for _ in range(300):
        last = agent.update()["losses/capacity"]
    assert first > 2 * variance  # untrained: far off (the head starts near 0, the targets near 2)
    assert last < 0.1 * variance
    agent.buffer.save(tmp_path / "r.npz")
    back = EpisodeReplayBuffer.load(tmp_path / "r.npz")
    for a, b in zip(agent.buffer._episodes, back._episodes):
        np.testing.assert_array_equal(a.capacity_TH, b.capacity_TH)
    # without the env's capacity info the loss cannot be computed: one clear error
    bare = QmixAgent(cfg, sig, seed=0)
    e = agent.buffer._episodes[0]
    for _ in range(2):
        bare.add_episode(Episode(e.obs_TNO, e.state_TS, e.actions_TNH, e.rewards_TN, True))
    with pytest.raises(ValueError, match="capacity info"):
        bare.update()


@pytest.mark.parametrize("hp, says", [
    (["capacity_loss=1"], "needs --hp agent_net=servers"),
    (["agent_net=servers", "capacity_loss=-1"], "capacity_loss=-1: expected a number >= 0"),
    (["agent_net=servers", "capacity_loss=yes"], "capacity_loss=yes: expected a number >= 0"),
])
def test_bad_capacity_loss_is_one_clear_error(hp, says):
    from experiments.train import agent_config

    with pytest.raises(UserError, match=says):
        agent_config("qmix", hp)


def test_server_memory_steps_equal_the_unrolled_pass_and_stay_per_server():
    """With a per-server memory the one-step inference the policies use gives what the training
    pass unrolls, from a state row of hidden + H x server_hidden values; the history matters (the
    same last frame after different pasts scores differently); permuting the servers of every
    step permutes the utilities."""
    torch.manual_seed(8)
    rng = np.random.default_rng(9)
    H, E, T, B = 4, 2, 7, 3
    net = ServerSharedNet(H * F, H, N_LEVELS, hidden=12, extra_dim=E, server_hidden=8, server_memory=True)
    assert net.state_size == 12 + H * 8
    x_BTI = torch.from_numpy(np.stack([np.stack([_row(rng, H, 0, E)[0] for _ in range(T)]) for _ in range(B)]))
    with torch.no_grad():
        q_ref, h_last = net(x_BTI)
    fast = TorchStepper(net)
    h = fast.initial_state(B)
    assert h.shape == (B, net.state_size)
    for t in range(T):
        q_t, h = fast.step(x_BTI[:, t].numpy(), h)
        np.testing.assert_allclose(q_t, q_ref[:, t].numpy(), atol=1e-5)
    np.testing.assert_allclose(h, h_last[0].numpy(), atol=1e-5)
    other = x_BTI.clone()
    other[:, :-1] = x_BTI[torch.tensor([1, 2, 0])][:, :-1]  # other pasts, same last frame
    with torch.no_grad():
        assert not torch.allclose(net(other)[0][:, -1], q_ref[:, -1])
    perm = rng.permutation(H)
    rows = [_row(rng, H, 0, E, perm) for _ in range(T)]
    with torch.no_grad():
        q, _ = net(torch.from_numpy(np.stack([r[0] for r in rows]))[None])
        qp, _ = net(torch.from_numpy(np.stack([r[1] for r in rows]))[None])
    torch.testing.assert_close(qp, q[:, :, perm], rtol=0, atol=1e-5)


def test_server_memory_needs_the_per_server_net():
    from experiments.train import agent_config

    with pytest.raises(UserError, match="server_memory=true: a per-server memory needs --hp agent_net=servers"):
        agent_config("qmix", ["server_memory=true"])
    assert agent_config("qmix", ["agent_net=servers", "server_memory=true"]).server_memory is True
