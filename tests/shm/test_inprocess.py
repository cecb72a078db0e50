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
