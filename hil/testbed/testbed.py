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
import time
from pathlib import Path
from typing import Any

from hil.testbed import apache, cgroups, sh
from hil.testbed.dataplane import controller_policy_args, marllb_shm_files, start_dataplane, stop_processes
from hil.testbed.network import build_network
from hil.testbed.plan import ServerNode, TestbedPlan, state_dir
from hil.testbed.state import Running, load_state
from simulator.config import ExperimentConfig, UserError

# the whole testbed from one module: its own functions, and the parts' entry points
__all__ = ["check_prerequisites", "up", "down", "status", "leftovers", "server_instance", "cap_workers",
           "start_dataplane", "stop_processes", "controller_policy_args", "Running", "load_state"]

log = logging.getLogger("marllb.hil.testbed")

MAIN_GROUP = "main"  # the Apache parent's group inside a server's group (workers get w<k>)


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
# servers
# ---------------------------------------------------------------------------------------------

def server_instance(s: ServerNode, cg: cgroups.CgroupFs | None = None) -> apache.ApacheInstance:
    """Server s's Apache; started, it enters the server's cgroup (when that exists) and CPUs."""
    if cg is None:
        try:
            cg = cgroups.detect()
        except UserError:
            cg = None
    main = f"{s.ns}/{MAIN_GROUP}"
    enter = cg.enter_command(main) if cg is not None and cg.path(main).is_dir() else None
    return apache.ApacheInstance(ns=s.ns, run_dir=state_dir() / s.ns, cgroup_enter=enter, cpus=s.cpus)


def _start_servers(plan: TestbedPlan, cg: cgroups.CgroupFs, run: Running) -> None:
    _, php = apache.check_installed()
    www = apache.install_www(state_dir())
    for s in plan.servers:
        run.cgroups[s.ns] = cg.create(s.ns, s.quota_cpus, subtree=True)
        cg.create(f"{s.ns}/{MAIN_GROUP}", None)  # before server_instance: it enters this group
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
            build_network(plan)
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
    was removed, and under ``kept`` the shm of swap-in runs still going in other processes
    (their controllers are left running too)."""
    removed: dict[str, Any] = {"processes": [], "namespaces": [], "cgroups": [], "shm": []}
    run = load_state()
    if run is not None:
        for role in ("client", "controller", "lb", "apache"):
            pids = [p["pid"] for p in run.procs.get(role, [])]
            sh.kill_pids(pids)
            removed["processes"] += pids
    realtime = sh.realtime_leftover_pids()  # controllers of a killed swap-in run
    sh.kill_pids(realtime)
    removed["processes"] += realtime
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
    removed["kept"] = []  # shm of swap-in runs still going in other processes: theirs
    for f in marllb_shm_files():
        if sh.live_realtime_owner(f):
            removed["kept"].append(str(f))
            continue
        if f.is_dir():
            shutil.rmtree(f, ignore_errors=True)
        else:
            f.unlink(missing_ok=True)
        removed["shm"].append(str(f))
    for d in (state_dir(), apache.FALLBACK_WWW):
        if d.is_dir():
            shutil.rmtree(d, ignore_errors=True)
    left = leftovers()
    left["shm"] = [f for f in left["shm"] if f not in removed["kept"]]
    if any(left.values()):
        raise UserError(f"testbed teardown left {left}")
    return removed


def leftovers() -> dict[str, list[str]]:
    """Anything with the testbed's prefix still on the host (should be empty when down)."""
    try:
        groups = cgroups.detect().groups()
    except UserError:
        groups = []
    mounts = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()
              if "/netns/" in line and sh.TESTBED_NAME.match(line.split()[4].rsplit("/", 1)[-1])]
    return {"mounts": mounts, "namespaces": [n for n in sh.namespaces() if sh.TESTBED_NAME.match(n)],
            "cgroups": [g for g in groups if sh.TESTBED_NAME.match(g)],
            "shm": [str(f) for f in marllb_shm_files()]}


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
