from __future__ import annotations

import json

from tests.sdk import Server, collect


async def test_explore(server: Server) -> None:
    async with server.http() as h:
        t = (await h.post("/threads", json={})).json()
        tid = t["thread_id"]
        r = await h.post(
            f"/threads/{tid}/runs/stream",
            json={
                "assistant_id": "agent",
                "input": {"topic": "x"},
                "stream_mode": ["values", "updates", "tasks", "checkpoints", "debug"],
            },
        )
        print(r.headers)
        for frame in r.content.split(b"\r\n\r\n"):
            lines = frame.split(b"\r\n")
            if len(lines) >= 2:
                d = json.loads(lines[1][6:])
                extra = d.get("type", "") if lines[0] == b"event: debug" else ""
                if lines[0] == b"event: tasks":
                    extra = "result" if "result" in d else "start"
                print(lines[0], extra, lines[1][:150])
        r = await h.post(
            "/runs/wait",
            json={"assistant_id": "agent", "input": {"topic": "x"}, "config": {"tags": ["t1"]}},
        )
        print(r.status_code, r.text)
        r = await h.post(
            "/runs/stream",
            json={"assistant_id": "agent", "input": {"topic": "x"}, "config": {"tags": ["t1"]},
                  "stream_mode": "events"},
        )
        for frame in r.content.split(b"\r\n\r\n")[:6]:
            print(frame[:400])
        r = await h.post(
            f"/threads/{tid}/runs/wait",
            json={"assistant_id": "agent", "command": {"update": {"topic": "fish"}, "goto": "generate_joke"}},
        )
        print(r.status_code, r.text)
        t2 = (await h.post("/threads", json={})).json()["thread_id"]
        r = await h.post(
            f"/threads/{t2}/runs/wait",
            json={"assistant_id": "agent", "command": {"update": {"topic": "fish"}, "goto": "generate_joke"}},
        )
        print(r.status_code, r.text)
        r = await h.post(
            f"/threads/{t2}/runs/stream",
            json={"assistant_id": "subgraph", "input": {"foo": "a"}, "stream_subgraphs": True, "stream_mode": ["values", "messages"]},
        )
        print(r.text)
        r = await h.post(
            "/runs/stream",
            json={"assistant_id": "chat", "input": {"messages": [{"role": "user", "content": "hi"}]}, "stream_subgraphs": True, "stream_mode": ["messages", "messages-tuple"]},
        )
        print(r.text[:3000])
        r = await h.get(f"/threads/{tid}/runs/{tid}/stream")
        print(r.status_code, r.text)
        r = await h.get(f"/threads/{tid}/runs/{tid}/join")
        print(r.status_code, r.text)
