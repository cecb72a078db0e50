"""`marllb hil run CONFIG --out DIR`: one experiment on the local testbed, all real.

Brings the testbed up if needed (namespaces, Apache servers under CPU quotas), starts fresh LBs
(``lb_rl_host``) and controllers (``marllb hil controller`` with the config's policy), replays
the simulator's own traffic for the config and seed with the real client, and writes the same
run contract as ``marllb sim run`` -- config.yaml, summary.json, requests.parquet (the client's
records), steps.parquet (the msg_out frames' features and the weights in force, per step and
server) -- plus ``hil.json``: what ran where, versions, CPU quotas, calibration, loss and error
counters. A testbed this command brought up is taken down at the end (``keep_up`` keeps it)."""

from __future__ import annotations

import json
import logging
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd

from hil.testbed import cgroups, sh
from hil.testbed.calibrate import iters_per_cpu_s, load_calibration
from hil.testbed.collect import contract_requests, summarise
from hil.testbed.plan import MARK_BASE, TestbedPlan, helper_cpus, make_plan, state_dir
from hil.testbed.recorder import StepRecorder, wait_applied
from hil.testbed.schedule import build_schedule
from hil.testbed.testbed import (cap_workers, controller_policy_args, down, load_state, start_dataplane,
                                 stop_processes, up)
from simulator.config import ExperimentConfig, UserError
from simulator.results import SimResult

__all__ = ["run_hil", "start_run_dir"]

log = logging.getLogger("marllb.hil.run")

START_DELAY_S = 1.0  # clients start this long after being spawned (imports, schedule load)
END_GRACE_S = 0.5  # clients are stopped this long after duration_s: later answers are in flight
FIRST_WEIGHTS_TIMEOUT_S = 5.0


def run_hil(cfg: ExperimentConfig, out_dir: str | Path, *, progress: bool = True,
            keep_up: bool | None = None) -> SimResult:
    """Run cfg on the testbed and write the run directory. Returns the result tables."""
    from experiments.runs import write_run  # experiments wires us

    plan = make_plan(cfg)
    controller_policy_args(cfg, len(plan.servers))  # policy/checkpoint errors before anything starts
    out, logs = start_run_dir(cfg, out_dir)
    was_up = load_state() is not None
    t_wall = time.perf_counter()
    iters = iters_per_cpu_s(plan.cpu_per_core)  # measured under a worker's quota
    run = up(cfg, plan, start_lbs=False)
    try:
        _cap_all_workers(plan)  # an Apache restarted since `up` has uncapped workers
        shms = start_dataplane(cfg, plan, run, logs, seed=cfg.seed)
        first_weights = wait_applied(shms, FIRST_WEIGHTS_TIMEOUT_S)
        if not first_weights:
            log.warning("controllers wrote no weights within %.0f s: the run starts on static weights",
                        FIRST_WEIGHTS_TIMEOUT_S)
        sched = build_schedule(cfg, iters_per_cpu_s=iters, cpu_per_core=plan.cpu_per_core,
                               n_lbs=len(plan.lbs), n_clients=len(plan.clients))
        sched_path = logs / "schedule.npz"
        sched.save(sched_path)
        log_offsets = {s.ns: _size(state_dir() / s.ns / "access.log") for s in plan.servers}
        cg_before = _cgroup_stats(plan)
        t0 = time.time() + START_DELAY_S
        recorder = StepRecorder(shms, len(plan.servers), cfg.lb.step_s, t0)
        recorder.start()
        clients = _start_clients(cfg, plan, run, sched_path, logs, t0)
        try:
            _wait_clients(clients, t0 + cfg.duration_s + END_GRACE_S, cfg, progress)
        finally:
            steps = recorder.stop()
            lb_pids = [p["pid"] for p in run.procs.get("lb", [])]
            ctl_argv = [p.get("argv", []) for p in run.procs.get("controller", [])]
            stop_processes(run, roles=("client", "controller", "lb"))
        records = _read_client_records(plan, logs)
        lb_stats = [_read_json(logs / f"{lb.name}.stats.json") for lb in plan.lbs]
        requests = contract_requests(records, cfg, cfg.hil.request_timeout_s)
        packets = _sum_counter(lb_stats, "forwarded")
        summary = summarise(requests, cfg, plan.cores, [s.quota_cpus for s in plan.servers],
                            wall_s=time.perf_counter() - t_wall, packets=packets)
        _copy_access_logs(plan, log_offsets, out / "servers")
        info = _hil_info(cfg, plan, run, ctl_argv, iters, _calibration_of(plan.cpu_per_core), lb_stats, lb_pids, cg_before,
                         _cgroup_stats(plan), records, first_weights, t0)
        (out / "hil.json").write_text(json.dumps(info, indent=1, default=str) + "\n")
        result = SimResult(summary=summary, requests=requests, steps=steps)
        write_run(out, cfg, result)
        return result
    finally:
        if not (keep_up if keep_up is not None else was_up):
            down()


def start_run_dir(cfg: ExperimentConfig, out_dir: str | Path) -> tuple[Path, Path]:
    """Create the run directory (old contract files removed), write config.yaml first (a run
    that fails still says what it ran) and an empty ``hil_logs/``; returns (out, logs)."""
    from experiments.runs import _clear_outputs, config_to_yaml

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    _clear_outputs(out)
    (out / "config.yaml").write_text(config_to_yaml(cfg))
    logs = out / "hil_logs"
    shutil.rmtree(logs, ignore_errors=True)
    logs.mkdir()
    return out, logs


def _calibration_of(cpu_per_core: float) -> dict[str, Any]:
    cal = (load_calibration() or {}).get("by_cpu_per_core", {}).get(f"{cpu_per_core:g}", {})
    return {k: v for k, v in cal.items() if k != "samples"}


def _cap_all_workers(plan: TestbedPlan) -> None:
    cg = cgroups.detect()
    for s in plan.servers:
        cap_workers(cg, s)


def _start_clients(cfg: ExperimentConfig, plan: TestbedPlan, run: Any, sched: Path, logs: Path,
                   t0: float) -> list[subprocess.Popen[bytes]]:
    procs = []
    for i, c in enumerate(plan.clients):
        argv = [sys.executable, "-m", "hil.testbed.client", "--schedule", str(sched), "--client", str(i),
                "--vip", plan.vip, "--port", str(plan.port), "--start-wall", repr(t0),
                "--duration-s", repr(cfg.duration_s), "--out", str(logs / f"{c.name}.parquet"),
                "--close", cfg.traffic.close, "--timeout", repr(cfg.hil.request_timeout_s),
                "--response-bytes", str(cfg.traffic.response_bytes)]
        if len(plan.lbs) > 1:
            argv += ["--mark-base", str(MARK_BASE)]
        with open(logs / f"{c.name}.log", "ab") as fh:
            p = subprocess.Popen(sh.in_ns(c.ns, argv, helper_cpus()), stdout=fh, stderr=subprocess.STDOUT,
                                 stdin=subprocess.DEVNULL)
        procs.append(p)
        run.procs.setdefault("client", []).append({"ns": c.ns, "pid": p.pid, "index": c.index})
    run.save()
    return procs


def _wait_clients(procs: list[subprocess.Popen[bytes]], stop_wall: float, cfg: ExperimentConfig,
                  progress: bool) -> None:
    """Wait for the clients, with a progress bar over the run; stop them at stop_wall (answers
    after duration_s count as in flight, as in the simulator)."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(),
                   TextColumn("{task.completed:.0f}/{task.total:.0f} s"), TimeElapsedColumn(),
                   transient=True, disable=not progress)
    start = stop_wall - cfg.duration_s - END_GRACE_S
    with bar:
        task = bar.add_task(f"{cfg.name} on the testbed", total=cfg.duration_s)
        while any(p.poll() is None for p in procs) and time.time() < stop_wall:
            bar.update(task, completed=min(cfg.duration_s, max(0.0, time.time() - start)))
            time.sleep(0.1)
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout=15)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    bad = [p.returncode for p in procs if p.returncode != 0]
    if bad:
        raise UserError(f"testbed client exited with {bad}; see its log in hil_logs/")


def _read_client_records(plan: TestbedPlan, logs: Path) -> pd.DataFrame:
    frames = []
    for c in plan.clients:
        f = logs / f"{c.name}.parquet"
        if not f.is_file():
            raise UserError(f"client {c.name} wrote no records ({f}); see {logs / (c.name + '.log')}")
        frames.append(pd.read_parquet(f))
    return pd.concat(frames, ignore_index=True)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _copy_access_logs(plan: TestbedPlan, offsets: dict[str, int], dest: Path) -> None:
    """This run's part of each server's access log -> dest/s<j>.access.log."""
    dest.mkdir(exist_ok=True)
    for s in plan.servers:
        src = state_dir() / s.ns / "access.log"
        data = b""
        if src.is_file():
            with open(src, "rb") as fh:
                fh.seek(offsets.get(s.ns, 0))
                data = fh.read()
        (dest / f"{s.name}.access.log").write_bytes(data)


def _cgroup_stats(plan: TestbedPlan) -> dict[str, dict[str, int]]:
    try:
        cg = cgroups.detect()
    except UserError:
        return {}
    return {s.ns: cg.stat(s.ns) for s in plan.servers}


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())  # type: ignore[no-any-return]
    except (OSError, ValueError):
        return {}


def _sum_counter(stats: list[dict[str, Any]], key: str) -> int | None:
    vals = [s.get(key) for s in stats]
    return int(sum(vals)) if vals and all(isinstance(v, (int, float)) for v in vals) else None


def _versions() -> dict[str, str]:
    out = {}
    for name, argv in (("apache2", ["apache2", "-v"]), ("php", ["php", "-v"]),
                       ("kernel", ["uname", "-r"])):
        cp = sh.run(argv, check=False)
        out[name] = (cp.stdout.strip().splitlines() or ["?"])[0]
    cp = sh.run(["git", "-C", str(Path(__file__).resolve().parents[1]), "rev-parse", "HEAD"], check=False)
    out["marllb_commit"] = cp.stdout.strip() or "?"
    return out


def _hil_info(cfg: ExperimentConfig, plan: TestbedPlan, run: Any, ctl_argv: list[list[str]], iters: float,
              calibration: dict[str, Any] | None, lb_stats: list[dict[str, Any]], lb_pids: list[int],
              cg_before: dict[str, dict[str, int]], cg_after: dict[str, dict[str, int]],
              records: pd.DataFrame, first_weights: bool, t0: float) -> dict[str, Any]:
    outcomes = records["outcome"].astype(str).value_counts().to_dict()
    late = (records["t_send_s"] - records["t_arrive_s"]).dropna()
    throttled = {ns: {k: cg_after.get(ns, {}).get(k, 0) - cg_before.get(ns, {}).get(k, 0)
                      for k in cg_after.get(ns, {})} for ns in cg_after}
    return {
        "what": {"traffic": cfg.hil.traffic, "lb": cfg.hil.lb, "servers": cfg.hil.servers,
                 "agent": cfg.hil.agent, "policy": cfg.policy.name, "checkpoint": cfg.policy.checkpoint},
        "t0_wall_s": t0,
        "vip": plan.vip,
        "namespaces": {"clients": [c.ns for c in plan.clients], "lbs": [lb.ns for lb in plan.lbs],
                       "servers": [s.ns for s in plan.servers]},
        "servers": [{"id": s.index - 1, "ns": s.ns, "ip": s.ip, "mac": s.mac, "cores": s.cores,
                     "workers": s.workers, "backlog": s.backlog, "quota_cpus": s.quota_cpus,
                     "worker_quota_cpus": plan.cpu_per_core, "pinned_cpus": list(s.cpus),
                     "cgroup": run.cgroups.get(s.ns)} for s in plan.servers],
        "helper_cpus": list(helper_cpus()),
        "cpu_per_core": plan.cpu_per_core,
        "iters_per_cpu_s": iters,
        "calibration": calibration,
        "lbs": [{"ns": lb.ns, "ip": lb.ip, "mac": lb.mac, "pid": pid, "stats": st}
                for lb, pid, st in zip(plan.lbs, lb_pids, lb_stats)],
        "controller": {"args": ctl_argv, "first_weights_applied": first_weights},
        "client": {"outcomes": {str(k): int(v) for k, v in outcomes.items()},
                   "lateness_mean_s": float(late.mean()) if len(late) else None,
                   "lateness_p99_s": float(late.quantile(0.99)) if len(late) else None,
                   "lateness_max_s": float(late.max()) if len(late) else None},
        "cgroup_delta": throttled,
        "versions": _versions(),
    }

