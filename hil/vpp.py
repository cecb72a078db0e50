"""Drive a VPP instance that runs the ``lb_rl`` plugin.

One method per plugin action (STYLE rule 14), mirroring the action functions
of ``vpp_plugin/lb_rl/lb_rl.c``: :meth:`LbRlVpp.conf`, :meth:`LbRlVpp.add_vip`,
:meth:`LbRlVpp.del_vip`, :meth:`LbRlVpp.add_as`, :meth:`LbRlVpp.del_as`,
:meth:`LbRlVpp.set_weights`, plus reads (:meth:`LbRlVpp.vips`,
:meth:`LbRlVpp.servers`, :meth:`LbRlVpp.stats`, :meth:`LbRlVpp.interface_counters`,
:meth:`LbRlVpp.node_errors`) and :meth:`LbRlVpp.attach_shm`.

Two transports implement the same :class:`VppTransport` protocol:

* :class:`PapiTransport` (primary): VPP's binary API through ``vpp_papi`` over
  the API socket, with message definitions read from the ``*.api.json`` files
  of the VPP install (``<prefix>/share/vpp/api``). ``vpp_papi`` is imported
  lazily, so this module imports without it.
* :class:`CliTransport` (fallback): ``vppctl -s <cli socket> <command>``; the
  commands are built by the ``cli_*`` functions below, which spell exactly the
  grammar of the plugin's ``.short_help`` strings.

:class:`VppProcess` starts a VPP from a startup.conf template and waits for its
sockets; :func:`connect` attaches to a running one.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import logging
import os
import re
import shutil
import string
import subprocess
import time
from pathlib import Path
from typing import Any, Protocol, Sequence

from simulator.shm import MAX_SERVERS as _SHM_MAX_SERVERS

__all__ = [
    "ENCAPS",
    "POLICIES",
    "AsInfo",
    "CliTransport",
    "LbRlVpp",
    "PapiTransport",
    "VipInfo",
    "VppError",
    "VppPaths",
    "VppProcess",
    "VppTransport",
    "api_add_del_as",
    "api_add_del_vip",
    "api_add_del_vip_v2",
    "api_add_del_vip_v3",
    "build_plugin",
    "api_conf",
    "api_set_weights",
    "api_set_weights_v2",
    "cli_as",
    "cli_conf",
    "cli_vip",
    "cli_weights",
    "connect",
    "parse_interface_counters",
    "parse_node_errors",
]

log = logging.getLogger(__name__)

#: Encapsulations, value = the API enum vl_api_lb_rl_encap_t.
ENCAPS: dict[str, int] = {"gre4": 0, "gre6": 1}
#: Policies, value = lb_rl_policy_t of the core and the API enum.
POLICIES: dict[str, int] = {"ecmp": 0, "wcmp": 1, "lsq": 2, "sed": 3, "lsq2": 4, "sed2": 5}
#: The core's bound on servers per VIP (LB_RL_MAX_SERVERS = 4096, the shm layout's max_servers);
#: a VIP holds 64 unless created with ``max_servers``.
MAX_SERVERS = _SHM_MAX_SERVERS
#: Weights the original ``lb_rl_set_weights`` carries (a u8 count); more go as ``_v2``.
MAX_WEIGHTS_V1 = 255


class VppError(RuntimeError):
    """A VPP call failed: non-zero retval, CLI error text, or no connection."""


@dataclasses.dataclass(frozen=True)
class VppPaths:
    """Where a VPP install and a running instance live.

    ``prefix`` is the install prefix (``/usr`` for Debian packages, or the
    ``VPP_PREFIX`` of a source install); the sockets are those named in the
    startup.conf (``unix { cli-listen }``, ``socksvr { socket-name }``,
    ``statseg { socket-name }``).
    """

    prefix: Path = Path("/usr")
    cli_socket: Path = Path("/run/vpp/cli.sock")
    api_socket: Path = Path("/run/vpp/api.sock")
    stats_socket: Path = Path("/run/vpp/stats.sock")

    @classmethod
    def from_env(cls, run_dir: Path | None = None) -> "VppPaths":
        """Prefix from ``$VPP_PREFIX`` (default ``/usr``); sockets in
        ``run_dir`` if given, else the ``/run/vpp`` defaults."""
        prefix = Path(os.environ.get("VPP_PREFIX", "/usr"))
        if run_dir is None:
            return cls(prefix=prefix)
        return cls(
            prefix=prefix,
            cli_socket=run_dir / "cli.sock",
            api_socket=run_dir / "api.sock",
            stats_socket=run_dir / "stats.sock",
        )

    @property
    def vpp_bin(self) -> Path:
        return self.prefix / "bin" / "vpp"

    @property
    def vppctl_bin(self) -> Path:
        return self.prefix / "bin" / "vppctl"

    @property
    def api_json_dirs(self) -> list[Path]:
        """Directories holding ``*.api.json`` (core and plugins)."""
        base = self.prefix / "share" / "vpp" / "api"
        return [d for d in (base / "core", base / "plugins", base) if d.is_dir()]


# --------------------------------------------------------------------------
# Builders: pure functions, unit-tested without VPP
# --------------------------------------------------------------------------


def _prefix(p: str) -> str:
    """Normalise 'a.b.c.d/len' / 'x::y/len' (a bare address becomes a host
    prefix); raises ValueError on nonsense."""
    return str(ipaddress.ip_network(p, strict=False))


def _address(a: str) -> str:
    return str(ipaddress.ip_address(a))


def _check_encap(encap: str) -> None:
    if encap not in ENCAPS:
        raise ValueError(f"encap must be one of {sorted(ENCAPS)}, got {encap!r}")


def _check_policy(policy: str) -> None:
    if policy not in POLICIES:
        raise ValueError(f"policy must be one of {sorted(POLICIES)}, got {policy!r}")


def _check_weights(weights: Sequence[float]) -> list[float]:
    w = [float(x) for x in weights]
    if not 1 <= len(w) <= MAX_SERVERS:
        raise ValueError(f"need 1..{MAX_SERVERS} weights, got {len(w)}")
    return w


def _check_max_servers(n: int) -> int:
    if not 0 <= n <= MAX_SERVERS:
        raise ValueError(f"max_servers {n}: must be in 1..{MAX_SERVERS} (0 = 64)")
    return int(n)


def _check_table_size(n: int) -> int:
    if n != 0 and (n < 1 or n & (n - 1) or n > 1 << 30):
        raise ValueError(f"flow_table_size {n}: must be a power of two <= 2^30 (0 = VPP's default)")
    return int(n)


def cli_vip(prefix: str, encap: str = "gre4", delete: bool = False, flow_table_size: int = 0,
            max_servers: int = 0) -> str:
    """``lb_rl vip <prefix> [encap gre4|gre6] [flow-table-size <n>] [max-servers <n>] [del]``
    (size 0: the startup default; max_servers 0: 64)."""
    if delete:
        return f"lb_rl vip {_prefix(prefix)} del"
    _check_encap(encap)
    size = _check_table_size(flow_table_size)
    ms = _check_max_servers(max_servers)
    return (f"lb_rl vip {_prefix(prefix)} encap {encap}" + (f" flow-table-size {size}" if size else "")
            + (f" max-servers {ms}" if ms else ""))


def cli_as(vip: str, addresses: Sequence[str], weight: float = 1.0, delete: bool = False) -> str:
    """``lb_rl as <vip-prefix> <address>... [weight <w>] [del]``."""
    if not addresses:
        raise ValueError("need at least one server address")
    addrs = " ".join(_address(a) for a in addresses)
    if delete:
        return f"lb_rl as {_prefix(vip)} {addrs} del"
    if not weight > 0:
        raise ValueError("static weight must be > 0")
    return f"lb_rl as {_prefix(vip)} {addrs} weight {float(weight)!r}"


def cli_conf(
    policy: str | None = None,
    flow_timeout_s: float | None = None,
    step_s: float | None = None,
    fallback_s: float | None = None,
    ip4_src: str | None = None,
    ip6_src: str | None = None,
    shm_dir: str | None = None,
) -> str:
    """``lb_rl conf [policy P] [timeout S] [step S] [fallback S] [ip4-src A]
    [ip6-src A] [shm DIR]``; only the given fields appear."""
    parts = ["lb_rl conf"]
    if policy is not None:
        _check_policy(policy)
        parts.append(f"policy {policy}")
    if flow_timeout_s is not None:
        parts.append(f"timeout {float(flow_timeout_s)!r}")
    if step_s is not None:
        parts.append(f"step {float(step_s)!r}")
    if fallback_s is not None:
        parts.append(f"fallback {float(fallback_s)!r}")
    if ip4_src is not None:
        parts.append(f"ip4-src {ipaddress.IPv4Address(ip4_src)}")
    if ip6_src is not None:
        parts.append(f"ip6-src {ipaddress.IPv6Address(ip6_src)}")
    if shm_dir is not None:
        if not shm_dir or any(c.isspace() for c in shm_dir):
            raise ValueError("shm dir must be non-empty without spaces")
        parts.append(f"shm {shm_dir}")
    if len(parts) == 1:
        raise ValueError("lb_rl conf needs at least one field")
    return " ".join(parts)


def cli_weights(vip: str, weights: Sequence[float]) -> str:
    """``lb_rl weights <vip-prefix> <w0> [<w1> ...]`` (index = server index)."""
    w = _check_weights(weights)
    return f"lb_rl weights {_prefix(vip)} " + " ".join(repr(x) for x in w)


def api_conf(
    policy: str | None = None,
    flow_timeout_s: float | None = None,
    step_s: float | None = None,
    fallback_s: float | None = None,
    ip4_src: str | None = None,
    ip6_src: str | None = None,
    shm_dir: str | None = None,
) -> dict[str, Any]:
    """Fields of ``lb_rl_conf``; unset fields carry the "unchanged" value the
    plugin documents (0, -1, zero address, empty string)."""
    if policy is not None:
        _check_policy(policy)
    return {
        "set_policy": policy is not None,
        "policy": POLICIES[policy] if policy is not None else 0,
        "flow_timeout_s": float(flow_timeout_s or 0.0),
        "step_s": float(step_s or 0.0),
        "fallback_s": float(fallback_s) if fallback_s is not None else -1.0,
        "ip4_src_address": str(ipaddress.IPv4Address(ip4_src or "0.0.0.0")),
        "ip6_src_address": str(ipaddress.IPv6Address(ip6_src or "::")),
        "shm_dir": shm_dir or "",
    }


def api_add_del_vip(prefix: str, encap: str = "gre4", delete: bool = False) -> dict[str, Any]:
    """Fields of ``lb_rl_add_del_vip``."""
    _check_encap(encap)
    return {"pfx": _prefix(prefix), "encap": ENCAPS[encap], "is_del": bool(delete)}


def api_add_del_vip_v2(prefix: str, encap: str = "gre4", flow_table_size: int = 0,
                       delete: bool = False) -> dict[str, Any]:
    """Fields of ``lb_rl_add_del_vip_v2`` (API 1.1.0: a per-VIP flow-table size, 0 = default)."""
    return {**api_add_del_vip(prefix, encap, delete), "flow_table_size": _check_table_size(flow_table_size)}


def api_add_del_vip_v3(prefix: str, encap: str = "gre4", flow_table_size: int = 0,
                       max_servers: int = 0, delete: bool = False) -> dict[str, Any]:
    """Fields of ``lb_rl_add_del_vip_v3`` (API 1.2.0: also the VIP's max_servers, 0 = 64)."""
    return {**api_add_del_vip_v2(prefix, encap, flow_table_size, delete),
            "max_servers": _check_max_servers(max_servers)}


def api_add_del_as(vip: str, address: str, weight: float = 1.0, delete: bool = False) -> dict[str, Any]:
    """Fields of ``lb_rl_add_del_as``."""
    if not delete and not weight > 0:
        raise ValueError("static weight must be > 0")
    return {
        "vip_pfx": _prefix(vip),
        "as_address": _address(address),
        "weight": float(weight),
        "is_del": bool(delete),
    }


def api_set_weights(vip: str, weights: Sequence[float]) -> dict[str, Any]:
    """Fields of ``lb_rl_set_weights`` (a u8 count: at most 255 weights)."""
    w = _check_weights(weights)
    if len(w) > MAX_WEIGHTS_V1:
        raise ValueError(f"lb_rl_set_weights carries at most {MAX_WEIGHTS_V1} weights, got "
                         f"{len(w)}: use lb_rl_set_weights_v2")
    return {"vip_pfx": _prefix(vip), "n_weights": len(w), "weights": w}


def api_set_weights_v2(vip: str, weights: Sequence[float]) -> dict[str, Any]:
    """Fields of ``lb_rl_set_weights_v2`` (API 1.2.0: a u16 count, up to 4096 weights)."""
    w = _check_weights(weights)
    return {"vip_pfx": _prefix(vip), "n_weights": len(w), "weights": w}


# --------------------------------------------------------------------------
# Parsers of CLI output (used by both transports: papi runs CLI in-band)
# --------------------------------------------------------------------------

_IF_HEAD = re.compile(r"^(\S+)\s+(\d+)\s+(up|down)\s+(\S+)\s*(.*)$")
_IF_CTR = re.compile(r"^\s*(?:(\S+)\s+\d+\s+(?:up|down)\s+\S+\s+)?([a-z][a-z0-9 -]*?)\s+(\d+)(?:\s+(\d+))?\s*$")


def parse_interface_counters(text: str) -> dict[str, dict[str, int]]:
    """Parse ``show interface``: {name: {counter: value}}; a counter with a
    bytes column gives ``<name>_packets`` and ``<name>_bytes``."""
    out: dict[str, dict[str, int]] = {}
    cur: str | None = None
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("Name"):
            continue
        head = _IF_HEAD.match(line)
        rest = line
        if head and not line.startswith(" "):
            cur = head.group(1)
            out.setdefault(cur, {})
            rest = head.group(5)
            if not rest.strip():
                continue
        if cur is None:
            continue
        m = re.match(r"^\s*([a-z][a-z0-9 -]*?)\s+(\d+)(?:\s+(\d+))?\s*$", rest)
        if not m:
            continue
        name = m.group(1).strip().replace(" ", "_").replace("-", "_")
        if m.group(3) is not None:
            out[cur][f"{name}_packets"] = int(m.group(2))
            out[cur][f"{name}_bytes"] = int(m.group(3))
        else:
            out[cur][name] = int(m.group(2))
    return out


def parse_node_errors(text: str, node: str | None = None) -> dict[tuple[str, str], int]:
    """Parse ``show errors``: {(node, reason): count}, optionally only one node."""
    out: dict[tuple[str, str], int] = {}
    for line in text.splitlines():
        m = re.match(r"^\s*(\d+)\s+(\S+)\s+(.+?)(?:\s{2,}(error|warn|info|unknown))?\s*$", line)
        if not m:
            continue
        count, n, reason = int(m.group(1)), m.group(2), m.group(3).strip()
        if node is None or n == node:
            out[(n, reason)] = out.get((n, reason), 0) + count
    return out


# --------------------------------------------------------------------------
# Transports
# --------------------------------------------------------------------------


class VppTransport(Protocol):
    """How :class:`LbRlVpp` reaches VPP."""

    def cli(self, command: str) -> str:
        """Run a debug-CLI command, return its output; raise VppError on an
        error reply."""
        ...

    def call(self, msg: str, **fields: Any) -> Any:
        """Send one binary-API request and return its reply (or the list of
        details for a ``*_dump``); raise VppError on retval != 0."""
        ...

    def close(self) -> None: ...


#: First line of an error reply: VLIB's unknown-command text, lb_rl's errors
#: (all start with "lb_rl: " or "lb_rl <command>: "), and the common
#: "<command>: unknown input|failed ..." form of other VPP commands (a
#: heuristic: VPP has no error status on its CLI socket).
_CLI_ERROR = re.compile(
    r"^(unknown input|lb_rl( [a-z_]+)*: |"
    r"[a-z][a-z0-9 _-]*: (unknown input|failed|parse error|invalid|missing|no such|unknown))"
)


class CliTransport:
    """``vppctl -s <cli socket>``; binary-API calls are not available."""

    def __init__(self, paths: VppPaths, timeout_s: float = 10.0) -> None:
        exe = paths.vppctl_bin if paths.vppctl_bin.exists() else shutil.which("vppctl")
        if exe is None:
            raise VppError(f"vppctl not found under {paths.prefix}/bin or on PATH")
        self._argv = [str(exe), "-s", str(paths.cli_socket)]
        self._timeout_s = timeout_s

    def cli(self, command: str) -> str:
        log.debug("vppctl %s", command)
        res = subprocess.run(
            [*self._argv, *command.split()],
            capture_output=True,
            text=True,
            timeout=self._timeout_s,
            check=False,
        )
        text = res.stdout + res.stderr
        if res.returncode != 0 or _looks_like_cli_error(text):
            raise VppError(f"{command!r}: {text.strip()}")
        return text

    def call(self, msg: str, **fields: Any) -> Any:
        raise VppError("binary API not available over vppctl; use PapiTransport")

    def close(self) -> None:
        pass


def _looks_like_cli_error(text: str) -> bool:
    """True if a CLI reply is an error (VPP answers CLI errors with text, not
    an exit status)."""
    return any(_CLI_ERROR.match(line.strip()) for line in text.strip().splitlines()[:1])


class PapiTransport:
    """VPP binary API through ``vpp_papi`` (imported here, lazily)."""

    def __init__(self, paths: VppPaths, client_name: str = "marllb") -> None:
        try:
            from vpp_papi import VPPApiClient  # type: ignore[import-not-found]
        except ImportError as e:  # pragma: no cover - depends on the host
            raise VppError(
                "vpp_papi is not installed: pip install <VPP tree>/src/vpp-api/python "
                "or use CliTransport"
            ) from e
        dirs = [str(d) for d in paths.api_json_dirs]
        if not dirs:
            raise VppError(f"no *.api.json under {paths.prefix}/share/vpp/api")
        self._vpp = VPPApiClient(apidir=dirs, server_address=str(paths.api_socket), use_socket=True)
        rv = self._vpp.connect(client_name)
        if rv != 0:
            raise VppError(f"cannot connect to {paths.api_socket} (rv {rv})")

    def cli(self, command: str) -> str:
        r = self._vpp.api.cli_inband(cmd=command)
        if r.retval != 0:
            raise VppError(f"{command!r}: retval {r.retval}: {r.reply}")
        if _looks_like_cli_error(r.reply):
            raise VppError(f"{command!r}: {r.reply.strip()}")
        return str(r.reply)

    def call(self, msg: str, **fields: Any) -> Any:
        fn = getattr(self._vpp.api, msg, None)
        if fn is None:
            raise VppError(f"VPP does not know message {msg!r} (plugin not loaded?)")
        r = fn(**fields)
        if isinstance(r, list):
            return r
        if getattr(r, "retval", 0) != 0:
            raise VppError(f"{msg}: retval {r.retval}")
        return r

    def close(self) -> None:
        self._vpp.disconnect()


# --------------------------------------------------------------------------
# The facade: one method per action
# --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class VipInfo:
    vip_index: int
    prefix: str
    encap: str
    n_as: int
    tracked_flows: int
    shm_path: str


@dataclasses.dataclass(frozen=True)
class AsInfo:
    server_index: int
    address: str
    static_weight: float
    weight: float
    n_flow_on: int
    n_flow_new: int
    n_flow_closed: int
    packets: int
    bytes: int


class LbRlVpp:
    """The lb_rl plugin of one VPP. Writes go over the binary API when the
    transport supports it and over the CLI otherwise; reads of counters go
    over the CLI (in-band with papi)."""

    def __init__(self, transport: VppTransport, use_api: bool = True) -> None:
        self.t = transport
        self.use_api = use_api and isinstance(transport, PapiTransport)

    # --- actions -----------------------------------------------------------
    def conf(self, **kw: Any) -> None:
        """Global configuration; see :func:`cli_conf` for the fields."""
        if self.use_api:
            self.t.call("lb_rl_conf", **api_conf(**kw))
        else:
            self.t.cli(cli_conf(**kw))

    def add_vip(self, prefix: str, encap: str = "gre4", flow_table_size: int = 0,
                max_servers: int = 0) -> None:
        """A VIP; ``max_servers`` (1..4096, 0 = 64) sizes its contexts and shm frames."""
        if self.use_api and max_servers:
            self.t.call("lb_rl_add_del_vip_v3",
                        **api_add_del_vip_v3(prefix, encap, flow_table_size, max_servers))
        elif self.use_api:
            self.t.call("lb_rl_add_del_vip_v2", **api_add_del_vip_v2(prefix, encap, flow_table_size))
        else:
            self.t.cli(cli_vip(prefix, encap, flow_table_size=flow_table_size,
                               max_servers=max_servers))

    def del_vip(self, prefix: str) -> None:
        if self.use_api:
            self.t.call("lb_rl_add_del_vip", **api_add_del_vip(prefix, delete=True))
        else:
            self.t.cli(cli_vip(prefix, delete=True))

    def add_as(self, vip: str, address: str, weight: float = 1.0) -> None:
        if self.use_api:
            self.t.call("lb_rl_add_del_as", **api_add_del_as(vip, address, weight))
        else:
            self.t.cli(cli_as(vip, [address], weight))

    def del_as(self, vip: str, address: str) -> None:
        if self.use_api:
            self.t.call("lb_rl_add_del_as", **api_add_del_as(vip, address, delete=True))
        else:
            self.t.cli(cli_as(vip, [address], delete=True))

    def set_weights(self, vip: str, weights: Sequence[float]) -> None:
        """Weights by server index, validated by the plugin (VppError when
        rejected); new flows only. The agent's normal path is shm, not this."""
        if self.use_api and len(weights) > MAX_WEIGHTS_V1:
            self.t.call("lb_rl_set_weights_v2", **api_set_weights_v2(vip, weights))
        elif self.use_api:
            self.t.call("lb_rl_set_weights", **api_set_weights(vip, weights))
        else:
            self.t.cli(cli_weights(vip, weights))

    # --- reads -------------------------------------------------------------
    def vips(self) -> list[VipInfo]:
        """All VIPs (binary API only)."""
        out = []
        for d in self.t.call("lb_rl_vip_dump"):
            out.append(
                VipInfo(
                    vip_index=d.vip_index,
                    prefix=str(d.pfx),
                    encap={v: k for k, v in ENCAPS.items()}.get(int(d.encap), str(d.encap)),
                    n_as=d.n_as,
                    tracked_flows=d.tracked_flows,
                    shm_path=str(d.shm_path),
                )
            )
        return out

    def servers(self, vip: str) -> list[AsInfo]:
        """Servers of one VIP with counters summed over workers (binary API)."""
        return [
            AsInfo(
                server_index=d.server_index,
                address=str(d.as_address),
                static_weight=d.static_weight,
                weight=d.weight,
                n_flow_on=d.n_flow_on,
                n_flow_new=d.n_flow_new,
                n_flow_closed=d.n_flow_closed,
                packets=d.packets,
                bytes=d.bytes,
            )
            for d in self.t.call("lb_rl_as_dump", vip_pfx=_prefix(vip))
        ]

    def stats(self, vip: str) -> dict[str, int | bool]:
        """Per-VIP counters and shm exchange state (binary API)."""
        r = self.t.call("lb_rl_stats_get", vip_pfx=_prefix(vip))
        keys = [
            "packets", "new_flows", "untracked_full", "untracked_miss", "flows_lost", "timeouts",
            "no_server", "weight_updates", "weight_rejects", "tracked_flows", "shm_frames_out",
            "shm_frames_in", "shm_fallback",
        ]
        return {k: getattr(r, k) for k in keys}

    def show(self, what: str = "", verbose: bool = False) -> str:
        """Text of ``show lb_rl [vips|stats|weights|flows|shm] [verbose]``."""
        if what not in ("", "vips", "stats", "weights", "flows", "shm"):
            raise ValueError(f"unknown show target {what!r}")
        return self.t.cli(" ".join(x for x in ("show lb_rl", what, "verbose" if verbose else "") if x))

    def interface_counters(self) -> dict[str, dict[str, int]]:
        return parse_interface_counters(self.t.cli("show interface"))

    def node_errors(self, node: str | None = None) -> dict[tuple[str, str], int]:
        """Error counters, e.g. ``node_errors("lb_rl4")``."""
        return parse_node_errors(self.t.cli("show errors"), node)

    def attach_shm(self, path: str | os.PathLike[str], role: str = "agent") -> Any:
        """Attach to a VIP's shm region (``show lb_rl shm`` / :meth:`vips`
        give the path) as ``"agent"`` (writes weights) or ``"reader"``;
        returns a :class:`simulator.shm.ShmRegion`."""
        from simulator.shm import ShmRegion  # lazily: hil depends on simulator

        return ShmRegion.open(path, role=role)  # type: ignore[arg-type]

    def close(self) -> None:
        self.t.close()


def connect(paths: VppPaths | None = None, prefer_api: bool = True) -> LbRlVpp:
    """Attach to a running VPP: binary API if ``vpp_papi`` works, else vppctl."""
    paths = paths or VppPaths.from_env()
    if prefer_api:
        try:
            return LbRlVpp(PapiTransport(paths))
        except VppError as e:
            log.warning("binary API unavailable (%s); falling back to vppctl", e)
    return LbRlVpp(CliTransport(paths))


def build_plugin(prefix: Path, build_dir: Path, install_dir: Path) -> Path:
    """Configure, build (-j2) and install ``vpp_plugin/`` against the VPP in ``prefix`` into
    ``install_dir``; returns the directory holding ``lb_rl_plugin.so``. Raises VppError with the
    tail of the failing step's output, or when the build printed a warning (-Werror aside)."""
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PATH": f"{prefix}/bin:/usr/bin:{os.environ.get('PATH', '')}"}
    for argv in (
        ["cmake", "-S", str(root / "vpp_plugin"), "-B", str(build_dir), f"-DVPP_PREFIX={prefix}",
         f"-DCMAKE_INSTALL_PREFIX={install_dir}"],
        ["cmake", "--build", str(build_dir), "-j2"],
        ["cmake", "--install", str(build_dir)],
    ):
        r = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
        out = r.stdout + r.stderr
        if r.returncode != 0 or "warning:" in out:
            raise VppError(f"{' '.join(argv)} (exit {r.returncode}):\n{out[-4000:]}")
    found = list(install_dir.glob("lib/**/vpp_plugins/lb_rl_plugin.so"))
    if not found:
        raise VppError(f"no lb_rl_plugin.so under {install_dir} after install")
    return found[0].parent


class VppProcess:
    """A VPP started from a startup.conf template (``vpp_plugin/startup/``).

    The template is a :class:`string.Template`: ``${run_dir}``, ``${prefix}``
    and every extra keyword (``plugin_dir``, ``startup_cli``, ``api_prefix``)
    are substituted; :meth:`start` waits until the CLI socket answers. ``netns``
    starts VPP inside that network namespace.
    """

    def __init__(self, paths: VppPaths, template: Path, run_dir: Path, *, netns: str | None = None,
                 **subst: str) -> None:
        self.paths = paths
        self.netns = netns  # run VPP inside this network namespace (its af_packet interfaces live there)
        self.run_dir = run_dir
        self.conf_path = run_dir / "startup.conf"
        self.subst = {"run_dir": str(run_dir), "prefix": str(paths.prefix), "extra_plugins": "",
                      "lb_rl_extra": "", **subst}
        self.template = template
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 20.0) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.conf_path.write_text(string.Template(self.template.read_text()).substitute(self.subst))
        log_path = self.run_dir / "vpp.stdout"
        with open(log_path, "wb") as out:
            argv = [str(self.paths.vpp_bin), "-c", str(self.conf_path)]
            if self.netns is not None:
                argv = ["ip", "netns", "exec", self.netns, *argv]
            self.proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout_s
        cli = CliTransport(self.paths)
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise VppError(f"vpp exited with {self.proc.returncode}: {log_path.read_text()[-2000:]}")
            if self.paths.cli_socket.exists():
                try:
                    cli.cli("show version")
                    return
                except (VppError, subprocess.TimeoutExpired):
                    pass
            time.sleep(0.2)
        self.stop()
        raise VppError(f"vpp did not answer on {self.paths.cli_socket} within {timeout_s} s")

    def stop(self, timeout_s: float = 10.0) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def __enter__(self) -> "VppProcess":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
