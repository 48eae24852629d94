"""The thread-centric streaming protocol's routes (``client.threads.stream`` of both SDKs,
``useStream`` of ``@langchain/react``): commands, and the thread's event stream over SSE.

``POST /threads/{id}/commands`` takes one command and answers its envelope with 200, a
protocol error too; only a body that is no command at all (no integer ``id``, no string
``method``) is a 400 with an error envelope, and one that is not JSON a 400 ``detail``.
``POST /threads/{id}/stream/events`` is an SSE stream whose JSON body is the filter
(``channels``, ``namespaces``, ``depth``, ``since``): the thread's kept events first, then live
ones, with a heartbeat comment every few seconds; it never ends by itself.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import TYPE_CHECKING, Any

import attrs
import orjson
import trio
from quart import Blueprint, Response, request, websocket

from triograph.core.engine.event_log import sse_frame
from triograph.core.engine.streams import HEARTBEAT
from triograph.core.http.openapi import OBJECT, SSE, request_body, responds
from triograph.core.http.routes.runs import run_headers_of
from triograph.core.http.wire import (
    SSE_CHUNK_BYTES,
    SSE_HEADERS,
    core,
    json_response,
    request_id,
    sse_batches,
)
from triograph.core.infra import encoding
from triograph.core.infra.errors import BadRequest, TriographError
from triograph.core.infra.models import JSON, bounded
from triograph.core.resources.protocol import (
    CallerContext,
    ProtocolError,
    envelope_id,
    error_envelope,
    parse_command,
)

if TYPE_CHECKING:
    from triograph.core.engine.streams import Subscription

bp = Blueprint("protocol", __name__)


@attrs.frozen(kw_only=True)
class ProtocolCommand:
    """One command of the protocol (``langchain-protocol``'s ``Command``)."""

    id: int = bounded(attrs.NOTHING, 0, 2**53)
    method: str
    params: dict[str, JSON] | None = None


@attrs.frozen(kw_only=True)
class StreamFilter:
    """The subscription of an event stream; ``since``: the last seq the client has."""

    channels: list[str]
    namespaces: list[list[str]] | None = None
    depth: int | None = bounded(None, 0, 2**31)
    since: int | None = bounded(None, 0, 2**53)


ENVELOPE = {
    "type": "object",
    "required": ["type", "id"],
    "properties": {
        "type": {"enum": ["success", "error"]},
        "id": {"type": ["integer", "null"]},
        "result": OBJECT,
        "meta": OBJECT,
        "error": {"type": "string"},
        "message": {"type": "string"},
    },
}


async def _json_body() -> Any:
    raw = await request.get_data(cache=False, as_text=False, parse_form_data=False)
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise BadRequest("Invalid JSON body") from None


def caller() -> CallerContext:
    return CallerContext(request_id=request_id(), headers=run_headers_of())


@bp.post("/threads/<thread_id>/commands")
@request_body(ProtocolCommand)
@responds(
    ENVELOPE,
    errors={
        "application/json": {
            "schema": {"oneOf": [ENVELOPE, {"$ref": "#/components/schemas/Error"}]}
        }
    },
)
async def command(thread_id: str) -> Response:
    raw = await _json_body()
    try:
        parse_command(raw)
    except ProtocolError as exc:
        body = error_envelope(envelope_id(raw), exc.code, exc.message)
        return json_response(body, status=400)
    return json_response(await core().protocol.command(thread_id, raw, caller()))


@bp.post("/threads/<thread_id>/stream/events")
@request_body(StreamFilter)
@responds(SSE)
async def stream_events(thread_id: str) -> Response:
    c = core()
    params = await _json_body()
    if not isinstance(params, dict):
        raise BadRequest("the body must be a JSON object: {channels, namespaces?, depth?, since?}")
    try:
        flt, since = c.protocol.parse_stream(params)
    except TriographError as exc:  # 400, as on the official server
        raise BadRequest(exc.message) from None
    exists = await c.protocol.check_stream(thread_id)
    sub = await c.protocol.subscribe(thread_id, flt, since)
    service = c.protocol

    async def body() -> AsyncIterator[bytes]:
        checked = exists
        c.open_streams += 1
        try:
            async with aclosing(sse_batches(sub, c.heartbeats)) as batches:
                async for events in batches:
                    if not events:
                        yield HEARTBEAT
                        continue
                    # a thread made after the stream opened: may the caller read it?
                    if not checked and not await service.recheck(thread_id):
                        break
                    checked = True
                    yield b"".join(sse_frame(e) for e in events)
        finally:
            c.open_streams -= 1
            sub.close()

    response = Response(
        body(), content_type="text/event-stream; charset=utf-8", headers=SSE_HEADERS
    )
    response.timeout = None
    return response


# -- WebSocket ----------------------------------------------------------------------------------


class _Socket:
    """One WebSocket on a thread: every inbound text frame is a command; responses and the
    events of this connection's subscriptions go out in order through one sender."""

    def __init__(self, thread_id: str, nursery: trio.Nursery) -> None:
        self.thread_id = thread_id
        self.c = core()
        self.nursery = nursery
        self.out, self._out = trio.open_memory_channel[bytes | str](256)
        self.subscriptions: dict[str, tuple[Subscription, trio.CancelScope]] = {}
        #: the highest seq sent on this connection (``meta.applied_through_seq``)
        self.seq = 0
        self.caller = CallerContext(request_id=None, headers=None)

    async def send_all(self) -> None:
        async for frame in self._out:
            await websocket.send(frame)

    async def handle(self, raw: str | bytes) -> None:
        try:
            command = orjson.loads(raw)
        except orjson.JSONDecodeError:
            await self._reply(error_envelope(None, "invalid_argument", "a frame must be JSON"))
            return
        try:
            command_id, method, params = parse_command(command)
        except ProtocolError as exc:
            await self._reply(error_envelope(envelope_id(command), exc.code, exc.message))
            return
        try:
            if method == "subscription.subscribe":
                result = await self.subscribe(params)
            elif method == "subscription.unsubscribe":
                result = self.unsubscribe(params)
            else:
                await self._reply(
                    await self.c.protocol.command(
                        self.thread_id, command, self.caller, seq=self.seq
                    )
                )
                return
        except ProtocolError as exc:
            await self._reply(error_envelope(command_id, exc.code, exc.message))
            return
        except TriographError as exc:
            code = "permission_denied" if exc.status_code in (401, 403, 404) else "invalid_argument"
            await self._reply(error_envelope(command_id, code, exc.message))
            return
        answer = {"type": "success", "id": command_id, "result": result}
        await self._reply({**answer, "meta": {"applied_through_seq": self.seq}})

    async def _reply(self, envelope: dict[str, Any]) -> None:
        await self.out.send(encoding.dumps(envelope).decode())

    async def subscribe(self, params: dict[str, Any]) -> dict[str, Any]:
        service = self.c.protocol
        try:
            flt, since = service.parse_stream(params)
        except TriographError as exc:
            raise ProtocolError("invalid_argument", exc.message) from None
        exists = await service.check_stream(self.thread_id)
        sub = await service.subscribe(self.thread_id, flt, since)
        subscription_id = params.get("subscription_id")
        if not isinstance(subscription_id, str) or subscription_id in self.subscriptions:
            subscription_id = str(uuid.uuid4())
        replayed = sub.queued
        scope = trio.CancelScope()
        self.subscriptions[subscription_id] = (sub, scope)
        # the replay goes out before the answer: the pump starts now, the answer queues after
        await self.nursery.start(self._pump, sub, scope, exists, replayed)
        return {"subscription_id": subscription_id, "replayed_events": replayed}

    def unsubscribe(self, params: dict[str, Any]) -> dict[str, Any]:
        subscription_id = params.get("subscription_id")
        if not isinstance(subscription_id, str):
            raise ProtocolError("invalid_argument", "params.subscription_id is required")
        found = self.subscriptions.pop(subscription_id, None)
        if found is None:
            raise ProtocolError(
                "no_such_subscription", f"no subscription {subscription_id!r} on this connection"
            )
        sub, scope = found
        scope.cancel()
        sub.close()
        return {}

    async def _pump(
        self,
        sub: Subscription,
        scope: trio.CancelScope,
        checked: bool,
        replay: int,
        *,
        task_status: trio.TaskStatus[None],
    ) -> None:
        started = False
        with scope:
            try:
                while True:
                    if not started and replay <= 0:
                        started = True
                        task_status.started()
                    events = await sub.receive(SSE_CHUNK_BYTES)
                    if events and not checked:
                        checked = await self.c.protocol.recheck(self.thread_id)
                        if not checked:
                            break
                    for event in events:
                        self.seq = max(self.seq, event.seq)
                        await self.out.send(event.data.decode())
                    replay -= len(events)
                    if not events and sub.ended:
                        break
            finally:
                sub.close()
        if not started:
            task_status.started()


@bp.websocket("/threads/<thread_id>/stream/events")
@responds(101)
async def events_socket(thread_id: str) -> None:
    """The thread's events and commands over one WebSocket: each text frame is a command
    (``subscription.subscribe`` opens a filtered stream of this connection, with the replay
    after ``since`` sent before its answer); a bad frame gets an error envelope, never a
    closed socket."""
    await websocket.accept()
    async with trio.open_nursery() as nursery:
        socket = _Socket(thread_id, nursery)
        nursery.start_soon(socket.send_all)
        try:
            while True:
                await socket.handle(await websocket.receive())
        finally:
            for sub, scope in socket.subscriptions.values():
                scope.cancel()
                sub.close()
            nursery.cancel_scope.cancel()
