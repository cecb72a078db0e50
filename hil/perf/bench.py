"""``marllb bench throughput`` and ``marllb bench latency``: the NDR/PDR search and latency at
fractions of the PDR, against ``lb_rl_host`` on the local bench bed (the local generator
``mlb_gen``) or against a device under test driven by a TRex server (``--trex HOST[:PORT]``).

    marllb bench throughput [--profile established|new|lifecycle|imix|FILE.yaml]... [--rl]
    marllb bench latency    [--profile ...] [--pdr PPS | --from THROUGHPUT.json] [--loads 0.1,0.5,0.9]

Both write JSON (the environment, every trial, the results) and plots next to it, and show
progress. ``--rl`` measures every case twice in the same run: static weights, and the
real-time controller rewriting the weights every 0.25 s (the cost of RL control).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

from hil.perf.search import SearchResult, Target, Trial, search
from hil.traffic.profile import ETH_BYTES, TrafficProfile, compile_profile, load_profile
from hil.traffic.program import Program
from simulator.config import UserError

__all__ = ["main", "resolve_profile", "BUILTIN_PROFILES"]

log = logging.getLogger("marllb.hil.perf")
PROFILE_DIR = Path(__file__).resolve().parents[1] / "traffic" / "profiles"
BUILTIN_PROFILES = sorted(p.stem for p in PROFILE_DIR.glob("*.yaml"))
REPO = Path(__file__).resolve().parents[2]


def resolve_profile(name: str) -> Path:
    """A built-in profile's name or a profile file."""
    if name in BUILTIN_PROFILES:
        return PROFILE_DIR / f"{name}.yaml"
    p = Path(name)
    if not p.is_file():
        raise UserError(f"--profile {name}: neither a built-in profile ({', '.join(BUILTIN_PROFILES)}) "
                        "nor a file")
    return p


def profile_of(spec: str) -> TrafficProfile:
    """--profile: a built-in name or a profile YAML; ``config:FILE`` the traffic of an experiment
    config (hil.traffic.derive.profile_from_config); ``pcap:FILE`` (or a .pcap/.pcapng file)
    a profile fitted to a capture's TCP flows."""
    from hil.traffic.derive import profile_from_config, profile_from_pcap

    kind, sep, rest = spec.partition(":")
    if sep and kind == "config":
        from simulator.config import load_config

        return profile_from_config(load_config(resolve_profile(rest)))
    if sep and kind == "pcap":
        return profile_from_pcap(resolve_profile(rest))
    if Path(spec).suffix in (".pcap", ".pcapng"):
        return profile_from_pcap(resolve_profile(spec))
    return load_profile(resolve_profile(spec))


def _load_profiles(args: argparse.Namespace) -> list[TrafficProfile]:
    """Every --profile, validated before anything starts."""
    profs = [profile_of(spec) for spec in args.profile or ["established", "new"]]
    for p in profs:  # tuple splits and the like: compiling once finds them
        compile_profile(p)
    return profs


def _compile(profs: list[TrafficProfile], runner: Any) -> list[Program]:
    """The programs, addressed to the device: on the bench bed, flows go to the bed's VIP
    whatever VIP a profile names (a profile fitted to a capture keeps the capture's)."""
    vip = getattr(runner, "vip", None)
    out = []
    for p in profs:
        if vip is not None and p.vip != vip:
            log.warning("profile %r: its flows go to the bench bed's VIP %s (not %s)", p.name, vip, p.vip)
            p = p.model_copy(update={"vip": vip})
        out.append(compile_profile(p, dst_mac=runner.dst_mac, src_mac=runner.src_mac))
    return out


# -- environment -------------------------------------------------------------------------------

def environment(extra: dict[str, Any]) -> dict[str, Any]:
    """Versions, CPU, kernel, git commit: the block every result file starts with (the bench
    scripts' machine block, plus the time and the kernel)."""
    from bench.machine import machine_info  # the benchmarks run from the source checkout

    return machine_info(time_utc=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                        kernel=platform.release(), **extra)


# -- the two ways to run a trial ---------------------------------------------------------------

class _Local:
    """The bench bed with lb_rl_host: one measurer per (profile, control) case."""

    def __init__(self, args: argparse.Namespace):
        from hil.hostbin import host_binary
        from hil.perf.bed import PerfBed

        if os.geteuid() != 0:
            raise UserError("the local bench needs root (network namespaces); or use --trex HOST[:PORT]")
        self.args = args
        self.exe = host_binary()
        from hil.traffic.localgen import generator_binary

        self.gen_exe = generator_binary()  # build both before the bed goes up
        self.bed = PerfBed(args.servers).up()
        self.dst_mac, self.src_mac = self.bed.mac[self.bed.lb], self.bed.mac[self.bed.gen]
        self.vip = self.bed.vip

    def measurer(self, program: Program, rl: bool) -> Any:
        from hil.perf.local import ControllerSpec, LocalMeasurer

        ctl = ControllerSpec(policy=self.args.controller_policy, checkpoint=self.args.checkpoint) if rl else None
        weights = [float(w) for w in self.args.weights.split(",")] if self.args.weights else ()
        return LocalMeasurer(self.bed, program, self.exe, policy=self.args.policy, weights=weights,
                             controller=ctl, flow_timeout_s=self.args.flow_timeout,
                             rx_ring=self.args.rx_ring, lb_cpus=self.args.lb_cpus)

    def describe(self) -> dict:
        return {"target": "lb_rl_host on the local bench bed", "bed": self.bed.describe(),
                "lb_binary": str(self.exe), "generator": "mlb_gen (AF_PACKET)",
                "lb_rl_host_policy": self.args.policy, "generator_binary": str(self.gen_exe)}

    def close(self) -> None:
        self.bed.down()


class _Trex:
    """A TRex server: port tx_port sends to the device under test, rx_port receives what it
    forwards. The device's reset between trials is ``--reset-cmd`` (run before each trial)."""

    def __init__(self, args: argparse.Namespace):
        from hil.trex.client import connect

        if not args.dut_mac:
            raise UserError("--trex needs --dut-mac MAC (the device under test's MAC on the TRex tx port)")
        self.args = args
        t0 = time.monotonic()
        self.drv = connect(args.trex, client=args.trex_client, timeout_s=5.0)
        self.client_info = self.drv.hello()  # client and scapy versions, for the result file
        log.info("connected to TRex at %s in %.1f s", args.trex, time.monotonic() - t0)
        self.dst_mac, self.src_mac = args.dut_mac, args.src_mac

    def measurer(self, program: Program, rl: bool) -> Any:
        if rl:
            raise UserError("--rl with --trex: run the controller next to the device under test and "
                            "compare two runs (the local bench starts it itself)")
        return TrexMeasurer(self.drv, program, [self.args.tx_port], [self.args.rx_port], self.args.reset_cmd)

    def describe(self) -> dict:
        return {"target": f"device under test via TRex at {self.args.trex}", "tx_port": self.args.tx_port,
                "rx_port": self.args.rx_port, "dut_mac": self.args.dut_mac, "client": self.client_info}

    def close(self) -> None:
        self.drv.close()


class TrexMeasurer:
    """One TRex trial: ports reset, ramp-up bursts, then the streams at the load's multiplier;
    sent = opackets of the tx ports, received = ipackets of the rx ports; p99 from the
    latency streams' histograms."""

    def __init__(self, drv: Any, program: Program, tx_ports: list[int], rx_ports: list[int],
                 reset_cmd: str | None = None):
        self.drv, self.program, self.tx, self.rx, self.reset_cmd = drv, program, tx_ports, rx_ports, reset_cmd

    def measure(self, load_pps: float, duration_s: float) -> Trial:
        if self.reset_cmd:
            cp = subprocess.run(shlex.split(self.reset_cmd), capture_output=True, text=True, timeout=60)
            if cp.returncode != 0:
                raise UserError(f"--reset-cmd {self.reset_cmd!r} failed: {cp.stderr.strip()}")
        mult = load_pps / self.program.rate_pps
        r = self.drv.trial(self.program, duration_s, self.tx, self.rx, mult=mult,
                           ramp_up=bool(self.program.ramp_up))
        sent = sum(int(r["ports"][str(p)]["opackets"] or 0) for p in self.tx)
        received = sum(int(r["ports"][str(p)]["ipackets"] or 0) for p in self.rx)
        p99 = None
        for lat in r.get("latency", {}).values():
            q = histogram_percentile(lat.get("histogram") or {}, 99.0)
            if q is not None:
                p99 = q if p99 is None else max(p99, q)
        return Trial(load_pps, duration_s, sent, received, offered_pps=sent / duration_s, p99_us=p99,
                     extra={"trex": r, "mult": mult})


def histogram_percentile(hist: dict, pct: float) -> float | None:
    """The pct-th percentile of a TRex latency histogram ({bucket_low_us: packets}; the bucket's
    lower edge: TRex's buckets are 10 us wide below 100 us, then decades)."""
    items = sorted((float(k), int(v)) for k, v in hist.items() if int(v) > 0)
    total = sum(v for _, v in items)
    if not total:
        return None
    acc = 0
    for low, v in items:
        acc += v
        if acc >= pct / 100 * total:
            return low
    return items[-1][0]


# -- throughput ------------------------------------------------------------------------------

def _progress(label: str, total: int) -> tuple[Any, Callable[[Trial, int], None]]:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    prog = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), TextColumn("{task.fields[last]}"), transient=False)
    task = prog.add_task(label, total=total, last="")

    def on_trial(t: Trial, n: int) -> None:
        lat = f", p99 {t.p99_us:.0f} us" if t.p99_us is not None else ""
        prog.update(task, completed=min(n, total), last=f"{t.offered_pps / 1e3:.1f} kpps offered, "
                    f"loss {100 * t.loss_ratio:.3f} %{lat} ({t.duration_s:g} s)")
    return prog, on_trial


def _targets(args: argparse.Namespace) -> tuple[Target, ...]:
    return (Target("NDR", 0.0), Target("PDR", args.pdr))


def _result_dict(program: Program, rl: bool, res: SearchResult) -> dict:
    out = {"profile": program.name, "control": "rl" if rl else "static", "flows": program.info.get("flows"),
           "trials": [t.to_dict() for t in res.trials], "resolution": res.resolution,
           "latency_bound_us": res.latency_bound_us, "targets": {}}
    for tr in res.targets:
        t = tr.lower_trial
        d = {"loss_ratio": tr.target.loss_ratio, "lower_load_pps": tr.lower_pps, "upper_load_pps": tr.upper_pps}
        if t is not None:
            frame_bits = _mean_frame_bits(program)
            d |= {"mpps": t.offered_pps / 1e6, "gbps": t.offered_pps * frame_bits / 1e9,
                  # the generator could not offer more: the bound is the generator's
                  "generator_limited": tr.generator_limited,
                  "new_flows_per_s": _new_flow_rate(program, t.extra.get("mult", 1.0)),
                  "trial": t.to_dict()}
        out["targets"][tr.target.name] = d
    return out


def _mean_frame_bits(program: Program) -> float:
    """Mean bits on the wire per packet of the measured streams: frame + FCS (4) + preamble
    and inter-frame gap (20), as Gbit/s figures count Ethernet."""
    rates = [(s.rate_pps, len(s.packet)) for s in program.streams if not s.latency]
    total = sum(r for r, _ in rates)
    return sum(r * (n + 24) * 8 for r, n in rates) / total


def _new_flow_rate(program: Program, mult: float) -> float:
    """New flows per second at multiplier mult: the rate of the streams of TCP SYNs (SYN set,
    ACK clear in the template's TCP flags)."""
    ip_proto, tcp_flags = ETH_BYTES + 9, ETH_BYTES + 20 + 13
    return sum(s.rate_pps * mult for s in program.streams
               if not s.latency and s.packet[ip_proto] == 6 and s.packet[tcp_flags] & 0x12 == 0x02)


def cmd_throughput(args: argparse.Namespace) -> dict:
    profs = _load_profiles(args)
    runner = _Trex(args) if args.trex else _Local(args)
    cases = []
    try:
        for program in _compile(profs, runner):
            for rl in ([False, True] if args.rl else [False]):
                label = f"{program.name} ({'RL control' if rl else 'static'})"
                m = runner.measurer(program, rl)
                prog, on_trial = _progress(label, 12)
                with prog:
                    res = search(m, min_load=args.min_load, max_load=args.max_load, targets=_targets(args),
                                 resolution=args.resolution, trial_s=args.trial, initial_trial_s=args.initial_trial,
                                 latency_bound_us=args.latency_bound_us, on_trial=on_trial)
                case = _result_dict(program, rl, res)
                cases.append(case)
                for name, d in case["targets"].items():
                    rate = f"{d['mpps']:.4f} Mpps, {d['gbps']:.3f} Gbit/s" if "mpps" in d else "below --min-load"
                    if d.get("generator_limited"):
                        rate += " (the generator's limit: the data plane lost nothing at the most it could offer)"
                    print(f"  {label} {name}: {rate}")
        env = environment(runner.describe())
    finally:
        runner.close()
    return {"benchmark": "throughput", "environment": env, "search": vars_of(args), "cases": cases}


# -- latency ---------------------------------------------------------------------------------

def _pdr_from(path: Path, profile: str, control: str) -> float:
    d = json.loads(path.read_text())
    for c in d.get("cases", []):
        if c["profile"] == profile and c["control"] == control and "mpps" in c["targets"].get("PDR", {}):
            return c["targets"]["PDR"]["mpps"] * 1e6
    raise UserError(f"{path}: no PDR for profile {profile!r} ({control})")


def cmd_latency(args: argparse.Namespace) -> dict:
    profs = _load_profiles(args)
    for p in profs:
        if p.latency is None:
            raise UserError(f"profile {p.name!r} has no latency stream (add `latency: {{rate_pps: 1000}}`)")
    try:
        loads = [float(x) for x in args.loads.split(",")]
    except ValueError:
        raise UserError(f"--loads {args.loads!r}: expected fractions of the PDR, e.g. 0.1,0.5,0.9") from None
    runner = _Trex(args) if args.trex else _Local(args)
    cases = []
    try:
        for program in _compile(profs, runner):
            for rl in ([False, True] if args.rl else [False]):
                control = "rl" if rl else "static"
                m = runner.measurer(program, rl)
                if args.pdr:
                    pdr = args.pdr
                elif args.from_json:
                    pdr = _pdr_from(Path(args.from_json), program.name, control)
                else:  # a quick PDR search first
                    prog, on_trial = _progress(f"{program.name} ({control}) PDR", 10)
                    with prog:
                        res = search(m, min_load=args.min_load, max_load=args.max_load,
                                     targets=(Target("PDR", args.pdr_loss),), resolution=0.05, trial_s=1.0,
                                     initial_trial_s=None, on_trial=on_trial)
                    tr = res.targets[0]
                    if tr.rate_pps is None:
                        raise UserError(f"{program.name}: the device lost more than {args.pdr_loss:.2%} even at "
                                        f"--min-load {args.min_load:g} pps")
                    pdr = tr.rate_pps
                points = []
                levels = [("min", args.min_load)] + [(f"{f:.0%} PDR", f * pdr) for f in loads]
                prog, on_trial = _progress(f"{program.name} ({control}) latency", len(levels))
                with prog:
                    for n, (label, load) in enumerate(levels, 1):
                        t = m.measure(load, args.trial)
                        on_trial(t, n)
                        lat = t.extra.get("latency") or {}
                        if not lat and "trex" in t.extra:
                            lat = {"trex": t.extra["trex"].get("latency")}
                        points.append({"level": label, "load_pps": load, "offered_pps": t.offered_pps,
                                       "loss_ratio": t.loss_ratio, "latency": lat})
                for p in points:
                    pc = p["latency"].get("percentiles_us", {})
                    print(f"  {program.name} ({control}) {p['level']:>8}: {p['offered_pps'] / 1e3:8.1f} kpps  "
                          + "  ".join(f"{k} {v:.0f} us" for k, v in pc.items() if k in ("p50", "p99", "p99.9", "max")))
                cases.append({"profile": program.name, "control": control, "pdr_pps": pdr, "points": points})
        env = environment(runner.describe())
    finally:
        runner.close()
    return {"benchmark": "latency", "environment": env, "settings": vars_of(args), "cases": cases}


def vars_of(args: argparse.Namespace) -> dict:
    return {k: v for k, v in vars(args).items() if k != "func"}


# -- summary -----------------------------------------------------------------------------------

def summary_text(result: dict) -> str:
    """The result as a small text table (also printed at the end of a run)."""
    env = result["environment"]
    lines = [f"# bench/{result['benchmark']}: {env['target']}, {env['time_utc']}, {env['cpu']} x{env['nproc']}, "
             f"kernel {env['kernel']}, commit {env['git_commit'][:10]}"]
    if result["benchmark"] == "throughput":
        st = result["search"]
        lines.append(f"search: NDR (loss 0) and PDR (loss <= {st['pdr']:.2%}), resolution {st['resolution']:.0%}, "
                     f"trials {st['initial_trial']:g} s then {st['trial']:g} s, loads {st['min_load']:g}.."
                     f"{st['max_load']:g} pps" + (f", LB CPU quota {st['lb_cpus']:g}" if st.get("lb_cpus") else ""))
        lines.append(f"{'profile':16} {'control':7} {'target':6} {'Mpps':>8} {'Gbit/s':>7} {'new flows/s':>11} "
                     f"{'trials':>6}  limited by")
        for c in result["cases"]:
            for name, d in c["targets"].items():
                if "mpps" not in d:
                    lines.append(f"{c['profile']:16} {c['control']:7} {name:6} {'< min load':>8}")
                    continue
                lim = "generator" if d["generator_limited"] else "data plane"
                lines.append(f"{c['profile']:16} {c['control']:7} {name:6} {d['mpps']:8.4f} {d['gbps']:7.3f} "
                             f"{d['new_flows_per_s']:11.0f} {len(c['trials']):6d}  {lim}")
    else:
        lines.append(f"{'profile':16} {'control':7} {'level':>8} {'kpps':>8} {'loss %':>7} "
                     + " ".join(f"{k:>8}" for k in ("p50", "p90", "p99", "p99.9", "max")) + "  (us)")
        for c in result["cases"]:
            for p in c["points"]:
                pc = p["latency"].get("percentiles_us", {})
                lines.append(f"{c['profile']:16} {c['control']:7} {p['level']:>8} {p['offered_pps'] / 1e3:8.1f} "
                             f"{100 * p['loss_ratio']:7.3f} "
                             + " ".join(f"{pc[k]:8.0f}" if k in pc else f"{'-':>8}"
                                        for k in ("p50", "p90", "p99", "p99.9", "max")))
    return "\n".join(lines) + "\n"


# -- command line ------------------------------------------------------------------------------

def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--profile", action="append", metavar="NAME|FILE",
                   help=f"traffic profile, repeatable: built in ({', '.join(BUILTIN_PROFILES)}), a profile "
                        "YAML, config:EXPERIMENT.yaml (its traffic section) or pcap:FILE (fitted to its TCP "
                        "flows); default: established and new")
    p.add_argument("--out", type=Path, help="result JSON (plots next to it); default bench/out/<bench>.json")
    p.add_argument("--trial", type=float, default=2.0, metavar="S", help="trial duration, s")
    p.add_argument("--min-load", type=float, default=5_000, metavar="PPS")
    p.add_argument("--max-load", type=float, default=1_000_000, metavar="PPS")
    p.add_argument("--rl", action="store_true",
                   help="also measure with the controller rewriting weights every 0.25 s (same run)")
    p.add_argument("--controller-policy", default="sed", help="the controller's heuristic (default sed)")
    p.add_argument("--checkpoint", help="the controller runs this trained agent instead")
    g = p.add_argument_group("local bench bed")
    g.add_argument("--servers", type=int, default=4, help="server sinks behind the LB (4)")
    g.add_argument("--policy", default="wcmp", help="lb_rl_host --policy (wcmp)")
    g.add_argument("--weights", help="lb_rl_host --weights W0,W1,... (default 1 each)")
    g.add_argument("--flow-timeout", type=float, default=40.0, metavar="S")
    g.add_argument("--lb-cpus", type=float, metavar="CPUS",
                   help="a CPU quota for lb_rl_host (cgroup mlb-pf-lb): a slower data plane")
    g.add_argument("--rx-ring", choices=("block", "frame"),
                   help="lb_rl_host --rx-ring: block (TPACKET_V3: fewer wake-ups, up to 1 ms of added "
                        "latency at low rates) or frame (TPACKET_V2); default block for throughput, "
                        "frame for latency")
    t = p.add_argument_group("TRex")
    t.add_argument("--trex", metavar="HOST[:PORT]", help="a TRex server (sync port 4501 by default)")
    t.add_argument("--trex-client", choices=("official", "stl"), default="official")
    t.add_argument("--tx-port", type=int, default=0)
    t.add_argument("--rx-port", type=int, default=1)
    t.add_argument("--dut-mac", help="the device under test's MAC (the streams' destination)")
    t.add_argument("--src-mac", default="02:00:00:00:00:02", help="source MAC of the streams")
    t.add_argument("--reset-cmd", help="command run before each trial to reset the device (e.g. its flow table)")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="marllb bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="bench", required=True)
    th = sub.add_parser("throughput", help="NDR and PDR by a multiple-loss-ratio search")
    _common(th)
    th.add_argument("--pdr", type=float, default=0.005, metavar="RATIO", help="PDR loss ratio (0.005)")
    th.add_argument("--resolution", type=float, default=0.02, help="relative width of the result (0.02)")
    th.add_argument("--initial-trial", type=float, default=0.5, metavar="S", help="short trials first (0.5 s)")
    th.add_argument("--latency-bound-us", type=float, metavar="US",
                    help="latency stop rule: a trial with p99 above this fails every target")
    th.set_defaults(func=cmd_throughput, rx_ring="block")
    la = sub.add_parser("latency", help="latency percentiles at fractions of the PDR and a minimal load")
    _common(la)
    la.add_argument("--pdr", type=float, metavar="PPS", help="the PDR to take fractions of (default: search it)")
    la.add_argument("--from", dest="from_json", metavar="JSON", help="take the PDR from a throughput result")
    la.add_argument("--pdr-loss", type=float, default=0.005, help="loss ratio of the quick PDR search")
    la.add_argument("--loads", default="0.1,0.5,0.9", help="fractions of the PDR (0.1,0.5,0.9)")
    la.set_defaults(func=cmd_latency, trial=5.0, rx_ring="frame")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    out = args.out or REPO / "bench" / "out" / f"{args.bench}.json"
    try:
        result = args.func(args)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1, default=str))
    text = summary_text(result)
    out.with_suffix(".txt").write_text(text)
    print(text, end="")
    from hil.perf.plots import plot_latency, plot_throughput

    plots = plot_throughput(result, out.with_suffix("")) if args.bench == "throughput" \
        else plot_latency(result, out.with_suffix(""))
    print(f"wrote {out}, {out.with_suffix('.txt')}" + "".join(f"\nwrote {p}" for p in plots))
    return 0
