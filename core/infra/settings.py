"""Settings: one frozen object built from the command line and ``langgraph.json``.

``langgraph.json`` keys understood here: ``graphs`` (graph id -> ``"./file.py:attr"`` or
``"package.module:attr"``, or ``{"path": ..., "description": ...}``), ``dependencies``
(paths put on ``sys.path``, relative to the file), ``env`` (a dict, or the path of a
``.env`` file), ``store`` (``index`` for semantic search, ``ttl``), ``http`` (``app``: a
custom ASGI app mounted beside the API), ``auth`` (``path`` of a ``langgraph_sdk.Auth``,
checked here, loaded by its plugin) and our own section ``"triograph": {"plugins":
[...], "disable_plugins": [...], "max_attempts": n, "lease": seconds, "limits": {...}}``
(:mod:`triograph.core.infra.limits`). Keys that belong to
other tools are ignored. System assistants take per-graph config defaults from
``LANGGRAPH_CONFIG`` (a JSON object of graph id -> config), as the official server does.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import pathlib
import sys
from typing import Any

import attrs
import orjson

from triograph.core.infra.errors import ConfigError
from triograph.core.infra.limits import Limits, load_limits


@attrs.frozen(kw_only=True)
class GraphSpec:
    graph_id: str
    path: str
    description: str | None = None


@attrs.frozen(kw_only=True)
class Settings:
    """Everything the app needs to know, passed explicitly (never a global)."""

    graphs: tuple[GraphSpec, ...] = ()
    base_dir: pathlib.Path = attrs.field(factory=pathlib.Path.cwd)
    dependencies: tuple[str, ...] = ()
    env: dict[str, str] = attrs.field(factory=dict)
    storage: str = "memory"
    plugins: tuple[str, ...] = ()
    disable_plugins: tuple[str, ...] = ()
    #: runs executing at once in this process; more wait as ``pending`` (their streams are
    #: open already, with their ``metadata`` event and heartbeats). Agents mostly wait on
    #: models and tools, so many fit: each executing run holds its graph's state in memory
    max_runs: int = 1000
    #: seconds runs in flight get at shutdown before they are interrupted
    shutdown_grace: float = 5.0
    #: seconds between SSE heartbeats and between keep-alive newlines of ``/wait``
    heartbeat_interval: float = 5.0
    #: seconds a finished resumable run keeps its event log for ``Last-Event-ID`` replays
    resumable_ttl: float = 600.0
    #: events a live subscriber may fall behind before it is dropped
    subscriber_buffer: int = 4096
    #: bytes of event data a live subscriber may fall behind before it is dropped (a slow
    #: client holds at most this much of the server's memory)
    subscriber_buffer_bytes: int = 1024 * 1024
    #: the ``store`` section of langgraph.json: ``index`` (semantic search), ``ttl``
    store: dict[str, Any] = attrs.field(factory=dict)
    #: the ``http`` section of langgraph.json: ``app`` (a custom ASGI app), ``disable_*``
    http: dict[str, Any] = attrs.field(factory=dict)
    #: the ``auth`` section of langgraph.json (:data:`AUTH_KEYS`); empty: no custom auth
    auth: dict[str, Any] = attrs.field(factory=dict)
    #: per-graph defaults for system assistants: graph id -> config (may hold ``context``),
    #: from the ``LANGGRAPH_CONFIG`` environment variable (a JSON object)
    graph_configs: dict[str, Any] = attrs.field(factory=dict)
    #: the ``webhooks`` section of langgraph.json: ``url`` (the SSRF policy: ``disable_loopback``,
    #: ``disable_private_ips``, ``require_https``, ``allowed_domains``, ``allowed_ports``,
    #: ``max_url_length``), ``headers``, ``env_prefix``, ``allowed_fields``
    webhooks: dict[str, Any] = attrs.field(factory=dict)
    #: seconds between cron scheduler polls
    cron_interval: float = 5.0
    #: times a run may be executed: a run whose server stopped while running it is retried
    #: from its last checkpoint until it has been tried this often, then it fails
    max_attempts: int = 3
    #: on a backend shared by processes (Postgres): seconds without a heartbeat after which
    #: a worker counts as gone and the runs it owned are taken over by the others
    lease: float = 10.0
    #: processes serving together (``triograph serve --workers N``); more than one needs a
    #: backend shared by processes
    workers: int = 1
    #: request and connection limits (``"triograph": {"limits": {...}}``)
    limits: Limits = attrs.field(factory=Limits)


def load_settings(config_path: str | os.PathLike[str], **overrides: Any) -> Settings:
    """Read ``langgraph.json`` and return settings, with command-line ``overrides`` on top."""
    path = pathlib.Path(config_path).resolve()
    try:
        raw = orjson.loads(path.read_bytes())
    except FileNotFoundError:
        raise ConfigError(f"config file {str(path)!r} not found") from None
    except orjson.JSONDecodeError as exc:
        raise ConfigError(f"config file {str(path)!r} is not valid JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {str(path)!r} must hold a JSON object")
    base = path.parent
    graphs = tuple(_graph_spec(gid, value) for gid, value in (raw.get("graphs") or {}).items())
    deps = raw.get("dependencies") or []
    if not isinstance(deps, list) or not all(isinstance(d, str) for d in deps):
        raise ConfigError("'dependencies' must be a list of paths")
    own = raw.get("triograph") or {}
    env = _env(raw.get("env"), base)
    values: dict[str, Any] = {
        "graphs": graphs,
        "base_dir": base,
        "dependencies": tuple(deps),
        "env": env,
        "plugins": tuple(own.get("plugins") or ()),
        "disable_plugins": tuple(own.get("disable_plugins") or ()),
        "store": _section(raw, "store"),
        "http": _section(raw, "http"),
        "webhooks": _section(raw, "webhooks"),
        "auth": _auth(raw.get("auth")),
        "graph_configs": _graph_configs(env),
    }
    if "max_attempts" in own:
        values["max_attempts"] = _max_attempts(own["max_attempts"])
    if "lease" in own:
        values["lease"] = _lease(own["lease"])
    values["limits"] = load_limits(own.get("limits"))
    values.update({k: v for k, v in overrides.items() if v is not None})
    return Settings(**values)


def import_object(spec: Any, base_dir: pathlib.Path, *, what: str) -> Any:
    """The object a config value names: ``./file.py:attr`` (a file, relative to
    ``base_dir``) or ``package.module:attr``. Anything that fails is a ConfigError that
    starts with ``what`` (``graph 'agent'``, ``http.app``, ...)."""
    location, _, attr = spec.rpartition(":") if isinstance(spec, str) else ("", "", "")
    if not location or not attr:
        raise ConfigError(f"{what}: {spec!r} is not './file.py:attr' or 'module:attr'")
    try:
        if is_file_location(location):
            file = (base_dir / location).resolve()
            name = f"triograph_user_{abs(hash((str(file), what)))}"
            module_spec = importlib.util.spec_from_file_location(name, file)
            if module_spec is None or module_spec.loader is None or not file.is_file():
                raise ConfigError(f"{what}: cannot load {str(file)!r}")
            module = importlib.util.module_from_spec(module_spec)
            sys.modules[name] = module
            module_spec.loader.exec_module(module)
        else:
            module = importlib.import_module(location)
    except ConfigError:
        raise
    except Exception as exc:
        raise ConfigError(f"{what}: cannot load {spec!r}: {exc!r}") from exc
    if not hasattr(module, attr):
        raise ConfigError(f"{what}: {location!r} has no {attr!r}")
    return getattr(module, attr)


def is_file_location(location: str) -> bool:
    """``./x.py`` or ``dir/x`` name a file; ``package.module`` names a module."""
    return location.endswith(".py") or "/" in location


def _max_attempts(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"'triograph.max_attempts' must be an integer, 1 or more; got {value!r}")
    return value


def _lease(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise ConfigError(f"'triograph.lease' must be a number of seconds above 0; got {value!r}")
    return float(value)


def _section(raw: dict[str, Any], key: str) -> dict[str, Any]:
    value = raw.get(key) or {}
    if not isinstance(value, dict):
        raise ConfigError(f"'{key}' must be an object")
    return value


#: the keys of the ``auth`` section, and what each must be
AUTH_KEYS: dict[str, str] = {
    "path": "'./file.py:attr' or 'module:attr' naming a langgraph_sdk.Auth",
    "disable_studio_auth": "true or false",
    "allow_langsmith_api_keys": "false (LangSmith API keys need LangSmith)",
    "openapi": "an object with 'securitySchemes' and/or 'security'",
    "cache": "an object: 'cache_keys' (header names), 'ttl_seconds', 'max_size'",
}


def _auth(value: Any) -> dict[str, Any]:
    """The ``auth`` section, checked key by key: nothing is ignored silently."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError("'auth' must be an object with at least 'path'")
    for key in value:
        if key not in AUTH_KEYS:
            raise ConfigError(f"auth.{key}: unknown key; allowed: {', '.join(AUTH_KEYS)}")

    def bad(key: str) -> ConfigError:
        return ConfigError(f"auth.{key}: expected {AUTH_KEYS[key]}, got {value[key]!r}")

    if not isinstance(value.get("path"), str) or ":" not in value["path"]:
        raise ConfigError(f"auth.path: expected {AUTH_KEYS['path']}, got {value.get('path')!r}")
    if not isinstance(value.get("disable_studio_auth", False), bool):
        raise bad("disable_studio_auth")
    if value.get("allow_langsmith_api_keys", False) is not False:
        raise bad("allow_langsmith_api_keys")
    openapi = value.get("openapi", {})
    if not isinstance(openapi, dict) or set(openapi) - {"securitySchemes", "security"}:
        raise bad("openapi")
    cache = value.get("cache") or {}
    if not isinstance(cache, dict) or set(cache) - {"cache_keys", "ttl_seconds", "max_size"}:
        raise bad("cache")
    keys = cache.get("cache_keys", [])
    ttl, size = cache.get("ttl_seconds", 60), cache.get("max_size", 1000)
    if (
        not isinstance(keys, list)
        or not all(isinstance(k, str) for k in keys)
        or isinstance(ttl, bool)
        or not isinstance(ttl, int | float)
        or ttl <= 0
        or isinstance(size, bool)
        or not isinstance(size, int)
        or size < 1
    ):
        raise bad("cache")
    return value


def _graph_configs(env: dict[str, str]) -> dict[str, Any]:
    """``LANGGRAPH_CONFIG``: a JSON object mapping graph ids to assistant config defaults,
    from the environment or else from the config file's ``env`` (which the graphs see as
    the environment: a variable already set wins, as for every ``env`` entry)."""
    text = os.environ.get("LANGGRAPH_CONFIG", env.get("LANGGRAPH_CONFIG"))
    if not text:
        return {}
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise ConfigError(f"LANGGRAPH_CONFIG is not valid JSON: {exc}") from None
    if not isinstance(value, dict) or not all(isinstance(v, dict) for v in value.values()):
        raise ConfigError("LANGGRAPH_CONFIG must be a JSON object of graph id -> object")
    return value


def _graph_spec(graph_id: str, value: Any) -> GraphSpec:
    if isinstance(value, str):
        return GraphSpec(graph_id=graph_id, path=value)
    if isinstance(value, dict) and isinstance(value.get("path"), str):
        return GraphSpec(
            graph_id=graph_id, path=value["path"], description=value.get("description")
        )
    raise ConfigError(f"graph {graph_id!r}: expected 'file.py:attr' or {{'path': ...}}")


def _env(value: Any, base: pathlib.Path) -> dict[str, str]:
    if value is None:
        return {}
    if isinstance(value, dict):
        return {str(k): str(v) for k, v in value.items()}
    if isinstance(value, str):
        from dotenv import dotenv_values

        env_path = base / value
        if not env_path.is_file():
            raise ConfigError(f"env file {str(env_path)!r} not found")
        return {k: v for k, v in dotenv_values(env_path).items() if v is not None}
    raise ConfigError("'env' must be an object or the path of a .env file")
