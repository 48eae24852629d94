"""The example third-party plugin ``examples/triograph-hello``, through a real server.

The plugin is not pip-installed: its ``src`` directory goes on ``sys.path`` and the module
is named in the settings, or, for the entry-point test, a hand-written ``.dist-info`` next
to it makes ``importlib.metadata`` (and so pluggy) discover it as if it were installed.
Every server test sets ``TRIOGRAPH_LOAD_PLUGINS=0`` so that plugins installed in the
environment (including this one, if someone did ``pip install -e``) cannot change the
outcome.
"""

from __future__ import annotations

import json
import pathlib
import re
from collections.abc import AsyncIterator
from typing import Any

import pytest
import trio

from tests.conftest import EXAMPLES, example_settings, start_server
from tests.sdk import Server, collect
from triograph.core.engine.emitters import StreamModeRegistry
from triograph.core.infra.plugin_manager import fill_registry, make_plugin_manager
from triograph.plugins.stream_modes import BUILTIN

# the SDK types ``stream_mode`` as a Literal of the built-in modes; a plugin's mode is just
# another string on the wire
NODE_NAMES_AND_UPDATES: Any = ["node-names", "updates"]
NODE_NAMES: Any = "node-names"
HELLO_SRC = EXAMPLES / "triograph-hello" / "src"
TASK_NS = re.compile(r"^node_2:[0-9a-f-]{36}$")


@pytest.fixture
def hello_on_path(monkeypatch: pytest.MonkeyPatch) -> pathlib.Path:
    monkeypatch.syspath_prepend(str(HELLO_SRC))
    monkeypatch.setenv("TRIOGRAPH_LOAD_PLUGINS", "0")
    monkeypatch.delenv("TRIOGRAPH_AUDIT_LOG", raising=False)
    return HELLO_SRC


@pytest.fixture
async def hello_server(nursery: trio.Nursery, hello_on_path: pathlib.Path) -> AsyncIterator[Server]:
    settings = example_settings(plugins=("triograph_hello",), shutdown_grace=0.5)
    async for server in start_server(nursery, settings):
        yield server


@pytest.fixture
async def plain_server(
    nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Server]:
    monkeypatch.setenv("TRIOGRAPH_LOAD_PLUGINS", "0")
    async for server in start_server(nursery, example_settings(shutdown_grace=0.5)):
        yield server


# -- the "node-names" stream mode -------------------------------------------------------------


async def test_node_names_stream_mode(hello_server: Server) -> None:
    parts = await hello_server.aio(
        lambda c: collect(
            c.runs.stream(
                None, "agent", input={"topic": "ice cream"}, stream_mode=NODE_NAMES_AND_UPDATES
            )
        )
    )
    # each updates chunk goes to the emitters in the requested order: node-names first
    assert [(p.event, p.data) for p in parts[1:]] == [
        ("node-names", {"nodes": ["refine_topic"]}),
        ("updates", {"refine_topic": {"topic": "ice cream and cats"}}),
        ("node-names", {"nodes": ["generate_joke"]}),
        ("updates", {"generate_joke": {"joke": "This is a joke about ice cream and cats"}}),
    ]
    assert parts[0].event == "metadata"


async def test_node_names_alone_and_namespaced_in_subgraphs(hello_server: Server) -> None:
    parts = await hello_server.aio(
        lambda c: collect(
            c.runs.stream(
                None,
                "subgraph",
                input={"foo": "foo"},
                stream_mode=NODE_NAMES,
                stream_subgraphs=True,
            )
        )
    )
    events = [(p.event.split("|"), p.data) for p in parts[1:]]
    assert [(e[0], d) for e, d in events] == [
        ("node-names", {"nodes": ["node_1"]}),
        ("node-names", {"nodes": ["subgraph_node_1"]}),
        ("node-names", {"nodes": ["subgraph_node_2"]}),
        ("node-names", {"nodes": ["node_2"]}),
    ]
    assert [len(e) for e, _ in events] == [1, 2, 2, 1]
    assert TASK_NS.match(events[1][0][1])
    assert events[1][0] == events[2][0]


async def test_node_names_skips_interrupt_only_chunks(hello_server: Server) -> None:
    async def scenario(c):  # type: ignore[no-untyped-def]
        thread = await c.threads.create()
        return await collect(
            c.runs.stream(
                thread["thread_id"],
                "interrupter",
                input={"question": "name?"},
                stream_mode=NODE_NAMES_AND_UPDATES,
            )
        )

    parts = await hello_server.aio(scenario)
    assert [p.event for p in parts] == ["metadata", "updates"]
    assert list(parts[1].data) == ["__interrupt__"]


async def test_info_lists_the_plugin_mode(hello_server: Server) -> None:
    async with hello_server.http() as h:
        r = await h.get("/info")
    assert r.status_code == 200
    info = r.json()
    assert "node-names" in info["stream_modes"]
    assert set(BUILTIN) <= set(info["stream_modes"])
    assert "triograph_hello" in info["plugins"]


async def test_without_the_plugin_node_names_is_rejected(plain_server: Server) -> None:
    async with plain_server.http() as h:
        info = (await h.get("/info")).json()
        r = await h.post(
            "/runs/stream",
            json={"assistant_id": "agent", "input": {"topic": "x"}, "stream_mode": "node-names"},
        )
        r_wait = await h.post(
            "/runs/wait",
            json={"assistant_id": "agent", "input": {"topic": "x"}, "stream_mode": ["node-names"]},
        )
    assert "node-names" not in info["stream_modes"]
    assert "triograph_hello" not in info["plugins"]
    for resp in (r, r_wait):
        assert resp.status_code == 422
        detail = resp.json()["detail"]
        assert "node-names" in detail
        for mode in BUILTIN:
            assert mode in detail, (mode, detail)


# -- the run-audit log ------------------------------------------------------------------------


def _audit_lines(path: pathlib.Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


async def test_audit_log_records_the_run_lifecycle(
    hello_server: Server, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = tmp_path / "audit.jsonl"
    monkeypatch.setenv("TRIOGRAPH_AUDIT_LOG", str(log))

    async def scenario(c):  # type: ignore[no-untyped-def]
        thread = await c.threads.create()
        ok = await c.runs.wait(thread["thread_id"], "agent", input={"topic": "dogs"})
        bad = await c.runs.wait(thread["thread_id"], "erroring", input={"x": 0}, raise_error=False)
        runs = await c.runs.list(thread["thread_id"])
        return thread, ok, bad, runs

    thread, ok, bad, runs = await hello_server.aio(scenario)
    assert ok["joke"] == "This is a joke about dogs and cats"
    assert bad == {"__error__": {"error": "ValueError", "message": "boom from node"}}
    by_id = {r["status"]: r["run_id"] for r in runs}
    ok_id, bad_id = by_id["success"], by_id["error"]

    lines = await trio.to_thread.run_sync(_audit_lines, log)
    assert all(line["thread_id"] == thread["thread_id"] for line in lines)
    assert [(line["hook"], line["run_id"]) for line in lines] == [
        ("run_created", ok_id),
        ("run_started", ok_id),
        ("run_finished", ok_id),
        ("run_created", bad_id),
        ("run_started", bad_id),
        ("run_finished", bad_id),
    ]
    assert [line["status"] for line in lines] == [
        "pending",
        "running",
        "success",
        "pending",
        "running",
        "error",
    ]
    assert lines[2]["outcome"] == "success"
    assert lines[2]["error"] is None
    assert lines[5]["outcome"] == "error"
    assert lines[5]["error"] == {"error": "ValueError", "message": "boom from node"}


async def test_audit_log_switched_off_by_unsetting_the_env_var(
    hello_server: Server, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = tmp_path / "audit.jsonl"
    monkeypatch.setenv("TRIOGRAPH_AUDIT_LOG", str(log))
    await hello_server.aio(lambda c: c.runs.wait(None, "agent", input={"topic": "x"}))
    first = await trio.to_thread.run_sync(_audit_lines, log)
    assert [line["hook"] for line in first] == ["run_created", "run_started", "run_finished"]

    # the variable is read at every hook call: unset, the plugin writes nothing
    monkeypatch.delenv("TRIOGRAPH_AUDIT_LOG")
    result = await hello_server.aio(lambda c: c.runs.wait(None, "agent", input={"topic": "y"}))
    assert result["joke"] == "This is a joke about y and cats"
    assert await trio.to_thread.run_sync(_audit_lines, log) == first


# -- discovery through the "triograph" entry-point group ----------------------------------------


def _fake_install(site: pathlib.Path) -> None:
    """What ``pip install triograph-hello`` leaves behind that matters for discovery."""
    info = site / "triograph_hello-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: triograph-hello\nVersion: 0.1\n", encoding="utf-8"
    )
    (info / "entry_points.txt").write_text("[triograph]\nhello = triograph_hello\n", "utf-8")


def test_entry_point_loading(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_install(tmp_path)
    monkeypatch.syspath_prepend(str(HELLO_SRC))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delenv("TRIOGRAPH_LOAD_PLUGINS", raising=False)
    import triograph_hello

    pm = make_plugin_manager()
    assert pm.get_plugin("hello") is triograph_hello
    dists = {dist.project_name for plugin, dist in pm.list_plugin_distinfo()}
    assert "triograph-hello" in dists
    registry = StreamModeRegistry()
    fill_registry(pm, "triograph_register_stream_modes", registry)
    assert registry.owner("node-names") == "hello"
    assert registry.names()[: len(BUILTIN)] == list(BUILTIN)  # built-ins register first

    # blocked by name, like ``pytest -p no:NAME``
    assert make_plugin_manager(disable_plugins=("hello",)).get_plugin("hello") is None

    monkeypatch.setenv("TRIOGRAPH_LOAD_PLUGINS", "0")
    pm_off = make_plugin_manager()
    assert pm_off.get_plugin("hello") is None
    assert not pm_off.is_registered(triograph_hello)
