"""HTTP helpers shared by the route modules: bodies, query parameters, streamed responses.

Streamed responses (SSE and the keep-alive JSON of ``/wait``) are async generators that
Quart iterates. When the client goes away, quart-trio cancels the request and Quart closes
the generator; its ``finally`` sees that the body was not finished and, for
``on_disconnect="cancel"``, cancels the run. Nothing there awaits: a cancelled context
cannot.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar, cast

import attrs
import orjson
import trio
from quart import Response, current_app, request

from triograph.core.engine.streams import HEARTBEAT
from triograph.core.http.admission import RELEASE
from triograph.core.http.transport import EXCHANGE
from triograph.core.infra import encoding
from triograph.core.infra.errors import InvalidRequest, TriographError
from triograph.core.infra.limits import check_body
from triograph.core.infra.models import structure

if TYPE_CHECKING:
    from triograph.core.engine.streams import Event, Heartbeats, Subscription
    from triograph.core.http.transport import _Exchange
    from triograph.core.infra.context import Core
    from triograph.core.infra.models import Run

T = TypeVar("T")

SSE_HEADERS = {
    "Cache-Control": "no-store",
    "Connection": "keep-alive",
    "X-Accel-Buffering": "no",
}
#: bytes of event data one write of an SSE body carries at most: what a connection holds in
#: flight (several copies, down to the socket) stays small however far its reader is behind
SSE_CHUNK_BYTES = 64 * 1024
#: seconds a waiting response holds its headers back for the result: a result ready by then
#: goes out as one plain response, written at once
QUICK_ANSWER = 0.5
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off", ""})


def core() -> Core:
    return current_app.config["TRIOGRAPH_CORE"]  # type: ignore[no-any-return]


async def body_json(*, default: Any = ...) -> Any:
    """The decoded JSON body; empty or malformed -> 422 ``Invalid JSON in request body``;
    too deep, or with a field over its size limit -> 422 naming it (``limits``)."""
    raw = await request.get_data(cache=False, as_text=False, parse_form_data=False)
    if not raw.strip():
        if default is not ...:
            return default
        raise InvalidRequest("Invalid JSON in request body")
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise InvalidRequest("Invalid JSON in request body") from None
    check_body(data, raw, core().settings.limits)
    return data


async def body_as(cls: type[T], *, default: Any = ...) -> T:
    return structure(await body_json(default=default), cls)


def json_response(obj: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(
        encoding.dumps(obj), status=status, headers=headers, content_type="application/json"
    )


def page_response(rows: list[Any], *, offset: int, limit: int, total: int) -> Response:
    """A search page: ``X-Pagination-Total`` is the real total (contract §13.9) and
    ``X-Pagination-Next`` the next offset, only when more rows exist (§1.4)."""
    headers = {"X-Pagination-Total": str(total)}
    if offset + len(rows) < total:
        headers["X-Pagination-Next"] = str(offset + limit)
    return json_response(rows, headers=headers)


def empty(status: int) -> Response:
    return Response(b"", status=status)


def qbool(name: str, default: bool = False) -> bool:
    """A boolean query parameter: ``1/0/true/false/yes/no``, any case (contract §1.8)."""
    value = request.args.get(name)
    if value is None:
        return default
    low = value.strip().lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    raise InvalidRequest(f"query parameter {name!r}: {value!r} is not a boolean (1/0/true/false)")


def qint(name: str, default: int, *, least: int, most: int) -> int:
    """An integer query parameter in ``least..most`` (the OpenAPI document declares both)."""
    value = request.args.get(name)
    if value is None:
        return default
    try:
        number = int(value)
    except ValueError:
        raise InvalidRequest(f"Invalid {name} {value}") from None
    if not least <= number <= most:
        raise InvalidRequest(
            f"query parameter {name!r}: {number} is not between {least} and {most}"
        )
    return number


def qstr(
    name: str,
    default: str | None = None,
    *,
    allowed: tuple[str, ...] | None = None,
    required: bool | TriographError = False,
    schema: dict[str, Any] | None = None,
) -> str | None:
    """A string query parameter: one of ``allowed`` if given; absent and ``required`` is a 422
    (or ``required`` itself, when it is the error to raise: ``Key is required`` is a 400).
    ``schema`` is what the OpenAPI document declares instead of a string (it is read from
    this call in the view's code, :mod:`triograph.core.http.openapi`)."""
    value = request.args.get(name)
    if value is not None and "\x00" in value:  # as in bodies (limits.check_body)
        raise InvalidRequest(f"query parameter {name!r} contains a NUL character, not stored")
    if value is None:
        if isinstance(required, TriographError):
            raise required
        if required:
            raise InvalidRequest(f"query parameter {name!r} is required")
        return default
    if allowed is not None and value not in allowed:
        raise InvalidRequest(f"query parameter {name!r}: {value!r} is not one of {list(allowed)}")
    return value


def qlist(name: str, *, allowed: tuple[str, ...] | None = None) -> list[str] | None:
    """A list query parameter: repeated keys, a JSON array string, or a comma list; each
    value one of ``allowed`` if given."""
    values = request.args.getlist(name)
    if not values:
        return None
    out: list[str] = []
    for value in values:
        if value.startswith("["):
            try:
                decoded = orjson.loads(value)
            except orjson.JSONDecodeError:
                raise InvalidRequest(f"query parameter {name!r}: malformed JSON list") from None
            out.extend(str(v) for v in decoded)
        else:
            out.extend(v for v in value.split(",") if v)
    bad = [v for v in out if allowed is not None and v not in allowed]
    if bad:
        raise InvalidRequest(
            f"query parameter {name!r}: {bad} not allowed; allowed: {list(allowed or ())}"
        )
    return out


def absolute_webhook(webhook: T) -> T:
    """A relative ``webhook`` (``/path``: this server itself, contract §5.11) made absolute
    with the address the client reached us at; anything else as it is."""
    if isinstance(webhook, str) and webhook.startswith("/"):
        return request.host_url.rstrip("/") + webhook  # type: ignore[return-value]
    return webhook


def with_absolute_webhook(body: T) -> T:
    """A run body with :func:`absolute_webhook` applied to its ``webhook``."""
    webhook = getattr(body, "webhook", None)
    if webhook is None:
        return body
    return attrs.evolve(body, webhook=absolute_webhook(webhook))  # type: ignore[misc]


def request_id() -> str:
    return request.headers.get("x-request-id") or str(uuid.uuid4())


async def sse_batches(sub: Subscription, heartbeats: Heartbeats) -> AsyncGenerator[list[Event]]:
    """What an SSE response writes for ``sub``: its events, in batches of at most
    ``SSE_CHUNK_BYTES`` of data, and an empty batch each time ``heartbeats`` pokes it, until
    the stream has ended and all it queued is out (events that came while a heartbeat was
    written go before the end)."""
    heartbeats.add(sub)
    while True:
        events = await sub.receive(SSE_CHUNK_BYTES)
        if sub.beat:
            sub.beat = False
            yield []
        if events:
            yield events
        elif sub.ended and not sub.queued:
            return


def sse_response(
    sub: Subscription | None,
    *,
    with_id: bool,
    heartbeats: Heartbeats,
    headers: dict[str, str],
    on_disconnect: Callable[[], None] | None = None,
    prelude: list[bytes] | None = None,
) -> Response:
    """An SSE response that drains ``sub`` (None: an empty stream), with a heartbeat each
    time ``heartbeats`` pokes it. When it has something to send already (a new run's
    ``metadata`` event), its head goes out with that, in one write."""

    c = core()  # the body runs outside the app context
    if prelude or sub is None or sub.queued:
        exchange = cast("_Exchange | None", request.scope.get(EXCHANGE))
        if exchange is not None:
            exchange.head_with_first_chunk()

    async def body() -> AsyncIterator[bytes]:
        finished = False
        c.open_streams += 1
        try:
            for frame in prelude or ():
                yield frame
            if sub is None:
                finished = True
                return
            # what sse_batches does, written out: an async generator less (~0.4 KiB) in the
            # chain of frames a stream holds while it waits
            heartbeats.add(sub)
            while True:
                events = await sub.receive(SSE_CHUNK_BYTES)
                if sub.beat:
                    sub.beat = False
                    yield HEARTBEAT
                if events:
                    yield b"".join(e.frame(with_id=with_id) for e in events)
                elif sub.ended and not sub.queued:
                    break
            finished = True
        finally:
            c.open_streams -= 1
            if sub is not None:
                sub.close()
            if not finished and on_disconnect is not None:
                on_disconnect()

    response = Response(body(), content_type="text/event-stream; charset=utf-8", headers=headers)
    response.timeout = None
    return response


async def waiting_json_response(
    done: trio.Event,
    produce: Callable[[], Awaitable[bytes]],
    *,
    heartbeat: float,
    headers: dict[str, str],
    on_disconnect: Callable[[], None] | None = None,
) -> Response:
    """200 JSON once ``done`` is set. A result ready within :data:`QUICK_ANSWER` seconds (a
    short run's) is a plain response of known length, written in one go; otherwise the
    headers go out then, ``\n`` every ``heartbeat`` seconds while waiting (leading whitespace
    is valid JSON), then the body. ``on_disconnect`` is called when the client leaves first."""
    release = cast("Callable[[], None] | None", request.scope.get(RELEASE))
    if release is not None:
        release()  # waiting holds no place in the admission queue
    try:
        with trio.move_on_after(min(heartbeat, QUICK_ANSWER)):
            await done.wait()
    except BaseException:  # cancelled: the client left before the result
        if on_disconnect is not None and not done.is_set():
            on_disconnect()
        raise
    if done.is_set():
        return Response(await produce(), content_type="application/json", headers=headers)

    async def body() -> AsyncIterator[bytes]:
        finished = False
        try:
            while not done.is_set():
                with trio.move_on_after(heartbeat):
                    await done.wait()
                if not done.is_set():
                    yield b"\n"
            yield await produce()
            finished = True
        finally:
            if not finished and on_disconnect is not None:
                on_disconnect()

    response = Response(body(), content_type="application/json", headers=headers)
    response.timeout = None
    return response


def run_headers(run: Run, *, suffix: str) -> dict[str, str]:
    """``Location`` (the run's path + ``suffix``) and ``Content-Location`` (the run's path)."""
    base = f"/threads/{run.thread_id}/runs/{run.run_id}"
    return {"Location": base + suffix, "Content-Location": base}
