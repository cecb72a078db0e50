"""One gateway run: the ``dataplane_factory`` handed to ``simulator.run.build_simulation`` for
``hil.lb: host``. The factory collects each LB's policy, seed and static weights as the
simulation configures its data planes; the real LBs start when the simulation opens the
first LB's shm region (every LB is configured by then), with exactly those settings."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hil.gateway.dataplane import FramePorts, GatewayDataPlane
from hil.gateway.frames import mac_bytes
from hil.gateway.link import GW_NS, LbSpec, RealLbs, packet_socket
from simulator.config import ExperimentConfig, LbConfig
from simulator.packet import VIP, VIP_PORT, ip_str

__all__ = ["Gateway"]


class Gateway:
    """Real LBs (``lb_rl_host``, or VPP with lb_rl for ``hil.lb: vpp``, in namespaces) behind simulated LB nodes; ``factory`` is the
    simulation's data-plane factory. Always :meth:`close` (also after a failure)."""

    def __init__(self, cfg: ExperimentConfig, log_dir: Path, *, vip: int = VIP, vip_port: int = VIP_PORT,
                 fallback_s: float | None = None) -> None:
        self.cfg = cfg
        self.vip, self.vip_port = vip, vip_port
        self.fallback_s = cfg.hil.fallback_s if fallback_s is None else fallback_s
        self.log_dir = Path(log_dir)
        self.dps: list[GatewayDataPlane] = []
        self.timeout_s = cfg.hil.packet_timeout_s
        self.lbs: RealLbs | None = None
        self.ports: FramePorts | None = None
        self.lb_stats: list[dict | None] = []

    def factory(self, n_servers: int, core_policy: str, lb: LbConfig, seed: int) -> GatewayDataPlane:
        dp = GatewayDataPlane(self, len(self.dps), n_servers, core_policy, seed)
        self.dps.append(dp)
        return dp

    def up(self) -> None:
        if self.lbs is not None:
            return
        dps, lbc = self.dps, self.cfg.lb
        n = dps[0].n_servers
        static = [dps[0].static.get(i, 0.0) for i in range(n)]
        spec = LbSpec(policy=dps[0].core_policy, static_weights=static, seeds=[dp.seed for dp in dps],
                      vip=ip_str(self.vip), vip_port=self.vip_port, step_s=lbc.step_s, fallback_s=self.fallback_s,
                      table_size=lbc.table_size, flow_timeout_s=lbc.flow_timeout_s,
                      syn_timeout_s=lbc.syn_timeout_s, reservoir_size=lbc.reservoir_size,
                      sample_prob=lbc.sample_prob)
        if self.cfg.hil.lb == "vpp":
            from hil.gateway.vpp_link import VppLbs

            self.lbs = VppLbs(len(dps), n, spec, self.log_dir)
        else:
            self.lbs = RealLbs(len(dps), n, spec, self.log_dir)
        self.lbs.up()
        socks = [packet_socket(GW_NS, f"g{k}") for k in range(len(dps))]
        server_of = {mac_bytes(m): j for j, m in enumerate(self.lbs.server_macs)}
        self.ports = FramePorts(socks, server_of, by="mac", queue_size=self.cfg.hil.queue_size)

    def counters(self) -> dict[str, Any]:
        return {} if self.ports is None else self.ports.counters.as_dict()

    def close(self) -> None:
        """Account for the frames still in flight, stop the reader, the LBs (their counters
        are kept in ``lb_stats``), remove the namespaces."""
        if self.ports is not None:
            try:
                self.ports.finish(self.timeout_s)
            finally:
                self.ports.close()
        for dp in self.dps:
            if dp.shm is not None:
                dp.shm.close()
        if self.lbs is not None:
            self.lbs.down()
            self.lb_stats = [self.lbs.stats(k) for k in range(self.lbs.n_lbs)]

