"""``wsfleet bench``: a load generator and the benchmark suite of ``make bench``.

- :mod:`wsfleet.bench.wire`: a minimal WebSocket client (one small object per
  connection) that speaks PROTOCOL.md, or Socket.IO's framing for the peer.
- :mod:`wsfleet.bench.worker`: one load-generating process, driven over its stdin.
- :mod:`wsfleet.bench.runner`: the scenarios (connect, fanout, idle) across workers.
- :mod:`wsfleet.bench.suite`: redis, servers and peers started on loopback, the
  scenarios run alternately against each, and BENCHMARKS.md appended.
- :mod:`wsfleet.bench.backbone`: the Redis the suite's servers run on (one
  redis-server, a Redis Cluster on loopback, or an existing cluster).
- :mod:`wsfleet.bench.processes`: the suite's child processes (log file, die with it).
"""
