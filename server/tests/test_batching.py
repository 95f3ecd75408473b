"""wsfleet.batching on its own: pure scheduling logic, with a recording sender."""

from __future__ import annotations

import asyncio

import pytest

from wsfleet.batching import Batcher


class Sender:
    """Records every batch; each waits on ``gate`` (open by default)."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.fail_with: Exception | None = None

    async def __call__(self, calls: list[int]) -> list[object]:
        self.batches.append(list(calls))
        await self.gate.wait()
        if self.fail_with is not None:
            raise self.fail_with
        return [ValueError(call) if call < 0 else call * 10 for call in calls]


async def test_calls_of_one_loop_iteration_travel_together() -> None:
    sender = Sender()
    batcher: Batcher[int] = Batcher(sender, lanes=2)
    results = await asyncio.gather(*(batcher.submit(call) for call in range(5)))
    assert results == [0, 10, 20, 30, 40]
    assert sender.batches == [[0, 1, 2, 3, 4]]
    await batcher.close()


async def test_calls_made_while_batches_are_in_flight_form_the_next_batch() -> None:
    sender = Sender()
    sender.gate.clear()
    batcher: Batcher[int] = Batcher(sender, lanes=2)
    first = batcher.submit(1)
    await asyncio.sleep(0)  # lane 1 takes [1] and waits for its reply
    second = batcher.submit(2)
    await asyncio.sleep(0)  # lane 2 takes [2]
    later = [batcher.submit(call) for call in (3, 4, 5)]  # both lanes busy: they wait
    await asyncio.sleep(0)
    assert sender.batches == [[1], [2]]
    assert batcher.waiting == 3
    sender.gate.set()
    assert await asyncio.gather(first, second, *later) == [10, 20, 30, 40, 50]
    assert sender.batches == [[1], [2], [3, 4, 5]]
    await batcher.close()


async def test_batches_are_at_most_max_batch_and_keep_the_order() -> None:
    sender = Sender()
    batcher: Batcher[int] = Batcher(sender, lanes=1, max_batch=3)
    results = await asyncio.gather(*(batcher.submit(call) for call in range(8)))
    assert results == [call * 10 for call in range(8)]
    assert sender.batches == [[0, 1, 2], [3, 4, 5], [6, 7]]
    await batcher.close()


async def test_a_failed_batch_fails_its_calls_only() -> None:
    sender = Sender()
    batcher: Batcher[int] = Batcher(sender, lanes=1)
    sender.fail_with = ConnectionError("down")
    failed = await asyncio.gather(batcher.submit(1), batcher.submit(2), return_exceptions=True)
    assert [type(outcome) for outcome in failed] == [ConnectionError, ConnectionError]
    sender.fail_with = None
    outcomes = await asyncio.gather(batcher.submit(3), batcher.submit(-4), return_exceptions=True)
    assert outcomes[0] == 30
    assert isinstance(outcomes[1], ValueError)  # one call's own error
    await batcher.close()


async def test_close_fails_what_still_waits() -> None:
    sender = Sender()
    sender.gate.clear()
    batcher: Batcher[int] = Batcher(sender, lanes=1)
    in_flight = batcher.submit(1)
    await asyncio.sleep(0)
    waiting = batcher.submit(2)
    await batcher.close()
    assert in_flight.cancelled()
    with pytest.raises(RuntimeError):
        await waiting
    with pytest.raises(RuntimeError):
        batcher.submit(3)
