"""The store API (contract §8) through the official SDK, raw httpx for the wire; the store
shared with graphs; semantic search with a fake embedding; TTL with a movable clock."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from typing import Any, TypeVar

import pytest
import trio
from langgraph_sdk.errors import BadRequestError, UnprocessableEntityError

from tests import pg
from tests.conftest import EXAMPLES, TEST_STORAGE, example_settings, start_server
from tests.sdk import Server, poll
from triograph.core.infra.errors import ConfigError
from triograph.core.infra.models import now
from triograph.core.infra.store_config import store_index, store_ttl
from triograph.storage.memory import MemoryStore

T = TypeVar("T")

INDEX = {"dims": 8, "embed": "./embeddings.py:embed", "fields": ["text"]}


async def put(server: Server, namespace: list[str], key: str, value: dict[str, Any]) -> None:
    await server.sync(lambda c: c.store.put_item(namespace, key=key, value=value))


async def namespaces(server: Server, **kwargs: Any) -> list[list[str]]:
    found = await server.sync(lambda c: c.store.list_namespaces(**kwargs))
    return found["namespaces"]  # type: ignore[no-any-return]


async def keys(server: Server, prefix: list[str], **kwargs: Any) -> list[str]:
    found = await server.sync(lambda c: c.store.search_items(prefix, **kwargs))
    return [item["key"] for item in found["items"]]


class Clock:
    """The store's clock, moved by tests instead of waiting minutes."""

    def __init__(self) -> None:
        self.offset = dt.timedelta()

    def __call__(self) -> dt.datetime:
        return now() + self.offset

    def advance(self, minutes: float) -> None:
        self.offset += dt.timedelta(minutes=minutes)


def clock_of(server: Server) -> Clock:
    clock = Clock()
    server.core.storage.store.clock = clock  # type: ignore[attr-defined]
    return clock


# -- items ------------------------------------------------------------------------------------


async def test_put_get_delete(server: Server) -> None:
    await put(server, ["users", "alice"], "prefs", {"theme": "dark"})
    item = await server.sync(lambda c: c.store.get_item(["users", "alice"], key="prefs"))
    assert item["namespace"] == ["users", "alice"]
    assert (item["key"], item["value"]) == ("prefs", {"theme": "dark"})
    assert dt.datetime.fromisoformat(item["created_at"]).utcoffset() == dt.timedelta(0)
    assert set(item) == {"namespace", "key", "value", "created_at", "updated_at"}

    await put(server, ["users", "alice"], "prefs", {"theme": "light"})
    item = await server.sync(lambda c: c.store.get_item(["users", "alice"], key="prefs"))
    assert item["value"] == {"theme": "light"}

    await server.sync(lambda c: c.store.delete_item(["users", "alice"], key="prefs"))
    assert await server.sync(lambda c: c.store.get_item(["users", "alice"], key="prefs")) is None


async def test_get_absent_item_is_200_null(server: Server) -> None:
    async with server.http() as h:
        r = await h.get("/store/items", params={"namespace": "nobody.here", "key": "k"})
    assert (r.status_code, r.content) == (200, b"null")
    assert await namespaces(server) == []  # reading an absent item creates no namespace


async def test_delete_takes_a_json_body_and_is_204_when_absent(server: Server) -> None:
    await put(server, ["a"], "k", {"v": 1})
    async with server.http() as h:
        gone = await h.request("DELETE", "/store/items", json={"namespace": ["a"], "key": "k"})
        again = await h.request("DELETE", "/store/items", json={"namespace": ["a"], "key": "k"})
    assert (gone.status_code, again.status_code) == (204, 204)
    assert await server.sync(lambda c: c.store.get_item(["a"], key="k")) is None


@pytest.mark.parametrize(
    ("body", "status", "detail"),
    [
        ({"namespace": ["a.b"], "key": "k", "value": {}}, 422, "'a.b'"),
        ({"namespace": ["a", ""], "key": "k", "value": {}}, 422, "empty"),
        ({"namespace": [], "key": "k", "value": {}}, 400, "Namespace cannot be empty."),
        ({"namespace": "a", "key": "k", "value": {}}, 422, "$.namespace"),
        ({"namespace": ["a"], "key": "k", "value": [1]}, 422, "$.value"),
        ({"namespace": ["a"], "key": "k", "value": "text"}, 422, "$.value"),
        ({"namespace": ["a"], "value": {}}, 422, "$.key"),
        ({"namespace": ["a"], "key": "k", "value": {}, "index": True}, 422, "$.index"),
        ({"namespace": ["a"], "key": "k", "value": {}, "ttl": 0}, 422, "$.ttl"),
        ({"namespace": ["a"], "key": "k", "value": {}, "ttl": "1"}, 422, "$.ttl"),
    ],
)
async def test_put_rejects_bad_items(
    server: Server, body: dict[str, Any], status: int, detail: str
) -> None:
    async with server.http() as h:
        r = await h.put("/store/items", json=body)
    assert r.status_code == status
    assert detail in r.json()["detail"]
    assert await namespaces(server) == []


async def test_get_and_delete_reject_bad_requests(server: Server) -> None:
    async with server.http() as h:
        no_key = await h.get("/store/items", params={"namespace": "a"})
        no_namespace = await h.get("/store/items", params={"key": "k"})
        empty_label = await h.get("/store/items", params={"namespace": "a..b", "key": "k"})
        delete_empty = await h.request("DELETE", "/store/items", json={"namespace": [], "key": "k"})
        delete_no_key = await h.request("DELETE", "/store/items", json={"namespace": ["a"]})
    assert (no_key.status_code, no_key.json()) == (400, {"detail": "Key is required"})
    assert no_namespace.status_code == 422
    assert "namespace" in no_namespace.json()["detail"]
    assert empty_label.status_code == 422
    assert delete_empty.status_code == 400
    assert delete_no_key.status_code == 422
    assert "$.key" in delete_no_key.json()["detail"]


async def test_sdk_errors_are_typed(server: Server) -> None:
    with pytest.raises(BadRequestError):
        await server.sync(lambda c: c.store.put_item([], key="k", value={}))
    with pytest.raises(UnprocessableEntityError):
        await server.sync(lambda c: c.store.put_item(["a", ""], key="k", value={}))


# -- search and namespaces --------------------------------------------------------------------


async def test_search_prefix_filter_and_paging(server: Server) -> None:
    await put(server, ["docs", "a"], "one", {"n": 1, "kind": "x"})
    await put(server, ["docs", "a"], "two", {"n": 2, "kind": "y"})
    await put(server, ["docs", "b"], "three", {"n": 3, "kind": "x"})
    await put(server, ["docs", "b"], "plain", {"kind": "x"})  # no "n": never matches on n
    await put(server, ["other"], "four", {"n": 4})

    assert sorted(await keys(server, ["docs"])) == ["one", "plain", "three", "two"]
    assert sorted(await keys(server, ["docs", "a"])) == ["one", "two"]
    assert await keys(server, ["doc"]) == []  # prefixes match whole labels
    assert sorted(await keys(server, [], limit=100)) == ["four", "one", "plain", "three", "two"]
    assert sorted(await keys(server, ["docs"], filter={"kind": "x"})) == ["one", "plain", "three"]
    assert sorted(await keys(server, ["docs"], filter={"n": {"$gt": 1}})) == ["three", "two"]
    assert await keys(server, ["docs"], filter={"n": {"$gte": 2, "$lt": 3}}) == ["two"]
    assert sorted(await keys(server, ["docs"], filter={"n": {"$ne": 2}})) == [
        "one",
        "plain",
        "three",
    ]
    assert sorted(await keys(server, ["docs"], filter={"n": {"$lte": 1}})) == ["one"]
    assert await keys(server, ["docs"], filter={"n": {"$eq": 3}}) == ["three"]

    first = await keys(server, ["docs"], limit=2)
    rest = await keys(server, ["docs"], limit=2, offset=2)
    assert len(first) == len(rest) == 2
    assert sorted(first + rest) == ["one", "plain", "three", "two"]

    found = await server.sync(lambda c: c.store.search_items(["docs"], query="numbers"))
    assert {item["score"] for item in found["items"]} == {None}  # no index: query ignored
    assert set(found["items"][0]) == {
        "namespace",
        "key",
        "value",
        "created_at",
        "updated_at",
        "score",
    }


async def test_search_without_namespace_prefix_searches_everything(server: Server) -> None:
    """Contract §13.10: the official server answers 500; absent means ``[]``."""
    await put(server, ["x"], "k1", {"v": 1})
    await put(server, ["y", "z"], "k2", {"v": 2})
    async with server.http() as h:
        absent = await h.post("/store/items/search", json={})
        null = await h.post("/store/items/search", json={"namespace_prefix": None})
    assert absent.status_code == null.status_code == 200
    assert sorted(i["key"] for i in absent.json()["items"]) == ["k1", "k2"]
    assert sorted(i["key"] for i in null.json()["items"]) == ["k1", "k2"]


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        ({"filter": {"n": {"$regex": "x"}}}, "'$regex'"),
        ({"filter": {"a": {"b": {"$nope": 1}}}}, "$.filter.a.b"),
        ({"filter": "n"}, "$.filter"),
        ({"limit": 0}, "$.limit"),
        ({"offset": -1}, "$.offset"),
        ({"namespace_prefix": ["a.b"]}, "'a.b'"),
        ({"query": 5}, "$.query"),
    ],
)
async def test_search_rejects_bad_requests(
    server: Server, body: dict[str, Any], detail: str
) -> None:
    async with server.http() as h:
        r = await h.post("/store/items/search", json=body)
    assert r.status_code == 422
    assert detail in r.json()["detail"]


async def test_list_namespaces(server: Server) -> None:
    for ns in (["users", "alice", "prefs"], ["users", "bob", "prefs"], ["users", "bob", "notes"]):
        await put(server, ns, "k", {"v": 1})
    await put(server, ["teams", "red"], "k", {"v": 1})

    assert await namespaces(server) == [
        ["teams", "red"],
        ["users", "alice", "prefs"],
        ["users", "bob", "notes"],
        ["users", "bob", "prefs"],
    ]
    assert await namespaces(server, prefix=["users", "bob"]) == [
        ["users", "bob", "notes"],
        ["users", "bob", "prefs"],
    ]
    assert await namespaces(server, suffix=["prefs"]) == [
        ["users", "alice", "prefs"],
        ["users", "bob", "prefs"],
    ]
    assert await namespaces(server, max_depth=1) == [["teams"], ["users"]]
    assert await namespaces(server, max_depth=2, prefix=["users"]) == [
        ["users", "alice"],
        ["users", "bob"],
    ]
    assert await namespaces(server, limit=2, offset=1) == [
        ["users", "alice", "prefs"],
        ["users", "bob", "notes"],
    ]
    async with server.http() as h:
        bad = await h.post("/store/namespaces", json={"max_depth": 0})
    assert bad.status_code == 422
    assert "$.max_depth" in bad.json()["detail"]


async def test_namespace_disappears_with_its_last_item(server: Server) -> None:
    await put(server, ["box"], "a", {"v": 1})
    await put(server, ["box"], "b", {"v": 2})
    await server.sync(lambda c: c.store.delete_item(["box"], key="a"))
    assert await namespaces(server) == [["box"]]
    await server.sync(lambda c: c.store.delete_item(["box"], key="b"))
    assert await namespaces(server) == []


# -- the store the graphs share ---------------------------------------------------------------


async def test_graphs_and_the_api_share_the_store(server: Server) -> None:
    async def ask(question: str) -> Any:
        return await server.sync(
            lambda c: c.runs.wait(
                None, "ctxgraph", input={"question": question}, context={"user": "alice"}
            )
        )

    first = await ask("one")
    assert (first["answer"], first["seen"]) == ("alice asked one", [])
    item = await server.sync(lambda c: c.store.get_item(["ctx", "alice"], key="q0"))
    assert item["value"] == {"question": "one"}
    assert await namespaces(server, prefix=["ctx"]) == [["ctx", "alice"]]

    await put(server, ["ctx", "alice"], "from-api", {"question": "api"})
    second = await ask("two")
    assert second["seen"] == ["from-api", "q0"]
    assert sorted(await keys(server, ["ctx", "alice"])) == ["from-api", "q0", "q2"]


# -- semantic search --------------------------------------------------------------------------


@pytest.fixture
async def indexed(nursery: trio.Nursery) -> AsyncIterator[Server]:
    if TEST_STORAGE == "postgres" and not pg.has_extension("vector"):
        pytest.skip("semantic search on Postgres needs the pgvector extension on the server")
    async for s in start_server(nursery, example_settings(store={"index": INDEX})):
        yield s


async def test_semantic_search_orders_by_similarity(indexed: Server) -> None:
    server = indexed
    await put(server, ["pets"], "cats", {"text": "cat cat cat and a dog"})
    await put(server, ["pets"], "dogs", {"text": "dog dog and a cat"})
    await put(server, ["pets"], "fish", {"text": "fish and a bird"})
    await server.sync(
        lambda c: c.store.put_item(["pets"], key="hidden", value={"text": "cat"}, index=False)
    )

    found = await server.sync(lambda c: c.store.search_items(["pets"], query="cat", limit=10))
    items = found["items"]
    assert [i["key"] for i in items[:3]] == ["cats", "dogs", "fish"]
    scores = [i["score"] for i in items[:3]]
    assert all(isinstance(s, float) for s in scores)
    assert scores[0] > scores[1] > scores[2]
    assert items[3]["key"] == "hidden"  # not indexed: listed after the scored, without a score
    assert items[3]["score"] is None

    dogs = await server.sync(lambda c: c.store.search_items(["pets"], query="dog", limit=1))
    assert [i["key"] for i in dogs["items"]] == ["dogs"]
    plain = await server.sync(lambda c: c.store.search_items(["pets"]))
    assert {i["score"] for i in plain["items"]} == {None}  # no query, no score


def test_index_embed_forms(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(EXAMPLES))
    by_path = store_index(example_settings(store={"index": INDEX}))
    by_module = store_index(
        example_settings(store={"index": {**INDEX, "embed": "embeddings:embed"}})
    )
    assert by_path is not None
    assert by_module is not None
    assert by_path["embed"](["cat dog"]) == by_module["embed"](["cat dog"])  # type: ignore[operator]
    assert by_path["dims"] == 8
    assert by_path["fields"] == ["text"]

    settings = example_settings(store={"index": {"dims": 8, "embed": "embeddings.py:embed"}})
    assert settings.base_dir == EXAMPLES
    assert store_index(settings) is not None  # a file path is relative to the config file


@pytest.mark.parametrize(
    ("index", "message"),
    [
        ({"dims": 8, "embed": "openai:text-embedding-3-small"}, "'langchain' package"),
        ({"dims": 8, "embed": "./missing.py:embed"}, "cannot load"),
        ({"dims": 8, "embed": "./embeddings.py:nothing"}, "has no 'nothing'"),
        ({"dims": 8, "embed": "./embeddings.py:VOCABULARY"}, "not a function"),
        ({"dims": 8, "embed": "no-colon"}, "is not './file.py:function'"),
        ({"dims": 0, "embed": "./embeddings.py:embed"}, "dims"),
        ({"embed": "./embeddings.py:embed"}, "dims"),
        ({"dims": 8}, "store.index.embed"),
        ({"dims": 8, "embed": "./embeddings.py:embed", "fields": "text"}, "fields"),
        ("yes", "store.index must be an object"),
    ],
)
def test_bad_index_config_is_a_clear_config_error(index: Any, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        store_index(example_settings(store={"index": index}))
    assert message in info.value.message


@pytest.mark.parametrize(
    ("ttl", "message"),
    [
        ({"default_ttl": 0}, "default_ttl"),
        ({"default_ttl": "5"}, "default_ttl"),
        ({"refresh_on_read": "yes"}, "refresh_on_read"),
        ({"sweep_interval_minutes": 0.5}, "sweep_interval_minutes"),
        ([], "store.ttl must be an object"),
    ],
)
def test_bad_ttl_config_is_a_clear_config_error(ttl: Any, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        store_ttl(example_settings(store={"ttl": ttl}))
    assert message in info.value.message


# -- TTL --------------------------------------------------------------------------------------


async def test_items_expire_after_their_ttl(server: Server) -> None:
    clock = clock_of(server)
    await server.sync(lambda c: c.store.put_item(["t"], key="short", value={"v": 1}, ttl=1))
    await put(server, ["t"], "forever", {"v": 2})
    await server.sync(lambda c: c.store.put_item(["gone"], key="k", value={"v": 3}, ttl=1))
    clock.advance(0.5)
    assert await server.sync(lambda c: c.store.get_item(["t"], key="short")) is not None

    clock.advance(2)
    assert await server.sync(lambda c: c.store.get_item(["t"], key="short")) is None
    assert await keys(server, []) == ["forever"]
    assert await namespaces(server) == [["t"]]


async def test_reads_refresh_the_ttl_unless_told_not_to(server: Server) -> None:
    clock = clock_of(server)
    await server.sync(lambda c: c.store.put_item(["t"], key="k", value={"v": 1}, ttl=1))
    clock.advance(0.75)
    assert await server.sync(lambda c: c.store.get_item(["t"], key="k")) is not None  # refreshed
    clock.advance(0.75)  # 1.5 minutes after the put, 0.75 after the read
    assert await server.sync(lambda c: c.store.get_item(["t"], key="k", refresh_ttl=False))
    assert await keys(server, ["t"], refresh_ttl=True) == ["k"]  # refreshed again
    clock.advance(0.75)
    assert await keys(server, ["t"], refresh_ttl=False) == ["k"]
    clock.advance(0.5)  # 1.25 minutes after the last refresh
    assert await server.sync(lambda c: c.store.get_item(["t"], key="k")) is None


async def test_ttl_on_the_wire_without_moving_the_clock(server: Server) -> None:
    async with server.http() as h:
        r = await h.put(
            "/store/items", json={"namespace": ["w"], "key": "k", "value": {}, "ttl": 0.002}
        )
        assert r.status_code == 204
        await poll(
            # reading refreshes the TTL by default: these reads must not
            lambda: h.get(
                "/store/items", params={"namespace": "w", "key": "k", "refresh_ttl": "false"}
            ),
            lambda r: r.json() is None,
        )


@pytest.fixture
async def ttl_server(nursery: trio.Nursery) -> AsyncIterator[Server]:
    ttl = {"default_ttl": 1, "refresh_on_read": False, "sweep_interval_minutes": 1}
    async for s in start_server(nursery, example_settings(store={"ttl": ttl})):
        yield s


async def test_store_ttl_config_defaults(ttl_server: Server) -> None:
    server = ttl_server
    clock = clock_of(server)
    await put(server, ["d"], "default", {"v": 1})
    async with server.http() as h:  # an explicit null: this item never expires
        r = await h.put(
            "/store/items", json={"namespace": ["d"], "key": "kept", "value": {}, "ttl": None}
        )
    assert r.status_code == 204
    clock.advance(0.75)
    assert await server.sync(lambda c: c.store.get_item(["d"], key="default"))  # not refreshed
    clock.advance(0.5)
    assert await server.sync(lambda c: c.store.get_item(["d"], key="default")) is None
    assert await keys(server, ["d"]) == ["kept"]


def test_memory_store_sweeps_expired_items() -> None:
    clock = Clock()
    store = MemoryStore(ttl={"sweep_interval_minutes": 1}, clock=clock)
    store.put(("old",), "k", {"v": 1}, ttl=1)
    store.put(("new",), "k", {"v": 1})
    clock.advance(2)
    assert ("old",) in store._data  # nothing read it yet
    store.get(("new",), "k")  # any operation sweeps once the interval has passed
    assert ("old",) not in store._data
    assert store.list_namespaces() == [("new",)]
