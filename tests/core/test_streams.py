"""RunStream: ids, replay after Last-Event-ID, the first-reader log, slow subscribers."""

from __future__ import annotations

import trio

from triograph.core.engine.streams import RunStream, parse_event_id


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
