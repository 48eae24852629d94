"""Admission (``triograph.core.http.admission``): past its limit, requests are handled in
the order they arrived, each holding its place only until its response starts."""

from __future__ import annotations

from typing import Any

import trio
import trio.testing

from triograph.core.http.admission import RELEASE, Admission


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

    admission = Admission(app, limit=2)
    async with trio.open_nursery() as nursery:
        for number in range(6):
            nursery.start_soon(admission, _scope(f"/runs/{number}"), None, _nothing)
            await trio.testing.wait_all_tasks_blocked()
        assert entered == [0, 1]
        for number in (1, 0, 2, 3, 4):  # each answer lets the next in line in
            respond[number].set()
            await trio.testing.wait_all_tasks_blocked()
        assert entered == [0, 1, 2, 3, 4, 5]
        assert most == 2
        nursery.cancel_scope.cancel()


async def test_a_request_waiting_before_its_response_can_give_its_place_back() -> None:
    entered: list[str] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        entered.append(scope["path"])
        scope[RELEASE]()  # a /wait holding its headers back for a quick result
        scope[RELEASE]()  # given back once only
        await trio.sleep_forever()

    admission = Admission(app, limit=1)
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

    admission = Admission(app, limit=1)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(admission, _scope("/runs/wait"), None, _nothing)
        nursery.start_soon(admission, _scope("/runs/wait"), None, _nothing)
        await trio.testing.wait_all_tasks_blocked()
        await admission(_scope("/ok"), None, _nothing)
        assert served == ["/runs/wait", "/ok"]
        nursery.cancel_scope.cancel()
