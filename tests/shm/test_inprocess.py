"""The simulator's in-process use: the C core formats a region in plain memory (through the cffi
binding) and the Python mirror reads/writes the same bytes. Skips without the compiled binding."""

from __future__ import annotations

import pytest

from simulator import shm
from simulator.shm import ShmRegion


def test_c_region_in_memory_python_agent() -> None:
    core = pytest.importorskip("simulator._lbcore", reason="cffi binding not built (pip install -e .)")
    ffi, lib = core.ffi, core.lib
    p = ffi.new("lb_rl_shm_params_t *", [5, 8, 4, 4])
    size = lib.lb_rl_shm_size(p)
    assert size == shm.region_size(5, 8, 4, 4)
    mem = ffi.new("uint64_t[]", size // 8)  # 8-byte aligned
    assert lib.lb_rl_shm_format(mem, size, p) == 0
    dp = ffi.new("lb_rl_shm_t **")
    assert lib.lb_rl_shm_attach(mem, size, lib.LB_RL_SHM_ROLE_DATAPLANE, dp) == 0
    cfg = ffi.new("lb_rl_config_t *")
    lib.lb_rl_config_default(cfg)
    cfg.max_servers, cfg.table_size, cfg.reservoir_size = 5, 1024, 8
    ctx = lib.lb_rl_create(cfg)
    assert ctx != ffi.NULL
    for i in range(3):
        assert lib.lb_rl_server_add(ctx, i, 1.0) == 0
    key = ffi.new("lb_rl_5tuple_t *")
    key.proto, key.dst_port = 6, 80
    for i in range(30):
        key.src_port = 1000 + i
        lib.lb_rl_process(ctx, 0.01 * i, key, lib.LB_RL_TCP_SYN, 60)
        lib.lb_rl_process(ctx, 0.01 * i + 0.001, key, lib.LB_RL_TCP_ACK, 52)
    seq = ffi.new("uint64_t *")
    assert lib.lb_rl_shm_publish(dp[0], ctx, 1.5, 2.5, seq) == 0

    agent = ShmRegion.from_buffer(ffi.buffer(mem, size))
    f = agent.latest_out()
    assert f is not None and f.seq == seq[0] == 1 and f.time_s == 1.5 and f.active == 0b111
    sc = ffi.new("lb_rl_server_counters_t *")
    for i in range(5):
        lib.lb_rl_server_counters(ctx, i, sc)
        assert f.servers["n_flow_on"][i] == sc.n_flow_on
        assert f.servers["packets"][i] == sc.packets
    assert int(f.servers["n_flow_on"].sum()) == 30
    assert f.counters["packets"] == 60

    agent.write_weights([1.0, 3.0, 0.5], now_s=1.6)
    assert lib.lb_rl_shm_poll_in(dp[0], ctx, 1.7, 0.0) == lib.LB_RL_SHM_POLL_APPLIED
    w = ffi.new("double[5]")
    lib.lb_rl_get_weights(ctx, w)
    assert list(w) == [1.0, 3.0, 0.5, 0.0, 0.0]
    assert agent.status().in_seq_applied == 1
    agent.close()
    lib.lb_rl_shm_close(dp[0])
    lib.lb_rl_destroy(ctx)


def test_in_place_read_equals_the_copy_and_is_checked_as_one() -> None:
    """latest_out(in_place=True) (the simulation's reader, in the writer's thread) returns the
    same frame as the verified copy, as read-only views of the region's bytes; a frame whose
    bytes no longer match its checksum is refused in place exactly as in a copy."""
    import numpy as np

    pytest.importorskip("simulator._lbcore", reason="cffi binding not built (pip install -e .)")
    from simulator.dataplane import DataPlaneCore

    core = DataPlaneCore(max_servers=6, table_size=1024, reservoir_size=8)
    core.add_servers([1.0, 2.0, 1.0, 4.0])
    for i in range(40):
        key = (0x0A000001 + i, 0x0A0000FE, 1000 + i, 80)
        core.process(0.01 * i, key, 0x02, 60)  # SYN
        core.process(0.01 * i + 0.002, key, 0x10, 52)  # ACK: established
        core.process(0.01 * i + 0.004, key, 0x10, 52)  # ACK: a flow-duration sample
    pub = core.open_shm(ring_len=2)
    reader = ShmRegion.from_buffer(pub.buffer, role="reader")
    pub.publish(1.25, 7.0)
    copy, view = reader.latest_out(), reader.latest_out(in_place=True)
    assert copy is not None and view is not None
    for name in ("seq", "time_s", "wall_s", "active", "n_active", "tracked_flows", "counters"):
        assert getattr(view, name) == getattr(copy, name), name
    assert view.seq == 1 and view.time_s == 1.25 and view.active == 0b1111
    assert np.array_equal(view.servers, copy.servers)
    assert np.array_equal(view.samples_SRK2, copy.samples_SRK2, equal_nan=True)
    assert int(view.servers["n_flow_on"].sum()) == 40 and view.servers["fill"].any()
    region = np.frombuffer(pub.buffer, dtype=np.uint8)
    assert np.shares_memory(view.samples_SRK2, region) and not np.shares_memory(copy.samples_SRK2, region)
    assert not view.servers.flags.writeable and not view.samples_SRK2.flags.writeable
    # a flipped payload bit: both readers refuse the frame (its seq still names it)
    off = reader.out_ring_offset + (view.seq % reader.out_ring_len) * reader.out_frame_stride
    region_w = np.frombuffer(pub.buffer, dtype=np.uint8)
    region_w[off + reader.out_servers_offset] ^= 1
    for in_place in (False, True):
        with pytest.raises(shm.ShmError, match="seq 1 fails its checksum") as e:
            reader.latest_out(in_place=in_place)
        assert e.value.code == shm.E_CHECKSUM
    region_w[off + reader.out_servers_offset] ^= 1
    assert reader.latest_out(in_place=True).seq == 1
    reader.close()
    pub.close()
