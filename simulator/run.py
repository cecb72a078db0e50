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
from functools import partial
from pathlib import Path
from typing import Any, Callable

import numpy as np

from simulator.config import ExperimentConfig, LbConfig, UserError
from simulator.hugepages import small_pages
from simulator.jct_stats import exact_mean, linear_quantiles
from simulator.model import Simulation
from simulator.policies import make_policy
from simulator.protocols import DataPlane
from simulator.records import ParquetRecorder, RecorderFactory
from simulator.results import SimResult, finite_or_none, jain_index
from simulator.traffic import make_source

__all__ = ["run_experiment", "build_simulation", "make_dataplane", "build_graph", "make_traffic_source",
           "server_nodes"]

log = logging.getLogger(__name__)


def build_graph(cfg: ExperimentConfig) -> Any:
    """The topology graph of cfg.topology (topologies.build)."""
    import topologies

    return topologies.build(cfg.topology)


#: Up to this many servers they are added one by one, as lb_rl_host and VPP add them (the
#: weighted table of untracked flows depends on the order of adds, and parity with the real
#: data planes is tested); above, at once (one table rebuild, not one per server).
BULK_ADD_ABOVE = 64


def ecmp_buckets(n_servers: int) -> int:
    """ECMP / untracked-flow buckets: 1,024 (the core's default) up to 128 servers, else 8 per
    server rounded up to a power of two, as VPP's lb_rl and lb_rl_host size them (every server
    gets buckets, and the weighted table's shares stay within 1/8 of a server's)."""
    return max(1024, 1 << (8 * n_servers - 1).bit_length())


def make_dataplane(n_servers: int, core_policy: str, lb: LbConfig, seed: int) -> DataPlane:
    """One LB's data-plane core: the C core (vpp_plugin/core) through its cffi binding
    :class:`simulator.dataplane.DataPlaneCore` -- there is no other implementation. Raises
    UserError telling how to build it when the compiled module is missing."""
    try:
        from simulator.dataplane import DataPlaneCore
    except ImportError as exc:
        raise UserError(str(exc)) from None
    return DataPlaneCore(n_servers, table_size=lb.table_size, reservoir_size=lb.reservoir_size,
                         ecmp_buckets=ecmp_buckets(n_servers),
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
                     controller: Any = None, recorder: RecorderFactory | None = None) -> Simulation:
    """Wire a Simulation from the config (graph, traffic, policy, cores); not yet run.

    ``controller`` replaces the policy built from ``cfg.policy`` (it must offer ``core_policy``,
    ``static_weights(cores)`` and the Controller protocol): how learned policies are injected
    without the simulator importing agents. ``recorder``: see :class:`Simulation` (default:
    every request and step kept in memory)."""
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
        if len(servers) > BULK_ADD_ABOVE and hasattr(dp, "add_servers"):
            dp.add_servers(weights)  # one table rebuild instead of one per server
        else:
            for i, w in enumerate(weights):
                dp.add_server(i, w)
        dps.append(dp)
    salt = int(s_salt.generate_state(1)[0])
    return Simulation(cfg, graph, source, dps, policy, rng=np.random.default_rng(s_cli),
                      ecmp_salt=salt, log_packets=log_packets, bg_rng=np.random.default_rng(s_bg),
                      io_rng=np.random.default_rng(s_io), recorder=recorder)


def effective_capacities(cfg: ExperimentConfig, cores: list[float]) -> list[float]:
    """Each server's saturated service rate under cfg.effects (its hidden effects: speed, SMT;
    not background load, contention or shared resources): the static weights ``sed_true``
    uses, which a perfect learner of static weights would find."""
    from simulator.server import effects_by_server, saturated_rate

    eff = effects_by_server(cfg.effects, len(cores))
    return [saturated_rate(c, eff.get(i)) for i, c in enumerate(cores)]


def run_experiment(cfg: ExperimentConfig, *, progress: bool = True, pcap_path: str | None = None,
                   log_packets: bool = False, controller: Any = None,
                   out_dir: str | Path | None = None) -> SimResult:
    """Run one simulated experiment. ``pcap_path`` writes every modelled packet as a pcap;
    ``log_packets`` keeps Packet objects in ``result.extra['packets']`` (tests); ``controller``
    as in :func:`build_simulation`.

    With ``out_dir`` (an existing directory) the requests and steps tables stream to
    out_dir/requests.parquet and steps.parquet while the run goes on (memory does not grow with
    the run's length; the JCT statistics are read back from the file) and the result's
    ``requests``/``steps`` are None; without it both tables are kept in memory and returned.
    Packet logs (``log_packets``, ``pcap_path``) are held in memory either way."""
    t_wall = time.perf_counter()
    want_log = log_packets or pcap_path is not None
    recorder = None if out_dir is None else partial(ParquetRecorder, out_dir=Path(out_dir))
    sim = build_simulation(cfg, log_packets=want_log, controller=controller, recorder=recorder)
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
    """Summary of a finished Simulation, with the requests and steps tables if its recorder
    kept them in memory (a streaming recorder writes and closes its files here).

    Counts (arrived/completed/dropped/in_flight) cover the whole run: a request is completed if
    its last response byte reached the client by the end, dropped if refused/reset/unroutable,
    in flight otherwise (so arrived = completed + dropped + in_flight exactly). Statistics (JCT
    percentiles, throughput, per-server figures) cover requests sent at or after warmup_s and the
    window [warmup_s, duration_s]; the JCT mean is correctly rounded and the percentiles are
    numpy's linear ones, exact whether the recorder kept the JCTs or streamed them to disk
    (:mod:`simulator.jct_stats`). ``jain_fairness`` is Jain's index (sum x)^2 / (n sum x^2) of
    the per-server busy fractions (each already normalised by the server's cores)."""
    cfg = sim.cfg
    end, warm = cfg.duration_s, cfg.warmup_s
    with small_pages():  # the tables' columns are concatenated here: large, fresh arrays
        requests, steps = sim.recorder.close()
    stats = sim.recorder.stats
    jct = sim.recorder.measured_jct  # read twice or more: once for the mean, passes for quantiles
    p50, p90, p99 = linear_quantiles(jct, stats.measured, (0.5, 0.9, 0.99))
    window = end - warm
    per_server = []
    busy = []
    for i, s in enumerate(sim.servers):
        b = s.busy_area / window
        busy.append(b)
        per_server.append({"id": i, "completed": int(stats.measured_per_server[i]),
                           "busy_fraction": b, "mean_jobs": s.jobs_area / window,
                           "cores": s.cores, "refused": s.refused})
    bx = np.array(busy)
    jain = jain_index(bx)
    summary: dict[str, Any] = {
        "arrived": stats.arrived,
        "completed": stats.completed,
        "dropped": stats.dropped,
        "in_flight": stats.in_flight,
        "jct_mean_s": exact_mean(jct),
        "jct_p50_s": p50,
        "jct_p90_s": p90,
        "jct_p99_s": p99,
        "throughput_rps": float(stats.measured / window),
        "jain_fairness": jain,
        "sim_time_s": float(end),
        "wall_s": float(wall_s),
        "events": int(sim.events),
        "packets": int(sim.n_packets),
        "per_server": per_server,
        "seed": cfg.seed,
        "policy": cfg.policy.name,
        "warmup_s": float(warm),
        "measured": stats.measured,
        "misrouted_packets": int(sum(lb.misrouted for lb in sim.lbs)),
        "link_drops": int(sum(lk.drops for lk in sim.links.values())),
        "core": type(sim.lbs[0].dp).__name__,
    }
    finite_or_none(summary)
    return SimResult(summary=summary, requests=requests, steps=steps)
