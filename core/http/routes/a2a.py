"""``/a2a/{assistant_id}``: each assistant as an A2A agent (JSON-RPC), and its agent card.

The official ``a2a-sdk`` does the protocol: its ``JsonRpcDispatcher`` (A2A 1.0 method
names, and with its 0.3 adapter ``message/send``, ``message/stream``, ``tasks/get``,
``tasks/cancel``) validates each request, calls :class:`~triograph.core.resources.a2a.A2ATasks`
and shapes the answer, and ``agent_card_to_dict`` writes the card in both versions' fields.
The dispatcher is plain async code on Starlette objects: :class:`A2AEndpoint` gives it a
Starlette request over the body Quart has read and turns its response into Quart's; a
streamed answer is the dispatcher's own event iterator, framed by ``sse-starlette``'s
encoder, so no task group runs inside the response body. Cards are at
``/a2a/{assistant_id}/.well-known/agent-card.json`` (and ``agent.json``, the 0.3 name) and
``/.well-known/agent-card.json?assistant_id=``. ``http.disable_a2a`` leaves these out.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, cast

from a2a.server.request_handlers.response_helpers import agent_card_to_dict
from a2a.server.routes.common import DefaultServerCallContextBuilder
from a2a.server.routes.jsonrpc_dispatcher import JsonRpcDispatcher
from quart import Blueprint, Response, current_app, request
from sse_starlette.event import ensure_bytes
from sse_starlette.sse import EventSourceResponse
from starlette.requests import Request as StarletteRequest

from triograph.core.http.json_schema import UUID
from triograph.core.http.openapi import OBJECT, SSE, responds
from triograph.core.http.wire import SSE_HEADERS, core, json_response, qstr
from triograph.core.infra.errors import InvalidRequest
from triograph.core.infra.models import validate_uuid
from triograph.core.resources.a2a import ASSISTANT, A2ATasks, agent_card

if TYPE_CHECKING:
    from a2a.server.context import ServerCallContext

    from triograph.core.infra.context import Core

bp = Blueprint("a2a", __name__)

CONFIG_KEY = "TRIOGRAPH_A2A"
_SCOPE_KEY = "triograph.a2a_assistant"


class _Context(DefaultServerCallContextBuilder):
    """The SDK's call context, plus the assistant the URL names."""

    def build(self, request: StarletteRequest) -> ServerCallContext:
        context = super().build(request)
        context.state[ASSISTANT] = request.scope[_SCOPE_KEY]
        return context


class A2AEndpoint:
    """The SDK's JSON-RPC dispatcher over :class:`A2ATasks`, for one app."""

    def __init__(self, core: Core) -> None:
        self.dispatcher = JsonRpcDispatcher(
            A2ATasks(core), context_builder=_Context(), enable_v0_3_compat=True
        )

    async def handle(self, scope: dict[str, Any], assistant_id: str, body: bytes) -> Response:
        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": body, "more_body": False}

        starlette = StarletteRequest({**scope, _SCOPE_KEY: assistant_id}, receive)
        answer = await self.dispatcher.handle_requests(starlette)
        if isinstance(answer, EventSourceResponse):
            events = cast("AsyncIterator[Any]", answer.body_iterator)

            async def frames() -> AsyncIterator[bytes]:
                async for event in events:
                    yield ensure_bytes(event, answer.sep)

            response = Response(
                frames(), content_type="text/event-stream; charset=utf-8", headers=SSE_HEADERS
            )
            response.timeout = None
            return response
        return Response(
            bytes(answer.body), status=answer.status_code, content_type="application/json"
        )


@bp.post("/a2a/<assistant_id>")
@responds(OBJECT, SSE)
async def a2a(assistant_id: str) -> Response:
    """A2A JSON-RPC endpoint of an assistant (SendMessage, SendStreamingMessage, GetTask,
    CancelTask and their 0.3 names)."""
    endpoint: A2AEndpoint = current_app.config[CONFIG_KEY]
    body = await request.get_data(cache=False, as_text=False, parse_form_data=False)
    return await endpoint.handle(cast("dict[str, Any]", request.scope), assistant_id, body)


@bp.get("/a2a/<assistant_id>/.well-known/agent-card.json")
@bp.get("/a2a/<assistant_id>/.well-known/agent.json")
@responds(OBJECT)
async def assistant_card(assistant_id: str) -> Response:
    """The A2A agent card of an assistant."""
    return await _card(assistant_id)


@bp.get("/.well-known/agent-card.json")
@responds(OBJECT)
async def card() -> Response:
    """The A2A agent card of the assistant named by ``?assistant_id=``."""
    assistant_id = qstr(
        "assistant_id",
        required=InvalidRequest("query parameter 'assistant_id': required (the assistant's UUID)"),
        schema=UUID,
    )
    return await _card(assistant_id or "")


async def _card(assistant_id: str) -> Response:
    assistant = await core().assistants.get(validate_uuid(assistant_id, "assistant"))
    url = f"{request.host_url.rstrip('/')}/a2a/{assistant.assistant_id}"
    return json_response(agent_card_to_dict(agent_card(assistant, url)))
