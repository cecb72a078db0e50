"""Interfaces between the parts of a simulated (or hardware-in-the-loop) run.

The simulated implementations live in :mod:`simulator`; real ones (a VPP data plane, real
servers, a TRex traffic source) implement the same Protocols in ``hil/`` and are passed to
:class:`simulator.model.Simulation` instead -- the model has no mode flags.
"""

from __future__ import annotations

from typing import Any, Protocol, Sequence, runtime_checkable

import numpy as np

__all__ = ["FlowKey", "TrafficSource", "DataPlane", "ShmEndpoint", "Server", "ServerPool", "Controller",
           "RES_FLOW_DURATION", "RES_FCT"]

#: (src_ip, dst_ip, src_port, dst_port) of a TCP flow, IPv4 addresses as ints (proto is TCP).
FlowKey = tuple[int, int, int, int]

RES_FLOW_DURATION = 0  #: reservoir of flow durations (sampled on ACKs of established flows)
RES_FCT = 1  #: reservoir of flow completion times (sampled on FIN/RST)


@runtime_checkable
class TrafficSource(Protocol):
    """Request arrivals in time order."""

    def next_request(self) -> tuple[float, float] | None:
        """The next request as (t_send_s, work_s): client send time and CPU seconds of work
        on one core; None when the source is exhausted. Times never decrease."""
        ...


@runtime_checkable
class DataPlane(Protocol):
    """What an LB node needs from its data-plane core (vpp_plugin/core/lb_rl_core.h); the
    simulator's implementation is :class:`simulator.dataplane.DataPlaneCore` (the C core).

    Server indices are 0..n-1 (topology order). Packets must be given in time order. Flow keys
    live in one table given once (``set_key_table``); packets name their flow by row index."""

    def add_server(self, i: int, static_weight: float = 1.0) -> None: ...

    def remove_server(self, i: int) -> None: ...

    def drain(self, i: int, on: bool = True) -> None: ...

    def set_key_table(self, keys: np.ndarray) -> None:
        """Flow keys (KEY_DTYPE rows) that ``process_idx``/``process_batch_idx`` index."""
        ...

    def process_idx(self, now: float, i: int, flags: int, length: int, forced: int = -1) -> int:
        """Process one client->server packet of flow ``i``; return the server index (negative:
        no server). A SYN that starts a flow goes to ``forced`` when >= 0, else to the policy."""
        ...

    def process_batch_idx(self, now_s: Any, key_idx: Any, flags: Any, lengths: Any,
                          forced: Any = None, out: Any = None) -> Any:
        """Process packets in time order with one call; servers chosen, written into ``out``."""
        ...

    def expire(self, now: float, budget: int = 1 << 30) -> int:
        """Sweep idle/closed flow entries; returns how many were freed."""
        ...

    def set_weights(self, w: Any) -> int:
        """Validate and apply weights to new flows; returns the LB_RL_W_* verdict (0 = ok)."""
        ...

    def use_static_weights(self) -> None: ...

    @property
    def weights(self) -> np.ndarray:
        """Weights in force, one per server index."""
        ...

    def n_flow_on(self) -> np.ndarray:
        """Established, not yet closed flows of every server (as the data plane counts them)."""
        ...

    def reservoir(self, i: int, kind: "str | int") -> tuple[np.ndarray, np.ndarray]:
        """Filled reservoir samples of server i: (t_s, value_s) arrays."""
        ...

    def open_shm(self, path: str | None = None, ring_len: int = 4) -> "ShmEndpoint":
        """The LB's shm region: where its msg_out frames appear and msg_in weights are read
        (``path``: a file another process can open; None: in memory), with rings of
        ``ring_len`` frames if this call formats it (a real data plane's own region keeps its
        layout)."""
        ...


@runtime_checkable
class ShmEndpoint(Protocol):
    """An LB's shm region as its node in the model uses it (see ``lb_rl_shm.h``)."""

    path: str | None

    @property
    def buffer(self) -> Any:
        """The region's bytes when it lives in this process's memory, else None (then
        ``path`` names the file)."""
        ...

    def publish(self, now_s: float, wall_s: float = 0.0) -> int:
        """Make the data plane's state at ``now_s`` the newest msg_out frame; returns its seq
        (a data plane that publishes on its own clock just returns its newest seq)."""
        ...

    def poll(self, now_s: float, wall_s: float = 0.0) -> int:
        """Apply the newest msg_in weights through the data plane's own poll (a real data
        plane polls on its own: nothing to do); returns LB_RL_SHM_POLL_*."""
        ...


class Server(Protocol):
    """A backend that admits connections and serves requests (CPU work)."""

    cores: float
    capacity: float  #: cores the requests share now (cores minus co-located background load)
    workers: int
    backlog: int
    failed: bool

    def admit(self, req: object, now_s: float) -> bool:
        """A SYN arrives: accept (a worker or a backlog slot is taken) or refuse (False)."""
        ...

    def request_arrived(self, req: object, now_s: float) -> None:
        """The request segment(s) of an admitted connection arrived: its CPU work may start."""
        ...

    def n_requests(self) -> int:
        """True number of admitted connections at the server (in service + waiting)."""
        ...

    def remaining_work_s(self, now_s: float) -> float:
        """True remaining CPU seconds at now_s of every admitted connection."""
        ...

    def busy_workers(self) -> int: ...

    def set_cores(self, cores: float, now_s: float) -> None: ...

    def set_background(self, fraction: float, now_s: float) -> None:
        """Co-located load takes ``fraction`` of the cores from now on (0 = none)."""
        ...

    def fail(self, now_s: float) -> None: ...

    def recover(self, now_s: float) -> None: ...


class ServerPool(Protocol):
    """The servers of a run, index 0..n-1."""

    def __len__(self) -> int: ...

    def __getitem__(self, idx: int) -> Server: ...


class Controller(Protocol):
    """A load-balancing policy on top of the data plane: sets weights and may force choices.

    ``core_policy`` names the data-plane policy the LBs run (ecmp|wcmp|lsq|sed|lsq2|sed2) and
    ``static_weights`` the weights given at server_add."""

    core_policy: str
    #: False promises that on_step ignores its features and returns None: the model then skips
    #: it and computes features only for the steps it records (absent: True)
    reads_features: bool

    def static_weights(self, cores: Sequence[float]) -> list[float]: ...

    def start(self, sim: object) -> None:
        """Called once before the run; may schedule its own periodic work on ``sim``."""
        ...

    def force(self, now_s: float, lb: int) -> int:
        """Server a new flow at LB ``lb`` must go to, or -1 to let the data plane choose."""
        ...

    def on_step(self, now_s: float, lb: int, features: dict[str, np.ndarray]) -> Sequence[float] | None:
        """Called every lb.step_s per LB with the step's features (arrays over servers);
        returns new weights or None to keep the current ones."""
        ...
