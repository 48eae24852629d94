"""``gated``: ``step1``, then ``step2``, which waits until the file named by ``gate`` exists;
each appends its name to ``log``. The crash-recovery tests stop a server while a run waits in
``step2`` (so the run is mid-run for as long as the test needs, with no timing involved) and
create the file once the server that takes over should let it finish."""

import asyncio
import operator
import os
from typing import Annotated

from langgraph.graph import END, START, StateGraph
from typing_extensions import TypedDict  # pydantic builds the JSON schema on Python < 3.12 too


class State(TypedDict, total=False):
    gate: str
    log: Annotated[list[str], operator.add]


async def step1(state: State) -> State:
    return {"log": ["step1"]}


async def step2(state: State) -> State:
    # a file, not an asyncio.Event: the gate is opened from another process (or server)
    while True:
        if await asyncio.to_thread(os.path.exists, state["gate"]):
            return {"log": ["step2"]}
        await asyncio.sleep(0.02)


graph = (
    StateGraph(State)
    .add_node(step1)
    .add_node(step2)
    .add_edge(START, "step1")
    .add_edge("step1", "step2")
    .add_edge("step2", END)
    .compile()
)
