"""Bad input that used to be stored, or to answer 500: too deep, too large, out of range,
or contradicting the thread. Each is a 4xx naming the field and what is allowed, and nothing
is written (issue 15, items 4, 5, 7 and 8). Runs on the test backend: what is stored is the
point."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import trio

from tests.conftest import example_settings, start_server
from tests.sdk import Server
from triograph.core.infra.errors import ConfigError
from triograph.core.infra.limits import Limits, load_limits

TEST_INPUT = {"foo": None, "bar": "checked", "baz": None}


@pytest.fixture
async def limited(nursery: trio.Nursery) -> AsyncIterator[Server]:
    limits = Limits(max_json_depth=20, max_metadata_bytes=1024, max_value_bytes=4096)
    async for s in start_server(nursery, example_settings(limits=limits)):
        yield s


def nested(depth: int) -> dict[str, Any]:
    """An object ``depth`` levels deep: ``{"a": {"a": ... {"a": 1}}}``."""
    value: Any = 1
    for _ in range(depth):
        value = {"a": value}
    return value  # type: ignore[no-any-return]


async def test_deep_metadata_is_refused_before_anything_is_stored(server: Server) -> None:
    """The issue's repro: 300 levels of thread metadata (the default limit is 100)."""
    async with server.http() as http:
        response = await http.post("/threads", json={"metadata": nested(300)})
        assert response.status_code == 422
        detail = response.json()["detail"]
        assert detail.startswith("$.metadata.a.a")
        assert "nested more than 100 levels deep (limits.max_json_depth)" in detail
        assert (await http.post("/threads/count", json={})).json() == 0
        assert (await http.post("/threads/search", json={})).status_code == 200


async def test_a_deep_run_input_is_refused_and_the_thread_keeps_serving(server: Server) -> None:
    async with server.http() as http:
        thread = (await http.post("/threads", json={})).json()["thread_id"]
        body = {"assistant_id": "agent", "input": {"topic": nested(300)}}
        response = await http.post(f"/threads/{thread}/runs", json=body)
        assert response.status_code == 422
        assert "$.input.topic.a" in response.json()["detail"]
        runs = await http.get(f"/threads/{thread}/runs")
        assert runs.status_code == 200
        assert runs.json() == []


async def test_json_as_deep_as_the_limit_is_stored_and_served(limited: Server) -> None:
    """20 levels, counting the body itself: stored, returned, searched, on every backend."""
    async with limited.http() as http:
        metadata = nested(19)  # the body's own level + 19 = 20
        created = await http.post("/threads", json={"metadata": metadata})
        assert created.status_code == 200
        assert created.json()["metadata"] == metadata
        found = await http.post("/threads/search", json={})
        assert [t["metadata"] for t in found.json()] == [metadata]
        deeper = await http.post("/threads", json={"metadata": nested(20)})
        assert deeper.status_code == 422
        item = {"namespace": ["deep"], "key": "k", "value": nested(20)}
        assert (await http.put("/store/items", json=item)).status_code == 422
        item["value"] = nested(19)
        assert (await http.put("/store/items", json=item)).status_code == 204


async def test_metadata_over_its_limit_is_a_422_naming_it(limited: Server) -> None:
    async with limited.http() as http:
        big = {"note": "x" * 2000}
        for method, path, body in [
            ("POST", "/threads", {"metadata": big}),
            ("POST", "/assistants", {"graph_id": "agent", "metadata": big}),
            ("POST", "/runs/wait", {"assistant_id": "agent", "metadata": big}),
        ]:
            response = await http.request(method, path, json=body)
            assert response.status_code == 422, path
            assert response.json()["detail"] == (
                "$.metadata: 2011 bytes of JSON, more than the 1024 allowed "
                "(limits.max_metadata_bytes)"
            )
        batch = [{"assistant_id": "agent", "input": TEST_INPUT}] * 2
        batch[1] = {**batch[1], "metadata": big}
        response = await http.post("/runs/batch", json=batch)
        assert response.status_code == 422
        assert response.json()["detail"].startswith("$[1].metadata: 2011 bytes")
        assert (await http.post("/threads/count", json={})).json() == 0
        assistants = await http.post("/assistants/search", json={"metadata": {"note": "x"}})
        assert assistants.json() == []


async def test_a_single_value_over_its_limit_is_a_422_naming_it(limited: Server) -> None:
    async with limited.http() as http:
        item = {"namespace": ["big"], "key": "k", "value": {"text": "y" * 5000}}
        response = await http.put("/store/items", json=item)
        assert response.status_code == 422
        assert response.json()["detail"] == (
            "$.value: 5011 bytes of JSON, more than the 4096 allowed (limits.max_value_bytes)"
        )
        found = await http.post("/store/items/search", json={"namespace_prefix": ["big"]})
        assert found.json() == {"items": []}


@pytest.mark.parametrize(
    ("path", "body", "detail"),
    [
        (
            "/store/items",
            {"namespace": ["n"], "key": "k", "value": {}, "ttl": 1e12},
            "$.ttl: 1000000000000.0 is not between 0 and 52560000",
        ),
        (
            "/threads",
            {"ttl": {"strategy": "delete", "ttl": 1e12}},
            "$.ttl.ttl: 1000000000000.0 is not between 0 and 52560000",
        ),
        (
            "/runs",
            {"assistant_id": "agent", "after_seconds": 1e18},
            "$.after_seconds: 1e+18 is not between 0 and 604800",
        ),
        (
            "/runs",
            {"assistant_id": "agent", "after_seconds": 1e10},
            "$.after_seconds: 10000000000.0 is not between 0 and 604800",
        ),
        (
            "/runs",
            {"assistant_id": "agent", "after_seconds": -1},
            "$.after_seconds: -1.0 is not between 0 and 604800",
        ),
        (
            "/threads/search",
            {"offset": 10**18},
            "$.offset: 1000000000000000000 is not between 0 and 2147483647",
        ),
        ("/store/namespaces", {"max_depth": 0}, "$.max_depth: 0 is not between 1 and 1000"),
    ],
)
async def test_numbers_out_of_range_are_a_422_naming_the_field_and_range(
    server: Server, path: str, body: dict[str, Any], detail: str
) -> None:
    async with server.http() as http:
        method = "PUT" if path == "/store/items" else "POST"
        response = await http.request(method, path, json=body)
        assert response.status_code == 422
        assert response.json()["detail"] == detail
        assert (await http.post("/threads/count", json={})).json() == 0
        items = await http.post("/store/items/search", json={"namespace_prefix": ["n"]})
        assert items.json() == {"items": []}


@pytest.mark.parametrize("limit", [-1, 0, True, 1.5, 2**31])
async def test_a_bad_recursion_limit_is_a_422_before_the_run_exists(
    server: Server, limit: object
) -> None:
    async with server.http() as http:
        thread = (await http.post("/threads", json={})).json()["thread_id"]
        body = {"assistant_id": "agent", "input": {"topic": "x"}}
        response = await http.post(
            f"/threads/{thread}/runs/wait", json={**body, "config": {"recursion_limit": limit}}
        )
        assert response.status_code == 422
        assert response.json()["detail"] == (
            "$.config.recursion_limit: expected an integer from 1 to 2147483647"
        )
        assert (await http.get(f"/threads/{thread}/runs")).json() == []
        assistant = await http.post(
            "/assistants", json={"graph_id": "agent", "config": {"recursion_limit": limit}}
        )
        assert assistant.status_code == 422


async def test_resuming_a_thread_that_is_not_interrupted_is_a_409_before_the_run_exists(
    server: Server,
) -> None:
    async with server.http() as http:
        fresh = (await http.post("/threads", json={})).json()["thread_id"]
        done = (await http.post("/threads", json={})).json()["thread_id"]
        ran = await http.post(
            f"/threads/{done}/runs/wait", json={"assistant_id": "agent", "input": {"topic": "x"}}
        )
        assert ran.status_code == 200
        for thread, status in ((fresh, "idle"), (done, "idle")):
            response = await http.post(
                f"/threads/{thread}/runs/wait",
                json={"assistant_id": "agent", "command": {"resume": "x"}},
            )
            assert response.status_code == 409
            assert response.json()["detail"] == (
                f"$.command.resume: thread {thread} is not interrupted (its status is "
                f"'{status}'), so there is nothing to resume"
            )
        assert (await http.get(f"/threads/{fresh}/runs")).json() == []
        assert len((await http.get(f"/threads/{done}/runs")).json()) == 1
        created = await http.post(
            f"/threads/{fresh[:-4]}beef/runs",
            json={"assistant_id": "agent", "command": {"resume": "x"}, "if_not_exists": "create"},
        )
        assert created.status_code == 409
        assert (await http.post("/threads/count", json={})).json() == 2


async def test_resuming_an_interrupted_thread_still_works(server: Server) -> None:
    async with server.http() as http:
        thread = (await http.post("/threads", json={})).json()["thread_id"]
        first = await http.post(
            f"/threads/{thread}/runs/wait",
            json={"assistant_id": "interrupter", "input": {"question": "name?"}},
        )
        assert first.status_code == 200
        state = (await http.get(f"/threads/{thread}")).json()
        assert state["status"] == "interrupted"
        resumed = await http.post(
            f"/threads/{thread}/runs/wait",
            json={"assistant_id": "interrupter", "command": {"resume": "Bob"}},
        )
        assert resumed.status_code == 200
        assert "__error__" not in resumed.json()


def test_limits_are_read_from_langgraph_json_and_checked() -> None:
    assert load_limits({"max_body_bytes": 1000, "keep_alive_timeout": 0.5}) == Limits(
        max_body_bytes=1000, keep_alive_timeout=0.5
    )
    for section, message in [
        ({"max_body": 1}, "'triograph.limits': unknown keys ['max_body']; allowed: "),
        ({"max_body_bytes": 0}, "'triograph.limits.max_body_bytes' must be an integer, 1 or"),
        ({"max_json_depth": 500}, "'triograph.limits.max_json_depth' must be at most 200"),
        ({"body_timeout": "5"}, "'triograph.limits.body_timeout' must be a number of seconds"),
        ([], "'triograph.limits' must be an object"),
    ]:
        with pytest.raises(ConfigError) as caught:
            load_limits(section)
        assert caught.value.message.startswith(message)


@pytest.mark.parametrize(
    ("method", "path", "body", "field"),
    [
        ("POST", "/threads", {"metadata": {"a": "x\u0000y"}}, "$.metadata.a"),
        (
            "POST",
            "/runs/wait",
            {"assistant_id": "agent", "input": {"topic": "\u0000"}},
            "$.input.topic",
        ),
        (
            "POST",
            "/runs/wait",
            {"assistant_id": "agent", "metadata": {"k": ["\u0000"]}},
            "$.metadata.k[0]",
        ),
        ("POST", "/assistants", {"graph_id": "agent", "name": "a\u0000b"}, "$.name"),
        (
            "PUT",
            "/store/items",
            {"namespace": ["n"], "key": "k", "value": {"x\u0000": 1}},
            "$.value",
        ),
    ],
)
async def test_a_nul_character_is_a_422_on_every_backend(
    server: Server, method: str, path: str, body: dict[str, Any], field: str
) -> None:
    """Postgres cannot store one (it answered 500 there, while memory and file kept it):
    every backend refuses it alike, before anything is written (issue 15, item 6)."""
    async with server.http() as http:
        response = await http.request(method, path, json=body)
        assert response.status_code == 422
        assert response.json()["detail"].startswith(f"{field}: ")
        assert "NUL character" in response.json()["detail"]
        assert (await http.post("/threads/count", json={})).json() == 0
        assistants = await http.post("/assistants/search", json={"limit": 100})
        assert all(a["metadata"].get("created_by") == "system" for a in assistants.json())
        items = await http.post("/store/items/search", json={"namespace_prefix": ["n"]})
        assert items.json() == {"items": []}
        escaped = await http.post("/threads", json={"metadata": {"a": "x\\u0000y"}})
        assert escaped.json()["metadata"] == {"a": "x\\u0000y"}  # a backslash and "u0000"


async def test_a_huge_number_stays_readable_on_every_backend(server: Server) -> None:
    """Found by the fuzz test: Postgres' jsonb gives 2.5e24 back as an integer wider than 64
    bits, which the encoder refused, so every later store search answered 500."""
    async with server.http() as http:
        item = {"namespace": ["big"], "key": "k", "value": {"x": 2.5e24, "y": -1e300}}
        assert (await http.put("/store/items", json=item)).status_code == 204
        found = await http.post("/store/items/search", json={})
        assert found.status_code == 200
        assert found.json()["items"][0]["value"] == {"x": 2.5e24, "y": -1e300}
        got = await http.get("/store/items", params={"namespace": "big", "key": "k"})
        assert got.json()["value"] == {"x": 2.5e24, "y": -1e300}


async def test_a_filter_key_the_file_store_refuses_is_a_422_on_every_backend(
    server: Server,
) -> None:
    """Found by the fuzz test: the SQLite store raised ValueError (a 500) for such a key."""
    async with server.http() as http:
        for bad in ({"a b": 1}, {"ok": {"nested;": 1}}):
            found = await http.post("/store/items/search", json={"filter": bad})
            assert found.status_code == 422
            assert "may hold only letters, digits, '_', '.' and '-'" in found.json()["detail"]
        fine = await http.post("/store/items/search", json={"filter": {"a.b-c_1": 1}})
        assert fine.status_code == 200
