"""The local testbed: real packets, real servers and a real client on one Linux machine.

plan        what a config asks for: namespaces, addresses, MACs, CPU quotas, pinning (pure data)
sh          running host commands, inside namespaces; finding what carries the mlb prefix
network     namespaces, the bridge, L2 direct server return, the clients' routes to the VIP
cgroups     CPU quotas (cgroup v1 or v2)
apache      Apache prefork + mod_php instances serving work.php
dataplane   lb_rl_host and `marllb hil controller` per LB
state       what is up (state.json)
testbed     up / down / status: the whole testbed
calibrate   PHP loop iterations per CPU-second on this machine
schedule    the simulator's own arrivals and job sizes for a config and seed
client      the open-loop HTTP client (run inside a client namespace)
recorder    steps.parquet from the LBs' shm frames
collect     the run contract from the client's records
"""
