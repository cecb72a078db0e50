"""Traffic for the benchmarks: profiles as data (profile.py, derive.py), compiled to the
streams TRex and the local generator send (program.py)."""
