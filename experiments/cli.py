"""The ``marllb`` command line.

::

    marllb sim run CONFIG.yaml [--out DIR] [--set key=value ...] [--plot] [--pcap FILE] [--no-progress]
    marllb sim sweep CONFIG.yaml --policies sed,ecmp,... [--seeds 0,1] --out DIR [--set ...] [--no-plot]
    marllb plot DIR [DIR ...] [--out PNG_DIR]
    marllb topo list | marllb topo show SPEC
    marllb hil up CONFIG.yaml [--set ...] | marllb hil down | marllb hil status | marllb hil calibrate
    marllb hil run CONFIG.yaml [--out DIR] [--set ...] [--keep-up]
    marllb hil compare CONFIG.yaml --out DIR [--policies ...] [--seeds ...] [--calibrate]
    marllb hil controller --shm PATH --policy NAME|--checkpoint PATH --servers HOST:PORT,... [...]
    marllb train CONFIG.yaml [--algo qmix|isac|ssac|fairness] [--episodes N] [--seed S] [--workers N]
                 [--backend local|ray] [--ray-address ADDR] [--resume] [--out DIR] [--hp FIELD=VALUE ...]
    marllb eval CONFIG.yaml [--policies sed,ecmp,...] [--checkpoint PATH ...] [--seeds ...]
                [--loads ...] [--workers N] [--backend local|ray] [--ray-address ADDR] --out DIR
    marllb sweep SWEEP.yaml [--out DIR] [--quick] [--checkpoint LABEL=PATH ...] [--workers N] [--backend ...]
    marllb report SWEEP_DIR [...]
    marllb bench [NAME [ARGS ...]]   (runs bench/NAME/run.py ARGS; no NAME: list them)

User errors (bad config, missing file, bad ``--set``) print one message on stderr and exit 2,
with no traceback.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from simulator.config import POLICY_NAMES, ExperimentConfig, UserError, load_config

__all__ = ["main", "build_parser"]

log = logging.getLogger("marllb")

EXIT_USER_ERROR = 2


# --------------------------------------------------------------------------------------------
# output
# --------------------------------------------------------------------------------------------

def _ms(x: Any) -> str:
    return "-" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{x * 1e3:.1f}"


def _num(x: Any, fmt: str = "{:.3f}") -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "-"
    return fmt.format(x)


def print_summary_table(rows: Sequence[tuple[str, dict[str, Any]]], *, per_server: bool) -> None:
    """A rich table of summaries (one row per run), plus per-server rows for a single run."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if not console.is_terminal:  # files and pipes: do not squeeze 15 columns into 80
        console = Console(width=160)
    table = Table(title="MARLLB simulation summary", title_justify="left")
    for col in ("run", "policy", "seed", "arrived", "completed", "dropped", "in flight",
                "JCT mean ms", "p50 ms", "p90 ms", "p99 ms", "thr req/s", "Jain", "sim s", "wall s"):
        table.add_column(col, justify="left" if col in ("run", "policy") else "right")
    for name, s in rows:
        table.add_row(name, str(s.get("policy")), str(s.get("seed")), str(s.get("arrived")),
                      str(s.get("completed")), str(s.get("dropped")), str(s.get("in_flight")),
                      _ms(s.get("jct_mean_s")), _ms(s.get("jct_p50_s")), _ms(s.get("jct_p90_s")),
                      _ms(s.get("jct_p99_s")), _num(s.get("throughput_rps"), "{:.1f}"),
                      _num(s.get("jain_fairness")), _num(s.get("sim_time_s"), "{:.1f}"),
                      _num(s.get("wall_s"), "{:.1f}"))
    console.print(table)
    if per_server and len(rows) == 1:
        srv = Table(title="per server", title_justify="left")
        for col in ("id", "completed", "busy fraction", "mean jobs"):
            srv.add_column(col, justify="right")
        for p in rows[0][1].get("per_server", []):
            srv.add_row(str(p.get("id")), str(p.get("completed")), _num(p.get("busy_fraction")),
                        _num(p.get("mean_jobs"), "{:.2f}"))
        console.print(srv)


# --------------------------------------------------------------------------------------------
# commands
# --------------------------------------------------------------------------------------------

def _load(path: str, overrides: Sequence[str]) -> ExperimentConfig:
    from experiments.runs import check_topology

    cfg = load_config(path, list(overrides))
    check_topology(cfg, path)
    return cfg


def cmd_sim_run(args: argparse.Namespace) -> int:
    from experiments.runs import run_name, run_one

    cfg = _load(args.config, args.set)
    out = Path(args.out) if args.out else Path("runs") / run_name(cfg)
    result = run_one(cfg, out, progress=not args.no_progress, pcap_path=args.pcap, plot=args.plot)
    print_summary_table([(out.name, result.summary)], per_server=True)
    print(f"run directory: {out}")
    if args.plot:
        from experiments.plots import PLOT_FILES

        print("plots: " + ", ".join(str(out / f) for f in PLOT_FILES if (out / f).exists()))
    return 0


def _split_list(text: str, what: str) -> list[str]:
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise UserError(f"--{what}: empty list")
    return items


def cmd_sim_sweep(args: argparse.Namespace) -> int:
    from experiments.plots import plot_runs
    from experiments.runs import load_run, run_one

    policies = _split_list(args.policies, "policies")
    unknown = [p for p in policies if p not in POLICY_NAMES]
    if unknown:
        raise UserError(f"--policies: unknown policy {unknown[0]!r}; known: {', '.join(POLICY_NAMES)}")
    try:
        seeds = [int(s) for s in _split_list(args.seeds, "seeds")] if args.seeds else [None]
    except ValueError:
        raise UserError(f"--seeds {args.seeds!r}: expected comma-separated integers") from None
    # Resolve and validate every config before running any of them.
    plan: list[tuple[str, ExperimentConfig]] = []
    for policy in policies:
        for seed in seeds:
            extra = [f"policy.name={policy}"] + ([] if seed is None else [f"seed={seed}"])
            cfg = _load(args.config, [*args.set, *extra])
            plan.append((policy if seed is None else f"{policy}__seed{seed}", cfg))
    out = Path(args.out)
    rows = []
    for i, (name, cfg) in enumerate(plan, 1):
        print(f"sweep run {i}/{len(plan)}: {name}", file=sys.stderr)
        result = run_one(cfg, out / name, progress=not args.no_progress)
        rows.append((name, result.summary))
    print_summary_table(rows, per_server=False)
    if not args.no_plot:
        written = plot_runs([load_run(out / name) for name, _ in plan], out)
        print("plots: " + ", ".join(str(p) for p in written))
    print(f"sweep directory: {out}")
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    from experiments.plots import plot_runs
    from experiments.runs import load_run
    from experiments.sweep_plots import plot_sweep

    sweeps = [d for d in args.dirs if (Path(d) / "sweep.json").is_file()]
    if sweeps:
        if len(sweeps) != len(args.dirs) or (args.out and len(sweeps) > 1):
            raise UserError("marllb plot: give either run directories or one sweep directory per call "
                            "(--out only with a single sweep)")
        for d in sweeps:
            for p in plot_sweep(d, args.out):
                print(p)
        return 0
    runs = [load_run(d) for d in args.dirs]
    out = Path(args.out) if args.out else (Path(args.dirs[0]) if len(args.dirs) == 1 else Path("plots"))
    written = plot_runs(runs, out)
    for p in written:
        print(p)
    return 0


def cmd_topo_list(args: argparse.Namespace) -> int:
    from topologies import PRESETS

    for p in PRESETS.values():
        params = ", ".join(f"{k}={v}" for k, v in p.defaults.items())
        print(f"{p.name:11s} {p.description}\n{'':11s} params: {params}")
    return 0


def cmd_topo_show(args: argparse.Namespace) -> int:
    import topologies
    from simulator.config import TopologyConfig

    g = topologies.build(TopologyConfig(preset=args.spec))
    print(f"{g.graph['preset']}: {g.number_of_nodes()} nodes, {g.number_of_edges()} links; "
          f"params {g.graph['params']}")
    print(f"clients: {len(topologies.clients(g))}, LBs: {len(topologies.lbs(g))}, "
          f"switches: {len(topologies.switches(g))}")
    for s in topologies.servers(g):
        d = g.nodes[s]
        print(f"  {s}: cores={d['cores']:g} workers={d['workers']} backlog={d['backlog']}")
    return 0


def cmd_hil_controller(args: argparse.Namespace) -> int:
    from hil.controller import run_from_args

    return run_from_args(args)


def cmd_hil_up(args: argparse.Namespace) -> int:
    from hil.testbed.plan import make_plan
    from hil.testbed.testbed import up

    cfg = _load(args.config, args.set)
    plan = make_plan(cfg, args.config)
    run = up(cfg, plan, start_lbs=not args.no_lbs)
    print(f"testbed up: {len(plan.clients)} client(s), {len(plan.lbs)} LB(s), {len(plan.servers)} "
          f"server(s), VIP {plan.vip}:{plan.port}")
    for s in plan.servers:
        print(f"  {s.ns}: {s.ip} cores={s.cores:g} quota={s.quota_cpus:.3f} CPU "
              f"workers={s.workers} backlog={s.backlog}")
    for lb in run.procs.get("lb", []):
        print(f"  mlb-lb{lb['index']}: lb_rl_host pid {lb['pid']}, shm {lb['shm']}")
    print(f"try: ip netns exec {plan.clients[0].ns} curl 'http://{plan.vip}/work.php?n=100000&b=100' -i")
    return 0


def cmd_hil_down(args: argparse.Namespace) -> int:
    from hil.testbed.testbed import down

    removed = down()
    print(f"testbed down: removed {len(removed['namespaces'])} namespace(s), "
          f"{len(removed['cgroups'])} cgroup(s), {len(removed['processes'])} process(es), "
          f"{len(removed['shm'])} shm file(s)")
    return 0


def cmd_hil_status(args: argparse.Namespace) -> int:
    import json

    from hil.testbed.testbed import status

    print(json.dumps(status(), indent=1, default=str))
    return 0


def cmd_hil_calibrate(args: argparse.Namespace) -> int:
    from hil.testbed.calibrate import calibrate, calibration_path

    cal = calibrate(args.cpu_per_core)
    lo, hi = cal["rate_spread"]
    under = "no CPU quota" if args.cpu_per_core is None else f"a worker's quota of {args.cpu_per_core:g} CPU"
    print(f"PHP under {under}: {cal['iters_per_cpu_s']:.4g} loop iterations per CPU-second "
          f"(median of {len(cal['samples'])} requests of n={cal['n_iter']}; spread {lo:.4g}..{hi:.4g})")
    print(f"stored in {calibration_path()}")
    return 0


def cmd_hil_run(args: argparse.Namespace) -> int:
    from experiments.runs import run_name
    from hil.swap import check_combination, run_swap
    from hil.testbed.plan import make_plan

    cfg = _load(args.config, args.set)
    if check_combination(cfg) == "testbed":
        make_plan(cfg, args.config)  # a config this machine cannot host: the error names the file
    out = Path(args.out) if args.out else Path("runs") / ("hil_" + run_name(cfg))
    result = run_swap(cfg, out, progress=not args.no_progress, keep_up=True if args.keep_up else None)
    print_summary_table([(out.name, result.summary)], per_server=True)
    print(f"run directory: {out}")
    return 0


def cmd_hil_parity(args: argparse.Namespace) -> int:
    from hil.parity import main

    return main(args)


def cmd_hil_compare(args: argparse.Namespace) -> int:
    from hil.compare import compare
    from hil.swap import check_combination, run_swap
    from hil.testbed.plan import make_plan

    cfg = _load(args.config, args.set)
    testbed = check_combination(cfg) == "testbed"
    if testbed:
        make_plan(cfg, args.config)
    elif args.calibrate:
        raise UserError("--calibrate fits the real servers' speed; this config's servers are simulated "
                        f"(hil.servers: {cfg.hil.servers})")
    policies = _split_list(args.policies, "policies") if args.policies else [cfg.policy.name]
    seeds = [int(x) for x in _split_list(args.seeds, "seeds")] if args.seeds else [cfg.seed]
    from hil.testbed.dataplane import ORACLES

    oracles = [p for p in policies if p in ORACLES]
    if oracles:
        raise UserError(f"--policies: {', '.join(oracles)} read true server state and exist only in the "
                        "simulator; the testbed runs ecmp, wcmp, awcmp, lsq, sed, lsq2, sed2 and agent")

    def run_real(c: ExperimentConfig, out: Path) -> Path:  # whatever the config's hil section swaps in
        run_swap(c, out, progress=False, keep_up=True)
        return out

    from hil.testbed.testbed import down, load_state

    was_up = load_state() is not None
    try:
        report = compare(cfg, Path(args.out), policies=policies, seeds=seeds, calibrate=args.calibrate,
                         fitted_cores=args.fitted_cores, run_real=run_real, progress=not args.no_progress)
    finally:
        if not was_up:
            down()
    print(f"report: {Path(args.out) / 'report.md'}")
    if isinstance(report, dict) and report.get("summary_lines"):
        print("\n".join(report["summary_lines"]))
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from experiments.train import train_from_config

    cfg = _load(args.config, args.set)
    load_range = None
    if args.load_range:
        try:
            lo, hi = (float(x) for x in _split_list(args.load_range, "load range"))
        except ValueError:
            raise UserError(f"--load-range {args.load_range!r}: expected LO,HI") from None
        load_range = (lo, hi)
    rates = None
    if args.rates:
        try:
            rates = [float(x) for x in _split_list(args.rates, "rates")]
        except ValueError:
            raise UserError(f"--rates {args.rates!r}: expected comma-separated numbers") from None
    run_dir = train_from_config(cfg, algo=args.algo, episodes=args.episodes, seed=args.seed,
                                out=args.out, reward=args.reward, load_range=load_range, rates=rates,
                                hp=args.hp, workers=args.workers, backend=args.backend,
                                ray_address=args.ray_address, resume=args.resume,
                                progress=not args.no_progress, prev_action=args.prev_action,
                                continuous=args.continuous, action_scale=args.action_scale,
                                features=args.features,
                                time_budget_s=None if args.time_budget_min is None else 60.0 * args.time_budget_min,
                                snapshot_every=args.snapshot_every, torch_threads=args.torch_threads)
    print(f"run directory: {run_dir}  (checkpoint: {run_dir / 'last.pt'})")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from experiments.evaluate import DEFAULT_SEEDS, plan_eval, run_eval

    cfg = _load(args.config, args.set)
    policies = _split_list(args.policies, "policies") if args.policies else []
    try:
        seeds = [int(s) for s in _split_list(args.seeds, "seeds")] if args.seeds else list(DEFAULT_SEEDS)
    except ValueError:
        raise UserError(f"--seeds {args.seeds!r}: expected comma-separated integers") from None
    try:
        loads = [float(x) for x in _split_list(args.loads, "loads")] if args.loads else None
    except ValueError:
        raise UserError(f"--loads {args.loads!r}: expected comma-separated numbers") from None
    if loads and min(loads) <= 0:
        raise UserError(f"--loads {args.loads!r}: loads must be > 0")
    points = plan_eval(cfg, policies, args.checkpoint, seeds, loads)
    if args.workers < 0:
        raise UserError("--workers must be >= 0")
    _, table = run_eval(points, args.out, progress=not args.no_progress, workers=args.workers,
                        backend=args.backend, ray_address=args.ray_address)
    _print_comparison(table)
    print(f"eval directory: {args.out}  (runs.csv, comparison.csv)")
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from experiments.sweep import load_sweep, run_sweep

    extra = {}
    for item in args.checkpoint:
        label, sep, cp = item.partition("=")
        if not sep or not label or not cp:
            raise UserError(f"--checkpoint {item!r}: expected LABEL=PATH")
        extra[label] = cp
    spec = load_sweep(args.sweep, quick=args.quick, extra_checkpoints=extra)
    out = Path(args.out) if args.out else Path("runs") / "sweeps" / (spec.name + ("_quick" if args.quick else ""))
    start = time.monotonic()
    outcome = run_sweep(spec, out, workers=args.workers, backend=args.backend, ray_address=args.ray_address,
                        progress=not args.no_progress)
    print((out / "table.md").read_text())
    print(f"sweep directory: {out}  ({outcome.planned} points: {outcome.skipped} finished before, "
          f"{outcome.ran} run now, {len(outcome.failed)} failed, {time.monotonic() - start:.0f} s wall; "
          "points.parquet, aggregate.parquet, table.md)")
    if outcome.failed:
        for f in outcome.failed:
            print(f"  failed: {f['label']} {f['axes']} seed {f['seed']}: {f['error']} "
                  f"(errors/{f['key']}.json)", file=sys.stderr)
        return 1
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from experiments.report import write_report

    command = "marllb report " + " ".join(args.dirs)
    for d in args.dirs:
        print(write_report(d, command=command))
    return 0


def _print_comparison(table: Any) -> None:
    """The eval comparison table: mean JCT and p90 with 95 % CI half-widths, in ms."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if not console.is_terminal:
        console = Console(width=160)
    t = Table(title="mean over seeds (± 95 % CI half-width)")
    for col in ("policy", "load", "n", "JCT mean ms", "JCT p90 ms", "rps", "jain", "vs best heuristic"):
        t.add_column(col, justify="left" if col == "policy" else "right")
    for row in table.itertuples():
        load = "-" if row.load is None or (isinstance(row.load, float) and not math.isfinite(row.load)) \
            else f"{row.load:g}"
        ci = (lambda v: "" if not math.isfinite(v) else f" ± {v * 1e3:.1f}")
        t.add_row(row.label, load, str(row.n), f"{_ms(row.jct_mean_s)}{ci(row.jct_mean_ci95_s)}",
                  f"{_ms(row.jct_p90_s)}{ci(row.jct_p90_ci95_s)}", _num(row.throughput_rps, "{:.1f}"),
                  _num(row.jain_fairness), _num(100 * row.vs_best_heuristic, "{:+.1f} %"))
    console.print(t)


def _benchmarks() -> dict[str, Path]:
    """bench/<name>/run.py of the source checkout this package runs from."""
    root = Path(__file__).resolve().parents[1] / "bench"
    if not root.is_dir():
        raise UserError(f"no benchmarks at {root}: they live in the source checkout's bench/ "
                        "(pip install -e . from a clone), not in an installed wheel")
    return {p.parent.name: p for p in sorted(root.glob("*/run.py"))}


def cmd_bench(args: argparse.Namespace) -> int:
    import subprocess

    scripts = _benchmarks()
    if args.name is None:
        import ast

        for name, path in scripts.items():
            doc = ast.get_docstring(ast.parse(path.read_text())) or ""
            first = " ".join(doc.split("\n\n")[0].split()).split(". ")[0].rstrip(".")
            print(f"{name:12s} {first}")
        return 0
    if args.name not in scripts:
        raise UserError(f"unknown benchmark {args.name!r}; known: {', '.join(scripts)}")
    cmd = [sys.executable, str(scripts[args.name]), *args.args]
    log.info("running %s", " ".join(cmd))
    return subprocess.call(cmd, cwd=scripts[args.name].parents[2])


# --------------------------------------------------------------------------------------------
# parser
# --------------------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="marllb",
        description="MARLLB: simulate, train and evaluate network load-balancing policies.")
    p.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv: debug)")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    sim = sub.add_parser("sim", help="simulated experiments")
    sim_sub = sim.add_subparsers(dest="sim_command", required=True, metavar="SIM_COMMAND")

    run = sim_sub.add_parser("run", help="run one experiment and write the run directory")
    run.add_argument("config", metavar="CONFIG.yaml")
    run.add_argument("--out", metavar="DIR",
                     help="run directory (default runs/<name>__<policy>__<seed>__<unix_time>)")
    run.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                     help="override a config field, e.g. --set policy.name=ecmp (repeatable)")
    run.add_argument("--plot", action="store_true", help="also write PNG plots into DIR")
    run.add_argument("--pcap", metavar="FILE", help="write the simulated packets to a pcap file")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    run.set_defaults(func=cmd_sim_run)

    sweep = sim_sub.add_parser("sweep", help="run one config under several policies (and seeds), then plot")
    sweep.add_argument("config", metavar="CONFIG.yaml")
    sweep.add_argument("--policies", required=True, metavar="A,B,...",
                       help=f"comma-separated policy names from: {', '.join(POLICY_NAMES)}")
    sweep.add_argument("--seeds", metavar="S1,S2,...", help="comma-separated seeds (default: the config's)")
    sweep.add_argument("--out", required=True, metavar="DIR", help="sweep directory: one run dir per policy")
    sweep.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    sweep.add_argument("--no-plot", action="store_true", help="skip the comparison plots")
    sweep.add_argument("--no-progress", action="store_true")
    sweep.set_defaults(func=cmd_sim_sweep)

    plot = sub.add_parser("plot", help="plot finished runs: JCT CDF, percentile bars, server load")
    plot.add_argument("dirs", nargs="+", metavar="DIR")
    plot.add_argument("--out", metavar="PNG_DIR",
                      help="where to write PNGs (default: DIR for one run, ./plots for several)")
    plot.set_defaults(func=cmd_plot)

    topo = sub.add_parser("topo", help="list or inspect topology presets")
    topo_sub = topo.add_subparsers(dest="topo_command", required=True, metavar="TOPO_COMMAND")
    topo_sub.add_parser("list", help="list presets and their parameters").set_defaults(func=cmd_topo_list)
    show = topo_sub.add_parser("show", help="build a spec like 'moderate,workers=64' and describe it")
    show.add_argument("spec")
    show.set_defaults(func=cmd_topo_show)

    hil = sub.add_parser("hil", help="hardware-in-the-loop: the local testbed and the real-time controller")
    hil_sub = hil.add_subparsers(dest="hil_command", required=True, metavar="HIL_COMMAND")
    hup = hil_sub.add_parser("up", help="build the netns testbed for a config (idempotent; root)")
    hup.add_argument("config", metavar="CONFIG.yaml")
    hup.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    hup.add_argument("--no-lbs", action="store_true", help="network and servers only")
    hup.set_defaults(func=cmd_hil_up)
    hil_sub.add_parser("down", help="remove everything of the testbed (safe to repeat)").set_defaults(
        func=cmd_hil_down)
    hil_sub.add_parser("status", help="what is up, process liveness, CPU quotas, calibration").set_defaults(
        func=cmd_hil_status)
    hcal = hil_sub.add_parser("calibrate", help="measure PHP loop iterations per CPU-second on this machine "
                              "(`hil run` does it on first use for its cpu_per_core)")
    hcal.add_argument("--cpu-per-core", type=float, metavar="F",
                      help="under a testbed worker's CPU quota of F CPUs (default: no quota)")
    hcal.set_defaults(func=cmd_hil_calibrate)
    hrun = hil_sub.add_parser("run", help="run a config with the parts its hil section names real "
                              "(traffic, lb, servers, agent); writes the run contract + hil.json")
    hrun.add_argument("config", metavar="CONFIG.yaml")
    hrun.add_argument("--out", metavar="DIR", help="run directory (default runs/hil_<name>__...)")
    hrun.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    hrun.add_argument("--keep-up", action="store_true", help="leave the testbed up afterwards")
    hrun.add_argument("--no-progress", action="store_true")
    hrun.set_defaults(func=cmd_hil_run)
    hpar = hil_sub.add_parser("parity", help="replay a pcap through the simulator's core and lb_rl_host; "
                              "identical server choices for every packet is the pass")
    hpar.add_argument("pcap", metavar="PCAP", help="a simulator --pcap, or any capture of TCP flows to the VIP")
    hpar.add_argument("--weights", required=True, metavar="W0,W1,...", help="static weights, one per server")
    hpar.add_argument("--policy", default="sed", choices=("ecmp", "wcmp", "lsq", "sed", "lsq2", "sed2"))
    hpar.add_argument("--seed", type=int, default=1, help="core seed (both replays)")
    hpar.add_argument("--vip", default="10.0.1.1", help="the VIP (default: the simulator's)")
    hpar.add_argument("--vip-port", type=int, default=80)
    hpar.add_argument("--vpp", action="store_true", help="also replay through VPP with lb_rl (needs VPP_PREFIX)")
    hpar.add_argument("--json", metavar="FILE", help="write the report as JSON")
    hpar.add_argument("--log-dir", default="hil_parity_logs", metavar="DIR", help="lb_rl_host's log and counters")
    hpar.set_defaults(func=cmd_hil_parity)
    hcmp = hil_sub.add_parser("compare", help="the same config simulated and on the testbed; report")
    hcmp.add_argument("config", metavar="CONFIG.yaml")
    hcmp.add_argument("--out", required=True, metavar="DIR")
    hcmp.add_argument("--policies", metavar="A,B,...", help="default: the config's policy")
    hcmp.add_argument("--seeds", metavar="S1,S2,...", help="default: the config's seed")
    hcmp.add_argument("--calibrate", action="store_true",
                      help="fit PHP speed, per-request overhead and server capacities from the real runs; "
                      "rerun the simulator with the speed and overhead")
    hcmp.add_argument("--fitted-cores", action="store_true",
                      help="with --calibrate: the calibrated simulator also takes the fitted server capacities")
    hcmp.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    hcmp.add_argument("--no-progress", action="store_true")
    hcmp.set_defaults(func=cmd_hil_compare)
    ctl = hil_sub.add_parser("controller", help="run a policy against a data plane's shm region")
    from hil.controller import add_arguments as _ctl_arguments

    _ctl_arguments(ctl)
    ctl.set_defaults(func=cmd_hil_controller)

    tr = sub.add_parser("train", help="train QMIX / SAC-GRU on the simulator env")
    tr.add_argument("config", metavar="CONFIG.yaml")
    tr.add_argument("--algo", default="qmix", choices=("qmix", "isac", "ssac", "fairness"),
                    help="fairness: the independent potential-game rule (nothing to learn; "
                         "runs the episodes and writes a checkpoint)")
    tr.add_argument("--episodes", type=int, default=72, help="episodes in total (paper: 72)")
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--reward", default="product", choices=("product", "jain", "variance", "jct"))
    tr.add_argument("--load-range", metavar="LO,HI", help="draw traffic.load uniformly per episode")
    tr.add_argument("--rates", metavar="R1,R2,...",
                    help="draw traffic.rate from these per episode (e.g. a synthetic day's odd hours)")
    tr.add_argument("--hp", action="append", default=[], metavar="FIELD=VALUE",
                    help="override an agent hyperparameter (repeatable), e.g. --hp hidden=64")
    tr.add_argument("--workers", type=int, default=0, help="rollout processes (0: in process)")
    _backend_arguments(tr, "rollout workers")
    tr.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    tr.add_argument("--time-budget-min", type=float, metavar="MIN",
                    help="stop after this much wall time even before --episodes (checkpoint kept)")
    tr.add_argument("--snapshot-every", type=int, default=0, metavar="N",
                    help="also keep OUT/snapshots/ep<N>.pt every N episodes (learning curves)")
    tr.add_argument("--torch-threads", type=int, metavar="N",
                    help="torch threads for the updates (default: torch's); use 1 when several "
                         "trainings share a small machine (oversubscribed updates run ~20x slower)")
    tr.add_argument("--prev-action", action="store_true", help="observation ends with the weights in force")
    tr.add_argument("--continuous", action="store_true", help="Box actions (weights in [1, 2]) instead of levels")
    tr.add_argument("--action-scale", default="absolute", choices=("absolute", "relative"),
                    help="absolute: level a is weight 1 + 0.2a (CIKM'22); relative: the server's static "
                         "weight (cores) x 2^((a-3)/2), ratios up to 5.7x either way of the nominal one")
    tr.add_argument("--features", default="paper", choices=("paper", "robust"),
                    help="observed features per server: paper (the 11 of CIKM'22) or robust (those and "
                         "geometric mean, median and last-second statistics of each reservoir, 19)")
    tr.add_argument("--out", metavar="DIR", help="run directory (default runs/<name>__<algo>__<seed>__<time>)")
    tr.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    tr.add_argument("--no-progress", action="store_true")
    tr.set_defaults(func=cmd_train)

    ev = sub.add_parser("eval", help="compare heuristics and checkpoints over held-out seeds and loads")
    ev.add_argument("config", metavar="CONFIG.yaml")
    ev.add_argument("--policies", default="", metavar="P1,P2", help="heuristics, e.g. sed,ecmp,gsq")
    ev.add_argument("--checkpoint", action="append", default=[], metavar="PATH",
                    help="a trained checkpoint, run as policy: agent (repeatable)")
    ev.add_argument("--seeds", metavar="S1,S2", help="held-out seeds (default 1000,1001,1002)")
    ev.add_argument("--loads", metavar="L1,L2", help="traffic.load values (default: the config's)")
    ev.add_argument("--out", required=True, metavar="DIR")
    ev.add_argument("--workers", type=int, default=0, help="run the points in N processes (0: in process)")
    _backend_arguments(ev, "eval points")
    ev.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    ev.add_argument("--no-progress", action="store_true")
    ev.set_defaults(func=cmd_eval)

    sw = sub.add_parser("sweep", help="policies x axes x seeds from a sweep file; resumable; local pool or Ray")
    sw.add_argument("sweep", metavar="SWEEP.yaml")
    sw.add_argument("--out", metavar="DIR", help="default runs/sweeps/<name>[_quick]")
    sw.add_argument("--quick", action="store_true", help="the sweep file's reduced variant (its 'quick' section)")
    sw.add_argument("--checkpoint", action="append", default=[], metavar="LABEL=PATH",
                    help="add a trained agent to the sweep's policies (repeatable)")
    sw.add_argument("--workers", type=int, default=1, help="points run at the same time (default 1)")
    _backend_arguments(sw, "points")
    sw.add_argument("--no-progress", action="store_true")
    sw.set_defaults(func=cmd_sweep)

    rp = sub.add_parser("report", help="a Markdown results page of a finished sweep (SWEEP_DIR/report.md)")
    rp.add_argument("dirs", nargs="+", metavar="SWEEP_DIR")
    rp.set_defaults(func=cmd_report)

    be = sub.add_parser("bench", help="run a benchmark script bench/NAME/run.py (no NAME: list them)",
                        description="Benchmarks print ratios against a reference measured in the same run "
                                    "and write JSON under bench/out/. Arguments after NAME go to the script "
                                    "(marllb bench NAME -- --help for its options).")
    be.add_argument("name", nargs="?", metavar="NAME")
    be.add_argument("args", nargs=argparse.REMAINDER, metavar="ARGS")
    be.set_defaults(func=cmd_bench)
    return p


def _backend_arguments(parser: argparse.ArgumentParser, what: str) -> None:
    """``--backend local|ray`` and ``--ray-address`` for a command that takes ``--workers``."""
    parser.add_argument("--backend", default="local", choices=("local", "ray"),
                        help=f"where the --workers {what} run: local processes, or Ray actors "
                             "(pip install 'marllb[ray]'); same seeds give the same results")
    parser.add_argument("--ray-address", metavar="ADDR",
                        help="with --backend ray: the cluster to use ('auto', HOST:PORT, "
                             "ray://HOST:10001); default: start a local Ray with --workers CPUs")


def _setup_logging(verbosity: int) -> None:
    from rich.console import Console
    from rich.logging import RichHandler

    level = logging.WARNING if verbosity == 0 else logging.INFO if verbosity == 1 else logging.DEBUG
    handler = RichHandler(show_path=False, show_time=verbosity > 1,
                          console=Console(stderr=True))
    logging.basicConfig(level=level, format="%(message)s", handlers=[handler], force=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``marllb`` console script; returns the exit code."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    _setup_logging(args.verbose)
    try:
        return int(args.func(args))
    except UserError as exc:
        print(f"marllb: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError) as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"marllb: error: {where}{exc.strerror or exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("marllb: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
