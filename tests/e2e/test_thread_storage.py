"""``GET /threads/{thread_id}/storage``: what a thread's checkpoints occupy, in the official
server's shape, on whichever backend the test servers use."""

from __future__ import annotations

import uuid

from tests.sdk import Server, get


async def test_counts_checkpoints_channels_and_pending_writes(server: Server) -> None:
    async with server.http() as h:
        tid = (await h.post("/threads", json={})).json()["thread_id"]
        empty = (await h.get(f"/threads/{tid}/storage")).json()
        assert empty == {
            "thread_id": tid,
            "total_bytes": 0,
            "checkpoints": {"count": 0, "bytes": 0},
            "channel_values": {"count": 0, "bytes": 0, "by_channel": {}},
            "pending_writes": {"count": 0, "bytes": 0},
        }
        r = await h.post(
            f"/threads/{tid}/runs/wait", json={"assistant_id": "agent", "input": {"topic": "x"}}
        )
        assert r.status_code == 200
        history = (await h.post(f"/threads/{tid}/history", json={"limit": 100})).json()
        used = (await h.get(f"/threads/{tid}/storage")).json()
    assert used["thread_id"] == tid
    assert used["checkpoints"]["count"] == len(history)
    assert used["checkpoints"]["bytes"] > 0
    channels = used["channel_values"]["by_channel"]
    assert {"topic", "joke"} <= set(channels)
    assert channels["topic"]["versions"] == 2  # the input, then the node's rewrite
    assert channels["joke"]["versions"] == 1
    assert used["channel_values"]["count"] == sum(c["versions"] for c in channels.values())
    assert used["channel_values"]["bytes"] == sum(c["bytes"] for c in channels.values())
    assert used["total_bytes"] == (
        used["checkpoints"]["bytes"]
        + used["channel_values"]["bytes"]
        + used["pending_writes"]["bytes"]
    )
    bigger = "x" * 5000
    async with server.http() as h:
        await h.post(
            f"/threads/{tid}/runs/wait", json={"assistant_id": "agent", "input": {"topic": bigger}}
        )
        grown = (await h.get(f"/threads/{tid}/storage")).json()
    assert grown["channel_values"]["by_channel"]["topic"]["bytes"] > 10_000  # two big versions
    assert grown["checkpoints"]["count"] > used["checkpoints"]["count"]


async def test_an_interrupted_thread_has_pending_writes(server: Server) -> None:
    async with server.http() as h:
        tid = (await h.post("/threads", json={})).json()["thread_id"]
        await h.post(
            f"/threads/{tid}/runs/wait",
            json={"assistant_id": "interrupter", "input": {"question": "name?"}},
        )
        assert (await h.get(f"/threads/{tid}")).json()["status"] == "interrupted"
        used = (await h.get(f"/threads/{tid}/storage")).json()
    assert used["pending_writes"]["count"] >= 1  # the interrupt is a pending write
    assert used["pending_writes"]["bytes"] > 0


async def test_unknown_and_malformed_threads(server: Server) -> None:
    status, body = await get(server, f"/threads/{uuid.uuid4()}/storage")
    assert status == 404
    status, body = await get(server, "/threads/not-a-uuid/storage")
    assert status == 422
    assert "thread" in body["detail"].lower()
    status, body = await get(server, "/openapi.json")
    assert "/threads/{thread_id}/storage" in body["paths"]
    status, body = await get(server, "/info")
    assert body["flags"]["thread_storage"] is True
