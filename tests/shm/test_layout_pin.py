"""Pin the Python mirror (simulator/shm.py) to the C header: every constant, struct size and
field offset/size, and the strides/offsets of formatted regions, as the C compiler reports them."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

from simulator import shm

STRUCTS = {
    "header": shm.HEADER_DTYPE,
    "status": shm.STATUS_DTYPE,
    "out_frame": shm.OUT_FRAME_DTYPE,
    "server": shm.SERVER_DTYPE,
    "in_frame": shm.IN_FRAME_DTYPE,
    "sample": shm.SAMPLE_DTYPE,
}


def c_layout(tool: Path, *params: int) -> dict:
    out = subprocess.run([str(tool), *map(str, params)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def test_constants_match_c(c_tools: dict[str, Path]) -> None:
    c = c_layout(c_tools["lb_rl_shm_layout"])["constants"]
    assert c["LB_RL_SHM_MAGIC"] == shm.MAGIC
    assert shm.MAGIC.to_bytes(8, "little") == b"MARLLBSH"
    assert c["LB_RL_SHM_VERSION"] == shm.VERSION
    assert c["LB_RL_SHM_HEADER_SIZE"] == shm.HEADER_SIZE
    assert c["LB_RL_SHM_ALIGN"] == shm.ALIGN
    assert c["LB_RL_SHM_MAX_RES_SLOTS"] == shm.MAX_RES_SLOTS
    assert c["LB_RL_SHM_MIN_RING"] == shm.MIN_RING
    assert c["LB_RL_SHM_MAX_RING"] == shm.MAX_RING
    assert c["LB_RL_SHM_OUT_FRAME_HDR_SIZE"] == shm.OUT_FRAME_HDR_SIZE
    assert c["LB_RL_SHM_SERVER_SIZE"] == shm.SERVER_SIZE
    assert c["LB_RL_SHM_IN_FRAME_HDR_SIZE"] == shm.IN_FRAME_HDR_SIZE
    assert c["LB_RL_SHM_OUT_ACTIVE_OFFSET"] == shm.OUT_ACTIVE_OFFSET
    assert c["LB_RL_SHM_PAYLOAD_OFFSET"] == shm.PAYLOAD_OFFSET
    assert c["LB_RL_MAX_SERVERS"] == shm.MAX_SERVERS == 4096
    assert c["LB_RL_DEFAULT_MAX_SERVERS"] == shm.DEFAULT_MAX_SERVERS
    assert c["LB_RL_N_RES"] == shm.N_RES
    assert c["LB_RL_SHM_DEFAULT_FALLBACK_MS"] == shm.DEFAULT_FALLBACK_MS


@pytest.mark.parametrize("struct", sorted(STRUCTS))
def test_struct_fields_match_c(c_tools: dict[str, Path], struct: str) -> None:
    layout = c_layout(c_tools["lb_rl_shm_layout"])
    dt = STRUCTS[struct]
    assert dt.itemsize == layout["sizeof"][struct]
    c_fields = layout[struct]
    if struct == "in_frame":
        # C's flexible array weights[] starts where the Python fixed part ends
        assert c_fields.pop("weights") == [shm.IN_FRAME_HDR_SIZE, 8]
    # same field names in the same order, same offset and size each
    assert list(dt.names) == list(c_fields)
    for name, (offset, size) in c_fields.items():
        fdt, foff = dt.fields[name][:2]
        assert (foff, fdt.itemsize) == (offset, size), f"{struct}.{name}"


@pytest.mark.parametrize(
    "params",
    [(64, 128, 4, 4), (1, 1, 2, 2), (7, 9, 3, 5), (2, 4, 2, 2), (33, 100, 64, 64),
     (65, 3, 2, 2), (1024, 16, 2, 3), (4095, 2, 2, 2), (4096, 1, 2, 2)],
)
def test_formatted_region_matches_c(c_tools: dict[str, Path], params: tuple[int, ...]) -> None:
    p = c_layout(c_tools["lb_rl_shm_layout"], *params)["params"]
    s, k, n_out, n_in = params
    assert shm.out_stride(s, k) == p["out_frame_stride"]
    assert shm.servers_offset(s) == p["out_servers_offset"]
    assert shm.samples_offset(s) == p["out_samples_offset"]
    assert shm.in_stride(s) == p["in_frame_stride"]
    assert shm.region_size(s, k, n_out, n_in) == p["total_size"]
    # a region formatted by Python has the header C writes
    buf = bytearray(shm.region_size(s, k, n_out, n_in))
    with shm.ShmRegion.format_buffer(buf, s, k, n_out, n_in, role="reader") as r:
        h = r.header()
    for field in ("max_servers", "reservoir_slots", "out_ring_len", "in_ring_len",
                  "out_frame_stride", "out_servers_offset", "out_samples_offset",
                  "out_ring_offset", "in_ring_offset", "in_frame_stride", "total_size"):
        assert h[field] == p[field], field


def test_stride_formula_by_hand() -> None:
    # independent arithmetic (SHM.md examples): S=64, K=128 -> one bitmap word, servers at
    # r64(136) = 192, samples at 192 + 64*96 = 6336, + 64*2*128*16 = 262144; msg_in r64(576)
    assert shm.out_stride(64, 128) == 6336 + 64 * 2 * 128 * 16
    assert shm.in_stride(64) == 576
    assert shm.out_stride(2, 4) == 640
    assert shm.in_stride(2) == 128
    assert shm.region_size(64, 128) == 256 + 4 * 268480 + 4 * 576
    # S=1024: 16 words -> servers at 256, samples at 256 + 98304 = 98560
    assert shm.servers_offset(1024) == 256
    assert shm.out_stride(1024, 128) == 98560 + 1024 * 2 * 128 * 16 == 4_292_864
    assert shm.in_stride(1024) == 64 + 8 * 1024 == 8256
    # S=4096: 64 words -> servers at 640, samples at 640 + 393216 = 393856
    assert shm.out_stride(4096, 128) == 393856 + 4096 * 2 * 128 * 16 == 17_171_072
    assert shm.out_stride(4096, 16) == 2_491_008
    assert shm.region_size(4096, 128) == 256 + 4 * 17_171_072 + 4 * 32_832
    assert all(shm.out_stride(s, k) % 64 == 0 and shm.in_stride(s) % 64 == 0
               for s in (*range(1, 130, 9), 1000, 4096) for k in (1, 3, 128))


@pytest.mark.parametrize("s", [0, 4097])
def test_max_servers_range(s: int) -> None:
    with pytest.raises(shm.ShmError, match=f"max_servers must be 1..4096, got {s}"):
        shm.region_size(s, 4)


def test_checksum_matches_definition() -> None:
    rng = np.random.default_rng(5)
    words = rng.integers(0, 2**63, size=30, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
    seq = 123456789
    expect = seq * 0x9E3779B97F4A7C15
    for j, w in enumerate(words.tolist()):
        expect += w * (2 * j + 1)
    assert shm.checksum(words, seq) == expect % 2**64
