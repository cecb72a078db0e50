"""The topology schema: what a topology graph must carry, in which units.

A topology is an undirected ``networkx.Graph``. Node names and their ``kind`` attribute:

=========  ==========  =============================================================
name       kind        attributes
=========  ==========  =============================================================
c1..cC     ``client``  (none)
er         ``router``  the edge router that spreads flows over the LBs by ECMP hash
lb1..lbK   ``lb``      (none)
s1..sN     ``server``  ``cores`` (float > 0), ``workers`` (int >= 1), ``backlog`` (int >= 0)
sw*        ``switch``  fabric switches (leaf-spine / fat-tree generators)
=========  ==========  =============================================================

Edge attributes (every edge): ``bandwidth_bps`` (float > 0), ``delay_s`` (one-way propagation,
float >= 0), ``queue_pkts`` (drop-tail capacity, int >= 1).

Paths: client -> er -> lb_k -> server (requests); server -> client (DSR replies) take the
shortest path by ``delay_s`` in the same graph. Server order (index 0..N-1) is s1..sN; LB
order is lb1..lbK.
"""

from __future__ import annotations

__all__ = ["NODE_KINDS", "SERVER_ATTRS", "EDGE_ATTRS", "server_name", "lb_name", "client_name"]

NODE_KINDS = ("client", "router", "lb", "server", "switch")
SERVER_ATTRS = ("cores", "workers", "backlog")
EDGE_ATTRS = ("bandwidth_bps", "delay_s", "queue_pkts")


def server_name(i: int) -> str:
    """Name of server index i (0-based)."""
    return f"s{i + 1}"


def lb_name(k: int) -> str:
    """Name of LB index k (0-based)."""
    return f"lb{k + 1}"


def client_name(c: int) -> str:
    return f"c{c + 1}"
