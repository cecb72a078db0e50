"""Experiment configuration: the typed schema behind `marllb sim run CONFIG.yaml`.

A YAML file only overrides these defaults; `--set a.b=value` overrides the file.
Every validation error names the dotted field path (e.g. ``traffic.job.mean_s``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Sequence

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

__all__ = [
    "UserError",
    "ConfigError",
    "ServerSpec",
    "LinkSpec",
    "TopologyConfig",
    "JobConfig",
    "TrafficConfig",
    "PolicyConfig",
    "LbConfig",
    "EventConfig",
    "BackgroundConfig",
    "ServerEffectsConfig",
    "JobComponent",
    "HilConfig",
    "ExperimentConfig",
    "POLICY_NAMES",
    "load_config",
    "parse_config",
    "apply_overrides",
]

POLICY_NAMES = ("ecmp", "wcmp", "awcmp", "lsq", "sed", "lsq2", "sed2", "gsq", "gsed", "srt", "sed_true", "sed_now",
                "agent")


class UserError(Exception):
    """A mistake in user input (config, trace file, CLI argument); the message is ready to print.

    The CLI prints it without a traceback and exits non-zero."""


class ConfigError(UserError, ValueError):
    """A user error in a config file or override; the message names the file and field path."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ServerSpec(_Strict):
    """One backend server (Apache-like)."""

    cores: float = Field(gt=0, description="CPU capacity shared by requests in service")
    workers: int = Field(32, ge=1, description="max requests in service (MaxRequestWorkers)")
    backlog: int = Field(128, ge=0, description="accepted connections waiting for a worker; beyond: refused")


class LinkSpec(_Strict):
    """Default link parameters for links the topology does not specify."""

    bandwidth_bps: float = Field(10e9, gt=0)
    delay_s: float = Field(50e-6, ge=0, description="one-way propagation delay")
    queue_pkts: int = Field(1000, ge=1, description="drop-tail queue capacity")


class TopologyConfig(_Strict):
    """Either a registered preset (with optional parameters) or an explicit LB count and server list."""

    preset: str | None = Field(None, description="name in topologies.PRESETS, e.g. moderate")
    params: dict[str, Any] = Field(default_factory=dict, description="preset parameters")
    lbs: int | None = Field(None, ge=1)
    servers: list[ServerSpec] | None = None
    clients: int = Field(1, ge=1)
    link: LinkSpec = Field(default_factory=LinkSpec)

    @model_validator(mode="after")
    def _preset_or_explicit(self) -> "TopologyConfig":
        if self.preset is None and (self.lbs is None or not self.servers):
            raise ValueError("give either 'preset' or both 'lbs' and a non-empty 'servers' list")
        return self


class JobComponent(_Strict):
    """One request type of a ``mixture``: its share of requests and its size distribution."""

    weight: float = Field(gt=0, description="relative share of requests of this type")
    dist: Literal["exp", "lognormal", "pareto", "deterministic"] = "exp"
    mean_s: float = Field(gt=0, description="mean CPU seconds of this type")
    sigma: float = Field(1.0, gt=0, description="lognormal: sigma of the underlying normal")
    alpha: float = Field(2.5, gt=1, description="pareto: tail index")


class JobConfig(_Strict):
    """CPU work per request, in seconds on one core, and an optional non-CPU part."""

    dist: Literal["exp", "lognormal", "pareto", "deterministic", "empirical", "mixture"] = "exp"
    mean_s: float = Field(0.2, gt=0)
    sigma: float = Field(1.0, gt=0, description="lognormal: sigma of the underlying normal")
    alpha: float = Field(2.5, gt=1, description="pareto: tail index (mean finite for alpha > 1)")
    path: str | None = Field(None, description="empirical: file with one size in seconds per line")
    components: list[JobComponent] | None = Field(
        None, description="mixture: request types (e.g. many cheap static pages and a tail of expensive "
        "ones); mean_s is then ignored: the mean is the components' weighted mean")
    io_s: float = Field(0.0, ge=0, description="mean time a request holds its worker without using the CPU "
                        "(blocking I/O, a database or cache call), before its CPU work; 0 = none")
    io_dist: Literal["exp", "deterministic"] = Field("exp", description="distribution of the non-CPU time")

    @model_validator(mode="after")
    def _dist_needs_its_fields(self) -> "JobConfig":
        if self.dist == "empirical" and not self.path:
            raise ValueError("dist 'empirical' needs 'path'")
        if self.dist == "mixture" and not self.components:
            raise ValueError("dist 'mixture' needs a non-empty 'components' list")
        if self.dist != "mixture" and self.components:
            raise ValueError(f"'components' is for dist 'mixture', not {self.dist!r}")
        return self


class TrafficConfig(_Strict):
    """Request arrivals. `rate` (flows/s) or `load` (fraction of total server capacity) for poisson/diurnal."""

    kind: Literal["poisson", "trace", "diurnal"] = "poisson"
    rate: float | None = Field(None, gt=0, description="mean arrivals per second")
    load: float | None = Field(None, gt=0, description="rate = load * sum(cores) / job.mean_s")
    path: str | None = Field(None, description="trace: CSV 'time,size' or MARLLB 'time<TAB>query'")
    work_per_iteration_s: float = Field(
        5.45e-8, gt=0, description="trace: CPU seconds per PHP loop iteration (n=...) of a MARLLB trace"
    )
    period_s: float = Field(60.0, gt=0, description="diurnal: length of one day-cycle")
    peak_to_trough: float = Field(2.0, ge=1, description="diurnal: ratio of max to min rate")
    request_bytes: int = Field(300, ge=1)
    response_bytes: int = Field(10_000, ge=1)
    close: Literal["rst", "fin"] = Field(
        "rst", description="how clients close: RST (MARLLB's SO_LINGER 0 clients) or FIN handshake"
    )
    job: JobConfig = Field(default_factory=JobConfig)

    @model_validator(mode="after")
    def _needs_rate_or_path(self) -> "TrafficConfig":
        if self.kind == "trace":
            if not self.path:
                raise ValueError("kind 'trace' needs 'path'")
        elif (self.rate is None) == (self.load is None):
            raise ValueError(f"kind '{self.kind}' needs exactly one of 'rate' or 'load'")
        return self


class PolicyConfig(_Strict):
    name: Literal[POLICY_NAMES] = "sed"  # type: ignore[valid-type]
    checkpoint: str | None = None
    probe_interval_s: float = Field(0.25, gt=0, description="awcmp: probe period")
    probe_delay_s: tuple[float, float] = Field((0.05, 0.2), description="awcmp: probe delay U(lo, hi)")

    @model_validator(mode="after")
    def _agent_needs_checkpoint(self) -> "PolicyConfig":
        if self.name == "agent" and not self.checkpoint:
            raise ValueError("policy 'agent' needs 'checkpoint'")
        return self


class LbConfig(_Strict):
    """Data-plane core parameters per LB (see vpp_plugin/core/lb_rl_core.h)."""

    step_s: float = Field(0.25, gt=0, description="agent step / shm frame period")
    reservoir_size: int = Field(128, ge=1)
    sample_prob: float = Field(1.0, gt=0, le=1)
    flow_timeout_s: float = Field(40.0, gt=0)
    syn_timeout_s: float = Field(3.0, gt=0, description="idle timeout of a pending flow (SYN seen, "
                                 "not established); pending flows count toward SED/LSQ load")
    table_size: int = Field(1 << 16, ge=2, le=1 << 30, description="flow-table entries per LB, a "
                            "power of two; 72 bytes each (64-byte entry, 4-byte tag, 4-byte due hint)")
    record_every: int = Field(1, ge=0, description="write the steps table's rows (one per LB and server) "
                              "every n-th step; 0: none. At data-center scale each step is LBs x servers rows")
    shm_dir: str | None = Field(
        None, description="also write each LB's shm region to the file <shm_dir>/lb<k>.shm (k = 1..) "
        "for an agent in another process (then a frame every step); default: regions in memory "
        "only, a frame on the steps whose features are read")

    @model_validator(mode="after")
    def _pow2(self) -> "LbConfig":
        if self.table_size & (self.table_size - 1):
            raise ValueError("table_size must be a power of two")
        return self


class EventConfig(_Strict):
    """A run-time change of one server."""

    at_s: float = Field(ge=0)
    server: int = Field(ge=0, description="server index (0-based, topology order)")
    kind: Literal["capacity", "fail", "recover"]
    cores: float | None = Field(None, gt=0, description="capacity: the new core count")

    @model_validator(mode="after")
    def _capacity_needs_cores(self) -> "EventConfig":
        if self.kind == "capacity" and self.cores is None:
            raise ValueError("kind 'capacity' needs 'cores'")
        return self


class BackgroundConfig(_Strict):
    """Co-located background load on servers, as MARLLB's colocate.py (30 s busy every 45 s).

    Alternating on/off periods; while on, ``fraction`` of each chosen server's cores is taken
    away from the requests (a capacity change of the processor-sharing server)."""

    servers: list[int] | None = Field(None, description="server indices (0-based); default all")
    fraction: float = Field(0.5, gt=0, lt=1, description="share of the cores taken while on")
    on_s: float = Field(30.0, gt=0, description="mean length of a busy burst")
    off_s: float = Field(15.0, ge=0, description="mean gap between bursts; 0 = always on")
    dist: Literal["exp", "deterministic"] = Field(
        "exp", description="period lengths: exponential with those means (each server "
        "independent, starting in its stationary on/off state) or fixed (all start off at t=0)")


class ServerEffectsConfig(_Strict):
    """Hidden server effects: what the LB cannot see (its weights and features use ``cores``).

    Per chosen server, the requests in CPU service n share a total rate (CPU-seconds of work per
    second)

        R(n) = speed * (min(n, P) + smt_gain * clamp(n - P, 0, C - P)) / (1 + contention * max(0, n - C))

    with C = cores * (1 - background) logical CPUs available and P = C / threads_per_core
    physical cores; each request progresses at R(n) / n. With the defaults R(n) = min(n, C):
    today's processor sharing. A request's non-CPU part (``traffic.job.io_s``) goes through
    ``io_slots`` parallel slots of a shared resource (a database connection pool; FIFO beyond),
    or no limit."""

    servers: list[int] | None = Field(None, description="server indices (0-based); default all")
    speed: float = Field(1.0, gt=0, description="work done per CPU-second relative to a nominal core "
                         "(older CPUs, lower clocks)")
    threads_per_core: int = Field(1, ge=1, le=8, description="SMT: logical CPUs per physical core "
                                  "(the nominal cores count logical CPUs)")
    smt_gain: float = Field(0.25, ge=0, le=1, description="extra work a physical core does per additional "
                            "busy hardware thread (Intel: 'up to 30 %')")
    contention: float = Field(0.0, ge=0, description="throughput loss per request in CPU service beyond "
                              "the logical CPUs (cache and memory pressure): R is divided by 1 + contention * excess")
    io_slots: int | None = Field(None, ge=1, description="parallel slots of the shared resource the non-CPU "
                                 "part uses (e.g. database connections); default unlimited")


class RealtimeConfig(_Strict):
    """Pacing of a simulation to the wall clock (``marllb hil run`` with simulated parts)."""

    factor: float = Field(1.0, gt=0, le=1000, description="simulated seconds per wall-clock second (1 = real time)")
    max_lag_s: float | None = Field(None, gt=0, description="stop with an error when an event runs this much later than its wall time (default: best effort, lag only measured)")
    spin_s: float = Field(0.001, ge=0, le=0.1, description="busy-wait this long before each event's wall time instead of sleeping (a sleep's wake-up can be ms late on a VM; costs CPU)")


class HilConfig(_Strict):
    """What is real in a hardware-in-the-loop run (`marllb hil run`); the simulator ignores it.

    The swap matrix: ``traffic`` (sim: simulated clients; client: the real open-loop client;
    trex: a TRex generator), ``lb`` (sim: the core in process; host: `lb_rl_host` on veth;
    vpp: VPP with lb_rl), ``servers`` (sim or apache), ``agent`` (inproc: the policy in the
    run's process; process: `marllb hil controller` per LB on shm files). With simulated parts
    the run is the simulation paced to the wall clock (``realtime``). On the all-real testbed each
    server's Apache gets a CPU quota of ``cores x cpu_per_core`` CPUs, so one simulated core is
    ``cpu_per_core`` real CPUs and a job of ``work_s`` simulated seconds is sent as the PHP loop
    count that takes ``work_s`` at that speed."""

    traffic: Literal["sim", "client", "trex"] = Field("client", description="request source: sim (simulated clients), client (the real open-loop client), trex")
    lb: Literal["sim", "host", "vpp"] = Field("host", description="data plane: sim (the core in process), host (lb_rl_host on AF_PACKET), vpp (VPP with lb_rl; needs VPP_PREFIX)")
    servers: Literal["sim", "apache"] = Field("apache", description="backends: sim, or Apache prefork + mod_php on the testbed")
    agent: Literal["inproc", "process"] = Field("process", description="policy: inproc (in the run's process), process (`marllb hil controller` per LB on the shm files)")
    realtime: RealtimeConfig = Field(default_factory=RealtimeConfig, description="pacing of runs with simulated parts")
    cpu_per_core: float = Field(0.04, gt=0, le=1, description="real CPUs per simulated core: CPU quota of each Apache worker; a server's is cores x this")
    fallback_s: float = Field(1.0, gt=0, description="data plane's static-weight fallback after agent silence")
    health: Literal["tcp", "http", "none"] = Field(
        "tcp", description="controller's health probe of each server (tcp: connect; http: GET work.php?n=0, "
        "which also fails on a server too busy to answer within the probe timeout)")
    request_timeout_s: float = Field(10.0, gt=0, description="client gives up on a request after this long")
    packet_timeout_s: float = Field(0.05, gt=0, le=5, description="gateway (lb: host|vpp with simulated traffic): a packet the real LB has not forwarded after this long is lost")
    queue_size: int = Field(65536, ge=16, description="gateway: bound of the queue of captured frames (a full queue drops, counted)")


class ExperimentConfig(_Strict):
    name: str = "experiment"
    seed: int = 0
    duration_s: float = Field(60.0, gt=0)
    warmup_s: float = Field(0.0, ge=0)
    topology: TopologyConfig = Field(default_factory=lambda: TopologyConfig(preset="unittest"))
    traffic: TrafficConfig = Field(default_factory=lambda: TrafficConfig(load=0.7))
    policy: PolicyConfig = Field(default_factory=PolicyConfig)
    lb: LbConfig = Field(default_factory=LbConfig)
    events: list[EventConfig] = Field(default_factory=list)
    background: BackgroundConfig | None = Field(None, description="co-located load; default none")
    effects: list[ServerEffectsConfig] = Field(
        default_factory=list, description="hidden server effects (effective capacity, SMT, contention, "
        "shared resources); a server in at most one entry; default none")
    hil: HilConfig = Field(default_factory=HilConfig, description="hardware in the loop: what is real")

    @model_validator(mode="after")
    def _warmup_inside(self) -> "ExperimentConfig":
        if self.warmup_s >= self.duration_s:
            raise ValueError("warmup_s must be smaller than duration_s")
        return self


def yaml_line(text: str | None, loc: Sequence[str | int]) -> int | None:
    """The 1-based line of the YAML node at path ``loc`` (mapping keys and list indices) in
    ``text``, or of its deepest existing ancestor; None without text or for unparsable text."""
    if not text:
        return None
    try:
        node = yaml.compose(text)
    except yaml.YAMLError:
        return None
    line = None
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            match = [(k, v) for k, v in node.value if k.value == str(part)]
            if not match:
                break
            key, node = match[0]
            line = key.start_mark.line + 1
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and 0 <= part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            break
    return line


def _format_errors(err: ValidationError, source: str, text: str | None = None,
                   overridden: Sequence[str] = ()) -> str:
    lines = [f"{source}: invalid config"]
    for e in err.errors():
        path = ".".join(str(p) for p in e["loc"]) or "(top level)"
        # a value set by --set has no line in the file
        from_file = not any(path == k or path.startswith(k + ".") for k in overridden)
        line = yaml_line(text, e["loc"]) if from_file else None
        where = f"line {line}: " if line else ""
        lines.append(f"  {where}{path}: {e['msg']}")
    return "\n".join(lines)


def set_path(data: dict[str, Any], dotted: str, value: Any, where: str) -> None:
    """``data[a][b][c] = value`` for ``dotted`` = ``a.b.c``, creating missing sections; ConfigError
    starting with ``where`` when a part of the path is not a section."""
    node = data
    parts = dotted.split(".")
    for part in parts[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"{where}: '{part}' is not a section")
        node = child
    node[parts[-1]] = value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply `a.b.c=value` strings (value parsed as YAML) to a nested dict, in place."""
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set {item!r}: expected key=value")
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError as exc:
            raise ConfigError(f"--set {item!r}: value is not valid YAML ({exc})") from None
        set_path(data, key, value, f"--set {item!r}")
    return data


def parse_config(data: dict[str, Any], source: str = "<config>", text: str | None = None,
                 overridden: Sequence[str] = ()) -> ExperimentConfig:
    """Validate a config mapping; ConfigError naming ``source`` and each field path (and its line,
    when ``text`` is the YAML the mapping was read from and ``overridden`` does not name the path)."""
    try:
        return ExperimentConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_format_errors(err, source, text, overridden)) from None


def read_yaml_mapping(path: str | Path, what: str = "config") -> tuple[dict[str, Any], str]:
    """(the mapping, the text) of a YAML file; ConfigError naming the file when it cannot be
    read, is not YAML, or its top level is not a mapping."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read {what} ({exc.strerror})") from None
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping")
    return data, text


def load_config(path: str | Path, overrides: list[str] | None = None) -> ExperimentConfig:
    """Read, override and validate a YAML config. Raises ConfigError with field paths."""
    data, text = read_yaml_mapping(path)
    apply_overrides(data, overrides or [])
    return parse_config(data, str(path), text, [o.partition("=")[0] for o in overrides or []])
