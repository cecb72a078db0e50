"""Bring the local testbed up and down: namespaces, the bridge, Apache servers under CPU quotas,
`lb_rl_host` LBs and their controllers.

``up`` is idempotent (a running testbed of the same shape is kept; a different one is rebuilt)
and checks its prerequisites first, one clear error each with the command that fixes it.
``down`` removes every namespace, link, cgroup, shm file and process of the testbed -- also the
leftovers of a crashed run, found by the ``mlb`` prefix -- and is safe to run twice. The root
namespace's network is never touched: veths are created inside the namespaces.

State (plan, PIDs, logs) lives in :func:`hil.testbed.plan.state_dir`."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hil.testbed import apache, cgroups, sh
from hil.testbed.plan import (BRIDGE, MARK_BASE, PREFIX_LEN, SWITCH_NS, Node, ServerNode, TestbedPlan,
                              helper_cpus, state_dir)
from simulator.config import ExperimentConfig, UserError

__all__ = ["check_prerequisites", "up", "down", "status", "start_dataplane", "stop_processes",
           "Running", "load_state", "SHM_DIR", "controller_policy_args"]

log = logging.getLogger("marllb.hil.testbed")

SHM_DIR = Path("/dev/shm")
MAIN_GROUP = "main"  # the Apache parent's group inside a server's group (workers get w<k>)
STATE_FILE = "state.json"
ORACLES = ("gsq", "gsed", "srt")


def check_prerequisites() -> dict[str, Any]:
    """Everything ``up`` needs, checked before anything is created. Returns what was found
    (paths, cgroup version); raises UserError naming the fix."""
    if os.geteuid() != 0:
        raise UserError("the testbed needs root (network namespaces, cgroups): run it with sudo, "
                        "e.g. `sudo marllb hil up CONFIG`")
    sh.require_tool("ip", "apt-get install iproute2")
    cp = sh.run(["ip", "netns", "list"], check=False)
    if cp.returncode != 0:
        raise UserError(f"`ip netns` does not work here ({cp.stderr.strip()}): "
                        "apt-get install iproute2 (and a kernel with network namespaces)")
    sh.require_tool("ethtool", "apt-get install ethtool")
    sh.require_tool("taskset", "apt-get install util-linux")
    binary, php = apache.check_installed()
    cg = cgroups.detect()
    from hil.hostbin import host_binary

    host = host_binary(build=True)
    return {"apache2": binary, "php_module": str(php), "cgroup_version": cg.version,
            "cgroup_base": str(cg.base), "lb_rl_host": str(host)}


# ---------------------------------------------------------------------------------------------
# state
# ---------------------------------------------------------------------------------------------

@dataclass
class Running:
    """What is up: the plan's shape and the processes we started (by role)."""

    shape: dict[str, Any]
    plan: dict[str, Any]
    procs: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    cgroups: dict[str, dict[str, int]] = field(default_factory=dict)
    cgroup_version: int = 0
    created_wall_s: float = 0.0

    def save(self) -> None:
        d = state_dir()
        d.mkdir(parents=True, exist_ok=True)
        tmp = d / (STATE_FILE + ".tmp")
        tmp.write_text(json.dumps(self.__dict__, indent=1, default=str))
        tmp.replace(d / STATE_FILE)


def load_state() -> Running | None:
    f = state_dir() / STATE_FILE
    try:
        return Running(**json.loads(f.read_text()))
    except (OSError, ValueError, TypeError):
        return None


# ---------------------------------------------------------------------------------------------
# network
# ---------------------------------------------------------------------------------------------

def _link_node(node: Node) -> None:
    ns = node.ns
    sh.run(["ip", "netns", "add", ns])
    sh.run(["ip", "-n", ns, "link", "add", "eth0", "type", "veth", "peer", "name", node.port,
            "netns", SWITCH_NS])
    sh.run(["ip", "-n", ns, "link", "set", "eth0", "address", node.mac])
    sh.run(["ip", "-n", ns, "addr", "add", f"{node.ip}/{PREFIX_LEN}", "dev", "eth0"])
    sh.run(["ip", "-n", ns, "link", "set", "lo", "up"])
    sh.run(["ip", "-n", ns, "link", "set", "eth0", "up"])
    sh.run(["ip", "-n", SWITCH_NS, "link", "set", node.port, "master", BRIDGE, "up"])
    # full checksums in every frame (a frame the LB re-sends from AF_PACKET is not offloaded)
    sh.run(["ethtool", "-K", "eth0", "tx", "off"], ns=ns)
    _sysctl(ns, {"net.ipv4.conf.all.rp_filter": 0, "net.ipv4.conf.eth0.rp_filter": 0,
                 "net.ipv4.conf.default.rp_filter": 0})


def _sysctl(ns: str, values: dict[str, Any]) -> None:
    sh.run(["sysctl", "-q", "-w", *(f"{k}={v}" for k, v in values.items())], ns=ns)


def _build_network(plan: TestbedPlan) -> None:
    sh.run(["ip", "netns", "add", SWITCH_NS])
    sh.run(["ip", "-n", SWITCH_NS, "link", "add", BRIDGE, "type", "bridge"])
    sh.run(["ip", "-n", SWITCH_NS, "link", "set", BRIDGE, "up"])
    for node in plan.nodes:
        _link_node(node)
    for s in plan.servers:
        # the VIP on lo, never announced or answered by ARP: only the LBs answer for it
        sh.run(["ip", "-n", s.ns, "addr", "add", f"{plan.vip}/32", "dev", "lo"])
        _sysctl(s.ns, {"net.ipv4.conf.all.arp_ignore": 1, "net.ipv4.conf.all.arp_announce": 2,
                       "net.ipv4.conf.eth0.arp_ignore": 1, "net.ipv4.conf.eth0.arp_announce": 2,
                       "net.ipv4.tcp_abort_on_overflow": 1})
    for c in plan.clients:
        _client_routes(c, plan)


def _client_routes(c: Node, plan: TestbedPlan) -> None:
    """The edge router's job in the client: the VIP via the LBs. Unmarked flows take a
    multipath route hashed on the 5-tuple (fib_multipath_hash_policy=1); a socket marked
    ``MARK_BASE + k`` (the client's own hash) goes through LB k (policy routing table 100+k)."""
    lbs = plan.lbs
    _sysctl(c.ns, {"net.ipv4.fib_multipath_hash_policy": 1})
    if len(lbs) == 1:
        sh.run(["ip", "-n", c.ns, "route", "add", f"{plan.vip}/32", "via", lbs[0].ip])
    else:
        hops: list[str] = []
        for lb in lbs:
            hops += ["nexthop", "via", lb.ip]
        sh.run(["ip", "-n", c.ns, "route", "add", f"{plan.vip}/32", *hops])
    for k, lb in enumerate(lbs):
        table = str(100 + k)
        sh.run(["ip", "-n", c.ns, "route", "add", f"{plan.vip}/32", "via", lb.ip, "table", table])
        sh.run(["ip", "-n", c.ns, "rule", "add", "fwmark", str(MARK_BASE + k), "table", table])



# ---------------------------------------------------------------------------------------------
# servers
# ---------------------------------------------------------------------------------------------

def server_instance(s: ServerNode, cg: cgroups.CgroupFs | None = None) -> apache.ApacheInstance:
    return apache.ApacheInstance(ns=s.ns, run_dir=state_dir() / s.ns,
                                 cgroup_enter=cg.enter_command(f"{s.ns}/{MAIN_GROUP}") if cg else None,
                                 cpus=s.cpus)


def _start_servers(plan: TestbedPlan, cg: cgroups.CgroupFs, run: Running) -> None:
    _, php = apache.check_installed()
    www = apache.install_www(state_dir())
    for s in plan.servers:
        run.cgroups[s.ns] = cg.create(s.ns, s.quota_cpus, subtree=True)
        cg.create(f"{s.ns}/{MAIN_GROUP}", None)
        for k in range(s.workers):
            run.cgroups[f"{s.ns}/w{k}"] = cg.create(f"{s.ns}/w{k}", plan.cpu_per_core)
        inst = server_instance(s, cg)
        inst.write_config(apache.render_config(
            server_index=s.index, listen=f"0.0.0.0:{plan.port}", workers=s.workers,
            backlog=s.backlog, run_dir=inst.run_dir, www=www, php_module=php))
        inst.run_dir.chmod(0o755)
        pid = inst.start()
        run.procs.setdefault("apache", []).append({"ns": s.ns, "pid": pid, "index": s.index})
    run.save()
    for s in plan.servers:
        cap_workers(cg, s)
    _wait_servers_ready(plan)


def cap_workers(cg: cgroups.CgroupFs, s: ServerNode, timeout_s: float = 10.0) -> int:
    """Give every Apache worker of server s its own group limited to one simulated core
    (cpu_per_core CPUs) inside the server's group (cores x cpu_per_core CPUs): a request then
    progresses at min(1, cores / n) simulated cores, as the simulator's processor sharing has
    it -- without this a lone request could use the whole server quota. Waits for the workers
    prefork starts; returns how many were moved (workers already capped stay)."""
    main = f"{s.ns}/{MAIN_GROUP}"
    parent = server_instance(s).pid()
    deadline = time.monotonic() + timeout_s
    while True:
        loose = [p for p in cg.procs(main) if p != parent]
        capped = sum(len(cg.procs(f"{s.ns}/w{k}")) for k in range(s.workers))
        if len(loose) + capped >= s.workers or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    free = (f"{s.ns}/w{k}" for k in range(s.workers) if not cg.procs(f"{s.ns}/w{k}"))
    moved = 0
    for pid, group in zip(loose, free):
        try:
            cg.move(pid, group)
            moved += 1
        except OSError:  # the worker exited meanwhile
            continue
    return moved


def _wait_servers_ready(plan: TestbedPlan, timeout_s: float = 20.0) -> None:
    """Every server answers work.php (from a client namespace, straight to its own address)."""
    c = plan.clients[0]
    code = ("import sys,time,urllib.request\n"
            "ips=sys.argv[1:]; deadline=time.time()+%f\n"
            "for ip in ips:\n"
            "  while True:\n"
            "    try:\n"
            "      urllib.request.urlopen('http://%%s/work.php?n=0&b=0' %% ip, timeout=1).read(); break\n"
            "    except Exception as e:\n"
            "      if time.time()>deadline: print(ip, e); sys.exit(1)\n"
            "      time.sleep(0.1)\n") % timeout_s
    cp = sh.run(["python3", "-c", code, *(s.ip for s in plan.servers)], ns=c.ns, check=False,
                timeout_s=timeout_s + 10)
    if cp.returncode != 0:
        raise UserError(f"testbed servers not answering: {cp.stdout.strip()} {cp.stderr.strip()}")


# ---------------------------------------------------------------------------------------------
# data plane and controllers
# ---------------------------------------------------------------------------------------------

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
                "--stats-json", str(log_dir / f"{lb.name}.stats.json")]
        pid = _spawn(argv, lb.ns, log_dir / f"{lb.name}.log")
        run.procs.setdefault("lb", []).append({"ns": lb.ns, "pid": pid, "index": lb.index,
                                               "shm": str(shm), "argv": argv})
        run.save()
        _wait_file(shm, pid, log_dir / f"{lb.name}.log")
        shms.append(shm)
    import sys

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


# ---------------------------------------------------------------------------------------------
# up / down / status
# ---------------------------------------------------------------------------------------------

def up(cfg: ExperimentConfig, plan: TestbedPlan, *, start_lbs: bool = True) -> Running:
    """Bring the testbed for plan up (idempotent). With start_lbs, also the LBs and controllers
    for cfg's policy."""
    found = check_prerequisites()
    if start_lbs:
        controller_policy_args(cfg, len(plan.servers))  # policy errors before anything exists
    run = load_state()
    if run is not None and run.shape == _json_shape(plan) and _healthy(plan, run):
        log.info("testbed already up with this shape")
    else:
        if run is not None or leftovers()["namespaces"]:
            log.info("rebuilding the testbed (shape changed or parts missing)")
        down()
        cg = cgroups.detect()
        run = Running(shape=_json_shape(plan), plan=plan.to_dict(), cgroup_version=cg.version,
                      created_wall_s=time.time())
        state_dir().mkdir(parents=True, exist_ok=True)
        run.save()
        try:
            _build_network(plan)
            _start_servers(plan, cg, run)
        except BaseException:
            down()
            raise
    run.plan["prerequisites"] = found
    if start_lbs:
        try:
            start_dataplane(cfg, plan, run, state_dir() / "logs", seed=cfg.seed)
        except BaseException:
            stop_processes(run, roles=("controller", "lb"))
            raise
    run.save()
    return run


def _json_shape(plan: TestbedPlan) -> dict[str, Any]:
    return json.loads(json.dumps(plan.shape()))


def _healthy(plan: TestbedPlan, run: Running) -> bool:
    have = set(sh.namespaces())
    if not set(plan.namespaces) <= have:
        return False
    return all(server_instance(s).running() for s in plan.servers)


def down() -> dict[str, Any]:
    """Remove everything of the testbed (safe to run twice, also after a crash). Returns what
    was removed."""
    removed: dict[str, Any] = {"processes": [], "namespaces": [], "cgroups": [], "shm": []}
    run = load_state()
    if run is not None:
        for role in ("client", "controller", "lb", "apache"):
            pids = [p["pid"] for p in run.procs.get(role, [])]
            sh.kill_pids(pids)
            removed["processes"] += pids
    nss = [ns for ns in sh.namespaces() if sh.TESTBED_NAME.match(ns)]
    for ns in nss:  # everything still living in our namespaces is ours
        pids = sh.ns_pids(ns)
        if pids:
            sh.kill_pids(pids)
            removed["processes"] += pids
    try:
        cg: cgroups.CgroupFs | None = cgroups.detect()
    except UserError:
        cg = None
    if cg is not None:
        for name in filter(sh.TESTBED_NAME.match, cg.groups()):
            sh.kill_pids(cg.procs_all(name))
            cg.remove(name)
            removed["cgroups"].append(name)
    for ns in nss:
        sh.run(["ip", "netns", "del", ns], check=False)
        removed["namespaces"].append(ns)
    for f in SHM_DIR.glob("mlb-lb*.shm"):
        f.unlink(missing_ok=True)
        removed["shm"].append(str(f))
    for d in (state_dir(), apache.FALLBACK_WWW):
        if d.is_dir():
            shutil.rmtree(d, ignore_errors=True)
    left = leftovers()
    if any(left.values()):
        raise UserError(f"testbed teardown left {left}")
    return removed


def leftovers() -> dict[str, list[str]]:
    """Anything with the testbed's prefix still on the host (should be empty when down)."""
    try:
        groups = cgroups.detect().groups()
    except UserError:
        groups = []
    return {"namespaces": [n for n in sh.namespaces() if sh.TESTBED_NAME.match(n)],
            "cgroups": [g for g in groups if sh.TESTBED_NAME.match(g)],
            "shm": sorted(str(f) for f in SHM_DIR.glob("mlb-lb*.shm"))}


def status() -> dict[str, Any]:
    """What is up now, process liveness, CPU quotas, and the machine's calibration."""
    from hil.testbed.calibrate import load_calibration

    run = load_state()
    out: dict[str, Any] = {"up": run is not None, "namespaces": sh.namespaces(),
                           "calibration": load_calibration()}
    if run is not None:
        out["procs"] = {role: [{**p, "alive": sh.pid_alive(p["pid"])} for p in ps]
                        for role, ps in run.procs.items()}
        try:
            cg = cgroups.detect()
            out["cgroups"] = {name: {**(cg.limits(name) or {}), **cg.stat(name)} for name in cg.groups()}
        except UserError as e:
            out["cgroups"] = str(e)
    return out
