"""TRex traffic generation through a driver process that holds the TRex Python client.

venv     one venv per TRex client (trex-stl-lib 0.3, lbr-trex-client 3.4.0) under build/trex-venv/
driver   the standalone driver script (runs in such a venv; JSON lines on stdin/stdout)
client   our end: TrexDriver, compile_streams, connect, parse_server

The TRex clients replace scapy, simpy, zmq and yaml in sys.modules, so they are never imported
into our process; import hil.trex.client, which only starts the driver.
"""
