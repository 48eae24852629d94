"""Admission (``triograph.core.http.admission``): past its limit, requests are handled in
the order they arrived, each holding its place only until its response starts."""

from __future__ import annotations

import math
from typing import Any

import trio
import trio.testing

from triograph.core.http.admission import RELEASE, Admission
from triograph.core.infra.intake import CALM, CROWD, MAX_WAIT, RECENT, Intake


def _scope(path: str) -> dict[str, Any]:
    return {"type": "http", "path": path, "method": "POST"}


async def _nothing(message: dict[str, Any]) -> None:
    return


async def test_requests_past_the_limit_wait_in_arrival_order() -> None:
    entered: list[int] = []
    respond = {i: trio.Event() for i in range(6)}
    handling = 0
    most = 0

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        nonlocal handling, most
        number = int(scope["path"].rsplit("/", 1)[1])
        entered.append(number)
        handling += 1
        most = max(most, handling)
        await respond[number].wait()
        handling -= 1
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await trio.sleep_forever()  # a long stream: it no longer holds a place

    intake = Intake()
    admission = Admission(app, intake, limit=2)
    async with trio.open_nursery() as nursery:
        for number in range(6):
            nursery.start_soon(admission, _scope(f"/runs/{number}"), None, _nothing)
            await trio.testing.wait_all_tasks_blocked()
        assert entered == [0, 1]
        assert intake.busy == 6  # waiting for a place counts: they are being taken in
        for number in (1, 0, 2, 3, 4):  # each answer lets the next in line in
            respond[number].set()
            await trio.testing.wait_all_tasks_blocked()
        assert entered == [0, 1, 2, 3, 4, 5]
        assert most == 2
        assert intake.busy == 1  # the five answering streams no longer count
        nursery.cancel_scope.cancel()
    assert intake.busy == 0


async def test_a_request_waiting_before_its_response_can_give_its_place_back() -> None:
    entered: list[str] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        entered.append(scope["path"])
        scope[RELEASE]()  # a /wait holding its headers back for a quick result
        scope[RELEASE]()  # given back once only
        await trio.sleep_forever()

    admission = Admission(app, Intake(), limit=1)
    async with trio.open_nursery() as nursery:
        for path in ("/runs/wait", "/threads/search", "/runs/wait"):
            nursery.start_soon(admission, _scope(path), None, _nothing)
            await trio.testing.wait_all_tasks_blocked()
        assert entered == ["/runs/wait", "/threads/search", "/runs/wait"]
        assert admission.limiter.borrowed_tokens == 0
        nursery.cancel_scope.cancel()


async def test_health_checks_go_past_the_queue() -> None:
    served: list[str] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        served.append(scope["path"])
        if scope["path"] != "/ok":
            await trio.sleep_forever()

    admission = Admission(app, Intake(), limit=1)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(admission, _scope("/runs/wait"), None, _nothing)
        nursery.start_soon(admission, _scope("/runs/wait"), None, _nothing)
        await trio.testing.wait_all_tasks_blocked()
        await admission(_scope("/ok"), None, _nothing)
        assert served == ["/runs/wait", "/ok"]
        nursery.cancel_scope.cancel()


async def test_the_intake_counts_each_request_until_its_response_starts() -> None:
    """Every request counts from its arrival (also while it waits for a place, also if it
    is cancelled there) until its response starts."""
    answer = trio.Event()

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await answer.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await trio.sleep_forever()

    intake = Intake()
    admission = Admission(app, intake, limit=1)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(admission, _scope("/runs"), None, _nothing)
        queued = trio.CancelScope()  # a client that leaves while it waits for a place
        nursery.start_soon(_in_scope, queued, admission, _scope("/runs"))
        await trio.testing.wait_all_tasks_blocked()
        assert intake.busy == 2
        queued.cancel()
        await trio.testing.wait_all_tasks_blocked()
        assert intake.busy == 1
        answer.set()
        await trio.testing.wait_all_tasks_blocked()
        assert intake.busy == 0
        nursery.cancel_scope.cancel()


async def _in_scope(scope: trio.CancelScope, admission: Admission, asgi: dict[str, Any]) -> None:
    with scope:
        await admission(asgi, None, _nothing)


async def test_requests_crowd_in_when_more_than_crowd_recent_ones_are_taken_in(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A request arriving while ``CROWD`` others that arrived in the last ``RECENT`` seconds
    are being taken in makes a crowd; ``calm`` returns ``CALM`` seconds after the last."""
    intake = Intake()
    for number in range(CROWD):
        intake.enter(number)
    assert intake.crowded_at == -math.inf  # the last one found CROWD - 1 others
    await intake.calm()  # no crowd: at once
    intake.enter("crowded")
    crowded = trio.current_time()
    assert intake.crowded_at == crowded
    await intake.calm()
    assert trio.current_time() == crowded + CALM
    intake.leave("crowded")
    await trio.sleep(RECENT)  # the CROWD others take long to answer: they are no crowd
    intake.enter("later")
    assert intake.crowded_at == crowded
    for number in range(CROWD):
        intake.leave(number)
    intake.leave("later")
    assert intake.busy == 0


async def test_calm_waits_no_longer_than_max_wait(
    autojump_clock: trio.testing.MockClock,
) -> None:
    intake = Intake()
    start = trio.current_time()
    intake.crowded_at = start + 3600  # crowded for the next hour, as it were
    await intake.calm()
    assert trio.current_time() == start + MAX_WAIT


async def test_the_intake_is_swamped_by_that_many_recent_requests_being_taken_in(
    autojump_clock: trio.testing.MockClock,
) -> None:
    intake = Intake()
    for number in range(3):
        intake.enter(number)
    assert intake.swamped(3)
    assert not intake.swamped(4)
    intake.leave(1)
    assert not intake.swamped(3)
    intake.enter(1)
    await trio.sleep(RECENT)  # long in, they are no longer arriving faster than answered
    assert not intake.swamped(3)
    assert not intake.swamped(1)
    intake.enter("new")
    assert intake.swamped(1)
    assert not intake.swamped(2)
