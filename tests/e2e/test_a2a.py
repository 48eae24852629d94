"""``/a2a/{assistant_id}``: the official ``a2a-sdk`` client (A2A 1.0, as the agent card
offers it) sends, streams, gets and cancels tasks; an interrupted run is an input-required
task the next message resumes; the 0.3 method names over raw JSON-RPC; the agent cards."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import trio
from a2a.client import ClientConfig, create_client
from a2a.helpers.proto_helpers import new_data_part
from a2a.types import a2a_pb2 as pb
from google.protobuf.json_format import MessageToDict

from tests.conftest import example_settings, start_server
from tests.sdk import Server

T = TypeVar("T")


async def assistant(server: Server, graph_id: str) -> str:
    async with server.http() as h:
        rows = (await h.post("/assistants/search", json={"graph_id": graph_id})).json()
    return rows[0]["assistant_id"]


async def with_client(
    server: Server, assistant_id: str, fn: Callable[[Any], Awaitable[T]], **config: Any
) -> T:
    """``await fn(client)`` with the SDK's client for the assistant (asyncio, in a thread)."""

    async def main() -> T:
        client = await create_client(f"{server.url}/a2a/{assistant_id}", ClientConfig(**config))
        try:
            return await fn(client)
        finally:
            await client.close()

    return await trio.to_thread.run_sync(asyncio.run, main())


def message(*parts: pb.Part, context_id: str = "", task_id: str = "") -> pb.SendMessageRequest:
    return pb.SendMessageRequest(
        message=pb.Message(
            message_id=str(uuid.uuid4()),
            role=pb.ROLE_USER,
            parts=list(parts),
            context_id=context_id,
            task_id=task_id,
        )
    )


async def send(client: Any, request: pb.SendMessageRequest) -> list[dict[str, Any]]:
    return [MessageToDict(event) async for event in client.send_message(request)]


async def test_send_and_get_a_task(server: Server) -> None:
    agent = await assistant(server, "agent")

    async def talk(client: Any) -> Any:
        [answer] = await send(client, message(new_data_part({"topic": "cats"})))
        task = answer["task"]
        again = MessageToDict(await client.get_task(pb.GetTaskRequest(id=task["id"])))
        return task, again

    task, again = await with_client(server, agent, talk, streaming=False)
    assert task["status"]["state"] == "TASK_STATE_COMPLETED"
    [values] = task["artifacts"]
    assert values["parts"][0]["data"] == {
        "topic": "cats and cats",
        "joke": "This is a joke about cats and cats",
    }
    assert task["history"][0]["role"] == "ROLE_USER"
    assert again["id"] == task["id"]
    assert again["status"]["state"] == "TASK_STATE_COMPLETED"
    # the context is a thread, the task a run on it
    async with server.http() as h:
        run = (await h.get(f"/threads/{task['contextId']}/runs/{task['id']}")).json()
        assert run["status"] == "success"
        assert run["assistant_id"] == agent


async def test_text_is_a_human_message_and_the_answer_an_artifact(server: Server) -> None:
    chat = await assistant(server, "chat")
    events = await with_client(
        server, chat, lambda c: send(c, message(pb.Part(text="hello"))), streaming=False
    )
    artifacts = {a["name"]: a for a in events[0]["task"]["artifacts"]}
    assert artifacts["answer"]["parts"] == [{"text": "hello there friend"}]
    messages = artifacts["values"]["parts"][0]["data"]["messages"]
    assert [m["type"] for m in messages] == ["human", "ai"]


async def test_stream_a_task(server: Server) -> None:
    agent = await assistant(server, "agent")
    events = await with_client(
        server, agent, lambda c: send(c, message(new_data_part({"topic": "dogs"}))), streaming=True
    )
    kinds = [next(iter(event)) for event in events]
    assert kinds[:2] == ["task", "statusUpdate"]
    assert events[0]["task"]["status"]["state"] == "TASK_STATE_SUBMITTED"
    assert events[1]["statusUpdate"]["status"]["state"] == "TASK_STATE_WORKING"
    assert kinds[-1] == "statusUpdate"
    assert events[-1]["statusUpdate"]["status"]["state"] == "TASK_STATE_COMPLETED"
    updates = [
        e["artifactUpdate"]["artifact"]["parts"][0]["data"] for e in events if "artifactUpdate" in e
    ]
    assert updates[0] == {"topic": "dogs"}
    assert updates[-1] == {"topic": "dogs and cats", "joke": "This is a joke about dogs and cats"}
    task_id = events[0]["task"]["id"]
    assert all(
        e[k].get("taskId", task_id) == task_id for e, k in zip(events[1:], kinds[1:], strict=True)
    )


async def test_interrupt_is_input_required_and_the_next_message_resumes(server: Server) -> None:
    asker = await assistant(server, "interrupter")

    async def converse(client: Any) -> Any:
        [first] = await send(client, message(new_data_part({"question": "your name?"})))
        task = first["task"]
        [second] = await send(client, message(pb.Part(text="Bob"), context_id=task["contextId"]))
        return task, second["task"]

    asked, answered = await with_client(server, asker, converse, streaming=False)
    assert asked["status"]["state"] == "TASK_STATE_INPUT_REQUIRED"
    question = asked["status"]["message"]
    assert question["role"] == "ROLE_AGENT"
    assert question["parts"][0]["data"]["value"] == {"question": "your name?"}
    assert answered["contextId"] == asked["contextId"]
    assert answered["status"]["state"] == "TASK_STATE_COMPLETED"
    values = answered["artifacts"][0]["parts"][0]["data"]
    assert values == {"question": "your name?", "answer": "Bob!"}


async def test_cancel_a_task_and_errors(server: Server) -> None:
    slow = await assistant(server, "slow")

    async def cancel(client: Any) -> Any:
        request = message(new_data_part({"delay": 5}))
        request.configuration.return_immediately = True
        [started] = await send(client, request)
        task_id = started["task"]["id"]
        cancelled = MessageToDict(await client.cancel_task(pb.CancelTaskRequest(id=task_id)))
        errors = []
        for call in (
            lambda: client.cancel_task(pb.CancelTaskRequest(id=task_id)),
            lambda: client.get_task(pb.GetTaskRequest(id=str(uuid.uuid4()))),
        ):
            try:
                await call()
            except Exception as exc:
                errors.append(exc)
        return started["task"], cancelled, errors

    started, cancelled, errors = await with_client(server, slow, cancel, streaming=False)
    assert started["status"]["state"] in ("TASK_STATE_SUBMITTED", "TASK_STATE_WORKING")
    assert cancelled["status"]["state"] == "TASK_STATE_CANCELED"
    assert [type(e).__name__ for e in errors] == ["TaskNotCancelableError", "TaskNotFoundError"]


async def rpc(server: Server, assistant_id: str, method: str, params: Any) -> Any:
    async with server.http() as h:
        r = await h.post(
            f"/a2a/{assistant_id}",
            json={"jsonrpc": "2.0", "id": 1, "method": method, "params": params},
        )
    assert r.status_code == 200
    return r.json()


async def test_the_0_3_method_names(server: Server) -> None:
    agent = await assistant(server, "agent")
    sent = await rpc(
        server,
        agent,
        "message/send",
        {
            "message": {
                "kind": "message",
                "messageId": str(uuid.uuid4()),
                "role": "user",
                "parts": [{"kind": "data", "data": {"topic": "owls"}}],
            }
        },
    )
    task = sent["result"]
    assert task["kind"] == "task"
    assert task["status"]["state"] == "completed"
    assert task["artifacts"][0]["parts"][0]["data"]["topic"] == "owls and cats"
    got = await rpc(server, agent, "tasks/get", {"id": task["id"]})
    assert got["result"]["status"]["state"] == "completed"
    refused = await rpc(server, agent, "tasks/cancel", {"id": task["id"]})
    assert refused["error"]["code"] == -32002
    missing = await rpc(server, agent, "tasks/get", {"id": str(uuid.uuid4())})
    assert missing["error"]["code"] == -32001
    unknown = await rpc(server, agent, "tasks/nope", {})
    assert unknown["error"]["code"] == -32601
    async with server.http() as h:
        body = {
            "jsonrpc": "2.0",
            "id": 2,
            "method": "message/stream",
            "params": {
                "message": {
                    "kind": "message",
                    "messageId": str(uuid.uuid4()),
                    "role": "user",
                    "parts": [{"kind": "data", "data": {"topic": "bats"}}],
                }
            },
        }
        async with h.stream("POST", f"/a2a/{agent}", json=body) as r:
            assert r.headers["content-type"].startswith("text/event-stream")
            frames = [line async for line in r.aiter_lines() if line.startswith("data:")]
    results = [json.loads(f.removeprefix("data:"))["result"] for f in frames]
    assert results[0]["kind"] == "task"
    assert results[-1]["kind"] == "status-update"
    assert results[-1]["status"]["state"] == "completed"
    assert results[-1]["final"] is True


async def test_agent_cards(server: Server) -> None:
    agent = await assistant(server, "agent")
    async with server.http() as h:
        for path in (
            f"/a2a/{agent}/.well-known/agent-card.json",
            f"/a2a/{agent}/.well-known/agent.json",
            f"/.well-known/agent-card.json?assistant_id={agent}",
        ):
            card = (await h.get(path)).json()
            assert card["name"] == "agent"
            assert card["capabilities"]["streaming"] is True
            assert {i["protocolVersion"] for i in card["supportedInterfaces"]} == {"1.0", "0.3"}
            assert card["supportedInterfaces"][0]["url"] == f"{server.url}/a2a/{agent}"
            assert card["url"] == f"{server.url}/a2a/{agent}"  # the 0.3 field
        missing = await h.get("/.well-known/agent-card.json")
        assert missing.status_code == 422
        assert "assistant_id" in missing.json()["detail"]
        assert (await h.get("/a2a/not-a-uuid/.well-known/agent-card.json")).status_code == 422
        assert (await h.get(f"/a2a/{uuid.uuid4()}/.well-known/agent-card.json")).status_code == 404
        bad = await rpc(server, str(uuid.uuid4()), "tasks/get", {"id": str(uuid.uuid4())})
        assert bad["error"]["code"] in (-32602, -32001)
        info = (await h.get("/info")).json()
        assert info["flags"]["a2a"] is True
        paths = (await h.get("/openapi.json")).json()["paths"]
        assert "/a2a/{assistant_id}" in paths
        assert "/.well-known/agent-card.json" in paths


async def test_disable_a2a(nursery: trio.Nursery) -> None:
    async for s in start_server(nursery, example_settings(http={"disable_a2a": True})):
        agent = await assistant(s, "agent")
        async with s.http() as h:
            assert (await h.post(f"/a2a/{agent}", json={})).status_code == 404
            assert (await h.get("/info")).json()["flags"]["a2a"] is False
