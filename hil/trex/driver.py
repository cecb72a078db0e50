"""The TRex driver: a standalone process that holds a TRex Python client, spoken to with JSON lines.

    <venv python> hil/trex/driver.py --client stl|official

Run it only under a TRex client venv (:func:`hil.trex.venv.client_python`): both TRex clients
swap their own scapy, simpy, zmq and yaml into ``sys.modules``, so this file imports nothing
from the repository — the standard library and the client only. :mod:`hil.trex.client` is the
other end of the pipe.

Protocol: one JSON object per line on stdin, one answer per line on stdout, in order. A request
is ``{"cmd": NAME, "args": {...}}``; the answer is ``{"ok": true, ...results}`` or
``{"ok": false, "error": "..."}``. Logs and whatever the client prints go to stderr (fd 1 is
pointed at stderr; answers go to a private copy of the original stdout).

Commands:
    hello                          -> client, client_version, python, scapy (the client's)
    compile  {program, mult=1, split_to_cores=true}
                                   -> streams, ramp_up: each STLStream.to_json() (offline)
    connect  {host, port=4501, async_port=port-1, timeout_s=5}
                                   -> server, version, system_info, ports
    trial    {program, mult=1, duration_s, tx_ports, rx_ports=[], ramp_up=false, drain_ms=100,
              split_to_cores=true}  -> duration_s, ports{id: counters}, latency{pg_id: ...}
    disconnect, quit

Compilation (the semantics of ``hil/traffic/program.py``): each program stream becomes one
STLStream of its template frame (raw bytes, sent with the template's MAC addresses: flags 3)
with one ``STLVmFlowVar(op="inc")`` + ``STLVmWrFlowVar(pkt_offset=<int>)`` per var, then
``STLVmFixIpv4(offset=<int>)`` and ``STLVmFixChecksumHw(l3_offset=<int>, l4_offset=<int>)``;
integer offsets only, so both clients build the same streams (trex-stl-lib 0.3 resolves named
offsets with its own scapy and fails on current scapy). Mode ``STLTXCont(pps=rate*mult)`` (latency probes: ``rate``) or
``STLTXSingleBurst(total_pkts=count, pps=rate*mult)``; ``start_s`` becomes ``isg`` in
microseconds; a latency stream gets ``STLFlowLatencyStats(pg_id=1+index)`` (in a trial, +
``tx_port_index * len(streams)`` so every port's copy has its own pg_id). Ramp-up streams carry
no flow stats.

``split_to_cores`` (official client only; trex-stl-lib 0.3 sends no such field and the server
assumes true): with true, a server running N cores per port gives core k the phase k and step
``N*step``, so together the cores send exactly the program's packets n = 0, 1, 2, ...
(interleaved in time); with false every core runs the whole sequence from ``init``, i.e. each
packet goes out N times. On one core per port both are the program's sequence in order.
"""

from __future__ import annotations

import argparse
import base64
import importlib.metadata
import json
import logging
import math
import os
import platform
import socket
import sys
import threading
import time
import traceback

log = logging.getLogger("trex-driver")

PROGRAM_VERSION = 1  # hil/traffic/program.py's PROGRAM_VERSION
DISTRIBUTIONS = {"stl": "trex-stl-lib", "official": "lbr-trex-client"}
L4_PROTOS = {6: "TCP", 17: "UDP"}


class BadRequest(Exception):
    """The request cannot be carried out; the message goes back as the error."""


def load_api(client: str):
    """The client's ``stl.api`` module."""
    if client == "official":
        import lbr_trex_client  # noqa: F401  (puts its interactive/ dir on sys.path: "trex")
        from trex.stl import api
    else:
        from trex_stl_lib import api
    return api


def err_text(e: BaseException) -> str:
    """An exception's message; trex-stl-lib 0.3's STLError.__str__ itself raises on Python 3."""
    msg = getattr(e, "msg", None)
    if not msg:
        try:
            msg = str(e)
        except Exception:  # noqa: BLE001
            msg = repr(e.args)
    return f"{type(e).__name__}: {msg}".strip()


def jsonable(x):
    """x with every key a string and every leaf a JSON value (TRex stats hold objects such as
    StatNotAvailable)."""
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if isinstance(x, bytes):
        return base64.b64encode(x).decode()
    if x is None or isinstance(x, (bool, int, str)):
        return x
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    return str(x)


# ---- program -> STL streams ---------------------------------------------------------------

def _need(d: dict, key: str, what: str):
    if not isinstance(d, dict) or key not in d:
        raise BadRequest(f"{what}: missing {key!r}")
    return d[key]


def check_program(program) -> dict:
    if not isinstance(program, dict):
        raise BadRequest("'program' must be a traffic program JSON object")
    if program.get("version") != PROGRAM_VERSION:
        raise BadRequest(f"traffic program version {program.get('version')!r}, "
                         f"expected {PROGRAM_VERSION}")
    if not isinstance(_need(program, "streams", "program"), list):
        raise BadRequest("program: 'streams' must be a list")
    return program


def build_stream(api, client: str, s: dict, mult: float, pg_id: int | None,
                 split_to_cores: bool):
    """One STLStream of one program stream (see the module docstring)."""
    name = str(_need(s, "name", "stream"))
    what = f"stream {name!r}"
    try:
        pkt = bytes.fromhex(_need(s, "packet", what))
        # latency probes keep their own rate at every load (hil/traffic/program.py)
        rate = float(_need(s, "rate_pps", what)) * (1.0 if s.get("latency") else mult)
        start_s = float(s.get("start_s", 0.0))
        count = int(s.get("count", 0))
    except (TypeError, ValueError) as e:
        raise BadRequest(f"{what}: {e}") from None
    if not rate > 0:
        raise BadRequest(f"{what}: rate_pps * mult must be > 0, got {rate}")
    if start_s < 0 or count < 0:
        raise BadRequest(f"{what}: start_s and count must be >= 0")

    fv_kw = {}
    if client == "official":
        fv_kw["split_to_cores"] = bool(split_to_cores)
    elif not split_to_cores:
        raise BadRequest("split_to_cores=false needs the official client "
                         "(trex-stl-lib 0.3 has no such field)")
    cmds, writes = [], []
    for v in s.get("vars", ()):
        vname = str(_need(v, "name", what))
        vmin, vmax = int(_need(v, "min", what)), int(_need(v, "max", what))
        init = v.get("init")
        cmds.append(api.STLVmFlowVar(name=vname, min_value=vmin, max_value=vmax,
                                     size=int(_need(v, "size", what)), op="inc",
                                     step=int(v.get("step", 1)),
                                     init_value=vmin if init is None else int(init), **fv_kw))
        writes.append(api.STLVmWrFlowVar(fv_name=vname, pkt_offset=int(_need(v, "offset", what))))
    cmds += writes
    if s.get("fix_ipv4") is not None:
        cmds.append(api.STLVmFixIpv4(offset=int(s["fix_ipv4"])))
    fl4 = s.get("fix_l4")
    if fl4:
        proto = int(_need(fl4, "proto", what))
        if proto not in L4_PROTOS:
            raise BadRequest(f"{what}: fix_l4 proto {proto} is neither 6 (TCP) nor 17 (UDP)")
        l3, l4 = int(_need(fl4, "l3", what)), int(_need(fl4, "l4", what))
        hw = api.CTRexVmInsFixHwCs
        fix = api.STLVmFixChecksumHw(l3_offset=l3, l4_offset=l4,
                                     l4_type=hw.L4_TYPE_TCP if proto == 6 else hw.L4_TYPE_UDP)
        if client == "stl":
            # trex-stl-lib 0.3 drops an integer l3_offset (l2_len stays 0, l3_len = l4_offset):
            # its compile() only sets l2_len for named offsets. Set it as the official client does.
            fix.l2_len = l3
        cmds.append(fix)

    if count > 0:
        mode = api.STLTXSingleBurst(total_pkts=count, pps=rate)
    else:
        mode = api.STLTXCont(pps=rate)
    builder = api.STLPktBuilder(pkt_buffer=pkt, vm=api.STLScVmRaw(cmds) if cmds else None)
    flow_stats = api.STLFlowLatencyStats(pg_id=pg_id) if pg_id is not None else None
    return api.STLStream(name=name, packet=builder, mode=mode, isg=start_s * 1e6,
                         flow_stats=flow_stats, mac_src_override_by_pkt=True,
                         mac_dst_override_mode=getattr(api, "STLStreamDstMAC_PKT", 1))


def build_streams(api, client: str, program: dict, mult: float, pg_base: int,
                  split_to_cores: bool, ramp: bool = False) -> list:
    key = "ramp_up" if ramp else "streams"
    out = []
    for i, s in enumerate(program.get(key, ())):
        pg_id = pg_base + 1 + i if (s.get("latency") and not ramp) else None
        try:
            out.append(build_stream(api, client, s, mult, pg_id, split_to_cores))
        except BadRequest:
            raise
        except Exception as e:  # noqa: BLE001  (the client's own validation errors)
            raise BadRequest(f"{key}[{i}] ({s.get('name')!r}): {err_text(e)}") from None
    return out


def _mult(args: dict) -> float:
    try:
        mult = float(args.get("mult", 1.0))
    except (TypeError, ValueError):
        raise BadRequest(f"mult must be a number, got {args.get('mult')!r}") from None
    if not (mult > 0 and math.isfinite(mult)):
        raise BadRequest(f"mult must be > 0, got {mult}")
    return mult


# ---- the driver ---------------------------------------------------------------------------

class Driver:
    def __init__(self, client: str):
        self.client_name = client
        self.api = load_api(client)
        self.client = None  # STLClient once connected
        self.server = ""

    # -- commands --

    def cmd_hello(self, args: dict) -> dict:
        import scapy
        scapy_version = getattr(scapy, "__version__", "?")
        folder = os.path.basename(os.path.dirname(os.path.dirname(scapy.__file__)))
        if not scapy_version[:1].isdigit() and folder.startswith("scapy-"):
            scapy_version = folder[len("scapy-"):]  # the bundled copy reports "git-archive..."
        return {"client": self.client_name,
                "client_version": importlib.metadata.version(DISTRIBUTIONS[self.client_name]),
                "python": platform.python_version(), "scapy": scapy_version,
                "scapy_path": os.path.dirname(scapy.__file__), "pid": os.getpid()}

    def cmd_compile(self, args: dict) -> dict:
        program = check_program(args.get("program"))
        mult = _mult(args)
        split = bool(args.get("split_to_cores", True))
        return {
            "streams": [jsonable(s.to_json()) for s in
                        build_streams(self.api, self.client_name, program, mult, 0, split)],
            "ramp_up": [jsonable(s.to_json()) for s in
                        build_streams(self.api, self.client_name, program, mult, 0, split,
                                      ramp=True)],
        }

    def cmd_connect(self, args: dict) -> dict:
        host = str(_need(args, "host", "connect"))
        try:
            port = int(args.get("port", 4501))
            async_port = int(args.get("async_port", port - 1))
            timeout_s = float(args.get("timeout_s", 5.0))
        except (TypeError, ValueError) as e:
            raise BadRequest(f"connect: {e}") from None
        if not (0 < port < 65536 and 0 < async_port < 65536 and timeout_s > 0):
            raise BadRequest(f"connect: bad port {port}/{async_port} or timeout {timeout_s}")
        self._disconnect()
        where = f"{host}:{port}"
        deadline = time.monotonic() + timeout_s
        # Fail fast and clearly when nothing listens: ZMQ connects lazily, so the client would
        # only notice after its RPC timeout (3 s official, 10 s trex-stl-lib 0.3).
        try:
            socket.create_connection((host, port), timeout=timeout_s).close()
        except socket.gaierror as e:
            raise BadRequest(f"no TRex server answering at {where} (cannot resolve: {e})") from None
        except (socket.timeout, TimeoutError):
            raise BadRequest(f"no TRex server answering at {where} "
                             f"(TCP connect timed out after {timeout_s:g} s)") from None
        except OSError as e:
            raise BadRequest(f"no TRex server answering at {where} "
                             f"({e.strerror or e})") from None

        kw = {"server": host, "sync_port": port, "async_port": async_port}
        if self.client_name == "official":
            # The RPC timeout (TRex's default 3 s) also serves every later request.
            rpc_s = max(1, min(3, int(deadline - time.monotonic())))
            kw.update(verbose_level="error", sync_timeout=rpc_s, async_timeout=rpc_s)
        c = self.api.STLClient(**kw)
        box: dict = {}

        def run():
            try:
                c.connect()
                box["ok"] = True
            except BaseException as e:  # noqa: BLE001
                box["error"] = err_text(e)

        t = threading.Thread(target=run, name="trex-connect", daemon=True)
        t.start()
        t.join(max(0.0, deadline - time.monotonic()))
        if t.is_alive():  # abandoned: the client's own timeout ends the thread later
            raise BadRequest(f"no TRex server answering at {where} "
                             f"(TCP port open but no RPC answer in {timeout_s:g} s)")
        if "error" in box:
            raise BadRequest(f"no TRex server answering at {where} ({box['error']})")
        self.client, self.server = c, where
        info = jsonable(c.get_server_system_info())
        return {"server": where, "version": jsonable(c.get_server_version()),
                "system_info": info, "ports": list(range(int(c.get_port_count())))}

    def cmd_trial(self, args: dict) -> dict:
        c = self.client
        if c is None:
            raise BadRequest("not connected (send 'connect' first)")
        program = check_program(args.get("program"))
        mult = _mult(args)
        split = bool(args.get("split_to_cores", True))
        try:
            duration_s = float(_need(args, "duration_s", "trial"))
            tx_ports = [int(p) for p in _need(args, "tx_ports", "trial")]
            rx_ports = [int(p) for p in args.get("rx_ports", ())]
            drain_ms = int(args.get("drain_ms", 100))
        except (TypeError, ValueError) as e:
            raise BadRequest(f"trial: {e}") from None
        if not duration_s > 0 or not tx_ports:
            raise BadRequest("trial: duration_s must be > 0 and tx_ports non-empty")
        n_ports = int(c.get_port_count())
        ports = sorted(set(tx_ports) | set(rx_ports))
        bad = [p for p in ports if not 0 <= p < n_ports]
        if bad:
            raise BadRequest(f"trial: no port {bad} on {self.server} (ports 0..{n_ports - 1})")
        n = len(program["streams"])

        c.reset(ports=ports)
        if args.get("ramp_up") and program.get("ramp_up"):
            if any(int(s.get("count", 0)) <= 0 for s in program["ramp_up"]):
                raise BadRequest("trial: ramp-up streams must be bursts (count > 0)")
            for p in tx_ports:
                c.add_streams(build_streams(self.api, self.client_name, program, mult, 0, split,
                                            ramp=True), ports=[p])
            ramp_s = max(float(s.get("start_s", 0)) + int(s["count"]) / (float(s["rate_pps"]) * mult)
                         for s in program["ramp_up"])
            t_ramp = time.monotonic()
            c.start(ports=tx_ports, mult="1", force=True)
            c.wait_on_traffic(ports=tx_ports, timeout=ramp_s + 30, rx_delay_ms=drain_ms)
            log.info("ramp-up done in %.2f s", time.monotonic() - t_ramp)
            c.remove_all_streams(ports=tx_ports)

        pg_map = {}
        for j, p in enumerate(tx_ports):
            c.add_streams(build_streams(self.api, self.client_name, program, mult, j * n, split),
                          ports=[p])
            for i, s in enumerate(program["streams"]):
                if s.get("latency"):
                    pg_map[j * n + 1 + i] = {"stream": s["name"], "tx_port": p}
        c.clear_stats()
        t0 = time.monotonic()
        c.start(ports=tx_ports, mult="1", force=True, duration=duration_s)
        c.wait_on_traffic(ports=tx_ports, timeout=duration_s + 30, rx_delay_ms=drain_ms)
        elapsed = time.monotonic() - t0
        st = c.get_stats(ports=ports)

        out_ports = {}
        for p in ports:
            ps = st.get(p, {})
            d = {k: jsonable(ps.get(k)) for k in
                 ("opackets", "ipackets", "obytes", "ibytes", "oerrors", "ierrors")}
            d["tx_pps"] = (ps.get("opackets", 0) or 0) / duration_s  # mean over the trial
            out_ports[str(p)] = d
        latency = {}
        lat_all = st.get("latency", {}) or {}
        flows = st.get("flow_stats", {}) or {}
        for pg_id, meta in pg_map.items():
            lat = lat_all.get(pg_id, {}) or {}
            inner = lat.get("latency", {}) or {}
            fs = flows.get(pg_id, {}) or {}
            latency[str(pg_id)] = {
                **meta,
                "min_us": jsonable(inner.get("total_min")),
                "avg_us": jsonable(inner.get("average")),
                "max_us": jsonable(inner.get("total_max")),
                "jitter_us": jsonable(inner.get("jitter")),
                "histogram": jsonable(inner.get("histogram", {})),  # {bucket_low_us: packets}
                "hdrh": jsonable(inner.get("hdrh")),  # encoded HDR histogram (official only)
                "err_cntrs": jsonable(lat.get("err_cntrs", {})),
                "tx_pkts": jsonable(fs.get("tx_pkts")), "rx_pkts": jsonable(fs.get("rx_pkts")),
            }
        return {"server": self.server, "duration_s": duration_s, "elapsed_s": elapsed,
                "mult": mult, "ports": out_ports, "latency": latency,
                "latency_global": jsonable(lat_all.get("global", {}))}

    def cmd_disconnect(self, args: dict) -> dict:
        was = self.server
        self._disconnect()
        return {"disconnected": was}

    def _disconnect(self) -> None:
        c, self.client, self.server = self.client, None, ""
        if c is not None:
            try:
                c.disconnect()
            except Exception as e:  # noqa: BLE001
                log.warning("disconnect: %s", err_text(e))

    # -- loop --

    def handle(self, line: str) -> tuple[dict, bool]:
        """The answer to one request line, and whether to stop."""
        try:
            req = json.loads(line)
        except ValueError as e:
            return {"ok": False, "error": f"bad request (not JSON: {e})"}, False
        if not isinstance(req, dict) or not isinstance(req.get("cmd"), str):
            return {"ok": False, "error": "bad request: expected {\"cmd\": NAME, \"args\": {...}}"}, False
        cmd, args = req["cmd"], req.get("args", {})
        if not isinstance(args, dict):
            return {"ok": False, "error": f"{cmd}: 'args' must be an object"}, False
        if cmd == "quit":
            self._disconnect()
            return {"ok": True, "bye": True}, True
        fn = getattr(self, f"cmd_{cmd}", None)
        if fn is None:
            known = sorted(n[4:] for n in dir(self) if n.startswith("cmd_")) + ["quit"]
            return {"ok": False, "error": f"unknown command {cmd!r} (known: {', '.join(known)})"}, False
        t0 = time.monotonic()
        try:
            res = fn(args)
        except BadRequest as e:
            return {"ok": False, "error": str(e)}, False
        except Exception as e:  # noqa: BLE001  (never crash on a request)
            log.error("%s failed:\n%s", cmd, traceback.format_exc())
            return {"ok": False, "error": f"{cmd}: {err_text(e)}"}, False
        log.info("%s done in %.3f s", cmd, time.monotonic() - t0)
        return {"ok": True, **res}, False


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--client", choices=sorted(DISTRIBUTIONS), required=True)
    a = ap.parse_args(argv)
    # Answers go to a private copy of stdout; anything the client prints lands on stderr.
    out = os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s trex-driver[%(process)d] %(levelname)s %(message)s")
    try:
        drv = Driver(a.client)
    except Exception as e:  # noqa: BLE001
        out.write(json.dumps({"ok": False, "error": f"cannot load the {a.client} TRex client: "
                                                   f"{err_text(e)}"}) + "\n")
        return 1
    for line in sys.stdin:
        if not line.strip():
            continue
        answer, stop = drv.handle(line)
        out.write(json.dumps(answer, default=str) + "\n")
        if stop:
            break
    drv._disconnect()
    return 0


if __name__ == "__main__":
    sys.exit(main())
