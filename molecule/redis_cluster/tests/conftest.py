import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "shared"))

# The two server instances, reached directly from this machine (the firewall
# opens them to the private network's gateway, see molecule.yml).
WS_HOST = "rc-ws1"
WS_URLS = ["ws://172.30.234.21:8000/ws", "ws://172.30.234.21:8001/ws"]
HEALTH_URLS = ["http://172.30.234.21:8000/health", "http://172.30.234.21:8001/health"]
# Redis hosts by private address; rc-redis4 is in `redis` only after test_5.
REDIS_HOSTS = {
    "172.30.234.31": "rc-redis1",
    "172.30.234.32": "rc-redis2",
    "172.30.234.33": "rc-redis3",
    "172.30.234.34": "rc-redis4",
}
REDIS_PORTS = (6379, 6380)
# The lab's secrets from molecule.yml (never a production value).
ADMIN = ("admin", "molecule-admin-password")
WSFLEET = ("wsfleet", "molecule-wsfleet-password")

from scenario_hosts import machine  # noqa: E402  (after the path is set)

__all__ = ["machine"]
