"""Building the plugin manager, and calling hooks the way the hookspecs promise.

Built-in behaviour is written as plugins (pytest's ``default_plugins``): the modules in
:data:`DEFAULT_PLUGINS` are registered first, then third-party plugins from the
``triograph`` entry-point group (unless ``TRIOGRAPH_LOAD_PLUGINS=0``), then modules named in
the settings. ``settings.disable_plugins`` unregisters by name, like ``pytest -p no:NAME``.
Each app gets its own manager; there is no module-level one.
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
from triograph.core.infra.errors import PluginError
from triograph.core.infra.registry import Registry

if TYPE_CHECKING:
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
    "triograph.plugins.multitask",
    "triograph.plugins.webhooks:WebhookPlugin",
)


@attrs.frozen(kw_only=True)
class PluginServices:
    """What ``triograph_server_startup`` hands a plugin, for the app's lifetime."""

    settings: Settings
    #: the open storage backend
    storage: Storage
    #: ``await start(async_fn)``: run ``async_fn(task_status=...)`` in the supervisor's
    #: nursery until it returns or the server shuts down (after the runs' grace period)
    start: Callable[[Callable[..., Awaitable[Any]]], Awaitable[None]]


def make_plugin_manager(
    *, extra_plugins: tuple[str, ...] = (), disable_plugins: tuple[str, ...] = ()
) -> pluggy.PluginManager:
    """A fresh manager with the hookspecs, the built-ins, entry points and ``extra_plugins``."""
    pm = pluggy.PluginManager("triograph")
    pm.add_hookspecs(hookspecs)
    for spec in DEFAULT_PLUGINS:
        name, _, cls = spec.partition(":")
        module = importlib.import_module(name)
        pm.register(getattr(module, cls)() if cls else module, name=name)
    if os.environ.get("TRIOGRAPH_LOAD_PLUGINS", "1").lower() not in {"0", "false", "no"}:
        pm.load_setuptools_entrypoints("triograph")
    for name in extra_plugins:
        try:
            module = importlib.import_module(name)
        except ImportError as exc:
            raise PluginError(name, f"cannot import plugin module: {exc}") from exc
        if not pm.is_registered(module):  # installed as an entry point and named too: once
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


class Hooks:
    """Fires lifecycle hooks: each implementation alone, awaited if async, errors logged."""

    def __init__(self, pm: pluggy.PluginManager) -> None:
        self.pm = pm

    def has(self, hook_name: str) -> bool:
        return bool(getattr(self.pm.hook, hook_name).get_hookimpls())

    async def fire(self, hook_name: str, **kwargs: Any) -> None:
        caller = getattr(self.pm.hook, hook_name)
        for impl in reversed(caller.get_hookimpls()):
            try:
                args = {name: kwargs[name] for name in impl.argnames}
                result = impl.function(**args)
                if inspect.isawaitable(result):
                    await result
            except Exception:
                log.exception("plugin %r raised in %s", impl.plugin_name, hook_name)
