"""wsfleet: a horizontally scaled WebSocket fanout server backed by Redis pub/sub.

The wire protocol is specified in docs/PROTOCOL.md; :mod:`wsfleet.protocol` implements
its inbound side, :mod:`wsfleet.server` the server and :mod:`wsfleet.client` a client.
"""

__version__ = "0.1.0"
