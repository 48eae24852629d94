"""Crons (contract §9): every endpoint through the official SDK (httpx where the SDK has no
call or hides the status), and the scheduler firing runs. A cron is made due by moving its
``next_run_date`` into the past through storage; the server polls every 0.1 s."""

from __future__ import annotations

import datetime as dt
import uuid
import zoneinfo
from collections.abc import AsyncIterator, Iterator
from typing import Any, TypeVar

import pytest
import trio
from croniter import croniter

from tests.conftest import example_settings, start_server
from tests.sdk import Server, get, poll
from triograph.core.infra.graphs import system_assistant_id
from triograph.core.infra.hookspecs import hookimpl
from triograph.core.infra.models import Run, now

T = TypeVar("T")

AGENT_ID = system_assistant_id("agent")
YEARLY = "0 0 1 1 *"  # never due by itself while a test runs


@pytest.fixture
async def server(nursery: trio.Nursery) -> AsyncIterator[Server]:
    settings = example_settings(cron_interval=0.1, heartbeat_interval=1.0, shutdown_grace=0.5)
    async for s in start_server(nursery, settings):
        yield s


class Finished:
    """Records every run that finishes (a plugin registered for one test)."""

    def __init__(self) -> None:
        self.runs: list[Run] = []

    @hookimpl
    def triograph_run_finished(self, run: Run) -> None:
        self.runs.append(run)

    def of(self, cron_id: str) -> list[Run]:
        return [
            r for r in self.runs if r.kwargs["config"]["configurable"].get("cron_id") == cron_id
        ]


@pytest.fixture
def finished(server: Server) -> Iterator[Finished]:
    recorder = Finished()
    server.core.pm.register(recorder, name="cron-test-finished")
    try:
        yield recorder
    finally:
        server.core.pm.unregister(recorder)


async def get_cron(server: Server, cron_id: str) -> dict[str, Any]:
    status, body = await get(server, f"/runs/crons/{cron_id}")
    assert status == 200, body
    return body  # type: ignore[no-any-return]


async def make_due(server: Server, cron_id: str) -> None:
    repo = server.core.storage.crons
    cron = await repo.get(cron_id)
    assert cron is not None
    cron.next_run_date = now() - dt.timedelta(seconds=1)
    await repo.update(cron)


async def fired_runs(finished: Finished, cron_id: str, n: int = 1) -> list[Run]:
    """The runs of the cron once ``n`` of them have finished."""

    async def runs() -> list[Run]:
        return finished.of(cron_id)

    return await poll(runs, lambda rs: len(rs) >= n)


async def fired_run(finished: Finished, cron_id: str) -> Run:
    return (await fired_runs(finished, cron_id))[0]


async def advanced(server: Server, cron_id: str) -> dict[str, Any]:
    """The cron once its ``next_run_date`` is in the future again."""
    return await poll(
        lambda: get_cron(server, cron_id),
        lambda c: dt.datetime.fromisoformat(c["next_run_date"]) > now(),
    )


async def new_thread(server: Server) -> str:
    thread = await server.sync(lambda c: c.threads.create())
    return thread["thread_id"]  # type: ignore[no-any-return]


def joke(topic: str) -> dict[str, str]:
    return {"topic": f"{topic} and cats", "joke": f"This is a joke about {topic} and cats"}


# -- create -----------------------------------------------------------------------------------


async def test_create_cron(server: Server) -> None:
    cron = await server.sync(
        lambda c: c.crons.create(
            "agent", schedule="*/5 * * * *", input={"topic": "cron"}, metadata={"c": 1}
        )
    )
    cron_id = cron["cron_id"]
    assert uuid.UUID(cron_id).version == 7
    assert cron["assistant_id"] == AGENT_ID
    assert cron["thread_id"] is None
    assert cron["on_run_completed"] == "delete"
    assert (cron["enabled"], cron["user_id"], cron["timezone"], cron["end_time"]) == (
        True,
        "",
        None,
        None,
    )
    assert cron["metadata"] == {"c": 1}
    assert cron["payload"] == {
        "schedule": "*/5 * * * *",
        "input": {"topic": "cron"},
        "metadata": {"c": 1},
        "assistant_id": AGENT_ID,
        "config": {"configurable": {"cron_id": cron_id}},
    }
    created = dt.datetime.fromisoformat(cron["created_at"])
    expected = croniter("*/5 * * * *", created).get_next(dt.datetime)
    assert cron["next_run_date"] == expected.isoformat()
    assert await get_cron(server, cron_id) == cron


async def test_create_cron_for_thread(server: Server) -> None:
    tid = await new_thread(server)
    cron = await server.sync(
        lambda c: c.crons.create_for_thread(
            tid, AGENT_ID, schedule=YEARLY, input={"topic": "t"}, multitask_strategy="enqueue"
        )
    )
    assert (cron["thread_id"], cron["on_run_completed"]) == (tid, None)
    assert cron["payload"]["multitask_strategy"] == "enqueue"
    assert cron["payload"]["config"] == {"configurable": {"cron_id": cron["cron_id"]}}


async def test_schedule_is_read_in_the_cron_timezone(server: Server) -> None:
    cron = await server.sync(
        lambda c: c.crons.create("agent", schedule="30 9 * * *", timezone="America/New_York")
    )
    assert cron["timezone"] == "America/New_York"
    next_run = dt.datetime.fromisoformat(cron["next_run_date"])
    assert next_run.utcoffset() == dt.timedelta(0)  # stored in UTC
    local = next_run.astimezone(zoneinfo.ZoneInfo("America/New_York"))
    assert (local.hour, local.minute) == (9, 30)
    assert dt.timedelta(0) < next_run - now() <= dt.timedelta(days=1)


@pytest.mark.parametrize(
    ("body", "status", "detail"),
    [
        ({"schedule": "bogus"}, 422, "Invalid cron schedule: 'bogus'. Reason: "),
        ({"schedule": "61 * * * *"}, 422, "Invalid cron schedule: '61 * * * *'. Reason: "),
        ({"schedule": 5}, 422, "$.schedule"),
        ({"schedule": None}, 422, "$.schedule"),
        ({"timezone": "Mars/Base"}, 422, "Invalid timezone: 'Mars/Base'. Use IANA timezone"),
        ({"assistant_id": "nope"}, 404, "Assistant 'nope' not found"),
        ({"assistant_id": str(uuid.UUID(int=7))}, 404, f"Assistant '{uuid.UUID(int=7)}' not"),
        ({"end_time": "soon"}, 422, "$.end_time"),
        ({"on_run_completed": "never"}, 422, "$.on_run_completed"),
        ({"enabled": "yes"}, 422, "$.enabled"),
        ({"stream_mode": "bogus"}, 422, "bogus"),
        ({"durability": "x"}, 422, "$.durability"),
        ({"input": {"topic": "x"}, "config": "x"}, 422, "$.config"),
        ({"config": {"configurable": [1]}}, 422, "$.config.configurable"),
        ({"webhook": "ftp://"}, 422, "Invalid webhook hostname"),
        # the webhook is checked first, as on the official server: a 422, not the 404
        ({"assistant_id": "nope", "webhook": "ftp://"}, 422, "Invalid webhook hostname"),
        ({"config": {"configurable": {"a": 1}}, "context": {"b": 2}}, 400, "Cannot specify both"),
    ],
)
async def test_create_rejects_bad_crons(
    server: Server, body: dict[str, Any], status: int, detail: str
) -> None:
    async with server.http() as h:
        r = await h.post("/runs/crons", json={"assistant_id": "agent", "schedule": YEARLY, **body})
        assert r.status_code == status, r.text
        assert detail in r.json()["detail"]
        count = await h.post("/runs/crons/count", json={})
    assert count.json() == 0


async def test_create_for_thread_rejects_bad_threads_and_strategies(server: Server) -> None:
    tid = await new_thread(server)
    unknown = str(uuid.uuid4())
    body = {"assistant_id": "agent", "schedule": YEARLY}
    async with server.http() as h:
        missing = await h.post(f"/threads/{unknown}/runs/crons", json=body)
        malformed = await h.post("/threads/abc/runs/crons", json=body)
        strategy = await h.post(
            f"/threads/{tid}/runs/crons", json={**body, "multitask_strategy": "bogus"}
        )
    assert missing.status_code == 404
    assert missing.json()["detail"].startswith(f"Thread with ID '{unknown}' not found.")
    assert (malformed.status_code, malformed.json()) == (
        422,
        {"detail": "Invalid thread ID: must be a UUID"},
    )
    assert strategy.status_code == 422
    assert "'bogus'" in strategy.json()["detail"]
    async with server.http() as h:  # the webhook first, before the thread
        bad_hook = await h.post(f"/threads/{unknown}/runs/crons", json={**body, "webhook": "x:"})
    assert bad_hook.status_code == 422
    assert await server.sync(lambda c: c.crons.count()) == 0


# -- search, count, get, patch, delete --------------------------------------------------------


async def test_search_and_count(server: Server) -> None:
    tid = await new_thread(server)
    a = await server.sync(lambda c: c.crons.create("agent", schedule=YEARLY, metadata={"t": "a"}))
    b = await server.sync(
        lambda c: c.crons.create("agent", schedule="0 0 * * *", enabled=False, metadata={"t": "b"})
    )
    c_ = await server.sync(lambda c: c.crons.create_for_thread(tid, "test_agent", schedule=YEARLY))
    ids = {"a": a["cron_id"], "b": b["cron_id"], "c": c_["cron_id"]}

    async def search(**kwargs: Any) -> list[str]:
        rows = await server.sync(lambda c: c.crons.search(**kwargs))
        names = {v: k for k, v in ids.items()}
        return [names[r["cron_id"]] for r in rows]

    assert await search() == ["c", "b", "a"]  # newest first
    assert await search(sort_by="created_at", sort_order="asc") == ["a", "b", "c"]
    assert (await search(sort_by="next_run_date", sort_order="asc"))[0] == "b"  # soonest
    assert await search(assistant_id="agent") == ["b", "a"]
    assert await search(assistant_id=AGENT_ID) == ["b", "a"]
    assert await search(thread_id=tid) == ["c"]
    assert await search(enabled=False) == ["b"]
    assert await search(metadata={"t": "a"}) == ["a"]
    assert await search(limit=1, offset=1) == ["b"]

    selected = await server.sync(lambda c: c.crons.search(select=["cron_id", "schedule"]))
    assert [set(r) for r in selected] == [{"cron_id", "schedule"}] * 3

    assert await server.sync(lambda c: c.crons.count()) == 3
    assert await server.sync(lambda c: c.crons.count(assistant_id="agent")) == 2
    assert await server.sync(lambda c: c.crons.count(thread_id=tid)) == 1
    assert await server.sync(lambda c: c.crons.count(metadata={"t": "b"})) == 1


async def test_search_pagination_headers_and_bad_queries(server: Server) -> None:
    for _ in range(3):
        await server.sync(lambda c: c.crons.create("agent", schedule=YEARLY))
    async with server.http() as h:
        first = await h.post("/runs/crons/search", json={"limit": 2})
        last = await h.post("/runs/crons/search", json={"limit": 2, "offset": 2})
        bad = [
            await h.post("/runs/crons/search", json=body)
            for body in (
                {"select": ["bogus"]},
                {"sort_by": "schedule"},
                {"sort_order": "up"},
                {"limit": 0},
                {"offset": -1},
                {"thread_id": "abc"},
                {"assistant_id": "nope"},
            )
        ]
    assert len(first.json()) == 2
    assert first.headers["X-Pagination-Next"] == "2"
    assert first.headers["X-Pagination-Total"] == "3"
    assert len(last.json()) == 1
    assert "X-Pagination-Next" not in last.headers
    assert last.headers["X-Pagination-Total"] == "3"
    assert [r.status_code for r in bad] == [422] * len(bad)
    assert "bogus" in bad[0].json()["detail"]


async def test_get_unknown_and_malformed(server: Server) -> None:
    assert await get(server, f"/runs/crons/{uuid.uuid4()}") == (404, {"detail": "Not Found"})
    assert await get(server, "/runs/crons/abc") == (
        422,
        {"detail": "Invalid cron ID: must be a UUID"},
    )


async def test_patch_merges_into_the_payload(server: Server) -> None:
    cron = await server.sync(
        lambda c: c.crons.create("agent", schedule=YEARLY, input={"topic": "old"})
    )
    cron_id = cron["cron_id"]
    end = now() + dt.timedelta(days=30)
    patched = await server.sync(
        lambda c: c.crons.update(
            cron_id,
            schedule="0 12 * * *",
            input={"topic": "new"},
            metadata={"m": 2},
            enabled=False,
            end_time=end,
            config={"tags": ["x"]},
        )
    )
    assert patched["schedule"] == "0 12 * * *"
    next_run = dt.datetime.fromisoformat(patched["next_run_date"])
    assert (next_run.hour, next_run.minute) == (12, 0)
    assert next_run - now() <= dt.timedelta(days=1)
    assert (patched["enabled"], patched["metadata"]) == (False, {"m": 2})
    assert dt.datetime.fromisoformat(patched["end_time"]) == end
    assert patched["updated_at"] > cron["updated_at"]
    payload = patched["payload"]
    assert payload["input"] == {"topic": "new"}
    assert (payload["schedule"], payload["enabled"], payload["metadata"]) == (
        "0 12 * * *",
        False,
        {"m": 2},
    )
    assert payload["config"] == {"tags": ["x"], "configurable": {"cron_id": cron_id}}
    assert await get_cron(server, cron_id) == patched

    cleared = await server.sync(lambda c: c.crons.update(cron_id, end_time=None))
    assert cleared["end_time"] is None
    assert cleared["schedule"] == "0 12 * * *"


async def test_patch_rejects_bad_changes_and_changes_nothing(server: Server) -> None:
    tid = await new_thread(server)
    cron = await server.sync(lambda c: c.crons.create_for_thread(tid, "agent", schedule=YEARLY))
    path = f"/runs/crons/{cron['cron_id']}"
    async with server.http() as h:
        no_body = await h.patch(path)
        empty_body = await h.patch(path, json={})
        schedule = await h.patch(path, json={"schedule": "bogus"})
        timezone = await h.patch(path, json={"timezone": "Nowhere/City"})
        payload = await h.patch(path, json={"stream_mode": ["nope"]})
        completion = await h.patch(path, json={"on_run_completed": "keep"})
        unknown = await h.patch(f"/runs/crons/{uuid.uuid4()}", json={"enabled": False})
    assert (no_body.status_code, no_body.json()) == (
        400,
        {"detail": "Request body cannot be empty"},
    )
    assert empty_body.status_code == 400
    assert schedule.status_code == 422
    assert schedule.json()["detail"].startswith("Invalid cron schedule: 'bogus'.")
    assert timezone.status_code == 422
    assert payload.status_code == 422
    assert completion.status_code == 422
    assert "$.on_run_completed" in completion.json()["detail"]
    assert unknown.status_code == 404
    assert await get_cron(server, cron["cron_id"]) == cron


async def test_delete(server: Server) -> None:
    cron = await server.sync(lambda c: c.crons.create("agent", schedule=YEARLY))
    await server.sync(lambda c: c.crons.delete(cron["cron_id"]))
    assert (await get(server, f"/runs/crons/{cron['cron_id']}"))[0] == 404
    async with server.http() as h:
        again = await h.delete(f"/runs/crons/{cron['cron_id']}")
    assert (again.status_code, again.json()) == (404, {"detail": "Not Found"})


async def test_deleting_a_thread_deletes_its_crons(server: Server) -> None:
    tid = await new_thread(server)
    cron = await server.sync(lambda c: c.crons.create_for_thread(tid, "agent", schedule=YEARLY))
    await server.sync(lambda c: c.threads.delete(tid))
    assert (await get(server, f"/runs/crons/{cron['cron_id']}"))[0] == 404


# -- firing -----------------------------------------------------------------------------------


async def test_thread_less_cron_with_keep_leaves_a_thread_per_firing(
    server: Server, finished: Finished
) -> None:
    cron = await server.sync(
        lambda c: c.crons.create(
            "agent",
            schedule=YEARLY,
            input={"topic": "cron"},
            metadata={"origin": "cron"},
            on_run_completed="keep",
        )
    )
    cron_id = cron["cron_id"]
    await make_due(server, cron_id)
    run = await fired_run(finished, cron_id)
    assert run.status == "success"
    assert run.metadata["origin"] == "cron"  # cron metadata merged into the run's

    status, thread = await get(server, f"/threads/{run.thread_id}")
    assert status == 200
    assert thread["values"] == joke("cron")
    assert thread["metadata"]["origin"] == "cron"
    assert thread["metadata"]["graph_id"] == "agent"
    status, stored = await get(server, f"/threads/{run.thread_id}/runs/{run.run_id}")
    assert (status, stored["status"]) == (200, "success")
    assert stored["kwargs"]["config"]["configurable"]["cron_id"] == cron_id

    after = await advanced(server, cron_id)
    next_run = dt.datetime.fromisoformat(after["next_run_date"])
    assert next_run == croniter(YEARLY, now()).get_next(dt.datetime)

    await make_due(server, cron_id)  # each firing gets a new thread
    runs = await fired_runs(finished, cron_id, 2)
    assert len({r.thread_id for r in runs}) == 2


async def test_thread_less_cron_with_delete_removes_its_thread(
    server: Server, finished: Finished
) -> None:
    cron = await server.sync(
        lambda c: c.crons.create("agent", schedule=YEARLY, input={"topic": "gone"})
    )
    await make_due(server, cron["cron_id"])
    run = await fired_run(finished, cron["cron_id"])
    assert run.status == "success"
    await poll(lambda: get(server, f"/threads/{run.thread_id}"), lambda v: v[0] == 404)
    await advanced(server, cron["cron_id"])


async def test_thread_cron_runs_on_its_thread(server: Server) -> None:
    tid = await new_thread(server)
    cron = await server.sync(
        lambda c: c.crons.create_for_thread(tid, "agent", schedule=YEARLY, input={"topic": "t"})
    )
    await make_due(server, cron["cron_id"])
    runs = await poll(
        lambda: server.sync(lambda c: c.runs.list(tid)),
        lambda rs: len(rs) == 1 and rs[0]["status"] == "success",
    )
    assert runs[0]["kwargs"]["config"]["configurable"]["cron_id"] == cron["cron_id"]
    thread = await server.sync(lambda c: c.threads.get(tid))
    assert thread["values"] == joke("t")
    await advanced(server, cron["cron_id"])


async def test_cron_with_context_reaches_the_graph(server: Server, finished: Finished) -> None:
    """A context and the injected ``config.configurable.cron_id`` do not collide (§1.7)."""
    cron = await server.sync(
        lambda c: c.crons.create(
            "ctxgraph",
            schedule=YEARLY,
            input={"question": "hi"},
            context={"user": "carol"},
            on_run_completed="keep",
        )
    )
    await make_due(server, cron["cron_id"])
    run = await fired_run(finished, cron["cron_id"])
    assert run.status == "success"
    assert run.kwargs["context"]["cron_id"] == cron["cron_id"]
    thread = await server.sync(lambda c: c.threads.get(run.thread_id))
    assert thread["values"]["answer"] == "carol asked hi"


async def test_cron_past_its_end_time_is_disabled_not_fired(
    server: Server, finished: Finished
) -> None:
    ended = now() - dt.timedelta(minutes=1)
    cron = await server.sync(
        lambda c: c.crons.create("agent", schedule=YEARLY, input={"topic": "x"}, end_time=ended)
    )
    await make_due(server, cron["cron_id"])
    await poll(lambda: get_cron(server, cron["cron_id"]), lambda c: c["enabled"] is False)
    assert finished.of(cron["cron_id"]) == []
    assert await server.sync(lambda c: c.threads.search()) == []


async def test_a_firing_that_fails_still_advances(server: Server) -> None:
    tid = await new_thread(server)
    busy = await server.sync(lambda c: c.runs.create(tid, "slow", input={"delay": 1.0}))
    cron = await server.sync(
        lambda c: c.crons.create_for_thread(
            tid, "slow", schedule=YEARLY, input={"delay": 0}, multitask_strategy="reject"
        )
    )
    await make_due(server, cron["cron_id"])
    await advanced(server, cron["cron_id"])  # the thread was busy: 409, logged
    runs = await server.sync(lambda c: c.runs.list(tid))
    assert [r["run_id"] for r in runs] == [busy["run_id"]]
    await server.sync(lambda c: c.runs.cancel(tid, busy["run_id"]))


async def test_nothing_fires_while_the_server_stops_accepting_runs(
    server: Server, finished: Finished
) -> None:
    cron = await server.sync(
        lambda c: c.crons.create("agent", schedule=YEARLY, input={"topic": "later"})
    )
    server.core.supervisor.accepting = False
    await make_due(server, cron["cron_id"])
    due = (await get_cron(server, cron["cron_id"]))["next_run_date"]
    await server.core.crons.fire_due()
    assert (await get_cron(server, cron["cron_id"]))["next_run_date"] == due
    assert finished.of(cron["cron_id"]) == []

    server.core.supervisor.accepting = True
    assert (await fired_run(finished, cron["cron_id"])).status == "success"
