"""The gateway with VPP + lb_rl as the real data plane (``hil.lb: vpp``): parity of the
simulator's core with lb_rl_host and VPP on a simulated run's pcap (ECMP, WCMP, SED), and a
real-time run through VPP under simulated clients and servers. Marked ``vpp``: needs
VPP_PREFIX (a VPP install; this project never builds VPP) and root."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("simulator.dataplane", reason="cffi binding not built (pip install -e .)")

from hil.gateway.link import check_host, gateway_namespaces, teardown  # noqa: E402
from hil.testbed.dataplane import marllb_shm_files  # noqa: E402
from simulator.config import UserError  # noqa: E402


def _skip_reason() -> str | None:
    from hil.gateway.vpp_link import vpp_prefix

    try:
        vpp_prefix()
    except UserError as e:
        return str(e)
    return check_host()


WHY = _skip_reason()
pytestmark = [pytest.mark.vpp, pytest.mark.skipif(WHY is not None, reason=WHY or "")]
REPO = Path(__file__).resolve().parents[2]
CORES = [2.0, 2, 2, 4, 4, 4]


@pytest.fixture(autouse=True)
def nothing_left() -> object:
    def left() -> list[str]:
        return gateway_namespaces() + [f.name for f in marllb_shm_files("glb")]

    assert left() == []
    try:
        yield
    finally:
        found = left()
        teardown()
        assert found == [], f"the test left {found}"
        assert subprocess.run(["pgrep", "-f", "mlb-glb"], capture_output=True).stdout == b""


@pytest.mark.parametrize("policy", ["ecmp", "wcmp", "sed"])
def test_parity_sim_core_lb_rl_host_and_vpp(sim_pcap: Path, tmp_path: Path, policy: str) -> None:
    from hil.parity import parity
    from simulator.packet import VIP, VIP_PORT

    rep = parity(sim_pcap, policy=policy, weights=CORES, seed=11, vip=VIP, vip_port=VIP_PORT,
                 log_dir=tmp_path, vpp=True)
    assert rep["packets"] >= 10_000 and rep["flows"] >= 1_000
    for name in ("host", "vpp"):
        assert rep[name]["pass"], (name, rep[name].get("first_divergence"))
        assert rep[name]["packets"]["lost"] == 0
        assert rep["per_server"][name] == rep["per_server"]["sim"]


def test_real_time_run_through_vpp(tmp_path: Path) -> None:
    cfg = {"name": "vpp_gw", "seed": 5, "duration_s": 8.0, "topology": {"preset": "unittest"},
           "traffic": {"load": 0.5}, "policy": {"name": "sed"}, "lb": {"step_s": 0.25},
           "hil": {"traffic": "sim", "lb": "vpp", "servers": "sim", "agent": "inproc"}}
    path, out = tmp_path / "vpp.yaml", tmp_path / "run"
    path.write_text(json.dumps(cfg))
    cp = subprocess.run([sys.executable, "-m", "experiments.cli", "hil", "run", str(path), "--out", str(out),
                         "--no-progress"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert cp.returncode == 0, cp.stdout[-2000:] + cp.stderr[-2000:]
    info = json.loads((out / "hil.json").read_text())
    pk = info["gateway"]["packets"]
    assert pk["accounted"] and pk["sent"] > 1000 and pk["lost"] == 0 and pk["misrouted"] == 0
    import re

    shown = info["gateway"]["lb_stats"][0]["show lb_rl stats"]
    assert int(re.search(r"packets (\d+) new-flows", shown).group(1)) == pk["sent"]  # VPP's own count
    import pandas as pd

    steps = pd.read_parquet(out / "steps.parquet")
    assert steps["n_flow_on"].sum() > 0 and (steps["weight"] > 0).all()  # VPP's own frames
