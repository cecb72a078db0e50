"""Throughput and latency benchmarks of a data plane: the NDR/PDR search (search.py), the local
bench bed of namespaces around lb_rl_host (bed.py), latency from kernel timestamps (latency.py),
the measurers that run one trial locally or on TRex, and the reports."""
