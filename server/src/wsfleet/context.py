"""State shared by the parts of one running server instance."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from wsfleet.broker import Broker
from wsfleet.config import Settings
from wsfleet.hub import Hub
from wsfleet.looplag import LoopLag
from wsfleet.metrics import Metrics
from wsfleet.protocol import Limits

__all__ = ["OVERLOADED_MESSAGE", "ServerContext"]

OVERLOADED_MESSAGE = (
    "this instance is overloaded: the message was not stored or delivered; retry later"
)


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
    loop_lag: LoopLag = field(default_factory=LoopLag)

    @property
    def instance_id(self) -> str:
        return self.settings.instance_id

    def publish_admitted(self) -> bool:
        """False (and counted) when ``--publish-queue`` publishes wait for Redis already,
        or, with ``--shed-lag``, while the event loop lags more than that.

        Refusing at once is how an overloaded instance sheds publishes: the client
        hears `unavailable` and may retry later, instead of every publish waiting
        behind a queue that grows as long as the overload lasts. A refusal costs a
        small fraction of what the fanout of an admitted message costs.
        """
        shed_lag = self.settings.shed_lag
        if self.publishes_in_flight < self.settings.publish_queue and (
            not shed_lag or self.loop_lag.seconds <= shed_lag
        ):
            return True
        self.metrics.publishes_shed.inc()
        return False

    def publish_started(self) -> None:
        self.publishes_in_flight += 1
        self.publishes_settled.clear()

    def publish_finished(self) -> None:
        self.publishes_in_flight -= 1
        if self.publishes_in_flight == 0:
            self.publishes_settled.set()
