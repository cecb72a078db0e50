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
    assert c["LB_RL_SHM_IN_FRAME_SIZE"] == shm.IN_FRAME_SIZE
    assert c["LB_RL_SHM_PAYLOAD_OFFSET"] == shm.PAYLOAD_OFFSET
    assert c["LB_RL_MAX_SERVERS"] == shm.MAX_SERVERS
    assert c["LB_RL_N_RES"] == shm.N_RES
    assert c["LB_RL_SHM_DEFAULT_FALLBACK_MS"] == shm.DEFAULT_FALLBACK_MS


@pytest.mark.parametrize("struct", sorted(STRUCTS))
def test_struct_fields_match_c(c_tools: dict[str, Path], struct: str) -> None:
    layout = c_layout(c_tools["lb_rl_shm_layout"])
    dt = STRUCTS[struct]
    assert dt.itemsize == layout["sizeof"][struct]
    c_fields = layout[struct]
    # same field names in the same order, same offset and size each
    assert list(dt.names) == list(c_fields)
    for name, (offset, size) in c_fields.items():
        fdt, foff = dt.fields[name][:2]
        assert (foff, fdt.itemsize) == (offset, size), f"{struct}.{name}"


@pytest.mark.parametrize(
    "params", [(64, 128, 4, 4), (1, 1, 2, 2), (7, 9, 3, 5), (2, 4, 2, 2), (33, 100, 64, 64)]
)
def test_formatted_region_matches_c(c_tools: dict[str, Path], params: tuple[int, ...]) -> None:
    p = c_layout(c_tools["lb_rl_shm_layout"], *params)["params"]
    s, k, n_out, n_in = params
    assert shm.out_stride(s, k) == p["out_frame_stride"]
    assert shm.samples_offset(s) == p["out_samples_offset"]
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
    # independent arithmetic (SHM.md): S=64, K=128 -> 128 + 64*96 = 6272 (= 98*64) + 262144
    assert shm.out_stride(64, 128) == 6272 + 64 * 2 * 128 * 16
    assert shm.out_stride(2, 4) == 576
    assert shm.region_size(64, 128) == 256 + 4 * 268416 + 4 * 576
    assert all(shm.out_stride(s, k) % 64 == 0 for s in range(1, 65, 9) for k in (1, 3, 128))


def test_checksum_matches_definition() -> None:
    rng = np.random.default_rng(5)
    words = rng.integers(0, 2**63, size=30, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
    seq = 123456789
    expect = seq * 0x9E3779B97F4A7C15
    for j, w in enumerate(words.tolist()):
        expect += w * (2 * j + 1)
    assert shm.checksum(words, seq) == expect % 2**64
