"""Env-agnostic training pieces: collect an episode, the training loop, parallel rollouts, checkpoints.

Works with any learner that has the SAC-GRU / QMIX agent interface (`behaviour_policy(i)`,
`add_episode`, `ready`, `update`, `save`, `load`, `episodes_seen`) and any env that is a PettingZoo
ParallelEnv (a Gymnasium env is wrapped by `GymAsParallel`).

Determinism: episode `i` is collected with seed `episode_seed(seed, i)` (env reset and exploration
noise) by a frozen snapshot of the policy taken before its round.  Rounds contain
`episodes_per_round` episodes whatever the number of workers, episodes are added to replay in index
order, and updates run only in the main process, so the same seed gives the same parameters with 0, 1 or
k workers, on the local process pool or on Ray (agents.common.executors).  Workers run torch with one
thread.
"""

from __future__ import annotations

import functools
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from agents.common.executors import BACKENDS, Executor, make_executor
from agents.common.logs import CsvLogger
from agents.common.replay import Episode, EpisodeReplayBuffer
from agents.common.seeding import episode_seed, seed_everything
from agents.common.spaces import EnvSignature
from simulator.config import UserError

__all__ = ["GymAsParallel", "collect_episode", "make_agent", "train", "TrainResult", "load_agent"]

log = logging.getLogger(__name__)


class GymAsParallel:
    """Present a single-LB Gymnasium env as a one-agent parallel env (agent ``"lb0"``; state = obs)."""

    agent = "lb0"

    def __init__(self, env: Any) -> None:
        self.env = env
        self.possible_agents = [self.agent]
        self.agents: list[str] = []
        self._obs: np.ndarray | None = None

    def observation_space(self, agent: str) -> Any:
        return self.env.observation_space

    def action_space(self, agent: str) -> Any:
        return self.env.action_space

    def state(self) -> np.ndarray:
        assert self._obs is not None
        return np.asarray(self._obs, np.float32)

    def reset(self, seed: int | None = None, options: dict | None = None):
        self._obs, info = self.env.reset(seed=seed, options=options)
        self.agents = [self.agent]
        return {self.agent: self._obs}, {self.agent: info}

    def step(self, actions: dict):
        self._obs, r, term, trunc, info = self.env.step(actions[self.agent])
        if term or trunc:
            self.agents = []
        a = self.agent
        return {a: self._obs}, {a: r}, {a: term}, {a: trunc}, {a: info}


def _as_parallel(env: Any) -> Any:
    return env if hasattr(env, "possible_agents") else GymAsParallel(env)


def _state(env: Any, obs: dict[str, np.ndarray], sig: EnvSignature) -> np.ndarray:
    if hasattr(env, "state") and callable(env.state):
        try:
            return np.asarray(env.state(), np.float32).reshape(-1)
        except NotImplementedError:
            pass
    return np.concatenate([np.asarray(obs[a], np.float32) for a in sig.agents])


def collect_episode(env: Any, policy: Any, seed: int, deterministic: bool = False,
                    max_steps: int = 1_000_000) -> Episode:
    """Run one episode of `policy` on `env` reset with `seed`; exploration noise is seeded with `seed`.

    All agents must be alive for the whole episode (LBs do not leave mid-episode); the episode ends when
    the env removes its agents (termination or truncation).  `terminated` is True only if every agent
    terminated (a true end, not a time limit).  Raw env actions are decoded back to levels for replay.
    """
    env = _as_parallel(env)
    sig: EnvSignature = policy.signature
    obs, _ = env.reset(seed=seed)
    policy.reset(seed=seed)
    obs_rows = [np.stack([np.asarray(obs[a], np.float32) for a in sig.agents])]
    state_rows = [_state(env, obs, sig)]
    act_rows, rew_rows, cap_rows = [], [], []
    terminated = False
    costs: list[float] = []
    episode_info: dict[str, Any] = {}
    for _ in range(max_steps):
        actions = policy.act(obs, deterministic=deterministic)
        obs, rewards, terms, truncs, infos = env.step(actions)
        # the levels the policy chose (a capacity-driven QMIX's env actions are not levels)
        levels = getattr(policy, "last_levels", None) or {a: sig.decode_action(actions[a]) for a in sig.agents}
        act_rows.append(np.stack([levels[a] for a in sig.agents]))
        rew_rows.append(np.asarray([rewards[a] for a in sig.agents], np.float32))
        obs_rows.append(np.stack([np.asarray(obs[a], np.float32) for a in sig.agents]))
        state_rows.append(_state(env, obs, sig))
        info0 = infos.get(sig.agents[0], {}) if infos else {}
        if isinstance(info0, dict) and "capacity" in info0:
            cap_rows.append(np.asarray(info0["capacity"], np.float32))
        if isinstance(info0, dict) and "cost" in info0:
            costs.append(float(info0["cost"]))
        if any(terms.values()) or any(truncs.values()) or not env.agents:
            if isinstance(info0, dict) and isinstance(info0.get("episode"), dict):
                episode_info = {f"episode_{k}": v for k, v in info0["episode"].items() if v is not None}
            terminated = all(terms.get(a, False) for a in sig.agents)
            break
    info: dict[str, Any] = dict(episode_info)
    if costs:
        info["mean_cost"] = float(np.mean(costs))
    capacity = np.stack(cap_rows) if cap_rows and len(cap_rows) == len(act_rows) else None
    return Episode(np.stack(obs_rows), np.stack(state_rows), np.stack(act_rows).astype(np.int64),
                   np.stack(rew_rows), terminated, seed, info, capacity)


# ------------------------------------------------------------------------------------------------
# agent registry (by config type)
# ------------------------------------------------------------------------------------------------
def make_agent(config: Any, signature: EnvSignature, seed: int) -> Any:
    """Build the agent matching the config dataclass (SacGruConfig or QmixConfig)."""
    from agents.qmix import QmixAgent, QmixConfig
    from agents.sac_gru import SacGruAgent, SacGruConfig

    if isinstance(config, SacGruConfig):
        return SacGruAgent(config, signature, seed)
    if isinstance(config, QmixConfig):
        return QmixAgent(config, signature, seed)
    raise TypeError(f"no agent for config type {type(config).__name__}")


def load_agent(path: str | Path, expected: EnvSignature | None = None) -> Any:
    """Load a trainable agent of whatever algorithm the checkpoint holds."""
    from agents.common.checkpoint import load_checkpoint
    from agents.qmix import QmixAgent
    from agents.sac_gru import SacGruAgent

    algo = load_checkpoint(path)["algo"]
    cls = {SacGruAgent.algo: SacGruAgent, QmixAgent.algo: QmixAgent}.get(algo)
    if cls is None:
        raise ValueError(f"unknown algorithm {algo!r} in {path}")
    return cls.load(path, expected)


# ------------------------------------------------------------------------------------------------
# parallel rollouts (agents.common.executors: spawned processes or Ray actors, one env each)
# ------------------------------------------------------------------------------------------------
def _rollout_worker_init(env_fn: Callable[[], Any]) -> Any:
    """Worker state for rollouts: the env, built once per worker; torch runs on one thread."""
    import torch

    torch.set_num_threads(1)
    return env_fn()


def _rollout_collect(env: Any, job: tuple[Any, int]) -> Episode:
    """Collect one episode on the worker's env: job = (frozen behaviour policy, episode seed)."""
    policy, seed = job
    return collect_episode(env, policy, seed)


@dataclass
class TrainResult:
    agent: Any
    returns: list[float] = field(default_factory=list)
    run_dir: Path | None = None


def train(env_fn: Callable[[], Any], agent_cfg: Any, n_episodes: int, *, seed: int = 0,
          run_dir: str | Path | None = None, workers: int = 0, episodes_per_round: int = 1,
          checkpoint_every: int = 10, resume: bool = False, progress: bool = True,
          time_budget_s: float | None = None, snapshot_every: int = 0, backend: str = "local",
          ray_address: str | None = None) -> TrainResult:
    """Train an agent for `n_episodes` collected episodes in total (counting resumed ones).

    env_fn: picklable zero-argument factory of the env (called once here, once per worker).
    run_dir: if given: ``scalars.csv`` (charts/..., losses/...), ``config.json``, ``last.pt`` (agent) and
        ``replay.npz`` every `checkpoint_every` episodes and at the end.
    workers: 0 collects in this process; k > 0 uses k workers of `backend`, each building its env
        once with `env_fn` (see agents.common.executors).
    backend: ``"local"`` (a spawn process pool) or ``"ray"`` (Ray actors; needs workers >= 1 and the
        ``marllb[ray]`` extra).  The backend and the worker count do not change the results.
    ray_address: the Ray cluster to use (``"auto"``, ``"HOST:PORT"``); None starts a local Ray.
    episodes_per_round: episodes collected with one policy snapshot before updating (>= workers for
        full parallelism); each episode adds `updates_per_episode` updates once the agent is ready.
    resume: continue from ``run_dir/last.pt`` and ``run_dir/replay.npz`` if they exist.
    time_budget_s: stop after the round during which this much wall time (collection + updates) has
        passed, even before `n_episodes`; the checkpoint is written then.
    snapshot_every: if > 0 and `run_dir` is given, also keep ``snapshots/ep<N>.pt`` every that many
        episodes (for learning curves of the greedy policy).
    """
    t_start = time.perf_counter()
    if backend not in BACKENDS:
        raise UserError(f"backend {backend!r}: choose one of {', '.join(BACKENDS)}")
    if workers < 0 or (backend == "ray" and workers < 1):
        raise UserError(f"workers={workers}: must be >= 0 (>= 1 with backend 'ray')")
    seed_everything(seed)
    env = _as_parallel(env_fn())
    signature = EnvSignature.from_env(env)
    run_path = Path(run_dir) if run_dir is not None else None
    agent = None
    if resume and run_path is not None and (run_path / "last.pt").exists():
        agent = load_agent(run_path / "last.pt", signature)
        agent.buffer = EpisodeReplayBuffer.load(run_path / "replay.npz")
        log.info("resumed %s at episode %d", run_path, agent.episodes_seen)
    if agent is None:
        agent = make_agent(agent_cfg, signature, seed)
    logger = CsvLogger(run_path) if run_path is not None else None
    if logger is not None:
        logger.hyperparameters({"algo": agent.algo, "seed": seed, "n_episodes": n_episodes,
                                "workers": workers, "backend": backend,
                                "episodes_per_round": episodes_per_round,
                                **asdict(agent.config), "signature": signature.to_dict()})

    def checkpoint() -> None:
        if run_path is not None:
            agent.save(run_path / "last.pt")
            agent.buffer.save(run_path / "replay.npz")

    pool: Executor | None = None
    if workers > 0:
        pool = make_executor(backend, workers, init=functools.partial(_rollout_worker_init, env_fn),
                             ray_address=ray_address)
    result = TrainResult(agent, run_dir=run_path)
    from rich.progress import Progress

    try:
        with Progress(disable=not progress, transient=True) as bar:
            task = bar.add_task(f"train {agent.algo}", total=n_episodes, completed=agent.episodes_seen)
            while agent.episodes_seen < n_episodes:
                if time_budget_s is not None and time.perf_counter() - t_start >= time_budget_s:
                    log.warning("time budget of %.0f s reached after %d episodes", time_budget_s,
                                agent.episodes_seen)
                    checkpoint()
                    break
                first = agent.episodes_seen
                idx = list(range(first, min(first + episodes_per_round, n_episodes)))
                jobs = [(agent.behaviour_policy(i), episode_seed(seed, i)) for i in idx]
                t0 = time.perf_counter()
                if pool is None:
                    episodes = [collect_episode(env, p, s) for p, s in jobs]
                else:
                    episodes = pool.map(_rollout_collect, jobs)
                t_collect = time.perf_counter() - t0
                losses: dict[str, list[float]] = {}
                for i, ep in zip(idx, episodes):
                    agent.add_episode(ep)
                    result.returns.append(ep.total_reward())
                    if logger is not None:
                        scal = {"charts/episode_return": ep.total_reward(), "charts/episode_length": ep.length}
                        scal.update({f"charts/{k}": v for k, v in ep.info.items()})
                        eps = getattr(agent, "epsilon", None)
                        if callable(eps):
                            scal["charts/epsilon"] = eps(i)
                        logger.log(i, scal)
                    if agent.ready():
                        for _ in range(agent.config.updates_per_episode):
                            for k, v in agent.update().items():
                                losses.setdefault(k, []).append(v)
                if logger is not None:
                    scal = {k: float(np.mean(v)) for k, v in losses.items()}
                    scal["charts/collect_s"] = t_collect
                    scal["charts/wall_s"] = time.perf_counter() - t_start
                    logger.log(idx[-1], scal)
                if run_path is not None and (agent.episodes_seen % checkpoint_every < len(idx)
                                             or agent.episodes_seen >= n_episodes):
                    checkpoint()
                if run_path is not None and snapshot_every > 0 and (
                        agent.episodes_seen % snapshot_every < len(idx)):
                    (run_path / "snapshots").mkdir(exist_ok=True)
                    agent.save(run_path / "snapshots" / f"ep{agent.episodes_seen:05d}.pt")
                bar.update(task, completed=agent.episodes_seen)
    finally:
        if pool is not None:
            pool.close()
        if logger is not None:
            logger.close()
    return result
