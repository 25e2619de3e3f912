"""WriteBehind: batching by count and by time, drain, and one warning for the samples a failing store lost."""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import logging
from collections.abc import Sequence
from typing import Any

import pytest

from fw_rollouts import FwResponse, Usage
from fw_rollouts._record import decode_record
from fw_rollouts._store import SampleStore, StoreStats
from fw_rollouts._writeback import WriteBehind


class FakeStore:
    """A SampleStore in memory that records each set_many call; it can fail, or hold writes until released."""

    def __init__(self, *, fail: BaseException | None = None, gated: bool = False) -> None:
        self.location = "mem://test-store"
        self.calls: list[list[tuple[str, bytes]]] = []
        self.data: dict[str, bytes] = {}
        self.fail = fail
        self.gate = asyncio.Event() if gated else None

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        return [self.data.get(k) for k in keys]

    async def set_many(self, items: Sequence[tuple[str, bytes]]) -> None:
        self.calls.append(list(items))
        if self.gate is not None:
            await self.gate.wait()
        if self.fail is not None:
            raise self.fail
        self.data.update(items)

    async def stats(self) -> StoreStats:
        return StoreStats(entries=len(self.data), size_bytes=None, location=self.location)

    async def aclose(self) -> None:
        pass


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def sample(i: int) -> FwResponse:
    return FwResponse(full=f"text {i}", content=f"text {i}", finish_reason="stop", seed=i, usage=Usage(1, 2, 3))


def sizes(store: FakeStore) -> list[int]:
    return [len(call) for call in store.calls]


async def settle() -> None:
    """Let the write tasks that were started run: each encodes its batch on a worker thread first, so this
    waits for the default executor to go idle (a round trip to a thread per batch, milliseconds)."""
    loop = asyncio.get_running_loop()
    for _ in range(3):
        await loop.run_in_executor(None, lambda: None)  # after every encoding queued before it
        for _ in range(5):
            await asyncio.sleep(0)


def run_checked(coro: Any) -> list[dict[str, Any]]:
    """Run ``coro`` on a fresh loop; every context the loop's exception handler saw, after collecting garbage."""
    seen: list[dict[str, Any]] = []

    async def main() -> None:
        asyncio.get_running_loop().set_exception_handler(lambda loop, context: seen.append(context))
        await coro

    asyncio.run(main())
    gc.collect()
    return seen


def test_fake_store_is_a_sample_store() -> None:
    assert isinstance(FakeStore(), SampleStore)


def test_batches_by_count() -> None:
    store = FakeStore()

    async def main() -> None:
        writer = WriteBehind(store, batch=3, clock=Clock())
        for i in range(7):
            writer.add(f"k{i}", sample(i))
        assert writer.pending == 1
        await settle()
        assert sizes(store) == [3, 3]
        await writer.drain()
        assert sizes(store) == [3, 3, 1]
        assert writer.pending == 0

    asyncio.run(main())
    assert [k for call in store.calls for k, _ in call] == [f"k{i}" for i in range(7)]


def test_batches_by_time() -> None:
    store = FakeStore()
    clock = Clock()

    async def main() -> None:
        writer = WriteBehind(store, batch=100, interval=0.05, clock=clock)
        writer.add("a", sample(0))
        clock.now += 0.049
        writer.add("b", sample(1))
        await settle()
        assert store.calls == [] and writer.pending == 2
        clock.now += 0.001  # 0.05 since the writer started
        writer.add("c", sample(2))
        await settle()
        assert sizes(store) == [3]
        clock.now += 0.01
        writer.add("d", sample(3))  # the interval counts from the last batch
        await settle()
        assert sizes(store) == [3] and writer.pending == 1
        await writer.drain()
        assert sizes(store) == [3, 1]

    asyncio.run(main())


def test_records_are_encoded_samples() -> None:
    store = FakeStore()

    async def main() -> None:
        writer = WriteBehind(store, clock=Clock())
        writer.add("k", sample(5))
        await writer.drain()

    asyncio.run(main())
    assert decode_record(store.data["k"], "") == dataclasses.replace(sample(5), cached=True)


def test_drain_waits_for_every_write() -> None:
    store = FakeStore(gated=True)

    async def main() -> None:
        writer = WriteBehind(store, batch=2, clock=Clock())
        for i in range(5):
            writer.add(f"k{i}", sample(i))
        drain = asyncio.ensure_future(writer.drain())
        await settle()
        assert sizes(store) == [2, 2, 1] and not drain.done() and store.data == {}
        assert store.gate is not None
        store.gate.set()
        await drain
        assert len(store.data) == 5

    asyncio.run(main())


def test_a_cancelled_drain_does_not_cancel_the_writes() -> None:
    store = FakeStore(gated=True)

    async def main() -> None:
        writer = WriteBehind(store, clock=Clock())
        writer.add("k", sample(0))
        drain = asyncio.ensure_future(writer.drain())
        await settle()
        drain.cancel()
        with pytest.raises(asyncio.CancelledError):
            await drain
        assert store.gate is not None
        store.gate.set()
        await writer.drain()  # the write went on and is waited for here
        assert list(store.data) == ["k"]

    asyncio.run(main())


def test_an_empty_drain_writes_nothing() -> None:
    store = FakeStore()

    async def main() -> None:
        writer = WriteBehind(store, clock=Clock())
        await writer.drain()
        await writer.drain()

    asyncio.run(main())
    assert store.calls == []


def test_a_failing_store_logs_one_warning_with_the_count(caplog: pytest.LogCaptureFixture) -> None:
    store = FakeStore(fail=OSError(28, "No space left on device"))

    async def main() -> None:
        writer = WriteBehind(store, batch=2, clock=Clock())
        for i in range(5):
            writer.add(f"k{i}", sample(i))
        await settle()
        await writer.drain()
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1
        message = warnings[0].getMessage()
        assert "5 samples" in message and "mem://test-store" in message and "No space left" in message
        assert warnings[0].name == "fw_rollouts.cache"
        caplog.clear()
        store.fail = None
        writer.add("k9", sample(9))
        await writer.drain()  # the count starts again, and a clean drain says nothing
        assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []

    with caplog.at_level(logging.WARNING, logger="fw_rollouts.cache"):
        seen = run_checked(main())
    assert seen == []
    assert sizes(store) == [2, 2, 1, 1]


def test_one_failed_sample_is_singular(caplog: pytest.LogCaptureFixture) -> None:
    store = FakeStore(fail=RuntimeError("store down"))

    async def main() -> None:
        writer = WriteBehind(store, clock=Clock())
        writer.add("k", sample(0))
        await writer.drain()

    with caplog.at_level(logging.WARNING, logger="fw_rollouts.cache"):
        asyncio.run(main())
    (record,) = caplog.records
    assert "could not write 1 sample to the cache at mem://test-store" in record.getMessage()


def test_a_sample_that_cannot_be_encoded_is_counted_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    store = FakeStore()

    async def main() -> None:
        writer = WriteBehind(store, clock=Clock())
        writer.add("bad", FwResponse(full="lone \ud800 surrogate"))
        writer.add("good", sample(1))
        await writer.drain()

    with caplog.at_level(logging.WARNING, logger="fw_rollouts.cache"):
        asyncio.run(main())
    assert list(store.data) == ["good"]
    (record,) = caplog.records
    assert "1 sample" in record.getMessage() and "RecordError" in record.getMessage()


def test_no_unretrieved_exceptions_even_without_drain() -> None:
    store = FakeStore(fail=OSError("read-only file system"))

    async def main() -> None:
        writer = WriteBehind(store, batch=1, clock=Clock())
        for i in range(3):
            writer.add(f"k{i}", sample(i))
        await settle()
        del writer  # abandoned with failed writes, never drained

    seen = run_checked(main())
    assert sizes(store) == [1, 1, 1]
    assert seen == []


def test_batch_must_be_positive() -> None:
    with pytest.raises(ValueError, match="batch"):
        WriteBehind(FakeStore(), batch=0)


def test_repr() -> None:
    assert "mem://test-store" in repr(WriteBehind(FakeStore(), clock=Clock()))


def test_room_holds_the_caller_back_while_a_slow_store_falls_behind() -> None:
    async def main() -> None:
        store = FakeStore(gated=True)
        writer = WriteBehind(store, batch=2, max_in_flight=2)
        for i in range(8):  # four batches, all stuck in a store that does not answer
            writer.add(f"k{i}", sample(i))
        waiter = asyncio.ensure_future(writer.room())
        await asyncio.sleep(0.05)
        assert not waiter.done()  # more than two batches in flight: the caller must wait
        assert store.gate is not None
        store.gate.set()
        await asyncio.wait_for(waiter, 5)
        await writer.drain()
        assert len(store.data) == 8
        await asyncio.wait_for(writer.room(), 1)  # nothing in flight: no wait at all

    asyncio.run(main())
