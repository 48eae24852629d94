"""The benchmark's I/O-bound graph: one node that sleeps ``seconds`` (an agent waiting on a
model or a tool), then answers."""

import asyncio
from typing import TypedDict

from langgraph.graph import END, START, StateGraph


class State(TypedDict, total=False):
    seconds: float
    done: bool


async def wait(state: State) -> State:
    await asyncio.sleep(state.get("seconds", 20.0))
    return {"done": True}


graph = StateGraph(State).add_node(wait).add_edge(START, "wait").add_edge("wait", END).compile()
