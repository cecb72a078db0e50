#!/usr/bin/env python3
"""What the LBs count around a server's failure and return, and whether boosting it on return helps.

``--trace``: one run of a local policy; every ``--every`` simulated seconds in [--from, --to], the
per-server ``n_flow_on`` and ``n_flow_pending`` of the LBs' msg_out frames, summed over LBs (what
LSQ and SED rank servers by: ``n_flow_on + n_flow_pending``, vpp_plugin/core/lb_rl_core.h).

``--boosts``: SED knowing the ``--known`` servers' capacities every step (default 0,1:
hidden_dynamic's slowed and failed servers, bench/learning/oracle_parts.py's ``failure+drop`` part)
and, for ``D`` seconds after a failed server returns, its weight multiplied by ``B``: can a weight
setter drain the failure's backlog onto the returned server, as GSED does? Paired against LSQ over the seeds, with the share of the gap to GSED.

    python bench/learning/recovery.py experiments/configs/hidden_dynamic.yaml --trace --rate 480 --seed 1000
    python bench/learning/recovery.py experiments/configs/hidden_dynamic.yaml --boosts 3:3,3:6,10:3 \\
        --known 0,1 --rates 420,480 --seeds 1000-1009 --out bench/learning/results/hidden_dynamic/recovery
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import subprocess
import sys
from multiprocessing import Pool
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench" / "learning"))

from capacity_probe import numbers_of, seeds_of  # noqa: E402
from oracle_parts import cfg_servers, check_servers, jct_row, with_rate  # noqa: E402
from report import paired  # noqa: E402  (bench/learning/report.py)
from simulator.config import ExperimentConfig, UserError, load_config  # noqa: E402
from simulator.policies import CapacityWeightsPolicy  # noqa: E402
from simulator.run import build_simulation  # noqa: E402

LOCAL, ORACLE, KNOWN_LABEL = ["lsq"], ["gsed"], "known"


class ReturnBoost(CapacityWeightsPolicy):
    """SED weights = the ``known`` servers' true capacities every step (0 while failed), others
    static; a known server that returns from a failure has its weight multiplied by ``boost``
    for ``boost_s`` seconds from the first step it is up again."""

    def __init__(self, known: Sequence[int], boost: float, boost_s: float) -> None:
        super().__init__(known)
        self.boost, self.boost_s = boost, boost_s
        self._was_failed: set[int] = set()
        self._back_at: dict[int, float] = {}

    def on_step(self, now_s: float, lb: int, features: dict[str, np.ndarray]) -> Sequence[float] | None:
        w = list(super().on_step(now_s, lb, features))
        for i in self.known or []:
            if self.sim.servers[i].failed:
                self._was_failed.add(i)
                self._back_at.pop(i, None)
            elif i in self._was_failed:
                self._was_failed.discard(i)
                self._back_at[i] = now_s
            back = self._back_at.get(i)
            if back is not None and now_s - back < self.boost_s:
                w[i] *= self.boost
        return w


def trace(cfg: ExperimentConfig, t_from: float, t_to: float, every: float) -> pd.DataFrame:
    """Per-server n_flow_on and n_flow_pending summed over the LBs' frames, every ``every`` s."""
    sim = build_simulation(cfg)
    sim.start()
    rows, t = [], 0.0
    n = sim.n_servers
    while t + every <= min(t_to, cfg.duration_s):
        t += every
        sim.advance(t)
        if t < t_from:
            continue
        on, pending = np.zeros(n, dtype=np.int64), np.zeros(n, dtype=np.int64)
        for lb in sim.lbs:
            sv = lb.reader.latest_out().servers[:n]
            on += sv["n_flow_on"]
            pending += sv["n_flow_pending"]
        rows += [{"t_s": round(t, 6), "server": i, "n_flow_on": int(on[i]), "n_flow_pending": int(pending[i])}
                 for i in range(n)]
    return pd.DataFrame(rows)


def run_one(job: tuple[str, float, int, str, list[int], float, float]) -> dict[str, Any]:
    """Mean and p90 JCT of one seed: a reference policy by name, or SED with a return boost."""
    config, rate, seed, label, known, boost, boost_s = job
    return jct_row(config, rate, seed, label,
                   None if label in LOCAL + ORACLE else ReturnBoost(known, boost, boost_s))


def parse_boosts(spec: str) -> list[tuple[float, float]]:
    """"B:D,B:D" -> [(B, D), ...]; UserError naming the bad entry."""
    out = []
    for entry in filter(None, (e.strip() for e in spec.split(","))):
        try:
            b, d = (float(x) for x in entry.split(":"))
            if b <= 0 or d <= 0:
                raise ValueError
        except ValueError:
            raise UserError(f"--boosts entry {entry!r}: expected BOOST:SECONDS, both > 0") from None
        out.append((b, d))
    if not out:
        raise UserError(f"--boosts {spec!r}: no entry")
    return out


def boosts_table(cmp: pd.DataFrame) -> list[str]:
    """A markdown table of :func:`report.paired`'s rows: mean and p90 JCT vs the best local
    heuristic and the share of the gap to the best oracle."""
    lines = ["| SED knowing the --known servers' capacities, and | flows/s | mean JCT vs best local | "
             "p90 vs best local | gap closed (mean / p90) |", "|---|---|---|---|---|"]
    for r in cmp.itertuples():
        lines.append(f"| {r.agent} | {r.load:.0f} | {100 * r.rel_mean_jct:+.1f} ± {100 * r.rel_mean_jct_ci95:.1f} % "
                     f"vs {r.best_local} | {100 * r.rel_p90_jct:+.1f} ± {100 * r.rel_p90_jct_ci95:.1f} % | "
                     f"{100 * r.gap_closed_mean:.0f} / {100 * r.gap_closed_p90:.0f} % of the gap to {r.best_oracle} |")
    return lines


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("config", type=Path)
    ap.add_argument("--trace", action="store_true", help="print LSQ's counts around the events")
    ap.add_argument("--rate", type=float, default=480.0, help="traffic.rate of the trace, flows/s")
    ap.add_argument("--seed", type=int, default=1000, help="seed of the trace")
    ap.add_argument("--from", dest="t_from", type=float, default=27.0)
    ap.add_argument("--to", dest="t_to", type=float, default=52.0)
    ap.add_argument("--every", type=float, default=0.5)
    ap.add_argument("--boosts", help="BOOST:SECONDS,... weight factors and durations after a return")
    ap.add_argument("--known", default="0,1", help="servers whose weights follow their true capacity")
    ap.add_argument("--rates", default="420,480")
    ap.add_argument("--seeds", default="1000-1009")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", type=Path, help="directory for trace.csv / runs.csv, paired.csv, boosts.md, meta.json")
    a = ap.parse_args()
    try:
        cfg = load_config(a.config)
        if not a.trace and not a.boosts:
            raise UserError("give --trace, --boosts or both")
        boosts = parse_boosts(a.boosts) if a.boosts else []
        known, rates = numbers_of(a.known, "--known", int), numbers_of(a.rates, "--rates")
        check_servers(f"--known {a.known}", known, a.config, len(cfg_servers(cfg)))
        seeds = seeds_of(a.seeds)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if a.out:
        a.out.mkdir(parents=True, exist_ok=True)
    if a.trace:
        tr = trace(with_rate(cfg, a.rate, a.seed, "lsq"), a.t_from, a.t_to, a.every)
        for t, g in tr.groupby("t_s"):
            print(f"t={t:5.1f} s  n_flow_on {g['n_flow_on'].tolist()}  n_flow_pending {g['n_flow_pending'].tolist()}")
        if a.out:
            tr.to_csv(a.out / "trace.csv", index=False)
    if boosts:
        labels = [(x, 1.0, 1.0) for x in LOCAL + ORACLE] + [(KNOWN_LABEL, 1.0, 1.0)]  # known: no boost
        labels += [(f"boost {b:g}x for {d:g} s", b, d) for b, d in boosts]
        jobs = [(str(a.config), r, s, lab, known, b, d) for r in rates for s in seeds for lab, b, d in labels]
        print(f"{len(jobs)} runs on {a.workers} workers", file=sys.stderr, flush=True)
        with Pool(a.workers) as pool:
            runs = pd.DataFrame(list(pool.imap(run_one, jobs, chunksize=2)))
        agents = [lab for lab, _, _ in labels if lab not in LOCAL + ORACLE]
        cmp = paired(runs, agents, LOCAL, ORACLE)
        table = boosts_table(cmp)
        print("\n".join(table))
        if a.out:
            runs.to_csv(a.out / "runs.csv", index=False)
            cmp.to_csv(a.out / "paired.csv", index=False)
            (a.out / "boosts.md").write_text("\n".join(table) + "\n")
    if a.out:
        commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True).stdout.strip()
        meta = {"command": " ".join(sys.argv), "commit": commit, "date": dt.date.today().isoformat()}
        (a.out / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")
        print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
