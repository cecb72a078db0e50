"""Records what the LBs told their agents: every step, each LB's newest msg_out frame read
from its shm region (reader role, never torn) turned into the simulator's per-server features
with the simulator's own code, plus the weights in force -- the rows of ``steps.parquet``."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd

from simulator.features import FEATURE_NAMES, frame_features
from simulator.shm import ShmRegion

__all__ = ["StepRecorder", "STEP_COLUMNS", "wait_applied"]

STEP_COLUMNS = ("t_s", "lb", "server", "n_flow_on", "weight", *FEATURE_NAMES[1:],
                "frame_seq", "in_seq_applied", "fallback_active")


class StepRecorder:
    """Polls the regions every ``step_s`` on a thread; a frame already seen is not recorded
    twice. ``t0_wall`` maps frame wall times onto the run's time axis (t_s = wall - t0)."""

    def __init__(self, shm_paths: list[Path], n_servers: int, step_s: float, t0_wall: float) -> None:
        self.regions = [ShmRegion.open(p, role="reader") for p in shm_paths]
        self.n = n_servers
        self.step_s = step_s
        self.t0_wall = t0_wall
        self._last_seq = [0] * len(self.regions)
        self._rows: list[dict[str, np.ndarray]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="mlb-step-recorder", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def poll(self) -> None:
        for k, region in enumerate(self.regions):
            f = region.latest_out()
            if f is None or f.seq == self._last_seq[k]:
                continue
            self._last_seq[k] = f.seq
            feats = frame_features(f, self.n)
            row = {name: feats[:, j] for j, name in enumerate(FEATURE_NAMES)}
            n = self.n
            row.update(t_s=np.full(n, f.wall_s - self.t0_wall), lb=np.full(n, k),
                       server=np.arange(n), weight=f.servers["weight"][:n].astype(float),
                       frame_seq=np.full(n, f.seq), in_seq_applied=np.full(n, f.in_seq_applied),
                       fallback_active=np.full(n, bool(f.fallback_active)))
            self._rows.append(row)

    def _loop(self) -> None:
        while not self._stop.wait(self.step_s / 2):
            self.poll()

    def stop(self) -> pd.DataFrame:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        self.poll()
        for r in self.regions:
            r.close()
        if not self._rows:
            return pd.DataFrame({c: pd.Series(dtype=float) for c in STEP_COLUMNS})
        df = pd.DataFrame({c: np.concatenate([r[c] for r in self._rows]) for c in STEP_COLUMNS})
        df["lb"] = df["lb"].astype(np.int32)
        df["server"] = df["server"].astype(np.int32)
        df["n_flow_on"] = df["n_flow_on"].astype(np.int64)
        return df.sort_values(["t_s", "lb", "server"], kind="stable").reset_index(drop=True)


def wait_applied(shm_paths: list[Path], timeout_s: float) -> bool:
    """True once every region reports weights applied from its controller (in_seq_applied > 0)."""
    deadline = time.monotonic() + timeout_s
    regions = [ShmRegion.open(p, role="reader") for p in shm_paths]
    try:
        while time.monotonic() < deadline:
            if all(r.status().in_seq_applied > 0 for r in regions):
                return True
            time.sleep(0.05)
        return False
    finally:
        for r in regions:
            r.close()
