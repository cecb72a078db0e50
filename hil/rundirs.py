"""Reading finished run directories (simulated or real) for comparison and calibration:
config.yaml, summary.json, requests.parquet and, for a real run, hil.json. A missing directory,
file, column or field is a UserError naming it."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from simulator.config import ExperimentConfig, UserError

__all__ = ["SIM_COLUMNS", "REAL_COLUMNS", "RunTables", "load_tables", "read_hil_json", "num_col"]

#: request columns every run directory must have for the comparison
SIM_COLUMNS = ("id", "server", "t_arrive_s", "jct_s", "work_s", "status")
#: extra request columns of a real run directory that the calibration uses
REAL_COLUMNS = ("outcome", "n_iter", "cpu_s", "service_s", "t_server_arrive_s")


@dataclass
class RunTables:
    """What the comparison needs of one run directory."""

    path: Path
    config: ExperimentConfig
    summary: dict[str, Any]
    requests: pd.DataFrame

    @property
    def policy(self) -> str:
        return str(self.summary.get("policy", self.config.policy.name))

    @property
    def seed(self) -> int:
        return int(self.summary.get("seed", self.config.seed))


def _require_columns(df: pd.DataFrame, columns: Sequence[str], where: Path) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise UserError(f"{where}: missing column{'s' if len(missing) > 1 else ''} "
                        f"{', '.join(repr(c) for c in missing)}")


def load_tables(path: str | Path, columns: Sequence[str] = SIM_COLUMNS) -> RunTables:
    """config.yaml, summary.json and requests.parquet (or .csv) of a run directory, read by
    :func:`experiments.runs.load_run`; a missing directory, file or request column is a
    UserError naming it."""
    from experiments.runs import load_run

    run = load_run(path)
    req_path = run.path / "requests.parquet"
    if not req_path.is_file():
        req_path = req_path.with_suffix(".csv")
    _require_columns(run.requests, columns, req_path)
    return RunTables(run.path, run.config, run.summary, run.requests)


def read_hil_json(real_dir: Path) -> dict[str, Any]:
    path = real_dir / "hil.json"
    if not path.is_file():
        raise UserError(f"{path}: missing (not a real run directory written by marllb hil run)")
    try:
        hil = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}: not valid JSON ({exc})") from None
    for key in ("cpu_per_core", "iters_per_cpu_s", "servers"):
        if key not in hil:
            raise UserError(f"{path}: missing field '{key}'")
    for key in ("cpu_per_core", "iters_per_cpu_s"):
        v = hil[key]
        if not isinstance(v, (int, float)) or not (v > 0 and math.isfinite(v)):
            raise UserError(f"{path}: field '{key}' must be a positive number, got {v!r}")
    for i, s in enumerate(hil["servers"]):
        if not isinstance(s, dict) or "cores" not in s:
            raise UserError(f"{path}: servers[{i}] lacks 'cores'")
    return hil



def num_col(df: pd.DataFrame, col: str) -> np.ndarray:
    """A request column as float64 (anything not a number -> NaN)."""
    return pd.to_numeric(df[col], errors="coerce").to_numpy(float)
