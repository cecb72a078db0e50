"""SAC-GRU: discrete soft actor-critic with a multi-head categorical policy and recurrent networks.

Reference: CIKM'22 MARLLB (arXiv 2201.11727) RLB-I-SAC / RLB-S-SAC; discrete SAC as in Christodoulou
2019 ("Soft Actor-Critic for Discrete Action Settings").  Read top to bottom: config, networks, the
learner (one SAC over one observation stream), the deployable policy, and the agent that maps a
multi-LB env onto learners.

Modes
-----
* ``independent`` (I-SAC): one learner per LB, each with its own networks, its own observation, its own
  reward; no parameter or information sharing, so each LB could train on its own machine.
* ``single`` (S-SAC): one learner for all LBs: its observation is the concatenation of every LB's
  observation (in `possible_agents` order), its heads are all (LB, server) pairs (N*H heads, LB-major),
  its reward is the mean of the LBs' rewards; the action is split back per LB.

Multi-head factorisation
------------------------
The joint action of one learner is a level per head (6^H joint actions, infeasible to enumerate).  The
policy factorises, pi(a|tau) = prod_h pi_h(a_h|tau), and the critic is an additive decomposition
Q(tau, a) = mean_h Q_h(tau, a_h) (each critic outputs an H x A table).  Then both the soft state value
    V(tau) = mean_h E_{pi_h}[Q_h] - alpha * sum_h E_{pi_h}[log pi_h]
and the policy objective are exact sums over heads — no sampling of joint actions is needed.  As usual in
discrete SAC, the twin minimum is taken elementwise over the (head, action) tables.

Entropy target
--------------
The paper uses "-|A|" (continuous-SAC heuristic).  Here |A| is read as the number of action dimensions
(heads), so ``target_entropy_mode="paper"`` gives a target of -H for the summed per-head entropies.
Categorical entropy is never negative, so this target makes alpha decay monotonically: exploration is
annealed toward greedy at a rate set by `alpha_lr`.  ``"ratio"`` instead targets a fraction of the maximum
entropy, ratio * H * log(A) (Christodoulou 2019 used 0.98), which keeps alpha adaptive.

Shape legend
------------
B batch of episodes, T steps (T+1 observation rows), O observation size, H heads (servers, or LBs x
servers in S-SAC), A = 6 weight levels per head, I = O + H*A network input (observation + previous
action one-hot), Hd hidden units.  Suffixes: ``q_BTHA``, ``logp_BTHA``, ``mask_BT``.
"""

from __future__ import annotations

import copy
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from agents.common.checkpoint import load_checkpoint, save_checkpoint
from agents.common.nets import prev_action_onehot
from agents.common.replay import Episode, EpisodeBatch, EpisodeReplayBuffer
from agents.common.server_net import capacity_factors, check_capacity_action, fast_stepper, make_agent_net
from agents.common.returns import td_lambda_targets
from agents.common.spaces import N_LEVELS, EnvSignature

__all__ = ["SacGruConfig", "SacGruAgent", "SacGruPolicy", "ALGO"]

log = logging.getLogger(__name__)
ALGO = "sac_gru"


# ------------------------------------------------------------------------------------------------
# CONFIG
# ------------------------------------------------------------------------------------------------
@dataclass
class SacGruConfig:
    """Hyperparameters; defaults are the CIKM'22 moderate-scale values (Table 2) unless noted."""

    mode: Literal["independent", "shared", "single"] = "independent"
    """I-SAC (one learner per LB), I-SAC with one learner shared by all LBs ("shared": parameter
    sharing as QMIX's agent network; each LB keeps its own recurrent state and its episodes
    are separate sequences of one batch) or S-SAC (one learner over all LBs' concatenation)."""
    step_s: float = 0.25
    """Decision period the agent was trained with (informational; the env owns the clock)."""
    hidden: int = 128
    """Hidden units of every layer and the GRU (paper: 128 moderate, 512 large)."""
    agent_net: str = "flat"
    """``flat``: the paper's networks on the whole observation, one output head per server;
    ``servers``: one encoder and head shared by every server (`agents.common.server_net`)."""
    lr: float = 1e-3
    """Adam learning rate of the critics and the policy (paper: 1e-3 moderate, 3e-4 large)."""
    alpha_lr: float = 1e-3
    """Adam learning rate of log(alpha)."""
    alpha_init: float = 0.05
    """Initial entropy temperature (ours: rewards are O(0.1-1), so alpha=1 would swamp them)."""
    target_entropy_mode: Literal["paper", "ratio"] = "paper"
    """'paper': target = -H (-|A| with |A| = heads); 'ratio': target = ratio * H * log(A)."""
    target_entropy_ratio: float = 0.5
    """Fraction of the maximum entropy used when target_entropy_mode='ratio'."""
    gamma: float = 0.99
    """Discount per step."""
    td_lambda: float = 0.0
    """lambda of the critic target; 0 = the one-step soft target of standard SAC (paper).  > 0 uses
    TD(lambda) over the stored sequence with soft values V_targ as bootstrap, without off-policy correction
    and without entropy bonuses inside the lambda tail (an approximation, as in QMIX's TD(lambda))."""
    tau: float = 0.01
    """Polyak factor of the target critics, applied after every update (original code: 1e-2)."""
    batch_episodes: int = 12
    """Episodes per gradient update."""
    buffer_episodes: int = 3000
    """Replay capacity in episodes."""
    updates_per_episode: int = 25
    """Gradient updates per collected episode."""
    learning_starts_episodes: int = 25
    """Updates start once the buffer holds more than this many episodes."""
    reward_scale: float = 1.0
    """Rewards are multiplied by this before learning."""
    grad_clip: float = 10.0
    """Max global gradient norm per network (0 disables)."""
    server_memory: bool = False
    """With ``agent_net=servers``: the actor and critics give each server its own recurrent
    state (as QMIX's ``server_memory``)."""
    capacity_loss: float = 0.0
    """Weight of the actor's auxiliary capacity loss (as QMIX's; I-SAC with ``agent_net=servers``)."""
    capacity_action: bool = False
    """As QMIX's: a server's weight is its static weight x the actor's capacity estimate (over
    the LB's mean estimate) x its level's factor (I-SAC; needs ``capacity_loss > 0`` and a
    continuous env with relative actions)."""
    capacity_level_scale: float = 1.0
    """As QMIX's: with ``capacity_action``, level a's factor is 2^((a - 3) / 2 x this)."""
    capacity_updates: int = 0
    """Extra gradient steps of the actor on its capacity loss alone after each SAC update, each on
    a freshly sampled batch (needs ``capacity_loss > 0``). A capacity head is supervised: it
    learns from every batch it sees, and I-SAC's three networks leave it fewer batches than QMIX's
    head gets in the same time; a head-only step costs one actor pass instead of six. Measured on
    hidden_dynamic (bench/learning results, ``reader_trained_shared_isac_cu2``): K = 2 did not
    make the readers better or steadier across training seeds."""


# ------------------------------------------------------------------------------------------------
# LEARNER: one discrete SAC over one observation stream (networks + update)
# ------------------------------------------------------------------------------------------------
class _SacLearner(nn.Module):
    def __init__(self, obs_dim: int, n_heads: int, cfg: SacGruConfig, groups: int = 1,
                 n_features: int | None = None) -> None:
        super().__init__()
        self.obs_dim, self.n_heads, self.cfg = obs_dim, n_heads, cfg
        self.actor, self.q1, self.q2 = (make_agent_net(cfg.agent_net, obs_dim, n_heads, N_LEVELS, cfg.hidden, 0, groups,
                                                       capacity_head=k == 0 and cfg.capacity_loss > 0,
                                                       server_memory=cfg.server_memory, n_features=n_features)
                                        for k in range(3))
        self.q1_targ = copy.deepcopy(self.q1).requires_grad_(False)
        self.q2_targ = copy.deepcopy(self.q2).requires_grad_(False)
        self.log_alpha = nn.Parameter(torch.tensor(float(np.log(cfg.alpha_init))))
        if cfg.target_entropy_mode == "paper":
            self.target_entropy = -float(n_heads)
        else:
            self.target_entropy = cfg.target_entropy_ratio * n_heads * float(np.log(N_LEVELS))
        self.opt_q = torch.optim.Adam([*self.q1.parameters(), *self.q2.parameters()], lr=cfg.lr)
        self.opt_pi = torch.optim.Adam(self.actor.parameters(), lr=cfg.lr)
        self.opt_alpha = torch.optim.Adam([self.log_alpha], lr=cfg.alpha_lr)

    def update(self, obs_BTO: torch.Tensor, actions_BTH: torch.Tensor, rewards_BT: torch.Tensor,
               terminated_BT: torch.Tensor, mask_BT: torch.Tensor,
               capacity_BTH: torch.Tensor | None = None) -> dict[str, float]:
        """One gradient step of critics, policy and temperature on a padded batch of sequences
        (with ``capacity_loss``, the actor's capacity head learns ``capacity_BTH``)."""
        cfg = self.cfg
        H = self.n_heads
        x_BTI = torch.cat([obs_BTO, prev_action_onehot(actions_BTH, N_LEVELS)], dim=-1)  # T+1 rows
        n_valid = mask_BT.sum().clamp(min=1.0)
        alpha = self.log_alpha.exp().detach()

        # critic targets: y_t = r_t + gamma (1 - term_t) V_targ(tau_{t+1})  (lambda = 0)
        with torch.no_grad():
            logits_BTHA, _ = self.actor(x_BTI)
            logp_BTHA = F.log_softmax(logits_BTHA, dim=-1)
            p_BTHA = logp_BTHA.exp()
            qt_BTHA = torch.min(self.q1_targ(x_BTI)[0], self.q2_targ(x_BTI)[0])
            v_BT = (p_BTHA * qt_BTHA).sum(-1).mean(-1) - alpha * (p_BTHA * logp_BTHA).sum(-1).sum(-1)
            y_BT = td_lambda_targets(cfg.reward_scale * rewards_BT, terminated_BT, mask_BT, v_BT,
                                     cfg.gamma, cfg.td_lambda)

        a_BTH1 = actions_BTH.unsqueeze(-1)
        q1_BTHA, _ = self.q1(x_BTI)
        q2_BTHA, _ = self.q2(x_BTI)
        q1_BT = q1_BTHA[:, :-1].gather(-1, a_BTH1).squeeze(-1).mean(-1)
        q2_BT = q2_BTHA[:, :-1].gather(-1, a_BTH1).squeeze(-1).mean(-1)
        loss_q = (((q1_BT - y_BT) ** 2 + (q2_BT - y_BT) ** 2) * mask_BT).sum() / n_valid
        self.opt_q.zero_grad()
        loss_q.backward()
        if cfg.grad_clip > 0:
            nn.utils.clip_grad_norm_([*self.q1.parameters(), *self.q2.parameters()], cfg.grad_clip)
        self.opt_q.step()

        # policy: minimise E[ sum_h E_{pi_h}[alpha log pi_h - min(Q1_h, Q2_h) / H] ]
        aux: dict[str, float] = {}
        if cfg.capacity_loss > 0:
            logits_BTHA, cap_loss = self._capacity_pass(x_BTI, mask_BT, n_valid, capacity_BTH)
            logits_BTHA = logits_BTHA[:, :-1]
            aux["losses/capacity"] = cap_loss.item()
        else:
            logits_BTHA, _ = self.actor(x_BTI[:, :-1])
        logp_BTHA = F.log_softmax(logits_BTHA, dim=-1)
        p_BTHA = logp_BTHA.exp()
        qmin_BTHA = torch.min(q1_BTHA[:, :-1], q2_BTHA[:, :-1]).detach()
        loss_pi_BT = (p_BTHA * (alpha * logp_BTHA - qmin_BTHA / H)).sum(-1).sum(-1)
        loss_pi = (loss_pi_BT * mask_BT).sum() / n_valid
        if cfg.capacity_loss > 0:
            loss_pi = loss_pi + cfg.capacity_loss * cap_loss
        self.opt_pi.zero_grad()
        loss_pi.backward()
        if cfg.grad_clip > 0:
            nn.utils.clip_grad_norm_(self.actor.parameters(), cfg.grad_clip)
        self.opt_pi.step()

        # temperature: raise alpha when entropy < target, lower it otherwise
        entropy_BT = -(p_BTHA * logp_BTHA).sum(-1).sum(-1).detach()
        loss_alpha = (self.log_alpha * (entropy_BT - self.target_entropy) * mask_BT).sum() / n_valid
        self.opt_alpha.zero_grad()
        loss_alpha.backward()
        self.opt_alpha.step()

        with torch.no_grad():
            for net, targ in ((self.q1, self.q1_targ), (self.q2, self.q2_targ)):
                for p, pt in zip(net.parameters(), targ.parameters()):
                    pt.mul_(1.0 - cfg.tau).add_(p, alpha=cfg.tau)
        return {"losses/q": loss_q.item(), "losses/policy": loss_pi.item(), "losses/alpha": loss_alpha.item(),
                "charts/alpha": self.log_alpha.exp().item(),
                "charts/entropy": (entropy_BT * mask_BT).sum().item() / n_valid.item(),
                "charts/q_mean": (q1_BT * mask_BT).sum().item() / n_valid.item(), **aux}

    def _capacity_pass(self, x_BTI: torch.Tensor, mask_BT: torch.Tensor, n_valid: torch.Tensor,
                       capacity_BTH: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """The actor over all T+1 rows (causal: its first T rows are the policy's) and its
        capacity head's masked squared error: obs row t+1 is seen after step t, when
        capacity_BTH[:, t] held. Returns (logits_BTHA of the T+1 rows, loss)."""
        if capacity_BTH is None:
            raise ValueError("capacity_loss > 0 needs episodes with the env's capacity info")
        logits_BTHA, _, cap_BTH = self.actor(x_BTI, capacity=True)
        cap_loss = (((cap_BTH[:, 1:] - capacity_BTH) ** 2).mean(-1) * mask_BT).sum() / n_valid
        return logits_BTHA, cap_loss

    def capacity_update(self, obs_BTO: torch.Tensor, actions_BTH: torch.Tensor, mask_BT: torch.Tensor,
                        capacity_BTH: torch.Tensor | None) -> float:
        """One gradient step of the actor on its capacity loss alone (critics and temperature
        untouched); returns the loss before the step."""
        x_BTI = torch.cat([obs_BTO, prev_action_onehot(actions_BTH, N_LEVELS)], dim=-1)
        _, cap_loss = self._capacity_pass(x_BTI, mask_BT, mask_BT.sum().clamp(min=1.0), capacity_BTH)
        self.opt_pi.zero_grad()
        (self.cfg.capacity_loss * cap_loss).backward()
        if self.cfg.grad_clip > 0:
            nn.utils.clip_grad_norm_(self.actor.parameters(), self.cfg.grad_clip)
        self.opt_pi.step()
        return cap_loss.item()

    def optim_state(self) -> dict:
        return {"opt_q": self.opt_q.state_dict(), "opt_pi": self.opt_pi.state_dict(),
                "opt_alpha": self.opt_alpha.state_dict()}

    def load_optim_state(self, st: dict) -> None:
        self.opt_q.load_state_dict(st["opt_q"])
        self.opt_pi.load_state_dict(st["opt_pi"])
        self.opt_alpha.load_state_dict(st["opt_alpha"])


# ------------------------------------------------------------------------------------------------
# POLICY: deployable actor(s) with GRU state (numpy forward, no autograd)
# ------------------------------------------------------------------------------------------------
class SacGruPolicy:
    """Actor networks plus recurrent state; implements `agents.common.policy.Policy`.

    Each *unit* is one actor and the agents it decides for (one agent per unit in I-SAC; all agents in
    one unit in S-SAC, whose observation is their concatenation).  `deterministic=True` takes the most
    probable level per head; otherwise levels are sampled with a torch Generator seeded by `reset(seed)`.

    Logits come from `FastRecurrentHeadNet` (float32 numpy, no torch, no autograd; `TorchStepper` for the
    per-server net): same function as
    the actor up to float rounding, with a copy of the actors' weights taken here, so the policy is
    frozen: later changes of `actors` are not seen.
    """

    def __init__(self, signature: EnvSignature, actors: list[nn.Module], units: list[list[str]],
                 capacity_action: bool = False, level_scale: float = 1.0) -> None:
        self.signature = signature
        self.level_scale = level_scale
        self.actors = actors
        self.units = units
        if capacity_action:
            if any(len(names) != 1 for names in units):
                raise ValueError("capacity_action needs one actor per LB (I-SAC)")
            for a in actors:
                check_capacity_action(signature, a)
        self.capacity_action = capacity_action
        #: the levels of the last `act`, by agent (what the replay stores, as QMIX's)
        self.last_levels: dict[str, np.ndarray] = {}
        #: with capacity_action, the capacity head's estimates of the last `act`, by agent (as QMIX's)
        self.last_capacity: dict[str, np.ndarray] = {}
        self._fast = [fast_stepper(a) for a in actors]
        self._gen = torch.Generator().manual_seed(0)
        self._eye_A = np.eye(N_LEVELS, dtype=np.float32)
        self.reset()

    def reset(self, seed: int | None = None) -> None:
        if seed is not None:
            self._gen.manual_seed(seed)
        self._h = [f.initial_state(1) for f in self._fast]
        self._prev = [np.zeros(a.n_heads * N_LEVELS, np.float32) for a in self.actors]

    def act(self, obs_by_agent: Mapping[str, np.ndarray], deterministic: bool = True) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        self.last_levels, self.last_capacity = {}, {}
        H = self.signature.n_servers
        for u, (fast, names) in enumerate(zip(self._fast, self.units)):
            if not all(n in obs_by_agent for n in names):
                continue
            obs = [np.asarray(obs_by_agent[n], np.float32) for n in names]
            x_1I = np.concatenate([*obs, self._prev[u]]).reshape(1, -1)
            step = fast.step(x_1I, self._h[u], capacity=True) if self.capacity_action else fast.step(x_1I, self._h[u])
            logits_1HA, self._h[u] = step[0], step[1]
            if deterministic:
                levels = logits_1HA[0].argmax(-1)
            else:
                probs_HA = F.softmax(torch.from_numpy(logits_1HA[0]), -1)
                levels = torch.multinomial(probs_HA, 1, generator=self._gen).squeeze(-1).numpy()
            self._prev[u] = self._eye_A[levels].reshape(-1)
            for i, n in enumerate(names):
                self.last_levels[n] = levels[i * H:(i + 1) * H]
                if self.capacity_action:
                    self.last_capacity[n] = step[2][0]
                out[n] = (capacity_factors(step[2], levels[None], self.signature, self.level_scale)[0]
                          if self.capacity_action
                          else self.signature.encode_action(levels[i * H:(i + 1) * H]))
        return out


# ------------------------------------------------------------------------------------------------
# AGENT: env-level data -> learners; replay; checkpoints
# ------------------------------------------------------------------------------------------------
class SacGruAgent:
    """Trainable SAC-GRU over a multi-LB env signature (see module docstring for the two modes).

    Lifecycle: `behaviour_policy(i)` -> collect episode i -> `add_episode` -> `update()` x
    `config.updates_per_episode` when `ready()` -> `save`.  `load` restores everything needed to resume.
    """

    algo = ALGO

    def __init__(self, config: SacGruConfig, signature: EnvSignature, seed: int = 0) -> None:
        self.config, self.signature, self.seed = config, signature, seed
        torch.manual_seed(seed)
        N, O, H = signature.n_agents, signature.obs_dim, signature.n_servers
        if config.capacity_loss > 0 and config.mode == "single":
            raise ValueError("capacity_loss: the capacity head is for I-SAC (one actor per LB)")
        if config.capacity_updates > 0 and not config.capacity_loss > 0:
            raise ValueError("capacity_updates: extra steps of the capacity head need capacity_loss > 0")
        if config.mode in ("independent", "shared"):
            self.units = [[a] for a in signature.agents]
            n_learners = N if config.mode == "independent" else 1
            self.learners = [_SacLearner(O, H, config, n_features=signature.n_features) for _ in range(n_learners)]
        elif config.mode == "single":
            self.units = [list(signature.agents)]
            self.learners = [_SacLearner(N * O, N * H, config, groups=N, n_features=signature.n_features)]
        else:
            raise ValueError(f"unknown SAC mode {config.mode!r}")
        self.buffer = EpisodeReplayBuffer(config.buffer_episodes, np.random.default_rng(seed))
        self.episodes_seen = 0
        self.updates_done = 0
        if config.capacity_action:
            for learner in self.learners:
                check_capacity_action(signature, learner.actor)

    # -- acting ---------------------------------------------------------------------------------
    def greedy_policy(self) -> SacGruPolicy:
        """A frozen greedy policy: a snapshot of the current actors (later updates are not seen)."""
        actors = [copy.deepcopy(lr.actor) for lr in self.learners]
        if self.config.mode == "shared":  # one actor acting for every LB
            actors = actors * len(self.units)
        return SacGruPolicy(self.signature, actors, self.units,
                            capacity_action=self.config.capacity_action, level_scale=self.config.capacity_level_scale)

    def behaviour_policy(self, episode_index: int) -> SacGruPolicy:
        """A frozen copy of the actors for collecting episode `episode_index` (sampled actions)."""
        return self.greedy_policy()

    # -- learning -------------------------------------------------------------------------------
    def add_episode(self, episode: Episode) -> None:
        self.buffer.add(episode)
        self.episodes_seen += 1

    def ready(self) -> bool:
        return len(self.buffer) > self.config.learning_starts_episodes

    def update(self) -> dict[str, float]:
        """One gradient step of every learner on one sampled batch; returns mean scalars."""
        b = self.buffer.sample(self.config.batch_episodes)
        stats: dict[str, list[float]] = {}
        for i, learner in enumerate(self.learners):
            s = learner.update(*self._unit_view(b, i))
            for k, v in s.items():
                stats.setdefault(k, []).append(v)
        for _ in range(self.config.capacity_updates):
            b = self.buffer.sample(self.config.batch_episodes)
            for i, learner in enumerate(self.learners):
                obs, act, _, _, mask, cap = self._unit_view(b, i)
                stats.setdefault("losses/capacity_extra", []).append(learner.capacity_update(obs, act, mask, cap))
        self.updates_done += 1
        return {k: float(np.mean(v)) for k, v in stats.items()}

    def _unit_view(self, b: EpisodeBatch, i: int) -> tuple:
        """Learner i's batch: (obs_BTO, actions_BTH, rewards_BT, terminated_BT, mask_BT,
        capacity_BTH or None) as tensors, for its mode."""
        term_BT, mask_BT, cap_BTH = b.terminated_BT, b.mask_BT, b.capacity_BTH
        B, T1, N, O = b.obs_BTNO.shape
        if self.config.mode == "shared":  # row b * N + n: episode b seen by LB n
            obs = np.ascontiguousarray(b.obs_BTNO.transpose(0, 2, 1, 3)).reshape(B * N, T1, O)
            act = np.ascontiguousarray(b.actions_BTNH.transpose(0, 2, 1, 3)).reshape(B * N, T1 - 1, -1)
            rew = np.ascontiguousarray(b.rewards_BTN.transpose(0, 2, 1)).reshape(B * N, T1 - 1)
            term_BT, mask_BT = np.repeat(term_BT, N, axis=0), np.repeat(mask_BT, N, axis=0)
            cap_BTH = None if cap_BTH is None else np.repeat(cap_BTH, N, axis=0)
        elif self.config.mode == "independent":
            obs, act, rew = b.obs_BTNO[:, :, i], b.actions_BTNH[:, :, i], b.rewards_BTN[:, :, i]
        else:  # single: all LBs' concatenation, no capacity head
            obs, act = b.obs_BTNO.reshape(B, T1, N * O), b.actions_BTNH.reshape(B, T1 - 1, -1)
            rew, cap_BTH = b.rewards_BTN.mean(axis=2), None
        return (torch.from_numpy(obs), torch.from_numpy(act), torch.from_numpy(rew), torch.from_numpy(term_BT),
                torch.from_numpy(mask_BT), None if cap_BTH is None else torch.from_numpy(cap_BTH))

    # -- checkpoints ----------------------------------------------------------------------------
    def save(self, path: str | Path) -> None:
        """Write config, signature, all networks, optimizers and counters (resumable)."""
        state = {
            "learners": [lr.state_dict() for lr in self.learners],
            "optims": [lr.optim_state() for lr in self.learners],
            "episodes_seen": self.episodes_seen,
            "updates_done": self.updates_done,
            "seed": self.seed,
            "buffer_rng": json.dumps(self.buffer.rng.bit_generator.state),
        }
        save_checkpoint(path, algo=ALGO, config=asdict(self.config), signature=self.signature, state=state)

    @classmethod
    def load(cls, path: str | Path, expected: EnvSignature | None = None) -> "SacGruAgent":
        """Restore an agent; raises `SignatureMismatchError` if `expected` differs from the checkpoint."""
        ck = load_checkpoint(path, expected, algo=ALGO)
        st = ck["state"]
        agent = cls(SacGruConfig(**ck["config"]), ck["signature"], seed=st["seed"])
        for lr, sd, osd in zip(agent.learners, st["learners"], st["optims"]):
            lr.load_state_dict(sd)
            lr.load_optim_state(osd)
        agent.episodes_seen, agent.updates_done = st["episodes_seen"], st["updates_done"]
        agent.buffer.rng.bit_generator.state = json.loads(st["buffer_rng"])
        return agent

    @staticmethod
    def load_policy(path: str | Path, expected: EnvSignature | None = None) -> SacGruPolicy:
        """Deployment: the greedy policy of a checkpoint (no optimizers kept alive)."""
        return SacGruAgent.load(path, expected).greedy_policy()
