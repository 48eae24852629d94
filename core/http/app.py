"""The app factory and the server entry point.

``create_app(settings)`` builds a Quart-Trio app with its own plugin manager and ``Core``,
registers the API blueprints that ``http.disable_*`` leaves on, and mounts the custom
``http.app`` in front of them (:mod:`triograph.core.http.custom_app`). Its lifespan opens, in
order and for the app's lifetime: the graph bridge (asyncio loop thread), the storage
backend, the run supervisor's nursery (taking over the runs a stopped server left in flight
before anything else can create runs), and the custom app's own lifespan; runs execute once
``triograph_server_startup`` has been heard. ``serve()`` runs it on Hypercorn's Trio worker
and turns SIGINT/SIGTERM into a graceful shutdown: stop taking runs, give runs in flight
``shutdown_grace`` seconds, interrupt and record the rest, then close connections.
"""

from __future__ import annotations

import functools
import gc
import logging
import math
import pathlib
import signal
import socket
from collections.abc import Awaitable, Callable, Generator
from contextlib import AbstractAsyncContextManager, nullcontext
from typing import Any, cast

import trio
from prometheus_client import CollectorRegistry
from quart import Blueprint, Response, request
from quart_trio import QuartTrio
from quart_trio import asgi as quart_trio_asgi
from quart_trio import datastructures as quart_trio_datastructures
from quart_trio.wrappers import request as quart_trio_request
from quart_trio.wrappers.request import TrioBody, TrioRequest
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge, RequestTimeout

from triograph.core.engine.cluster import LocalLink
from triograph.core.engine.emitters import StreamModeRegistry
from triograph.core.engine.event_log import MemoryEventLog
from triograph.core.engine.multitask import MultitaskRegistry
from triograph.core.engine.shared_cluster import SharedLink
from triograph.core.engine.stats import server_stats
from triograph.core.engine.streams import Heartbeats
from triograph.core.engine.supervisor import RunSupervisor
from triograph.core.engine.thread_streams import ThreadStreams
from triograph.core.http import logs
from triograph.core.http.access import AccessLog, ClientDisconnectedError, note_route
from triograph.core.http.admission import LIMIT as ADMITTED
from triograph.core.http.admission import Admission
from triograph.core.http.auth import Authentication
from triograph.core.http.cors import Cors
from triograph.core.http.custom_app import CUSTOM_APP_KEY, CustomApp, load_custom_app
from triograph.core.http.headers import ConfigurableHeaders
from triograph.core.http.loopback import serve_loopback
from triograph.core.http.routes import (
    a2a,
    assistants,
    crons,
    mcp,
    meta,
    metrics,
    protocol,
    runs,
    store,
    threads,
)
from triograph.core.http.server import REQUEST_CHANNEL, RequestChannel
from triograph.core.http.transport import CUT, Transport
from triograph.core.infra import encoding
from triograph.core.infra.auth import Access
from triograph.core.infra.context import Core
from triograph.core.infra.errors import ConfigError, TriographError
from triograph.core.infra.graph_bridge import ASGIApp, GraphBridge
from triograph.core.infra.graphs import GraphRegistry
from triograph.core.infra.plugin_manager import (
    AUTH_ADAPTER,
    Hooks,
    PluginServices,
    configure,
    fill_registry,
    make_plugin_manager,
)
from triograph.core.infra.settings import Settings
from triograph.core.infra.storage import StorageRegistry
from triograph.core.resources.assistants import AssistantService
from triograph.core.resources.crons import CronService
from triograph.core.resources.protocol import ProtocolService
from triograph.core.resources.runs import RunService
from triograph.core.resources.store import StoreService
from triograph.core.resources.threads import ThreadService

log = logging.getLogger("triograph")

#: connections the kernel queues until we accept them (every queued one each time, see
#: :mod:`triograph.core.http.server`). Hypercorn's default of 100 let a burst of clients (a
#: thousand streams opened at once) overflow the queue while the server was busy; the kernel
#: then dropped their handshakes and reset connections it had answered with SYN cookies. The
#: kernel caps this at ``net.core.somaxconn`` (4096 on Linux 5.4 and later).
LISTEN_BACKLOG = 65535
#: requests arrived in the last quarter second and not answered yet (see ``core/infra/intake.py``)
#: above which new connections are accepted but wait to be served: four times those admitted
#: at once (``core/http/admission.py``), enough to keep that many busy
SWAMPED = 4 * ADMITTED
#: ``http.disable_<name>`` (the official names) -> the blueprints it leaves out. ``/ok`` stays.
BLUEPRINTS: tuple[tuple[str, Blueprint], ...] = (
    ("meta", meta.bp),
    ("meta", metrics.bp),
    ("assistants", assistants.bp),
    ("threads", threads.bp),
    ("runs", runs.bp),
    ("runs", crons.bp),  # cron routes live under /runs
    ("runs", protocol.bp),  # the thread-centric protocol drives runs
    ("store", store.bp),
    ("mcp", mcp.bp),
    ("a2a", a2a.bp),
)


def build_core(settings: Settings) -> Core:
    """Plugins, registries and graphs; storage and supervisor come with the lifespan."""
    extra = (*settings.plugins, AUTH_ADAPTER) if settings.auth else settings.plugins
    pm = make_plugin_manager(extra_plugins=extra, disable_plugins=settings.disable_plugins)
    storages, stream_modes, multitask = StorageRegistry(), StreamModeRegistry(), MultitaskRegistry()
    fill_registry(pm, "triograph_register_storage", storages)
    fill_registry(pm, "triograph_register_stream_modes", stream_modes)
    fill_registry(pm, "triograph_register_multitask", multitask)
    storages.for_spec(settings.storage)  # fail before serving if the backend is not here
    bridge = GraphBridge()
    graphs = GraphRegistry(settings)  # first: it applies ``env`` and ``dependencies``
    configure(pm, settings, bridge)
    hooks = Hooks(pm)
    access = Access(hooks)
    access.check()
    if settings.auth and not access.enabled:
        raise ConfigError(
            f"langgraph.json has 'auth', but no plugin authenticates requests (is "
            f"{AUTH_ADAPTER.partition(':')[0]!r} among the disabled plugins?)"
        )
    core = Core(
        settings=settings,
        pm=pm,
        hooks=hooks,
        access=access,
        storages=storages,
        stream_modes=stream_modes,
        multitask=multitask,
        graphs=graphs,
        bridge=bridge,
    )
    core.assistants = AssistantService(core)
    core.assistants.check_system_configs()
    core.threads = ThreadService(core)
    core.runs = RunService(core)
    core.crons = CronService(core)
    core.store = StoreService(core)
    core.thread_streams = ThreadStreams(core)
    core.protocol = ProtocolService(core)
    core.event_log = MemoryEventLog(settings.subscriber_buffer, settings.subscriber_buffer_bytes)
    core.heartbeats = Heartbeats(settings.heartbeat_interval)
    core.supervisor = RunSupervisor(core)
    core.metrics = CollectorRegistry(auto_describe=True)
    return core


#: Quart-Trio 0.13's wrapper of ``send`` turning the socket's ``OSError`` into Quart's
#: ``ClientDisconnectedError`` (0.12, the newest on Python 3.11, has none)
_convert_os_error = getattr(quart_trio_asgi, "_convert_os_error", None)


class _BodyRead(Exception):
    """The request's whole body is in: its messages task ends (see :class:`_HTTPConnection`)."""


class _Handling:
    """What Quart-Trio's handling of a request uses of its nursery, its ``cancel_scope``,
    for a request handled without one (see :class:`_HTTPConnection`)."""

    __slots__ = ("cancel_scope",)

    def __init__(self) -> None:
        self.cancel_scope = trio.CancelScope()


def _bounded(request: Any, most: int | None) -> bool:
    """The request's body has a declared length within the limit ``most`` (or none at all):
    the transport (``core/http/transport.py``) hands each of its parts on as it comes, none
    is cut off or dropped, so once its last part is received, reading it never waits (a
    body cut off at the limit, which is chunked, is read in a task of its own). Quart's
    ``MAX_CONTENT_LENGTH`` is the transport's limit (``limits.max_body_bytes``); a request's
    ``max_content_length`` is None outside the app's context, as here."""
    if "transfer-encoding" in request.headers:
        return False
    length = request.content_length
    return length is None or most is None or length <= most


class _Send:
    """A request's ``send`` as Quart-Trio 0.13 wraps it (``_convert_os_error``: the socket's
    ``OSError`` is Quart's ``ClientDisconnectedError``), which also tells the request's
    :class:`_HTTPConnection` before the response's last message goes (see there)."""

    __slots__ = ("_connection", "_send")

    def __init__(self, connection: _HTTPConnection, send: Any) -> None:
        self._connection = connection
        self._send = send

    async def __call__(self, message: dict[str, Any]) -> None:
        if message["type"] == "http.response.body" and not message.get("more_body", False):
            self._connection.answered()
        if _convert_os_error is None:  # Quart-Trio 0.12 lets the OSError through
            await self._send(message)
            return
        try:
            await self._send(message)
        except OSError:
            raise ClientDisconnectedError() from None


class _HTTPConnection(quart_trio_asgi.TrioASGIHTTPConnection):
    """Quart-Trio's handling of one HTTP request, holding two tasks fewer while it lasts (an
    open stream's whole life): the request is handled in the task that runs the request's
    nursery (Quart-Trio starts a child task for it and leaves that one waiting), and the
    task that reads the incoming messages ends once the body is all in. A body of declared
    length within the limit (:func:`_bounded`) is read with no task at all, before the
    request is handled: without a turn of the scheduler when it came with its head, or
    waiting for its last part (:meth:`_take_body`), and the request is handled in a cancel
    scope instead of a nursery. The client leaving after that is learnt from the connection
    (:class:`~triograph.core.http.server.RequestChannel`), which then calls what Quart-Trio
    does on an ``http.disconnect`` (:meth:`_client_left`: it cancels the handling, as
    before, without starting a task). A Trio task, its context and frames are ~1.3-1.6 KiB
    each (bench/stream_memory.py).

    Hypercorn tells every request that its client left once its exchange is over, the
    response whole: nothing is left to stop then, so once the response's last message is
    on its way (:meth:`answered`), that ``http.disconnect`` does nothing (it did: a task
    and two turns of the scheduler per request)."""

    _answered = False
    _channel: RequestChannel | None = None

    async def __call__(self, receive: Any, send: Any) -> None:
        send = _Send(self, send)
        request = self._create_request_from_scope(send)
        channel = self._channel = cast("RequestChannel | None", self.scope.get(REQUEST_CHANNEL))
        try:
            most = self.app.config["MAX_CONTENT_LENGTH"]
            if channel is not None and _bounded(request, most):
                # the body is taken in here, with no task to start, and the request handled
                # in a cancel scope rather than a nursery (whose exit is one more turn of the
                # scheduler): at once when the body is all in (it came with its head), or
                # once its last part comes (httpx, the SDKs' client, writes them apart)
                handling = _Handling()
                with handling.cancel_scope:
                    if channel.body_in:
                        await self.handle_messages(handling, request, receive)
                    else:
                        await self._take_body(handling, request, receive)
                    await self.handle_request(cast("Any", handling), request, send)
            else:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self.handle_messages, nursery, request, receive)
                    await self.handle_request(nursery, request, send)
        finally:
            if channel is not None:  # the handling is over: nothing to cancel any more
                channel.callback = None

    async def handle_messages(  # type: ignore[override,unused-ignore]
        self, nursery: Any, request: Any, receive: Any
    ) -> None:
        channel = cast("RequestChannel | None", self.scope.get(REQUEST_CHANNEL))
        if channel is None:  # not served by triograph's own connections (tests' ASGI clients)
            await super().handle_messages(nursery, request, receive)
            return
        complete = False

        async def until_complete() -> dict[str, Any]:
            nonlocal complete
            if complete and not channel.pending:  # a disconnect already put is received
                raise _BodyRead  # (no checkpoint until the callback is set: none missed)
            message: dict[str, Any] = await receive()
            if message["type"] == "http.request" and not message.get("more_body", False):
                complete = not message.get(CUT, False)  # a body cut off is still being read
            return message

        try:
            await super().handle_messages(nursery, request, cast("Any", until_complete))
        except _BodyRead:
            if self._answered:
                return
            channel.callback = functools.partial(self._client_left, request, nursery.cancel_scope)

    async def _take_body(self, handling: _Handling, request: Any, receive: Any) -> None:
        """Take in the body's parts as they come, for as long as Quart-Trio's ``get_data``
        waits for them (``BODY_TIMEOUT``): past that, reading the body raises the
        ``RequestTimeout`` (408) that ``get_data`` raises. A response that needs no body
        (a 404) goes once the body is in, not before it."""
        timeout = request.body_timeout
        with trio.move_on_after(math.inf if timeout is None else timeout) as waited:
            await self.handle_messages(handling, request, receive)
        if waited.cancelled_caught:
            request.body._must_raise = RequestTimeout()
            request.body.set_complete()
            channel = cast("RequestChannel", self._channel)
            channel.callback = functools.partial(self._client_left, request, handling.cancel_scope)

    def _client_left(self, request: Any, scope: trio.CancelScope) -> None:
        """What Quart-Trio's ``handle_messages`` does when the client leaves (the connection
        calls it as it learns so), without a task: the request is marked disconnected, its
        body stops taking parts (0.13; 0.12 has no such step), its handling is cancelled."""
        self._disconnected = True
        disconnect = getattr(request.body, "disconnect", None)
        if disconnect is not None:
            disconnect()
        scope.cancel()

    def answered(self) -> None:
        """The response's last message is being sent: the client leaving after this stops
        nothing (Quart-Trio cancels the request's nursery once it is sent anyway)."""
        self._answered = True
        if self._channel is not None:
            self._channel.callback = None


#: Quart-Trio 0.13's queue of a request body's parts (a Trio memory channel), with the
#: exceptions it raises; 0.12 (Python 3.11) keeps the body in a bytearray instead
_TrioQueue = getattr(quart_trio_datastructures, "TrioQueue", None)
_QueueEmpty = getattr(quart_trio_datastructures, "QueueEmpty", None)
_QueueShutDown = getattr(quart_trio_datastructures, "QueueShutDown", None)
#: the completion event's wrapper TrioBody uses (0.13)
_EventWrapper = getattr(quart_trio_request, "EventWrapper", None)


class _BodyQueue:
    """Quart-Trio 0.13's ``TrioQueue`` (an unbounded queue of a request body's parts, shut
    down once the body is complete; a part put after that is refused, a get on an empty
    queue that is shut down raises ``QueueShutDown``) in a list, with a parking lot made
    only if a reader waits: the memory channel it wraps is ~1.4 KiB, held as long as the
    request lasts (an open stream's whole life; bench/stream_memory.py). Like
    :class:`~triograph.core.http.server.RequestChannel`, it yields to the scheduler only to
    wait."""

    __slots__ = ("_closed", "_items", "_readers")

    def __init__(self) -> None:
        self._items: list[bytes] = []
        self._closed = False
        self._readers: trio.lowlevel.ParkingLot | None = None

    async def put(self, value: bytes) -> None:
        await trio.lowlevel.checkpoint_if_cancelled()  # no turn of the scheduler otherwise
        self.put_nowait(value)

    def put_nowait(self, value: bytes) -> None:
        if self._closed:
            raise cast("type[Exception]", _QueueShutDown)
        self._items.append(value)
        if self._readers:
            self._readers.unpark()

    async def get(self) -> bytes:
        await trio.lowlevel.checkpoint_if_cancelled()
        while not self._items:
            if self._closed:
                raise cast("type[Exception]", _QueueShutDown)
            if self._readers is None:
                self._readers = trio.lowlevel.ParkingLot()
            await self._readers.park()
        value = self._items.pop(0)
        if self._items and self._readers:  # another reader may take the next part
            self._readers.unpark()
        return value

    def get_nowait(self) -> bytes:
        if self._items:
            return self._items.pop(0)
        if self._closed:
            raise cast("type[Exception]", _QueueShutDown)
        raise cast("type[Exception]", _QueueEmpty)

    def empty(self) -> bool:
        return not self._items

    def shutdown(self) -> None:
        self._closed = True
        if self._readers:
            self._readers.unpark_all()


def _own_init() -> bool:
    """Whether :class:`_Body` may set up its fields itself: Quart-Trio 0.13, whose
    ``TrioBody`` sets exactly these (with a ``TrioQueue``). Any other version (0.12 keeps a
    bytearray; a later one may add a field) goes through ``TrioBody.__init__``."""
    if _TrioQueue is None or _EventWrapper is None:
        return False
    probe = TrioBody(None, None)
    fields = {"_data", "_complete", "_queue", "_max_content_length", "_must_raise"}
    return set(vars(probe)) == fields and type(getattr(probe, "_queue", None)) is _TrioQueue


class _Body(TrioBody):
    """Quart-Trio's request body, its parts in a :class:`_BodyQueue` (Quart-Trio 0.13),
    read without a turn of the scheduler once it is all in (Quart waits for its completion
    event first, and a Trio event's ``wait`` yields even when it is set)."""

    def __init__(self, expected_content_length: int | None, max_content_length: int | None) -> None:
        if not _OWN_INIT:
            super().__init__(expected_content_length, max_content_length)
            if _TrioQueue is not None and type(getattr(self, "_queue", None)) is _TrioQueue:
                self._queue = cast("Any", _BodyQueue())
            return
        # the fields ``TrioBody.__init__`` sets, with the queue above in place of the
        # ``TrioQueue[bytes]`` it builds (a memory channel, reached through two subscripted
        # generics: ~17 us per request) only for it to be replaced
        self._data = None  # type: ignore[assignment,unused-ignore]  # 0.12 types it bytearray
        self._complete = cast("Any", _EventWrapper)()
        self._queue = cast("Any", _BodyQueue())
        self._max_content_length = max_content_length
        self._must_raise: Exception | None = None
        if (
            expected_content_length is not None
            and max_content_length is not None
            and expected_content_length > max_content_length
        ):
            self._must_raise = RequestEntityTooLarge()

    def __await__(self) -> Generator[Any, None, Any]:
        if not self._complete.is_set():
            return (yield from super().__await__())
        # what Quart's ``__await__`` does once the event is set (0.13: the parts queued,
        # checked against the limit; 0.12: one buffer, checked as it grew)
        if self._must_raise is not None:
            raise self._must_raise
        if _TrioQueue is None:
            return bytes(self._data or b"")
        if self._data is None:
            data = bytearray()
            while not self._queue.empty():
                data.extend(self._queue.get_nowait())
                most = self._max_content_length
                if most is not None and len(data) > most:
                    raise RequestEntityTooLarge()
            self._data = bytes(data)
        return self._data


_OWN_INIT = _own_init()


class _Request(TrioRequest):
    body_class = _Body  # type: ignore[assignment,unused-ignore]

    async def get_data(  # type: ignore[override,unused-ignore]
        self, cache: bool = True, as_text: bool = False, parse_form_data: bool = False
    ) -> str | bytes:
        """Quart-Trio's ``get_data``, without its timeout (a cancel scope, ~50 calls into
        Trio) when the body is all in: reading it then never waits."""
        body = self.body
        if parse_form_data or not body._complete.is_set():
            return await super().get_data(cache, as_text, parse_form_data)
        data: bytes = await body
        if not cache:
            body.clear()
        return data.decode() if as_text else data


class _App(QuartTrio):
    """Quart-Trio, but a start-up refused with a :class:`TriographError` (a storage that
    cannot be opened, say) is not logged with a traceback (the command line says it in one
    line: ``Core.startup_failure``), ``OPTIONS`` answers for the route it matched, and a
    request costs one task less (:class:`_HTTPConnection`)."""

    asgi_http_class = _HTTPConnection
    request_class = _Request

    # Quart 0.23 (Python 3.13) passes the app context first, Quart 0.22 (the newest on 3.11)
    # does not: both overrides take what they are given and pass it on unchanged.
    def log_exception(self, *args: Any) -> None:
        if isinstance(args[-1][1], TriographError):
            return
        super().log_exception(*args)

    async def make_default_options_response(self, *args: Any) -> Response:
        """``Allow`` lists the methods of the route the path matched, not of every route
        whose pattern it fits (``/assistants/search`` also fits ``/assistants/<id>``)."""
        matched = request.url_rule
        methods = {
            method
            for rule in self.url_map.iter_rules()
            if matched is not None and rule.rule == matched.rule
            for method in rule.methods or ()
        }
        return self.response_class("", headers={"Allow": ", ".join(sorted(methods))})


async def _lifetime(
    core: Core,
    stop: trio.Event,
    custom: CustomApp | None,
    api: ASGIApp,
    *,
    services: list[Callable[..., Awaitable[Any]]],
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
        if settings.workers > 1 and storage.cluster is None:
            raise ConfigError(
                f"--workers {settings.workers}: the storage {storage.name!r} is not shared by "
                "processes; use a Postgres one (--storage postgresql://...)"
            )
        if storage.cluster is not None:  # the processes sharing it share the protocol's log
            link = SharedLink(core, storage.cluster)
            core.cluster, core.event_log = link, link.events
        else:
            core.cluster = LocalLink(core)
        core.graphs.attach(storage.checkpointer, storage.store)
        await core.assistants.sync_system_assistants()
        async with trio.open_nursery() as nursery:
            await nursery.start(core.supervisor.serve)
            await core.supervisor.start_service(core.cluster.serve)
            await core.runs.recover()
            await core.supervisor.start_service(core.crons.serve)
            await core.supervisor.start_service(core.threads.sweep_expired)
            await core.supervisor.start_service(core.thread_streams.sweep)
            await core.supervisor.start_service(core.bridge.lazy_pipes.sweep)
            for service in services:  # the routes' own (the MCP transport's task group)
                await core.supervisor.start_service(service)
            await nursery.start(core.heartbeats.serve)  # open streams outlive the runs
            await nursery.start(serve_loopback, core.bridge, api)  # get_client() with no URL
            async with custom_lifespan:
                plugin_services = PluginServices(
                    settings=settings,
                    storage=storage,
                    start=core.supervisor.start_service,
                    metrics=core.metrics,
                    stats=functools.partial(server_stats, core),
                    bridge=core.bridge,
                )
                await core.hooks.fire(
                    "triograph_server_startup", settings=settings, services=plugin_services
                )
                core.supervisor.ready()
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
            nursery.cancel_scope.cancel()  # the heartbeat timer


def create_app(settings: Settings) -> QuartTrio:
    """A Quart-Trio app serving the LangGraph Agent Server API for ``settings``."""
    core = build_core(settings)
    here = str(pathlib.Path(__file__).parent)
    # explicit paths: Flask's package lookup fails under namespace packages and import hooks
    app = _App("triograph.core", root_path=here, instance_path=here, static_folder=None)
    app.config.update(
        TRIOGRAPH_CORE=core,
        TRIOGRAPH_RUN_HEADERS=ConfigurableHeaders.from_settings(settings.http),
        RESPONSE_TIMEOUT=None,
        BODY_TIMEOUT=settings.limits.body_timeout,
        MAX_CONTENT_LENGTH=settings.limits.max_body_bytes,
        PROVIDE_AUTOMATIC_OPTIONS=True,
    )
    app.url_map.strict_slashes = False
    disabled = _disabled(settings.http)
    app.register_blueprint(meta.health)
    for group, bp in BLUEPRINTS:
        if group not in disabled:
            app.register_blueprint(bp)
    services: list[Callable[..., Awaitable[Any]]] = []
    if "mcp" not in disabled:
        app.config[mcp.CONFIG_KEY] = endpoint = mcp.McpEndpoint(core)
        services.append(endpoint.serve)
    if "a2a" not in disabled:
        app.config[a2a.CONFIG_KEY] = a2a.A2AEndpoint(core)
    app.before_request(note_route)
    # under a burst, API requests are answered in arrival order (the custom app is outside)
    app.asgi_app = Admission(cast("ASGIApp", app.asgi_app), core.intake)  # type: ignore[method-assign,assignment]
    api = cast("ASGIApp", app.asgi_app)  # what a custom app and the SDK's loopback reach
    custom = None
    user_app = load_custom_app(settings)
    if user_app is not None:
        app.config[CUSTOM_APP_KEY] = user_app
        custom = CustomApp(user_app, api, app.url_map, core.bridge)
        app.asgi_app = custom  # type: ignore[method-assign,assignment]
    if core.access.enabled:
        app.asgi_app = Authentication(  # type: ignore[method-assign,assignment]
            cast("ASGIApp", app.asgi_app),
            core.access,
            app.url_map,
            app.view_functions,
            custom_app=custom is not None,
            custom_route_auth=Authentication.custom_route_auth(settings.http),
        )
    app.asgi_app = Cors.from_settings(  # type: ignore[method-assign,assignment]
        cast("ASGIApp", app.asgi_app), settings.http
    )
    transport = Transport(
        cast("ASGIApp", app.asgi_app),
        max_body_bytes=settings.limits.max_body_bytes,
        drain_timeout=settings.limits.body_timeout,
    )
    app.asgi_app = transport  # type: ignore[method-assign,assignment]
    app.asgi_app = AccessLog(cast("ASGIApp", transport), core.hooks)  # type: ignore[method-assign,assignment]
    stop = trio.Event()
    done = trio.Event()

    @app.before_serving
    async def startup() -> None:
        async def lifetime(*, task_status: trio.TaskStatus[None]) -> None:
            try:
                await _lifetime(core, stop, custom, api, services=services, task_status=task_status)
            finally:
                done.set()

        try:
            await app.nursery.start(lifetime)
        except TriographError as exc:
            core.startup_failure = exc.message
            raise
        except Exception as exc:
            core.startup_failure = f"start-up failed: {exc!r}"
            raise

    @app.after_serving
    async def shutdown() -> None:
        stop.set()
        await done.wait()

    @app.errorhandler(TriographError)
    async def domain_error(exc: TriographError) -> Response:
        response = _error(exc.message, exc.status_code)
        response.headers.update(getattr(exc, "headers", None) or {})
        return response

    @app.errorhandler(HTTPException)
    async def http_error(exc: HTTPException) -> Response:
        if exc.code == 413:
            detail = f"Request body too large (limit: {settings.limits.max_body_bytes} bytes)"
        elif exc.code in (404, 405):
            detail = exc.name
        else:
            detail = str(exc.description)
        response = _error(detail, exc.code or 500)
        for key, value in exc.get_headers():
            if key.lower() == "allow":
                response.headers["Allow"] = value
        return response

    @app.errorhandler(Exception)
    async def unexpected(exc: Exception) -> Response:
        log.error("unhandled error on %s %s", request.method, request.path, exc_info=exc)
        core.hooks.call("triograph_error", error=exc, where="http")
        return Response("Internal Server Error", status=500, content_type="text/plain")

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


def _listener(host: str, port: int, *, reuse_port: bool) -> socket.socket:
    """A listening socket on ``host:port`` (with ``SO_REUSEPORT`` beside the other workers
    of ``serve --workers``); a port in use or an address not ours is a ConfigError."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        listener.bind((host, port))
        listener.listen(LISTEN_BACKLOG)
    except OSError as exc:
        listener.close()
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return listener


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
    reuse_port: bool = False,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """:func:`serve` for an app built with :func:`create_app` (tests keep a handle on it).
    ``reuse_port``: listen with ``SO_REUSEPORT``, beside the other workers of ``serve
    --workers`` on the same port (the kernel spreads the connections over them)."""
    from hypercorn.config import Config

    from triograph.core.http import server

    core = app_core(app)
    settings = core.settings
    config = Config()
    # bound here, before the lifespan opens anything: a port in use is one ConfigError
    listener = _listener(host, port, reuse_port=reuse_port)
    config.accesslog = None  # triograph.core.http.access logs each request, once
    config.errorlog = logs.hypercorn_logger()
    config.include_server_header = False
    config.graceful_timeout = 2.0
    config.keep_alive_timeout = settings.limits.keep_alive_timeout

    async def trigger() -> None:
        await wait_for_stop()
        log.info("shutting down: runs in flight get %.1f s", settings.shutdown_grace)
        await app_core(app).supervisor.shutdown(settings.shutdown_grace)
        app_core(app).thread_streams.close()  # thread streams never end by themselves
        app_core(app).event_log.close()  # nor do protocol streams

    async def run_hypercorn() -> None:
        # Hypercorn says it serves once the lifespan has ended its start-up, failed or not;
        # only a start-up that worked is reported (a failed one is raised just after)
        async with trio.open_nursery() as nursery:
            urls = await nursery.start(
                functools.partial(
                    server.serve,
                    app,
                    config,
                    listener,
                    shutdown_trigger=trigger,
                    swamped=functools.partial(core.intake.swamped, SWAMPED),
                    intake=core.intake,
                )
            )
            if core.startup_failure is None:
                task_status.started(urls)

    if shutdown_trigger is not None:
        wait_for_stop = shutdown_trigger
        await run_hypercorn()
        return
    # the signals are ours before the server says it serves: a SIGTERM right after is graceful
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:

        async def wait_for_stop() -> None:
            async for _ in signals:
                return

        await run_hypercorn()
