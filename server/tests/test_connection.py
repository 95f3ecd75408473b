"""The inbound token bucket (unit test)."""

from __future__ import annotations

from wsfleet.connection import TokenBucket


def test_burst_then_steady_rate() -> None:
    bucket = TokenBucket(50.0, 100, 0.0)
    assert all(bucket.take(0.0) for _ in range(100))
    assert not bucket.take(0.0)
    assert bucket.take(0.02)  # one token per 20 ms at 50/s


def test_sustained_abuse_is_detected_but_a_client_at_the_limit_is_not() -> None:
    polite = TokenBucket(50.0, 100, 0.0)
    now = 0.0
    for _ in range(1000):  # exactly at the limit for 20 s
        assert polite.take(now)
        now += 0.02
    assert not polite.abusive

    abuser = TokenBucket(50.0, 100, 0.0)
    now = 0.0
    while not abuser.abusive and now < 10:
        abuser.take(now)
        now += 0.005  # 200 frames/s against a 50/s limit
    assert abuser.abusive
    assert now < 3
