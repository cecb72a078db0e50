"""Gymnasium and PettingZoo environments on the packet-level simulator.

* :class:`LoadBalanceParallelEnv` (``parallel_env(config)``): one agent per LB (``lb1`` ..
  ``lbK``), PettingZoo ``ParallelEnv`` with ``state()`` for centralised mixers (QMIX).
* :class:`LoadBalanceEnv` (Gymnasium id ``marllb/LoadBalance-v0``): LB ``lb`` is the agent; the
  other LBs keep the config's policy. The id is registered when this module is imported
  (``import simulator`` alone imports no gymnasium); without an import use
  ``gymnasium.make("simulator.envs:marllb/LoadBalance-v0", config=...)``.

Both take the same :class:`~simulator.config.ExperimentConfig` as ``marllb sim run`` (or a dict
or a YAML path); without one they run :data:`DEFAULT_SCENARIO` (2 LBs, 4 servers, 10 s episodes).
The config's policy must be a core policy that uses weights
(:data:`WEIGHTED_POLICIES`; ``sed``, the default, is MARLLB's): every LB of a run shares it, agent
LBs get their weights from the actions every step, the others keep its static weights.

Observation per agent, from the data plane only (the shm frame the LB publishes each step, via
:func:`simulator.features.server_features`): for every server its 11 features (``n_flow_on`` and
mean/p90/std/decayed mean/decayed p90 of flow duration and FCT), normalised by
:func:`normalise_features`, flattened server-major (``obs[j * 11 + f]``); optionally the previous
weights. :func:`frame_observation` is the same mapping from a frame, for the real-time controller.
With ``features="robust"`` every server has 19 features instead: those 11 and, per reservoir,
geometric mean, median and the geometric mean and count of the samples of the last second
(:data:`simulator.features.FEATURE_SETS`); checkpoints record which set they were trained on.

Action: MultiDiscrete([6] * n_servers), level a -> weight 1.0 + 0.2 a (CIKM'22), or a Box in
[1, 2]^n with ``continuous=True``; with ``action_scale="relative"`` level a -> the server's static
weight (its ``cores``) x 2^((a - 3) / 2), a Box of those factors (:mod:`simulator.actions`). Weights
set at step t apply to flows that start after t.

Rewards (``reward=``), computed from the decayed mean flow duration x_j of each server as the
LB sees it (MARLLB's feature), or from the requests finished during the step:

=============  ============================================================================
``product``    prod_j x_j / max(x) (CIKM'22 Def. 3.1); 1 when every x_j is 0
``jain``       (sum x)^2 / (n sum x^2); 1 when every x_j is 0
``variance``   -var(x / mean(x)): the variance-based fairness potential (arXiv 2206.01451)
``jct``        -mean JCT (s) of requests completed during the step (0 if none)
=============  ============================================================================

Every agent gets its own reward from its own observation (decentralised, as on the testbed);
the QMIX team reward is their mean (agents.training does that).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import gymnasium
import numpy as np
from gymnasium import spaces
from pettingzoo import ParallelEnv

from simulator.actions import LEVELS, action_bounds, action_weights, level_table, weights_feature
from simulator.config import ExperimentConfig, UserError, load_config, parse_config
from simulator.features import FEATURE_NAMES, FEATURE_SETS, feature_names, frame_features
from simulator.records import COMPLETED, MemoryRecorder

__all__ = ["LoadBalanceParallelEnv", "LoadBalanceEnv", "parallel_env", "normalise_features", "DEFAULT_SCENARIO",
           "frame_observation", "reward_from", "LEVELS", "REWARDS", "N_FEATURES", "WEIGHTED_POLICIES"]

REWARDS = ("product", "jain", "variance", "jct")
#: config policies whose core uses the per-server weights (agents' actions; non-agent LBs keep
#: the policy's static weights w_i = cores_i)
WEIGHTED_POLICIES = ("sed", "sed2", "wcmp")
#: the scenario of an env made without a config (``gymnasium.make("marllb/LoadBalance-v0")``,
#: ``parallel_env()``): small enough for a first try and for API checkers, two LBs so that the
#: PettingZoo env has two agents, servers of 2 and 4 CPUs so that weights matter; Poisson arrivals
#: at 80 % of the 12 CPUs, exponential 50 ms jobs, 10 s episodes of 40 steps
DEFAULT_SCENARIO: dict[str, Any] = {
    "name": "env_default", "seed": 0, "duration_s": 10.0, "warmup_s": 0.0,
    "topology": {"lbs": 2, "servers": [{"cores": 2}, {"cores": 2}, {"cores": 4}, {"cores": 4}]},
    "traffic": {"kind": "poisson", "load": 0.8, "job": {"dist": "exp", "mean_s": 0.05}},
    "policy": {"name": "sed"}, "lb": {"step_s": 0.25},
}
N_FEATURES = len(FEATURE_NAMES)  #: features per server of the paper's set (the default)
FLOW_SCALE = 8.0      #: n_flow_on is reported as log1p(n / FLOW_SCALE)
TIME_SCALE_S = 0.1    #: durations are reported as log1p(d / TIME_SCALE_S)
OBS_HIGH = 20.0       #: clip of the normalised features
_DMEAN = FEATURE_NAMES.index("fd_dmean_s")


#: per feature set, the columns that count (flows, samples) rather than measure seconds
_COUNT_COLUMNS = {len(names): np.array([n == "n_flow_on" or n.endswith("_n") for n in names])
                  for names in FEATURE_SETS.values()}


def normalise_features(features_SF: np.ndarray) -> np.ndarray:
    """Map raw per-server features (counts, seconds; either feature set) to log1p-compressed,
    clipped float32 values; monotone, so orderings between servers are kept, and independent of
    the topology. Statistics of an empty reservoir (NaN) become 0."""
    x = np.nan_to_num(np.asarray(features_SF, dtype=np.float64), nan=0.0, posinf=0.0)
    counts = _COUNT_COLUMNS[x.shape[1]]
    x[:, counts] /= FLOW_SCALE
    x[:, ~counts] /= TIME_SCALE_S
    return np.clip(np.log1p(np.maximum(x, 0.0)), 0.0, OBS_HIGH).astype(np.float32)


def frame_observation(frame: Any, n_servers: int, features: str = "paper") -> np.ndarray:
    """The agent observation (without previous weights) from one msg_out frame."""
    feature_names(features)  # UserError for an unknown set
    return normalise_features(frame_features(frame, n_servers, robust=features == "robust")).reshape(-1)


def reward_from(kind: str, features_SF: np.ndarray, jct_s: np.ndarray | None = None) -> float:
    """One agent's reward; see the module table."""
    x = np.nan_to_num(np.asarray(features_SF, dtype=np.float64)[:, _DMEAN], nan=0.0)
    if kind == "product":
        top = x.max()
        return 1.0 if top <= 0 else float(np.prod(x / top))
    if kind == "jain":
        sq = float(np.sum(x * x))
        return 1.0 if sq <= 0 else float(x.sum() ** 2 / (len(x) * sq))
    if kind == "variance":
        mean = x.mean()
        return 0.0 if mean <= 0 else -float(np.var(x / mean))
    if kind == "jct":
        return 0.0 if jct_s is None or len(jct_s) == 0 else -float(np.mean(jct_s))
    raise UserError(f"unknown reward {kind!r}; choose one of {', '.join(REWARDS)}")


def _as_config(config: ExperimentConfig | dict | str | Path | None) -> ExperimentConfig:
    if config is None:
        return parse_config(DEFAULT_SCENARIO)
    if isinstance(config, ExperimentConfig):
        return config
    if isinstance(config, dict):
        return parse_config(config)
    return load_config(config)


class _EnvController:
    """Wraps the config's controller: agent LBs get no weights from it (the env sets them),
    and the features every LB computed at each step are kept for the observation
    (``feature_set`` tells the simulation which set to compute)."""

    def __init__(self, base: Any, agent_lbs: set[int], feature_set: str = "paper") -> None:
        self.base, self.agent_lbs = base, agent_lbs
        self.feature_set = feature_set
        self._names = feature_names(feature_set)
        self.features: dict[int, np.ndarray] = {}

    def start(self, sim: Any) -> None:
        self.base.start(sim)

    def force(self, now_s: float, lb: int) -> int:
        return self.base.force(now_s, lb)

    def on_step(self, now_s: float, lb: int, features: dict[str, np.ndarray]) -> Any:
        self.features[lb] = np.stack([features[name] for name in self._names], axis=1)
        return None if lb in self.agent_lbs else self.base.on_step(now_s, lb, features)


class LoadBalanceParallelEnv(ParallelEnv):
    """K LB agents on one simulated run; an episode is the config's duration_s.

    ``load_range=(lo, hi)``: every reset draws traffic.load uniformly in it (training on varied
    loads; the config's traffic must be poisson/diurnal). ``rates=[r1, r2, ...]``: every reset
    draws traffic.rate from the list instead (e.g. the odd hours of a synthetic day). ``agent_lbs``: which LBs are agents
    (default all); the others keep the config's policy. ``features``: the observed feature set
    (``paper``, the default, or ``robust``; :data:`simulator.features.FEATURE_SETS`)."""

    metadata = {"name": "marllb_loadbalance_v0", "render_modes": []}

    def __init__(self, config: ExperimentConfig | dict | str | Path | None = None, *, reward: str = "product",
                 continuous: bool = False, prev_action: bool = False,
                 load_range: tuple[float, float] | None = None, rates: Sequence[float] | None = None,
                 agent_lbs: list[int] | None = None, action_scale: str = "absolute",
                 features: str = "paper") -> None:
        if reward not in REWARDS:
            raise UserError(f"unknown reward {reward!r}; choose one of {', '.join(REWARDS)}")
        self.cfg = _as_config(config)
        if self.cfg.policy.name not in WEIGHTED_POLICIES:
            # every LB of a run shares one core policy: the agents' weights must reach the choice
            raise UserError(f"policy {self.cfg.policy.name!r}: the env needs a core policy that uses "
                            f"weights for every LB ({', '.join(WEIGHTED_POLICIES)}; sed is MARLLB's)")
        from simulator.run import build_graph, server_nodes  # the graph gives the servers and LBs

        graph = build_graph(self.cfg)
        self.n_servers = sum(1 for _, k in graph.nodes(data="kind") if k == "server")
        #: the LBs' static weights (SED's w_i = cores_i), the base of relative actions
        self.static_weights = np.array([graph.nodes[n]["cores"] for n in server_nodes(graph)], dtype=np.float64)
        level_table(action_scale)  # UserError for an unknown scale
        self.action_scale = action_scale
        self.n_lbs = sum(1 for _, k in graph.nodes(data="kind") if k == "lb")
        self.reward_kind, self.continuous, self.prev_action = reward, continuous, prev_action
        if load_range is not None and rates is not None:
            raise UserError("give load_range or rates, not both")
        if rates is not None and (not len(rates) or min(rates) <= 0):
            raise UserError(f"rates {list(rates)}: expected a non-empty list of rates > 0")
        self.load_range = load_range
        self.rates = None if rates is None else [float(r) for r in rates]
        lbs = list(range(self.n_lbs)) if agent_lbs is None else list(agent_lbs)
        self._agent_idx = {f"lb{k + 1}": k for k in lbs}
        self.possible_agents = list(self._agent_idx)
        self.agents: list[str] = []
        self.features = features
        self.n_features = len(feature_names(features))  # UserError for an unknown set
        obs_dim = self.n_servers * self.n_features + (self.n_servers if prev_action else 0)
        self._obs_space = spaces.Box(0.0, OBS_HIGH, (obs_dim,), np.float32)
        self._act_space = (spaces.Box(*action_bounds(action_scale), (self.n_servers,), np.float32) if continuous
                           else spaces.MultiDiscrete([len(LEVELS)] * self.n_servers))
        self.state_space = spaces.Box(0.0, OBS_HIGH, (obs_dim * len(lbs),), np.float32)
        self._rng = np.random.default_rng()
        self.sim: Any = None

    # -- spaces ------------------------------------------------------------------------------
    def observation_space(self, agent: str) -> spaces.Space:
        return self._obs_space

    def action_space(self, agent: str) -> spaces.Space:
        return self._act_space

    # -- episode -----------------------------------------------------------------------------
    def reset(self, seed: int | None = None, options: dict | None = None) -> tuple[dict, dict]:
        from simulator.run import build_simulation

        if seed is not None:
            self._rng = np.random.default_rng(seed)
            for space in (self._obs_space, self._act_space, self.state_space):
                space.seed(seed)
        run_seed = int(self._rng.integers(2**31))
        update: dict[str, Any] = {"seed": run_seed}
        if (self.load_range is not None or self.rates is not None) and self.cfg.traffic.kind == "trace":
            raise UserError("load_range and rates need poisson or diurnal traffic")
        if self.load_range is not None:
            load = float(self._rng.uniform(*self.load_range))
            update["traffic"] = self.cfg.traffic.model_copy(update={"load": load, "rate": None})
        elif self.rates is not None:
            rate = self.rates[int(self._rng.integers(len(self.rates)))]
            update["traffic"] = self.cfg.traffic.model_copy(update={"rate": rate, "load": None})
        cfg = self.cfg.model_copy(update=update)
        self.sim = build_simulation(cfg, recorder=JctFeed)
        self._ctl = _EnvController(self.sim.controller, set(self._agent_idx.values()), self.features)
        self.sim.controller = self._ctl
        self._step_s = cfg.lb.step_s
        # what the episode summary reports of the traffic: its load, or its rate when it has none
        self._traffic_info = ({"load": cfg.traffic.load} if cfg.traffic.load is not None
                              else {"rate": cfg.traffic.rate} if cfg.traffic.rate is not None else {})
        self.sim.start()
        self._t = self._step_s
        self.sim.advance(self._t)  # the first step publishes the first frames
        self.agents = list(self.possible_agents)
        self._weights = {a: self.initial_weights() for a in self.agents}
        return self._observations(), {a: {"t_s": self._t} for a in self.agents}

    def step(self, actions: dict[str, Any]) -> tuple[dict, dict, dict, dict, dict]:
        for agent, action in actions.items():
            w = self._to_weights(action)
            self.sim.lbs[self._agent_idx[agent]].dp.set_weights(w)
            self._weights[agent] = w
        self._t += self._step_s
        self.sim.advance(self._t)
        jct = self._finished_jct()  # drained every step, whatever the reward, to stay bounded
        obs = self._observations()
        rewards = {a: reward_from(self.reward_kind, self._ctl.features[self._agent_idx[a]], jct)
                   for a in self.agents}
        done = self._t + self._step_s > self.sim.end_s + 1e-9
        terminations = {a: False for a in self.agents}
        truncations = {a: done for a in self.agents}
        capacity = self.true_capacity()
        infos = {a: {"t_s": self._t, "weights": self._weights[a], "capacity": capacity} for a in self.agents}
        if done:
            self.sim.finish()
            from simulator.run import collect

            # the run's own summary rule (completed, sent after warm-up); None if none completed
            summary = {"jct_mean_s": collect(self.sim, 0.0).summary["jct_mean_s"], **self._traffic_info}
            for a in self.agents:
                infos[a]["episode"] = summary
            self.agents = []
        return obs, rewards, terminations, truncations, infos

    def state(self) -> np.ndarray:
        return np.concatenate([self._observation(a) for a in self.possible_agents])

    def close(self) -> None:
        self.sim = None

    # -- helpers -----------------------------------------------------------------------------
    def _to_weights(self, action: Any) -> np.ndarray:
        return action_weights(action, scale=self.action_scale, continuous=self.continuous,
                              static=self.static_weights)

    def initial_weights(self) -> np.ndarray:
        """Weights in force before an agent's first action, as the observation reports them
        (absolute: 1 as CIKM'22's env; relative: the static weights the LB starts with)."""
        return self.static_weights.copy() if self.action_scale == "relative" else np.ones(self.n_servers)

    def true_capacity(self) -> np.ndarray:
        """Each server's true capacity now over its nominal cores (0 while failed): what the hidden
        effects leave of the static weight. Privileged (the LB never sees it): in ``infos`` only as a
        training target for auxiliary losses (QMIX ``capacity_loss``), never in an observation."""
        return np.array([0.0 if srv.failed else srv.capacity for srv in self.sim.servers]) / self.static_weights

    def _observation(self, agent: str) -> np.ndarray:
        obs = normalise_features(self._ctl.features[self._agent_idx[agent]]).reshape(-1)
        if self.prev_action:
            w = self._weights.get(agent, self.initial_weights())
            obs = np.concatenate([obs, weights_feature(w, scale=self.action_scale, static=self.static_weights)])
        return obs

    def _observations(self) -> dict[str, np.ndarray]:
        return {a: self._observation(a) for a in self.agents}

    def _finished_jct(self) -> np.ndarray:
        """JCTs of requests that completed since the last step."""
        return self.sim.recorder.drain()


class JctFeed(MemoryRecorder):
    """The envs' recorder: queues the JCT of each request as it completes, for the jct reward
    (drained every step, so no step scans the requests). A MemoryRecorder, so that
    ``env.sim.requests`` stays readable after an episode (episodes are short); only the queue
    is needed by the env itself."""

    def __init__(self, end_s: float, warmup_s: float, n_servers: int) -> None:
        super().__init__(end_s, warmup_s, n_servers)
        self._queue: list[tuple[int, float]] = []

    def finished(self, req: Any) -> None:
        super().finished(req)
        if req.status == COMPLETED:
            self._queue.append((req.id, req.t_done - req.t0))

    def drain(self) -> np.ndarray:
        """JCTs queued since the last drain, in id order (the order the reward's mean sums in)."""
        q, self._queue = self._queue, []
        q.sort()
        return np.array([jct for _, jct in q])


def parallel_env(config: ExperimentConfig | dict | str | Path | None = None, **kwargs: Any) -> LoadBalanceParallelEnv:
    """The PettingZoo env: one agent per LB (``config`` None: :data:`DEFAULT_SCENARIO`)."""
    return LoadBalanceParallelEnv(config, **kwargs)


class LoadBalanceEnv(gymnasium.Env):
    """One LB (index ``lb``) is the agent; the other LBs keep the config's policy."""

    metadata = {"render_modes": []}

    def __init__(self, config: ExperimentConfig | dict | str | Path | None = None, *, lb: int = 0,
                 **kwargs: Any) -> None:
        self._penv = LoadBalanceParallelEnv(config, agent_lbs=[lb], **kwargs)
        self._agent = self._penv.possible_agents[0]
        self.observation_space = self._penv.observation_space(self._agent)
        self.action_space = self._penv.action_space(self._agent)

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        obs, infos = self._penv.reset(seed=int(self.np_random.integers(2**31)), options=options)
        return obs[self._agent], infos[self._agent]

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        obs, rew, term, trunc, info = self._penv.step({self._agent: action})
        a = self._agent
        return obs[a], rew[a], term[a], trunc[a], info[a]


gymnasium.register(id="marllb/LoadBalance-v0", entry_point="simulator.envs:LoadBalanceEnv")
