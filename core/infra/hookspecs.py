"""The hook specifications of triograph, and the marker pair plugins use.

Three families, all named ``triograph_*``:

* registration hooks (plain functions, called once at start-up, in plugin registration
  order, built-ins first): fill a typed registry with wire names;
* lifecycle hooks (plain or ``async def``; the caller awaits what an implementation
  returns): react to runs, threads and the server. Each implementation is called on its
  own, so one that raises is logged with its plugin name and the others still run; a
  lifecycle hook never fails a run or a request;
* configuration (``triograph_configure``): plain, once per app before it serves;
* decision hooks: the server asks them and acts on the answer. Those pluggy calls itself
  (``firstresult``) must be plain functions: an ``async def`` would return a coroutine,
  which is never None and would always win. The auth hooks are called by the server's own
  loop instead (``Hooks.decide``, ``Hooks.collect``), which awaits each answer, so they may
  be ``async def``; they are the one kind of hook whose exceptions reach the client.

Write a plugin as a module or object with functions decorated ``@hookimpl`` and enable it
through the ``triograph`` entry-point group or by module name (``--plugin``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from triograph.core.engine.emitters import StreamModeRegistry
    from triograph.core.engine.multitask import MultitaskRegistry
    from triograph.core.infra.auth import AuthContext, AuthRequest
    from triograph.core.infra.graph_bridge import GraphBridge
    from triograph.core.infra.models import Run, Thread
    from triograph.core.infra.plugin_manager import PluginServices
    from triograph.core.infra.settings import Settings
    from triograph.core.infra.storage import StorageRegistry

hookspec = pluggy.HookspecMarker("triograph")
hookimpl = pluggy.HookimplMarker("triograph")


# -- registration -----------------------------------------------------------------------------


@hookspec
def triograph_register_storage(registry: StorageRegistry) -> None:
    """Register storage backends.

    :param registry: call ``registry.add(name, factory)``; ``factory(spec, settings)`` gets
        the ``--storage`` value and the settings (``store`` section for the store's index and
        TTL) and returns an async context manager yielding a ``Storage``.

    Called once per app, at start-up, before the lifespan opens the chosen backend; from the
    thread that builds the app. Must be a plain function. If it raises, the app does not
    start and the error names the plugin.
    """


@hookspec
def triograph_register_stream_modes(registry: StreamModeRegistry) -> None:
    """Register stream modes.

    :param registry: call ``registry.add(wire_name, factory)``; ``factory(run_info)``
        returns a ``StreamEmitter`` for one run. The wire name becomes a valid
        ``stream_mode`` value on every run endpoint.

    Called once per app at start-up; plain function; raising stops start-up.
    """


@hookspec
def triograph_register_multitask(registry: MultitaskRegistry) -> None:
    """Register multitask strategies.

    :param registry: call ``registry.add(wire_name, strategy)``; the wire name becomes a
        valid ``multitask_strategy`` value.

    Called once per app at start-up; plain function; raising stops start-up.
    """


# -- configuration ----------------------------------------------------------------------------


@hookspec
def triograph_configure(settings: Settings, bridge: GraphBridge) -> None:
    """Read this plugin's configuration, before the app serves.

    :param settings: the frozen settings the app is built with (``langgraph.json`` sections
        such as ``auth`` included).
    :param bridge: the graph loop's bridge: ``await bridge.call(coro_fn)`` runs asyncio code
        (a library written for asyncio) from the Trio hooks this plugin implements. It is
        open from the first request to shutdown, not yet during this call.

    Called once per app, in ``create_app`` (so by ``triograph serve`` before it binds),
    after every plugin is registered. Must be a plain function. Raising ``ConfigError``
    stops start-up with its message (exit status 2); any other exception does too, naming
    the plugin.
    """


# -- decisions: authentication and authorization ----------------------------------------------


@hookspec(firstresult=True)
def triograph_authenticate(request: AuthRequest) -> Any:
    """Who makes this request: return a ``triograph.core.User``, or None to leave it to the
    other plugins.

    :param request: the request (method, path, path parameters, query, headers,
        ``authorization``, ``await request.body()``, the ASGI scope).

    Authentication is on as soon as one plugin implements this hook, and then every request
    must pass it except ``/ok``, ``/``, ``/docs``, ``/openapi.json`` and CORS preflights
    (and the custom ``http.app``'s own routes unless ``http.enable_custom_route_auth``).
    Called in the request's Trio task, before the request reaches the API; may be
    ``async def`` (awaited; do blocking work in ``trio.to_thread``, asyncio work through the
    bridge of ``triograph_configure``). Stops at the first non-None result. When every
    plugin returns None the request is refused with 401. Raising ``AccessDenied`` (or
    ``Forbidden``) refuses it with that error's status, message and headers; raising
    anything else is logged and answered with a plain 401 that does not carry its message.
    The user is then current for the whole request (``current_user()``): runs it creates
    carry it in ``config.configurable`` (``langgraph_auth_user``...).
    """


@hookspec
def triograph_authorize(context: AuthContext, value: dict[str, Any]) -> Any:
    """May ``context.user`` do ``context.action`` on ``context.resource``?

    :param context: the user, the resource (``assistants``, ``threads``, ``crons``,
        ``store``; runs are authorized as ``threads``: ``create_run`` to create one,
        ``read`` / ``update`` / ``delete`` to read, cancel or delete one) and the action.
    :param value: what the request asks for, as ``langgraph_sdk.Auth.types`` describes it
        for that action (``{"thread_id", "metadata", ...}``). The implementation may edit
        it in place, and the edit is applied: stamp ``value["metadata"]["owner"]`` on a
        create, rewrite a store ``namespace``.

    Called in the request's Trio task (or the cron scheduler's, as the cron's creator)
    before the resource is read or written, only while a user is current. May be
    ``async def``. Every implementation is asked: ``True`` or None allows, ``False``
    refuses (403), and a dict is a filter on the resource's metadata (see
    ``triograph.core.infra.auth``) that every plugin's filter must also pass: a resource
    it excludes does not exist for this request (404; searches and counts skip it). Raising
    ``AccessDenied`` or ``Forbidden`` answers with its status; any other exception is a
    500, logged.
    """


# -- lifecycle --------------------------------------------------------------------------------


@hookspec
def triograph_server_startup(settings: Settings, services: PluginServices) -> Any:
    """The server has opened its storage and is about to accept requests.

    :param settings: the frozen settings the app was built with.
    :param services: the open storage, and ``await services.start(async_fn)`` to run a
        background task (``async_fn(task_status=...)``) in the supervisor's nursery for the
        app's lifetime; it is cancelled at shutdown, after runs had their grace period.

    Called once, in the lifespan task. May be ``async def``. If it raises, the error is
    logged with the plugin name and start-up continues.
    """


@hookspec
def triograph_server_shutdown(settings: Settings) -> Any:
    """The server stopped accepting runs; runs in flight have been given their grace period.

    :param settings: the frozen settings the app was built with.

    Called once, in the lifespan task, before storage closes. May be ``async def``
    (awaited, shielded). If it raises, the error is logged and shutdown continues.
    """


@hookspec
def triograph_thread_created(thread: Thread) -> Any:
    """A thread was stored (``POST /threads`` or implicitly by a run).

    :param thread: the stored thread (a copy; changing it changes nothing).

    Called in the request's task after the write. May be ``async def``. Raising is logged.
    """


@hookspec
def triograph_thread_deleted(thread_id: str) -> Any:
    """A thread and its runs were deleted (by the API, or after a stateless run).

    :param thread_id: the id of the deleted thread.

    Called in the deleting task after the delete. May be ``async def``. Raising is logged.
    """


@hookspec
def triograph_run_created(run: Run) -> Any:
    """A run was stored as ``pending``; its task exists but has not started executing.

    :param run: the stored run (a copy).

    Called in the run's own task in the supervisor nursery, before the HTTP response is
    sent. Called again for each run a restarted server takes over from a process that died
    (``run.attempt`` then counts the tries). May be ``async def``. Raising is logged; the
    run goes on.
    """


@hookspec
def triograph_run_started(run: Run) -> Any:
    """A run became ``running``: its turn on the thread came and its delay has passed.

    :param run: the run, status ``running``.

    Called in the run's task. May be ``async def``; the graph starts after it returns.
    Raising is logged; the run goes on.
    """


@hookspec
def triograph_run_event(run: Run, event: str, data: Any) -> Any:
    """One SSE event was published by a run (including ``metadata`` and ``error``).

    :param run: the run (status ``running``).
    :param event: the event name as on the wire (``values``, ``updates|child:<id>``).
    :param data: the event payload before JSON encoding; do not mutate it.

    Called in the run's task for every event, so keep it cheap. May be ``async def``.
    Raising is logged; the run goes on.
    """


@hookspec
def triograph_run_finished(run: Run, outcome: str, error: dict[str, str] | None) -> Any:
    """A run reached a terminal state, or was rolled back (and deleted).

    :param run: the run with its final status already stored; a rolled-back run arrives
        with status ``interrupted`` and is no longer stored (nor are its checkpoints); a
        stateless run with ``on_completion="delete"`` arrives with its final status and is
        no longer stored either, nor its thread: the one write that ends it deletes both.
    :param outcome: ``success``, ``error``, ``interrupted``, ``timeout`` or ``rolled_back``.
    :param error: ``{"error": class, "message": text}`` for a failed or cancelled run.

    Called in the run's task under a shielded, time-limited scope after the final writes
    (before ``triograph_thread_deleted`` for a stateless run's thread). May be
    ``async def``. Raising is logged; nothing is undone.
    """


@hookspec
def triograph_http_request(
    method: str, route: str | None, status: int, seconds: float, disconnected: bool
) -> None:
    """An HTTP request was answered (or its client went away first).

    :param method: the request method (``GET``, ``POST``, ...).
    :param route: the route template that served it, as ``/openapi.json`` spells it
        (``/threads/{thread_id}/runs``), or None when no route of the API matched (a 404,
        or a path the custom ``http.app`` served): never the raw path, so a metric label
        built from it stays low-cardinality.
    :param status: the status sent, or 0 when the client left before any was sent.
    :param seconds: from the request's arrival to the end of its response body.
    :param disconnected: the client left before the response was complete.

    Called once per request, after the last byte, from the request's own task. Called on
    every request, so keep it cheap; must be a plain function (an ``async def`` would not
    be awaited). If it raises, the error is logged with the plugin name and the request is
    unaffected.
    """


@hookspec
def triograph_error(error: Exception, where: str) -> None:
    """An unexpected error was logged: a request that failed with a 500, or a run whose
    outcome could not be recorded.

    :param error: the exception, with its traceback.
    :param where: ``http`` (a request) or ``run`` (recording a run's outcome).

    Called from the failing task, right after the error is logged; a plain function. If it
    raises, that is logged too and nothing else happens.
    """
