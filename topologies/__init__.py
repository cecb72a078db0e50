"""Topologies as data: presets by name, fabric generators, and schema validation.

``build(cfg.topology)`` turns a :class:`simulator.config.TopologyConfig` into a validated
``networkx.Graph`` following :mod:`topologies.schema`; ``PRESETS`` lists the named ones.
Only :mod:`simulator.config` is imported from the simulator (dependency direction:
topologies <- simulator).
"""

from topologies.presets import PRESETS, Preset, build, fat_tree, flat, leaf_spine, parse_spec
from topologies.validate import MAX_SERVERS, clients, lbs, servers, switches, validate

__all__ = [
    "PRESETS", "Preset", "build", "parse_spec", "flat", "leaf_spine", "fat_tree",
    "validate", "servers", "lbs", "clients", "switches", "MAX_SERVERS",
]
