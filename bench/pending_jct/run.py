#!/usr/bin/env python3
"""JCT at the paper's rates, to compare two revisions of the data-plane core.

    python bench/pending_jct/run.py --out results/new.jsonl          # in each checkout
    python bench/pending_jct/run.py --compare results/old.jsonl results/new.jsonl

Runs SED and LSQ on experiments/configs/moderate_sed.yaml at the CIKM'22 test rates 518.8,
690.9 and 796.3 flows/s and on large_sed.yaml at 398.5 and 419.3 flows/s, seeds 0-4, and writes
one JSON line per run (mean and p99 JCT). Same seed, same arrivals and job sizes in both
revisions, so --compare pairs the runs and prints the mean change per group. Issue 10 used it to
check that counting flows from their SYN does not cost JCT at the paper's rates.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
GROUPS = (("moderate_sed", (518.8, 690.9, 796.3)), ("large_sed", (398.5, 419.3)))


def run(out: Path) -> None:
    sys.path.insert(0, str(ROOT))
    from simulator.config import load_config
    from simulator.run import run_experiment

    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w") as f:
        for name, rates in GROUPS:
            for rate in rates:
                for policy in ("sed", "lsq"):
                    for seed in range(5):
                        cfg = load_config(ROOT / "experiments" / "configs" / f"{name}.yaml")
                        cfg = cfg.model_copy(update={
                            "seed": seed, "policy": cfg.policy.model_copy(update={"name": policy}),
                            "traffic": cfg.traffic.model_copy(update={"rate": rate, "load": None})})
                        s = run_experiment(cfg, progress=False).summary
                        row = {"cfg": name, "rate": rate, "policy": policy, "seed": seed,
                               "jct_mean_s": s["jct_mean_s"], "jct_p99_s": s["jct_p99_s"],
                               "completed": s["completed"]}
                        f.write(json.dumps(row) + "\n")
                        print(json.dumps(row), flush=True)


def compare(old: Path, new: Path) -> None:
    rows = [[json.loads(ln) for ln in p.read_text().splitlines()] for p in (old, new)]
    key = ("cfg", "rate", "policy", "seed")
    by_key = {tuple(r[k] for k in key): r for r in rows[0]}
    groups: dict[tuple, list[tuple[dict, dict]]] = {}
    for r in rows[1]:
        o = by_key[tuple(r[k] for k in key)]
        groups.setdefault((r["cfg"], r["rate"], r["policy"]), []).append((o, r))
    print(f"{'config':14s} {'rate':>6s} {'policy':6s} {'mean JCT old':>12s} {'new':>8s} {'change':>7s}"
          f" {'p99 old':>8s} {'new':>8s}")
    for (cfg, rate, pol), pairs in groups.items():
        mo = sum(o["jct_mean_s"] for o, _ in pairs) / len(pairs)
        mn = sum(n["jct_mean_s"] for _, n in pairs) / len(pairs)
        po = sum(o["jct_p99_s"] for o, _ in pairs) / len(pairs)
        pn = sum(n["jct_p99_s"] for _, n in pairs) / len(pairs)
        print(f"{cfg:14s} {rate:6.1f} {pol:6s} {mo:12.4f} {mn:8.4f} {100 * (mn / mo - 1):+6.2f}%"
              f" {po:8.4f} {pn:8.4f}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path)
    ap.add_argument("--compare", nargs=2, type=Path, metavar=("OLD", "NEW"))
    args = ap.parse_args(argv)
    if args.compare:
        compare(*args.compare)
    elif args.out:
        run(args.out)
    else:
        ap.error("give --out or --compare")
    return 0


if __name__ == "__main__":
    sys.exit(main())
