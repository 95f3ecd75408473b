"""The inbound token bucket (unit test of FleetConnection.take_token)."""

from __future__ import annotations

from wsfleet.connection import ConnectionPolicy, FleetConnection


class Bucket:
    """Just the rate-limit state of a connection, without a socket."""

    policy = ConnectionPolicy(rate_limit=50.0, rate_burst=100)
    take_token = FleetConnection.take_token
    abusive = FleetConnection.abusive

    def __init__(self) -> None:
        self.tokens = 100.0
        self.refilled_at = 0.0
        self.strikes = 0


def test_burst_then_steady_rate() -> None:
    bucket = Bucket()
    assert all(bucket.take_token(0.0) for _ in range(100))  # type: ignore[arg-type]
    assert not bucket.take_token(0.0)  # type: ignore[arg-type]
    assert bucket.take_token(0.02)  # type: ignore[arg-type]  # 1 token per 20 ms at 50/s


def test_sustained_abuse_is_detected_but_bursts_are_not() -> None:
    polite = Bucket()
    now = 0.0
    for _ in range(1000):  # exactly at the limit for 20 s
        assert polite.take_token(now)  # type: ignore[arg-type]
        now += 0.02
    assert not polite.abusive

    abuser = Bucket()
    now = 0.0
    while not abuser.abusive and now < 10:
        abuser.take_token(now)  # type: ignore[arg-type]
        now += 0.005  # 200 frames/s against a 50/s limit
    assert abuser.abusive
    assert now < 3
