"""Bad input on the runs endpoints: the contract's status, a ``detail`` naming the problem,
and nothing changed (contract §1.1, §1.3, §5.2, §5.7-5.9, §11). Then the same failures as
the SDK's typed exceptions."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest
from langgraph_sdk.errors import (
    BadRequestError,
    ConflictError,
    NotFoundError,
    UnprocessableEntityError,
)

from tests.sdk import Server, collect

GRAPHS = ("agent", "test_agent", "chat", "subgraph", "custom", "interrupter", "erroring", "slow")
STREAM_MODES = (
    "values",
    "messages",
    "messages-tuple",
    "tasks",
    "checkpoints",
    "updates",
    "events",
    "debug",
    "custom",
)
STATEFUL = ("/threads/{tid}/runs", "/threads/{tid}/runs/stream", "/threads/{tid}/runs/wait")
STATELESS = ("/runs", "/runs/stream", "/runs/wait")


# -- helpers ----------------------------------------------------------------------------------


async def snapshot(server: Server, tid: str) -> Any:
    """Everything a rejected request must leave alone: every run, the number of threads,
    the thread's record, the supervisor's runs."""
    storage = server.core.storage
    runs = sorted((r.run_id, r.status) for r in await storage.runs.search())
    thread = await storage.threads.get(tid)
    record = None if thread is None else (thread.status, thread.updated_at, thread.metadata)
    _, threads = await storage.threads.search(limit=0)
    return runs, threads, record, sorted(server.core.supervisor.handles)


async def idle_thread_with_a_run(h: httpx.AsyncClient) -> str:
    tid = (await h.post("/threads", json={})).json()["thread_id"]
    body = {"assistant_id": "agent", "input": {"topic": "t"}}
    r = await h.post(f"/threads/{tid}/runs/wait", json=body)
    assert r.status_code == 200
    return tid  # type: ignore[no-any-return]


async def rejected(
    server: Server,
    paths: tuple[str, ...],
    body: Any,
    status: int,
    *,
    raw: bytes | None = None,
) -> list[str]:
    """POST ``body`` (or ``raw`` bytes) to each path; every answer is ``status`` with a JSON
    ``detail`` and nothing changed. Returns the details."""
    details = []
    async with server.http() as h:
        tid = await idle_thread_with_a_run(h)
        before = await snapshot(server, tid)
        for template in paths:
            path = template.format(tid=tid)
            if raw is not None:
                r = await h.post(path, content=raw, headers={"content-type": "application/json"})
            else:
                r = await h.post(path, json=body)
            assert r.status_code == status, (path, r.text)
            assert r.headers["content-type"] == "application/json", path
            detail = r.json()["detail"]
            assert isinstance(detail, str), path
            assert detail, path
            details.append(detail)
            assert await snapshot(server, tid) == before, path
        state = (await h.get(f"/threads/{tid}")).json()
        assert state["status"] == "idle"
    return details


# -- run creation -----------------------------------------------------------------------------


async def test_unknown_assistant_uuid(server: Server) -> None:
    body = {"assistant_id": str(uuid.uuid4()), "input": {}}
    details = await rejected(server, STATEFUL + STATELESS, body, 404)
    assert set(details) == {"Thread or assistant not found."}


async def test_assistant_neither_uuid_nor_graph(server: Server) -> None:
    details = await rejected(server, STATEFUL + STATELESS, {"assistant_id": "nope"}, 422)
    for detail in details:
        assert detail.startswith("Invalid assistant: 'nope'. Must be either:")
        assert "A valid assistant UUID" in detail
        assert all(graph in detail for graph in GRAPHS)


async def test_unknown_thread_is_not_created(server: Server) -> None:
    missing = str(uuid.uuid4())
    paths = tuple(p.replace("{tid}", missing) for p in STATEFUL)
    details = await rejected(server, paths, {"assistant_id": "agent", "input": {}}, 404)
    assert set(details) == {"Thread or assistant not found."}
    async with server.http() as h:
        assert (await h.get(f"/threads/{missing}")).status_code == 404


@pytest.mark.parametrize("raw", [b"", b"   ", b"{", b'{"assistant_id": "agent",}', b"nan"])
async def test_malformed_or_empty_json(server: Server, raw: bytes) -> None:
    details = await rejected(server, STATEFUL + STATELESS + ("/runs/batch",), None, 422, raw=raw)
    assert set(details) == {"Invalid JSON in request body"}


@pytest.mark.parametrize("raw", [b"[1]", b'"agent"', b"3", b"null", b"true"])
async def test_body_not_an_object(server: Server, raw: bytes) -> None:
    details = await rejected(server, STATEFUL + STATELESS, None, 422, raw=raw)
    assert all("object" in d for d in details)


async def test_missing_assistant_id(server: Server) -> None:
    details = await rejected(server, STATEFUL + STATELESS, {"input": {"topic": "x"}}, 422)
    assert all("assistant_id" in d for d in details)


@pytest.mark.parametrize("mode", ["bogus", ["values", "tools"], ["lifecycle"], [1], 7])
async def test_bad_stream_mode(server: Server, mode: Any) -> None:
    body = {"assistant_id": "agent", "stream_mode": mode}
    for detail in await rejected(server, STATEFUL + STATELESS, body, 422):
        assert "stream_mode" in detail or "stream mode" in detail
        if isinstance(mode, str) or (
            isinstance(mode, list) and all(isinstance(m, str) for m in mode)
        ):
            bad = mode if isinstance(mode, str) else mode[-1]
            assert bad in detail
            assert all(m in detail for m in STREAM_MODES), detail


@pytest.mark.parametrize(
    ("field", "value", "allowed", "paths"),
    [
        ("durability", "x", ("sync", "async", "exit"), STATEFUL + STATELESS),
        ("on_disconnect", "x", ("cancel", "continue"), STATEFUL + STATELESS),
        ("multitask_strategy", "x", ("reject", "interrupt", "rollback", "enqueue"), STATEFUL),
        ("if_not_exists", "x", ("create", "reject"), STATEFUL),
        ("on_completion", "x", ("delete", "keep"), STATELESS),
    ],
)
async def test_enum_fields_name_allowed_values(
    server: Server, field: str, value: str, allowed: tuple[str, ...], paths: tuple[str, ...]
) -> None:
    body = {"assistant_id": "agent", "input": {}, field: value}
    for detail in await rejected(server, paths, body, 422):
        assert field in detail or field.replace("_", " ") in detail
        assert all(a in detail for a in allowed), detail


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("stream_subgraphs", "yes"),
        ("stream_resumable", 1),
        ("after_seconds", "x"),
        ("metadata", "x"),
        ("config", [1]),
        ("context", "x"),
        ("command", "x"),
        ("command", [1]),
        ("command", {"goto": 5}),
        ("interrupt_before", 5),
        ("webhook", 5),
        ("feedback_keys", "k"),
    ],
)
async def test_wrong_types(server: Server, field: str, value: Any) -> None:
    body = {"assistant_id": "agent", "input": {}, field: value}
    for detail in await rejected(server, STATEFUL + STATELESS, body, 422):
        assert field in detail


@pytest.mark.parametrize(("field", "value"), [("checkpoint", "x"), ("checkpoint", [1])])
async def test_wrong_types_stateful(server: Server, field: str, value: Any) -> None:
    body = {"assistant_id": "agent", "input": {}, field: value}
    for detail in await rejected(server, STATEFUL, body, 422):
        assert field in detail


async def test_configurable_and_context_together(server: Server) -> None:
    body = {
        "assistant_id": "factory",
        "input": {},
        "config": {"configurable": {"who": "a"}},
        "context": {"who": "b"},
    }
    details = await rejected(server, STATEFUL + STATELESS, body, 400)
    assert all(d.startswith("Cannot specify both configurable and context.") for d in details)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("configurable", "x"),
        ("tags", "t"),
        ("tags", [1]),
        ("recursion_limit", "5"),
        ("metadata", []),
    ],
)
async def test_config_keys_are_typed(server: Server, key: str, value: Any) -> None:
    body = {"assistant_id": "agent", "input": {}, "config": {key: value}}
    details = await rejected(server, STATEFUL + STATELESS, body, 422)
    assert all(f"$.config.{key}" in d for d in details), details


async def test_configurable_or_context_alone_is_fine(server: Server) -> None:
    async with server.http() as h:
        for extra in (
            {"config": {"configurable": {"who": "a"}}, "context": {}},
            {"config": {"configurable": {}}, "context": {"who": "b"}},
        ):
            r = await h.post("/runs/wait", json={"assistant_id": "factory", "input": {}, **extra})
            assert r.status_code == 200


async def test_resume_on_stateless_run(server: Server) -> None:
    body = {"assistant_id": "interrupter", "command": {"resume": "Bob"}}
    details = await rejected(server, STATELESS, body, 400)
    assert set(details) == {"You must provide a thread_id when resuming."}


@pytest.mark.parametrize(
    "checkpoint", [{"checkpoint_id": "nope"}, {"checkpoint": {"checkpoint_id": "x"}}]
)
async def test_bad_checkpoint_id(server: Server, checkpoint: dict[str, Any]) -> None:
    body = {"assistant_id": "agent", "input": None, **checkpoint}
    details = await rejected(server, STATEFUL, body, 422)
    assert set(details) == {"Invalid checkpoint ID"}


@pytest.mark.parametrize("webhook", ["not a url", "ftp://example.com/hook", "http://"])
async def test_bad_webhook(server: Server, webhook: str) -> None:
    body = {"assistant_id": "agent", "input": {}, "webhook": webhook}
    details = await rejected(server, STATEFUL + STATELESS, body, 422)
    assert all("webhook" in d.lower() for d in details)


async def test_bad_thread_uuid_in_run_create_path(server: Server) -> None:
    paths = tuple(p.replace("{tid}", "not-a-uuid") for p in STATEFUL)
    details = await rejected(server, paths, {"assistant_id": "agent", "input": {}}, 422)
    assert all(d.startswith("Invalid thread ID") for d in details)


async def test_negative_after_seconds(server: Server) -> None:
    body = {"assistant_id": "agent", "input": {}, "after_seconds": -1}
    for detail in await rejected(server, STATEFUL + STATELESS, body, 422):
        assert "after_seconds" in detail


# -- batch ------------------------------------------------------------------------------------


@pytest.mark.parametrize("body", [[], {}, {"assistant_id": "agent"}, [1]])
async def test_batch_needs_a_non_empty_array_of_objects(server: Server, body: Any) -> None:
    await rejected(server, ("/runs/batch",), body, 422)


@pytest.mark.parametrize(
    ("bad", "status"),
    [
        ({"assistant_id": "nope"}, 422),
        ({"assistant_id": str(uuid.uuid4())}, 404),
        ({"assistant_id": "agent", "stream_mode": "bogus"}, 422),
        ({"assistant_id": "agent", "durability": "x"}, 422),
        ({"assistant_id": "interrupter", "command": {"resume": 1}}, 400),
        ({"assistant_id": "agent", "webhook": "not a url"}, 422),
    ],
)
async def test_batch_with_one_bad_item_creates_nothing(
    server: Server, bad: dict[str, Any], status: int
) -> None:
    good = {"assistant_id": "agent", "input": {"topic": "b"}, "on_completion": "keep"}
    await rejected(server, ("/runs/batch",), [good, bad], status)


# -- list / get / delete / cancel / join ------------------------------------------------------


async def test_bad_uuids_in_run_paths(server: Server) -> None:
    async with server.http() as h:
        tid = await idle_thread_with_a_run(h)
        rid = (await h.get(f"/threads/{tid}/runs")).json()[0]["run_id"]
        before = await snapshot(server, tid)
        for method, suffix in [
            ("GET", ""),
            ("DELETE", ""),
            ("POST", "/cancel"),
            ("GET", "/join"),
            ("GET", "/stream"),
        ]:
            r = await h.request(method, f"/threads/not-a-uuid/runs/{rid}{suffix}")
            assert r.status_code == 422, (method, suffix)
            assert r.json() == {"detail": "Invalid thread ID: must be a UUID"}
            r = await h.request(method, f"/threads/{tid}/runs/not-a-uuid{suffix}")
            assert r.status_code == 422, (method, suffix)
            assert r.json() == {"detail": "Invalid run ID: must be a UUID"}
        r = await h.get("/threads/not-a-uuid/runs")
        assert r.status_code == 422
        assert r.json() == {"detail": "Invalid thread ID: must be a UUID"}
        assert await snapshot(server, tid) == before


async def test_unknown_thread_or_run(server: Server) -> None:
    async with server.http() as h:
        tid = await idle_thread_with_a_run(h)
        missing = str(uuid.uuid4())
        r = await h.get(f"/threads/{missing}/runs")
        assert r.status_code == 404
        assert r.json() == {"detail": f"Thread with ID {missing} not found"}
        r = await h.get(f"/threads/{tid}/runs/{missing}")
        assert r.status_code == 404
        assert r.json() == {"detail": "Not Found"}
        r = await h.delete(f"/threads/{tid}/runs/{missing}")
        assert r.status_code == 404
        assert r.json() == {"detail": "Run not found"}
        r = await h.post(f"/threads/{tid}/runs/{missing}/cancel")
        assert r.status_code == 404
        assert r.json() == {"detail": "No runs found to cancel."}


@pytest.mark.parametrize(
    ("query", "needle"),
    [
        ({"status": "bogus"}, "bogus"),
        ({"select": "bogus"}, "query parameter 'select': ['bogus'] not allowed"),
        ({"select": ["run_id", "nope"]}, "nope"),
        ({"limit": "x"}, "limit"),
        ({"offset": "x"}, "offset"),
        ({"limit": "-1"}, "limit"),
    ],
)
async def test_bad_list_query(server: Server, query: dict[str, Any], needle: str) -> None:
    async with server.http() as h:
        tid = await idle_thread_with_a_run(h)
        r = await h.get(f"/threads/{tid}/runs", params=query)
    assert r.status_code == 422
    assert needle in r.json()["detail"]


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"status": "all", "thread_id": "{tid}", "run_ids": ["{rid}"]},
        {"status": "bogus"},
        {"thread_id": "{tid}"},
        {"run_ids": ["{rid}"]},
        {"thread_id": "not-a-uuid", "run_ids": ["{rid}"]},
        {"thread_id": "{tid}", "run_ids": ["not-a-uuid"]},
    ],
)
async def test_bad_bulk_cancel(server: Server, body: dict[str, Any]) -> None:
    async with server.http() as h:
        tid = await idle_thread_with_a_run(h)
        run = (
            await h.post(
                f"/threads/{tid}/runs",
                json={"assistant_id": "agent", "input": {}, "after_seconds": 30},
            )
        ).json()
        filled = {
            k: (
                [x.format(rid=run["run_id"]) for x in v]
                if isinstance(v, list)
                else v.format(tid=tid)
            )
            for k, v in body.items()
        }
        r = await h.post("/runs/cancel", json=filled)
        assert r.status_code == 422, r.text
        assert r.json()["detail"]
        # the pending run was not touched
        assert (await h.get(f"/threads/{tid}/runs/{run['run_id']}")).json()["status"] == "pending"
        await h.post(f"/threads/{tid}/runs/{run['run_id']}/cancel")


async def test_bulk_cancel_matching_nothing(server: Server) -> None:
    async with server.http() as h:
        tid = await idle_thread_with_a_run(h)
        r = await h.post("/runs/cancel", json={"status": "running"})
        assert r.status_code == 404
        assert r.json() == {"detail": "No runs found to cancel."}
        r = await h.post("/runs/cancel", json={"thread_id": tid, "run_ids": [str(uuid.uuid4())]})
        assert r.status_code == 404


# -- routing ----------------------------------------------------------------------------------


async def test_unknown_path_and_wrong_method(server: Server) -> None:
    async with server.http() as h:
        tid = await idle_thread_with_a_run(h)
        for path in ("/nope", f"/threads/{tid}/runs/x/y/z", "/runs/batch/more"):
            r = await h.get(path)
            assert r.status_code == 404, path
            assert r.json() == {"detail": "Not Found"}
        for method, path, allowed in [
            ("PUT", f"/threads/{tid}/runs", {"GET", "POST"}),
            ("DELETE", "/runs/batch", {"POST"}),
            ("PATCH", f"/threads/{tid}/runs/{uuid.uuid4()}", {"GET", "DELETE"}),
            ("GET", "/runs/batch", {"POST"}),
            ("GET", "/runs/wait", {"POST"}),
            ("GET", "/runs/stream", {"POST"}),
        ]:
            r = await h.request(method, path)
            assert r.status_code == 405, (method, path)
            assert r.json() == {"detail": "Method Not Allowed"}
            allow = {m.strip() for m in r.headers["allow"].split(",")}
            assert allowed <= allow, (method, path, allow)


# -- through the SDK: typed exceptions --------------------------------------------------------


async def test_sdk_async_client_raises_typed_errors(server: Server) -> None:
    async def scenario(c: Any) -> dict[str, BaseException]:
        tid = (await c.threads.create())["thread_id"]
        busy = await c.runs.create(tid, "slow", input={"delay": 1.0})
        errors: dict[str, BaseException] = {}
        calls = {
            "invalid assistant": lambda: c.runs.create(tid, "nope"),
            "unknown thread": lambda: c.runs.create(str(uuid.uuid4()), "agent", input={}),
            "reject": lambda: c.runs.create(tid, "agent", input={}, multitask_strategy="reject"),
            "both": lambda: c.runs.create(
                None, "factory", config={"configurable": {"a": 1}}, context={"b": 2}
            ),
            "bad run id": lambda: c.runs.get(tid, "not-a-uuid"),
            "stream": lambda: collect(c.runs.stream(None, "agent", stream_mode="bogus")),
            "join stream": lambda: collect(c.runs.join_stream(tid, "not-a-uuid")),
            "cancel": lambda: c.runs.cancel(tid, str(uuid.uuid4())),
        }
        for name, call in calls.items():
            try:
                await call()
            except Exception as exc:
                errors[name] = exc
        await c.runs.cancel(tid, busy["run_id"])
        return errors

    errors = await server.aio(scenario)
    expected = {
        "invalid assistant": UnprocessableEntityError,
        "unknown thread": NotFoundError,
        "reject": ConflictError,
        "both": BadRequestError,
        "bad run id": UnprocessableEntityError,
        "stream": UnprocessableEntityError,
        "join stream": UnprocessableEntityError,
        "cancel": NotFoundError,
    }
    assert {k: type(v) for k, v in errors.items()} == expected
    assert errors["unknown thread"].message == "Thread or assistant not found."  # type: ignore[attr-defined]
    assert errors["bad run id"].message == "Invalid run ID: must be a UUID"  # type: ignore[attr-defined]


async def test_sdk_sync_client_raises_http_status_errors(server: Server) -> None:
    def scenario(c: Any) -> dict[str, BaseException]:
        errors: dict[str, BaseException] = {}
        calls = {
            "invalid assistant": lambda: c.runs.create(None, "nope"),
            "unknown thread": lambda: c.runs.create(str(uuid.uuid4()), "agent", input={}),
            "resume stateless": lambda: c.runs.create(None, "interrupter", command={"resume": "x"}),
            "stream": lambda: list(c.runs.stream(None, "agent", durability="x")),
            "wait": lambda: c.runs.wait(None, "nope"),
        }
        for name, call in calls.items():
            try:
                call()
            except Exception as exc:
                errors[name] = exc
        return errors

    errors = await server.sync(scenario)
    assert set(errors) == {
        "invalid assistant",
        "unknown thread",
        "resume stateless",
        "stream",
        "wait",
    }
    assert all(isinstance(e, httpx.HTTPStatusError) for e in errors.values())
    assert isinstance(errors["invalid assistant"], UnprocessableEntityError)
    assert isinstance(errors["unknown thread"], NotFoundError)
    assert isinstance(errors["resume stateless"], BadRequestError)
    assert isinstance(errors["stream"], UnprocessableEntityError)
    # ``wait`` goes through the SDK's reconnecting request: a plain HTTPStatusError
    status = {k: e.response.status_code for k, e in errors.items()}  # type: ignore[attr-defined]
    assert status == {
        "invalid assistant": 422,
        "unknown thread": 404,
        "resume stateless": 400,
        "stream": 422,
        "wait": 422,
    }
