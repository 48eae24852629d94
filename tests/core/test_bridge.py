"""The asyncio bridge: results, exceptions, batching and cancellation across the loops."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator

import pytest
import trio

from triograph.core.infra.graph_bridge import GraphBridge


async def test_call_returns_and_raises() -> None:
    async with GraphBridge().open() as bridge:

        async def ok() -> int:
            await asyncio.sleep(0)
            return 42

        async def bad() -> int:
            raise ValueError("from asyncio")

        assert await bridge.call(ok) == 42
        with pytest.raises(ValueError, match="from asyncio"):
            await bridge.call(bad)


async def test_a_cancelled_call_waits_for_the_tasks_it_started() -> None:
    """As a cancelled LangGraph run does: its ``asyncio.wait`` on background checkpoint
    writes is cut short by the cancel, the writes go on; the call is over when they are."""
    events: list[str] = []
    async with GraphBridge().open() as bridge:

        async def write() -> None:
            await asyncio.sleep(0.05)
            events.append("last checkpoint written")

        async def run() -> None:
            await asyncio.wait([asyncio.ensure_future(write())])

        with trio.move_on_after(0.01):
            await bridge.call(run)
        assert events == ["last checkpoint written"]


@pytest.mark.skipif(sys.version_info < (3, 12), reason="eager tasks came with Python 3.12")
async def test_a_cancelled_call_waits_for_the_eager_tasks_it_started() -> None:
    """LangGraph starts its checkpoint writes as eager tasks, which no task factory sees."""
    events: list[str] = []
    async with GraphBridge().open() as bridge:

        async def write() -> None:
            await asyncio.sleep(0.05)
            events.append("last checkpoint written")

        async def run() -> None:
            loop = asyncio.get_running_loop()
            await asyncio.wait([asyncio.eager_task_factory(loop, write())])  # type: ignore[attr-defined,unused-ignore]

        with trio.move_on_after(0.01):
            await bridge.call(run)
        assert events == ["last checkpoint written"]


async def test_trio_cancel_cancels_the_asyncio_task_once_and_waits_for_cleanup() -> None:
    events: list[str] = []
    async with GraphBridge().open() as bridge:

        async def slow() -> None:
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                events.append("cancelled")
                await asyncio.sleep(0.05)  # cleanup takes a while; Trio must wait for it
                events.append("cleaned up")
                raise

        with trio.move_on_after(0.2):
            await bridge.call(slow)
        assert events == ["cancelled", "cleaned up"]


async def test_stream_batches_in_order_and_propagates_errors() -> None:
    async with GraphBridge().open() as bridge:

        async def numbers() -> AsyncIterator[int]:
            for i in range(1000):
                yield i
                if i % 100 == 0:
                    await asyncio.sleep(0)
            raise KeyError("end")

        seen: list[int] = []
        batches = 0

        async def consume() -> None:
            nonlocal batches
            async with bridge.stream(numbers, max_buffer=64) as stream:
                async for batch in stream:
                    batches += 1
                    seen.extend(batch)

        with pytest.raises(KeyError):
            await consume()
        assert seen == list(range(1000))
        assert batches < 1000  # batched: fewer wake-ups than items


async def test_leaving_a_stream_early_cancels_the_producer() -> None:
    state: list[str] = []
    async with GraphBridge().open() as bridge:

        async def forever() -> AsyncIterator[int]:
            try:
                i = 0
                while True:
                    yield i
                    i += 1
                    await asyncio.sleep(0.001)
            finally:
                state.append("producer closed")

        async with bridge.stream(forever) as stream:
            async for batch in stream:
                if batch[-1] > 10:
                    break
        assert state == ["producer closed"]
