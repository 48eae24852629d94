"""triograph: a self-hosted LangGraph Agent Server on Trio.

The public API: the hook markers, the app factory and server entry point, settings, the
protocols plugins implement, and the error classes.
"""

from triograph.core.engine.emitters import RunInfo, StreamEmitter, StreamModeRegistry
from triograph.core.engine.multitask import Admission, MultitaskRegistry, MultitaskStrategy
from triograph.core.http.app import create_app, serve
from triograph.core.infra.errors import (
    BadRequest,
    ConfigError,
    Conflict,
    InvalidRequest,
    NotAvailable,
    NotFound,
    PluginError,
    TriographError,
)
from triograph.core.infra.hookspecs import hookimpl, hookspec
from triograph.core.infra.settings import Settings, load_settings
from triograph.core.infra.storage import Storage, StorageRegistry

__all__ = [
    "Admission",
    "BadRequest",
    "ConfigError",
    "Conflict",
    "InvalidRequest",
    "MultitaskRegistry",
    "MultitaskStrategy",
    "NotAvailable",
    "NotFound",
    "PluginError",
    "RunInfo",
    "Settings",
    "Storage",
    "StorageRegistry",
    "StreamEmitter",
    "StreamModeRegistry",
    "TriographError",
    "create_app",
    "hookimpl",
    "hookspec",
    "load_settings",
    "serve",
]
