"""`marllb hil run CONFIG --out DIR` for every sensible combination of real and simulated parts.

The config's ``hil`` section is the swap matrix: ``traffic: sim|client|trex``, ``lb:
sim|host|vpp``, ``servers: sim|apache``, ``agent: inproc|process``. All-real (client, host,
apache, process) is the local testbed's run (:mod:`hil.run`). With simulated traffic and
servers the run is the simulation paced to the wall clock (:mod:`hil.realtime`), with the LBs'
data planes simulated (``lb: sim``) or real behind the gateway (``lb: host``), and the policy in
this process (``agent: inproc``) or in one ``marllb hil controller`` per LB (``process``). Every
combination writes the same run contract (config.yaml, summary.json, requests.parquet,
steps.parquet) plus hil.json. Other combinations are refused by :func:`check_combination`.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
import time
from pathlib import Path
from typing import Any

from simulator.policies import ORACLES
from simulator.config import ExperimentConfig, UserError
from simulator.results import SimResult

__all__ = ["check_combination", "run_swap", "run_realtime"]

log = logging.getLogger("marllb.hil.swap")



def check_combination(cfg: ExperimentConfig) -> str:
    """``"testbed"`` (all real) or ``"realtime"`` (simulated traffic and servers); UserError
    saying why for any other combination."""
    h = cfg.hil
    combo = f"hil: {{traffic: {h.traffic}, lb: {h.lb}, servers: {h.servers}, agent: {h.agent}}}"
    if h.traffic == "trex":
        raise UserError(f"{combo}: TRex's stateless streams open no TCP connections a server could "
                        "answer; TRex drives throughput benchmarks (`marllb bench throughput`), not runs")
    if h.traffic == "client" and h.servers == "sim":
        raise UserError(f"{combo}: simulated servers cannot answer a real client's TCP connections "
                        "(use servers: apache, or traffic: sim)")
    if h.traffic == "sim" and h.servers == "apache":
        raise UserError(f"{combo}: simulated clients have no TCP stack to hold connections with real "
                        "servers (use servers: sim, or traffic: client)")
    if h.traffic == "client":  # and servers: apache -- the testbed
        if h.lb != "host":
            raise UserError(f"{combo}: the local testbed forwards real clients' packets with "
                            "lb_rl_host (lb: host); " + ("a simulated LB cannot take real packets"
                                                         if h.lb == "sim" else
                                                         "VPP on the testbed bridge is not supported"))
        if h.agent != "process":
            raise UserError(f"{combo}: on the testbed each LB's agent is a `marllb hil controller` "
                            "process next to its lb_rl_host (agent: process)")
        if cfg.effects or cfg.traffic.job.io_s > 0:
            raise UserError(f"{combo}: hidden server effects (effects, traffic.job.io_s) exist only in "
                            "simulated servers; real Apache servers have their own (remove them, or use "
                            "servers: sim)")
        return "testbed"
    if h.lb != "sim" and cfg.policy.name in ORACLES:
        raise UserError(f"{combo}: policy {cfg.policy.name!r} is an oracle (it reads true server state "
                        "or hidden effects); a real data plane only has what it sees (use lb: sim)")
    if h.agent == "process" and cfg.policy.name in ORACLES:
        raise UserError(f"{combo}: policy {cfg.policy.name!r} is an oracle that reads true server "
                        "state; it cannot run as a `marllb hil controller` process (agent: inproc)")
    return "realtime"


def run_swap(cfg: ExperimentConfig, out_dir: str | Path, *, progress: bool = True,
             keep_up: bool | None = None) -> SimResult:
    """Run cfg with the parts its ``hil`` section names real (see the module docstring)."""
    if check_combination(cfg) == "testbed":
        from hil.run import run_hil

        return run_hil(cfg, out_dir, progress=progress, keep_up=keep_up)
    return run_realtime(cfg, out_dir, progress=progress)


def _needs_root(cfg: ExperimentConfig) -> None:
    if cfg.hil.lb != "sim":
        from hil.gateway.link import check_host

        why = check_host()
        if why:
            raise UserError(f"hil.lb: {cfg.hil.lb}: {why}")
    if cfg.hil.lb == "vpp":
        from hil.gateway.vpp_link import vpp_prefix

        vpp_prefix()


def run_realtime(cfg: ExperimentConfig, out_dir: str | Path, *, progress: bool = True) -> SimResult:
    """The simulation paced to the wall clock with the real parts cfg.hil names."""
    from experiments.runs import agent_controller, write_run
    from hil.agent import ProcessAgent, controller_command
    from hil.gateway.session import Gateway
    from hil.realtime import Pacer
    from hil.run import start_run_dir
    from hil.testbed.dataplane import controller_policy_args
    from hil.testbed.sh import REALTIME_SHM_PREFIX
    from simulator.policies import make_policy
    from simulator.run import build_graph, build_simulation, collect, server_nodes

    check_combination(cfg)
    _needs_root(cfg)
    h = cfg.hil
    graph = build_graph(cfg)
    cores = [graph.nodes[n]["cores"] for n in server_nodes(graph)]
    policy_args = controller_policy_args(cfg, len(cores)) if h.agent == "process" else []
    out, logs = start_run_dir(cfg, out_dir)

    shm_dir = Path(f"{REALTIME_SHM_PREFIX}{os.getpid()}") if h.lb == "sim" and h.agent == "process" else None
    run_cfg = cfg if shm_dir is None else cfg.model_copy(
        update={"lb": cfg.lb.model_copy(update={"shm_dir": str(shm_dir)})})
    inproc = agent_controller(cfg) if cfg.policy.name == "agent" else None
    agent: ProcessAgent | None = None
    if h.agent == "process":
        base = inproc or make_policy(cfg.policy, random.Random(0))  # core policy, static weights
        agent = ProcessAgent(base, lambda k, shm: controller_command(policy_args, shm, len(cores), cores,
                                                                    cfg.lb.step_s), logs)
    gw = Gateway(cfg, logs) if h.lb in ("host", "vpp") else None
    old_term = _sigterm_exits()  # a SIGTERM still runs the clean-up below
    t_wall = time.perf_counter()
    pacer = None
    regions: list[Any] = []
    lag = None
    try:
        sim = build_simulation(run_cfg, controller=agent or inproc,
                               dataplane_factory=gw.factory if gw is not None else None)
        if agent is not None:
            regions = _start_agents(sim, agent, cfg, gw)
        pacer = Pacer(sim, factor=h.realtime.factor, max_lag_s=h.realtime.max_lag_s,
                      spin_s=h.realtime.spin_s, packets_on_time=gw is not None)
        with _progress_bar(cfg, progress) as update:
            lag = pacer.run(update)
        result = collect(sim, time.perf_counter() - t_wall)
    finally:
        _restore_sigterm(old_term)
        codes = agent.stop() if agent is not None else []
        for r in regions:
            r.close()
        if gw is not None:
            gw.close()
        if shm_dir is not None:
            shutil.rmtree(shm_dir, ignore_errors=True)
        if pacer is not None and lag is None:
            (logs / "lag_at_failure.json").write_text(json.dumps(pacer.stats().as_dict(), indent=1) + "\n")
    info = {
        "what": {"traffic": h.traffic, "lb": h.lb, "servers": h.servers, "agent": h.agent,
                 "policy": cfg.policy.name, "checkpoint": cfg.policy.checkpoint},
        "mode": "realtime",
        "realtime": lag.as_dict(),
        "agent": None if agent is None else {"controllers": [p.args if p else None for p in agent.procs],
                                             "exit_codes": codes, "polls": agent.poll_counts()},
        "gateway": None if gw is None else {"packets": gw.counters(), "lb_stats": gw.lb_stats,
                                            "lb_argv": gw.lbs.argv if gw.lbs else None},
    }
    if agent is not None:
        agent.trace_table().to_parquet(logs / "agent_polls.parquet", index=False)
    (out / "hil.json").write_text(json.dumps(info, indent=1, default=str) + "\n")
    write_run(out, cfg, result)
    return result


def _sigterm_exits() -> Any:
    """Turn SIGTERM into SystemExit (Python's default would skip every finally: block); returns
    the previous handler (None off the main thread, where handlers cannot be set)."""
    import signal
    import threading

    def on_term(signum: int, _frame: Any) -> None:
        raise SystemExit(128 + signum)

    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGTERM, on_term)


def _restore_sigterm(old: Any) -> None:
    import signal

    if old is not None:
        signal.signal(signal.SIGTERM, old)


def _start_agents(sim: Any, agent: Any, cfg: ExperimentConfig, gw: Any) -> list[Any]:
    """Start one controller per LB on its region and wait for their first weights. A simulated
    LB publishes a first frame (so the controller sees its servers) and falls back to its
    static weights after cfg.hil.fallback_s of agent silence, as lb_rl_host and VPP do."""
    from simulator.shm import ShmRegion

    regions = []
    for lb in sim.lbs:
        if gw is None:
            lb.shm.set_fallback_timeout(cfg.hil.fallback_s)
            lb.shm.publish(0.0, time.time())
        path = lb.shm.path
        agent.spawn(lb.idx, str(path))
        regions.append(ShmRegion.open(path, role="reader"))
    agent.wait_first_weights(regions)
    return regions


class _progress_bar:
    """A rich progress bar over simulated seconds (updates come from the pacer's run)."""

    def __init__(self, cfg: ExperimentConfig, enabled: bool) -> None:
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        self.bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(),
                            TextColumn("{task.completed:.1f}/{task.total:.0f} s"), TimeElapsedColumn(),
                            transient=True, disable=not enabled)
        self.task = self.bar.add_task(f"{cfg.name} in real time", total=cfg.duration_s)

    def __enter__(self) -> Any:
        self.bar.start()
        return lambda t: self.bar.update(self.task, completed=t)

    def __exit__(self, *exc: object) -> None:
        self.bar.stop()
