"""A short NDR search against a real TRex server (``TREX_SERVER=HOST[:PORT]``; port
``TREX_TX_PORT`` (0) sends to the device under test at ``TREX_DUT_MAC``, port ``TREX_RX_PORT``
(1) receives what it forwards). Skips with the reason when no server is given."""

from __future__ import annotations

import os

import pytest

pytestmark = pytest.mark.trex


def test_short_ndr_search_on_a_trex_server():
    server = os.environ.get("TREX_SERVER")
    if not server:
        pytest.skip("TREX_SERVER is not set (HOST[:PORT] of a TRex server with a device under test)")
    dut = os.environ.get("TREX_DUT_MAC")
    if not dut:
        pytest.skip("TREX_DUT_MAC is not set (the MAC the streams are sent to)")
    from hil.perf.bench import TrexMeasurer
    from hil.perf.search import search
    from hil.trex.client import connect
    from hil.traffic.profile import compile_profile, parse_profile

    prog = compile_profile(parse_profile({"name": "trex-ndr", "streams": [
        {"kind": "tcp_established", "flows": 1000, "rate_pps": 100_000}], "latency": {"rate_pps": 1000}}),
        dst_mac=dut)
    tx, rx = int(os.environ.get("TREX_TX_PORT", 0)), int(os.environ.get("TREX_RX_PORT", 1))
    with connect(server, client=os.environ.get("TREX_CLIENT", "official")) as drv:
        m = TrexMeasurer(drv, prog, [tx], [rx])
        r = search(m, min_load=10_000, max_load=float(os.environ.get("TREX_MAX_PPS", 1e6)), resolution=0.1,
                   trial_s=1.0, initial_trial_s=None, max_trials=12)
    assert all(t.sent > 0 for t in r.trials)
    ndr = r.by_name("NDR")
    assert ndr.lower_pps is not None, f"the device lost packets even at 10 kpps: {r.trials[-1]}"
    assert ndr.lower_trial.lost == 0
