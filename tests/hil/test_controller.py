"""The real-time controller against a data plane written in C (the core + its shm writer and
poll): weights computed from real frames, fault injection (stale frames, policy exceptions,
overruns, invalid weights, dead servers) and what the data plane applies after its poll."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from hil.controller import Controller, FlowWeightedPolicy, StaticPolicy, StepResult, feature_observation
from hil.health import HealthChecker, ServerAddr
from simulator import features
from simulator.shm import ShmRegion

from .conftest import CoreRegion, TcpServer, lib

CORES = [1.0, 2.0, 4.0]


class FaultyPolicy:
    """Weights w (3,) unless told to raise, sleep or return garbage on the next calls."""

    name = "faulty"

    def __init__(self, w: list[float]) -> None:
        self.w = np.asarray(w, dtype=np.float64)
        self.mode: list[str] = []
        self.calls = 0

    def weights(self, frame: object, obs: np.ndarray) -> np.ndarray:
        self.calls += 1
        mode = self.mode.pop(0) if self.mode else "ok"
        if mode == "raise":
            raise RuntimeError("injected policy fault")
        if mode == "sleep":
            time.sleep(0.06)
        if mode == "nan":
            return np.array([1.0, np.nan, 1.0])
        return self.w.copy()


def _controller(cr: CoreRegion, policy: object, **kw: object) -> tuple[Controller, ShmRegion]:
    region = ShmRegion.open(cr.path, role="agent")
    ctl = Controller(region, policy, n_servers=3, static_weights=CORES, **kw)  # type: ignore[arg-type]
    return ctl, region


def _applied_step(cr: CoreRegion, policy: object, observe: object) -> tuple[Controller, ShmRegion, StepResult]:
    """Five open flows published, one controller step: it succeeds and the core applies its weights."""
    cr.open_flows(5)
    cr.publish()
    ctl, region = _controller(cr, policy, observe=observe)
    r = ctl.step()
    assert r.failure is None
    assert cr.poll() == lib.LB_RL_SHM_POLL_APPLIED
    np.testing.assert_allclose(cr.weights(3), r.weights)
    return ctl, region, r


def test_awcmp_weights_from_a_real_frame_are_applied_by_the_core(core_region: CoreRegion) -> None:
    cr = core_region
    chosen = cr.open_flows(14)
    n_on = np.bincount(chosen, minlength=3)  # independent truth: the servers the core chose
    assert n_on.sum() == 14 and (n_on > 0).sum() >= 2
    cr.publish()
    seen: list[np.ndarray] = []

    def observe(frame, n):  # the shared feature code, recorded for the check below
        obs = feature_observation(frame, n)
        seen.append(obs)
        return obs

    ctl, region = _controller(cr, FlowWeightedPolicy(CORES), observe=observe)
    r = ctl.step()
    assert r.failure is None and not r.stale and r.frame_seq == 1
    expect = np.array(CORES) / (n_on + 1)  # w_i = cores_i / (n_flow_on_i + 1)
    np.testing.assert_allclose(r.weights, expect)
    assert seen[0].shape == (3, len(features.FEATURE_NAMES))
    np.testing.assert_array_equal(seen[0][:, 0], n_on)
    assert cr.poll() == lib.LB_RL_SHM_POLL_APPLIED
    np.testing.assert_allclose(cr.weights(3), expect)
    assert region.status().in_seq_applied == r.weights_seq
    region.close()


def test_no_frame_yet_is_a_failure_and_writes_nothing(core_region: CoreRegion) -> None:
    ctl, region = _controller(core_region, StaticPolicy("wcmp", CORES))
    r = ctl.step()
    assert r.failure == "no_frame" and r.weights is None
    assert region.in_seq_latest == 0
    assert core_region.poll() == lib.LB_RL_SHM_POLL_NONE
    region.close()


def test_stale_frame_counted_policy_not_rerun_weights_still_written(core_region: CoreRegion) -> None:
    cr = core_region
    cr.open_flows(5)
    cr.publish()
    pol = FaultyPolicy([1.0, 1.5, 2.0])
    ctl, region = _controller(cr, pol)
    r1 = ctl.step()
    r2 = ctl.step()  # no publish in between: same frame seq
    assert not r1.stale and r2.stale and r2.failure is None
    assert ctl.stale_frames == 1 and pol.calls == 1
    assert r2.weights_seq == r1.weights_seq + 1  # the agent seq keeps advancing
    np.testing.assert_allclose(r2.weights, [1.0, 1.5, 2.0])
    cr.publish()
    r3 = ctl.step()
    assert not r3.stale and pol.calls == 2 and r3.frame_seq == 2
    region.close()


def test_policy_exception_keeps_last_weights_then_static(core_region: CoreRegion) -> None:
    cr = core_region
    pol = FaultyPolicy([2.0, 1.0, 1.0])
    ctl, region = _controller(cr, pol, fallback_after=2)

    def step_and_poll() -> tuple[object, np.ndarray]:
        cr.open_flows(1)
        cr.publish()
        r = ctl.step()
        assert cr.poll() == lib.LB_RL_SHM_POLL_APPLIED
        return r, cr.weights(3)

    r, w = step_and_poll()
    assert r.failure is None
    np.testing.assert_allclose(w, [2.0, 1.0, 1.0])
    pol.mode = ["raise", "raise", "raise"]
    r, w = step_and_poll()  # 1st failure: last good weights
    assert r.failure == "policy_error" and not r.static_fallback
    np.testing.assert_allclose(w, [2.0, 1.0, 1.0])
    r, w = step_and_poll()  # 2nd consecutive failure: static weights (cores)
    assert r.failure == "policy_error" and r.static_fallback
    np.testing.assert_allclose(w, CORES)
    r, w = step_and_poll()  # still failing: still static
    assert r.static_fallback
    np.testing.assert_allclose(w, CORES)
    r, w = step_and_poll()  # policy recovers
    assert r.failure is None and not r.static_fallback
    np.testing.assert_allclose(w, [2.0, 1.0, 1.0])
    assert ctl.failures == {"policy_error": 3}
    region.close()


def test_overrun_and_invalid_weights_keep_last_weights(core_region: CoreRegion) -> None:
    cr = core_region
    pol = FaultyPolicy([1.0, 2.0, 1.0])
    ctl, region = _controller(cr, pol, deadline_s=0.03, fallback_after=5)
    cr.publish()
    assert ctl.step().failure is None
    pol.w = np.array([5.0, 5.0, 1.0])
    pol.mode = ["sleep", "nan"]
    cr.publish()
    r = ctl.step()  # decision after 60 ms > 30 ms deadline: discarded
    assert r.failure == "overrun"
    np.testing.assert_allclose(r.weights, [1.0, 2.0, 1.0])
    cr.publish()
    r = ctl.step()
    assert r.failure == "invalid_weights"
    np.testing.assert_allclose(r.weights, [1.0, 2.0, 1.0])
    assert cr.poll() == lib.LB_RL_SHM_POLL_APPLIED
    np.testing.assert_allclose(cr.weights(3), [1.0, 2.0, 1.0])
    cr.publish()
    r = ctl.step()
    assert r.failure is None
    np.testing.assert_allclose(r.weights, [5.0, 5.0, 1.0])
    region.close()


def test_dead_server_gets_weight_zero_in_the_core_and_returns(
        core_region: CoreRegion, tcp_servers: list[TcpServer]) -> None:
    cr = core_region
    addrs = [ServerAddr("127.0.0.1", s.port) for s in tcp_servers]
    health = HealthChecker(addrs, "tcp", timeout_s=0.2)
    ctl, region = _controller(cr, StaticPolicy("wcmp", CORES), health=health)
    try:
        assert health.probe_round().all()
        cr.publish()
        ctl.step()
        assert cr.poll() == lib.LB_RL_SHM_POLL_APPLIED
        np.testing.assert_allclose(cr.weights(3), CORES)

        tcp_servers[2].stop()  # the biggest server dies
        assert health.probe_round().tolist() == [True, True, False]
        cr.publish()
        r = ctl.step()
        np.testing.assert_allclose(r.weights, [1.0, 2.0, 0.0])
        assert cr.poll() == lib.LB_RL_SHM_POLL_APPLIED
        np.testing.assert_allclose(cr.weights(3), [1.0, 2.0, 0.0])
        # the data plane sends no new flow to it (SED with weight 0)
        assert 2 not in cr.open_flows(30)

        tcp_servers[2].start()  # same port again
        assert health.probe_round().all()
        cr.publish()
        ctl.step()
        assert cr.poll() == lib.LB_RL_SHM_POLL_APPLIED
        np.testing.assert_allclose(cr.weights(3), CORES)
        assert 2 in cr.open_flows(30)

        for s in tcp_servers:
            s.stop()
        assert not health.probe_round().any()
        cr.publish()
        r = ctl.step()  # nobody healthy: nothing written, the core keeps its weights
        assert r.failure == "all_down" and r.weights is None
        assert cr.poll() == lib.LB_RL_SHM_POLL_NONE
    finally:
        health.close()
        region.close()


def test_weights_only_for_present_servers(tmp_path: Path) -> None:
    cr = CoreRegion(tmp_path / "p.shm", [1.0, 1.0, 1.0])
    cr.core.remove_server(1)
    cr.publish()
    ctl, region = _controller(cr, StaticPolicy("wcmp", CORES))
    r = ctl.step()
    np.testing.assert_allclose(r.weights, [1.0, 0.0, 4.0])  # absent server 1 -> 0
    assert cr.poll() == lib.LB_RL_SHM_POLL_APPLIED  # a weight > 0 for it would be rejected
    np.testing.assert_allclose(cr.weights(3), [1.0, 0.0, 4.0])
    region.close()
    cr.close()


def test_run_loop_steps_on_the_grid_and_stops(core_region: CoreRegion) -> None:
    import threading

    cr = core_region
    cr.publish()
    ctl, region = _controller(cr, StaticPolicy("sed", CORES), step_s=0.02)
    stop = threading.Event()
    threading.Timer(0.25, stop.set).start()
    t0 = time.monotonic()
    n = ctl.run(stop)
    dt = time.monotonic() - t0
    # ~0.25 s / 0.02 s = 12.5 ticks; allow scheduling slack on a loaded 2-core machine
    assert 6 <= n <= 14 and dt < 1.0
    assert ctl.stale_frames == n - 1  # one frame published, the rest of the steps saw it again
    region.close()


def test_checkpoint_policy_weights_reach_the_core(core_region: CoreRegion, tmp_path: Path) -> None:
    pytest.importorskip("torch", reason="checkpoint policies need torch (rl extra)")
    from agents.common.spaces import WEIGHT_LEVELS, EnvSignature
    from agents.sac_gru import SacGruAgent, SacGruConfig

    from hil.controller import CheckpointPolicy
    from simulator.config import UserError

    obs_dim = 3 * len(features.FEATURE_NAMES)
    sig = EnvSignature(("lb0",), n_servers=3, obs_dim=obs_dim, state_dim=obs_dim)
    ckpt = tmp_path / "a.pt"
    SacGruAgent(SacGruConfig(hidden=16), sig).save(ckpt)
    with pytest.raises(UserError, match="trained for 3 servers"):
        CheckpointPolicy(str(ckpt), n_servers=4)
    pol = CheckpointPolicy(str(ckpt), n_servers=3)

    def flat(frame, n):  # flattening only, for the test; deployments use the env's builder
        return np.nan_to_num(feature_observation(frame, n)).reshape(-1)

    cr = core_region
    ctl, region, r = _applied_step(cr, pol, observe=flat)
    assert set(np.round(r.weights, 6)) <= set(np.round(WEIGHT_LEVELS, 6))
    cr.publish()
    ctl.observe = lambda frame, n: np.zeros(5)  # wrong observation size: a policy failure
    assert ctl.step().failure == "policy_error"
    region.close()


@pytest.mark.parametrize("agent_net", ["flat", "servers"])
def test_relative_checkpoint_scales_the_cores_it_is_given(core_region: CoreRegion, tmp_path: Path,
                                                          agent_net: str) -> None:
    pytest.importorskip("torch", reason="checkpoint policies need torch (rl extra)")
    from agents.common.spaces import EnvSignature
    from agents.sac_gru import SacGruAgent, SacGruConfig

    from hil.controller import CheckpointPolicy
    from simulator.actions import RELATIVE_FACTORS
    from simulator.config import UserError

    obs_dim = 3 * len(features.FEATURE_NAMES)
    sig = EnvSignature(("lb0",), n_servers=3, obs_dim=obs_dim, state_dim=obs_dim, action_scale="relative")
    ckpt = tmp_path / "rel.pt"
    SacGruAgent(SacGruConfig(hidden=16, agent_net=agent_net), sig).save(ckpt)
    with pytest.raises(UserError, match="relative to the static ones: give --cores"):
        CheckpointPolicy(str(ckpt), n_servers=3)
    cores = np.array([1.0, 2.0, 4.0])
    pol = CheckpointPolicy(str(ckpt), n_servers=3, cores=cores)
    cr = core_region
    cr.open_flows(5)
    cr.publish()
    ctl, region = _controller(cr, pol, observe=lambda frame, n: np.nan_to_num(feature_observation(frame, n)).reshape(-1))
    r = ctl.step()
    assert r.failure is None
    factors = r.weights / cores  # every weight is a level's factor on its server's cores
    assert np.isclose(factors[:, None], RELATIVE_FACTORS).any(axis=1).all()
    assert cr.poll() == lib.LB_RL_SHM_POLL_APPLIED
    np.testing.assert_allclose(cr.weights(3), r.weights)
    region.close()


def test_capacity_driven_qmix_checkpoint_reaches_the_core(core_region: CoreRegion, tmp_path: Path) -> None:
    """A QMIX checkpoint whose actions follow its capacity head (continuous factors, not levels):
    the weights the core applies are the cores times the factors the same checkpoint's policy
    gives for the same frame, loaded independently."""
    pytest.importorskip("torch", reason="checkpoint policies need torch (rl extra)")
    from agents.common.spaces import EnvSignature
    from agents.deploy import load_policy
    from agents.qmix import QmixAgent, QmixConfig

    from hil.controller import CheckpointPolicy

    obs_dim = 3 * len(features.FEATURE_NAMES)
    sig = EnvSignature(("lb0",), n_servers=3, obs_dim=obs_dim, state_dim=obs_dim, action_kind="continuous",
                       action_low=2 ** -1.5, action_high=2.0, action_scale="relative")
    ckpt = tmp_path / "cap.pt"
    QmixAgent(QmixConfig(hidden=16, agent_net="servers", capacity_loss=1.0, capacity_action=True), sig).save(ckpt)
    cores = np.array([1.0, 2.0, 4.0])
    pol = CheckpointPolicy(str(ckpt), n_servers=3, cores=cores)
    cr = core_region
    cr.open_flows(5)
    cr.publish()
    observe = lambda frame, n: np.nan_to_num(feature_observation(frame, n)).reshape(-1)  # noqa: E731
    ctl, region = _controller(cr, pol, observe=observe)
    r = ctl.step()
    assert r.failure is None
    twin = load_policy(str(ckpt))
    assert twin.capacity_action
    want = twin.act({"lb0": observe(region.latest_out(), 3).astype(np.float32)})["lb0"]
    np.testing.assert_allclose(r.weights / cores, want, rtol=1e-5)
    assert cr.poll() == lib.LB_RL_SHM_POLL_APPLIED
    np.testing.assert_allclose(cr.weights(3), r.weights)
    region.close()


def test_robust_feature_checkpoint_gets_its_observation_from_the_frame(core_region: CoreRegion,
                                                                       tmp_path: Path) -> None:
    """A checkpoint trained on the robust feature set: the controller's default observer for it
    (what ``marllb hil controller --checkpoint`` picks from the signature) builds the env's
    19-per-server observation from the real frame, and the weights reach the core; the paper's
    observer would hand the policy the wrong size, a policy failure that writes nothing."""
    pytest.importorskip("torch", reason="checkpoint policies need torch (rl extra)")
    from agents.common.spaces import EnvSignature
    from agents.deploy import load_policy
    from agents.qmix import QmixAgent, QmixConfig

    from hil.controller import CheckpointPolicy, _default_checkpoint_observer

    obs_dim = 3 * len(features.FEATURE_SETS["robust"])
    sig = EnvSignature(("lb0",), n_servers=3, obs_dim=obs_dim, state_dim=obs_dim, features="robust")
    ckpt = tmp_path / "robust.pt"
    QmixAgent(QmixConfig(hidden=16, agent_net="servers"), sig).save(ckpt)
    pol = CheckpointPolicy(str(ckpt), n_servers=3)
    assert pol.sig.features == "robust"
    observe = _default_checkpoint_observer(pol.sig.features)
    cr = core_region
    ctl, region, r = _applied_step(cr, pol, observe=observe)
    obs = observe(region.latest_out(), 3)
    assert obs.shape == (obs_dim,)
    want = load_policy(str(ckpt)).act({"lb0": obs}, deterministic=True)["lb0"]
    np.testing.assert_allclose(r.weights, 1.0 + 0.2 * np.asarray(want))  # absolute levels
    cr.publish()
    ctl.observe = _default_checkpoint_observer("paper")
    assert ctl.step().failure == "policy_error"
    region.close()


def test_controller_at_1024_servers(tmp_path: Path) -> None:
    """A layout-3 region of 1024 servers (a 16-word present bitmap, 8 KiB msg_in frames): the
    controller reads the C publisher's frames, writes one weight per server, and the core's poll
    applies exactly those weights, 0 for servers absent beyond the first bitmap word."""
    n = 1024
    cores = [1.0 + (i % 4) for i in range(n)]
    absent = [70, 700, 1023]  # in words 1, 10 and 15 of the bitmap
    cr = CoreRegion(tmp_path / "big.shm", cores, max_servers=n, slots=4)
    for i in absent:
        cr.core.remove_server(i)
    region = ShmRegion.open(cr.path, role="agent")
    ctl = Controller(region, FlowWeightedPolicy(cores), n_servers=n, static_weights=cores)
    chosen: list[int] = []
    for step in range(3):
        chosen += cr.open_flows(300)
        assert cr.publish() == step + 1
        r = ctl.step()
        assert r.failure is None and r.frame_seq == step + 1
        # independent truth: the flows the core reported opening, per server
        n_on = np.bincount(chosen, minlength=n)
        expect = np.array(cores) / (n_on + 1.0)
        expect[absent] = 0.0
        np.testing.assert_allclose(r.weights, expect)
        f_in = region.latest_in()
        assert f_in is not None and f_in.seq == r.weights_seq
        np.testing.assert_array_equal(f_in.weights, r.weights)  # what landed in msg_in
        assert cr.poll() == lib.LB_RL_SHM_POLL_APPLIED
        np.testing.assert_allclose(cr.weights(n), expect)  # applied by the core
    assert not set(chosen) & set(absent) and len(set(chosen)) > 64
    st = region.status()
    assert st.weights_accepted == 3 and st.weights_rejected == 0
    frame = region.latest_out()
    assert frame is not None and frame.n_active == n - len(absent)
    assert frame.present == [i for i in range(n) if i not in absent]
    region.close()
    cr.close()
