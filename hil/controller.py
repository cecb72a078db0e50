"""The real-time controller: one LB's agent loop against a data plane's shm region.

Every ``step_s`` (wall clock) the controller

1. reads the newest msg_out frame (``ShmRegion.latest_out``: a seqlock copy, never torn);
2. builds the observation with the simulator's shared code (``simulator.features`` for
   heuristics; the RL env's observation builder for checkpoints -- the same function the policy
   was trained with, injected as ``observe``);
3. runs the policy (a heuristic or a checkpoint through ``agents.deploy``, imported lazily);
4. masks the weights with the servers' health (a down server gets weight 0; it gets its policy
   weight back when healthy) and the frame's present-server bitmap (the data plane rejects a
   weight > 0 for an absent server);
5. writes the weights as the next msg_in frame (``ShmRegion.write_weights``).

Failover. A step fails when there is no frame, the frame cannot be read, the policy raises or
returns invalid weights (wrong length, non-finite, negative, all zero), the decision came later than
``deadline_s`` after the step started (overrun: the decision is discarded), or the write fails.
A failed step keeps the last good policy weights (still masked with current health and written, so
the data plane's own silence fallback does not fire); after ``fallback_after`` consecutive failed
steps the controller writes the static weights instead until a step succeeds again.

A stale frame (its seq equals the last one read: the data plane has not published since) is not a
failure: it is counted, the policy is not run again on the same data (recurrent policies would
advance their state twice), and the last policy weights are written with the current health mask.

Stopping. ``run`` returns after the step in progress when its ``stop`` event is set; the CLI sets
it from SIGTERM/SIGINT, then closes the region, the health prober and the metrics endpoint and
exits 0.

Units: times in seconds (``_s``); frame time stamps are the data plane's clocks; the ``now_s`` we
write into msg_in frames is this process's ``time.monotonic()``.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Protocol, Sequence

import numpy as np

from hil.health import HealthChecker
from simulator import features
from simulator.actions import action_weights
from simulator.config import UserError
from simulator.shm import OutFrame, ShmRegion

if TYPE_CHECKING:
    from hil.metrics import ControllerMetrics

__all__ = [
    "ObsBuilder",
    "WeightPolicy",
    "StaticPolicy",
    "FlowWeightedPolicy",
    "CheckpointPolicy",
    "make_heuristic",
    "HEURISTICS",
    "feature_observation",
    "resolve_obs_builder",
    "StepResult",
    "Controller",
    "JsonLogFormatter",
]

log = logging.getLogger("marllb.hil.controller")

ObsBuilder = Callable[[OutFrame, int], np.ndarray]
"""``observe(frame, n_servers) -> observation`` (a feature matrix or a flat float32 vector)."""


def feature_observation(frame: OutFrame, n_servers: int) -> np.ndarray:
    """Per-server feature matrix (n_servers, len(features.FEATURE_NAMES)) of the frame: the
    simulator's own :func:`simulator.features.frame_features` (shared code, not a copy)."""
    return features.frame_features(frame, n_servers)


def resolve_obs_builder(spec: str) -> ObsBuilder:
    """``"module:function"`` -> that function (an ``ObsBuilder``). Raises UserError."""
    import importlib

    mod_name, sep, fn_name = spec.partition(":")
    if not sep or not mod_name or not fn_name:
        raise UserError(f"--obs-builder {spec!r}: expected MODULE:FUNCTION")
    try:
        mod = importlib.import_module(mod_name)
    except ImportError as e:
        raise UserError(f"--obs-builder {spec!r}: cannot import {mod_name}: {e}") from None
    fn = getattr(mod, fn_name, None)
    if not callable(fn):
        raise UserError(f"--obs-builder {spec!r}: {mod_name} has no function {fn_name}")
    return fn  # type: ignore[no-any-return]


# ---------------------------------------------------------------------------------------------
# policies
# ---------------------------------------------------------------------------------------------

class WeightPolicy(Protocol):
    """What the controller runs each step: observation -> one weight per server (n_servers,)."""

    name: str

    def weights(self, frame: OutFrame, obs: np.ndarray) -> np.ndarray:
        ...


class StaticPolicy:
    """Static weights: ``ecmp`` all 1; ``wcmp``/``sed``/``static`` w_i = cores_i (with the data
    plane's SED or alias policy this is the paper's SED / WCMP)."""

    def __init__(self, name: str, cores: Sequence[float]) -> None:
        self.name = name
        self.w = np.ones(len(cores)) if name == "ecmp" else np.asarray(cores, dtype=np.float64)

    def weights(self, frame: OutFrame, obs: np.ndarray) -> np.ndarray:
        return self.w.copy()


class FlowWeightedPolicy:
    """AWCMP-like, from the data plane's own counters: w_i = cores_i / (n_flow_on_i + 1), where
    n_flow_on is column ``n_flow_on`` of the shared feature matrix (the LB's established flows
    per server stand in for AWCMP's probed busy workers)."""

    name = "awcmp"

    def __init__(self, cores: Sequence[float]) -> None:
        self.cores = np.asarray(cores, dtype=np.float64)

    def weights(self, frame: OutFrame, obs: np.ndarray) -> np.ndarray:
        n_on = features.as_dict(obs)["n_flow_on"]
        return self.cores / (np.maximum(n_on, 0.0) + 1.0)


HEURISTICS = ("ecmp", "wcmp", "sed", "static", "awcmp")


def make_heuristic(name: str, cores: Sequence[float]) -> WeightPolicy:
    """A heuristic policy by name (see HEURISTICS). Raises UserError for an unknown name."""
    if name == "awcmp":
        return FlowWeightedPolicy(cores)
    if name in ("ecmp", "wcmp", "sed", "static"):
        return StaticPolicy(name, cores)
    raise UserError(f"--policy {name!r}: unknown; known: {', '.join(HEURISTICS)} "
                    "(or --checkpoint PATH)")


class CheckpointPolicy:
    """A trained SAC-GRU/QMIX checkpoint (``agents.deploy.load_policy``, imported here, lazily:
    needs the ``rl`` extra) acting as agent ``agent`` (default: the checkpoint's first agent).

    The observation must be the flat vector the env produced in training (``obs_dim`` long):
    build it with the env's observation builder. Actions map to weights as in the env
    (:func:`simulator.actions.action_weights`, the checkpoint's action kind and scale; a
    relative-scale checkpoint scales ``cores``, the LB's static weights)."""

    def __init__(self, path: str, agent: str | None = None, n_servers: int | None = None,
                 cores: Sequence[float] | None = None) -> None:
        try:
            from agents.deploy import load_policy
        except ImportError as e:  # torch missing
            raise UserError(f"--checkpoint needs the rl extra (torch): {e}") from None
        self.cores = None if cores is None else np.asarray(cores, dtype=np.float64)
        self.policy = load_policy(path)
        self.sig = self.policy.signature
        self.agent = agent or self.sig.agents[0]
        if self.agent not in self.sig.agents:
            raise UserError(f"--agent {self.agent!r}: checkpoint agents are {list(self.sig.agents)}")
        if n_servers is not None and n_servers != self.sig.n_servers:
            raise UserError(f"checkpoint {path} was trained for {self.sig.n_servers} servers; "
                            f"--servers gives {n_servers}")
        if self.sig.action_scale == "relative" and self.cores is None:
            raise UserError(f"checkpoint {path} sets weights relative to the static ones: give --cores")
        self.name = f"checkpoint:{path}"
        self.policy.reset()

    def weights(self, frame: OutFrame, obs: np.ndarray) -> np.ndarray:
        o = np.asarray(obs, dtype=np.float32).reshape(-1)
        if o.shape[0] != self.sig.obs_dim:
            raise UserError(f"observation has {o.shape[0]} values, the checkpoint expects "
                            f"{self.sig.obs_dim}: wrong observation builder?")
        act = np.asarray(self.policy.act({self.agent: o}, deterministic=True)[self.agent])
        return action_weights(act, scale=self.sig.action_scale, continuous=self.sig.action_kind == "continuous",
                              static=self.cores)


# ---------------------------------------------------------------------------------------------
# the loop
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class StepResult:
    """Outcome of one step. ``failure`` is None or a kind of ``metrics.FAILURE_KINDS``;
    ``weights`` is what was written (None if nothing was written); ``latency_s`` is the time from
    the step's start (before the shm read) to the weights written."""

    frame_seq: int
    stale: bool
    failure: str | None
    static_fallback: bool
    weights: np.ndarray | None
    weights_seq: int | None
    latency_s: float
    policy_s: float


class Controller:
    """One LB's real-time controller (see the module docstring for the step and failover rules).

    ``region``: an agent-role ShmRegion; ``n_servers``: servers 0..n-1 of the data plane (as in
    ``--servers``); ``static_weights``: fallback weights (n,); ``observe``: observation builder
    (default :func:`feature_observation`); ``health``: a HealthChecker or None (all healthy);
    ``deadline_s``: a decision later than this after the step start is an overrun (default
    ``step_s``); ``fallback_after``: consecutive failed steps before static weights (>= 1)."""

    def __init__(
        self,
        region: ShmRegion,
        policy: WeightPolicy,
        *,
        n_servers: int,
        static_weights: Sequence[float],
        observe: ObsBuilder | None = None,
        health: HealthChecker | None = None,
        metrics: ControllerMetrics | None = None,
        step_s: float = 0.25,
        deadline_s: float | None = None,
        fallback_after: int = 3,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 1 <= n_servers <= region.max_servers:
            raise UserError(f"{n_servers} servers given; the shm region {region.name} holds "
                            f"1..{region.max_servers}")
        if len(static_weights) != n_servers:
            raise UserError(f"static weights: {len(static_weights)} values for {n_servers} servers")
        sw = np.asarray(static_weights, dtype=np.float64)
        if not (np.all(np.isfinite(sw)) and np.all(sw >= 0) and sw.sum() > 0):
            raise UserError(f"static weights must be finite, >= 0 and not all 0: {sw.tolist()}")
        if not step_s > 0:
            raise UserError(f"--step must be > 0 s, got {step_s}")
        if fallback_after < 1:
            raise UserError(f"--fallback-after must be >= 1, got {fallback_after}")
        if health is not None and len(health.servers) != n_servers:
            raise UserError(f"health checker has {len(health.servers)} servers, expected {n_servers}")
        self.region = region
        self.policy = policy
        self.n = n_servers
        self.static_weights = sw
        self.observe: ObsBuilder = observe or feature_observation
        self.health = health
        self.metrics = metrics
        self.step_s = float(step_s)
        self.deadline_s = float(step_s if deadline_s is None else deadline_s)
        self.fallback_after = fallback_after
        self.clock = clock
        self.last_frame: OutFrame | None = None
        self.last_policy_w: np.ndarray | None = None
        self.consecutive_failures = 0
        self.static_active = False
        self.steps = 0
        self.stale_frames = 0
        self.failures: dict[str, int] = {}

    # ---- one step ----
    def _fail(self, kind: str, msg: str, *args: Any) -> None:
        self.failures[kind] = self.failures.get(kind, 0) + 1
        self.consecutive_failures += 1
        if self.metrics is not None:
            self.metrics.failures.labels(kind=kind).inc()
        log.warning(msg, *args, extra={"event": "failure", "kind": kind,
                                       "consecutive": self.consecutive_failures})

    def _check_weights(self, w: Any) -> np.ndarray | None:
        a = np.asarray(w, dtype=np.float64).reshape(-1)
        if a.shape[0] != self.n or not np.all(np.isfinite(a)) or np.any(a < 0) or a.sum() <= 0:
            return None
        return a

    def _healthy(self) -> np.ndarray:
        return self.health.healthy() if self.health is not None else np.ones(self.n, dtype=bool)

    def step(self) -> StepResult:
        """Run one step now; never raises for data-plane, policy or write faults (they are
        failures, see the module docstring)."""
        t0 = time.perf_counter()
        self.steps += 1
        m = self.metrics
        failure: str | None = None
        stale = False
        policy_s = 0.0
        base: np.ndarray | None = None
        frame: OutFrame | None
        try:
            frame = self.region.latest_out()
        except Exception as e:  # noqa: BLE001 - ShmError (busy/checksum) or a broken mapping
            frame = None
            failure = "read_error"
            self._fail(failure, "shm read failed: %s", e)
        if frame is None and failure is None:
            failure = "no_frame"
            self._fail(failure, "no msg_out frame in %s yet", self.region.name)
        if frame is not None:
            if self.last_frame is not None and frame.seq == self.last_frame.seq:
                stale = True
                self.stale_frames += 1
                if m is not None:
                    m.stale_frames.inc()
                log.debug("stale frame seq %d", frame.seq, extra={"event": "stale", "seq": frame.seq})
            else:
                tp = time.perf_counter()
                try:
                    obs = self.observe(frame, self.n)
                    raw = self.policy.weights(frame, obs)
                except Exception as e:  # noqa: BLE001 - any policy fault is a step failure
                    failure = "policy_error"
                    self._fail(failure, "policy %s raised %s: %s", self.policy.name,
                               type(e).__name__, e)
                    raw = None
                policy_s = time.perf_counter() - tp
                if failure is None:
                    if time.perf_counter() - t0 > self.deadline_s:
                        failure = "overrun"
                        self._fail(failure, "decision took %.1f ms > deadline %.1f ms",
                                   (time.perf_counter() - t0) * 1e3, self.deadline_s * 1e3)
                    else:
                        base = self._check_weights(raw)
                        if base is None:
                            failure = "invalid_weights"
                            self._fail(failure, "policy %s returned invalid weights %r",
                                       self.policy.name, raw)
            self.last_frame = frame
        # ---- choose the weights to write ----
        if failure is None:
            if base is not None:
                self.last_policy_w = base
                self.consecutive_failures = 0
            else:  # stale frame
                base = self.last_policy_w
        static_now = self.consecutive_failures >= self.fallback_after
        if static_now != self.static_active:
            self.static_active = static_now
            if static_now:
                log.error("%d consecutive failed steps: static weights", self.consecutive_failures,
                          extra={"event": "static_fallback", "active": True})
            else:
                log.warning("policy weights again", extra={"event": "static_fallback", "active": False})
        if static_now or base is None:
            base = self.last_policy_w if (not static_now and self.last_policy_w is not None) \
                else self.static_weights
        written: np.ndarray | None = None
        wseq: int | None = None
        if self.last_frame is not None:  # presence is known only from a frame
            healthy = self._healthy()
            present = self.last_frame.present_mask[: self.n]  # any S: a bitmap of u64 words
            up = healthy & present
            w = np.where(up, base, 0.0)
            if w.sum() <= 0 and up.any():  # the policy favoured only down servers
                w = np.where(up, self.static_weights, 0.0)
                if w.sum() <= 0:
                    w = up.astype(np.float64)
            if not up.any():
                if failure is None:
                    failure = "all_down"
                self.failures["all_down"] = self.failures.get("all_down", 0) + 1
                if m is not None:
                    m.failures.labels(kind="all_down").inc()
                log.error("no healthy present server: weights not written",
                          extra={"event": "failure", "kind": "all_down"})
            else:
                try:
                    wseq = self.region.write_weights(w, now_s=self.clock())
                    written = w
                except Exception as e:  # noqa: BLE001
                    if failure is None:
                        failure = "write_error"
                    self._fail("write_error", "writing weights failed: %s", e)
            if m is not None:
                for i in range(self.n):
                    m.server_healthy.labels(server=str(i)).set(1 if healthy[i] else 0)
        latency = time.perf_counter() - t0
        if m is not None:
            m.steps.inc()
            m.step_seconds.observe(latency)
            m.static_fallback.set(1 if self.static_active else 0)
            if self.last_frame is not None:
                m.frame_seq.set(self.last_frame.seq)
                if self.last_frame.wall_s > 0:
                    m.frame_age.set(time.time() - self.last_frame.wall_s)
            if written is not None and wseq is not None:
                m.weights_written.inc()
                m.weights_seq.set(wseq)
                for i in range(self.n):
                    m.server_weight.labels(server=str(i)).set(float(written[i]))
        log.debug("step", extra={"event": "step", "frame_seq": self.last_frame.seq if self.last_frame
                                 else 0, "stale": stale, "failure": failure,
                                 "weights": None if written is None else [round(float(x), 6) for x in written],
                                 "latency_us": round(latency * 1e6, 1)})
        return StepResult(frame_seq=self.last_frame.seq if self.last_frame is not None else 0,
                          stale=stale, failure=failure, static_fallback=self.static_active,
                          weights=written, weights_seq=wseq, latency_s=latency, policy_s=policy_s)

    # ---- the loop ----
    def run(self, stop: threading.Event, max_steps: int | None = None) -> int:
        """Step every ``step_s`` on a fixed wall-clock grid until ``stop`` is set (checked
        between steps: the step in progress always finishes) or ``max_steps`` steps ran. Ticks
        missed because a step ran long are skipped, not replayed. Returns the steps run."""
        n = 0
        t_next = time.monotonic()
        while not stop.is_set() and (max_steps is None or n < max_steps):
            self.step()
            n += 1
            t_next += self.step_s
            now = time.monotonic()
            if now > t_next:  # late: skip to the next tick in the future
                skipped = math.floor((now - t_next) / self.step_s) + 1
                t_next += skipped * self.step_s
                log.warning("step ran long: skipped %d tick(s)", skipped,
                            extra={"event": "skipped_ticks", "n": skipped})
            stop.wait(max(0.0, t_next - time.monotonic()))
        return n


# ---------------------------------------------------------------------------------------------
# logging
# ---------------------------------------------------------------------------------------------

_STD_ATTRS = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}


class JsonLogFormatter(logging.Formatter):
    """One JSON object per line: ``ts`` (wall s), ``level``, ``logger``, ``msg`` and every
    ``extra={...}`` field of the record (e.g. ``event``, ``kind``, ``server``)."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {"ts": round(record.created, 6), "level": record.levelname,
                               "logger": record.name, "msg": record.getMessage()}
        for k, v in record.__dict__.items():
            if k not in _STD_ATTRS and not k.startswith("_"):
                out[k] = v
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


# ---------------------------------------------------------------------------------------------
# command line (`marllb hil controller`)
# ---------------------------------------------------------------------------------------------

def add_arguments(p: Any) -> None:
    """Add the ``marllb hil controller`` options to an argparse parser."""
    p.add_argument("--shm", required=True, metavar="PATH", help="the data plane's shm region file")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--policy", metavar="NAME", help=f"heuristic: {', '.join(HEURISTICS)}")
    g.add_argument("--checkpoint", metavar="PATH", help="trained agent checkpoint (needs torch)")
    p.add_argument("--servers", required=True, metavar="HOST:PORT,...",
                   help="servers in data-plane index order (health probe addresses)")
    p.add_argument("--cores", metavar="C1,C2,...",
                   help="server capacities for static/wcmp/sed/awcmp weights and the base of a "
                        "relative-scale checkpoint's weights (default 1 each)")
    p.add_argument("--step", type=float, default=0.25, metavar="S", help="step period, s (0.25)")
    p.add_argument("--deadline", type=float, metavar="S",
                   help="decision deadline after the step start, s (default: the step)")
    p.add_argument("--metrics-port", type=int, default=9464, metavar="PORT",
                   help="Prometheus /metrics port (9464; 0 = ephemeral; -1 = off)")
    p.add_argument("--metrics-addr", default="0.0.0.0", metavar="ADDR")
    p.add_argument("--health", choices=("tcp", "http", "none"), default="tcp",
                   help="server probe (tcp connect, HTTP GET, none)")
    p.add_argument("--health-timeout", type=float, default=0.2, metavar="S", help="probe timeout, s")
    p.add_argument("--health-path", default="/", metavar="PATH", help="HTTP probe path")
    p.add_argument("--health-interval", type=float, metavar="S", help="probe period (default: --step)")
    p.add_argument("--fallback-after", type=int, default=3, metavar="N",
                   help="consecutive failed steps before static weights (3)")
    p.add_argument("--obs-builder", metavar="MODULE:FUNC",
                   help="observation builder f(frame, n_servers) for --checkpoint (the env's)")
    p.add_argument("--agent", metavar="NAME", help="checkpoint agent to act as (default: first)")
    p.add_argument("--max-steps", type=int, metavar="N", help="stop after N steps (tests)")
    p.add_argument("--log-json", action="store_true", help="JSON-lines logs on stderr")


def _parse_cores(text: str | None, n: int) -> list[float]:
    if text is None:
        return [1.0] * n
    try:
        cores = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise UserError(f"--cores {text!r}: expected comma-separated numbers") from None
    if len(cores) != n:
        raise UserError(f"--cores gives {len(cores)} values for {n} servers")
    if not all(math.isfinite(c) and c >= 0 for c in cores) or sum(cores) <= 0:
        raise UserError(f"--cores {text!r}: values must be finite, >= 0, not all 0")
    return cores


def _default_checkpoint_observer(feature_set: str = "paper") -> ObsBuilder:
    """The RL env's frame -> observation function for the checkpoint's feature set, if
    simulator.envs provides one."""
    import functools

    try:
        import simulator.envs as envs
    except ImportError as e:
        raise UserError("--checkpoint: simulator.envs (the env's observation builder) is not "
                        f"available ({e}); pass --obs-builder MODULE:FUNC") from None
    fn = getattr(envs, "frame_observation", None)
    if not callable(fn):
        raise UserError("--checkpoint: simulator.envs has no frame_observation(frame, n_servers); "
                        "pass --obs-builder MODULE:FUNC")
    return fn if feature_set == "paper" else functools.partial(fn, features=feature_set)  # type: ignore[no-any-return]


def run_from_args(args: Any) -> int:
    """``marllb hil controller``: set everything up, run until SIGTERM/SIGINT (or
    ``--max-steps``), shut down cleanly; returns the exit code (0)."""
    import signal
    import sys

    from hil.health import parse_servers
    from hil.metrics import ControllerMetrics

    if args.log_json:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JsonLogFormatter())
        root = logging.getLogger()
        root.handlers[:] = [handler]
        if root.level == logging.WARNING or root.level == logging.NOTSET:
            root.setLevel(logging.INFO)
    servers = parse_servers(args.servers)
    n = len(servers)
    cores = _parse_cores(args.cores, n)
    observe: ObsBuilder | None = None
    if args.checkpoint:
        # a relative-scale checkpoint needs the real cores, not the default of 1 each
        policy: WeightPolicy = CheckpointPolicy(args.checkpoint, args.agent, n, cores if args.cores else None)
        observe = resolve_obs_builder(args.obs_builder) if args.obs_builder \
            else _default_checkpoint_observer(policy.sig.features)
    else:
        policy = make_heuristic(args.policy, cores)
        if args.obs_builder:
            observe = resolve_obs_builder(args.obs_builder)
    region = ShmRegion.open(args.shm, role="agent")  # ShmError (UserError) names a missing file
    health: HealthChecker | None = None
    metrics: ControllerMetrics | None = None
    stop = threading.Event()
    old: dict[int, Any] = {}
    try:
        health = HealthChecker(servers, args.health, args.health_timeout, http_path=args.health_path)
        metrics = ControllerMetrics(n)
        if args.metrics_port >= 0:
            port = metrics.serve(args.metrics_port, args.metrics_addr)
            log.info("metrics on http://%s:%d/metrics", args.metrics_addr, port,
                     extra={"event": "metrics", "port": port})
        ctl = Controller(region, policy, n_servers=n, static_weights=cores, observe=observe,
                         health=health, metrics=metrics, step_s=args.step, deadline_s=args.deadline,
                         fallback_after=args.fallback_after)

        def on_signal(signum: int, _frame: Any) -> None:
            log.info("signal %d: stopping after this step", signum,
                     extra={"event": "signal", "signal": signum})
            stop.set()

        for sig in (signal.SIGTERM, signal.SIGINT):
            old[sig] = signal.signal(sig, on_signal)
        health.probe_round()  # verdicts before the first step
        health.start(args.health_interval or args.step)
        log.info("controller started: %s, %d servers, step %.3f s", policy.name, n, args.step,
                 extra={"event": "start", "shm": str(args.shm), "policy": policy.name,
                        "servers": [str(s) for s in servers]})
        steps = ctl.run(stop, args.max_steps)
        log.info("controller stopped after %d steps", steps,
                 extra={"event": "stop", "steps": steps, "stale_frames": ctl.stale_frames,
                        "failures": ctl.failures})
    finally:
        for sig, h in old.items():
            signal.signal(sig, h)
        if health is not None:
            health.close()
        if metrics is not None:
            metrics.close()
        region.close()
    return 0
