"""`marllb report SWEEP_DIR`: a Markdown results page of a finished sweep (``SWEEP_DIR/report.md``).

The page holds what the sweep was (file, base config, axes, seeds, points finished), the aggregated
table (mean and p90 JCT with 95 % CIs, p99, drops, fairness, paired difference against the baseline),
the figures of :mod:`experiments.sweep_plots` (redrawn each time), the work split between server
groups, and — for sweeps on the paper's topologies at its test rates — our numbers next to the ones
the CIKM'22 paper reports (:mod:`experiments.paper_results`), with the caveat that ours are
simulated and the job sizes assumed.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from experiments.paper_results import PAPER, SED_WORK_RATIO, paper_table_for
from experiments.sweep_plots import SweepData, plot_sweep, read_sweep, work_ratios

__all__ = ["write_report"]

_FIGURE_CAPTIONS = {
    "jct_cdf": "JCT CDF per policy (completed requests after warm-up, all seeds pooled)",
    "jct_percentiles": "p50/p90/p99 JCT per policy (mean over seeds, 95 % CI)",
    "work_share": "Work per server of the biggest server group relative to the smallest "
                  "(the paper's Fig. 9/10)",
    "fairness_over_time": "Jain's index of work per core over time (mean over seeds)",
    "training": "Training curves of the checkpoints",
}


#: why our numbers differ from the paper's, per topology preset
_CAVEAT = {
    "moderate": "the request sizes are our assumption (the paper does not publish the wiki's per-request "
                "costs; see the base config) and a server's capacity is exactly its CPU count",
    "large": "the jobs are the paper's exp(200 ms) but a server's capacity is exactly its CPU count, "
             "while the paper's CPUs were hyperthreads (less capacity than their number)",
}


def _ms(v: float) -> str:
    return "–" if v is None or not math.isfinite(v) else f"{1e3 * v:.1f}"


def _shown(path: str) -> str:
    """A path as the reader should see it: relative to the working directory when inside it."""
    p = Path(path)
    try:
        return str(p.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return path


def _paper_section(data: SweepData) -> list[str]:
    first = data.points["key"].iloc[0]
    preset = (data.config(first).get("topology") or {}).get("preset")
    table = paper_table_for(preset)
    rate_axis = "traffic.rate" if "traffic.rate" in data.axes else None
    if table is None or rate_axis is None:
        return []
    rates = [r for r in data.meta["axes"][rate_axis] if any(r in v for v in table.values())]
    if not rates:
        return []
    agg = data.aggregate
    lines = [f"## Next to the paper ({PAPER})", "",
             f"Mean JCT in ms. Paper: mean ± std over its 5 runs per rate on the real testbed "
             f"({'Table 3, Wikipedia page loads' if preset == 'moderate' else 'Table 7'}). Ours: mean ± 95 % CI "
             f"over {len(data.meta['seeds'])} simulated seeds. **Caveat**: our runs are simulated, {_CAVEAT[preset]}, "
             f"so compare the order of the policies and the shape, not the values.", ""]
    head = ["policy"] + [f"{r:g} fl/s ours" for r in rates] + [f"{r:g} fl/s paper" for r in rates]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    labels = list(dict.fromkeys(list(data.labels) + [k for k in table if k not in data.labels]))
    for label in labels:
        ours = []
        for r in rates:
            row = agg[(agg["label"] == label) & np.isclose(agg[rate_axis].astype(float), r)] \
                if label in data.labels else agg.iloc[0:0]
            ours.append("–" if row.empty else f"{_ms(row['jct_mean_s'].iloc[0])} ± {_ms(row['jct_mean_s_ci95'].iloc[0])}")
        paper = [f"{table[label][r][0]:.1f} ± {table[label][r][1]:.1f}" if label in table and r in table[label]
                 else "–" for r in rates]
        lines.append("| " + " | ".join([label, *ours, *paper]) + " |")
    return lines + [""]


def _work_split_section(data: SweepData) -> list[str]:
    lines = ["## Work split between server groups", "",
             "CPU work per server of the biggest server group over that of the smallest (mean over seeds; "
             "the capacity ratio is what SED's weights assume). "
             f"The paper measured {SED_WORK_RATIO['moderate']}x for SED at moderate scale and "
             f"{SED_WORK_RATIO['large'][0]}x / {SED_WORK_RATIO['large'][1]}x at large scale.", ""]
    head = ["policy", *(a for a in data.axes), "big / small work per server", "capacity ratio"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for values, pts in data.cells():
        for label in data.labels:
            ratios, groups = work_ratios(data, pts, label)
            if ratios.size and groups:
                cells = [label, *(f"{v:g}" for v in values), f"{ratios.mean():.2f}", f"{groups[0] / groups[1]:g}"]
                lines.append("| " + " | ".join(cells) + " |")
    return lines + [""]


def write_report(path: str | Path, command: str | None = None) -> Path:
    """Write ``path/report.md`` (and the figures into ``path/figures``); returns its path."""
    data = read_sweep(path)
    figures = data.path / "figures"
    plot_sweep(data, figures)  # redrawn: points may have been added since the last time
    meta = data.meta
    n_planned = len(meta["points"])
    n_done = len(data.points)
    axes = ", ".join(f"`{a}` ∈ {{{', '.join(f'{v:g}' if isinstance(v, float) else str(v) for v in vals)}}}"
                     for a, vals in meta["axes"].items()) or "none"
    seeds = meta["seeds"]
    lines = [f"# Results: {meta['name']}", ""]
    if command:
        lines += [f"Generated by `{command}`.", ""]
    lines += [f"- sweep file: `{_shown(meta['file'])}`; base config: `{_shown(meta['base'])}`",
              f"- policies: {', '.join(meta['policies'])}"
              + (f"; checkpoints: {', '.join(f'{k} (`{_shown(v)}`)' for k, v in meta['checkpoints'].items())}"
                 if meta["checkpoints"] else ""),
              f"- axes: {axes}; fixed overrides: {meta['set'] or 'none'}",
              f"- seeds: {seeds[0]}..{seeds[-1]} ({len(seeds)})" if seeds == list(range(seeds[0], seeds[-1] + 1))
              else f"- seeds: {', '.join(map(str, seeds))}",
              f"- points: {n_done} of {n_planned} finished"
              + ("" if n_done == n_planned else " (**incomplete**: rerun the sweep to finish it)"), ""]
    lines += ["## JCT", ""]
    table = (data.path / "table.md").read_text().split("\n", 2)[-1].strip()
    lines += [table, ""]
    lines += _paper_section(data)
    lines += _work_split_section(data)
    lines += ["## Figures", ""]
    for name, caption in _FIGURE_CAPTIONS.items():
        if (figures / f"{name}.png").is_file():
            lines += [f"![{caption}](figures/{name}.png)", "",
                      f"*{caption}* ([PDF](figures/{name}.pdf))", ""]
    out = data.path / "report.md"
    out.write_text("\n".join(lines))
    return out
