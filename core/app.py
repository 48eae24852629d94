"""The app factory and the server entry point.

``create_app(settings)`` builds a Quart-Trio app with its own plugin manager and ``Core``,
registers the API blueprints that ``http.disable_*`` leaves on, and mounts the custom
``http.app`` in front of them (:class:`CustomApp`). Its lifespan opens, in order and for the
app's lifetime: the graph bridge (asyncio loop thread), the storage backend, the run
supervisor's nursery, and the custom app's own lifespan. ``serve()`` runs it on
Hypercorn's Trio worker and turns SIGINT/SIGTERM into a graceful shutdown: stop taking
runs, give runs in flight ``shutdown_grace`` seconds, interrupt and record the rest, then
close connections.
"""

from __future__ import annotations

import gc
import importlib
import importlib.util
import logging
import pathlib
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager, nullcontext
from typing import Any, cast

import trio
from quart import Blueprint, Response, request
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException, NotFound
from werkzeug.routing import Map, MapAdapter

from triograph.core import encoding
from triograph.core.api import assistants, crons, meta, runs, store, threads
from triograph.core.assistants import AssistantService
from triograph.core.context import Core
from triograph.core.crons import CronService
from triograph.core.emitters import StreamModeRegistry
from triograph.core.errors import ConfigError, TriographError
from triograph.core.graph_bridge import (
    CLEANUP_TIMEOUT,
    ASGIApp,
    GraphBridge,
    Message,
    Receive,
    Send,
)
from triograph.core.graphs import GraphRegistry
from triograph.core.multitask import MultitaskRegistry
from triograph.core.plugin_manager import Hooks, fill_registry, make_plugin_manager
from triograph.core.runs import RunService
from triograph.core.settings import Settings
from triograph.core.storage import StorageRegistry
from triograph.core.store import StoreService
from triograph.core.supervisor import RunSupervisor
from triograph.core.thread_streams import ThreadStreams
from triograph.core.threads import ThreadService

log = logging.getLogger("triograph")

CORS_HEADERS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "DELETE, GET, HEAD, OPTIONS, PATCH, POST, PUT",
    "Access-Control-Allow-Headers": "*",
    "Access-Control-Expose-Headers": "*",
    "Access-Control-Max-Age": "600",
    "Access-Control-Allow-Private-Network": "true",
    "Vary": "Origin",
}
#: ``http.disable_<name>`` (the official names) -> the blueprints it leaves out. ``/ok`` stays.
BLUEPRINTS: tuple[tuple[str, Blueprint], ...] = (
    ("meta", meta.bp),
    ("assistants", assistants.bp),
    ("threads", threads.bp),
    ("runs", runs.bp),
    ("runs", crons.bp),  # cron routes live under /runs
    ("store", store.bp),
)


def build_core(settings: Settings) -> Core:
    """Plugins, registries and graphs; storage and supervisor come with the lifespan."""
    pm = make_plugin_manager(
        extra_plugins=settings.plugins, disable_plugins=settings.disable_plugins
    )
    storages, stream_modes, multitask = StorageRegistry(), StreamModeRegistry(), MultitaskRegistry()
    fill_registry(pm, "triograph_register_storage", storages)
    fill_registry(pm, "triograph_register_stream_modes", stream_modes)
    fill_registry(pm, "triograph_register_multitask", multitask)
    storages.for_spec(settings.storage)  # fail before serving if the backend is not here
    core = Core(
        settings=settings,
        pm=pm,
        hooks=Hooks(pm),
        storages=storages,
        stream_modes=stream_modes,
        multitask=multitask,
        graphs=GraphRegistry(settings),
        bridge=GraphBridge(),
    )
    core.assistants = AssistantService(core)
    core.assistants.check_system_configs()
    core.threads = ThreadService(core)
    core.runs = RunService(core)
    core.crons = CronService(core)
    core.store = StoreService(core)
    core.thread_streams = ThreadStreams(core)
    core.supervisor = RunSupervisor(core)
    return core


async def _lifetime(
    core: Core,
    stop: trio.Event,
    custom: CustomApp | None,
    *,
    task_status: trio.TaskStatus[None],
) -> None:
    settings = core.settings
    custom_lifespan: AbstractAsyncContextManager[None] = (
        custom.lifespan() if custom is not None else nullcontext()
    )
    async with (
        core.bridge.open(),
        core.storages.for_spec(settings.storage)(settings.storage, settings) as storage,
    ):
        core.storage = storage
        core.graphs.attach(storage.checkpointer, storage.store)
        await core.assistants.sync_system_assistants()
        async with trio.open_nursery() as nursery:
            await nursery.start(core.supervisor.serve)
            await core.supervisor.start_service(core.crons.serve)
            await core.supervisor.start_service(core.threads.sweep_expired)
            await core.supervisor.start_service(core.thread_streams.sweep)
            async with custom_lifespan:
                await core.hooks.fire("triograph_server_startup", settings=settings)
                # Everything loaded so far (graphs, libraries) lives as long as the server:
                # move it out of the collector's reach, and collect the young generation less
                # often. The bench measured gen-2 pauses of ~90 ms under load before this.
                gc.collect()
                gc.freeze()
                gc.set_threshold(10_000, 20, 20)
                task_status.started()
                await stop.wait()
                with trio.CancelScope(shield=True):
                    await core.supervisor.shutdown(settings.shutdown_grace)
                    await core.hooks.fire("triograph_server_shutdown", settings=settings)


def create_app(settings: Settings) -> QuartTrio:
    """A Quart-Trio app serving the LangGraph Agent Server API for ``settings``."""
    core = build_core(settings)
    here = str(pathlib.Path(__file__).parent)
    # explicit paths: Flask's package lookup fails under namespace packages and import hooks
    app = QuartTrio("triograph.core", root_path=here, instance_path=here, static_folder=None)
    app.config.update(
        TRIOGRAPH_CORE=core,
        RESPONSE_TIMEOUT=None,
        BODY_TIMEOUT=None,
        MAX_CONTENT_LENGTH=300 * 1024 * 1024,
        PROVIDE_AUTOMATIC_OPTIONS=True,
    )
    app.url_map.strict_slashes = False
    disabled = _disabled(settings.http)
    app.register_blueprint(meta.health)
    for group, bp in BLUEPRINTS:
        if group not in disabled:
            app.register_blueprint(bp)
    custom = None
    user_app = load_custom_app(settings)
    if user_app is not None:
        custom = CustomApp(user_app, cast("ASGIApp", app.asgi_app), app.url_map, core.bridge)
        app.asgi_app = custom  # type: ignore[method-assign,assignment]
    stop = trio.Event()
    done = trio.Event()

    @app.before_serving
    async def startup() -> None:
        async def lifetime(*, task_status: trio.TaskStatus[None]) -> None:
            try:
                await _lifetime(core, stop, custom, task_status=task_status)
            finally:
                done.set()

        await app.nursery.start(lifetime)

    @app.after_serving
    async def shutdown() -> None:
        stop.set()
        await done.wait()

    @app.errorhandler(TriographError)
    async def domain_error(exc: TriographError) -> Response:
        return _error(exc.message, exc.status_code)

    @app.errorhandler(HTTPException)
    async def http_error(exc: HTTPException) -> Response:
        response = _error(
            exc.name if exc.code in (404, 405) else str(exc.description), exc.code or 500
        )
        for key, value in exc.get_headers():
            if key.lower() == "allow":
                response.headers["Allow"] = value
        return response

    @app.errorhandler(Exception)
    async def unexpected(exc: Exception) -> Response:
        log.error("unhandled error on %s %s", request.method, request.path, exc_info=exc)
        return Response("Internal Server Error", status=500, content_type="text/plain")

    @app.after_request
    async def cors(response: Response) -> Response:
        if "origin" in request.headers:  # only browsers need them
            response.headers.update(CORS_HEADERS)
        return response

    return app


def _error(message: str, status: int) -> Response:
    return Response(
        encoding.dumps({"detail": message}), status=status, content_type="application/json"
    )


def _disabled(http: dict[str, Any]) -> set[str]:
    """The groups ``http.disable_<group>`` turns off; a non-boolean flag is a ConfigError."""
    out = set()
    for group in {group for group, _ in BLUEPRINTS}:
        value = http.get(f"disable_{group}", False)
        if not isinstance(value, bool):
            raise ConfigError(f"http.disable_{group} must be true or false, got {value!r}")
        if value:
            out.add(group)
    return out


def load_custom_app(settings: Settings) -> ASGIApp | None:
    """The ASGI app ``http.app`` names: ``./file.py:attr`` (relative to the config file's
    directory) or ``package.module:attr``; None without one. Anything else is a ConfigError."""
    spec = settings.http.get("app")
    if spec is None:
        return None
    location, _, attr = spec.rpartition(":") if isinstance(spec, str) else ("", "", "")
    if not location or not attr:
        raise ConfigError(f"http.app: {spec!r} is not './file.py:attr' or 'module:attr'")
    try:
        if location.endswith(".py") or "/" in location:
            file = (settings.base_dir / location).resolve()
            name = f"triograph_http_app_{abs(hash(str(file)))}"
            module_spec = importlib.util.spec_from_file_location(name, file)
            if module_spec is None or module_spec.loader is None:
                raise ConfigError(f"http.app: cannot load {str(file)!r}")
            module = importlib.util.module_from_spec(module_spec)
            sys.modules[name] = module
            module_spec.loader.exec_module(module)
        else:
            module = importlib.import_module(location)
        obj = getattr(module, attr)
    except ConfigError:
        raise
    except Exception as exc:
        raise ConfigError(f"http.app: cannot load {spec!r}: {exc!r}") from exc
    if not callable(obj):
        raise ConfigError(f"http.app: {spec!r} is a {type(obj).__name__}, not an ASGI app")
    return obj  # type: ignore[no-any-return]


class _Exchange:
    """``receive``/``send`` between the client and the custom app, for one request.

    A probed exchange keeps the messages the custom app receives until it answers: if the
    answer is a 404, that response is swallowed (``fell_through``) and :meth:`replay` hands
    the kept messages to the API before the client's next ones; any other answer drops them.
    """

    def __init__(self, receive: Receive, send: Send, *, probe: bool) -> None:
        self._receive, self._send = receive, send
        self.kept: list[Message] | None = [] if probe else None
        self.started = False
        self.fell_through = False

    async def receive(self) -> Message:
        message = await self._receive()
        if self.kept is not None:
            self.kept.append(message)
        return message

    async def send(self, message: Message) -> None:
        if self.fell_through:
            return  # the rest of the custom app's 404
        if not self.started and message["type"] == "http.response.start":
            if self.kept is not None and message["status"] == 404:
                self.fell_through = True
                return
            self.kept = None
        self.started = True
        await self._send(message)

    async def replay(self) -> Message:
        if self.kept:
            return self.kept.pop(0)
        return await self._receive()


class CustomApp:
    """The custom ``http.app``, mounted in front of the API (contract §12).

    Its routes take precedence, as on the official server: a request goes to it first and
    falls through to the API only when it answers 404. Only requests whose path the API
    also serves are probed like that; for any other path the custom app's answer (its own
    404 included) is final and nothing is buffered. A probed request's body is kept only
    as far as the custom app read it, and only until it answers.

    The custom app is asyncio code, so it runs on the graph loop (:meth:`GraphBridge.asgi`).
    Its lifespan runs inside ours (:meth:`lifespan`), and requests see the lifespan's
    ``state``. An exception it raises is logged; the client gets a 500 unless a response
    had started, and the server goes on.
    """

    def __init__(self, app: ASGIApp, api: ASGIApp, url_map: Map, bridge: GraphBridge) -> None:
        self.app, self.api, self.bridge = app, api, bridge
        self._url_map = url_map
        self._routes: MapAdapter | None = None
        self._state: dict[str, Any] = {}

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":  # ours; the custom app's runs inside it
            await self.api(scope, receive, send)
            return
        probe = scope["type"] == "http" and self._api_serves(scope)
        exchange = _Exchange(receive, send, probe=probe)
        await self._run({**scope, "state": dict(self._state)}, exchange)
        if exchange.fell_through:
            await self.api(scope, exchange.replay, send)

    def _api_serves(self, scope: dict[str, Any]) -> bool:
        if self._routes is None:
            self._routes = self._url_map.bind("localhost")
        try:
            self._routes.match(scope["path"], method=scope["method"])
        except NotFound:
            return False
        except HTTPException:  # a wrong method or a redirect: the path is the API's
            return True
        return True

    async def _run(self, scope: dict[str, Any], exchange: _Exchange) -> None:
        try:
            await self.bridge.asgi(self.app, scope, exchange.receive, exchange.send)
        except Exception as exc:
            log.error(
                "custom app failed on %s %s", scope.get("method"), scope["path"], exc_info=exc
            )
            if scope["type"] == "http" and not exchange.started:
                await exchange.send(
                    {
                        "type": "http.response.start",
                        "status": 500,
                        "headers": [(b"content-type", b"text/plain")],
                    }
                )
                await exchange.send(
                    {"type": "http.response.body", "body": b"Internal Server Error"}
                )

    @asynccontextmanager
    async def lifespan(self) -> AsyncIterator[None]:
        """The custom app's lifespan: its startup completes before we serve, its shutdown
        runs after ours (bounded by ``CLEANUP_TIMEOUT``). An app that raises before
        completing startup has no lifespan support and is served without; one that reports
        ``lifespan.startup.failed`` stops the server from starting (ConfigError)."""
        started, stopping, stopped = trio.Event(), trio.Event(), trio.Event()
        asked = False
        failure: list[str] = []
        scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": self._state}

        async def receive() -> Message:
            nonlocal asked
            if not asked:
                asked = True
                return {"type": "lifespan.startup"}
            await stopping.wait()
            return {"type": "lifespan.shutdown"}

        async def send(message: Message) -> None:
            if message["type"] == "lifespan.startup.failed":
                failure.append(message.get("message", ""))
            if message["type"].startswith("lifespan.startup."):
                started.set()

        async def run() -> None:
            try:
                await self.bridge.asgi(self.app, scope, receive, send)
            except Exception as exc:
                if started.is_set():
                    log.error("custom app lifespan failed", exc_info=exc)
                else:
                    log.info("custom app has no lifespan support (%r)", exc)
            finally:
                started.set()
                stopped.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(run)
            await started.wait()
            if failure:
                nursery.cancel_scope.cancel()
            else:
                try:
                    yield
                finally:
                    stopping.set()
                    with trio.CancelScope(shield=True), trio.move_on_after(CLEANUP_TIMEOUT):
                        await stopped.wait()
                    nursery.cancel_scope.cancel()
        if failure:
            raise ConfigError(f"the custom http.app failed to start: {failure[0]}")


def app_core(app: QuartTrio) -> Core:
    return app.config["TRIOGRAPH_CORE"]  # type: ignore[no-any-return]


async def serve(
    settings: Settings,
    *,
    host: str = "127.0.0.1",
    port: int = 2024,
    shutdown_trigger: Callable[[], Awaitable[Any]] | None = None,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``settings`` on Hypercorn's Trio worker until SIGINT/SIGTERM (or the trigger).

    ``task_status`` reports the bound URLs (so ``port=0`` works with ``nursery.start``).
    """
    await serve_app(
        create_app(settings),
        host=host,
        port=port,
        shutdown_trigger=shutdown_trigger,
        task_status=task_status,
    )


async def serve_app(
    app: QuartTrio,
    *,
    host: str = "127.0.0.1",
    port: int = 2024,
    shutdown_trigger: Callable[[], Awaitable[Any]] | None = None,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """:func:`serve` for an app built with :func:`create_app` (tests keep a handle on it)."""
    from hypercorn.config import Config
    from hypercorn.trio import serve as hypercorn_serve

    settings = app_core(app).settings
    config = Config()
    config.bind = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
    config.accesslog = None
    config.include_server_header = False
    config.graceful_timeout = 2.0
    config.keep_alive_timeout = 75.0

    async def on_signal() -> None:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for _ in signals:
                break

    async def trigger() -> None:
        await (shutdown_trigger or on_signal)()
        log.info("shutting down: runs in flight get %.1f s", settings.shutdown_grace)
        await app_core(app).supervisor.shutdown(settings.shutdown_grace)
        app_core(app).thread_streams.close()  # thread streams never end by themselves

    await hypercorn_serve(app, config, shutdown_trigger=trigger, task_status=task_status)
