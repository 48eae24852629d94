"""Every hook is documented (its docstring is the contract), and hooks behave as documented."""

from __future__ import annotations

import inspect
import logging
from typing import Any

import pluggy
import pytest

from triograph.core.engine.emitters import StreamModeRegistry
from triograph.core.infra import hookspecs
from triograph.core.infra.auth import Access, AuthContext, AuthRequest, User, acting_as, all_of
from triograph.core.infra.errors import Forbidden, PluginError
from triograph.core.infra.plugin_manager import (
    DEFAULT_PLUGINS,
    Hooks,
    fill_registry,
    make_plugin_manager,
)

HOOKS = [
    (name, fn)
    for name, fn in vars(hookspecs).items()
    if name.startswith("triograph_") and inspect.isfunction(fn)
]


def test_there_are_hooks_of_every_family() -> None:
    names = {name for name, _ in HOOKS}
    assert {
        "triograph_register_storage",
        "triograph_register_stream_modes",
        "triograph_register_multitask",
        "triograph_run_created",
        "triograph_run_started",
        "triograph_run_finished",
        "triograph_thread_created",
        "triograph_thread_deleted",
        "triograph_server_startup",
        "triograph_server_shutdown",
        "triograph_configure",
        "triograph_authenticate",
        "triograph_authorize",
    } <= names


@pytest.mark.parametrize(("name", "fn"), HOOKS, ids=[n for n, _ in HOOKS])
def test_hook_docstring_covers_contract(name: str, fn: object) -> None:
    doc = inspect.getdoc(fn) or ""
    assert doc, f"{name} has no docstring"
    for param in inspect.signature(fn).parameters:  # type: ignore[arg-type]
        assert f":param {param}:" in doc, f"{name}: parameter {param!r} undocumented"
    assert "Called" in doc, f"{name}: does not say when it is called"
    assert "rais" in doc.lower(), f"{name}: does not say what happens if it raises"


def test_default_plugins_are_registered_by_module_name() -> None:
    pm = make_plugin_manager()
    for spec in DEFAULT_PLUGINS:
        name, _, cls = spec.partition(":")
        plugin = pm.get_plugin(name)
        assert plugin is not None
        if cls:  # a plugin with per-app state: a fresh instance in each manager
            assert type(plugin).__name__ == cls
            assert make_plugin_manager().get_plugin(name) is not plugin


def test_duplicate_registration_names_both_plugins() -> None:
    pm = make_plugin_manager()

    class Dup:
        @hookspecs.hookimpl
        def triograph_register_stream_modes(self, registry: StreamModeRegistry) -> None:
            registry.add("values", object)  # type: ignore[arg-type]

    pm.register(Dup(), name="dup-plugin")
    with pytest.raises(PluginError) as info:
        fill_registry(pm, "triograph_register_stream_modes", StreamModeRegistry())
    assert "dup-plugin" in str(info.value)
    assert "triograph.plugins.stream_modes" in str(info.value)


def test_replace_true_overrides_a_builtin() -> None:
    pm = make_plugin_manager()
    sentinel = object()

    class Override:
        @hookspecs.hookimpl
        def triograph_register_stream_modes(self, registry: StreamModeRegistry) -> None:
            registry.add("values", sentinel, replace=True)  # type: ignore[arg-type]

    pm.register(Override(), name="override")
    registry = StreamModeRegistry()
    fill_registry(pm, "triograph_register_stream_modes", registry)
    assert registry.get("values") is sentinel
    assert registry.owner("values") == "override"


def test_disable_plugins_blocks_a_builtin() -> None:
    pm = make_plugin_manager(disable_plugins=("triograph.plugins.multitask",))
    assert pm.get_plugin("triograph.plugins.multitask") is None


def test_unknown_plugin_module_is_a_plugin_error() -> None:
    with pytest.raises(PluginError, match="no_such_plugin_mod"):
        make_plugin_manager(extra_plugins=("no_such_plugin_mod",))


async def test_lifecycle_hooks_are_isolated_and_async_awaited(
    caplog: pytest.LogCaptureFixture,
) -> None:
    pm = pluggy.PluginManager("triograph")
    pm.add_hookspecs(hookspecs)
    seen: list[str] = []

    class Broken:
        @hookspecs.hookimpl
        def triograph_thread_deleted(self, thread_id: str) -> None:
            raise RuntimeError("broken plugin")

    class Async:
        @hookspecs.hookimpl
        async def triograph_thread_deleted(self, thread_id: str) -> None:
            seen.append(thread_id)

    pm.register(Async(), name="async-one")
    pm.register(Broken(), name="broken-one")
    with caplog.at_level(logging.ERROR):
        await Hooks(pm).fire("triograph_thread_deleted", thread_id="t1")
    assert seen == ["t1"]
    assert "broken-one" in caplog.text


async def test_auth_decisions_await_and_combine() -> None:
    """``triograph_authenticate``: the first user (async or not) wins, a plugin may pass;
    ``triograph_authorize``: every plugin is asked, any False denies, filters all hold."""
    pm = pluggy.PluginManager("triograph")
    pm.add_hookspecs(hookspecs)
    asked: list[str] = []

    class Passes:
        @hookspecs.hookimpl
        def triograph_authenticate(self, request: AuthRequest) -> None:
            asked.append("passes")

    class Knows:
        @hookspecs.hookimpl
        async def triograph_authenticate(self, request: AuthRequest) -> User:
            asked.append("knows")
            return User(request.path.strip("/"))

        @hookspecs.hookimpl
        async def triograph_authorize(self, context: AuthContext, value: dict[str, Any]) -> Any:
            value["seen_by"] = context.user.identity
            return {"owner": context.user.identity}

    class Team:
        @hookspecs.hookimpl
        def triograph_authorize(self, context: AuthContext, value: dict[str, Any]) -> Any:
            return False if value.get("deny") else {"team": "blue"}

    pm.register(Knows(), name="knows")
    pm.register(Team(), name="team")
    pm.register(Passes(), name="passes")  # registered last: asked first
    access = Access(Hooks(pm))

    async def body() -> bytes:
        return b""

    request = AuthRequest(
        scope={}, method="GET", path="/ann", path_params={}, query_params={}, headers={}, body=body
    )
    user = await access.authenticate(request)
    assert (user.identity, asked) == ("ann", ["passes", "knows"])
    value: dict[str, Any] = {}
    assert await access.authorize("threads", "read", value) is None  # nobody acts: no check
    with acting_as(user):
        filters = await access.authorize("threads", "read", value)
        assert filters == {"team": "blue", "owner": "ann"}
        assert value == {"seen_by": "ann"}
        with pytest.raises(Forbidden):
            await access.authorize("threads", "read", {"deny": True})


def test_authorizing_without_authenticating_is_refused() -> None:
    pm = pluggy.PluginManager("triograph")
    pm.add_hookspecs(hookspecs)

    class OnlyAuthorizes:
        @hookspecs.hookimpl
        def triograph_authorize(self, context: AuthContext, value: dict[str, Any]) -> Any:
            return True

    pm.register(OnlyAuthorizes(), name="lonely")
    with pytest.raises(PluginError, match="lonely"):
        Access(Hooks(pm)).check()


def test_filters_combine_as_shallow_as_they_can() -> None:
    assert all_of(None, {}) is None
    assert all_of({"a": 1}, None, {"a": 1}) == {"a": 1}
    assert all_of({"a": 1}, {"b": {"$contains": "x"}}) == {"a": 1, "b": {"$contains": "x"}}
    assert all_of({"a": 1}, {"a": 2}) == {"$and": [{"a": 1}, {"a": 2}]}
