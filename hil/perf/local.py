"""One trial on the local bench bed: a fresh ``lb_rl_host`` (an empty flow table, as CSIT resets
the data plane between trials), the profile's ramp-up (its SYNs open the flows an
established-flow profile then sends ACKs on; counted before the measurement starts), then
``mlb_gen`` sends the measured streams for the trial's duration at the load's multiplier while
the probes' latency is captured; loss = what the generator's interface sent - what reached the
servers' interfaces, after a drain. Optionally the real-time controller (``marllb hil
controller``) rewrites the LB's weights through its shm region every step during the trial.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from hil.perf.bed import GEN_CPU, LbRun, PerfBed
from hil.perf.latency import LatencyCapture
from hil.perf.search import Trial
from hil.testbed.dataplane import SHM_DIR
from hil.traffic.localgen import run_generator
from hil.traffic.program import Program
from simulator.config import UserError

__all__ = ["LocalMeasurer", "ControllerSpec"]

log = logging.getLogger("marllb.hil.perf")

DRAIN_S = 0.3  # after the generator stops: what is still in rings and queues arrives
LB_KEYS = ("rx_frames", "vip_frames", "forwarded", "dropped_no_server", "ring_drops", "ring_freeze",
           "tx_ring_full", "tx_errors", "shm_frames", "shm_applied", "shm_rejected", "shm_fallbacks")


@dataclass
class ControllerSpec:
    """The controller that rewrites the weights during a trial (None in LocalMeasurer: static)."""

    policy: str = "sed"  # a heuristic of `marllb hil controller`, or:
    checkpoint: str | None = None
    step_s: float = 0.25


class LocalMeasurer:
    """``measure(load_pps, duration_s) -> Trial`` against lb_rl_host on a :class:`PerfBed`."""

    def __init__(self, bed: PerfBed, program: Program, lb_exe: Path, *, policy: str = "wcmp",
                 weights: Sequence[float] = (), controller: ControllerSpec | None = None,
                 flow_timeout_s: float = 40.0, table_size: int = 1 << 20, rx_ring: str = "block",
                 lb_cpus: float | None = None, work_dir: Path | None = None):
        self.bed, self.program, self.lb_exe = bed, program, lb_exe
        self.policy, self.weights = policy, list(weights) or [1.0] * len(bed.servers)
        self.controller = controller
        self.flow_timeout_s, self.table_size, self.rx_ring = flow_timeout_s, table_size, rx_ring
        self.lb_cpus = lb_cpus
        self.work_dir = work_dir or Path(tempfile.mkdtemp(prefix="mlb-pf-"))
        self.trials = 0
        self.has_probes = any(s.latency for s in program.streams)
        if program.rate_pps <= 0:
            raise UserError(f"profile {program.name!r} has no measured stream with a rate")

    def _lb(self) -> LbRun:
        shm = SHM_DIR / f"mlb-pf-lb{os.getpid()}.shm" if self.controller else None
        return LbRun(self.bed, self.lb_exe, policy=self.policy, weights=self.weights,
                     vip_port=int(self.program.info.get("vip_port", 80)), table_size=self.table_size,
                     flow_timeout_s=self.flow_timeout_s, shm=shm,
                     step_s=self.controller.step_s if self.controller else 0.25, rx_ring=self.rx_ring,
                     cpus=self.lb_cpus,
                     stats_path=self.work_dir / f"lb-{self.trials}.json")

    def _start_controller(self, shm: Path) -> subprocess.Popen:
        c = self.controller
        argv = [sys.executable, "-m", "experiments.cli", "hil", "controller", "--shm", str(shm),
                "--servers", ",".join(f"{self.bed.ip[s]}:80" for s in self.bed.servers),
                "--health", "none", "--step", str(c.step_s), "--metrics-port", "-1",
                "--cores", ",".join(f"{w:g}" for w in self.weights)]
        argv += ["--checkpoint", c.checkpoint] if c.checkpoint else ["--policy", c.policy]
        with open(self.work_dir / f"controller-{self.trials}.log", "w") as log_file:
            return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=log_file)

    def _wait_for_weights(self, shm: Path, ctl: subprocess.Popen, timeout_s: float = 30.0) -> None:
        """Until the controller has written its first weights (it needs a second or more to
        start): the whole trial then runs under its control."""
        from simulator.shm import ShmError, ShmRegion

        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if ctl.poll() is not None:
                break
            try:
                with ShmRegion.open(shm, role="reader") as region:
                    if region.in_seq_latest > 0:
                        return
            except ShmError:
                pass  # lb_rl_host has not created the region yet
            time.sleep(0.05)
        raise UserError(f"the controller wrote no weights within {timeout_s:.0f} s "
                        f"(exit {ctl.poll()}); see {self.work_dir}/controller-{self.trials}.log")

    def measure(self, load_pps: float, duration_s: float) -> Trial:
        self.trials += 1
        mult = load_pps / self.program.rate_pps
        lb = self._lb().start()
        ctl = None
        try:
            if self.controller is not None:
                ctl = self._start_controller(lb.shm)
                self._wait_for_weights(lb.shm, ctl)
            if self.program.ramp_up:
                run_generator(self.program, self.bed.gen, "eth0", duration_s=None,
                              streams=self.program.ramp_up, cpu=GEN_CPU)
                time.sleep(DRAIN_S)
            rx0, tx0 = self.bed.received(), self.bed.sent()
            cap = LatencyCapture((self.bed.gen, "eth0"), [(s, "eth0") for s in self.bed.servers]).start() \
                if self.has_probes else None
            try:
                gen = run_generator(self.program, self.bed.gen, "eth0", duration_s=duration_s, mult=mult,
                                    cpu=GEN_CPU)
                time.sleep(DRAIN_S)
            finally:
                lat = cap.stop(drain_s=0.0) if cap else None
            rx1, tx1 = self.bed.received(), self.bed.sent()
            ctl_alive = ctl is None or ctl.poll() is None
        finally:
            if ctl is not None:
                ctl.terminate()
                try:
                    ctl.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    ctl.kill()
                    ctl.wait()
            lb_stats = lb.stop()
            if lb.shm is not None:
                lb.shm.unlink(missing_ok=True)
        if not ctl_alive:
            raise UserError(f"the controller exited during the trial; see {self.work_dir}/controller-{self.trials}.log")
        per_server = [b - a for a, b in zip(rx0, rx1)]
        sent = tx1 - tx0
        received = sum(per_server)
        core = lb_stats.get("core", {}) if isinstance(lb_stats.get("core"), dict) else {}
        extra = {
            "mult": mult, "per_server": per_server, "generator": {
                "sent": gen.sent, "failed": gen.failed, "due": gen.due, "elapsed_s": gen.elapsed_s,
                "lag_us": gen.lag_us, "cpu_s": gen.cpu_s},
            "lb": {k: lb_stats[k] for k in LB_KEYS if k in lb_stats} | ({"core": core} if core else {}),
            "probes_sent": lat.sent if lat else 0,
        }
        if lat is not None:
            extra["latency"] = lat.to_dict()
        trial = Trial(load_pps=load_pps, duration_s=duration_s, sent=sent, received=received,
                      offered_pps=(sent - (lat.sent if lat else 0)) / max(gen.elapsed_s, 1e-9),
                      p99_us=lat.p99_us if lat else None, extra=extra)
        log.info("trial %d: load %.0f pps -> offered %.0f, lost %d (%.4f %%)%s", self.trials, load_pps,
                 trial.offered_pps, trial.lost, 100 * trial.loss_ratio,
                 f", p99 {trial.p99_us:.0f} us" if trial.p99_us is not None else "")
        return trial
