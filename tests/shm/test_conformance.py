"""Cross-process conformance of the shm seqlock: a C writer process and a Python reader (msg_out),
and a Python writer and a C reader process (msg_in), running concurrently at full speed.

Every frame carries the pattern of its seq (shm_pattern.py / lb_rl_shm_pattern.h) and a checksum;
a torn frame (parts of two frames) would break both. Pass = zero torn frames returned, sequence
numbers strictly increasing over the distinct frames seen, the last frame seen. Rings of 2 frames
(the writer comes back to a slot as soon as possible), K = 4, and two region sizes: 2 servers
(small frames, the most laps) and 1024 servers (layout version 3: a 16-word present bitmap,
230 KB msg_out and 8 KiB msg_in frames).

Default run, S = 2: >= 10^6 frames C -> Python (the C writer goes on for 3 s, several 10^6
frames) and 2 * 10^5 frames Python -> C (Python writes about 10^5 frames/s here); S = 1024:
2 * 10^4 frames each way. ``-m slow`` runs 10^6 frames Python -> C at S = 2, and 10^6 frames
each way at S = 1024 (minutes: the C writer fills ~6 * 10^3 such frames/s)."""

from __future__ import annotations

import json
import logging
import subprocess
import time
from pathlib import Path

import pytest

from simulator import shm
from simulator.shm import ShmError, ShmRegion

from .shm_pattern import in_weights, out_frame_ok

log = logging.getLogger(__name__)
S, K, RING = 2, 4, 2
S_LARGE = 1024
TIME_LIMIT_S = 30.0
WRITER_MIN_S = 3.0


def _create(tool: Path, path: Path, s: int = S) -> None:
    out = subprocess.run([str(tool), "create", str(path), str(s), str(K), str(RING), str(RING)],
                         capture_output=True, text=True, check=True)
    assert json.loads(out.stdout)["rc"] == 0


def _c_writer_python_reader(c_tools: dict[str, Path], tmp_path: Path, s: int, n: int,
                            writer_min_s: float, time_limit_s: float) -> dict:
    tool = c_tools["lb_rl_shm_conform"]
    path = tmp_path / "region"
    _create(tool, path, s)
    r = ShmRegion.open(path, role="reader")
    writer = subprocess.Popen([str(tool), "write-out", str(path), str(n), str(writer_min_s)],
                              stdout=subprocess.PIPE, text=True)
    reads = distinct = torn = nonmono = busy = 0
    last = 0
    t0 = time.monotonic()

    def read_once() -> None:
        nonlocal reads, distinct, torn, nonmono, busy, last
        try:
            f = r.latest_out()
        except ShmError as e:
            assert e.code == shm.E_BUSY, str(e)  # a checksum error would be a failure
            busy += 1
            return
        if f is None:
            return
        reads += 1
        if not out_frame_ok(f, s, K):
            torn += 1
        if f.seq < last:
            nonmono += 1
        elif f.seq > last:
            distinct += 1
            last = f.seq

    try:
        while writer.poll() is None and time.monotonic() - t0 < time_limit_s:
            read_once()
        elapsed = time.monotonic() - t0
    finally:
        if writer.poll() is None and time.monotonic() - t0 >= time_limit_s:
            writer.kill()
        out, _ = writer.communicate(timeout=60)
    w = json.loads(out)
    read_once()  # the writer is done: the final frame must be there, whole
    stats = dict(servers=s, writer_frames=w["frames"], writer_s=w["seconds"], reads=reads,
                 distinct=distinct,
                 torn=torn, nonmonotonic=nonmono, busy=busy, retries=r.retries,
                 checksum_retries=r.checksum_failures, last_seq=last, reader_s=round(elapsed, 3))
    r.close()
    log.info("C writer -> Python reader: %s", stats)
    print("C writer -> Python reader:", stats)
    assert writer.returncode == 0 and w["frames"] >= n and w["last_seq"] == w["frames"]
    assert torn == 0 and nonmono == 0, stats
    assert last == w["last_seq"], stats
    assert distinct >= 2, stats
    return stats


def test_c_writer_python_reader(c_tools: dict[str, Path], tmp_path: Path) -> None:
    # >= 10^6 frames, and the writer keeps going for WRITER_MIN_S so that the (slower) Python
    # reader overlaps it long enough to matter
    _c_writer_python_reader(c_tools, tmp_path, S, 1_000_000, WRITER_MIN_S, TIME_LIMIT_S)


def test_c_writer_python_reader_s1024(c_tools: dict[str, Path], tmp_path: Path) -> None:
    _c_writer_python_reader(c_tools, tmp_path, S_LARGE, 20_000, 0.0, TIME_LIMIT_S)


@pytest.mark.slow
def test_c_writer_python_reader_s1024_1e6(c_tools: dict[str, Path], tmp_path: Path) -> None:
    _c_writer_python_reader(c_tools, tmp_path, S_LARGE, 1_000_000, 0.0, 900.0)


def _python_writer_c_reader(c_tools: dict[str, Path], tmp_path: Path, n: int, s: int = S,
                            time_limit_s: float = TIME_LIMIT_S) -> dict:
    tool = c_tools["lb_rl_shm_conform"]
    path = tmp_path / "region"
    _create(tool, path, s)
    r = ShmRegion.open(path, role="agent")
    assert r.next_in_seq == 1
    reader = subprocess.Popen([str(tool), "read-in", str(path), str(n), str(time_limit_s + 30)],
                              stdout=subprocess.PIPE, text=True)
    time.sleep(0.05)  # let the reader map the region
    weights = [in_weights(q, s) for q in range(1, s + 1)]  # pattern: q + arange(1 + q % S)
    t0 = time.monotonic()
    try:
        for q in range(1, n + 1):
            w = weights[(q - 1) % s] + (q - 1 - (q - 1) % s)
            seq = r.write_weights(w, now_s=float(q), wall_s=q + 0.5)
            assert seq == q
            if (q & 0xFFF) == 0 and time.monotonic() - t0 > time_limit_s:
                pytest.fail(f"Python writer too slow: {q} frames in {time_limit_s} s")
        write_s = time.monotonic() - t0
    finally:
        try:
            out, _ = reader.communicate(timeout=time_limit_s + 60)
        finally:
            if reader.poll() is None:
                reader.kill()
            r.close()
    res = json.loads(out)
    res["servers"] = s
    res["writer_frames"] = n
    res["writer_s"] = round(write_s, 3)
    res["writer_frames_per_s"] = round(n / write_s)
    log.info("Python writer -> C reader: %s", res)
    print("Python writer -> C reader:", res)
    assert reader.returncode == 0 and res["clean"], res
    assert res["torn"] == 0 and res["nonmonotonic"] == 0 and res["checksum_errors"] == 0, res
    assert res["last_seq"] == n, res
    return res


def test_python_writer_c_reader(c_tools: dict[str, Path], tmp_path: Path) -> None:
    _python_writer_c_reader(c_tools, tmp_path, 200_000)


@pytest.mark.slow
def test_python_writer_c_reader_1e6(c_tools: dict[str, Path], tmp_path: Path) -> None:
    _python_writer_c_reader(c_tools, tmp_path, 1_000_000)


def test_python_writer_c_reader_s1024(c_tools: dict[str, Path], tmp_path: Path) -> None:
    _python_writer_c_reader(c_tools, tmp_path, 20_000, S_LARGE)


@pytest.mark.slow
def test_python_writer_c_reader_s1024_1e6(c_tools: dict[str, Path], tmp_path: Path) -> None:
    _python_writer_c_reader(c_tools, tmp_path, 1_000_000, S_LARGE, time_limit_s=600.0)


def test_pattern_weights_helper() -> None:
    # the writer's fast path computes the same weights as the pattern definition
    for q in range(1, 50):
        fast = in_weights(((q - 1) % S) + 1, S) + (q - 1 - (q - 1) % S)
        assert fast.tolist() == in_weights(q, S).tolist()
