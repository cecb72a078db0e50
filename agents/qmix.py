"""QMIX with recurrent agents, factored per-server heads and TD(lambda) targets.

Reference: Rashid et al. 2018 (QMIX); CIKM'22 MARLLB (arXiv 2201.11727) RLB-QMIX.  Read top to bottom:
config, the mixer (pure nn.Module), TD(lambda), the agent network use, the deployable policy, the learner.

Agents
------
One `RecurrentHeadNet` (2 FC -> GRU -> 2 FC) is shared by all LBs.  Its input at step t is the LB's
observation, the one-hot of the LB's previous action (H*A) and the one-hot agent id (N), so agents can
still behave differently.  Its output is a table of per-head utilities q_h(tau, level).

Factorised agent utility
------------------------
An LB's action is a level for each of H servers: 6^H joint actions (6^24 at large scale), so a joint-action
Q table is infeasible.  The agent utility is the *mean over heads*,
    Q_i(tau, a) = (1/H) sum_h q_h(tau, a_h),
which makes the greedy joint action the per-head argmax (exact, O(H*A)) and keeps Q_i on the scale of one
head whatever H.  The cost is that interactions between the levels of different servers of one LB are not
represented inside Q_i (the mixer still sees the LB utilities together with the global state).

Mixer and targets
-----------------
Q_tot = mixer(Q_1..Q_N, state) with hypernetwork weights made non-negative by abs(), hence
dQ_tot/dQ_i >= 0 (monotonic).  Targets are TD(lambda) returns (gamma 0.99, lambda 0.6) computed on the
target networks, with double-Q action selection (greedy levels from the online agent network evaluated by
the target network).  Targets are refreshed by a hard copy every `target_update_interval` updates
(default 25 = once per episode at 25 updates/episode, matching the original code which reloaded its model,
hence its targets, every episode) or by Polyak averaging when `target_tau > 0`.
Team reward = mean of the LBs' rewards (paper: global reward = mean of LB rewards).

Exploration
-----------
epsilon-greedy per head: each server's level is independently uniform with probability epsilon.  epsilon
anneals linearly from `epsilon_start` to `epsilon_finish` over `epsilon_anneal_episodes` *episodes*
(indexed by episode, not by env step, so it is independent of how rollouts are spread over workers).

Shape legend
------------
B batch of episodes, T steps (T+1 observation rows), N agents (LBs), O observation size, S state size,
H heads (servers), A = 6 levels, I = O + H*A + N agent-network input, E mixer embedding size,
Hd hidden units.  Suffixes: ``q_BTNHA``, ``qtot_BT``, ``w1_BNE``.
"""

from __future__ import annotations

import copy
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from agents.common.checkpoint import load_checkpoint, save_checkpoint
from agents.common.nets import prev_action_onehot
from agents.common.replay import Episode, EpisodeReplayBuffer
from agents.common.returns import td_lambda_targets
from agents.common.server_net import capacity_factors, check_capacity_action, fast_stepper, make_agent_net
from agents.common.spaces import N_LEVELS, EnvSignature

__all__ = ["QmixConfig", "QMixer", "td_lambda_targets", "QmixPolicy", "QmixAgent", "ALGO"]

log = logging.getLogger(__name__)
ALGO = "qmix"


# ------------------------------------------------------------------------------------------------
# CONFIG
# ------------------------------------------------------------------------------------------------
@dataclass
class QmixConfig:
    """Hyperparameters; defaults are the CIKM'22 moderate-scale values (Table 2, §8) unless noted."""

    step_s: float = 0.25
    """Decision period the agent was trained with (informational; the env owns the clock)."""
    hidden: int = 128
    """Hidden units of the agent network layers and GRU (paper: 128 moderate, 512 large)."""
    agent_net: str = "flat"
    """``flat``: the paper's network on the whole observation, one output head per server;
    ``servers``: one encoder and head shared by every server (`agents.common.server_net`)."""
    mixer_embed: int = 32
    """Mixer embedding size E (EPyMARL default; the original code used 128)."""
    hypernet_hidden: int = 64
    """Hidden units of the 2-layer hypernetworks producing mixer weights."""
    lr: float = 1e-3
    """Adam learning rate of agent network + mixer (paper: 1e-3 moderate, 3e-4 large)."""
    gamma: float = 0.99
    """Discount per step."""
    td_lambda: float = 0.6
    """lambda of the TD(lambda) return."""
    batch_episodes: int = 12
    """Episodes per gradient update."""
    buffer_episodes: int = 3000
    """Replay capacity in episodes."""
    updates_per_episode: int = 25
    """Gradient updates per collected episode."""
    learning_starts_episodes: int = 25
    """Updates start once the buffer holds more than this many episodes."""
    target_update_interval: int = 25
    """Hard target copy every this many updates (used when target_tau == 0)."""
    target_tau: float = 0.0
    """Polyak factor per update; > 0 replaces the periodic hard copy."""
    double_q: bool = True
    """Select target actions with the online network (double Q-learning)."""
    epsilon_start: float = 1.0
    """Initial per-head exploration probability."""
    epsilon_finish: float = 0.05
    """Final per-head exploration probability."""
    epsilon_anneal_episodes: int = 50
    """Episodes over which epsilon decreases linearly."""
    reward_scale: float = 1.0
    """Rewards are multiplied by this before learning."""
    grad_clip: float = 10.0
    """Max global gradient norm (0 disables)."""
    server_memory: bool = False
    """With ``agent_net=servers``: each server also gets its own recurrent state (a GRU shared by
    the servers), so its utilities can read how its frame changes over time."""
    capacity_loss: float = 0.0
    """Weight of an auxiliary loss (0: none; needs ``agent_net=servers``): the per-server net's
    capacity head predicts each server's true capacity / nominal cores (the env's privileged
    ``capacity`` info, a training target only) from the hidden layer its utilities come from."""
    capacity_action: bool = False
    """Needs ``capacity_loss > 0`` and a continuous env with relative actions: a server's
    weight is its static weight x the capacity head's estimate (over the LB's mean estimate)
    x its level's factor, so that the neutral level is SED with the estimated capacities of
    the moment and the levels learn what the estimate misses. The estimate comes from the
    frames alone (the head reads the agent's own features); the env's capacity info only
    trains it."""
    capacity_level_scale: float = 1.0
    """With ``capacity_action``: level a's factor is 2^((a - 3) / 2 x this); below 1 the levels
    fine-tune the head's estimate instead of overriding it (1/3: factors 0.71 ... 1.26); 0: every
    factor is 1, so the agent acts as its capacity reader (`agents.deploy.write_capacity_reader`)
    and its head learns from the frames of that policy."""


# ------------------------------------------------------------------------------------------------
# MIXER: monotonic hypernetwork mixing (pure module)
# ------------------------------------------------------------------------------------------------
class QMixer(nn.Module):
    """Q_tot(q_1..q_N, s) = w2(s) . ELU(q @ W1(s) + b1(s)) + V(s), with W1, w2 >= 0 elementwise.

    Non-negative mixing weights (abs of hypernetwork outputs) and a monotone activation make Q_tot
    non-decreasing in every agent utility, so per-agent greedy actions maximise Q_tot.
    """

    def __init__(self, n_agents: int, state_dim: int, embed: int, hyper_hidden: int) -> None:
        super().__init__()
        self.n_agents, self.embed = n_agents, embed
        self.hyper_w1 = nn.Sequential(nn.Linear(state_dim, hyper_hidden), nn.ReLU(),
                                      nn.Linear(hyper_hidden, n_agents * embed))
        self.hyper_b1 = nn.Linear(state_dim, embed)
        self.hyper_w2 = nn.Sequential(nn.Linear(state_dim, hyper_hidden), nn.ReLU(), nn.Linear(hyper_hidden, embed))
        self.value = nn.Sequential(nn.Linear(state_dim, embed), nn.ReLU(), nn.Linear(embed, 1))

    def forward(self, q_BTN: torch.Tensor, state_BTS: torch.Tensor) -> torch.Tensor:
        """Per-agent utilities q_BTN and states state_BTS -> qtot_BT."""
        B, T, N = q_BTN.shape
        s_XS = state_BTS.reshape(B * T, -1)
        w1_XNE = self.hyper_w1(s_XS).abs().view(B * T, N, self.embed)
        b1_X1E = self.hyper_b1(s_XS).view(B * T, 1, self.embed)
        hidden_X1E = F.elu(torch.bmm(q_BTN.reshape(B * T, 1, N), w1_XNE) + b1_X1E)
        w2_XE1 = self.hyper_w2(s_XS).abs().view(B * T, self.embed, 1)
        qtot_X = torch.bmm(hidden_X1E, w2_XE1).view(B * T) + self.value(s_XS).view(B * T)
        return qtot_X.view(B, T)


def _agent_inputs(obs_BTNO: torch.Tensor, actions_BTNH: torch.Tensor) -> torch.Tensor:
    """Agent-network input for T+1 steps: [obs, previous-action one-hot, agent-id one-hot] -> x_BTNI."""
    B, T1, N, O = obs_BTNO.shape
    H = actions_BTNH.shape[-1]
    prev_BTNX = prev_action_onehot(actions_BTNH.permute(0, 2, 1, 3).reshape(B * N, T1 - 1, H), N_LEVELS)
    prev_BTNX = prev_BTNX.view(B, N, T1, H * N_LEVELS).permute(0, 2, 1, 3)
    ids_BTNN = torch.eye(N).expand(B, T1, N, N)
    return torch.cat([obs_BTNO, prev_BTNX, ids_BTNN], dim=-1)


def _run_agents(net: nn.Module, x_BTNI: torch.Tensor, capacity: bool = False):  # type: ignore[no-untyped-def]
    """Unroll the shared agent network over every agent's sequence -> q_BTNHA (with ``capacity``
    also the capacity head's cap_BTNH)."""
    B, T1, N, I = x_BTNI.shape
    x = x_BTNI.permute(0, 2, 1, 3).reshape(B * N, T1, I)
    if not capacity:
        q_XTHA, _ = net(x)
        return q_XTHA.view(B, N, T1, net.n_heads, net.n_actions).permute(0, 2, 1, 3, 4)
    q_XTHA, _, cap_XTH = net(x, capacity=True)
    return (q_XTHA.view(B, N, T1, net.n_heads, net.n_actions).permute(0, 2, 1, 3, 4),
            cap_XTH.view(B, N, T1, net.n_heads).permute(0, 2, 1, 3))


# ------------------------------------------------------------------------------------------------
# POLICY: deployable decentralised execution
# ------------------------------------------------------------------------------------------------
class QmixPolicy:
    """Shared agent network + per-agent GRU state; implements `agents.common.policy.Policy`.

    Greedy = per-head argmax of q_h; exploration = per-head epsilon-greedy with a numpy Generator seeded
    by `reset(seed)`.  Each agent uses only its own observation (decentralised execution); agents absent
    from `obs_by_agent` keep their state.

    Decisions run through `FastRecurrentHeadNet` (float32 numpy, no torch, no autograd; `TorchStepper` for
    the per-server net): same function
    as `net` up to float rounding, with a copy of `net`'s weights taken here, so the policy is frozen:
    later changes of `net` are not seen.
    """

    def __init__(self, signature: EnvSignature, net: nn.Module, epsilon: float = 0.0,
                 capacity_action: bool = False, level_scale: float = 1.0) -> None:
        self.signature, self.net, self.epsilon = signature, net, epsilon
        self.level_scale = level_scale
        if capacity_action:
            check_capacity_action(signature, net)
        self.capacity_action = capacity_action
        #: the levels of the last `act`, by agent (what the replay stores; with capacity_action
        #: the env action is a factor no level table decodes)
        self.last_levels: dict[str, np.ndarray] = {}
        #: with capacity_action, the capacity head's estimates of the last `act` (capacity /
        #: nominal cores per server, before clipping), by agent: for diagnostics
        self.last_capacity: dict[str, np.ndarray] = {}
        self._fast = fast_stepper(net)
        self._rng = np.random.default_rng(0)
        N = signature.n_agents
        self._ids_NN = np.eye(N, dtype=np.float32)
        self._eye_A = np.eye(N_LEVELS, dtype=np.float32)
        self.reset()

    def reset(self, seed: int | None = None) -> None:
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        N, H = self.signature.n_agents, self.signature.n_servers
        self._h_NHd = self._fast.initial_state(N)
        self._prev_NX = np.zeros((N, H * N_LEVELS), np.float32)

    def act(self, obs_by_agent: Mapping[str, np.ndarray], deterministic: bool = True) -> dict[str, np.ndarray]:
        sig = self.signature
        idx = [i for i, a in enumerate(sig.agents) if a in obs_by_agent]
        if not idx:
            return {}
        everyone = len(idx) == sig.n_agents  # fast path: no gather/scatter of recurrent state
        obs_KO = np.stack([np.asarray(obs_by_agent[sig.agents[i]], np.float32) for i in idx])
        rows = slice(None) if everyone else idx
        x_KI = np.concatenate([obs_KO, self._prev_NX[rows], self._ids_NN[rows]], axis=1)
        out = self._fast.step(x_KI, self._h_NHd[rows], capacity=True) if self.capacity_action else \
            self._fast.step(x_KI, self._h_NHd[rows])
        q_KHA, self._h_NHd[rows] = out[0], out[1]
        a_KH = q_KHA.argmax(-1)
        if not deterministic and self.epsilon > 0:
            explore_KH = self._rng.random(a_KH.shape) < self.epsilon
            a_KH = np.where(explore_KH, self._rng.integers(0, N_LEVELS, a_KH.shape), a_KH)
        self._prev_NX[idx] = self._eye_A[a_KH].reshape(len(idx), -1)
        self.last_levels = {sig.agents[i]: a_KH[k] for k, i in enumerate(idx)}
        if self.capacity_action:
            self.last_capacity = {sig.agents[i]: out[2][k] for k, i in enumerate(idx)}
            act_KH = capacity_factors(out[2], a_KH, sig, self.level_scale)
            return {sig.agents[i]: act_KH[k] for k, i in enumerate(idx)}
        return {sig.agents[i]: sig.encode_action(a_KH[k]) for k, i in enumerate(idx)}


# ------------------------------------------------------------------------------------------------
# LEARNER
# ------------------------------------------------------------------------------------------------
class QmixAgent:
    """Trainable QMIX over a multi-LB env signature.

    Lifecycle: `behaviour_policy(i)` -> collect episode i -> `add_episode` -> `update()` x
    `config.updates_per_episode` when `ready()` -> `save`.  `load` restores everything needed to resume.
    """

    algo = ALGO

    def __init__(self, config: QmixConfig, signature: EnvSignature, seed: int = 0) -> None:
        self.config, self.signature, self.seed = config, signature, seed
        torch.manual_seed(seed)
        N, O, H = signature.n_agents, signature.obs_dim, signature.n_servers
        self.net = make_agent_net(config.agent_net, O, H, N_LEVELS, config.hidden, N,
                                  capacity_head=config.capacity_loss > 0, server_memory=config.server_memory,
                                  n_features=signature.n_features)
        if config.capacity_action:
            check_capacity_action(signature, self.net)
        self.mixer = QMixer(N, signature.state_dim, config.mixer_embed, config.hypernet_hidden)
        self.net_targ = copy.deepcopy(self.net).requires_grad_(False)
        self.mixer_targ = copy.deepcopy(self.mixer).requires_grad_(False)
        self.params = [*self.net.parameters(), *self.mixer.parameters()]
        self.opt = torch.optim.Adam(self.params, lr=config.lr)
        self.buffer = EpisodeReplayBuffer(config.buffer_episodes, np.random.default_rng(seed))
        self.episodes_seen = 0
        self.updates_done = 0

    # -- acting ---------------------------------------------------------------------------------
    def epsilon(self, episode_index: int) -> float:
        """Linear schedule over episodes."""
        c = self.config
        frac = min(1.0, episode_index / max(1, c.epsilon_anneal_episodes))
        return c.epsilon_start + frac * (c.epsilon_finish - c.epsilon_start)

    def greedy_policy(self) -> QmixPolicy:
        """A frozen greedy policy: a snapshot of the current network (later updates are not seen)."""
        return QmixPolicy(self.signature, copy.deepcopy(self.net), capacity_action=self.config.capacity_action,
                          level_scale=self.config.capacity_level_scale)

    def behaviour_policy(self, episode_index: int) -> QmixPolicy:
        """A frozen copy for collecting episode `episode_index` with its epsilon."""
        return QmixPolicy(self.signature, copy.deepcopy(self.net), self.epsilon(episode_index),
                          capacity_action=self.config.capacity_action, level_scale=self.config.capacity_level_scale)

    # -- learning -------------------------------------------------------------------------------
    def add_episode(self, episode: Episode) -> None:
        self.buffer.add(episode)
        self.episodes_seen += 1

    def ready(self) -> bool:
        return len(self.buffer) > self.config.learning_starts_episodes

    def update(self) -> dict[str, float]:
        """One gradient step on a sampled batch of episodes (masked MSE to TD(lambda) targets)."""
        cfg = self.config
        b = self.buffer.sample(cfg.batch_episodes)
        obs_BTNO = torch.from_numpy(b.obs_BTNO)
        state_BTS = torch.from_numpy(b.state_BTS)
        act_BTNH = torch.from_numpy(b.actions_BTNH)
        rew_BT = torch.from_numpy(b.rewards_BTN).mean(-1) * cfg.reward_scale
        term_BT, mask_BT = torch.from_numpy(b.terminated_BT), torch.from_numpy(b.mask_BT)

        x_BTNI = _agent_inputs(obs_BTNO, act_BTNH)  # T+1 rows
        aux = cfg.capacity_loss > 0
        if aux and b.capacity_BTH is None:
            raise ValueError("capacity_loss > 0 needs episodes with the env's capacity info")
        if aux:
            q_BTNHA, cap_BTNH = _run_agents(self.net, x_BTNI, capacity=True)
        else:
            q_BTNHA = _run_agents(self.net, x_BTNI)
        qa_BTN = q_BTNHA[:, :-1].gather(-1, act_BTNH.unsqueeze(-1)).squeeze(-1).mean(-1)
        qtot_BT = self.mixer(qa_BTN, state_BTS[:, :-1])

        with torch.no_grad():
            qt_BTNHA = _run_agents(self.net_targ, x_BTNI)
            greedy_BTNH = (q_BTNHA if cfg.double_q else qt_BTNHA).argmax(-1, keepdim=True)
            qt_BTN = qt_BTNHA.gather(-1, greedy_BTNH).squeeze(-1).mean(-1)
            qtot_targ_BT1 = self.mixer_targ(qt_BTN, state_BTS)
            target_BT = td_lambda_targets(rew_BT, term_BT, mask_BT, qtot_targ_BT1, cfg.gamma, cfg.td_lambda)

        n_valid = mask_BT.sum().clamp(min=1.0)
        td_BT = (qtot_BT - target_BT) * mask_BT
        loss = td_loss = (td_BT ** 2).sum() / n_valid
        stats = {}
        if aux:  # obs row t+1 is seen after step t, when capacity_BTH[:, t] held
            err_BTNH = cap_BTNH[:, 1:] - torch.from_numpy(b.capacity_BTH).unsqueeze(2)
            cap_loss = ((err_BTNH ** 2).mean((2, 3)) * mask_BT).sum() / n_valid
            loss = td_loss + cfg.capacity_loss * cap_loss
            stats["losses/capacity"] = cap_loss.item()
        self.opt.zero_grad()
        loss.backward()
        grad_norm = nn.utils.clip_grad_norm_(self.params, cfg.grad_clip if cfg.grad_clip > 0 else float("inf"))
        self.opt.step()
        self.updates_done += 1
        self._update_targets()
        return {"losses/td": td_loss.item(), "losses/grad_norm": float(grad_norm),
                "charts/q_tot_mean": ((qtot_BT * mask_BT).sum() / n_valid).item(), **stats}

    def _update_targets(self) -> None:
        cfg = self.config
        pairs = ((self.net, self.net_targ), (self.mixer, self.mixer_targ))
        with torch.no_grad():
            if cfg.target_tau > 0:
                for src, dst in pairs:
                    for p, pt in zip(src.parameters(), dst.parameters()):
                        pt.mul_(1.0 - cfg.target_tau).add_(p, alpha=cfg.target_tau)
            elif self.updates_done % cfg.target_update_interval == 0:
                for src, dst in pairs:
                    dst.load_state_dict(src.state_dict())

    # -- checkpoints ----------------------------------------------------------------------------
    def save(self, path: str | Path) -> None:
        """Write config, signature, networks, targets, optimizer and counters (resumable)."""
        state = {
            "net": self.net.state_dict(), "mixer": self.mixer.state_dict(),
            "net_targ": self.net_targ.state_dict(), "mixer_targ": self.mixer_targ.state_dict(),
            "opt": self.opt.state_dict(), "episodes_seen": self.episodes_seen,
            "updates_done": self.updates_done, "seed": self.seed,
            "buffer_rng": json.dumps(self.buffer.rng.bit_generator.state),
        }
        save_checkpoint(path, algo=ALGO, config=asdict(self.config), signature=self.signature, state=state)

    @classmethod
    def load(cls, path: str | Path, expected: EnvSignature | None = None) -> "QmixAgent":
        """Restore an agent; raises `SignatureMismatchError` if `expected` differs from the checkpoint."""
        ck = load_checkpoint(path, expected, algo=ALGO)
        st = ck["state"]
        agent = cls(QmixConfig(**ck["config"]), ck["signature"], seed=st["seed"])
        for name in ("net", "mixer", "net_targ", "mixer_targ", "opt"):
            getattr(agent, name).load_state_dict(st[name])
        agent.episodes_seen, agent.updates_done = st["episodes_seen"], st["updates_done"]
        agent.buffer.rng.bit_generator.state = json.loads(st["buffer_rng"])
        return agent

    @staticmethod
    def load_policy(path: str | Path, expected: EnvSignature | None = None) -> QmixPolicy:
        """Deployment: the greedy policy of a checkpoint."""
        return QmixAgent.load(path, expected).greedy_policy()
