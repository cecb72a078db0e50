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


@pytest.mark.parametrize("mode", ["independent", "shared", "single"])
def test_sac_with_shared_server_net_builds_and_acts(mode):
    sig = _sig(2, 4)
    agent = SacGruAgent(SacGruConfig(mode=mode, agent_net="servers", hidden=8), sig, seed=0)
    assert all(isinstance(m.actor, ServerSharedNet) for m in agent.learners)
    assert len(agent.learners) == {"independent": 2, "shared": 1, "single": 1}[mode]
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


def test_capacity_factors_by_hand():
    """Estimates 1.0, 0.5, -0.3, 3.0 clip to 1.0, 0.5, 0.05, 2.0 (mean 0.8875); levels 3, 3, 1, 5
    are factors 1, 1, 0.5, 2 on the relative scale; the products 1.1268, 0.5634, 0.0282, 4.507
    clip to the env's range [2^-1.5, 2]."""
    from agents.common.server_net import capacity_factors

    sig = EnvSignature(("lb0",), n_servers=4, obs_dim=4 * F, state_dim=4 * F, action_kind="continuous",
                       action_low=2 ** -1.5, action_high=2.0, action_scale="relative")
    got = capacity_factors(np.array([[1.0, 0.5, -0.3, 3.0]]), np.array([[3, 3, 1, 5]]), sig)
    np.testing.assert_allclose(got, [[1.0 / 0.8875, 0.5 / 0.8875, 2 ** -1.5, 2.0]], rtol=1e-6)
    assert got.dtype == np.float32
    # level_scale 1/3: levels 1 and 5 are factors 2^(-1/3) and 2^(1/3), 0 and 4 2^(-1/2) and 2^(1/6)
    got = capacity_factors(np.array([[1.0, 0.5, 1.0, 0.7]]), np.array([[3, 3, 1, 5]]), sig, level_scale=1 / 3)
    np.testing.assert_allclose(got, [[1 / 0.8, 0.5 / 0.8, 1 / 0.8 * 2 ** (-1 / 3), 0.7 / 0.8 * 2 ** (1 / 3)]],
                               rtol=1e-6)
    got = capacity_factors(np.array([[1.0, 1.0]]), np.array([[0, 4]]), sig, level_scale=1 / 3)
    np.testing.assert_allclose(got, [[2 ** -0.5, 2 ** (1 / 6)]], rtol=1e-6)


def _capacity_sig(n_agents: int, H: int) -> EnvSignature:
    return EnvSignature(tuple(f"lb{i}" for i in range(n_agents)), n_servers=H, obs_dim=H * F,
                        state_dim=n_agents * H * F, action_kind="continuous", action_low=2 ** -1.5,
                        action_high=2.0, action_scale="relative")


def test_capacity_action_follows_the_head(tmp_path):
    """A capacity-driven QMIX acts with the factors of its head's estimates (computed here by
    the unrolled training pass, an independent path) and its greedy levels, which it keeps in
    last_levels; a saved and reloaded agent acts the same."""
    from agents.common.server_net import capacity_factors

    sig = _capacity_sig(2, 5)
    cfg = QmixConfig(agent_net="servers", hidden=16, capacity_loss=1.0, server_memory=True, capacity_action=True)
    agent = QmixAgent(cfg, sig, seed=3)
    with torch.no_grad():  # estimates around 1, not all clipped
        agent.net.capacity_out.bias.fill_(1.0)
    rng = np.random.default_rng(11)
    obs_T = [{a: rng.standard_normal(sig.obs_dim).astype(np.float32) for a in sig.agents} for _ in range(4)]
    policy = agent.greedy_policy()
    acts, levels, caps = [], [], []
    for obs in obs_T:
        acts.append(policy.act(obs))
        levels.append(policy.last_levels)
        caps.append(policy.last_capacity)
    obs_BTNO = torch.from_numpy(np.stack([np.stack([o[a] for a in sig.agents]) for o in obs_T])[None])
    act_BTNH = torch.from_numpy(np.stack([np.stack([lv[a] for a in sig.agents]) for lv in levels])[None])
    with torch.no_grad():
        q_BTNHA, cap_BTNH = _run_agents(agent.net, _agent_inputs(torch.cat([obs_BTNO, obs_BTNO[:, -1:]], 1),
                                                                 act_BTNH), capacity=True)
    for t in range(4):
        want_levels = q_BTNHA[0, t].argmax(-1).numpy()
        want = capacity_factors(cap_BTNH[0, t].numpy(), want_levels, sig)
        for i, a in enumerate(sig.agents):
            np.testing.assert_array_equal(levels[t][a], want_levels[i])
            np.testing.assert_allclose(acts[t][a], want[i], rtol=1e-5)
            np.testing.assert_allclose(caps[t][a], cap_BTNH[0, t, i].numpy(), rtol=1e-5)  # the head's raw estimate
    agent.save(tmp_path / "a.pt")
    back = QmixAgent.load_policy(tmp_path / "a.pt", sig)
    assert back.capacity_action and back.level_scale == 1.0
    for t, obs in enumerate(obs_T):
        got = back.act(obs)
        for a in sig.agents:
            np.testing.assert_allclose(got[a], acts[t][a], rtol=1e-6)


@pytest.mark.parametrize("algo", ["qmix", "isac"])
def test_capacity_level_scale_narrows_the_levels_and_survives_a_reload(tmp_path, algo):
    """With capacity_level_scale=1/3 the greedy policy's factors are the head's ratios times
    2^((level - 3) / 6), for the levels it chose; the checkpoint keeps the scale."""
    from agents.common.server_net import capacity_factors
    from agents.deploy import load_policy
    from experiments.train import agent_config

    sig = _capacity_sig(2 if algo == "qmix" else 1, 5)
    cfg = agent_config(algo, ["agent_net=servers", "hidden=16", "capacity_loss=1", "capacity_action=true",
                              "capacity_level_scale=0.3333333333333333"])
    agent = QmixAgent(cfg, sig, seed=2) if algo == "qmix" else SacGruAgent(cfg, sig, seed=2)
    agent.save(tmp_path / "a.pt")
    policy = load_policy(tmp_path / "a.pt", sig)
    assert policy.level_scale == pytest.approx(1 / 3)
    fast = policy._fast if algo == "qmix" else policy._fast[0]
    step, seen = fast.step, []
    fast.step = lambda x, h, capacity=False: seen.append(step(x, h, capacity=True)) or seen[-1]
    obs = {a: np.random.default_rng(5).standard_normal(sig.obs_dim).astype(np.float32) for a in sig.agents}
    got = policy.act(obs)
    levels = np.stack([policy.last_levels[a] for a in sig.agents])
    ratio = np.clip(seen[-1][2], 0.05, 2.0)
    ratio = ratio / ratio.mean(axis=1, keepdims=True)
    want = np.clip(ratio * 2.0 ** ((levels - 3) / 6), 2 ** -1.5, 2.0)
    np.testing.assert_allclose(np.stack([got[a] for a in sig.agents]), want, rtol=1e-5)
    np.testing.assert_allclose(want, capacity_factors(seen[-1][2], levels, sig, 1 / 3), rtol=1e-6)
    np.testing.assert_array_equal(np.stack([policy.last_capacity[a] for a in sig.agents]), seen[-1][2])


@pytest.mark.parametrize("algo", ["qmix", "isac"])
def test_capacity_reader_weights_servers_by_the_head_alone(tmp_path, algo):
    """The capacity reader of a checkpoint acts with each server's clipped head estimate over
    its LB's mean estimate (clipped to the action range) whatever levels the networks prefer;
    the source checkpoint is unchanged and its own policy still applies its levels."""
    from agents.deploy import load_policy, write_capacity_reader
    from experiments.train import agent_config

    sig = _capacity_sig(2 if algo == "qmix" else 1, 5)
    cfg = agent_config(algo, ["agent_net=servers", "hidden=16", "capacity_loss=1", "capacity_action=true"])
    agent = QmixAgent(cfg, sig, seed=4) if algo == "qmix" else SacGruAgent(cfg, sig, seed=4)
    agent.save(tmp_path / "a.pt")
    before = (tmp_path / "a.pt").read_bytes()
    write_capacity_reader(tmp_path / "a.pt", tmp_path / "reader.pt")
    assert (tmp_path / "a.pt").read_bytes() == before
    obs = {a: np.random.default_rng(8).standard_normal(sig.obs_dim).astype(np.float32) for a in sig.agents}
    got = {}
    for name in ("a", "reader"):
        policy = load_policy(tmp_path / f"{name}.pt", sig)
        fast = policy._fast if algo == "qmix" else policy._fast[0]
        step, seen = fast.step, []
        fast.step = lambda x, h, capacity=False: seen.append(step(x, h, capacity=True)) or seen[-1]
        got[name] = np.stack([a for a in policy.act(obs).values()])
        estimates, levels = seen[-1][2], np.stack([policy.last_levels[a] for a in sig.agents])
    ratio = np.clip(estimates, 0.05, 2.0)
    want = np.clip(ratio / ratio.mean(axis=1, keepdims=True), 2 ** -1.5, 2.0)
    np.testing.assert_allclose(got["reader"], want, rtol=1e-5)
    assert (levels != 3).any()  # the untrained levels are not all neutral, so the source acts otherwise
    assert not np.allclose(got["a"], got["reader"])


def test_level_scale_zero_trains_the_reader_itself():
    """--hp capacity_level_scale=0 is accepted: the greedy and the behaviour policy are the reader."""
    from experiments.train import agent_config

    cfg = agent_config("qmix", ["agent_net=servers", "hidden=8", "capacity_loss=1", "capacity_action=true",
                                "capacity_level_scale=0"])
    agent = QmixAgent(cfg, _capacity_sig(2, 3), seed=0)
    assert cfg.capacity_level_scale == 0 and agent.greedy_policy().level_scale == 0
    assert agent.behaviour_policy(0).level_scale == 0


def test_capacity_reader_needs_capacity_driven_actions(tmp_path):
    from agents.deploy import write_capacity_reader

    QmixAgent(QmixConfig(agent_net="servers", hidden=8, capacity_loss=1.0), _capacity_sig(2, 3), seed=0).save(tmp_path / "q.pt")
    with pytest.raises(UserError, match=r"q\.pt: its actions do not follow a capacity head"):
        write_capacity_reader(tmp_path / "q.pt", tmp_path / "r.pt")
    assert not (tmp_path / "r.pt").exists()


@pytest.mark.parametrize("hp", [["capacity_level_scale=0.5"],
                                ["agent_net=servers", "capacity_loss=1", "capacity_action=true",
                                 "capacity_level_scale=-0.5"]])
def test_bad_capacity_level_scale_is_one_clear_error(hp):
    from experiments.train import agent_config

    with pytest.raises(UserError, match="capacity_level_scale=.*expected a number >= 0, with --hp capacity_action=true"):
        agent_config("qmix", hp)


def test_collected_episodes_store_the_levels_a_capacity_driven_policy_chose():
    """collect_episode stores the levels the policy chose, not a nearest-level decode of its env
    actions (which differ once the estimates differ: spread here on purpose, as a trained head's
    do), next to the env's capacity info."""
    from agents.training import collect_episode
    from simulator.envs import parallel_env

    env = parallel_env(None, continuous=True, action_scale="relative", reward="variance")
    sig = EnvSignature.from_env(env)
    agent = QmixAgent(QmixConfig(agent_net="servers", hidden=8, capacity_loss=1.0, capacity_action=True), sig, seed=0)
    policy = agent.behaviour_policy(0)
    step = policy._fast.step

    def spread(x, h, capacity=False):  # server j's estimate 0.4 (j + 1): ratios 0.4 to 1.6
        q, h, cap = step(x, h, capacity=True)
        return q, h, np.broadcast_to(0.4 * (np.arange(cap.shape[1]) + 1), cap.shape)

    policy._fast.step = spread
    chosen, decoded = [], []
    act = policy.act

    def spy(obs, deterministic=True):
        out = act(obs, deterministic)
        chosen.append(np.stack([policy.last_levels[a] for a in sig.agents]))
        decoded.append(np.stack([sig.decode_action(out[a]) for a in sig.agents]))
        return out

    policy.act = spy
    ep = collect_episode(env, policy, seed=4)
    np.testing.assert_array_equal(ep.actions_TNH, np.stack(chosen))
    assert (np.stack(decoded) != np.stack(chosen)).any()  # a decode would have stored other levels
    assert ep.capacity_TH is not None and ep.capacity_TH.shape == (len(chosen), sig.n_servers)


def test_capacity_action_needs_its_head_and_a_continuous_relative_env():
    from experiments.train import agent_config

    with pytest.raises(UserError, match="capacity_action=true: the actions follow the capacity head"):
        agent_config("qmix", ["agent_net=servers", "capacity_action=true"])
    ok = ["agent_net=servers", "capacity_loss=1", "capacity_action=true"]
    assert agent_config("qmix", ok).capacity_action is True
    with pytest.raises(ValueError, match="continuous env with relative actions"):
        QmixAgent(QmixConfig(agent_net="servers", capacity_loss=1.0, capacity_action=True), _sig(2, 4))
    with pytest.raises(ValueError, match="capacity head"):
        QmixAgent(QmixConfig(agent_net="servers", capacity_action=True), _capacity_sig(2, 4))


def _isac_with_readable_capacity(capacity_updates: int, mode: str = "shared") -> SacGruAgent:
    """I-SAC whose replay holds 16 episodes with a capacity target the frames reveal (2 + tanh of
    each server's first feature, the same for both LBs)."""
    from agents.common.replay import Episode

    sig = _capacity_sig(2, 4)
    cfg = SacGruConfig(agent_net="servers", hidden=16, batch_episodes=8, learning_starts_episodes=1,
                       capacity_loss=1.0, server_memory=True, capacity_action=True, lr=3e-3, mode=mode,
                       capacity_updates=capacity_updates)
    agent = SacGruAgent(cfg, sig, seed=0)
    rng = np.random.default_rng(7)
    T = 10
    for _ in range(16):
        obs = rng.standard_normal((T + 1, 2, sig.obs_dim)).astype(np.float32)
        obs[:, 1] = obs[:, 0]  # both LBs see the same frames: the shared capacity target fits both
        agent.add_episode(Episode(obs, obs.reshape(T + 1, -1), rng.integers(0, N_LEVELS, (T, 2, 4)),
                                  np.zeros((T, 2), np.float32), True,
                                  capacity_TH=2 + np.tanh(obs[1:, 0].reshape(T, 4, F)[:, :, 0])))
    return agent


@pytest.mark.parametrize("mode", ["independent", "shared"])
def test_isac_capacity_head_learns_and_its_actions_follow_it(tmp_path, mode):
    """I-SAC with the options QMIX has: the actor's capacity head learns a readable target
    (2 + tanh of each server's first feature) far below its variance; a capacity-driven I-SAC
    acts with the factors of that head's estimates (the unrolled pass, computed independently)
    and its greedy levels; it reloads acting the same. ``shared``: one actor for both LBs,
    each with its own recurrent state."""
    from agents.common.server_net import capacity_factors
    from agents.sac_gru import SacGruPolicy

    agent = _isac_with_readable_capacity(0, mode)
    sig = agent.signature
    rng = np.random.default_rng(8)
    variance = float(np.var(np.concatenate([e.capacity_TH.ravel() for e in agent.buffer._episodes])))
    for _ in range(300):
        last = agent.update()["losses/capacity"]
    assert last < 0.1 * variance
    policy = agent.greedy_policy()
    assert isinstance(policy, SacGruPolicy) and policy.capacity_action
    obs_T = [{a: rng.standard_normal(sig.obs_dim).astype(np.float32) for a in sig.agents} for _ in range(3)]
    acts, levels = [], []
    for obs in obs_T:
        acts.append(policy.act(obs))
        levels.append(dict(policy.last_levels))
    for i, a in enumerate(sig.agents):
        actor = agent.learners[i if mode == "independent" else 0].actor
        obs_1TO = torch.from_numpy(np.stack([o[a] for o in obs_T])[None])
        lev_1TH = torch.from_numpy(np.stack([lv[a] for lv in levels])[None])
        prev = torch.cat([torch.zeros(1, 1, 4 * N_LEVELS), torch.nn.functional.one_hot(lev_1TH[:, :-1], N_LEVELS)
                          .float().reshape(1, 2, -1)], dim=1)
        with torch.no_grad():
            logits, _, cap = actor(torch.cat([obs_1TO, prev], dim=-1), capacity=True)
        for t in range(3):
            np.testing.assert_array_equal(levels[t][a], logits[0, t].argmax(-1).numpy())
            want = capacity_factors(cap[0, t][None].numpy(), levels[t][a][None], sig)[0]
            np.testing.assert_allclose(acts[t][a], want, rtol=1e-5)
    agent.save(tmp_path / "s.pt")
    back = SacGruAgent.load_policy(tmp_path / "s.pt", sig)
    for t, obs in enumerate(obs_T):
        got = back.act(obs)
        for a in sig.agents:
            np.testing.assert_allclose(got[a], acts[t][a], rtol=1e-6)


@pytest.mark.parametrize("mode", ["independent", "shared"])
def test_isac_capacity_updates_train_the_head_alone(mode):
    """``capacity_updates=k``: after each SAC update, k steps of the actor on its capacity loss
    alone. The SAC step itself is the plain one (after the first update the critics, the
    temperature and the target critics equal an agent's without extra steps, parameter for
    parameter) while the actor moved further; 20 updates with 3 extra steps each leave a
    capacity loss at most half the plain agent's on the same replay, and the same seed gives
    the same parameters."""
    plain, extra = _isac_with_readable_capacity(0, mode), _isac_with_readable_capacity(3, mode)
    s_plain, s_extra = plain.update(), extra.update()
    assert s_plain["losses/capacity"] == s_extra["losses/capacity"]  # the same first SAC batch
    assert "losses/capacity_extra" not in s_plain and np.isfinite(s_extra["losses/capacity_extra"])
    for lp, le in zip(plain.learners, extra.learners):
        for net in ("q1", "q2", "q1_targ", "q2_targ"):
            for a, b in zip(getattr(lp, net).parameters(), getattr(le, net).parameters()):
                torch.testing.assert_close(a, b, rtol=0, atol=0)
        assert lp.log_alpha.item() == le.log_alpha.item()
        assert any(not torch.equal(a, b) for a, b in zip(lp.actor.parameters(), le.actor.parameters()))
    for _ in range(19):
        last_plain, last_extra = plain.update()["losses/capacity"], extra.update()["losses/capacity"]
    assert last_extra <= 0.5 * last_plain, (last_extra, last_plain)
    again = _isac_with_readable_capacity(3, mode)
    for _ in range(20):
        again.update()
    for la, lb in zip(extra.learners, again.learners):
        for a, b in zip(la.parameters(), lb.parameters()):
            torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("hp, says", [
    (["agent_net=servers", "capacity_updates=2"], "capacity_updates=2: extra steps of the capacity head need"),
    (["agent_net=servers", "capacity_loss=1", "capacity_updates=-1"], "capacity_updates=-1: expected a whole number"),
    (["agent_net=servers", "capacity_loss=1", "capacity_updates=1.5"], "capacity_updates=1.5: expected a whole number"),
])
def test_bad_capacity_updates_is_one_clear_error(hp, says):
    from experiments.train import agent_config

    with pytest.raises(UserError, match=says):
        agent_config("isac", hp)
    with pytest.raises(UserError, match="capacity_updates"):  # QMIX has no such option
        agent_config("qmix", hp)
    with pytest.raises(ValueError, match="need capacity_loss > 0"):
        SacGruAgent(SacGruConfig(agent_net="servers", capacity_updates=1), _capacity_sig(2, 4))


def test_sac_capacity_options_are_checked():
    from experiments.train import agent_config

    with pytest.raises(UserError, match="not S-SAC"):
        agent_config("ssac", ["agent_net=servers", "capacity_loss=1"])
    with pytest.raises(ValueError, match="for I-SAC"):
        SacGruAgent(SacGruConfig(mode="single", agent_net="servers", capacity_loss=1.0), _capacity_sig(2, 4))
    with pytest.raises(ValueError, match="continuous env with relative actions"):
        SacGruAgent(SacGruConfig(agent_net="servers", capacity_loss=1.0, capacity_action=True), _sig(2, 4))
    assert agent_config("isac", ["agent_net=servers", "capacity_loss=1", "capacity_action=true",
                                 "server_memory=true"]).capacity_action is True
