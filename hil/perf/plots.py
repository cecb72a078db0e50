"""Plots of the throughput and latency benchmarks (PNG next to the JSON): loss versus offered
rate with NDR and PDR marked, latency percentiles versus load; static and RL-controlled
weights side by side."""

from __future__ import annotations

from pathlib import Path

__all__ = ["plot_throughput", "plot_latency"]

_STYLE = {"static": ("tab:blue", "o"), "rl": ("tab:orange", "s")}


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_throughput(result: dict, stem: Path) -> list[Path]:
    """One panel per profile: every final trial's loss ratio (%) against its offered rate
    (kpps), NDR and PDR as vertical lines."""
    plt = _plt()
    profiles = sorted({c["profile"] for c in result["cases"]})
    fig, axes = plt.subplots(1, len(profiles), figsize=(5.5 * len(profiles), 4), squeeze=False)
    final_s = result["search"]["trial"]
    for ax, prof in zip(axes[0], profiles):
        for c in (c for c in result["cases"] if c["profile"] == prof):
            color, marker = _STYLE[c["control"]]
            pts = sorted((t["offered_pps"] / 1e3, 100 * t["loss_ratio"]) for t in c["trials"]
                         if t["duration_s"] == final_s)
            short = sorted((t["offered_pps"] / 1e3, 100 * t["loss_ratio"]) for t in c["trials"]
                           if t["duration_s"] != final_s)
            if pts:
                ax.plot(*zip(*pts), marker=marker, color=color, ls="-", label=f"{c['control']}: {final_s:g} s trials")
            if short:
                ax.plot(*zip(*short), marker=marker, color=color, ls="none", alpha=0.3, mfc="none",
                        label=f"{c['control']}: short trials")
            for name, ls in (("NDR", "--"), ("PDR", ":")):
                d = c["targets"].get(name, {})
                if "mpps" in d:
                    ax.axvline(d["mpps"] * 1e3, color=color, ls=ls,
                               label=f"{c['control']} {name} {d['mpps'] * 1e3:.1f} kpps")
        ax.set_yscale("symlog", linthresh=0.01)
        ax.set_xlabel("offered load (kpps)")
        ax.set_ylabel("loss (%)")
        ax.set_title(f"{prof}: loss vs offered load")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    out = stem.with_name(stem.name + "_loss.png")
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return [out]


def plot_latency(result: dict, stem: Path) -> list[Path]:
    """One panel per profile: p50/p90/p99/p99.9/max (us, log scale) against offered load."""
    plt = _plt()
    profiles = sorted({c["profile"] for c in result["cases"]})
    fig, axes = plt.subplots(1, len(profiles), figsize=(5.5 * len(profiles), 4), squeeze=False)
    for ax, prof in zip(axes[0], profiles):
        for c in (c for c in result["cases"] if c["profile"] == prof):
            color, _ = _STYLE[c["control"]]
            x = [p["offered_pps"] / 1e3 for p in c["points"]]
            for key, ls, marker in (("p50", "-", "o"), ("p90", "-.", "^"), ("p99", "--", "s"),
                                    ("p99.9", ":", "D"), ("max", (0, (1, 3)), "x")):
                y = [p["latency"].get("percentiles_us", {}).get(key) for p in c["points"]]
                if any(v is not None for v in y):
                    ax.plot(x, [v if v is not None else float("nan") for v in y], ls=ls, marker=marker,
                            color=color, label=f"{c['control']} {key}")
            ax.axvline(c["pdr_pps"] / 1e3, color=color, lw=0.8, alpha=0.5)
        ax.set_yscale("log")
        ax.set_xlabel("offered load (kpps); vertical line: PDR")
        ax.set_ylabel("one-way latency (us)")
        ax.set_title(f"{prof}: latency vs load")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    out = stem.with_name(stem.name + "_latency.png")
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return [out]
