"""Entry point of one simulated experiment: config in, :class:`SimResult` out.

Seeding: ``numpy.random.SeedSequence(cfg.seed).spawn`` gives independent streams for arrivals,
job sizes, clients/ports, the edge router's ECMP salt, each LB core's seed, the policy's
tie-breaking/probe delays and the background-load periods. Same config and seed => identical requests and summary (except
``wall_s``).
"""

from __future__ import annotations

import logging
import random
import time
from typing import Any, Callable

import numpy as np
import pandas as pd

from simulator.config import ExperimentConfig, LbConfig, UserError
from simulator.model import COMPLETED, DROPPED, FEATURES, Simulation
from simulator.policies import make_policy
from simulator.protocols import DataPlane
from simulator.results import SimResult, finite_or_none, jain_index, quantile
from simulator.traffic import make_source

__all__ = ["run_experiment", "build_simulation", "make_dataplane", "build_graph", "make_traffic_source",
           "server_nodes"]

log = logging.getLogger(__name__)


def build_graph(cfg: ExperimentConfig) -> Any:
    """The topology graph of cfg.topology (topologies.build)."""
    import topologies

    return topologies.build(cfg.topology)


def make_dataplane(n_servers: int, core_policy: str, lb: LbConfig, seed: int) -> DataPlane:
    """One LB's data-plane core: the C core (vpp_plugin/core) through its cffi binding
    :class:`simulator.dataplane.DataPlaneCore` -- there is no other implementation. Raises
    UserError telling how to build it when the compiled module is missing."""
    try:
        from simulator.dataplane import DataPlaneCore
    except ImportError as exc:
        raise UserError(str(exc)) from None
    return DataPlaneCore(n_servers, table_size=lb.table_size, reservoir_size=lb.reservoir_size,
                         sample_prob=lb.sample_prob, flow_timeout_s=lb.flow_timeout_s,
                         syn_timeout_s=lb.syn_timeout_s, policy=core_policy, seed=seed)


def _seed_streams(cfg: ExperimentConfig) -> list[np.random.SeedSequence]:
    """The run's independent streams: arrivals, sizes, clients, ECMP salt, cores, policy,
    background, non-CPU times (spawned children are fixed by their index: adding a stream at the
    end leaves the others' draws unchanged)."""
    return np.random.SeedSequence(cfg.seed).spawn(8)


def server_nodes(graph: Any) -> list[str]:
    """The topology's server nodes in index order (s1, s2, ...)."""
    return sorted((n for n, k in graph.nodes(data="kind") if k == "server"), key=lambda n: int(n[1:]))


def make_traffic_source(cfg: ExperimentConfig, graph: Any = None) -> Any:
    """The run's traffic source (arrival times and job sizes) exactly as the simulation draws
    it for cfg and its seed; ``graph`` (default: built from cfg) gives the total cores that
    ``traffic.load`` refers to. Used by build_simulation and by the testbed's schedule."""
    s_arr, s_size = _seed_streams(cfg)[:2]
    graph = build_graph(cfg) if graph is None else graph
    total = float(sum(graph.nodes[n]["cores"] for n in server_nodes(graph)))
    return make_source(cfg.traffic, total, np.random.default_rng(s_arr), np.random.default_rng(s_size))


def build_simulation(cfg: ExperimentConfig, *, log_packets: bool = False,
                     dataplane_factory: Callable[..., DataPlane] | None = None,
                     controller: Any = None) -> Simulation:
    """Wire a Simulation from the config (graph, traffic, policy, cores); not yet run.

    ``controller`` replaces the policy built from ``cfg.policy`` (it must offer ``core_policy``,
    ``static_weights(cores)`` and the Controller protocol): how learned policies are injected
    without the simulator importing agents."""
    _, _, s_cli, s_salt, s_core, s_pol, s_bg, s_io = _seed_streams(cfg)
    policy = controller or make_policy(cfg.policy, random.Random(int(s_pol.generate_state(1)[0])))
    graph = build_graph(cfg)
    servers = server_nodes(graph)
    cores = [graph.nodes[n]["cores"] for n in servers]
    n_lbs = sum(1 for _, k in graph.nodes(data="kind") if k == "lb")
    source = make_traffic_source(cfg, graph)
    factory = dataplane_factory or make_dataplane
    core_seeds = s_core.generate_state(n_lbs, dtype=np.uint64)
    weights = policy.static_weights(effective_capacities(cfg, cores) if cfg.policy.name == "sed_true" else cores)
    dps = []
    for k in range(n_lbs):
        dp = factory(len(servers), policy.core_policy, cfg.lb, int(core_seeds[k]))
        for i, w in enumerate(weights):
            dp.add_server(i, w)
        dps.append(dp)
    salt = int(s_salt.generate_state(1)[0])
    return Simulation(cfg, graph, source, dps, policy, rng=np.random.default_rng(s_cli),
                      ecmp_salt=salt, log_packets=log_packets, bg_rng=np.random.default_rng(s_bg),
                      io_rng=np.random.default_rng(s_io))


def effective_capacities(cfg: ExperimentConfig, cores: list[float]) -> list[float]:
    """Each server's saturated service rate under cfg.effects (its hidden effects: speed, SMT;
    not background load, contention or shared resources): the static weights ``sed_true``
    uses, which a perfect learner of static weights would find."""
    from simulator.server import effects_by_server, saturated_rate

    eff = effects_by_server(cfg.effects, len(cores))
    return [saturated_rate(c, eff.get(i)) for i, c in enumerate(cores)]


def run_experiment(cfg: ExperimentConfig, *, progress: bool = True, pcap_path: str | None = None,
                   log_packets: bool = False, controller: Any = None) -> SimResult:
    """Run one simulated experiment. ``pcap_path`` writes every modelled packet as a pcap;
    ``log_packets`` keeps Packet objects in ``result.extra['packets']`` (tests); ``controller``
    as in :func:`build_simulation`."""
    t_wall = time.perf_counter()
    want_log = log_packets or pcap_path is not None
    sim = build_simulation(cfg, log_packets=want_log, controller=controller)
    if progress:
        _run_with_progress(sim, cfg)
    else:
        sim.run()
    wall = time.perf_counter() - t_wall
    result = collect(sim, wall)
    if want_log:
        sim.packets.sort(key=lambda p: (p.t_send_s, p.flow))
        if log_packets:
            result.extra["packets"] = sim.packets
        if pcap_path is not None:
            from simulator.pcap import write_pcap

            write_pcap(pcap_path, sim.packets)
    log.info("%s: %d requests, %d events, %d packets in %.2f s wall", cfg.name,
             result.summary["arrived"], sim.events, sim.n_packets, wall)
    return result


def _run_with_progress(sim: Simulation, cfg: ExperimentConfig) -> None:
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    t_start = time.perf_counter()
    prog = Progress(TextColumn("[bold]{task.description}"), BarColumn(),
                    TextColumn("{task.completed:.1f}/{task.total:.0f} sim s"), TimeElapsedColumn(),
                    transient=True)
    task = prog.add_task(cfg.name, total=cfg.duration_s)
    state = {"shown": False}

    def update(t: float) -> None:
        if not state["shown"] and time.perf_counter() - t_start > 2.0:
            prog.start()  # only runs longer than a couple of seconds get a bar
            state["shown"] = True
        prog.update(task, completed=t)

    try:
        sim.run(progress=update)
    finally:
        if state["shown"]:
            prog.stop()


def collect(sim: Simulation, wall_s: float) -> SimResult:
    """Summary, requests and steps tables of a finished Simulation.

    Counts (arrived/completed/dropped/in_flight) cover the whole run: a request is completed if
    its last response byte reached the client by the end, dropped if refused/reset/unroutable,
    in flight otherwise (so arrived = completed + dropped + in_flight exactly). Statistics (JCT
    percentiles, throughput, per-server figures) cover requests sent at or after warmup_s and the
    window [warmup_s, duration_s]. ``jain_fairness`` is Jain's index (sum x)^2 / (n sum x^2) of
    the per-server busy fractions (each already normalised by the server's cores)."""
    cfg = sim.cfg
    end, warm = cfg.duration_s, cfg.warmup_s
    reqs = sim.requests
    n = len(reqs)
    status = np.empty(n, dtype=object)
    st = np.array([r.status for r in reqs], dtype=np.int8)
    t_done = np.array([r.t_done for r in reqs], dtype=float)
    completed = (st == COMPLETED) & (t_done <= end)
    dropped = st == DROPPED
    status[:] = "in_flight"
    status[completed] = "completed"
    status[dropped] = "dropped"
    t0 = np.array([r.t0 for r in reqs], dtype=float)
    t_sa = np.array([r.t_srv_arrive for r in reqs], dtype=float)
    t_sd = np.array([r.t_srv_done for r in reqs], dtype=float)
    jct = np.where(completed, t_done - t0, np.nan)
    sojourn = np.where((t_sd >= 0) & (t_sd <= end), t_sd - t_sa, np.nan)
    requests = pd.DataFrame({
        "id": np.arange(n, dtype=np.int64),
        "client": np.array([r.client for r in reqs], dtype=np.int32),
        "lb": np.array([r.lb for r in reqs], dtype=np.int32),
        "server": np.array([r.server for r in reqs], dtype=np.int32),
        "t_arrive_s": t0,
        "t_done_s": np.where(completed | dropped, t_done, np.nan),
        "jct_s": jct,
        "work_s": np.array([r.work_s for r in reqs], dtype=float),
        "status": pd.Categorical(status, categories=["completed", "dropped", "in_flight"]),
        "t_server_arrive_s": np.where(t_sa >= 0, t_sa, np.nan),
        "t_server_done_s": np.where((t_sd >= 0) & (t_sd <= end), t_sd, np.nan),
        "sojourn_s": sojourn,
    })
    meas = completed & (t0 >= warm)
    j = jct[meas]
    window = end - warm
    per_server = []
    busy = []
    for i, s in enumerate(sim.servers):
        b = s.busy_area / window
        busy.append(b)
        per_server.append({"id": i, "completed": int(np.sum(meas & (requests["server"].to_numpy() == i))),
                           "busy_fraction": b, "mean_jobs": s.jobs_area / window,
                           "cores": s.cores, "refused": s.refused})
    bx = np.array(busy)
    jain = jain_index(bx)
    summary: dict[str, Any] = {
        "arrived": n,
        "completed": int(completed.sum()),
        "dropped": int(dropped.sum()),
        "in_flight": int(n - completed.sum() - dropped.sum()),
        "jct_mean_s": float(j.mean()) if len(j) else None,
        "jct_p50_s": quantile(j, 0.5),
        "jct_p90_s": quantile(j, 0.9),
        "jct_p99_s": quantile(j, 0.99),
        "throughput_rps": float(meas.sum() / window),
        "jain_fairness": jain,
        "sim_time_s": float(end),
        "wall_s": float(wall_s),
        "events": int(sim.events),
        "packets": int(sim.n_packets),
        "per_server": per_server,
        "seed": cfg.seed,
        "policy": cfg.policy.name,
        "warmup_s": float(warm),
        "measured": int(meas.sum()),
        "misrouted_packets": int(sum(lb.misrouted for lb in sim.lbs)),
        "link_drops": int(sum(lk.drops for lk in sim.links.values())),
        "core": type(sim.lbs[0].dp).__name__,
    }
    finite_or_none(summary)
    cols = ["t_s", "lb", "server", "n_flow_on", "weight", *FEATURES]
    if sim.steps:
        steps = pd.DataFrame({c: np.concatenate(sim.steps[c]) for c in cols})
        steps["lb"] = steps["lb"].astype(np.int32)
        steps["server"] = steps["server"].astype(np.int32)
        steps["n_flow_on"] = steps["n_flow_on"].astype(np.int64)
    else:
        steps = pd.DataFrame({c: pd.Series(dtype=float) for c in cols})
    return SimResult(summary=summary, requests=requests, steps=steps)
