#!/usr/bin/env python3
"""Where in a run does one policy's JCT differ from another's? Mean JCT by phase of the run.

The phases are cut at the scenario's events (capacity changes, failures, recoveries) between
warm-up and the end of the run. For every policy evaluated by ``bench/learning/run.py`` at a load
(its ``test/<policy>__load<L>__seed<S>/requests.parquet`` files), the completed requests of all
seeds are pooled by the phase they arrived in; the table gives each phase's mean JCT and, against
the reference policy, each phase's share of the difference in overall mean JCT (ms per request:
the phase's summed JCT difference over the reference's number of requests).

    python bench/learning/phases.py bench/out/RUN --load 0.48 --reference lsq \\
        [--config experiments/configs/hidden_dynamic.yaml]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from simulator.config import ExperimentConfig, UserError, load_config  # noqa: E402


def phase_edges(cfg: ExperimentConfig) -> list[float]:
    """Warm-up end, every event time inside the run, and the run's end."""
    times = sorted({ev.at_s for ev in cfg.events if cfg.warmup_s < ev.at_s < cfg.duration_s})
    return [cfg.warmup_s, *times, cfg.duration_s]


def phase_table(test_dir: Path, load: str, edges: list[float]) -> dict[str, pd.DataFrame]:
    """Per policy: the summed JCT (s) and count of completed requests by arrival phase."""
    out: dict[str, pd.DataFrame] = {}
    for run in sorted(test_dir.glob(f"*__load{load}__seed*")):
        policy = run.name.split("__")[0]
        d = pd.read_parquet(run / "requests.parquet", columns=["t_arrive_s", "jct_s", "status"])
        d = d[(d.status == "completed") & (d.t_arrive_s >= edges[0])]
        phase = np.searchsorted(edges, d.t_arrive_s.to_numpy(), side="right") - 1
        g = pd.DataFrame({"phase": np.minimum(phase, len(edges) - 2), "jct": d.jct_s.to_numpy()})
        g = g.groupby("phase").jct.agg(["sum", "count"]).reindex(range(len(edges) - 1), fill_value=0)
        out[policy] = g if policy not in out else out[policy] + g
    if not out:
        raise UserError(f"{test_dir}: no evaluation runs at load {load} (test/<policy>__load{load}__seed<S>/)")
    return out


def render(tables: dict[str, pd.DataFrame], edges: list[float], reference: str) -> str:
    if reference not in tables:
        raise UserError(f"--reference {reference!r}: not among the evaluated policies ({', '.join(tables)})")
    names = [f"{a:g}-{b:g} s" for a, b in zip(edges[:-1], edges[1:])]
    ref = tables[reference]
    n_ref = ref["count"].sum()
    lines = ["| policy | " + " | ".join(f"{n}: mean JCT ms" for n in names) + f" | vs {reference}: ms per request by phase (total) |",
             "|---|" + "---|" * (len(names) + 1)]
    for policy, g in tables.items():
        mean_ms = (g["sum"] / g["count"].replace(0, np.nan) * 1000).round(1)
        contrib = (g["sum"] - ref["sum"]) / n_ref * 1000
        diff = "" if policy == reference else \
            " / ".join(f"{c:+.2f}" for c in contrib) + f" ({contrib.sum():+.2f})"
        lines.append(f"| {policy} | " + " | ".join(f"{m:.1f}" for m in mean_ms) + f" | {diff} |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", type=Path, help="a bench/learning/run.py output directory")
    ap.add_argument("--load", required=True, help="the evaluation load, as in the run directories' names")
    ap.add_argument("--reference", default="lsq")
    ap.add_argument("--config", type=Path, default=None, help="default: the config named in the run's learning.json")
    args = ap.parse_args()
    try:
        config = args.config or ROOT / json.loads((args.run / "learning.json").read_text())["config"]
        edges = phase_edges(load_config(config))
        print(render(phase_table(args.run / "test", args.load, edges), edges, args.reference))
    except (UserError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
