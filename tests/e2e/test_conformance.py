"""Behaviours the official clients' own API test suite (langgraphjs
``libs/langgraph-api/tests/api.test.mts``, run by the conformance runner) showed us, each
pinned here through the Python SDK: error messages of subclasses, ``LANGGRAPH_CONFIG`` in
``langgraph.json``'s ``env``, the client's ``configurable`` reaching the graph and the
store it writes."""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
from collections.abc import AsyncIterator
from typing import Any, TypedDict

import pytest
import trio
from langchain_core.runnables import RunnableConfig
from langgraph.config import get_store
from langgraph.graph import START, StateGraph
from langgraph_sdk.runtime import ServerRuntime

from tests.conftest import example_settings, start_server
from tests.sdk import Server, collect
from triograph.core.infra.settings import load_settings

THIS = "tests.e2e.test_conformance"


class State(TypedDict, total=False):
    x: int
    seen: str


class CustomError(RuntimeError):
    """A graph's own error class: a subclass of one whose message is shown."""


class SecretError(Exception):
    """Not a subclass of a shown class: its message stays hidden."""


def _raises(error: Exception) -> Any:
    def node(state: State) -> State:
        raise error

    return StateGraph(State).add_node("node", node).add_edge(START, "node").compile()


custom_error_graph = _raises(CustomError("Boo!"))
secret_error_graph = _raises(SecretError("the password is hunter2"))


async def _remember_user(state: State, config: RunnableConfig) -> State:
    """Writes the client's ``user_id`` to the store, and returns what the store held."""
    user = config["configurable"].get("user_id")
    store = get_store()
    await store.aput(("shared", "data"), "user", {"id": user})
    item = await store.aget(("shared", "data"), "user")
    assert item is not None
    return {"seen": item.value["id"]}


store_graph = (
    StateGraph(State).add_node("remember", _remember_user).add_edge(START, "remember").compile()
)

#: what the factories below saw, in call order
FACTORY_LOG: list[Any] = []


def _echo_graph(seen: str) -> Any:
    def node(state: State) -> State:
        return {"seen": seen}

    return StateGraph(State).add_node("node", node).add_edge(START, "node").compile()


def two_parameter_factory(config: RunnableConfig, runtime):  # type: ignore[no-untyped-def]
    """``(config, runtime)`` unannotated: the runtime is the second."""
    FACTORY_LOG.append((runtime.access_context, runtime.user))
    execution = runtime.execution_runtime
    who = execution.context.get("who") if execution is not None else None
    return _echo_graph(f"{config['configurable'].get('graph_id')}|{who}")


def runtime_only_factory(runtime: ServerRuntime[Any]) -> Any:
    """One parameter annotated ``ServerRuntime``: the runtime, not the config."""
    execution = runtime.execution_runtime
    return _echo_graph(f"runtime:{execution.context['who'] if execution else None}")


@contextlib.asynccontextmanager
async def managed_factory(config: RunnableConfig) -> AsyncIterator[Any]:
    """An async context manager: set-up before the run, tear-down after it."""
    FACTORY_LOG.append("set up")
    try:
        yield _echo_graph("managed")
    finally:
        FACTORY_LOG.append("torn down")


async def _ask_the_server(state: State) -> State:
    """Calls this server from inside a run through the SDK's in-process client."""
    from langgraph_sdk import get_client

    found = await get_client().assistants.search(graph_id="store_graph")
    return {"seen": f"{len(found)} {found[0]['metadata']['created_by']}"}


loopback_graph = StateGraph(State).add_node("ask", _ask_the_server).add_edge(START, "ask").compile()

GRAPHS = {
    "loopback": f"{THIS}:loopback_graph",
    "custom_error": f"{THIS}:custom_error_graph",
    "secret_error": f"{THIS}:secret_error_graph",
    "store_graph": f"{THIS}:store_graph",
    "two_parameter": f"{THIS}:two_parameter_factory",
    "runtime_only": f"{THIS}:runtime_only_factory",
    "managed": f"{THIS}:managed_factory",
}


@pytest.fixture
async def conf(nursery: trio.Nursery, tmp_path: pathlib.Path) -> AsyncIterator[Server]:
    """These graphs, with ``LANGGRAPH_CONFIG`` given in the config file's ``env``."""
    env_config = {"store_graph": {"configurable": {"model_name": "openai"}}}
    path = tmp_path / "langgraph.json"
    path.write_text(
        json.dumps({"graphs": GRAPHS, "env": {"LANGGRAPH_CONFIG": json.dumps(env_config)}})
    )
    storage = example_settings().storage
    had = os.environ.get("LANGGRAPH_CONFIG")
    try:
        async for server in start_server(nursery, load_settings(path, storage=storage)):
            yield server
    finally:  # the config file's env reaches os.environ while the graphs load
        if had is None:
            os.environ.pop("LANGGRAPH_CONFIG", None)


async def test_the_message_of_a_subclass_of_a_shown_error_is_shown(conf: Server) -> None:
    async def scenario(c: Any) -> tuple[Any, ...]:
        streamed = await collect(c.runs.stream(None, "custom_error", input={}))
        thread = await c.threads.create()
        run = await c.runs.create(thread["thread_id"], "custom_error", input={})
        joined = await collect(c.runs.join_stream(thread["thread_id"], run["run_id"]))
        hidden = await collect(c.runs.stream(None, "secret_error", input={}))
        return streamed[-1], joined[-1], hidden[-1]

    streamed, joined, hidden = await conf.aio(scenario)
    shown = {"error": "CustomError", "message": "Boo!"}
    assert (streamed.event, streamed.data) == ("error", shown)
    assert (joined.event, joined.data) == ("error", shown)
    assert hidden.data == {"error": "SecretError", "message": "An internal error occurred"}


async def test_langgraph_config_in_the_config_files_env(conf: Server) -> None:
    (system,) = await conf.sync(
        lambda c: c.assistants.search(graph_id="store_graph", metadata={"created_by": "system"})
    )
    assert system["config"] == {"configurable": {"model_name": "openai"}}
    assert system["context"] == {"model_name": "openai"}


async def test_the_clients_user_id_reaches_the_graph_and_the_store(conf: Server) -> None:
    """The server fills ``user_id`` only when the client gave none (it used to overwrite
    it with ""); what a run writes to the store is there for the next run and the SDK."""
    config = {"configurable": {"user_id": "start_user_id"}}

    async def scenario(c: Any) -> tuple[Any, ...]:
        thread = await c.threads.create()
        first = await c.runs.wait(thread["thread_id"], "store_graph", input={}, config=config)
        item = await c.store.get_item(["shared", "data"], "user")
        second = await c.runs.wait(thread["thread_id"], "store_graph", input={})
        return first, item, second

    first, item, second = await conf.aio(scenario)
    assert first["seen"] == "start_user_id"
    assert item["value"] == {"id": "start_user_id"}
    assert second["seen"] == ""  # no user_id given: the server's default


async def test_task_start_events_carry_empty_interrupts(conf: Server) -> None:
    """``tasks`` mode: a task's start has ``interrupts: []`` as its result does (the JS
    server's shape, which its clients read)."""
    parts = await conf.aio(
        lambda c: collect(
            c.runs.stream(
                None,
                "store_graph",
                input={},
                stream_mode="tasks",
                config={"configurable": {"user_id": "u"}},
            )
        )
    )
    start, result = (p.data for p in parts if p.event == "tasks")
    assert (start["name"], start["interrupts"], "result" not in start) == ("remember", [], True)
    assert (result["name"], result["interrupts"], result["result"]) == (
        "remember",
        [],
        {"seen": "u"},
    )


async def test_graph_factories_get_the_server_runtime(conf: Server) -> None:
    """Every factory shape the official server documents: ``(config, runtime)``, a
    ``ServerRuntime``-annotated parameter alone, an async context manager around the run;
    the runtime carries the run's ``context`` when the factory builds a graph to run."""
    FACTORY_LOG.clear()

    async def scenario(c: Any) -> tuple[Any, ...]:
        thread = await c.threads.create()
        tid = thread["thread_id"]
        two = await c.runs.wait(tid, "two_parameter", input={}, context={"who": "ann"})
        await c.threads.get_state(tid)
        alone = await c.runs.wait(None, "runtime_only", input={}, context={"who": "bob"})
        managed = await c.runs.wait(None, "managed", input={})
        return two, alone, managed

    two, alone, managed = await conf.aio(scenario)
    assert two["seen"] == "two_parameter|ann"
    assert alone["seen"] == "runtime:bob"
    assert managed["seen"] == "managed"
    calls = [entry for entry in FACTORY_LOG if isinstance(entry, tuple)]
    assert ("threads.create_run", None) in calls  # no auth configured: no user
    assert ("threads.read", None) in calls  # the state read builds the graph too
    managed_log = [entry for entry in FACTORY_LOG if isinstance(entry, str)]
    assert managed_log == ["set up", "torn down"]


async def test_events_mode_carries_chain_stream_events_as_the_python_server(
    conf: Server,
) -> None:
    """Where the two official servers differ, the Python one is followed: its ``events``
    mode forwards LangChain's ``on_chain_stream`` events (the JS server drops them)."""
    parts = await conf.aio(
        lambda c: collect(
            c.runs.stream(
                None,
                "store_graph",
                input={},
                stream_mode="events",
                config={"configurable": {"user_id": "u"}},
            )
        )
    )
    kinds = {p.data["event"] for p in parts if p.event == "events"}
    assert {"on_chain_start", "on_chain_stream", "on_chain_end"} <= kinds


async def test_get_client_without_a_url_reaches_this_server_from_a_graph(conf: Server) -> None:
    result = await conf.sync(lambda c: c.runs.wait(None, "loopback", input={}))
    assert result["seen"] == "1 system"
