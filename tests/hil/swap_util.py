"""Helpers of the swap-in run tests: `marllb hil run` in a subprocess, and its controllers."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from hil.testbed.dataplane import marllb_shm_files

REPO = Path(__file__).resolve().parents[2]


def our_shm_files() -> set[str]:
    """MARLLB's files in the shm directory: other programs' files there may come and go."""
    return {f.name for f in marllb_shm_files()}


def start_hil_run(cfg_path: Path, out: Path) -> subprocess.Popen[bytes]:
    """`marllb hil run CFG --out OUT` in its own process (output captured)."""
    return subprocess.Popen([sys.executable, "-m", "experiments.cli", "hil", "run", str(cfg_path),
                             "--out", str(out), "--no-progress"], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def first_controller(out: Path, run: subprocess.Popen[bytes], timeout_s: float) -> dict:
    """LB 0's controller (pid, argv) from the run's hil_logs/controllers.json, once written."""
    index = out / "hil_logs" / "controllers.json"
    deadline = time.monotonic() + timeout_s
    while not index.exists():
        assert run.poll() is None, f"run exited early ({run.returncode})"
        assert time.monotonic() < deadline, f"{index} did not appear"
        time.sleep(0.05)
    time.sleep(0.3)  # written at once, but give the writer the benefit of the doubt
    return json.loads(index.read_text())[0]  # type: ignore[no-any-return]
