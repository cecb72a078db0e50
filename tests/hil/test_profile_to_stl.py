"""One profile, two back ends: the built-in profiles compiled to STL stream JSON by each TRex
client (in its own venv and process) describe exactly the packets the local generator writes
to its pcap — rebuilt from the JSON with scapy, compared byte for byte, stream by stream — at
the same rates and start times."""

from __future__ import annotations

from pathlib import Path

import pytest
from scapy.utils import RawPcapReader

from hil.perf.bench import BUILTIN_PROFILES, resolve_profile
from hil.traffic.localgen import pcap_of
from hil.traffic.profile import compile_profile, load_profile
from hil.trex import venv
from hil.trex.client import compile_streams
from simulator.config import UserError
from tests.hil.stl_rebuild import rebuild

N = 200  # packets compared per stream
MULT = 3.0


def _client(name: str) -> str:
    try:
        venv.client_python(name)
    except UserError as e:
        pytest.skip(f"no venv for the {name!r} TRex client: {e}")
    return name


@pytest.mark.parametrize("client", ["stl", "official"])
@pytest.mark.parametrize("profile", BUILTIN_PROFILES)
def test_stl_json_and_local_generator_send_the_same_packets(client: str, profile: str, tmp_path: Path):
    _client(client)
    prog = compile_profile(load_profile(resolve_profile(profile)), dst_mac="02:6d:70:66:00:02",
                           src_mac="02:6d:70:66:00:01")
    streams = compile_streams(prog, client, mult=MULT)
    assert len(streams) == len(prog.streams)
    for s, js in zip(prog.streams, streams):
        pcap = pcap_of(prog, N, tmp_path / f"{s.name}.pcap", mult=MULT, streams=(s,))
        local = [bytes(data) for data, _meta in RawPcapReader(str(pcap))]
        assert len(local) == N
        assert rebuild(js, N) == local, f"{profile}/{s.name}: {client} JSON and mlb_gen's pcap differ"
        want = s.rate_pps if s.latency else s.rate_pps * MULT
        assert js["mode"]["rate"]["value"] == pytest.approx(want)
        assert js["isg"] == pytest.approx(s.start_s * 1e6)
