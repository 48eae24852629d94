"""Building the plugin manager, and calling hooks the way the hookspecs promise.

Built-in behaviour is written as plugins (pytest's ``default_plugins``): the modules in
:data:`DEFAULT_PLUGINS` are registered first, then third-party plugins from the
``triograph`` entry-point group (unless ``TRIOGRAPH_LOAD_PLUGINS=0``), then modules named in
the settings (``module`` or ``module:Class``), then :data:`AUTH_ADAPTER` when
``langgraph.json`` has an ``auth`` section. ``settings.disable_plugins`` unregisters by
name, like ``pytest -p no:NAME``. Each app gets its own manager; there is no module-level one.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import os
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import attrs
import pluggy

from triograph.core.infra import hookspecs
from triograph.core.infra.errors import ConfigError, PluginError
from triograph.core.infra.registry import Registry

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from triograph.core.infra.graph_bridge import GraphBridge
    from triograph.core.infra.settings import Settings
    from triograph.core.infra.storage import Storage

log = logging.getLogger("triograph.plugins")

#: built-in plugins: a module, or ``module:Class`` for a plugin that keeps per-app state
#: (a fresh instance is registered in each app's manager, under the module's name)
DEFAULT_PLUGINS: tuple[str, ...] = (
    "triograph.storage.memory",
    "triograph.storage.file",
    "triograph.storage.postgres",
    "triograph.plugins.stream_modes",
    "triograph.plugins.protocol_channels",
    "triograph.plugins.multitask",
    "triograph.plugins.webhooks:WebhookPlugin",
    "triograph.plugins.runlog:RunLog",
    "triograph.plugins.metrics:Metrics",
)
#: the built-in plugin serving ``langgraph.json``'s ``auth`` (a ``langgraph_sdk.Auth``),
#: registered only when that section is there: without it the server has no auth plugin
AUTH_ADAPTER = "triograph.plugins.sdk_auth:SdkAuth"


@attrs.frozen(kw_only=True)
class PluginServices:
    """What ``triograph_server_startup`` hands a plugin, for the app's lifetime."""

    settings: Settings
    #: the open storage backend
    storage: Storage
    #: ``await start(async_fn)``: run ``async_fn(task_status=...)`` in the supervisor's
    #: nursery until it returns or the server shuts down (after the runs' grace period)
    start: Callable[[Callable[..., Awaitable[Any]]], Awaitable[None]]
    #: the registry ``GET /metrics`` exposes: register collectors on it
    metrics: CollectorRegistry
    #: the server's state right now (runs in flight, open streams), see :class:`ServerStats`
    stats: Callable[[], ServerStats]
    #: the graph loop: ``await bridge.call(make)`` runs ``make()``'s awaitable on it
    bridge: GraphBridge


@attrs.frozen(kw_only=True)
class ServerStats:
    """What this process is doing at one moment (``PluginServices.stats()``)."""

    #: runs stored and waiting here: for their thread, their ``after_seconds``, or a slot
    runs_pending: int
    #: runs executing their graph here
    runs_running: int
    #: runs that may execute at once here (``--max-runs``)
    max_runs: int
    #: SSE responses being sent (run streams, join streams, thread streams)
    open_streams: int
    #: live readers of run and thread event streams (SSE, joins and waits)
    subscribers: int


def make_plugin_manager(
    *, extra_plugins: tuple[str, ...] = (), disable_plugins: tuple[str, ...] = ()
) -> pluggy.PluginManager:
    """A fresh manager with the hookspecs, the built-ins, entry points and ``extra_plugins``
    (each ``module``, or ``module:Class`` for a fresh instance per manager)."""
    pm = pluggy.PluginManager("triograph")
    pm.add_hookspecs(hookspecs)
    for spec in DEFAULT_PLUGINS:
        name, _, cls = spec.partition(":")
        module = importlib.import_module(name)
        pm.register(getattr(module, cls)() if cls else module, name=name)
    if os.environ.get("TRIOGRAPH_LOAD_PLUGINS", "1").lower() not in {"0", "false", "no"}:
        pm.load_setuptools_entrypoints("triograph")
    for spec in extra_plugins:
        name, _, cls = spec.partition(":")
        try:
            module = importlib.import_module(name)
        except ImportError as exc:
            raise PluginError(name, f"cannot import plugin module: {exc}") from exc
        if cls:
            if pm.has_plugin(name):  # named twice: once
                continue
            if not hasattr(module, cls):
                raise PluginError(name, f"has no plugin class {cls!r}")
            pm.register(getattr(module, cls)(), name=name)
        elif not pm.is_registered(module):  # installed as an entry point and named too: once
            pm.register(module, name=name)
    for name in disable_plugins:
        pm.set_blocked(name)
    if os.environ.get("TRIOGRAPH_TRACE_HOOKS"):
        pm.add_hookcall_monitoring(
            lambda name, impls, kw: log.info("hook %s -> %s", name, [i.plugin_name for i in impls]),
            lambda outcome, name, impls, kw: None,
        )
    return pm


def fill_registry(pm: pluggy.PluginManager, hook_name: str, registry: Registry[Any]) -> None:
    """Call one registration hook plugin by plugin, so errors can name the plugin."""
    caller = getattr(pm.hook, hook_name)
    for impl in caller.get_hookimpls():
        registry.current_plugin = impl.plugin_name
        try:
            impl.function(registry=registry)
        except PluginError:
            raise
        except Exception as exc:
            raise PluginError(impl.plugin_name, f"{hook_name} failed: {exc!r}") from exc
    registry.current_plugin = "<direct>"


def configure(pm: pluggy.PluginManager, settings: Settings, bridge: GraphBridge) -> None:
    """Call ``triograph_configure`` plugin by plugin: a ``ConfigError`` stops start-up as it
    is, any other error names the plugin."""
    for impl in reversed(pm.hook.triograph_configure.get_hookimpls()):
        args = {"settings": settings, "bridge": bridge}
        try:
            impl.function(**{name: args[name] for name in impl.argnames})
        except (ConfigError, PluginError):
            raise
        except Exception as exc:
            raise PluginError(impl.plugin_name, f"triograph_configure failed: {exc!r}") from exc


class Hooks:
    """Calls hooks the way their family asks: lifecycle hooks with :meth:`fire` (each
    implementation alone, errors logged), awaited decision hooks with :meth:`decide` (the
    first answer) and :meth:`collect` (every answer). Implementations are called in
    pluggy's order (the last registered first, ``tryfirst``/``trylast`` honoured), and what
    an ``async def`` one returns is awaited."""

    def __init__(self, pm: pluggy.PluginManager) -> None:
        self.pm = pm

    def has(self, hook_name: str) -> bool:
        return bool(getattr(self.pm.hook, hook_name).get_hookimpls())

    def plugin_names(self, hook_name: str) -> list[str]:
        return [impl.plugin_name for impl in getattr(self.pm.hook, hook_name).get_hookimpls()]

    async def decide(self, hook_name: str, **kwargs: Any) -> Any:
        """The first answer that is not None (None if there is none). Exceptions propagate:
        a decision that fails is the caller's to turn into an answer."""
        for impl in reversed(getattr(self.pm.hook, hook_name).get_hookimpls()):
            result = impl.function(**{name: kwargs[name] for name in impl.argnames})
            if result is not None and inspect.isawaitable(result):
                result = await result
            if result is not None:
                return result
        return None

    async def collect(self, hook_name: str, **kwargs: Any) -> list[tuple[str, Any]]:
        """``(plugin name, answer)`` of every implementation, in call order. Exceptions
        propagate (the remaining implementations are not called)."""
        answers = []
        for impl in reversed(getattr(self.pm.hook, hook_name).get_hookimpls()):
            result = impl.function(**{name: kwargs[name] for name in impl.argnames})
            if result is not None and inspect.isawaitable(result):
                result = await result
            answers.append((impl.plugin_name, result))
        return answers

    async def fire(self, hook_name: str, **kwargs: Any) -> None:
        caller = getattr(self.pm.hook, hook_name)
        for impl in reversed(caller.get_hookimpls()):
            try:
                args = {name: kwargs[name] for name in impl.argnames}
                result = impl.function(**args)
                if result is not None and inspect.isawaitable(result):
                    await result
            except Exception:
                log.exception("plugin %r raised in %s", impl.plugin_name, hook_name)

    def call(self, hook_name: str, **kwargs: Any) -> None:
        """:meth:`fire` for hooks whose implementations are plain functions (called on hot
        paths, or where the caller cannot await): no ``await``, errors logged."""
        for impl in reversed(getattr(self.pm.hook, hook_name).get_hookimpls()):
            try:
                impl.function(**{name: kwargs[name] for name in impl.argnames})
            except Exception:
                log.exception("plugin %r raised in %s", impl.plugin_name, hook_name)
