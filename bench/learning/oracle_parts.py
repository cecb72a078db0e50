#!/usr/bin/env python3
"""Which hidden change is the oracle gap made of? SED knowing some servers' capacities as they change.

``sed_now`` (SED on each LB's own counts, its weights set every step to every server's true
capacity) closes about 60 % of the LSQ->GSED gap on ``hidden_dynamic``. This splits that gain by
hidden change: each ``--parts`` entry names a set of servers whose weights follow their true
capacity every step (0 while failed); every other server keeps ``sed_true``'s static weight (its
effective capacity without background or events). A per-LB agent that reads only the bursts
from its frames can at best reach the "bursts" row, and so on. Paired against the best local
heuristic over the same seeds (bench/learning/report.py), with the share of the gap to the best
oracle each closes. ``--lags`` also runs every part with its weights that many seconds late
(label ``name@Ls``): what an estimator that reads those changes exactly but late could reach.

    python bench/learning/oracle_parts.py experiments/configs/hidden_dynamic.yaml \\
        --rates 350,420,480 --seeds 1000-1009 \\
        --parts "failure=1;drop=0;bursts=4,5,6;failure+drop=0,1;bursts+failure=1,4,5,6;bursts+drop=0,4,5,6;all=0,1,4,5,6" \\
        --out bench/learning/results/hidden_dynamic/oracle_parts
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import subprocess
import sys
from multiprocessing import Pool
from pathlib import Path
from typing import Any

import pandas as pd

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench" / "learning"))

from capacity_probe import numbers_of, seeds_of  # noqa: E402
from simulator.config import ExperimentConfig, UserError, load_config  # noqa: E402
from simulator.policies import CapacityWeightsPolicy  # noqa: E402
from simulator.run import run_experiment  # noqa: E402
from report import paired  # noqa: E402  (bench/learning/report.py)

REFERENCES = ("lsq", "sed", "sed_true", "sed_now", "gsed")
LOCAL, ORACLE = ["lsq", "sed"], ["gsed"]


def parse_parts(spec: str) -> dict[str, list[int]]:
    """"name=i,j;name2=k" -> {name: [i, j], name2: [k]}; UserError naming the bad entry."""
    parts: dict[str, list[int]] = {}
    for entry in filter(None, (e.strip() for e in spec.split(";"))):
        name, eq, servers = entry.partition("=")
        try:
            if not eq or not name.strip():
                raise ValueError
            parts[name.strip()] = [int(x) for x in servers.split(",") if x.strip()]
        except ValueError:
            raise UserError(f"--parts entry {entry!r}: expected name=server,server,...") from None
        if name.strip() in REFERENCES:
            raise UserError(f"--parts entry {entry!r}: {name.strip()!r} is a reference policy's label")
    if not parts:
        raise UserError(f"--parts {spec!r}: no entry")
    return parts


def with_rate(cfg: ExperimentConfig, rate: float, seed: int, policy: str) -> ExperimentConfig:
    """``cfg`` with traffic.rate, seed and policy name replaced."""
    return cfg.model_copy(update={"seed": seed, "traffic": cfg.traffic.model_copy(update={"rate": rate}),
                                  "policy": cfg.policy.model_copy(update={"name": policy})})


def jct_row(config: str, rate: float, seed: int, label: str, controller: Any = None) -> dict[str, Any]:
    """Mean and p90 JCT of one seed: the policy named ``label``, or ``controller`` setting the
    weights every step from sed_true's static weights (the core's weights before the first step)."""
    cfg = with_rate(load_config(config), rate, seed, label if controller is None else "sed_true")
    s = run_experiment(cfg, progress=False, controller=controller).summary
    return {"label": label, "load": rate, "seed": seed, "jct_mean_s": s["jct_mean_s"], "jct_p90_s": s["jct_p90_s"]}


def run_one(job: tuple[str, float, int, str, list[int] | None, float]) -> dict[str, Any]:
    """Mean and p90 JCT of one seed: a reference policy by name, or a part (known servers,
    their weights ``lag_s`` late)."""
    config, rate, seed, label, known, lag_s = job
    return jct_row(config, rate, seed, label, None if known is None else CapacityWeightsPolicy(known, lag_s))


def lag_label(name: str, lag_s: float) -> str:
    """A part's label at a lag: its name, then ``@<lag>s`` unless the lag is 0."""
    return name if not lag_s else f"{name}@{lag_s:g}s"


def check_servers(option: str, servers: list[int], config: Any, n: int) -> None:
    """UserError naming ``option`` unless every index is one of the n servers of ``config``."""
    if any(not 0 <= i < n for i in servers):
        raise UserError(f"{option}: {config} has servers 0..{n - 1}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("config", type=Path)
    ap.add_argument("--rates", default="420", help="traffic.rate values, flows/s, comma-separated")
    ap.add_argument("--seeds", default="1000-1009")
    ap.add_argument("--parts", default="failure=1;drop=0;bursts=4,5,6;failure+drop=0,1;bursts+failure=1,4,5,6;"
                                       "bursts+drop=0,4,5,6;all=0,1,4,5,6",
                    help="name=servers;... : per part, the servers whose weights follow their true capacity")
    ap.add_argument("--lags", default="0", help="seconds, comma-separated: run every part with its weights this late")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", type=Path, help="directory for runs.csv, paired.csv, parts.md and meta.json")
    a = ap.parse_args()
    try:
        cfg = load_config(a.config)
        parts = parse_parts(a.parts)
        n = len(cfg_servers(cfg))
        for name, servers in parts.items():
            check_servers(f"--parts {name}={servers}", servers, a.config, n)
        rates = numbers_of(a.rates, "--rates")
        lags = numbers_of(a.lags, "--lags")
        if any(lag < 0 for lag in lags):
            raise UserError(f"--lags {a.lags}: a lag is >= 0 seconds")
        seeds = seeds_of(a.seeds)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    labels: list[tuple[str, list[int] | None, float]] = [(r, None, 0.0) for r in REFERENCES] + [
        (lag_label(name, lag), known, lag) for lag in lags for name, known in parts.items()]
    jobs = [(str(a.config), rate, seed, label, known, lag) for rate in rates for seed in seeds
            for label, known, lag in labels]
    print(f"{len(jobs)} runs on {a.workers} workers", file=sys.stderr, flush=True)
    with Pool(a.workers) as pool:
        rows = []
        for i, row in enumerate(pool.imap(run_one, jobs, chunksize=2), 1):
            rows.append(row)
            if i % 20 == 0 or i == len(jobs):
                print(f"  {i}/{len(jobs)} runs", file=sys.stderr, flush=True)
    runs = pd.DataFrame(rows)
    part_labels = [label for label, known, _ in labels if known is not None]
    cmp = paired(runs, part_labels + ["sed_now", "sed_true"], LOCAL, ORACLE)
    lines = ["| SED knowing, every step | servers | load (flows/s) | mean JCT vs best local | p90 vs best local | gap closed (mean / p90) |",
             "|---|---|---|---|---|---|"]
    known_of = {**{label: ",".join(map(str, known)) for label, known, _ in labels if known is not None},
                "sed_now": "all", "sed_true": "none"}
    for r in cmp.itertuples():
        line = (f"| {r.agent} | {known_of[r.agent]} | {r.load:.0f} | {100 * r.rel_mean_jct:+.1f} ± {100 * r.rel_mean_jct_ci95:.1f} % "
                f"vs {r.best_local} | {100 * r.rel_p90_jct:+.1f} ± {100 * r.rel_p90_jct_ci95:.1f} % | "
                f"{100 * r.gap_closed_mean:.0f} / {100 * r.gap_closed_p90:.0f} % of the gap to {r.best_oracle} |")
        lines.append(line)
        print(line)
    if a.out:
        a.out.mkdir(parents=True, exist_ok=True)
        runs.to_csv(a.out / "runs.csv", index=False)
        cmp.to_csv(a.out / "paired.csv", index=False)
        (a.out / "parts.md").write_text("\n".join(lines) + "\n")
        commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True).stdout.strip()
        meta = {"command": " ".join(sys.argv), "commit": commit, "date": dt.date.today().isoformat(),
                "config": str(a.config), "rates": rates, "seeds": seeds, "parts": parts, "lags_s": lags,
                "references": list(REFERENCES)}
        (a.out / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")
        print(f"wrote {a.out}")
    return 0


def cfg_servers(cfg: Any) -> list[str]:
    """The topology's server nodes (what the server indices of --parts count)."""
    from simulator.run import build_graph, server_nodes

    return server_nodes(build_graph(cfg))


if __name__ == "__main__":
    sys.exit(main())
