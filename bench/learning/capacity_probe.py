#!/usr/bin/env python3
"""How much of the servers' hidden, changing capacity can an LB read from its own frame?

An agent that drives SED's weights can close more of the oracle gap the better it knows each
server's current effective capacity (``sed_now`` knows it exactly). This probe measures what
the data plane's features reveal of it: it runs the scenario under a local policy (default LSQ),
and at every step records, per LB and server, the features the agents see (``FEATURE_NAMES``,
the same frames) next to the server's true capacity at that moment (0 while failed). Then, on
the servers whose capacity changes during the run, it fits on the training seeds and scores on
held-out seeds, one probe per such server:

* **ridge regression** of the capacity relative to the server's mean capacity in the run, from
  the log features of the step and of 2, 4, 8 and 16 steps before (the history a recurrent
  agent could keep): R^2 on the held-out seeds = the share of the capacity's variation over
  time that a linear reader of the frames explains;
* **logistic regression** of "capacity below the server's mean" from the same inputs:
  held-out accuracy against the majority rate (what always guessing the commoner state gets).

A linear probe bounds the information from below: a non-linear reader may do better. Fit on
standardised inputs, L2 penalty ``--ridge``; same seeds give the same numbers. ``--eval`` drives
SED's weights with the probes (``probe_sed``, see :class:`ProbeSedPolicy`) on the held-out seeds;
``--iterations`` refits on runs that ``probe_sed`` routed itself.

    python bench/learning/capacity_probe.py experiments/configs/hidden_dynamic.yaml --rate 420 \\
        --train-seeds 1-30 --test-seeds 31-40 --iterations 3 --eval \\
        --out bench/learning/results/hidden_dynamic/capacity_probe/lsq_rate420.json
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
import pandas as pd

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench" / "learning"))

from simulator.config import UserError, load_config  # noqa: E402
from simulator.features import FEATURE_NAMES  # noqa: E402
from simulator.policies import ORACLES, StaticPolicy  # noqa: E402
from simulator.run import build_simulation, run_experiment  # noqa: E402
from report import paired  # noqa: E402  (bench/learning/report.py)

LAGS = (0, 2, 4, 8, 16)  # steps of history in the probe's input
LOG_FLOOR = 1e-4  # features are logged; counts of 0 and durations below 0.1 ms are floored


class RecordingPolicy(StaticPolicy):
    """A local core policy that leaves its weights alone and records, every step, each LB's
    features and the servers' true capacities."""

    reads_features = True

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.sim: Any = None
        self.rows: list[tuple[float, int, np.ndarray, np.ndarray]] = []  # (t, lb, features SxF, capacity S)

    def start(self, sim: Any) -> None:
        self.sim = sim

    def on_step(self, now_s: float, lb: int, features: dict[str, np.ndarray]) -> None:
        feats = np.stack([np.asarray(features[f], dtype=float) for f in FEATURE_NAMES], axis=1)
        cap = np.array([0.0 if s.failed else s.capacity for s in self.sim.servers])
        self.rows.append((now_s, lb, feats, cap))
        return None


def record(cfg: Any, seed: int, ctl: RecordingPolicy) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One run under ctl: features (L, T, S, F), capacities (T, S), step times (T,) after warm-up."""
    cfg = cfg.model_copy(update={"seed": seed})
    sim = build_simulation(cfg, controller=ctl, recorder=None)
    sim.run()
    n_lbs = 1 + max(lb for _, lb, _, _ in ctl.rows)
    times = np.array([t for t, lb, _, _ in ctl.rows if lb == 0])
    feats = np.stack([np.stack([f for _, lb, f, _ in ctl.rows if lb == k]) for k in range(n_lbs)])
    caps = np.stack([c for _, lb, _, c in ctl.rows if lb == 0])
    keep = times >= cfg.warmup_s
    return feats[:, keep], caps[keep], times[keep]


def probe_inputs(feats_TSF: np.ndarray) -> np.ndarray:
    """(T, S, F) features of one LB -> (T, S, F * len(LAGS)) log features with their history
    (steps before the first are the first step's)."""
    x = np.log(np.maximum(np.nan_to_num(feats_TSF, nan=LOG_FLOOR), LOG_FLOOR))
    steps = np.arange(len(x))
    return np.concatenate([x[np.maximum(steps - lag, 0)] for lag in LAGS], axis=2)


def dataset(runs: list[tuple[np.ndarray, np.ndarray, np.ndarray]], servers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows (LB, step, server in ``servers``): probe inputs and capacity / the server's mean."""
    xs, ys = [], []
    for feats, caps, _ in runs:
        rel = caps[:, servers] / caps[:, servers].mean(axis=0)
        for k in range(feats.shape[0]):
            xs.append(probe_inputs(feats[k])[:, servers].reshape(-1, len(FEATURE_NAMES) * len(LAGS)))
            ys.append(rel.reshape(-1))
    return np.concatenate(xs), np.concatenate(ys)


def ridge(x: np.ndarray, y: np.ndarray, penalty: float) -> np.ndarray:
    a = np.c_[x, np.ones(len(x))]
    reg = penalty * np.eye(a.shape[1])
    reg[-1, -1] = 0.0  # the intercept is not penalised
    return np.linalg.solve(a.T @ a + reg, a.T @ y)


def logistic(x: np.ndarray, y: np.ndarray, penalty: float, iters: int = 50) -> np.ndarray:
    """L2-penalised logistic regression by Newton's method (intercept unpenalised)."""
    a = np.c_[x, np.ones(len(x))]
    w = np.zeros(a.shape[1])
    reg = penalty * np.eye(a.shape[1])
    reg[-1, -1] = 0.0
    for _ in range(iters):
        p = 1.0 / (1.0 + np.exp(-np.clip(a @ w, -30, 30)))
        grad = a.T @ (p - y) + reg @ w
        hess = (a * (p * (1 - p))[:, None]).T @ a + reg
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.abs(step).max() < 1e-10:
            break
    return w


def probe(train: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray], penalty: float) -> dict:
    (xtr, ytr), (xte, yte) = train, test
    mu, sd = xtr.mean(axis=0), xtr.std(axis=0)
    sd[sd == 0] = 1.0
    ztr, zte = (xtr - mu) / sd, (xte - mu) / sd
    w = ridge(ztr, ytr, penalty)
    pred = np.c_[zte, np.ones(len(zte))] @ w
    r2 = 1.0 - ((yte - pred) ** 2).sum() / ((yte - yte.mean()) ** 2).sum()
    btr, bte = (ytr < 1.0).astype(float), (yte < 1.0).astype(float)
    v = logistic(ztr, btr, penalty)
    acc = float(((np.c_[zte, np.ones(len(zte))] @ v > 0) == (bte > 0.5)).mean())
    model = {"mu": mu, "sd": sd, "w": w}
    return {"model": model, "rows_train": len(ytr), "rows_test": len(yte), "ridge_r2_test": float(r2),
            "below_mean_rate_test": float(bte.mean()), "majority_accuracy_test": float(max(bte.mean(), 1 - bte.mean())),
            "logistic_accuracy_test": acc}


class ProbeSedPolicy(RecordingPolicy):
    """SED whose weights follow the probes: every step, server i's weight is its mean capacity
    in the training runs (the static split an agent can learn) times the ridge probe's reading
    of its current relative capacity from this LB's frames (clipped to [0.05, 2]); servers
    without a probe keep their mean capacity. Frames only at run time, like an agent. It records
    as RecordingPolicy does: its own runs are the next iteration's training data."""

    def __init__(self, mean_capacity: np.ndarray, models: dict[int, dict]) -> None:
        super().__init__("sed")
        self.mean_capacity, self.models = mean_capacity, models
        self.history: dict[int, list[np.ndarray]] = {}  # per LB: (S, F) features of every step

    def static_weights(self, cores: list[float]) -> list[float]:
        return list(self.mean_capacity)

    def on_step(self, now_s: float, lb: int, features: dict[str, np.ndarray]) -> list[float]:
        super().on_step(now_s, lb, features)
        h = self.history.setdefault(lb, [])
        h.append(np.stack([np.asarray(features[f], dtype=float) for f in FEATURE_NAMES], axis=1))
        del h[:-1 - max(LAGS)]  # the history the probe reads
        x = probe_inputs(np.stack(h))[-1]
        w = self.mean_capacity.copy()
        for srv, m in self.models.items():
            z = (x[srv] - m["mu"]) / m["sd"]
            w[srv] *= float(np.clip(z @ m["w"][:-1] + m["w"][-1], 0.05, 2.0))
        return list(w)


REFERENCES = ("lsq", "sed", "sed_true", "sed_now", "gsed")  # what probe_sed is compared with


def evaluate(cfg: Any, seeds: list[int], labels: tuple[str, ...],
             probe_sed: tuple[np.ndarray, dict[int, dict]] | None = None) -> pd.DataFrame:
    """Mean and p90 JCT per seed of the policies ``labels``; "probe_sed" runs
    ProbeSedPolicy(*probe_sed)."""
    rows = []
    for seed in seeds:
        for label in labels:
            c = cfg.model_copy(update={"seed": seed, "policy": cfg.policy.model_copy(
                update={"name": "sed" if label == "probe_sed" else label})})
            ctl = ProbeSedPolicy(*probe_sed) if label == "probe_sed" else None
            summary = run_experiment(c, progress=False, controller=ctl).summary
            rows.append({"label": label, "load": cfg.traffic.rate, "seed": seed,
                         "jct_mean_s": summary["jct_mean_s"], "jct_p90_s": summary["jct_p90_s"]})
    return pd.DataFrame(rows)


def fit_probes(train: list, test: list, servers: np.ndarray, penalty: float) -> tuple[dict, dict]:
    """One probe per server (each has its own kind of change): (scores, models) by server."""
    scores = {int(srv): probe(dataset(train, np.array([srv])), dataset(test, np.array([srv])), penalty)
              for srv in servers}
    return scores, {srv: r.pop("model") for srv, r in scores.items()}


def print_scores(scores: dict) -> None:
    print("server  rows train/test  R^2 (held out)  below-mean accuracy  majority")
    for srv, r in scores.items():
        print(f"{srv:6d}  {r['rows_train']:>6d}/{r['rows_test']:<6d}  {r['ridge_r2_test']:14.3f}  "
              f"{r['logistic_accuracy_test']:19.3f}  {r['majority_accuracy_test']:8.3f}")


def numbers_of(spec: str, option: str, cast: type = float) -> list:
    """"1,2.5,3" -> [1.0, 2.5, 3.0] (``cast`` each); UserError naming ``option`` otherwise."""
    try:
        return [cast(x) for x in spec.split(",")]
    except ValueError:
        raise UserError(f"{option} {spec!r}: expected comma-separated numbers") from None


def seeds_of(spec: str) -> list[int]:
    try:
        if "-" in spec:
            a, b = spec.split("-")
            return list(range(int(a), int(b) + 1))
        return [int(s) for s in spec.split(",")]
    except ValueError:
        raise UserError(f"seeds {spec!r}: expected A-B or a comma-separated list of integers") from None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("config", type=Path)
    ap.add_argument("--policy", default="lsq", help="the local policy that routes while the probe records")
    ap.add_argument("--rate", type=float, help="traffic.rate override, flows/s")
    ap.add_argument("--train-seeds", default="1-13")
    ap.add_argument("--test-seeds", default="14-16")
    ap.add_argument("--ridge", type=float, default=1.0, help="L2 penalty on standardised inputs")
    ap.add_argument("--out", type=Path, help="write the result as JSON here")
    ap.add_argument("--iterations", type=int, default=1,
                    help="fits; each after the first adds training runs (seeds + 1000 x iteration) routed by "
                         "the previous fit's probe_sed, whose frames differ from LSQ's (default 1)")
    ap.add_argument("--eval", action="store_true",
                    help="also run SED driven by the probes (probe_sed) on the held-out seeds against lsq, "
                         "sed, sed_true, sed_now and gsed, paired vs the best local heuristic")
    a = ap.parse_args()
    try:
        if a.policy in ORACLES or a.policy in ("agent", "awcmp"):
            raise UserError(f"--policy {a.policy!r}: the probe records under a local core policy (lsq, sed, wcmp, ...)")
        cfg = load_config(a.config)
        if a.rate is not None:
            cfg = cfg.model_copy(update={"traffic": cfg.traffic.model_copy(update={"rate": a.rate})})
        train_seeds, test_seeds = seeds_of(a.train_seeds), seeds_of(a.test_seeds)
        if a.iterations < 1:
            raise UserError(f"--iterations {a.iterations}: at least 1")
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    runs = {}
    for i, seed in enumerate(train_seeds + test_seeds, 1):
        print(f"run {i}/{len(train_seeds) + len(test_seeds)}: seed {seed} under {a.policy}", file=sys.stderr, flush=True)
        runs[seed] = record(cfg, seed, RecordingPolicy(a.policy))
    caps = np.concatenate([runs[s][1] for s in runs])
    changing = np.flatnonzero(caps.std(axis=0) > 0)
    if len(changing) == 0:
        print("error: no server's capacity changes in this scenario; nothing to probe", file=sys.stderr)
        return 2
    train, test = [runs[s] for s in train_seeds], [runs[s] for s in test_seeds]
    mean_capacity = np.concatenate([r[1] for r in train]).mean(axis=0)
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    out: dict[str, Any] = {
        "config": str(a.config), "policy": a.policy, "rate": cfg.traffic.rate, "train_seeds": train_seeds,
        "test_seeds": test_seeds, "lags_steps": list(LAGS), "ridge": a.ridge, "features": list(FEATURE_NAMES),
        "iterations": a.iterations, "commit": commit, "date": dt.date.today().isoformat(),
        "mean_capacity_train": mean_capacity.tolist(), "fits": []}
    refs = evaluate(cfg, test_seeds, REFERENCES) if a.eval else None
    for it in range(a.iterations):
        if it:  # more training runs, routed by the last fit's probe_sed (its own frames)
            for i, seed in enumerate(train_seeds, 1):
                print(f"iteration {it}: run {i}/{len(train_seeds)} under probe_sed", file=sys.stderr, flush=True)
                train.append(record(cfg, seed + 1000 * it, ProbeSedPolicy(mean_capacity, models)))
        scores, models = fit_probes(train, test, changing, a.ridge)
        fit: dict[str, Any] = {"training_runs": len(train), "servers": scores}
        print(f"fit {it + 1}/{a.iterations} on {len(train)} training runs (the held-out runs are under {a.policy})")
        print_scores(scores)
        if refs is not None:
            runs_df = pd.concat([refs, evaluate(cfg, test_seeds, ("probe_sed",), (mean_capacity, models))])
            cmp = paired(runs_df, ["probe_sed", "sed_now"], ["lsq", "sed"], ["gsed"])
            fit["eval"] = {"runs": runs_df.to_dict("records"), "paired": cmp.to_dict("records")}
            for r in cmp.itertuples():
                print(f"{r.agent:9} vs {r.best_local}: mean JCT {100 * r.rel_mean_jct:+.1f} ± "
                      f"{100 * r.rel_mean_jct_ci95:.1f} %, p90 {100 * r.rel_p90_jct:+.1f} ± "
                      f"{100 * r.rel_p90_jct_ci95:.1f} %; closes {100 * r.gap_closed_mean:.0f} % of the gap to "
                      f"{r.best_oracle} (mean), {100 * r.gap_closed_p90:.0f} % (p90)")
        out["fits"].append(fit)
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps(out, indent=1) + "\n")
        print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
