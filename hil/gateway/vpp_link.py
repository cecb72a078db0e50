"""Real LBs for simulated packets, VPP edition (``hil.lb: vpp``): one VPP with lb_rl per LB,
running inside namespace ``mlb-glb<k>`` on an af_packet interface over the same veth the
lb_rl_host edition uses. The VIP's servers are GRE4 tunnel endpoints whose MACs VPP knows
from static neighbour entries, so a forwarded frame names its server by its destination MAC
(and by its outer destination address) exactly as under lb_rl_host.

Needs ``VPP_PREFIX`` (a VPP install with headers; this project never builds VPP itself) and
root. The plugin is built from ``vpp_plugin/`` against that VPP into ``build/lb_rl_vpp/`` on
first use.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from hil.gateway.link import RealLbs, lb_ns, server_ip
from simulator.config import UserError

__all__ = ["VppLbs", "vpp_prefix"]

LB_ADDR = "198.18.4.254"  # VPP's address on the LB veth (the GRE source); servers are 198.18.4.<j+1>
REPO = Path(__file__).resolve().parents[2]


def vpp_prefix() -> Path:
    """The VPP install of ``VPP_PREFIX``, or UserError saying what is missing."""
    env = os.environ.get("VPP_PREFIX")
    if not env:
        raise UserError("hil.lb: vpp needs VPP_PREFIX (a VPP install with headers, e.g. /opt/vpp)")
    prefix = Path(env)
    if not (prefix / "bin" / "vpp").exists() or not (prefix / "include" / "vppinfra" / "clib.h").exists():
        raise UserError(f"VPP_PREFIX={prefix}: no bin/vpp or include/vppinfra/clib.h (not a VPP install)")
    return prefix


def _plugin_dir(prefix: Path) -> Path:
    """lb_rl built against ``prefix`` (rebuilt when a plugin or core source is newer)."""
    from hil.vpp import build_plugin

    out = REPO / "build" / "lb_rl_vpp"
    found = list((out / "install").glob("lib/**/vpp_plugins/lb_rl_plugin.so"))
    srcs = [p for d in ("lb_rl", "core") for p in (REPO / "vpp_plugin" / d).glob("*.[ch]")]
    if found and found[0].stat().st_mtime >= max(p.stat().st_mtime for p in srcs):
        return found[0].parent
    return build_plugin(prefix, out / "build", out / "install")


class VppLbs(RealLbs):
    """:class:`RealLbs` with VPP + lb_rl instead of lb_rl_host (same namespaces, veths, MACs)."""

    def __init__(self, *args: object, **kw: object) -> None:
        super().__init__(*args, **kw)  # type: ignore[arg-type]
        self.vpps: list[object] = []
        self._prefix = vpp_prefix()

    def _start_lb(self, k: int) -> None:
        from hil import vpp as hv

        s = self.spec
        run_dir = self.log_dir / f"vpp{k}"
        run_dir.mkdir(parents=True, exist_ok=True)
        vip = f"{s.vip}/32"
        cli = [f"create host-interface name eth0 hw-addr {self.lb_macs[k]}",
               "set interface state host-eth0 up",
               f"set interface ip address host-eth0 {LB_ADDR}/16",
               *[f"set ip neighbor host-eth0 {server_ip(j)} {self.server_macs[j]}" for j in range(self.n_servers)],
               hv.cli_conf(policy=s.policy, flow_timeout_s=s.flow_timeout_s, step_s=s.step_s,
                           fallback_s=s.fallback_s, ip4_src=LB_ADDR),
               hv.cli_vip(vip, "gre4", flow_table_size=s.table_size),
               *[hv.cli_as(vip, [server_ip(j)], weight=w) for j, w in enumerate(s.static_weights)]]
        startup = run_dir / "startup.cli"
        startup.write_text("\n".join(cli) + "\n")
        paths = hv.VppPaths.from_env(run_dir)
        proc = hv.VppProcess(paths, REPO / "vpp_plugin" / "startup" / "af_packet.conf", run_dir,
                             plugin_dir=str(_plugin_dir(self._prefix)), startup_cli=str(startup),
                             api_prefix=f"mlb-glb{k}", workers="0", netns=lb_ns(k),
                             lb_rl_extra=f"seed {s.seeds[k]} sample-prob {s.sample_prob!r}")
        proc.start()
        self.vpps.append(proc)
        assert proc.proc is not None
        self.pids.append(proc.proc.pid)
        # the startup CLI file runs once the CLI socket answers: wait for the VIP's servers
        lb = hv.LbRlVpp(hv.CliTransport(paths), use_api=False)
        deadline = time.monotonic() + 15
        servers = 0
        while servers < self.n_servers and time.monotonic() < deadline:
            servers = sum(1 for line in lb.show("weights").splitlines() if line.split()[:1] == ["server"])
            time.sleep(0.1)
        shm = run_dir / "lb_rl_vip0"  # lb_rl names a VIP's region <shm-dir>/lb_rl_vip<index>
        if servers != self.n_servers or not shm.exists():
            text = (run_dir / "vpp.log").read_bytes().decode(errors="replace").splitlines()
            errors = [line.strip() for line in text if "error" in line.lower() or "must" in line]
            raise UserError(f"VPP (LB {k}) did not set up the VIP with {self.n_servers} servers and its "
                            f"shm region {shm}: {' | '.join(errors[-3:]) or 'see ' + str(run_dir / 'vpp.log')}")
        self.shm_paths[k] = shm
        self.argv.append(cli)

    def stats(self, k: int) -> dict | None:
        """What ``show lb_rl stats`` and ``show interface`` said just before LB k's VPP stopped."""
        path = self.log_dir / f"vpp{k}" / "final_show.json"
        try:
            import json

            return json.loads(path.read_text())  # type: ignore[no-any-return]
        except (OSError, ValueError):
            return None

    def _save_counters(self, k: int, proc: object) -> None:
        import json

        from hil import vpp as hv

        run_dir = self.log_dir / f"vpp{k}"
        try:
            lb = hv.LbRlVpp(hv.CliTransport(hv.VppPaths.from_env(run_dir)), use_api=False)
            shown = {"show lb_rl stats": lb.show("stats"), "show interface": lb.t.cli("show interface")}
            (run_dir / "final_show.json").write_text(json.dumps(shown, indent=1) + "\n")
        except Exception as e:  # noqa: BLE001 - counters are a report, not the run
            (run_dir / "final_show.json").write_text(json.dumps({"error": str(e)}) + "\n")

    def down(self) -> None:
        for k, p in enumerate(self.vpps):
            self._save_counters(k, p)
            p.stop()  # type: ignore[attr-defined]
        self.vpps = []
        super().down()
        for k in range(self.n_lbs):  # VPP's API segment in /dev/shm, lb_rl's region in the run dir
            for f in [*Path("/dev/shm").glob(f"mlb-glb{k}-*"), *(self.log_dir / f"vpp{k}").glob("lb_rl_vip*")]:
                f.unlink(missing_ok=True)
