"""The gateway between a real-time simulation and a real data plane (``hil.lb: host|vpp``):
simulated client->server packets become real frames through the real LB, and the frames it
forwards say which server it chose."""
