"""Thread streams: the bounded, time-limited log, slow subscribers, forgetting idle threads."""

from __future__ import annotations

import types

import pytest
import trio
import trio.testing

from triograph.core.engine import thread_streams
from triograph.core.engine.streams import Event
from triograph.core.engine.thread_streams import (
    ThreadStreams,
    mode_filter,
    parse_last_event_id,
)
from triograph.core.infra.errors import InvalidRequest
from triograph.core.infra.settings import Settings

EVERYTHING = mode_filter(["run_modes", "state_update"])


def hub(buffer: int = 4096) -> ThreadStreams:
    return ThreadStreams(types.SimpleNamespace(settings=Settings(subscriber_buffer=buffer)))


def names(events: list[Event]) -> list[str]:
    return [e.name for e in events]


async def test_unwatched_threads_have_no_stream() -> None:
    streams = hub()
    streams.publish("t", "values", b"{}")
    streams.run_done("t", "r")
    assert streams._streams == {}
    sub = streams.subscribe("t", accepts=EVERYTHING, after=(-1, -1))
    streams.publish("t", "values", b"{}")
    assert names(await sub.receive()) == ["values"]  # nothing before the first subscriber


async def test_replay_after_an_id_and_the_caps(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(thread_streams, "LOG_CAP", 5)
    streams = hub()
    sub = streams.subscribe("t", accepts=EVERYTHING, after=None)
    for i in range(8):
        streams.publish("t", f"e{i}", b"{}")
    live = await sub.receive()
    assert names(live) == [f"e{i}" for i in range(8)]
    sub.close()
    replay = streams.subscribe("t", accepts=EVERYTHING, after=parse_last_event_id(live[5].id))
    assert names(await replay.receive()) == ["e6", "e7"]
    from_start = streams.subscribe("t", accepts=EVERYTHING, after=parse_last_event_id("-"))
    assert names(await from_start.receive()) == ["e3", "e4", "e5", "e6", "e7"]  # capped at 5

    monkeypatch.setattr(thread_streams, "LOG_BYTES", 10)
    streams.publish("t", "big", b"x" * 8)
    streams.publish("t", "big2", b"y" * 8)
    stream = streams._streams["t"]
    assert names([e for _, e in stream.log]) == ["big2"]


async def test_events_expire_and_idle_streams_are_forgotten(
    autojump_clock: trio.testing.MockClock,
) -> None:
    streams = hub()
    sub = streams.subscribe("t", accepts=EVERYTHING, after=None)
    streams.publish("t", "old", b"{}")
    await trio.sleep(thread_streams.LOG_TTL / 2)
    streams.publish("t", "new", b"{}")
    sub.close()
    await trio.sleep(thread_streams.LOG_TTL / 2 + 1)
    replay = streams.subscribe("t", accepts=EVERYTHING, after=(-1, -1))
    assert names(await replay.receive()) == ["new"]
    replay.close()
    streams._forget_idle()
    assert "t" in streams._streams  # idle for less than LOG_TTL: a reconnect still resumes
    async with trio.open_nursery() as nursery:
        await nursery.start(streams.sweep)
        await trio.sleep(thread_streams.LOG_TTL + thread_streams.SWEEP_INTERVAL)
        nursery.cancel_scope.cancel()
    assert streams._streams == {}


async def test_a_slow_subscriber_is_dropped_and_never_blocks() -> None:
    streams = hub(buffer=3)
    slow = streams.subscribe("t", accepts=EVERYTHING, after=None)
    fast = streams.subscribe("t", accepts=EVERYTHING, after=None)
    for i in range(3):
        streams.publish("t", f"e{i}", b"{}")
    assert len(await fast.receive()) == 3
    streams.publish("t", "e3", b"{}")
    assert slow.dropped
    assert streams.subscriber_count("t") == 1
    assert names(await slow.receive()) == ["e0", "e1", "e2"]
    assert await slow.receive() == []


async def test_modes_filter_and_close() -> None:
    streams = hub()
    lifecycle = streams.subscribe("t", accepts=mode_filter(["lifecycle"]), after=None)
    state = streams.subscribe("t", accepts=mode_filter(["state_update"]), after=None)
    runs = streams.subscribe("t", accepts=mode_filter(None), after=None)
    for name in ("metadata", "values", "state_update", "error"):
        streams.publish("t", name, b"{}")
    streams.run_done("t", "r")
    assert names(await lifecycle.receive()) == ["metadata", "metadata"]
    assert names(await state.receive()) == ["state_update"]
    assert names(await runs.receive()) == ["metadata", "values", "error", "metadata"]
    streams.close()
    assert await runs.receive() == []
    late = streams.subscribe("t", accepts=EVERYTHING, after=None)
    assert await late.receive() == []
    with pytest.raises(InvalidRequest, match="Invalid stream mode: values"):
        mode_filter(["values"])


@pytest.mark.parametrize(
    ("value", "key"),
    [("-", (-1, -1)), ("12-3", (12, 3)), ("12", (12, float("inf"))), ("12-*", (12, float("inf")))],
)
def test_last_event_id_syntax(value: str, key: tuple[float, float]) -> None:
    assert parse_last_event_id(value) == key


@pytest.mark.parametrize("value", ["", "abc", "1-2-3", "-1", "1-", "1-x"])
def test_bad_last_event_ids(value: str) -> None:
    with pytest.raises(InvalidRequest, match="Invalid last-event-id"):
        parse_last_event_id(value)
