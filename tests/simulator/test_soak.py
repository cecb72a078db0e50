"""Soak: a long streamed run of `moderate` (690.9 flows/s) keeps its memory flat.

``MARLLB_SOAK_HOURS`` simulated hours (default 24, the acceptance run; e.g. 2 for a quick
check) stream their tables to Parquet (simulator.records.ParquetRecorder), which keeps nothing
that grows with the run: the JCT mean and percentiles are read back from requests.parquet at the
end (simulator.jct_stats). The resident set size is sampled at every progress tick (1 % of the
run); its least-squares slope over the run after its first hour (first half, if shorter:
allocator and row-group buffers warm up there) must stay below SLOPE_BOUND_MB_H. Conservation
must hold exactly at the end, and the summary's JCT statistics must be those of the file.

    MARLLB_SOAK_HOURS=2 python -m pytest -m slow -s tests/simulator/test_soak.py
"""

from __future__ import annotations

import os
from functools import partial
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from simulator.config import load_config
from simulator.records import ParquetRecorder
from simulator.run import build_simulation, collect

REPO = Path(__file__).resolve().parents[2]
SLOPE_BOUND_MB_H = 2.0


def rss_mb() -> float:
    """Current resident set size of this process (MB)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


@pytest.mark.slow
def test_memory_stays_flat_over_simulated_hours(tmp_path: Path) -> None:
    hours = float(os.environ.get("MARLLB_SOAK_HOURS", "24"))
    cfg = load_config(REPO / "experiments/configs/moderate_sed.yaml", [f"duration_s={hours * 3600}"])
    assert cfg.traffic.rate == pytest.approx(690.9)
    sim = build_simulation(cfg, recorder=partial(ParquetRecorder, out_dir=tmp_path))
    samples: list[tuple[float, float]] = []  # (sim s, RSS MB)

    def sample(t_s: float) -> None:
        samples.append((t_s, rss_mb()))

    sim.run(progress=sample)
    s = collect(sim, 0.0).summary

    t, rss = (np.array(x) for x in zip(*samples))
    settled = t >= min(3600.0, cfg.duration_s / 2)
    slope = np.polyfit(t[settled] / 3600, rss[settled], 1)[0]
    print(f"\n{hours:g} simulated h, {s['arrived']} requests: RSS {rss[0]:.0f} -> {rss[-1]:.0f} MB "
          f"(peak {rss.max():.0f}); slope after the first hour {slope:.2f} MB/h")
    assert slope < SLOPE_BOUND_MB_H
    assert s["arrived"] == sim.n_arrived == s["completed"] + s["dropped"] + s["in_flight"]
    assert pq.ParquetFile(tmp_path / "requests.parquet").metadata.num_rows == s["arrived"]
    jct = pq.read_table(tmp_path / "requests.parquet", columns=["status", "t_arrive_s", "jct_s"]).to_pandas()
    jct = jct.loc[(jct["status"] == "completed") & (jct["t_arrive_s"] >= cfg.warmup_s), "jct_s"].to_numpy()
    assert s["measured"] == len(jct)
    assert s["jct_p90_s"] == float(np.quantile(jct, 0.9))
    assert s["jct_mean_s"] == pytest.approx(jct.mean(), rel=1e-12)  # pairwise vs exact sum
