"""simulator/shm.py on its own and against the C side: format/attach, file handling, bad input
(clear errors from both readers, file byte-for-byte unchanged), weights, status, sequences."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from simulator import shm
from simulator.shm import ShmError, ShmRegion

from .shm_pattern import in_frame_ok, in_weights, out_frame_ok


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def c_check(tool: Path, path: Path) -> dict:
    out = subprocess.run([str(tool), "check", str(path)], capture_output=True, text=True)
    return json.loads(out.stdout)


def conform(tool: Path, *args: object) -> dict:
    out = subprocess.run([str(tool), *map(str, args)], capture_output=True, text=True, timeout=60)
    return json.loads(out.stdout.strip().splitlines()[-1])


# ---- in memory ----
def test_format_buffer_and_attach() -> None:
    buf = bytearray(shm.region_size(3, 8, 4, 2))
    r = ShmRegion.format_buffer(buf, 3, 8, 4, 2)
    h = r.header()
    assert h["magic"] == shm.MAGIC and h["version"] == shm.VERSION
    assert h["total_size"] == len(buf)
    assert h["writer_pid"] == os.getpid()
    assert h["agent_pid"] == os.getpid()  # attached as an agent
    assert h["status"]["fallback_timeout_s"] == 1.0
    assert r.latest_out() is None and r.latest_in() is None
    assert r.next_in_seq == 1
    r.close()
    # a second attach of the same memory
    r2 = ShmRegion.from_buffer(buf, role="reader")
    assert r2.max_servers == 3 and r2.reservoir_slots == 8
    with pytest.raises(ShmError, match="needs role 'agent'"):
        r2.write_weights([1.0], 0.0)
    r2.close()
    with pytest.raises(ShmError, match="max_servers must be 1..4096"):
        shm.region_size(4097, 8)
    with pytest.raises(ShmError, match="in_ring_len must be 2..64"):
        shm.region_size(3, 8, 4, 1)
    # 256 + 4 * r64(r64(192 + 3*96) + 3*2*8*16) + 4 * r64(64 + 3*8) = 256 + 4*1280 + 4*128
    with pytest.raises(ShmError, match="buffer of 100 bytes < 5888 needed"):
        ShmRegion.format_buffer(bytearray(100), 3, 8)


def test_write_weights_layout_and_checksum() -> None:
    buf = bytearray(shm.region_size(4, 2, 2, 3))
    r = ShmRegion.format_buffer(buf, 4, 2, 2, 3)
    assert r.write_weights([1.0, 0.5, 0.0, 2.0], now_s=3.25, wall_s=99.0) == 1
    seq2 = r.write_weights(np.array([3.0]), now_s=4.0, wall_s=100.0)
    assert seq2 == 2
    # decode slot 2 % 3 by hand with struct-free byte arithmetic
    assert r.in_frame_stride == 128  # r64(64 + 4 * 8)
    base = r.in_ring_offset + 2 * r.in_frame_stride
    frame = bytes(buf[base : base + r.in_frame_stride])
    words = [int.from_bytes(frame[i : i + 8], "little") for i in range(0, len(frame), 8)]
    assert words[0] == 2
    assert np.frombuffer(frame[16:32], "<f8").tolist() == [4.0, 100.0]
    assert int.from_bytes(frame[32:36], "little") == 1  # n
    assert np.frombuffer(frame[64:72], "<f8")[0] == 3.0
    assert all(w == 0 for w in words[9:])
    expect = (2 * shm.GOLDEN + sum(w * (2 * j + 1) for j, w in enumerate(words[2:]))) % 2**64
    assert words[1] == expect
    assert int.from_bytes(buf[120:128], "little") == 2  # in_seq_latest
    f = r.latest_in()
    assert f is not None and f.seq == 2 and f.weights.tolist() == [3.0] and f.time_s == 4.0
    with pytest.raises(ShmError, match="5 weights > max_servers 4"):
        r.write_weights(np.ones(5), 0.0)
    r.close()


def test_corrupt_frame_is_never_returned() -> None:
    buf = bytearray(shm.region_size(2, 2, 2, 2))
    r = ShmRegion.format_buffer(buf, 2, 2, 2, 2)
    seq = r.write_weights([1.0, 1.0], 0.0)
    off = r.in_ring_offset + (seq % r.in_ring_len) * r.in_frame_stride
    buf[off + 64] ^= 1  # flip a bit of weights[0]
    with pytest.raises(ShmError, match=f"seq {seq} fails its checksum") as e:
        r.latest_in()
    assert e.value.code == shm.E_CHECKSUM
    buf[off + 64] ^= 1
    # only the frame in_seq_latest names: a newer seq in that slot (lapped) is not taken
    assert r.write_weights([2.0], 0.0) == seq + 1
    assert r.write_weights([3.0], 0.0) == seq + 2  # same slot as seq (ring of 2)
    buf[120:128] = seq.to_bytes(8, "little")
    with pytest.raises(ShmError, match="kept changing"):
        r.latest_in()
    buf[120:128] = (seq + 1).to_bytes(8, "little")
    assert r.latest_in().weights.tolist() == [2.0]
    buf[120:128] = (seq + 2).to_bytes(8, "little")
    off = r.in_ring_offset + ((seq + 2) % r.in_ring_len) * r.in_frame_stride
    buf[off : off + 8] = (0).to_bytes(8, "little")  # caught mid-write forever
    with pytest.raises(ShmError, match="kept changing") as e:
        r.latest_in()
    assert e.value.code == shm.E_BUSY
    assert r.retries >= shm.READ_RETRIES
    r.close()


def test_agent_seq_continues_across_restarts() -> None:
    buf = bytearray(shm.region_size(2, 2, 2, 4))
    r = ShmRegion.format_buffer(buf, 2, 2, 2, 4)
    seqs = [r.write_weights([1.0], float(i)) for i in range(6)]
    assert seqs == [1, 2, 3, 4, 5, 6]
    r.close()
    r = ShmRegion.from_buffer(buf)
    assert r.write_weights([1.0], 0.0) == 7  # not 1: the original restarted at 0 each episode
    r.close()
    # latest never updated (crash after the frame commit): the ring slots still tell
    buf[120:128] = (3).to_bytes(8, "little")
    r = ShmRegion.from_buffer(buf)
    assert r.next_in_seq == 8
    r.close()
    # ring wiped, but the data plane's status says it saw seq 41
    r = ShmRegion.from_buffer(buf, role="reader")
    start, end = r.in_ring_offset, r.in_ring_offset + 4 * r.in_frame_stride
    r.close()
    buf[start:end] = bytes(end - start)
    buf[120:128] = bytes(8)
    buf[128 + 16 : 128 + 24] = (41).to_bytes(8, "little")
    r = ShmRegion.from_buffer(buf)
    assert r.write_weights([1.0], 0.0) == 42
    r.close()
    # a corrupt sequence near 2^64 would wrap: the agent refuses, a reader attaches
    buf[120:128] = (2**64 - 1).to_bytes(8, "little")
    with pytest.raises(ShmError, match="beyond 2\\^63") as e:
        ShmRegion.from_buffer(buf)
    assert e.value.code == shm.E_HEADER
    ShmRegion.from_buffer(buf, role="reader").close()


# ---- files ----
def test_create_open_never_truncates(tmp_path: Path) -> None:
    p = tmp_path / "region"
    r = ShmRegion.create(p, 3, 4)
    r.write_weights([1, 2, 3], 1.0)
    r.close()
    size, digest = p.stat().st_size, sha(p)
    assert size == shm.region_size(3, 4)
    with pytest.raises(ShmError, match="already exists"):
        ShmRegion.create(p, 3, 4)
    r = ShmRegion.open(p, role="reader")
    assert r.latest_in().weights.tolist() == [1.0, 2.0, 3.0]
    r.close()
    assert sha(p) == digest  # a reader writes nothing
    r = ShmRegion.create(p, 3, 4, exist_ok=True)
    assert r.write_weights([1, 1, 1], 2.0) == 2
    r.close()
    with pytest.raises(ShmError, match="asked for") as e:
        ShmRegion.create(p, 4, 4, exist_ok=True)
    assert e.value.code == shm.E_MISMATCH
    assert [x.name for x in tmp_path.iterdir()] == ["region"]  # no temporary files left
    with pytest.raises(ShmError, match="cannot open shm region: No such file"):
        ShmRegion.open(tmp_path / "absent")
    assert not (tmp_path / "absent").exists()


def _good_region(tool: Path, path: Path) -> bytes:
    assert conform(tool, "create", path, 3, 4, 4, 4)["rc"] == 0
    conform(tool, "write-out", path, 5)
    return path.read_bytes()


def _bad_inputs(good: bytes) -> dict[str, tuple[bytes, int, str]]:
    def patch(off: int, value: bytes) -> bytes:
        b = bytearray(good)
        b[off : off + len(value)] = value
        return bytes(b)

    return {
        "magic": (patch(0, b"NOTMARLL"), shm.E_MAGIC, "bad magic"),
        "zeros": (bytes(len(good)), shm.E_MAGIC, "bad magic"),
        "version": (patch(8, (1).to_bytes(4, "little")), shm.E_VERSION, "version 1"),
        # a version-2 region (64 servers at most, one active word): found and expected named
        "version2": (patch(8, (2).to_bytes(4, "little")), shm.E_VERSION, "version 2"),
        "too_small": (good[:100], shm.E_TOO_SMALL, "100 bytes, smaller than the 256-byte"),
        "empty": (b"", shm.E_TOO_SMALL, "0 bytes, smaller than the 256-byte"),
        "truncated": (good[:-64], shm.E_TRUNCATED, "truncated"),
        "header_only": (good[:256], shm.E_TRUNCATED, "truncated: 256 bytes"),
        "servers": (patch(24, (4097).to_bytes(4, "little")), shm.E_HEADER, "max_servers"),
        "stride": (patch(48, (7).to_bytes(8, "little")), shm.E_HEADER, "out_frame_stride"),
    }


@pytest.mark.parametrize(
    "case", ["magic", "zeros", "version", "version2", "too_small", "empty", "truncated", "header_only",
             "servers", "stride"]
)
def test_bad_input_both_readers(c_tools: dict[str, Path], tmp_path: Path, case: str) -> None:
    tool = c_tools["lb_rl_shm_conform"]
    p = tmp_path / "region"
    content, code, needle = _bad_inputs(_good_region(tool, p))[case]
    p.write_bytes(content)
    digest = sha(p)
    for role in ("reader", "agent"):
        with pytest.raises(ShmError) as e:
            ShmRegion.open(p, role=role)
        assert e.value.code == code
        assert str(p) in str(e.value) and needle in str(e.value), str(e.value)
        if case.startswith("version"):  # the version found and the one expected
            assert f"supports {shm.VERSION}" in str(e.value), str(e.value)
        with pytest.raises(ShmError):
            ShmRegion.create(p, 3, 4, role=role, exist_ok=True)
    c = c_check(tool, p)
    assert c["rc"] == code, c
    assert str(p) in c["error"], c
    if case not in ("servers", "stride"):  # C words those two differently
        assert needle.split(":")[0] in c["error"], c
    if case.startswith("version"):
        assert f"(this build reads {shm.VERSION})" in c["error"], c
    assert sha(p) == digest  # byte-for-byte unchanged after every attempt
    assert p.stat().st_size == len(content)


def test_c_writer_python_reader_small(c_tools: dict[str, Path], tmp_path: Path) -> None:
    tool = c_tools["lb_rl_shm_conform"]
    p = tmp_path / "region"
    assert conform(tool, "create", p, 5, 3, 4, 4)["rc"] == 0
    r = ShmRegion.open(p, role="reader")
    assert r.latest_out() is None
    for n, last in ((1, 1), (6, 7)):
        conform(tool, "write-out", p, n)
        f = r.latest_out()
        assert f is not None and f.seq == last
        assert out_frame_ok(f, 5, 3)
    # the pattern check can fail: a changed field is caught
    f = r.latest_out()
    f.servers["packets"][2] += 1
    assert not out_frame_ok(f, 5, 3)
    f = r.latest_out()
    f.samples_SRK2[4, 1, 0, 1] += 1.0
    assert not out_frame_ok(f, 5, 3) or f.servers["fill"][4, 1] == 0
    assert f.reservoir(0, 0).shape == (int(f.servers["fill"][0, 0]), 2)
    assert f.present == [i for i in range(5) if (7 >> i) & 1]
    r.close()


def test_python_writer_c_reader_small(c_tools: dict[str, Path], tmp_path: Path) -> None:
    tool = c_tools["lb_rl_shm_conform"]
    p = tmp_path / "region"
    r = ShmRegion.create(p, 6, 2)
    for _ in range(5):
        q = r.next_in_seq
        r.write_weights(in_weights(q, 6), now_s=float(q), wall_s=q + 0.5)
    f = r.latest_in()
    assert f is not None and in_frame_ok(f, 6)
    res = conform(tool, "read-in", p, 5, 5.0)
    assert res["clean"] and res["last_seq"] == 5 and res["torn"] == 0, res
    # a frame that breaks the pattern is reported by the C reader
    r.write_weights([1.0], now_s=6.0, wall_s=6.5)
    res = conform(tool, "read-in", p, 6, 5.0)
    assert not res["clean"] and res["torn"] == 1, res
    r.close()


def _patch_in_count(path: Path, r: ShmRegion, seq: int, n: int) -> None:
    """Rewrite msg_in frame seq's count to n (any value) and its checksum to match."""
    off = r.in_ring_offset + (seq % r.in_ring_len) * r.in_frame_stride
    with open(path, "r+b") as fh:
        fh.seek(off)
        frame = bytearray(fh.read(r.in_frame_stride))
        frame[32:36] = n.to_bytes(4, "little")
        words = np.frombuffer(bytes(frame), dtype="<u8")
        frame[8:16] = shm.checksum(words[2:].copy(), seq).to_bytes(8, "little")
        fh.seek(off)
        fh.write(frame)


def test_python_agent_c_dataplane(c_tools: dict[str, Path], tmp_path: Path) -> None:
    """A Python agent's weights go through the real C poll path; Python sees the verdicts."""
    tool = c_tools["lb_rl_shm_conform"]
    p = tmp_path / "region"
    agent = ShmRegion.create(p, 4, 3)  # servers 0..2 will be present, 3 absent

    def dataplane(t1: float, t2: float) -> dict:
        return conform(tool, "dataplane", p, 3, t1, t2)

    # accepted: weights in force and in the published frame; status says so
    seq = agent.write_weights([0.5, 2.0, 1.0], now_s=1.0)
    d = dataplane(10.0, 10.1)
    assert (d["poll1"], d["poll2"]) == (1, 0)  # APPLIED, then NONE
    assert d["weights"] == [0.5, 2.0, 1.0, 0.0]
    st = agent.status()
    assert st.in_seq_applied == seq and st.weights_accepted == 1 and st.last_verdict == shm.W_OK
    assert st.last_accept_time_s == 10.0
    f = agent.latest_out()
    assert f is not None and f.seq == d["out_seq"] and f.in_seq_applied == seq
    assert f.servers["weight"].tolist() == [0.5, 2.0, 1.0, 0.0] and f.active == 0b111
    # each invalid vector is rejected with its verdict; the data plane keeps its (static) weights
    # (n = 5 > S: our writer refuses it, so it comes as a foreign writer's frame: n patched
    # into a committed frame and the checksum made to match)
    cases = [([float("nan"), 1, 1], shm.W_NONFINITE), ([1, -1, 1], shm.W_NEGATIVE),
             ([0, 0, 0], shm.W_ALL_ZERO), ([1, 1, 1, 1], shm.W_ABSENT_SERVER),
             ([1, 1, 1, 0, 1], shm.W_BAD_COUNT), ([], shm.W_BAD_COUNT)]
    for i, (w, verdict) in enumerate(cases):
        q = agent.write_weights(w[: agent.max_servers], now_s=2.0 + i)
        if len(w) > agent.max_servers:
            _patch_in_count(p, agent, q, len(w))
        d = dataplane(20.0, 20.1)
        assert d["poll1"] == 2, (w, d)  # REJECTED
        assert d["weights"] == [1.0, 2.0, 3.0, 0.0]  # this fresh context's static weights
        st = agent.status()
        assert st.last_verdict == verdict, (w, st)
        assert st.weights_rejected == i + 1 and st.in_seq_applied == seq
    # silent agent: the default 1 s timeout from the first poll puts static weights in force
    d = dataplane(30.0, 31.0)
    assert (d["poll1"], d["poll2"]) == (0, 3)  # NONE, FALLBACK
    st = agent.status()
    assert st.fallback_active and st.fallback_count == 1
    assert agent.latest_out().fallback_active
    agent.close()
