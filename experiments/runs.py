"""One simulated run end to end: resolve the config, run it, write the run-contract files.

Run directory (DESIGN.md "Run contract")::

    DIR/config.yaml        the fully resolved config (``load_config`` on it gives the same config)
    DIR/summary.json       pretty JSON with at least simulator.results.SUMMARY_KEYS
    DIR/requests.parquet   one row per request (in the order they finished; read it with
                           :func:`read_table`, which sorts by ``id``, the arrival index)
    DIR/steps.parquet      one row per LB step and server
    DIR/*.png              plots, when asked (experiments.plots)

The simulator is reached through :func:`default_runner` so that nothing here imports it at module
import time (and tests can swap it).
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import pandas as pd
import yaml

from simulator.config import ExperimentConfig, UserError, load_config
from simulator.results import PER_SERVER_KEYS, SUMMARY_KEYS, SimResult

__all__ = [
    "Runner", "RunData", "OUTPUT_FILES", "default_runner", "run_name", "config_to_yaml",
    "write_run", "run_one", "load_run", "read_table", "check_topology",
]

log = logging.getLogger(__name__)

#: Files a run writes (plots come on top, see experiments.plots.PLOT_FILES).
OUTPUT_FILES = ("config.yaml", "summary.json", "requests.parquet", "steps.parquet")


class Runner(Protocol):
    """The simulator entry point: ``simulator.run.run_experiment``. Given ``out_dir`` it may
    write requests.parquet and steps.parquet there itself while it runs and return None tables."""

    def __call__(self, cfg: ExperimentConfig, *, progress: bool = True,
                 pcap_path: str | None = None, out_dir: Path | None = None) -> SimResult: ...


def agent_controller(cfg: ExperimentConfig) -> Any:
    """The controller of ``policy: {name: agent, checkpoint: PATH}``: agents.sim_controller's
    CheckpointController (imported here, so torch loads only for agent runs). UserError if the
    RL packages (torch) are missing, the checkpoint is missing or unreadable, or it was trained for another
    topology (LB/server count)."""
    try:
        from agents.sim_controller import CheckpointController
    except ImportError as exc:
        raise UserError(f"policy 'agent' needs torch ({exc}): "
                        "pip install -e '.[dev]'") from None
    return CheckpointController(cfg)


def default_runner() -> Runner:
    """The real simulator (imported on first use), with ``policy: agent``'s checkpoint
    controller injected (the simulator itself never imports agents)."""
    from simulator.run import run_experiment

    def run(cfg: ExperimentConfig, *, progress: bool = True, pcap_path: str | None = None,
            out_dir: Path | None = None) -> SimResult:
        controller = agent_controller(cfg) if cfg.policy.name == "agent" else None
        return run_experiment(cfg, progress=progress, pcap_path=pcap_path, controller=controller,
                              out_dir=out_dir)

    return run


def run_name(cfg: ExperimentConfig, unix_time: int | None = None) -> str:
    """``{name}__{policy}__{seed}__{unix_time}`` (the runs/<run_name>/ convention)."""
    t = int(time.time()) if unix_time is None else unix_time
    return f"{cfg.name}__{cfg.policy.name}__{cfg.seed}__{t}"


def config_to_yaml(cfg: ExperimentConfig) -> str:
    """The fully resolved config as YAML; ``parse_config(yaml.safe_load(text)) == cfg``."""
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False, default_flow_style=False)


def check_topology(cfg: ExperimentConfig, source: str) -> None:
    """Build the topology once so that its errors name the config file (raises ConfigError)."""
    import topologies

    topologies.build(cfg.topology, where=f"{source}: topology")


def _json_safe(x: Any) -> Any:
    """NaN/inf -> None (JSON has no NaN); numpy scalars -> Python; containers recursively."""
    if isinstance(x, dict):
        return {str(k): _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    if hasattr(x, "item") and not isinstance(x, (str, bytes)):
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def _check_summary(summary: dict[str, Any]) -> None:
    missing = [k for k in SUMMARY_KEYS if k not in summary]
    if missing:
        raise RuntimeError(f"simulator summary lacks run-contract keys: {', '.join(missing)}")
    for i, row in enumerate(summary["per_server"]):
        lacking = [k for k in PER_SERVER_KEYS if k not in row]
        if lacking:
            raise RuntimeError(f"summary.per_server[{i}] lacks keys: {', '.join(lacking)}")


def _clear_outputs(out_dir: Path) -> None:
    from experiments.plots import PLOT_FILES

    for name in (*OUTPUT_FILES, *PLOT_FILES):
        path = out_dir / name
        if path.exists():
            path.unlink()


def write_run(out_dir: Path, cfg: ExperimentConfig, result: SimResult) -> None:
    """Write summary.json, and requests.parquet and steps.parquet unless the runner streamed
    them there already (its tables are None; config.yaml is written before the run by
    :func:`run_one`). Raises RuntimeError if the summary breaks the run contract."""
    _check_summary(result.summary)
    summary = _json_safe(result.summary)
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    for name, table in (("requests", result.requests), ("steps", result.steps)):
        if table is not None:
            table.to_parquet(out_dir / f"{name}.parquet", index=False)
        elif not (out_dir / f"{name}.parquet").is_file():
            raise RuntimeError(f"the runner returned no {name} table and wrote no {name}.parquet")


def run_one(cfg: ExperimentConfig, out_dir: str | Path, *, runner: Runner | None = None,
            progress: bool = True, pcap_path: str | None = None, plot: bool = False) -> SimResult:
    """Run `cfg` and write the run directory `out_dir` (created; old contract files replaced).

    config.yaml is written first, so a crashed run still says what it ran; the tables stream
    into the directory during the run and summary.json comes last. The result's tables are
    None when streamed (read them with :func:`load_run`).
    """
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"{out}: cannot create output directory ({exc.strerror})") from None
    _clear_outputs(out)
    (out / "config.yaml").write_text(config_to_yaml(cfg))
    runner = runner or default_runner()
    log.info("running %s (policy %s, seed %d) -> %s", cfg.name, cfg.policy.name, cfg.seed, out)
    result = runner(cfg, progress=progress, pcap_path=pcap_path, out_dir=out)
    write_run(out, cfg, result)
    if plot:
        from experiments.plots import plot_runs

        plot_runs([load_run(out)], out)
    return result


@dataclass
class RunData:
    """A finished run directory read back: config, summary and the two tables."""

    path: Path
    config: ExperimentConfig
    summary: dict[str, Any]
    requests: pd.DataFrame
    steps: pd.DataFrame

    @property
    def label(self) -> str:
        """The policy name (what plots and tables show)."""
        return str(self.summary.get("policy", self.config.policy.name))


def read_table(path: Path) -> pd.DataFrame:
    """A run's table (path.parquet, else path.csv); a requests table (one with ``id``) comes
    sorted by id, since a simulated run writes its requests in the order they finished."""
    csv = path.with_suffix(".csv")
    if path.exists():
        try:
            df = pd.read_parquet(path)
        except Exception as exc:  # pyarrow raises several types for a broken file
            raise UserError(f"{path}: cannot read ({exc})") from None
    elif csv.exists():
        df = pd.read_csv(csv)
    else:
        raise UserError(f"{path}: missing (not a complete run directory)")
    if "id" in df.columns and not df["id"].is_monotonic_increasing:
        df = df.sort_values("id", kind="stable", ignore_index=True)
    return df


def load_run(path: str | Path) -> RunData:
    """Read a run directory; a missing or broken file is a UserError naming it."""
    p = Path(path)
    if not p.is_dir():
        raise UserError(f"{p}: no such run directory")
    summary_path = p / "summary.json"
    if not summary_path.exists():
        raise UserError(f"{summary_path}: missing (not a run directory)")
    try:
        summary = json.loads(summary_path.read_text())
    except json.JSONDecodeError as exc:
        raise UserError(f"{summary_path}: not valid JSON ({exc})") from None
    cfg_path = p / "config.yaml"
    if cfg_path.exists():
        cfg = load_config(cfg_path)
    else:
        raise UserError(f"{cfg_path}: missing (not a complete run directory)")
    return RunData(p, cfg, summary, read_table(p / "requests.parquet"),
                   read_table(p / "steps.parquet"))

