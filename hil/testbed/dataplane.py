"""The LBs of the testbed: one ``lb_rl_host`` per LB namespace and, beside it, the
``marllb hil controller`` that drives it through its shm region with the config's policy."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from hil.testbed import sh
from hil.testbed.plan import TestbedPlan, helper_cpus
from hil.testbed.state import Running
from simulator.policies import ORACLES
from simulator.config import ExperimentConfig, UserError

__all__ = ["controller_policy_args", "start_dataplane", "stop_processes", "SHM_DIR", "ORACLES",
           "marllb_shm_files"]

SHM_DIR = Path("/dev/shm")
SHM_PREFIX = "mlb-"  # every shm file or directory MARLLB creates is named mlb-*


def marllb_shm_files(prefix: str = "") -> list[Path]:
    """MARLLB's entries in the shm directory whose names start with ``mlb-<prefix>``: the
    testbed's LB regions (``mlb-lb*``), the gateway's (``mlb-glb*``), the bench bed's
    (``mlb-pf-lb*``), the directories of simulated LBs' regions (``mlb-rt-<pid>``) and the API
    segments of the gateway's VPPs (``mlb-glb<k>-*``). One definition, so a new region name
    cannot slip past teardown or the tests' leftover checks."""
    return sorted(SHM_DIR.glob(f"{SHM_PREFIX}{prefix}*"))


def controller_policy_args(cfg: ExperimentConfig, n_servers: int) -> list[str]:
    """``marllb hil controller`` arguments for the config's policy. Oracles read true server
    state: simulator only. A checkpoint must match the topology (checked here, before anything
    starts)."""
    name = cfg.policy.name
    if name in ORACLES:
        raise UserError(f"policy.name: {name!r} is an oracle that reads true server state; it "
                        "exists only in the simulator (use ecmp, wcmp, awcmp, lsq, sed, lsq2, sed2 or agent)")
    if name == "agent":
        ckpt = cfg.policy.checkpoint
        if not ckpt:
            raise UserError("policy.checkpoint: policy 'agent' needs a checkpoint path")
        if not Path(ckpt).is_file():
            raise UserError(f"policy.checkpoint: {ckpt}: no such file")
        from hil.controller import CheckpointPolicy

        CheckpointPolicy(ckpt, None, n_servers)  # UserError if it was trained for another topology
        return ["--checkpoint", ckpt]
    return ["--policy", name if name in ("ecmp", "wcmp", "sed", "awcmp") else "static"]


def start_dataplane(cfg: ExperimentConfig, plan: TestbedPlan, run: Running, log_dir: Path,
                    *, seed: int = 0, static_weights: list[float] | None = None,
                    controllers: bool = True) -> list[Path]:
    """Start one ``lb_rl_host`` and (with ``controllers``) one controller per LB; any running
    ones are stopped first. ``static_weights`` overrides the policy's static weights (ecmp: all
    1, else the cores). Returns the shm region paths (lb1 .. lbK)."""
    from hil.hostbin import host_binary
    from simulator.policies import CORE_POLICY

    ctl_args = controller_policy_args(cfg, len(plan.servers))
    stop_processes(run, roles=("controller", "lb"))
    binary = host_binary(build=True)
    core_policy = CORE_POLICY.get(cfg.policy.name, "sed")
    static = static_weights or ([1.0] * len(plan.servers) if cfg.policy.name == "ecmp" else plan.cores)
    log_dir.mkdir(parents=True, exist_ok=True)
    shms = []
    for k, lb in enumerate(plan.lbs):
        shm = SHM_DIR / f"mlb-{lb.name}.shm"
        shm.unlink(missing_ok=True)
        argv = [str(binary), "--interface", "eth0", "--vip", plan.vip, "--vip-port", str(plan.port),
                *[a for s in plan.servers for a in ("--server", f"{s.ip}={s.mac}")],
                "--weights", ",".join(f"{w:g}" for w in static), "--policy", core_policy,
                "--step", f"{cfg.lb.step_s:g}", "--fallback", f"{cfg.hil.fallback_s:g}",
                "--shm", str(shm), "--seed", str(seed * 1000 + k + 1),
                "--table-size", str(cfg.lb.table_size), "--flow-timeout", f"{cfg.lb.flow_timeout_s:g}",
                "--reservoir-size", str(cfg.lb.reservoir_size), "--sample-prob", f"{cfg.lb.sample_prob:g}",
                "--stats-json", str(log_dir / f"{lb.name}.stats.json"),
                # per-frame rx ring: a packet crosses the LB in microseconds, not up to the 1 ms a
                # block ring waits to fill (which added ~1.6 ms to every HTTP request's JCT)
                "--rx-ring", "frame"]
        pid = _spawn(argv, lb.ns, log_dir / f"{lb.name}.log")
        run.procs.setdefault("lb", []).append({"ns": lb.ns, "pid": pid, "index": lb.index,
                                               "shm": str(shm), "argv": argv})
        run.save()
        _wait_file(shm, pid, log_dir / f"{lb.name}.log")
        shms.append(shm)
    for lb, shm in zip(plan.lbs, shms if controllers else []):
        argv = [sys.executable, "-m", "experiments.cli", "hil", "controller", "--shm", str(shm),
                *ctl_args, "--servers", ",".join(f"{s.ip}:{plan.port}" for s in plan.servers),
                "--cores", ",".join(f"{c:g}" for c in plan.cores), "--step", f"{cfg.lb.step_s:g}",
                "--health", cfg.hil.health, "--health-path", "/work.php?n=0&b=0",
                "--metrics-addr", lb.ip, "--log-json"]
        pid = _spawn(argv, lb.ns, log_dir / f"{lb.name}.controller.log")
        run.procs.setdefault("controller", []).append({"ns": lb.ns, "pid": pid, "index": lb.index,
                                                       "argv": argv})
    run.save()
    return shms


def _spawn(argv: list[str], ns: str, log_path: Path) -> int:
    """Start argv in namespace ns as a daemon of its own session (outlives this process)."""
    repo = Path(__file__).resolve().parents[2]
    env = dict(os.environ)
    env["PYTHONPATH"] = f"{repo}{os.pathsep}{env['PYTHONPATH']}" if env.get("PYTHONPATH") else str(repo)
    with open(log_path, "ab") as out:
        p = subprocess.Popen(sh.in_ns(ns, argv, helper_cpus()), stdout=out, stderr=subprocess.STDOUT,
                             stdin=subprocess.DEVNULL, start_new_session=True, env=env, cwd=repo)
    return p.pid


def _wait_file(path: Path, pid: int, log_path: Path, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        if not sh.pid_alive(pid):
            raise UserError(f"lb_rl_host exited at start: {log_path.read_text(errors='replace').strip()[-800:]}")
        if time.monotonic() > deadline:
            raise UserError(f"lb_rl_host did not create {path} within {timeout_s:.0f} s")
        time.sleep(0.02)


def stop_processes(run: Running, roles: tuple[str, ...]) -> None:
    for role in roles:
        pids = [p["pid"] for p in run.procs.get(role, [])]
        left = sh.kill_pids(pids)
        if left:
            raise UserError(f"{role} processes {left} would not exit")
        run.procs[role] = []
    run.save()
