import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "shared"))

LB_HTTP = "http://127.0.0.1:18080"
LB_WS = "ws://127.0.0.1:18080/ws"
LB_TLS = "127.0.0.1:18443"
WS_INSTANCES = {"cluster-ws1": ("172.30.233.21", [8000, 8001]), "cluster-ws2": ("172.30.233.22", [8000, 8001])}
REDIS = ("cluster-redis1", "172.30.233.31", 6379)

from prometheus import scraped, traffic  # noqa: E402  (session fixtures of the monitoring tests)
from scenario_hosts import machine  # noqa: E402  (after the path is set)

__all__ = ["machine", "scraped", "traffic"]
