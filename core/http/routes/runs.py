"""Runs routes (contract §5, §6): create / stream / wait, stateful and stateless; batch;
list, get, delete; cancel and bulk cancel; join and join stream; the thread stream."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Annotated, Any

from quart import Blueprint, Response, current_app, request

from triograph.core.engine.streams import parse_event_id
from triograph.core.engine.thread_streams import mode_filter, parse_last_event_id
from triograph.core.http.access import note_run
from triograph.core.http.headers import ConfigurableHeaders
from triograph.core.http.openapi import ANY_JSON, SSE, request_body, responds
from triograph.core.http.wire import (
    SSE_HEADERS,
    body_as,
    body_json,
    core,
    empty,
    json_response,
    qbool,
    qint,
    qlist,
    qstr,
    request_id,
    run_headers,
    sse_response,
    waiting_json_response,
    with_absolute_webhook,
)
from triograph.core.infra.errors import InvalidRequest
from triograph.core.infra.models import (
    MAX_OFFSET,
    RUN_STATUSES,
    CancelMany,
    Run,
    RunCreate,
    selected,
    structure,
    to_wire,
)
from triograph.core.resources.runs import RUN_FIELDS

if TYPE_CHECKING:
    from triograph.core.engine.handles import RunHandle
    from triograph.core.infra.models import CancelAction, Run

bp = Blueprint("runs", __name__)

DISCONNECT_REASON = "client disconnected from the run stream (on_disconnect=cancel)"


def run_headers_of() -> dict[str, str]:
    """The request headers ``http.configurable_headers`` copies into a run's configurable."""
    chosen: ConfigurableHeaders = current_app.config["TRIOGRAPH_RUN_HEADERS"]
    return chosen.select(list(request.headers.items()))


def _canceller(handle: RunHandle, enabled: bool) -> Any:
    if not enabled:
        return None
    return lambda: handle.cancel("interrupt", DISCONNECT_REASON)


async def _create(
    thread_id: str | None, *, background: bool = False
) -> tuple[RunCreate, Run, RunHandle]:
    """Create a run from the request body; a ``background`` one stays joinable from memory
    for a while after it finished (nobody was streaming or waiting for it)."""
    body = with_absolute_webhook(await body_as(RunCreate))
    run, handle = await core().runs.create(
        thread_id,
        body,
        request_id=request_id(),
        retain=background,
        background=background,
        headers=run_headers_of(),
    )
    note_run(run.run_id)
    return body, run, handle


def _stream_response(body: RunCreate, handle: RunHandle, *, stateless: bool) -> Response:
    sub = handle.stream.subscribe(after=-1)
    if stateless:
        headers = {
            "Location": f"/runs/{handle.run.run_id}/stream",
            "Content-Location": f"/runs/{handle.run.run_id}",
        }
    else:
        headers = run_headers(handle.run, suffix="/stream")
    return sse_response(
        sub,
        with_id=True,  # on every run stream, as the JS server sends them (resumable or not)
        heartbeats=core().heartbeats,
        headers={**SSE_HEADERS, **headers},
        on_disconnect=_canceller(handle, body.on_disconnect == "cancel"),
    )


async def _wait_response(handle: RunHandle, *, cancel_on_disconnect: bool) -> Response:
    run, c = handle.run, core()  # the body runs outside the app context: capture now
    handle.stream.claim()

    async def produce() -> bytes:
        return await c.runs.result(run, handle)

    return await waiting_json_response(
        handle.done,
        produce,
        heartbeat=c.settings.heartbeat_interval,
        headers=run_headers(handle.run, suffix="/join"),
        on_disconnect=_canceller(handle, cancel_on_disconnect),
    )


# -- stateful ---------------------------------------------------------------------------------


@bp.post("/threads/<thread_id>/runs")
@responds(Run)
async def create_run(thread_id: str) -> Response:
    _, run, handle = await _create(thread_id, background=True)
    return json_response(
        to_wire(run),
        headers={"Content-Location": run_headers(handle.run, suffix="")["Content-Location"]},
    )


@bp.post("/threads/<thread_id>/runs/stream")
@responds(SSE)
async def stream_run(thread_id: str) -> Response:
    body, _, handle = await _create(thread_id)
    return _stream_response(body, handle, stateless=False)


@bp.post("/threads/<thread_id>/runs/wait")
@responds(ANY_JSON)
async def wait_run(thread_id: str) -> Response:
    body, _, handle = await _create(thread_id)
    return await _wait_response(handle, cancel_on_disconnect=body.on_disconnect == "cancel")


@bp.get("/threads/<thread_id>/runs")
@responds(list[Run])
async def list_runs(thread_id: str) -> Response:
    select = qlist("select", allowed=RUN_FIELDS)
    runs = await core().runs.for_thread(
        thread_id,
        limit=qint("limit", 10, least=1, most=1000),
        offset=qint("offset", 0, least=0, most=MAX_OFFSET),
        status=qstr("status", allowed=RUN_STATUSES),
    )
    return json_response(selected([to_wire(r) for r in runs], select))


@bp.get("/threads/<thread_id>/runs/<run_id>")
@responds(Run)
async def get_run(thread_id: str, run_id: str) -> Response:
    return json_response(to_wire(await core().runs.get(thread_id, run_id)))


@bp.delete("/threads/<thread_id>/runs/<run_id>")
@responds(204)
async def delete_run(thread_id: str, run_id: str) -> Response:
    await core().runs.delete(thread_id, run_id)
    return empty(204)


def _action() -> CancelAction:
    action = qstr("action", "interrupt", allowed=("interrupt", "rollback"))
    return "rollback" if action == "rollback" else "interrupt"


@bp.post("/threads/<thread_id>/runs/<run_id>/cancel")
@responds(202, ANY_JSON)
async def cancel_run(thread_id: str, run_id: str) -> Response:
    handle = await core().runs.cancel(thread_id, run_id, _action())
    if not qbool("wait"):
        return empty(202)
    return await _wait_response(handle, cancel_on_disconnect=False)


@bp.get("/threads/<thread_id>/runs/<run_id>/join")
@responds(ANY_JSON)
async def join_run(thread_id: str, run_id: str) -> Response:
    run, handle = await core().runs.join_target(thread_id, run_id)
    if handle is None:
        assert run is not None
        headers = run_headers(run, suffix="/join")
        body = await core().runs.result(run, None)
        return Response(body, content_type="application/json", headers=headers)
    return await _wait_response(handle, cancel_on_disconnect=qbool("cancel_on_disconnect"))


async def _join_stream(handle: RunHandle | None, location: dict[str, str]) -> Response:
    c = core()
    if handle is None:  # finished long ago: nothing to stream
        return sse_response(
            None,
            with_id=False,
            heartbeats=c.heartbeats,
            headers={**SSE_HEADERS, **location},
        )
    after = parse_event_id(request.headers.get("Last-Event-ID"))
    sub = handle.stream.subscribe(after=after, modes=qlist("stream_mode"))
    return sse_response(
        sub,
        with_id=True,
        heartbeats=c.heartbeats,
        headers={**SSE_HEADERS, **location},
        on_disconnect=_canceller(handle, qbool("cancel_on_disconnect")),
    )


@bp.get("/threads/<thread_id>/runs/<run_id>/stream")
@responds(SSE)
async def join_stream(thread_id: str, run_id: str) -> Response:
    run, handle = await core().runs.join_target(thread_id, run_id)
    assert run is not None
    return await _join_stream(handle, run_headers(run, suffix="/stream"))


@bp.get("/threads/<thread_id>/stream")
@responds(SSE)
async def join_thread_stream(thread_id: str) -> Response:
    """Everything happening on a thread, until the client leaves (contract §6.10).

    Both spellings of the modes are read: ``stream_modes`` (the official server's) and
    ``stream_mode`` (what both SDKs send, contract §13.5).
    """
    c = core()
    accepts = mode_filter([*(qlist("stream_modes") or ()), *(qlist("stream_mode") or ())])
    after = parse_last_event_id(request.headers.get("Last-Event-ID"))
    thread = await c.threads.get(thread_id)
    sub = c.thread_streams.subscribe(thread.thread_id, accepts=accepts, after=after)
    return sse_response(sub, with_id=True, heartbeats=c.heartbeats, headers=SSE_HEADERS)


# -- stateless --------------------------------------------------------------------------------


@bp.post("/runs")
@responds(Run)
async def create_stateless() -> Response:
    _, run, _ = await _create(None, background=True)
    return json_response(to_wire(run), headers={"Content-Location": f"/runs/{run.run_id}"})


@bp.post("/runs/stream")
@responds(SSE)
async def stream_stateless() -> Response:
    body, _, handle = await _create(None)
    return _stream_response(body, handle, stateless=True)


@bp.post("/runs/wait")
@responds(ANY_JSON)
async def wait_stateless() -> Response:
    body, _, handle = await _create(None)
    return await _wait_response(handle, cancel_on_disconnect=body.on_disconnect == "cancel")


@bp.post("/runs/batch")
@request_body(Annotated[list[RunCreate], {"minItems": 1}])
@responds(list[Run])
async def batch() -> Response:
    items = await body_json()
    if not isinstance(items, list) or not items:
        raise InvalidRequest("request body must be a non-empty array of run objects")
    bodies = [with_absolute_webhook(structure(item, RunCreate)) for item in items]
    runs_service = core().runs
    # every item is validated before anything is stored: a bad item creates nothing
    headers = run_headers_of()
    plans = [
        await runs_service.prepare(None, body, request_id=request_id(), headers=headers)
        for body in bodies
    ]
    created = [await runs_service.commit(plan, retain=True, background=True) for plan in plans]
    return json_response([to_wire(run) for run, _ in created])


@bp.post("/runs/cancel")
@responds(204)
async def cancel_many() -> Response:
    body = await body_as(CancelMany)
    await core().runs.cancel_many(
        status=body.status, thread_id=body.thread_id, run_ids=body.run_ids, action=_action()
    )
    return empty(204)


@bp.get("/runs/<uuid:run_id>")
@responds(Run)
async def get_stateless(run_id: uuid.UUID) -> Response:
    """A stateless run by id alone (its temporary thread is resolved here)."""
    return json_response(to_wire(await core().runs.stateless(str(run_id))))


@bp.get("/runs/<uuid:run_id>/stream")
@responds(SSE)
async def join_stateless_stream(run_id: uuid.UUID) -> Response:
    handle = await core().runs.stateless_handle(str(run_id))
    base = f"/runs/{run_id}"
    return await _join_stream(handle, {"Location": base + "/stream", "Content-Location": base})
