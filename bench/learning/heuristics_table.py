#!/usr/bin/env python3
"""Render a `marllb eval` comparison of heuristics and oracles as a markdown table: mean and
p90 JCT (95 % CI over seeds) per load, the best local heuristic, the best oracle and the gap
between them (the yardstick an agent is measured against).

    python bench/learning/heuristics_table.py EVAL_DIR --title TITLE --command "marllb eval ..." > heuristics.md
"""

from __future__ import annotations

import argparse
import datetime as dt
import subprocess
import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from simulator.policies import ORACLES  # noqa: E402


def table(cmp: pd.DataFrame, drops: pd.Series) -> list[str]:
    """Rows per load (best first); ``drops`` = mean dropped requests per run, by (label, load):
    JCT counts completed requests only, so a policy that drops many looks faster than it is."""
    out = ["| load | policy | mean JCT ms (±95 %) | p90 JCT ms (±95 %) | dropped / run | vs best local |",
           "|---|---|---|---|---|---|"]
    gaps = []
    for load, grp in cmp.groupby("load"):
        grp = grp.sort_values("jct_mean_s")
        for r in grp.itertuples():
            kind = " (oracle)" if r.label in ORACLES else ""
            out.append(f"| {load:g} | {r.label}{kind} | {1e3 * r.jct_mean_s:.1f} ± {1e3 * r.jct_mean_ci95_s:.1f} | "
                       f"{1e3 * r.jct_p90_s:.1f} ± {1e3 * r.jct_p90_ci95_s:.1f} | {drops[(r.label, load)]:.0f} | "
                       f"{100 * r.vs_best_heuristic:+.1f} % |")
        local = grp[~grp.label.isin(ORACLES)].iloc[0]
        oracle = grp[grp.label.isin(ORACLES)].iloc[0]
        gaps.append(f"- load {load:g}: best local {local.label} {1e3 * local.jct_mean_s:.1f} ms (p90 "
                    f"{1e3 * local.jct_p90_s:.1f}), best oracle {oracle.label} {1e3 * oracle.jct_mean_s:.1f} ms "
                    f"(p90 {1e3 * oracle.jct_p90_s:.1f}): oracle gap {100 * (1 - oracle.jct_mean_s / local.jct_mean_s):.1f} % "
                    f"of mean, {100 * (1 - oracle.jct_p90_s / local.jct_p90_s):.1f} % of p90")
    return out + ["", "Oracle gap (what an agent could close):", "", *gaps]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("eval_dir", type=Path)
    ap.add_argument("--title", required=True)
    ap.add_argument("--command", required=True, help="the marllb eval command that made eval_dir")
    ap.add_argument("--note", default="", help="a paragraph under the title")
    a = ap.parse_args()
    cmp = pd.read_csv(a.eval_dir / "comparison.csv")
    drops = pd.read_csv(a.eval_dir / "runs.csv").groupby(["label", "load"])["dropped"].mean()
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    lines = [f"# {a.title}", "", a.note, "",
             f"Provenance: `{a.command}` ({dt.date.today().isoformat()}, a 2-vCPU VM); table rendered at commit {commit}.", "",
             *table(cmp, drops), ""]
    sys.stdout.write("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
