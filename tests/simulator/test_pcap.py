"""The pcap of a small run, read back with scapy, matches the packet log."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from simulator.config import ExperimentConfig
from simulator.packet import ip_str
from simulator.run import run_experiment


@pytest.mark.parametrize("close", ["rst", "fin"])
def test_pcap_matches_packet_log(tmp_path, close):
    from scapy.layers.inet import IP, TCP
    from scapy.utils import rdpcap

    cfg = ExperimentConfig.model_validate({
        "seed": 5, "duration_s": 2, "topology": {"preset": "unittest"},
        "traffic": {"rate": 40, "response_bytes": 5000, "close": close, "job": {"mean_s": 0.05}},
    })
    path = tmp_path / "run.pcap"
    r = run_experiment(cfg, progress=False, pcap_path=str(path), log_packets=True)
    log = r.extra["packets"]
    caps = rdpcap(str(path))
    assert len(caps) == len(log) == r.summary["packets"]
    for p, c in zip(log, caps):
        assert c[IP].src == ip_str(p.src) and c[IP].dst == ip_str(p.dst)
        assert (c[TCP].sport, c[TCP].dport) == (p.sport, p.dport)
        assert int(c[TCP].flags) == p.flags
        assert c[IP].len == p.size
        assert float(c.time) == pytest.approx(p.t_send_s, abs=1e-6)
    flags = [int(c[TCP].flags) for c in caps]
    closing = 0x14 if close == "rst" else 0x11  # RST|ACK or FIN|ACK from the client
    n_done = r.summary["completed"]
    assert n_done > 20
    assert sum(1 for c, f in zip(caps, flags) if f == closing and c[TCP].dport == 80) >= n_done
    assert sum(1 for f in flags if f == 0x02) == r.summary["arrived"]
    if shutil.which("tshark"):
        out = subprocess.run(["tshark", "-r", str(path)], capture_output=True, text=True, check=True)
        assert len(out.stdout.splitlines()) == len(log)
