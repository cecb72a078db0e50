"""Uniform run naming and CSV scalar logs (CleanRL style: namespaced tags such as ``charts/return``,
``losses/q``, ``lb/weight_s3``)."""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path
from typing import Any, Mapping

__all__ = ["run_name", "CsvLogger"]


def run_name(scenario: str, algo: str, seed: int, unix_time: int | None = None) -> str:
    """``{scenario}__{algo}__{seed}__{unix_time}``."""
    return f"{scenario}__{algo}__{seed}__{int(time.time()) if unix_time is None else unix_time}"


class CsvLogger:
    """Appends ``episode,tag,value`` rows to ``run_dir/scalars.csv`` and dumps hyperparameters.

    Appending (not truncating) lets a resumed run continue the same file.
    """

    def __init__(self, run_dir: str | Path) -> None:
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.path = self.run_dir / "scalars.csv"
        new = not self.path.exists()
        self._f = open(self.path, "a", newline="")
        self._w = csv.writer(self._f)
        if new:
            self._w.writerow(["episode", "tag", "value"])

    def hyperparameters(self, params: Mapping[str, Any]) -> None:
        """Write ``config.json`` and a markdown ``hyperparameters.md`` table."""
        (self.run_dir / "config.json").write_text(json.dumps(dict(params), indent=2, default=str))
        rows = "\n".join(f"|{k}|{v}|" for k, v in params.items())
        (self.run_dir / "hyperparameters.md").write_text("|param|value|\n|-|-|\n" + rows + "\n")

    def log(self, episode: int, scalars: Mapping[str, float]) -> None:
        for tag, value in scalars.items():
            self._w.writerow([episode, tag, f"{float(value):.9g}"])
        self._f.flush()

    def close(self) -> None:
        self._f.close()
