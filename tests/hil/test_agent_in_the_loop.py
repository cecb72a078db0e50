"""The agent in the loop: a 20 s real-time run of a small simulated cluster whose LB takes its
weights only from msg_in (the C core's poll), written by `marllb hil controller` in another
process. Killing the controller mid-run makes the LB fall back to its static weights after
hil.fallback_s; a restarted controller takes over again with higher msg_in sequence numbers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("simulator.dataplane", reason="cffi binding not built (pip install -e .)")

from tests.hil.swap_util import REPO, first_controller, our_shm_files, start_hil_run  # noqa: E402

CORES = np.array([2.0, 2, 2, 4, 4, 4])  # the unittest preset: the static (fallback) weights
STEP_S, FALLBACK_S = 0.25, 1.0


def test_controller_in_another_process_drives_the_simulated_lb(tmp_path: Path) -> None:
    cfg = {"name": "agent_loop", "seed": 4, "duration_s": 20.0, "topology": {"preset": "unittest"},
           "traffic": {"load": 0.6}, "policy": {"name": "awcmp"}, "lb": {"step_s": STEP_S},
           "hil": {"traffic": "sim", "lb": "sim", "servers": "sim", "agent": "process",
                   "fallback_s": FALLBACK_S}}
    cfg_path, out = tmp_path / "loop.yaml", tmp_path / "run"
    cfg_path.write_text(json.dumps(cfg))
    shm_before = our_shm_files()
    run = start_hil_run(cfg_path, out)
    restarted: subprocess.Popen | None = None
    try:
        ctl = first_controller(out, run, 30)
        time.sleep(7.0)
        os.kill(ctl["pid"], signal.SIGKILL)  # a crash, not a clean stop
        t_kill = time.time()
        time.sleep(6.0)
        restarted = subprocess.Popen(ctl["argv"], cwd=REPO, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        t_restart = time.time()
        text, _ = run.communicate(timeout=90)
        assert run.returncode == 0, text.decode(errors="replace")[-3000:]
    finally:
        for p in (run, restarted):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait()
    info = json.loads((out / "hil.json").read_text())
    t0 = info["realtime"]["t0_unix_s"]
    k, r = t_kill - t0, t_restart - t0
    assert 4.0 < k < 12.0 and r < 19.0, (k, r)
    steps = pd.read_parquet(out / "steps.parquet")
    w = steps.pivot_table(index="t_s", columns="server", values="weight").sort_index()
    is_static = np.all(np.isclose(w.to_numpy(), CORES), axis=1)
    polls = pd.read_parquet(out / "hil_logs" / "agent_polls.parquet")

    # before the kill every step applied a fresh controller frame; awcmp's weights are not static
    before = polls[(polls.t_s > 0.5) & (polls.t_s < k - 0.3)]
    assert (before.result == "applied").all(), before.result.value_counts()
    assert (~is_static[(w.index > 0.5) & (w.index < k - 0.3)]).mean() > 0.8

    # after the kill: the core's silence fallback within fallback_s (+ a step, + the controller's
    # last frame), then static weights until the restarted controller writes
    fb = polls[polls.result == "fallback"].t_s.to_numpy()
    assert len(fb) >= 1 and k + FALLBACK_S - STEP_S <= fb[0] <= k + FALLBACK_S + 2 * STEP_S + 0.2, (k, fb)
    assert is_static[(w.index >= fb[0]) & (w.index < r)].all()
    assert info["agent"]["polls"][0]["fallback"] >= 1

    # the restarted controller takes over (after its start-up), with higher sequence numbers
    after = polls[polls.t_s > r + 3.0]
    assert len(after) > 0 and (after.result == "applied").mean() > 0.9
    assert after.in_seq_applied.min() > before.in_seq_applied.max()
    assert after.in_seq_applied.is_monotonic_increasing
    assert (~is_static[w.index > r + 3.0]).mean() > 0.8
    assert our_shm_files() - shm_before == set()  # the run's shm files are gone
