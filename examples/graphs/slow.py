"""``slow``: two nodes that each sleep ``delay`` seconds and append to ``log``."""

import asyncio
import operator
from typing import Annotated

from langgraph.graph import END, START, StateGraph
from typing_extensions import TypedDict  # pydantic builds the JSON schema on Python < 3.12 too


class State(TypedDict, total=False):
    delay: float
    log: Annotated[list[str], operator.add]


async def step1(state: State) -> State:
    await asyncio.sleep(state.get("delay", 1))
    return {"log": ["step1"]}


async def step2(state: State) -> State:
    await asyncio.sleep(state.get("delay", 1))
    return {"log": ["step2"]}


graph = (
    StateGraph(State)
    .add_node(step1)
    .add_node(step2)
    .add_edge(START, "step1")
    .add_edge("step1", "step2")
    .add_edge("step2", END)
    .compile()
)
