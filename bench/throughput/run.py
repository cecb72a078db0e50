#!/usr/bin/env python3
"""NDR and PDR of the data plane by a multiple-loss-ratio search (local bench bed or --trex HOST[:PORT]).

    marllb bench throughput [--profile NAME|FILE]... [--rl] [--trex HOST[:PORT] --dut-mac MAC] [...]

Everything is in hil/perf/bench.py (`--help` lists the options); this script only runs it.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from hil.perf.bench import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["throughput", *sys.argv[1:]]))
