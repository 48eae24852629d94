"""The example auth plugin ``examples/triograph-apikey``: static API keys from an
environment variable, through a real server and the official SDK, with no ``auth.py``.

As for ``triograph-hello``, the plugin's ``src`` goes on ``sys.path`` and the module is
named in the settings (``TRIOGRAPH_LOAD_PLUGINS=0`` keeps installed plugins out)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import TypeVar

import pytest
import trio
from langgraph_sdk import get_sync_client
from langgraph_sdk.client import SyncLangGraphClient
from langgraph_sdk.errors import NotFoundError

from tests.conftest import EXAMPLES, example_settings, start_server
from tests.sdk import Server
from triograph.core.http.app import create_app
from triograph.core.infra.errors import ConfigError

T = TypeVar("T")
KEYS = {"alice": "alice-key-0123456789abcdef", "bob": "bob-key-0123456789abcdef"}


@pytest.fixture
def apikey(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(EXAMPLES / "triograph-apikey" / "src"))
    monkeypatch.setenv("TRIOGRAPH_LOAD_PLUGINS", "0")
    monkeypatch.setenv("TRIOGRAPH_API_KEYS", ",".join(f"{u}:{k}" for u, k in KEYS.items()))


@asynccontextmanager
async def serving(nursery: trio.Nursery) -> AsyncIterator[Server]:
    settings = example_settings(plugins=("triograph_apikey",), shutdown_grace=0.5)
    async with asynccontextmanager(start_server)(nursery, settings) as server:
        yield server


def key(user: str) -> dict[str, str]:
    return {"x-api-key": KEYS[user]}


@pytest.mark.usefixtures("apikey")
async def test_keys_let_their_users_in_and_nobody_else(nursery: trio.Nursery) -> None:
    async with serving(nursery) as server, server.http() as http:
        assert (await http.get("/ok")).status_code == 200
        missing = await http.get("/info")
        wrong = await http.get("/info", headers={"x-api-key": "alice-key-0123456789abcdeX"})
        bearer = await http.get("/info", headers={"Authorization": f"Bearer {KEYS['bob']}"})
        assert (await http.get("/info", headers=key("alice"))).status_code == 200
    assert (missing.status_code, missing.json()) == (401, {"detail": "Missing API key"})
    assert (wrong.status_code, wrong.json()) == (401, {"detail": "Invalid API key"})
    assert bearer.status_code == 200


async def as_user(server: Server, user: str, fn: Callable[[SyncLangGraphClient], T]) -> T:
    """``fn(client)`` with the SDK's client holding ``user``'s key (the SDK sends its
    ``api_key`` as ``x-api-key``, and refuses that header in ``headers=``)."""

    def call() -> T:
        with get_sync_client(url=server.url, api_key=KEYS[user]) as client:
            return fn(client)

    return await trio.to_thread.run_sync(call)


@pytest.mark.usefixtures("apikey")
async def test_each_key_sees_only_its_own(nursery: trio.Nursery) -> None:
    async with serving(nursery) as server:
        thread = await as_user(server, "alice", lambda c: c.threads.create())
        run = await as_user(
            server,
            "alice",
            lambda c: c.runs.wait(thread["thread_id"], "agent", input={"topic": "keys"}),
        )
        assert run["joke"] == "This is a joke about keys and cats"
        with pytest.raises(NotFoundError):
            await as_user(server, "bob", lambda c: c.threads.get(thread["thread_id"]))
        assert await as_user(server, "bob", lambda c: c.threads.search()) == []
        mine = await as_user(server, "alice", lambda c: c.threads.search())
        await as_user(server, "bob", lambda c: c.store.put_item(["prefs"], "theme", {"v": "dark"}))
        bobs = await as_user(server, "bob", lambda c: c.store.search_items(["prefs"]))
        alices = await as_user(server, "alice", lambda c: c.store.search_items(["prefs"]))
    assert [t["metadata"]["owner"] for t in mine] == ["alice"]
    assert [i["namespace"] for i in bobs["items"]] == [["bob", "prefs"]]
    assert alices["items"] == []


@pytest.mark.parametrize(
    ("keys", "says"),
    [
        ("", "names no key"),
        ("alice", "each entry is 'user:key'"),
        ("alice:short", "each entry is 'user:key'"),
        ("a:same-key-0123456789,b:same-key-0123456789", "share a key"),
    ],
)
def test_without_good_keys_the_server_does_not_start(
    monkeypatch: pytest.MonkeyPatch, keys: str, says: str
) -> None:
    monkeypatch.syspath_prepend(str(EXAMPLES / "triograph-apikey" / "src"))
    monkeypatch.setenv("TRIOGRAPH_LOAD_PLUGINS", "0")
    monkeypatch.setenv("TRIOGRAPH_API_KEYS", keys)
    with pytest.raises(ConfigError, match=says):
        create_app(example_settings(plugins=("triograph_apikey",), storage="memory"))
