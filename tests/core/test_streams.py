"""RunStream: ids, replay after Last-Event-ID, the first-reader log, slow subscribers."""

from __future__ import annotations

import gc
import weakref
from typing import Any

import trio
import trio.testing

from tests.conftest import example_settings
from triograph.core.engine.streams import HEARTBEAT, Heartbeats, RunStream, parse_event_id
from triograph.core.http.app import create_app
from triograph.core.http.wire import sse_response


def _publish(stream: RunStream, n: int, name: str = "values") -> None:
    for i in range(n):
        stream.publish(name, str(i).encode())


async def test_ids_strictly_increase_within_one_millisecond() -> None:
    stream = RunStream("r", resumable=True)
    _publish(stream, 50)
    seqs = [parse_event_id(e.id) for e in stream.log]
    assert seqs == list(range(50))
    pairs = [tuple(map(int, e.id.split("-"))) for e in stream.log]
    assert pairs == sorted(pairs)
    assert len(set(pairs)) == 50


async def test_replay_after_any_id_gives_exactly_the_rest() -> None:
    stream = RunStream("r", resumable=True)
    _publish(stream, 10)
    stream.close()  # a finished run: each replay ends after the stored events
    for cut in range(10):
        sub = stream.subscribe(after=parse_event_id(stream.log[cut].id))
        got = await sub.receive() if cut < 9 else []
        assert [e.data for e in got] == [str(i).encode() for i in range(cut + 1, 10)]
        assert await sub.receive() == []


async def test_replay_then_live_then_end() -> None:
    stream = RunStream("r", resumable=True)
    _publish(stream, 3)
    sub = stream.subscribe(after=-1)
    assert len(await sub.receive()) == 3
    stream.publish("updates", b"{}")
    assert [e.name for e in await sub.receive()] == ["updates"]
    stream.close()
    assert await sub.receive() == []


async def test_first_reader_of_a_background_run_gets_it_all_later_ones_live_only() -> None:
    stream = RunStream("r", resumable=False)
    _publish(stream, 4)
    first = stream.subscribe()
    assert len(await first.receive()) == 4
    second = stream.subscribe()
    stream.publish("values", b"5")
    assert [e.data for e in await second.receive()] == [b"5"]
    assert stream.log == []  # nothing kept once the run has its reader


async def test_join_filter() -> None:
    stream = RunStream("r", resumable=True)
    for name in ["metadata", "values", "updates|child:1", "messages/partial", "messages", "error"]:
        stream.publish(name, b"{}")
    sub = stream.subscribe(after=-1, modes=["updates", "messages-tuple"])
    assert [e.name for e in await sub.receive()] == [
        "updates|child:1",
        "messages/partial",
        "messages",
    ]


async def test_a_slow_subscriber_is_dropped_not_the_producer_blocked() -> None:
    stream = RunStream("r", resumable=False, limit=5)
    stream.claim()
    slow = stream.subscribe()
    _publish(stream, 20)  # never blocks
    assert slow.dropped
    assert len(await slow.receive()) == 5  # what it had, then the end
    assert await slow.receive() == []


async def test_a_subscriber_is_dropped_past_its_byte_bound() -> None:
    stream = RunStream("r", resumable=False, limit=1000, limit_bytes=10)
    stream.claim()
    slow = stream.subscribe()
    for data in (b"aaaa", b"bbbb", b"cccc"):
        stream.publish("values", data)
    assert slow.dropped
    assert [e.data for e in await slow.receive()] == [b"aaaa", b"bbbb"]
    assert await slow.receive() == []


async def test_one_event_larger_than_the_byte_bound_still_reaches_an_empty_queue() -> None:
    stream = RunStream("r", resumable=False, limit_bytes=10)
    stream.claim()
    sub = stream.subscribe()
    stream.publish("values", b"x" * 50)
    assert not sub.dropped
    assert [len(e.data) for e in await sub.receive()] == [50]
    stream.publish("values", b"y" * 50)
    assert not sub.dropped


async def test_receive_takes_at_most_max_bytes_and_at_least_one_event() -> None:
    stream = RunStream("r", resumable=False)
    stream.claim()
    sub = stream.subscribe()
    for i in range(5):
        stream.publish("values", f"{i:04}".encode())
    assert [e.data for e in await sub.receive(max_bytes=10)] == [b"0000", b"0001"]
    assert [e.data for e in await sub.receive(max_bytes=1)] == [b"0002"]
    assert [e.data for e in await sub.receive()] == [b"0003", b"0004"]


async def test_closing_a_subscription_lets_go_of_what_it_had_queued() -> None:
    stream = RunStream("r", resumable=False)
    stream.claim()  # no log: only the subscriber holds the events
    sub = stream.subscribe()
    events = [stream.publish("values", b"{}") for _ in range(3)]
    refs = [weakref.ref(e) for e in events]
    del events
    sub.close()
    gc.collect()
    assert [ref() for ref in refs] == [None, None, None]
    assert stream.subscriber_count == 0


async def test_receive_waits_for_events() -> None:
    stream = RunStream("r", resumable=False)
    stream.claim()
    sub = stream.subscribe()
    async with trio.open_nursery() as nursery:
        got: list[bytes] = []

        async def reader() -> None:
            got.extend(e.data for e in await sub.receive())

        nursery.start_soon(reader)
        await trio.sleep(0.01)
        stream.publish("values", b"x")
    assert got == [b"x"]


def test_parse_event_id() -> None:
    assert parse_event_id(None) is None
    assert parse_event_id("") is None
    assert parse_event_id("1795287465261-7") == 7
    for from_start in ("-", "-1", "garbage", "12-x"):
        assert parse_event_id(from_start) == -1


async def test_heartbeats_poke_each_open_subscription_every_interval(
    autojump_clock: trio.testing.MockClock,
) -> None:
    stream = RunStream("r", resumable=False)
    stream.claim()
    beats = Heartbeats(interval=5.0)
    first, second = stream.subscribe(), stream.subscribe()
    async with trio.open_nursery() as nursery:
        await nursery.start(beats.serve)
        beats.add(first)
        await trio.sleep(2.0)
        beats.add(second)
        seen: list[tuple[str, float]] = []

        async def reader(name: str, sub: Any) -> None:
            while True:
                assert await sub.receive() == []  # no event: only heartbeats wake it
                if sub.beat:
                    sub.beat = False
                    seen.append((name, trio.current_time()))

        nursery.start_soon(reader, "first", first)
        nursery.start_soon(reader, "second", second)
        await trio.sleep(16.0)
        first.close()  # no more heartbeats: its reader waits for good
        await trio.sleep(10.0)
        nursery.cancel_scope.cancel()
    times = {name: [round(t) for n, t in seen if n == name] for name in ("first", "second")}
    assert times == {"first": [5, 10, 15], "second": [7, 12, 17, 22, 27]}


async def test_an_sse_response_sends_what_arrived_while_it_wrote_a_heartbeat() -> None:
    """The run's last events and its end arrive while the response writes a heartbeat (a
    slow client, a busy server): they are sent, not dropped with the stream's end."""
    app = create_app(example_settings())
    stream = RunStream("r", resumable=False)
    sub = stream.subscribe()
    async with app.app_context():
        response = sse_response(sub, with_id=False, heartbeats=Heartbeats(60), headers={})
        body = response.response.__aiter__()  # type: ignore[union-attr]
        sub.poke()
        assert await body.__anext__() == HEARTBEAT  # suspended while this is written ...
        stream.publish("values", b'{"done":true}')  # ... the run ends
        stream.close()
        rest = [chunk async for chunk in body]
    assert b"".join(rest) == b'event: values\r\ndata: {"done":true}\r\n\r\n'
