"""Tables, paired comparisons, plots and JSON of the learning benchmark (bench/learning/run.py).

Paired comparison: every policy runs the same test seeds (same arrivals and job sizes), so the
agent is compared with the best local-information heuristic seed by seed: d_s = JCT_agent,s /
JCT_best,s - 1, with a 95 % Student-t interval over seeds.

Oracle gap (issue 15): with the best oracle O and the best local heuristic L of a load, the agent
A closes (L - A) / (L - O) of the gap (means over seeds, for mean and p90 JCT); "half the gap"
is judged seed by seed on h_s = (A_s - L_s - (O_s - L_s) / 2) / L_s, whose 95 % interval lying
below 0 means the agent closes at least half of it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from experiments.evaluate import ci95, compare

TARGET_HIGH_LOAD = -0.20  #: QMIX vs best local heuristic at loads >= 0.85
TARGET_ANY_LOAD = 0.05  #: never worse than this at any load


def _best(grp: pd.DataFrame, labels: list[str]) -> str | None:
    """The label among ``labels`` with the lowest mean JCT over seeds (None if none ran)."""
    base = grp[grp["label"].isin(labels)]
    return None if base.empty else str(base.groupby("label")["jct_mean_s"].mean().idxmin())


def paired(runs: pd.DataFrame, agents: list[str], local: list[str],
           oracles: list[str] | None = None) -> pd.DataFrame:
    """Per agent and load: the best local heuristic (lowest mean JCT over seeds) and the paired
    relative difference of mean and p90 JCT against it (mean over seeds, 95 % CI); with
    ``oracles``, the share of the oracle gap the agent closes (module docstring)."""
    rows = []
    cols = ["jct_mean_s", "jct_p90_s"]
    for load, grp in runs.groupby("load"):
        best = _best(grp, local)
        ref = grp[grp["label"] == best].set_index("seed")[cols]
        oracle = _best(grp, oracles or [])
        orc = None if oracle is None else grp[grp["label"] == oracle].set_index("seed")[cols].reindex(ref.index)
        for agent in agents:
            mine = grp[grp["label"] == agent].set_index("seed")[cols].reindex(ref.index)
            rel = mine / ref - 1.0
            d, d90 = rel["jct_mean_s"].to_numpy(float), rel["jct_p90_s"].to_numpy(float)
            row = {"agent": agent, "load": load, "best_local": best, "n": int(np.isfinite(d).sum()),
                   "rel_mean_jct": float(np.nanmean(d)), "rel_mean_jct_ci95": ci95(d),
                   "rel_p90_jct": float(np.nanmean(d90)), "rel_p90_jct_ci95": ci95(d90)}
            if orc is not None:
                row["best_oracle"] = oracle
                for col, tag in (("jct_mean_s", "mean"), ("jct_p90_s", "p90")):
                    gap = ref[col].mean() - orc[col].mean()
                    row[f"gap_closed_{tag}"] = float((ref[col].mean() - mine[col].mean()) / gap) if gap > 0 else np.nan
                    h = ((mine[col] - ref[col] - (orc[col] - ref[col]) / 2) / ref[col]).to_numpy(float)
                    row[f"half_gap_{tag}"], row[f"half_gap_{tag}_ci95"] = float(np.nanmean(h)), ci95(h)
            rows.append(row)
    return pd.DataFrame(rows)


def targets(pair: pd.DataFrame) -> dict[str, Any]:
    """The issue's targets, judged on the paired mean difference per load; the high-load target
    is None (not judged) when no evaluation load is >= 0.85."""
    out = {}
    for agent, grp in pair.groupby("agent"):
        high = grp[grp["load"] >= 0.85 - 1e-9]
        out[agent] = {"high_load_20pct_lower": (bool((high["rel_mean_jct"] <= TARGET_HIGH_LOAD).all())
                                                if len(high) else None),
                      "never_5pct_worse": bool((grp["rel_mean_jct"] <= TARGET_ANY_LOAD).all())}
    return out


def _fmt(mean: float, ci: float) -> str:
    return f"{1e3 * mean:.1f}" + ("" if not np.isfinite(ci) else f" ± {1e3 * ci:.1f}")


def markdown_table(table: pd.DataFrame, order: list[str]) -> str:
    loads = sorted(table["load"].unique())
    head = "| policy | " + " | ".join(f"load {x:g}: mean JCT ms | p90 ms" for x in loads) + " |"
    lines = [head, "|" + "---|" * (1 + 2 * len(loads))]
    for label in order:
        cells = []
        for load in loads:
            row = table[(table["label"] == label) & (table["load"] == load)]
            if row.empty:
                cells += ["", ""]
                continue
            r = row.iloc[0]
            cells += [_fmt(r.jct_mean_s, r.jct_mean_ci95_s), _fmt(r.jct_p90_s, r.jct_p90_ci95_s)]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def training_log(run_dir: Path) -> pd.DataFrame:
    """Per episode: return, mean JCT, load and wall time (s) from scalars.csv."""
    df = pd.read_csv(run_dir / "scalars.csv")
    wide = df.pivot_table(index="episode", columns="tag", values="value", aggfunc="last")
    if "charts/wall_s" in wide:
        wide["charts/wall_s"] = wide["charts/wall_s"].bfill()
    return wide


def learning_curve(training: dict[str, pd.DataFrame], curve: pd.DataFrame, floor_s: float) -> Figure:
    fig = Figure(figsize=(11, 4.2))
    ax1, ax2 = fig.subplots(1, 2)
    for i, (algo, wide) in enumerate(training.items()):
        if "charts/episode_return" not in wide:
            continue
        ret = wide["charts/episode_return"].rolling(20, min_periods=1).mean()
        ax1.plot(wide["charts/wall_s"] / 60.0, ret, color=f"C{i}", label=algo)
    ax1.set_xlabel("training wall time (min)")
    ax1.set_ylabel("episode return (rolling mean of 20)")
    ax1.set_title("training (exploring, random loads)")
    ax1.legend()
    agents = curve[curve["label"].str.contains("@")]
    for i, algo in enumerate(training):
        mine = agents[agents["label"].str.startswith(f"{algo}@")]
        if mine.empty:
            continue
        ep = mine["label"].str.extract(r"@ep(\d+)")[0].astype(int)
        means = mine.assign(ep=ep).groupby("ep")["jct_mean_s"].mean()
        ax2.plot(means.index, 1e3 * means.to_numpy(), "o-", color=f"C{i}", label=f"{algo} (greedy)")
    for label, color in (("sed", "C3"), ("lsq", "C2"), ("sed_true", "C4"), ("gsed", "C8")):
        ref = curve[curve["label"] == label]["jct_mean_s"]
        if len(ref):
            ax2.axhline(1e3 * ref.mean(), color=color, ls="--", label=label)
    ax2.axhline(1e3 * floor_s, color="grey", ls=":", label="no-queueing floor")
    load = curve["load"].iloc[0]
    ax2.set_xlabel("training episodes")
    ax2.set_ylabel("mean JCT (ms), validation seeds")
    ax2.set_title(f"greedy policy at load {load:g}")
    ax2.legend(fontsize=8)
    fig.tight_layout()
    return fig


def jct_bars(table: pd.DataFrame, order: list[str], local: list[str], floor_s: float,
             n_agents: int) -> Figure:
    """Grouped bars per load on a linear axis cut at 2.5x the best local heuristic (taller bars are
    clipped and labelled with their value), so that differences of a few percent stay visible; the
    last `n_agents` labels of `order` are the trained agents (grey shades)."""
    loads = sorted(table["load"].unique())
    fig = Figure(figsize=(12, 4.6))
    ax = fig.subplots()
    width = 0.8 / len(order)
    best = table[table["label"].isin(local)].groupby("load")["jct_mean_s"].min()
    top = 2.5e3 * float(best.max())
    for i, label in enumerate(order):
        rows = table[table["label"] == label].set_index("load").reindex(loads)
        x = np.arange(len(loads)) + (i - (len(order) - 1) / 2) * width
        y = 1e3 * rows["jct_mean_s"].to_numpy(float)
        err = 1e3 * rows["jct_mean_ci95_s"].fillna(0).to_numpy(float)
        agent = i >= len(order) - n_agents
        ax.bar(x, np.minimum(y, top), width, yerr=np.where(y < top, err, 0), label=label,
               color=("black", "dimgray", "darkgray")[(i - len(order) + n_agents) % 3] if agent else f"C{i % 10}",
               hatch="//" if agent else None, edgecolor="white" if agent else None, capsize=2)
        for xi, yi in zip(x, y):
            if yi >= top:
                ax.text(xi, top * 0.98, f"{yi:.0f}", rotation=90, ha="center", va="top", fontsize=7)
    ax.axhline(1e3 * floor_s, color="grey", ls=":", label="no-queueing floor")
    ax.set_ylim(0, top)
    ax.set_xticks(np.arange(len(loads)), [f"load {x:g}" for x in loads])
    ax.set_ylabel("mean JCT (ms), 95 % CI over seeds")
    ax.legend(ncol=1, fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    return fig


def write_report(out: Path, meta: dict, test_runs: pd.DataFrame, curve_runs: pd.DataFrame,
                 floor_runs: pd.DataFrame) -> str:
    """Write every output file; return a printable summary."""
    agents = [*meta["algos"], *meta.get("selected", {}), *meta.get("readers", {})]
    local = list(meta["local_heuristics"])
    table = compare(test_runs)
    pair = paired(test_runs, agents, local, list(meta["oracles"]))
    floor_s = float(floor_runs["jct_mean_s"].mean())
    training = {a: training_log(Path(meta["training"][a]["run_dir"])) for a in meta["algos"]}
    for a, wide in training.items():
        meta["training"][a]["episodes"] = int(wide.index.max()) + 1
        meta["training"][a]["train_wall_s"] = float(wide["charts/wall_s"].max())
    ran = set(table["label"])
    order = [x for x in (*local, "awcmp", *meta["oracles"], *agents) if x in ran]
    table.to_csv(out / "comparison.csv", index=False)
    pair.to_csv(out / "paired.csv", index=False)
    best_local = {row.load: row for row in table[table["label"].isin(local)]
                  .sort_values("jct_mean_s").groupby("load").head(1).itertuples()}
    headroom = {f"{load:g}": 1.0 - floor_s / row.jct_mean_s for load, row in best_local.items()}
    md = [f"# Learning benchmark ({', '.join(agents)} on {Path(meta['config']).name})", "",
          markdown_table(table, order), "",
          f"No-queueing floor (sed at load 0.02): {1e3 * floor_s:.1f} ms. Largest possible cut vs the "
          "best local heuristic: " + ", ".join(f"{k}: {100 * v:.0f} %" for k, v in headroom.items()), "",
          "Paired vs best local heuristic (per seed, 95 % CI):", ""]
    for r in pair.itertuples():
        md.append(f"- {r.agent} @ {r.load:g} vs {r.best_local}: mean JCT {100 * r.rel_mean_jct:+.1f} "
                  f"± {100 * r.rel_mean_jct_ci95:.1f} %, p90 {100 * r.rel_p90_jct:+.1f} "
                  f"± {100 * r.rel_p90_jct_ci95:.1f} % (n={r.n})"
                  + ("" if "best_oracle" not in pair else
                     f"; closes {100 * r.gap_closed_mean:.0f} % (mean) / {100 * r.gap_closed_p90:.0f} % (p90) "
                     f"of the gap to {r.best_oracle}; half-gap margin {100 * r.half_gap_mean:+.1f} "
                     f"± {100 * r.half_gap_mean_ci95:.1f} % (< 0: at least half closed)"))
    for a, info in meta["training"].items():
        md.append(f"- {a}: {info['episodes']} episodes in {info['train_wall_s'] / 60:.1f} min")
    for label, ckpt in meta.get("selected", {}).items():
        md.append(f"- {label}: snapshot {Path(ckpt).stem}, the lowest mean JCT on the validation seeds")
    for label in meta.get("readers", {}):
        md.append(f"- {label}: the last checkpoint's capacity head alone (every level's factor 1: SED "
                  "weighted by the head's reading of the LB's frames)")
    (out / "table.md").write_text("\n".join(md) + "\n")
    learning_curve(training, curve_runs, floor_s).savefig(out / "learning_curve.png", dpi=120)
    jct_bars(table, order, local, floor_s, len(agents)).savefig(out / "jct_bars.png", dpi=120)
    result = {**meta, "floor_jct_mean_s": floor_s, "headroom_vs_best_local": headroom,
              "targets": targets(pair), "paired": pair.to_dict("records"),
              "comparison": table.to_dict("records")}
    (out / "learning.json").write_text(json.dumps(result, indent=2, default=float) + "\n")
    return "\n".join(md)
