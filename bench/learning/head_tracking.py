#!/usr/bin/env python3
"""How well does a trained agent's capacity head track the servers' hidden capacities?

Agents trained with ``--hp capacity_loss=X --hp capacity_action=true`` set each server's weight
from their capacity head's estimate (capacity / nominal cores, read from the LB's own frames).
``sed_now``, SED with the true capacities of every moment, closes about 60 % of the LSQ->GSED
gap on ``hidden_dynamic``; how close an agent can come depends on how well its head follows
those capacities. This runs the checkpoint's greedy policy in the env on the given seeds at one
load and compares, per LB, server and step, the head's estimate read from the frame taken at the
end of step t with the true capacity at that moment (the env's privileged ``capacity`` info, read
here for scoring only):

* **R^2 of the best linear fit** of the true capacity (over the server's mean in the run, as
  ``capacity_probe.py`` scores its linear probes) on the estimate: the squared correlation,
  pooled over LBs, steps and seeds, per server; comparable to the probes' held-out R^2;
* **lag**: the delay (in steps) at which the estimate correlates best with the truth;
* **mean absolute error** of the clipped estimate against the truth (both over cores).

A plot shows one seed's estimate and truth over time for every server whose capacity changes.

    python bench/learning/head_tracking.py CKPT --config experiments/configs/hidden_dynamic.yaml \\
        --load 0.42 --seeds 1000-1009 --out bench/out/head_tracking
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench" / "learning"))

from capacity_probe import seeds_of  # noqa: E402
from simulator.config import UserError, load_config  # noqa: E402

MAX_LAG = 12  # steps (3 s at 0.25 s steps)


def track(ckpt: Path, cfg: Any, load: float, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One greedy episode: frame times (T,), head estimates (T, L, S) and true capacities (T, S),
    both over the nominal cores; row t's estimate read the frame taken when row t's capacity held."""
    from agents.common.checkpoint import load_checkpoint
    from agents.common.spaces import EnvSignature
    from agents.deploy import load_policy
    from simulator.envs import parallel_env

    sig = load_checkpoint(ckpt)["signature"]
    prev_action = sig.obs_dim == sig.n_servers * (sig.n_features + 1)
    env = parallel_env(cfg.model_copy(update={"seed": seed}), prev_action=prev_action,
                       continuous=sig.action_kind == "continuous", action_scale=sig.action_scale,
                       features=sig.features, load_range=(load, load))
    policy = load_policy(ckpt, EnvSignature.from_env(env))
    if not getattr(policy, "capacity_action", False):
        raise UserError(f"{ckpt}: not trained with capacity_action (no capacity head drives its weights)")
    obs, _ = env.reset(seed=seed)
    policy.reset()
    times, est, true = [], [], []
    while env.agents:
        actions = policy.act(obs)  # made from the frame after the previous step
        est.append(np.stack([policy.last_capacity[a] for a in env.possible_agents]))
        obs, _, _, _, infos = env.step(actions)
        info = next(iter(infos.values()))
        times.append(info["t_s"])
        true.append(info["capacity"])
    # the estimate of act k + 1 read the frame of step k: pair it with step k's capacity
    return np.array(times[:-1]), np.array(est[1:]), np.array(true[:-1])


def scores(runs: list[tuple[np.ndarray, np.ndarray, np.ndarray]], warmup_s: float) -> list[dict[str, Any]]:
    """Per server whose true capacity changes: R^2 of the best linear fit, best lag, MAE."""
    from agents.common.server_net import CAPACITY_CLIP  # what the agent's actions clip the estimate to

    kept = [(est[times >= warmup_s], true[times >= warmup_s]) for times, est, true in runs]  # (T, L, S), (T, S)
    out = []
    for s in range(kept[0][1].shape[1]):
        if not any(np.ptp(true[:, s]) > 1e-9 for _, true in kept):
            continue
        by_lag = []
        for lag in range(MAX_LAG + 1):
            xs, ys = [], []
            for est, true in kept:
                rel = true[:, s] / true[:, s].mean()
                for k in range(est.shape[1]):  # LB k's estimate at t + lag against the truth at t
                    xs.append(est[lag:, k, s])
                    ys.append(rel[:len(rel) - lag])
            by_lag.append(float(np.corrcoef(np.concatenate(xs), np.concatenate(ys))[0, 1] ** 2))
        mae = np.mean([np.abs(np.clip(est[:, :, s], *CAPACITY_CLIP) - true[:, s, None]).mean() for est, true in kept])
        out.append({"server": s, "r2_lag0": by_lag[0], "best_lag_steps": int(np.argmax(by_lag)),
                    "r2_best_lag": max(by_lag), "mae": float(mae)})
    return out


def plot(run: tuple[np.ndarray, np.ndarray, np.ndarray], servers: list[int], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    times, est, true = run
    fig, axes = plt.subplots(len(servers), 1, figsize=(9, 1.6 * len(servers)), sharex=True)
    for ax, s in zip(np.atleast_1d(axes), servers):
        ax.plot(times, true[:, s], color="black", lw=1.2, label="true capacity / cores")
        for k in range(est.shape[1]):
            ax.plot(times, est[:, k, s], lw=0.8, alpha=0.8, label=f"head estimate, LB {k + 1}")
        ax.set_ylabel(f"server {s}")
        ax.set_ylim(-0.05, 1.3)
    np.atleast_1d(axes)[0].legend(loc="upper right", fontsize=7, ncol=3)
    np.atleast_1d(axes)[-1].set_xlabel("simulated time (s)")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint", type=Path)
    ap.add_argument("--config", type=Path, default=ROOT / "experiments" / "configs" / "hidden_dynamic.yaml")
    ap.add_argument("--load", type=float, default=0.42, help="traffic.load of every episode")
    ap.add_argument("--seeds", default="1000-1009")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "head_tracking")
    args = ap.parse_args()
    try:
        cfg = load_config(args.config)
        seeds = seeds_of(args.seeds)
        runs = []
        for i, seed in enumerate(seeds):
            runs.append(track(args.checkpoint, cfg, args.load, seed))
            print(f"[head_tracking] seed {seed} done ({i + 1}/{len(seeds)})", flush=True)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    rows = scores(runs, cfg.warmup_s)
    args.out.mkdir(parents=True, exist_ok=True)
    lines = [f"capacity head of {args.checkpoint} on {args.config.name}, load {args.load}, seeds {args.seeds}",
             "server  R^2 (lag 0)  best lag (steps)  R^2 at best lag  MAE (capacity / cores)"]
    lines += [f"{r['server']:>6}  {r['r2_lag0']:11.3f}  {r['best_lag_steps']:16d}  {r['r2_best_lag']:15.3f}  {r['mae']:.3f}"
              for r in rows]
    print("\n".join(lines))
    (args.out / "head_tracking.txt").write_text("\n".join(lines) + "\n")
    plot(runs[0], [r["server"] for r in rows], args.out / "head_tracking.png",
         f"capacity head vs truth, seed {seeds[0]}, load {args.load}")
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    meta = {"checkpoint": str(args.checkpoint), "config": str(args.config), "load": args.load, "seeds": seeds,
            "servers": rows, "commit": commit, "date": dt.date.today().isoformat()}
    (args.out / "head_tracking.json").write_text(json.dumps(meta, indent=2) + "\n")
    print(f"wrote {args.out}/head_tracking.{{txt,json,png}}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
