"""Fixtures: a real triograph server on 127.0.0.1:0, and the official SDK clients for it.

The server runs in the test's Trio nursery. ``langgraph_sdk`` is asyncio/httpx code, so the
SDK calls run in a worker thread: the sync client directly, the async client under its own
``asyncio.run`` (see ``tests/sdk.py``).

``TRIOGRAPH_TEST_STORAGE`` picks the backend of the servers ``example_settings()`` describes:
``memory`` (the default), ``file`` (a fresh database under the test's ``tmp_path`` for each
call) or ``postgres`` (a fresh database for each call on the server ``TRIOGRAPH_TEST_POSTGRES``
names, cloned from a migrated template and dropped when the test ends), so the whole suite
runs on any of them: ``TRIOGRAPH_TEST_STORAGE=file pytest``.
"""

from __future__ import annotations

import itertools
import os
import pathlib
from collections.abc import AsyncIterator, Callable, Iterator

import attrs
import pytest
import trio
from psycopg.conninfo import conninfo_to_dict

from tests import pg
from tests.sdk import Server
from triograph.core.http.app import app_core, create_app, serve_app
from triograph.core.infra.context import Core
from triograph.core.infra.plugin_manager import fill_registry, make_plugin_manager
from triograph.core.infra.settings import Settings, load_settings
from triograph.core.infra.storage import StorageRegistry

ROOT = pathlib.Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
TEST_STORAGE = os.environ.get("TRIOGRAPH_TEST_STORAGE", "memory")
if TEST_STORAGE not in ("memory", "file", "postgres"):
    raise pytest.UsageError(
        f"TRIOGRAPH_TEST_STORAGE={TEST_STORAGE!r}: expected memory, file or postgres"
    )
if TEST_STORAGE == "postgres" and pg.ADMIN_DSN is None:
    raise pytest.UsageError(
        "TRIOGRAPH_TEST_STORAGE=postgres needs TRIOGRAPH_TEST_POSTGRES, a database on a server "
        "the tests may create databases on (postgresql://postgres@127.0.0.1:5432/postgres)"
    )

#: the storage spec of each ``example_settings()`` call; set per test by ``test_storage``
_storage_specs: Iterator[str] = itertools.repeat("memory")


async def _open_once(spec: str) -> None:
    """Open and close the storage ``spec`` names through its registered factory, as a test
    server would (which creates and migrates its database)."""
    registry = StorageRegistry()
    fill_registry(make_plugin_manager(), "triograph_register_storage", registry)
    async with registry.for_spec(spec)(spec, example_settings(storage=spec)):
        pass


@pytest.fixture(scope="session")
def postgres_template() -> Iterator[str]:
    """A database the Postgres backend has migrated, made on first use: cloning it and
    opening the clone takes ~15 % less than creating an empty database and migrating it at
    open (~250 ms on two busy cores), and the suite makes hundreds. Sync fixtures run
    outside the tests' Trio loop, so this one runs its own."""
    url = pg.fresh_database()
    try:
        trio.run(_open_once, url)
        yield conninfo_to_dict(url)["dbname"]
    finally:
        pg.drop_database(url)


def _clones(template: str, made: list[str]) -> Iterator[str]:
    """A new Postgres database copied from ``template`` per call, remembered in ``made``
    to be dropped."""
    while True:
        made.append(pg.fresh_database(template))
        yield made[-1]


@pytest.fixture(autouse=True)
def test_storage(request: pytest.FixtureRequest) -> Iterator[None]:
    """On the file and postgres backends, each ``example_settings()`` of the test gets a new
    database. (Cloning and dropping one on Postgres blocks, for a tenth of a second or two.)"""
    global _storage_specs
    databases: list[str] = []
    if TEST_STORAGE == "file":
        tmp_path: pathlib.Path = request.getfixturevalue("tmp_path")
        _storage_specs = (f"file:{tmp_path / f'triograph-{n}.sqlite'}" for n in itertools.count())
    elif TEST_STORAGE == "postgres":
        _storage_specs = _clones(request.getfixturevalue("postgres_template"), databases)
    try:
        yield
    finally:
        _storage_specs = itertools.repeat("memory")
        for url in databases:
            pg.drop_database(url)


def example_settings(**overrides: object) -> Settings:
    """The examples' settings with ``overrides``, on the test backend unless they name a
    ``storage`` (no database is made then)."""
    storage = overrides.pop("storage") if "storage" in overrides else next(_storage_specs)
    settings = load_settings(EXAMPLES / "langgraph.json", storage=storage)
    return attrs.evolve(settings, **overrides) if overrides else settings


async def start_server(
    nursery: trio.Nursery, settings: Settings, *, prepare: Callable[[Core], None] | None = None
) -> AsyncIterator[Server]:
    """Serve ``settings`` on 127.0.0.1:0 for the block; ``prepare(core)`` runs before the
    server starts (to register a plugin that must see start-up, say)."""
    app = create_app(settings)
    if prepare is not None:
        prepare(app_core(app))
    stop, stopped = trio.Event(), trio.Event()

    async def run(*, task_status: trio.TaskStatus[list[str]]) -> None:
        try:
            await serve_app(
                app, host="127.0.0.1", port=0, shutdown_trigger=stop.wait, task_status=task_status
            )
        finally:
            stopped.set()

    urls = await nursery.start(run)
    server = Server(url=urls[0], core=app_core(app), stop=stop, stopped=stopped)
    try:
        yield server
    finally:
        stop.set()
        with trio.move_on_after(15):
            await stopped.wait()


@pytest.fixture
async def server(nursery: trio.Nursery) -> AsyncIterator[Server]:
    """The examples' graphs on the test backend, with a short heartbeat for wire tests."""
    async for s in start_server(
        nursery, example_settings(heartbeat_interval=1.0, shutdown_grace=0.5)
    ):
        yield s
