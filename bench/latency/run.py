#!/usr/bin/env python3
"""Latency percentiles of the data plane at a minimal load and 10/50/90 % of the PDR (local bench bed or --trex).

    marllb bench latency [--profile NAME|FILE]... [--rl] [--trex HOST[:PORT] --dut-mac MAC] [...]

Everything is in hil/perf/bench.py (`--help` lists the options); this script only runs it.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from hil.perf.bench import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["latency", *sys.argv[1:]]))
