"""Tenant isolation: two users with HS256 JWTs on a server running the example
``examples/auth/auth.py`` (owner-stamped resources, owner filters, per-user store
namespaces). Alice owns threads, runs (finished and in flight, stateful and stateless),
an assistant, crons and store items; Bob tries every endpoint of the API on them.

Bob can neither see, count, change, cancel, join nor delete anything of Alice's: every
attempt gets the status the official server gives (404 for what he may not see, 409 for
an id he may not take), searches and counts leave Alice's rows out of pages and totals,
and Alice's resources are unchanged afterwards. Each refused request is also made by
Alice, who must succeed: a route that fails for everyone proves nothing.

The table of requests (:data:`ATTEMPTS`) is plain HTTP, so :func:`attempts_on` can run it
against the official server too (``langgraph dev`` with the same ``auth.py``).
"""

from __future__ import annotations

from typing import Any

import attrs
import httpx
import pytest
import trio

from tests import pg
from tests.auth import auth_server, bearer
from tests.sdk import poll

# a day: the module is imported when a suite starts, which may run for longer than the default
ALICE, BOB = bearer("alice", ttl=86400), bearer("bob", ttl=86400)
YEARLY = "0 0 1 1 *"
MODES = (
    "values",
    "updates",
    "messages",
    "messages-tuple",
    "events",
    "debug",
    "custom",
    "tasks",
    "checkpoints",
)
RUN = {"assistant_id": "agent", "input": {"topic": "cats"}}


@attrs.define
class World:
    """Alice's resources (and Bob's own thread and assistant)."""

    thread: str = ""  # idle, with checkpoints
    busy: str = ""  # a thread with a run in flight
    run: str = ""  # that run
    done_run: str = ""  # a finished run of ``thread``
    checkpoint: str = ""
    assistant: str = ""
    cron: str = ""
    thread_cron: str = ""
    stateless: str = ""
    bob_thread: str = ""
    bob_assistant: str = ""


@attrs.frozen
class Attempt:
    """One request Bob makes (``status``: what he gets) and Alice makes (``owner``)."""

    name: str
    method: str
    path: str
    body: Any = None
    status: int = 404
    owner: int = 200
    headers: dict[str, str] = attrs.Factory(dict)
    stream: bool = False


def attempts(w: World) -> list[Attempt]:
    """Every request on Alice's resources, read-only ones first, destructive ones last."""
    t, busy, run, a, cron = w.thread, w.busy, w.run, w.assistant, w.cron
    cp = {"checkpoint_id": w.checkpoint}
    out = [
        # threads and their state
        Attempt("get thread", "GET", f"/threads/{t}"),
        Attempt("get state", "GET", f"/threads/{t}/state"),
        Attempt("get state at", "GET", f"/threads/{t}/state/{w.checkpoint}"),
        Attempt("post state at", "POST", f"/threads/{t}/state/checkpoint", {"checkpoint": cp}),
        Attempt("get history", "GET", f"/threads/{t}/history"),
        Attempt("post history", "POST", f"/threads/{t}/history", {"limit": 5}),
        Attempt("thread stream", "GET", f"/threads/{t}/stream", stream=True),
        Attempt("list runs", "GET", f"/threads/{t}/runs"),
        Attempt("get run", "GET", f"/threads/{t}/runs/{w.done_run}"),
        Attempt("join finished run", "GET", f"/threads/{t}/runs/{w.done_run}/join"),
        Attempt("join stream", "GET", f"/threads/{busy}/runs/{run}/stream", stream=True),
        Attempt(
            "resume join stream",
            "GET",
            f"/threads/{busy}/runs/{run}/stream",
            headers={"Last-Event-ID": "0"},
            stream=True,
        ),
        Attempt("get stateless run", "GET", f"/runs/{w.stateless}"),
        Attempt("join stateless stream", "GET", f"/runs/{w.stateless}/stream", stream=True),
        # assistants
        Attempt("get assistant", "GET", f"/assistants/{a}"),
        Attempt("assistant graph", "GET", f"/assistants/{a}/graph"),
        Attempt("assistant schemas", "GET", f"/assistants/{a}/schemas"),
        Attempt("assistant subgraphs", "GET", f"/assistants/{a}/subgraphs"),
        Attempt("assistant versions", "POST", f"/assistants/{a}/versions", {}),
        # crons
        Attempt("get cron", "GET", f"/runs/crons/{cron}"),
        # writes that must change nothing
        Attempt("patch thread", "PATCH", f"/threads/{t}", {"metadata": {"x": 1}}),
        Attempt("update state", "POST", f"/threads/{t}/state", {"values": {"topic": "dogs"}}),
        Attempt("copy thread", "POST", f"/threads/{t}/copy"),
        Attempt("create thread with her id", "POST", "/threads", {"thread_id": t}, 409, 409),
        Attempt(
            "create thread with her id, do_nothing",
            "POST",
            "/threads",
            {"thread_id": t, "if_exists": "do_nothing"},
            409,
        ),
        Attempt("run on her thread", "POST", f"/threads/{t}/runs", RUN),
        Attempt("wait on her thread", "POST", f"/threads/{t}/runs/wait", RUN),
        Attempt(
            "run creating her thread",
            "POST",
            f"/threads/{t}/runs/wait",
            {**RUN, "if_not_exists": "create"},
        ),
        *[
            Attempt(
                f"stream {mode} on her thread",
                "POST",
                f"/threads/{t}/runs/stream",
                {**RUN, "stream_mode": mode},
                stream=True,
            )
            for mode in MODES
        ],
        Attempt(
            "run her assistant on his thread",
            "POST",
            f"/threads/{w.bob_thread}/runs/wait",
            {**RUN, "assistant_id": a},
            owner=404,  # his thread: not hers either
        ),
        Attempt("stateless run of her assistant", "POST", "/runs/wait", {**RUN, "assistant_id": a}),
        Attempt("batch of her assistant", "POST", "/runs/batch", [{**RUN, "assistant_id": a}]),
        Attempt(
            "cron on her thread", "POST", f"/threads/{t}/runs/crons", {**RUN, "schedule": YEARLY}
        ),
        Attempt(
            "cron of her assistant",
            "POST",
            "/runs/crons",
            {**RUN, "assistant_id": a, "schedule": YEARLY},
        ),
        Attempt("patch assistant", "PATCH", f"/assistants/{a}", {"metadata": {"x": 1}}),
        Attempt("assistant latest", "POST", f"/assistants/{a}/latest", {"version": 1}),
        Attempt(
            "create assistant with her id",
            "POST",
            "/assistants",
            {"assistant_id": a, "graph_id": "agent"},
            409,
            409,
        ),
        Attempt("patch cron", "PATCH", f"/runs/crons/{cron}", {"schedule": "0 0 2 1 *"}),
        # destructive
        Attempt("cancel run", "POST", f"/threads/{busy}/runs/{run}/cancel", owner=202),
        Attempt("bulk cancel by id", "POST", "/runs/cancel", {"thread_id": busy, "run_ids": [run]}),
        Attempt("bulk cancel all", "POST", "/runs/cancel", {"status": "all"}),
        Attempt("delete run", "DELETE", f"/threads/{busy}/runs/{run}", owner=204),
        Attempt("delete cron", "DELETE", f"/runs/crons/{w.thread_cron}", owner=204),
        Attempt("prune thread", "POST", "/threads/prune", {"thread_ids": [t]}),
        Attempt("delete assistant", "DELETE", f"/assistants/{a}", owner=204),
        Attempt("delete thread", "DELETE", f"/threads/{busy}", owner=204),
    ]
    return out


async def _call(http: httpx.AsyncClient, attempt: Attempt, headers: dict[str, str]) -> int:
    kwargs: dict[str, Any] = {"headers": {**headers, **attempt.headers}}
    if attempt.body is not None:
        kwargs["json"] = attempt.body
    if attempt.stream:  # the status is what counts; leave before the stream ends
        async with http.stream(attempt.method, attempt.path, **kwargs) as response:
            return response.status_code
    return (await http.request(attempt.method, attempt.path, **kwargs)).status_code


async def attempts_on(
    http: httpx.AsyncClient, world: World, *, owner_too: bool = True
) -> list[str]:
    """Make every attempt as Bob, then (unless told not to) as Alice; the mismatches."""
    wrong = []
    for attempt in attempts(world):
        if attempt.name.startswith(("cancel", "bulk cancel", "delete run")) and owner_too:
            await _call(http, attempt, BOB)  # Bob first: Alice's run must still be there
        got = await _call(http, attempt, BOB)
        if got != attempt.status:
            wrong.append(f"bob: {attempt.name}: {got}, expected {attempt.status}")
        if owner_too:
            if attempt.name.startswith(("bulk cancel",)):
                continue  # Alice's one run went with her own cancel
            got = await _call(http, attempt, ALICE)
            if got != attempt.owner and not (attempt.name == "bulk cancel all" and got == 404):
                wrong.append(f"alice: {attempt.name}: {got}, expected {attempt.owner}")
    return wrong


async def _json(
    http: httpx.AsyncClient, method: str, path: str, who: dict[str, str], **kw: Any
) -> Any:
    response = await http.request(method, path, headers=who, **kw)
    assert response.status_code == 200, (method, path, response.text)
    return response.json()


async def build(http: httpx.AsyncClient) -> World:
    """Alice's resources, and a thread and an assistant of Bob's."""
    w = World()
    j = _json
    w.thread = (await j(http, "POST", "/threads", ALICE, json={"metadata": {"project": "apollo"}}))[
        "thread_id"
    ]
    await j(http, "POST", f"/threads/{w.thread}/runs/wait", ALICE, json=RUN)
    w.done_run = (await j(http, "GET", f"/threads/{w.thread}/runs", ALICE))[0]["run_id"]
    w.checkpoint = (await j(http, "GET", f"/threads/{w.thread}/state", ALICE))["checkpoint"][
        "checkpoint_id"
    ]
    w.busy = (await j(http, "POST", "/threads", ALICE, json={}))["thread_id"]
    slow = {"assistant_id": "slow", "input": {"delay": 60}}
    w.run = (await j(http, "POST", f"/threads/{w.busy}/runs", ALICE, json=slow))["run_id"]
    await poll(
        lambda: j(http, "GET", f"/threads/{w.busy}/runs/{w.run}", ALICE),
        lambda r: r["status"] == "running",
    )
    stateless = {**RUN, "on_completion": "keep"}
    w.stateless = (await j(http, "POST", "/runs", ALICE, json=stateless))["run_id"]
    w.assistant = (
        await j(http, "POST", "/assistants", ALICE, json={"graph_id": "agent", "name": "hers"})
    )["assistant_id"]
    w.cron = (await j(http, "POST", "/runs/crons", ALICE, json={**RUN, "schedule": YEARLY}))[
        "cron_id"
    ]
    w.thread_cron = (
        await j(
            http, "POST", f"/threads/{w.thread}/runs/crons", ALICE, json={**RUN, "schedule": YEARLY}
        )
    )["cron_id"]
    put = {"namespace": ["notes"], "key": "k", "value": {"text": "alice's secret"}}
    assert (await http.put("/store/items", json=put, headers=ALICE)).status_code == 204
    w.bob_thread = (await j(http, "POST", "/threads", BOB, json={}))["thread_id"]
    w.bob_assistant = (
        await j(http, "POST", "/assistants", BOB, json={"graph_id": "agent", "name": "his"})
    )["assistant_id"]
    return w


async def _hers(http: httpx.AsyncClient, w: World) -> dict[str, Any]:
    """What Alice sees of her resources (to compare before and after Bob's attempts)."""
    out = {}
    for path in (
        f"/threads/{w.thread}",
        f"/threads/{w.thread}/state",
        f"/assistants/{w.assistant}",
        f"/runs/crons/{w.cron}",
        f"/runs/crons/{w.thread_cron}",
        f"/threads/{w.busy}/runs/{w.run}",
        "/store/items?namespace=notes&key=k",
    ):
        out[path] = await _json(http, "GET", path, ALICE)
    for row in out.values():
        if isinstance(row, dict):
            row.pop("updated_at", None)
    return out


async def test_bob_reaches_nothing_of_alice(nursery: trio.Nursery) -> None:
    async with auth_server(nursery) as server, server.http() as http:
        w = await build(http)
        before = await _hers(http, w)
        wrong = await attempts_on(http, w, owner_too=False)
        assert await _hers(http, w) == before  # Bob changed nothing
        await _searches(http, w)
        await _store(http)
        wrong += await attempts_on(http, w)  # again, Alice too (her own requests succeed)
        assert not wrong, "\n".join(wrong)


async def _searches(http: httpx.AsyncClient, w: World) -> None:
    """Searches and counts, with and without criteria: none of Alice's rows, in pages or
    totals."""

    async def page(path: str, who: dict[str, str], body: Any) -> tuple[list[Any], str]:
        response = await http.post(path, json=body, headers=who)
        assert response.status_code == 200, (path, response.text)
        return response.json(), response.headers.get("x-pagination-total", "")

    for body in ({}, {"metadata": {"project": "apollo"}}, {"ids": [w.thread]}, {"status": "busy"}):
        rows, total = await page("/threads/search", BOB, body)
        ids = {r["thread_id"] for r in rows}
        assert ids <= {w.bob_thread}, body
        assert total == str(len(ids)), body
        assert (await _json(http, "POST", "/threads/count", BOB, json=body)) == len(ids)
    rows, total = await page("/threads/search", ALICE, {"limit": 1})
    assert (len(rows), total) == (1, "3")  # her two threads and her stateless run's
    rows, total = await page("/assistants/search", BOB, {})
    assert ([r["assistant_id"] for r in rows], total) == ([w.bob_assistant], "1")
    assert await _json(http, "POST", "/assistants/count", BOB, json={}) == 1
    assert await _json(http, "POST", "/assistants/count", ALICE, json={}) == 1
    for body in ({}, {"assistant_id": w.assistant}, {"thread_id": w.thread}):
        rows, total = await page("/runs/crons/search", BOB, body)
        assert (rows, total) == ([], "0"), body
        assert await _json(http, "POST", "/runs/crons/count", BOB, json=body) == 0
    rows, total = await page("/runs/crons/search", ALICE, {})
    assert total == "2"


async def _store(http: httpx.AsyncClient) -> None:
    """Each user's items live under their own namespace: Bob reads, lists, searches,
    overwrites and deletes only his."""
    store = "/store/items"
    bob_put = {"namespace": ["notes"], "key": "k", "value": {"text": "bob's"}}
    assert (await http.put(store, json=bob_put, headers=BOB)).status_code == 204
    got = await _json(http, "GET", store, BOB, params={"namespace": "notes", "key": "k"})
    assert got["value"] == {"text": "bob's"}
    for prefix in ([], ["notes"], ["alice"], ["alice", "notes"]):
        found = await _json(http, "POST", f"{store}/search", BOB, json={"namespace_prefix": prefix})
        assert [i["value"] for i in found["items"]] == (
            [] if prefix[:1] == ["alice"] else [{"text": "bob's"}]
        )
    spaces = await _json(http, "POST", "/store/namespaces", BOB, json={})
    assert spaces["namespaces"] == [["bob", "notes"]]
    sneaky = await _json(http, "GET", store, BOB, params={"namespace": "alice.notes", "key": "k"})
    assert sneaky is None
    delete = {"namespace": ["notes"], "key": "k"}
    assert (await http.request("DELETE", store, json=delete, headers=BOB)).status_code == 204
    hers = await _json(http, "GET", store, ALICE, params={"namespace": "notes", "key": "k"})
    assert hers["value"] == {"text": "alice's secret"}
    found = await _json(
        http, "POST", f"{store}/search", ALICE, json={"filter": {"text": "alice's secret"}}
    )
    assert [i["namespace"] for i in found["items"]] == [["alice", "notes"]]


async def test_the_owner_streams_every_mode(nursery: trio.Nursery) -> None:
    """Alice's own streams work in every mode at once (the refusals above are not a broken
    route), and the thread stream shows her runs to her."""
    async with auth_server(nursery) as server:
        thread = await server.sync(lambda c: c.threads.create(), headers=ALICE)

        def stream(c: Any) -> list[str]:
            parts = c.runs.stream(
                thread["thread_id"], "agent", input=RUN["input"], stream_mode=list(MODES)
            )
            return sorted({p.event.split("|")[0] for p in parts})

        events = await server.sync(stream, headers=ALICE)
    assert {"values", "updates", "debug", "tasks", "checkpoints", "events", "metadata"} <= set(
        events
    )


@pytest.mark.skipif(pg.ADMIN_DSN is None, reason="needs TRIOGRAPH_TEST_POSTGRES")
async def test_across_processes(nursery: trio.Nursery) -> None:
    """Two servers on one Postgres database: a request authorized by one acts on a run
    executing on the other, and refusals hold whichever server Bob asks."""
    url = await trio.to_thread.run_sync(pg.fresh_database)
    try:
        async with (
            auth_server(nursery, storage=url, lease=0.6) as one,
            auth_server(nursery, storage=url, lease=0.6) as two,
            one.http() as first,
            two.http() as second,
        ):
            tid = (await _json(first, "POST", "/threads", ALICE, json={}))["thread_id"]
            slow = {"assistant_id": "slow", "input": {"delay": 30}}
            rid = (await _json(first, "POST", f"/threads/{tid}/runs", ALICE, json=slow))["run_id"]
            assert one.core.supervisor.get(rid) is not None  # it executes on the first
            run = f"/threads/{tid}/runs/{rid}"
            for method, path in [("GET", run), ("GET", f"{run}/join"), ("POST", f"{run}/cancel")]:
                response = await second.request(method, path, headers=BOB)
                assert response.status_code == 404, (method, path)
            async with second.stream("GET", f"{run}/stream", headers=BOB) as stream:
                assert stream.status_code == 404
            assert (await second.post(f"{run}/cancel", headers=ALICE)).status_code == 202
            ended = await poll(
                lambda: _json(second, "GET", run, ALICE), lambda r: r["status"] != "running"
            )
            assert ended["status"] == "interrupted"
            configurable = ended["kwargs"]["config"]["configurable"]
            assert configurable["langgraph_auth_user_id"] == "alice"
    finally:
        await trio.to_thread.run_sync(pg.drop_database, url)
