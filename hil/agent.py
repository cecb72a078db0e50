"""The agent in the loop (``hil.agent: process``): each LB's policy runs as ``marllb hil
controller`` in its own process on the LB's shm region file, and the LB takes its weights only
from msg_in through the data plane's own poll (validation, last good weights, silence fallback
-- the path VPP runs). For a simulated LB that poll is the C core's ``lb_rl_shm_poll_in`` at
every LB step; a real data plane polls by itself.

:class:`ProcessAgent` is the model's Controller for such runs: it sets no weights itself.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from hil.gateway.link import server_ip
from hil.testbed import sh
from simulator.config import UserError

__all__ = ["ProcessAgent", "POLL_NAMES"]

log = logging.getLogger("marllb.hil.agent")

POLL_NAMES = ("none", "applied", "rejected", "fallback", "busy")  # LB_RL_SHM_POLL_* 0..4


class ProcessAgent:
    """Controller protocol: ``core_policy``/``static_weights`` of ``policy`` (the config's
    policy, as the data planes were set up), weights only through the shm regions' msg_in.

    ``controller_argv(k, shm_path)`` gives LB k's controller command line."""

    def __init__(self, policy: Any, controller_argv: Any, log_dir: Path) -> None:
        self.policy = policy
        self.core_policy = policy.core_policy
        self.controller_argv = controller_argv
        self.log_dir = Path(log_dir)
        self.procs: list[subprocess.Popen[bytes] | None] = []
        self.polls = np.zeros((0, len(POLL_NAMES)), dtype=np.int64)  # [lb, LB_RL_SHM_POLL_*]
        self.trace: list[tuple[float, int, int, int]] = []  # (t_s, lb, poll result, in_seq_applied)
        self._sim: Any = None

    def static_weights(self, cores: Sequence[float]) -> list[float]:
        return list(self.policy.static_weights(cores))

    # -- controller processes --------------------------------------------------------------
    def spawn(self, k: int, shm_path: str) -> subprocess.Popen[bytes]:
        """Start LB k's controller (also to restart one); its argv and pid go to
        ``controllers.json`` in the log directory."""
        argv = self.controller_argv(k, shm_path)
        with open(self.log_dir / f"controller{k}.log", "ab") as out:
            p = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                 cwd=Path(__file__).resolve().parents[1], preexec_fn=_die_with_parent)
        while len(self.procs) <= k:
            self.procs.append(None)
        self.procs[k] = p
        self._write_index()
        return p

    def _write_index(self) -> None:
        rows = [{"lb": k, "pid": p.pid if p else None, "argv": p.args if p else None}
                for k, p in enumerate(self.procs)]
        (self.log_dir / "controllers.json").write_text(json.dumps(rows, indent=1) + "\n")

    def wait_first_weights(self, regions: Sequence[Any], timeout_s: float = 15.0) -> None:
        """Wait until every controller wrote weights (msg_in seq >= 1); UserError naming the
        controller's log otherwise."""
        deadline = time.monotonic() + timeout_s
        for k, region in enumerate(regions):
            while region.latest_in() is None:
                p = self.procs[k]
                if p is not None and p.poll() is not None:
                    raise UserError(f"controller of LB {k} exited ({p.returncode}) before writing weights; "
                                    f"see {self.log_dir / f'controller{k}.log'}")
                if time.monotonic() > deadline:
                    raise UserError(f"controller of LB {k} wrote no weights within {timeout_s:.0f} s; "
                                    f"see {self.log_dir / f'controller{k}.log'}")
                time.sleep(0.02)

    def stop(self) -> list[int | None]:
        """Stop every controller (SIGTERM, then SIGKILL); returns their exit codes."""
        pids = [p.pid for p in self.procs if p is not None]
        left = sh.kill_pids(pids)
        codes = [p.poll() if p is not None else None for p in self.procs]
        if left:
            raise UserError(f"controller processes {left} would not exit")
        return codes

    # -- Controller protocol ---------------------------------------------------------------
    def start(self, sim: Any) -> None:
        self._sim = sim
        self.polls = np.zeros((sim.n_lbs, len(POLL_NAMES)), dtype=np.int64)

    def force(self, now_s: float, lb: int) -> int:
        return -1

    def on_step(self, now_s: float, lb: int, features: dict[str, np.ndarray]) -> None:
        node = self._sim.lbs[lb]
        rc = node.shm.poll(now_s, time.time())
        self.polls[lb, rc] += 1
        self.trace.append((now_s, lb, rc, node.reader.status().in_seq_applied))
        return None

    def trace_table(self) -> Any:
        """Every poll: t_s, lb, result (POLL_NAMES), in_seq_applied (the msg_in seq in force)."""
        import pandas as pd

        t = np.array(self.trace, dtype=np.float64).reshape(-1, 4)
        return pd.DataFrame({"t_s": t[:, 0], "lb": t[:, 1].astype(np.int32),
                             "result": pd.Categorical.from_codes(t[:, 2].astype(np.int8), POLL_NAMES),
                             "in_seq_applied": t[:, 3].astype(np.int64)})

    def poll_counts(self) -> list[dict[str, int]]:
        return [{name: int(c) for name, c in zip(POLL_NAMES, row)} for row in self.polls]


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when the run's process dies, however it dies."""
    import ctypes
    import signal

    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def controller_command(policy_args: list[str], shm_path: str, n_servers: int, cores: Sequence[float],
                       step_s: float, fallback_after: int = 3) -> list[str]:
    """``marllb hil controller`` on one simulated LB's region: no health probes (simulated servers
    have no address) and no metrics endpoint."""
    return [sys.executable, "-m", "experiments.cli", "hil", "controller", "--shm", shm_path,
            *policy_args, "--servers", ",".join(f"{server_ip(j)}:80" for j in range(n_servers)),
            "--cores", ",".join(f"{c:g}" for c in cores), "--step", f"{step_s:g}", "--health", "none",
            "--metrics-port", "-1", "--fallback-after", str(fallback_after), "--log-json"]
