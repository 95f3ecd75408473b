"""State shared by the parts of one running server instance."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from wsfleet.broker import Broker
from wsfleet.config import Settings
from wsfleet.hub import Hub
from wsfleet.metrics import Metrics
from wsfleet.protocol import Limits

__all__ = ["ServerContext"]


@dataclass(eq=False)
class ServerContext:
    """Everything a connection handler or an HTTP endpoint of this instance needs."""

    settings: Settings
    metrics: Metrics
    hub: Hub
    broker: Broker
    limits: Limits
    draining: bool = False
    open_connections: int = 0
    # Publishes sent to Redis but not yet acknowledged; the drain waits for them.
    publishes_in_flight: int = 0
    publishes_settled: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def instance_id(self) -> str:
        return self.settings.instance_id

    def publish_started(self) -> None:
        self.publishes_in_flight += 1
        self.publishes_settled.clear()

    def publish_finished(self) -> None:
        self.publishes_in_flight -= 1
        if self.publishes_in_flight == 0:
            self.publishes_settled.set()
