"""`marllb train CONFIG.yaml`: train QMIX or SAC-GRU on the simulator's PettingZoo env, or run the
fairness-potential rule (``--algo fairness``: nothing to learn, it writes a checkpoint).

The run directory (default ``runs/<name>__<algo>__<seed>__<unix_time>``) gets ``config.yaml``
(the experiment), ``train.json`` (algo, episodes, seed, reward, load range, workers, --hp), and
from agents.training ``config.json`` (hyperparameters), ``scalars.csv`` (charts/…, losses/…),
``last.pt`` (checkpoint with its config and env signature) and ``replay.npz`` (for ``--resume``).
The checkpoint then runs anywhere a policy does:
``marllb sim run CFG --set policy.name=agent --set policy.checkpoint=DIR/last.pt``, or
``marllb eval CFG --policies sed,ecmp --checkpoint DIR/last.pt --out EVAL_DIR``.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import time
from pathlib import Path
from typing import Any

import yaml

from experiments.runs import config_to_yaml
from simulator.config import ExperimentConfig, UserError

__all__ = ["ALGOS", "agent_config", "train_from_config"]

ALGOS = ("qmix", "isac", "ssac", "fairness")


def agent_config(algo: str, overrides: list[str]) -> Any:
    """The algorithm's Config dataclass (CIKM'22 defaults) with ``field=value`` overrides."""
    if algo == "qmix":
        from agents.qmix import QmixConfig

        cfg: Any = QmixConfig()
    elif algo == "fairness":
        from agents.fairness_potential import FairnessPotentialConfig
        from simulator.envs import N_FEATURES, TIME_SCALE_S

        # the env's layout: 11 features per server, decayed mean flow duration at index 4,
        # durations given as log1p(d / TIME_SCALE_S)
        cfg = FairnessPotentialConfig(features_per_server=N_FEATURES, duration_index=4,
                                      obs_log1p_scale_s=TIME_SCALE_S)
    elif algo in ("isac", "ssac"):
        from agents.sac_gru import SacGruConfig

        cfg = SacGruConfig(mode="independent" if algo == "isac" else "single")
    else:
        raise UserError(f"--algo {algo!r}: choose one of {', '.join(ALGOS)}")
    fields = {f.name for f in dataclasses.fields(cfg)}
    changes: dict[str, Any] = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or key not in fields:
            raise UserError(f"--hp {item!r}: expected FIELD=VALUE with FIELD one of {', '.join(sorted(fields))}")
        changes[key] = yaml.safe_load(raw)
    from agents.common.server_net import AGENT_NETS

    if changes.get("agent_net", "flat") not in AGENT_NETS:
        raise UserError(f"--hp agent_net={changes['agent_net']!r}: choose one of {', '.join(AGENT_NETS)}")
    if "capacity_loss" in changes:
        w = changes["capacity_loss"]
        if not isinstance(w, (int, float)) or isinstance(w, bool) or w < 0:
            raw = next(i.partition("=")[2] for i in reversed(overrides) if i.startswith("capacity_loss="))
            raise UserError(f"--hp capacity_loss={raw}: expected a number >= 0")
        if w > 0 and changes.get("agent_net", "flat") != "servers":
            raise UserError(f"--hp capacity_loss={w}: the capacity head needs --hp agent_net=servers")
    if changes.get("server_memory") and changes.get("agent_net", "flat") != "servers":
        raise UserError("--hp server_memory=true: a per-server memory needs --hp agent_net=servers")
    if algo == "ssac" and changes.get("capacity_loss", 0):
        raise UserError("--hp capacity_loss: the capacity head is for I-SAC (--algo isac) and QMIX, not S-SAC")
    if "capacity_level_scale" in changes:
        v = changes["capacity_level_scale"]
        if not changes.get("capacity_action") or not isinstance(v, (int, float)) or isinstance(v, bool) or v < 0:
            raise UserError(f"--hp capacity_level_scale={v}: expected a number >= 0, with --hp capacity_action=true")
    if "capacity_updates" in changes:
        k = changes["capacity_updates"]
        if not isinstance(k, int) or isinstance(k, bool) or k < 0:
            raise UserError(f"--hp capacity_updates={k}: expected a whole number >= 0")
        if k > 0 and not changes.get("capacity_loss", 0) > 0:
            raise UserError(f"--hp capacity_updates={k}: extra steps of the capacity head need "
                            "--hp capacity_loss=W with W > 0 (and --hp agent_net=servers)")
    if changes.get("capacity_action") and not changes.get("capacity_loss", 0) > 0:
        raise UserError("--hp capacity_action=true: the actions follow the capacity head, which needs "
                        "--hp capacity_loss=W with W > 0 (and --hp agent_net=servers)")
    return dataclasses.replace(cfg, **changes)


def train_from_config(cfg: ExperimentConfig, *, algo: str, episodes: int, seed: int,
                      out: str | None, reward: str = "product",
                      load_range: tuple[float, float] | None = None, rates: list[float] | None = None,
                      hp: list[str] | None = None,
                      workers: int = 0, backend: str = "local", ray_address: str | None = None,
                      resume: bool = False, progress: bool = True,
                      prev_action: bool = False, continuous: bool = False, action_scale: str = "absolute",
                      features: str = "paper", time_budget_s: float | None = None, snapshot_every: int = 0,
                      torch_threads: int | None = None) -> Path:
    """Train and return the run directory. ``prev_action`` / ``continuous`` / ``action_scale`` /
    ``features``: the env options of the same names (the checkpoint's signature records them; ``policy: agent`` follows it);
    ``--hp capacity_action=true`` (QMIX, I-SAC) makes the env continuous: its actions are factors.
    ``workers`` / ``backend`` / ``ray_address``: where rollouts run (:func:`agents.training.train`)."""
    try:
        from agents.training import train
        from simulator.envs import parallel_env
    except ImportError as exc:
        raise UserError(f"training needs torch, gymnasium and pettingzoo ({exc}): pip install -e '.[dev]'") from None
    if torch_threads is not None:
        if torch_threads < 1:
            raise UserError(f"--torch-threads {torch_threads}: must be >= 1")
        import torch

        torch.set_num_threads(torch_threads)
    agent_cfg = agent_config(algo, hp or [])
    if algo == "fairness" and features != "paper":
        raise UserError(f"--features {features}: the fairness-potential rule reads the paper's feature layout")
    if getattr(agent_cfg, "capacity_action", False):
        if action_scale != "relative":
            raise UserError(f"--hp capacity_action=true: needs --action-scale relative (not {action_scale})")
        continuous = True  # the env action is a factor (estimate x level), not a level
    run_dir = Path(out or f"runs/{cfg.name}__{algo}__{seed}__{int(time.time())}")
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(config_to_yaml(cfg))
    (run_dir / "train.json").write_text(json.dumps(
        {"algo": algo, "episodes": episodes, "seed": seed, "reward": reward,
         "load_range": list(load_range) if load_range else None, "rates": rates, "workers": workers,
         "backend": backend,
         "prev_action": prev_action, "continuous": continuous, "action_scale": action_scale,
         "features": features, "time_budget_s": time_budget_s,
         "hp": list(hp or [])}, indent=2) + "\n")
    env_fn = functools.partial(parallel_env, cfg, reward=reward, load_range=load_range, rates=rates,
                               prev_action=prev_action, continuous=continuous, action_scale=action_scale,
                               features=features)
    env_fn()  # config errors surface here, before any worker starts
    if algo == "fairness":
        _run_fairness(env_fn, agent_cfg, episodes, seed=seed, run_dir=run_dir, progress=progress)
    else:
        train(env_fn, agent_cfg, episodes, seed=seed, run_dir=run_dir, workers=workers,
              backend=backend, ray_address=ray_address, resume=resume, progress=progress,
              time_budget_s=time_budget_s, snapshot_every=snapshot_every)
    return run_dir


def _run_fairness(env_fn: Any, agent_cfg: Any, episodes: int, *, seed: int, run_dir: Path,
                  progress: bool) -> None:
    """The fairness-potential agent has nothing to learn (a fixed local ascent rule): it runs
    ``episodes`` episodes with the training seeds, logs their returns to ``scalars.csv`` (as the
    learners do, for comparison) and writes ``last.pt`` with its config and env signature."""
    from rich.progress import Progress

    from agents.common.logs import CsvLogger
    from agents.common.seeding import episode_seed
    from agents.common.spaces import EnvSignature
    from agents.fairness_potential import FairnessPotentialPolicy
    from agents.training import collect_episode

    env = env_fn()
    policy = FairnessPotentialPolicy(EnvSignature.from_env(env), agent_cfg)
    (run_dir / "config.json").write_text(json.dumps(
        {"algo": "fairness_potential", "seed": seed, "n_episodes": episodes,
         **dataclasses.asdict(agent_cfg)}, indent=2) + "\n")
    logger = CsvLogger(run_dir)
    try:
        with Progress(disable=not progress, transient=True) as bar:
            task = bar.add_task("fairness episodes", total=episodes)
            for i in range(episodes):
                ep = collect_episode(env, policy, episode_seed(seed, i), deterministic=True)
                logger.log(i, {"charts/episode_return": ep.total_reward(), "charts/episode_length": ep.length})
                bar.update(task, completed=i + 1)
    finally:
        logger.close()
    policy.save(run_dir / "last.pt")
