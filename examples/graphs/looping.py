"""``looping``: ``step`` runs again and again, one checkpoint each, until the file named by
``gate`` exists; each execution appends the run's attempt to ``steps`` and, as a line, to the
file named by ``trace``. The lease-fencing test (tests/e2e/test_cluster.py) reads there which
worker's execution of a run went on (each execution of a run is a different attempt) and
whose checkpoints were kept. A run needs a ``recursion_limit`` above the steps it takes."""

import asyncio
import operator
import os
from typing import Annotated

from langchain_core.runnables import RunnableConfig
from langgraph.graph import END, START, StateGraph
from typing_extensions import TypedDict  # pydantic builds the JSON schema on Python < 3.12 too

#: seconds each step takes
STEP = 0.05


class State(TypedDict, total=False):
    gate: str
    trace: str
    steps: Annotated[list[int], operator.add]


def _append(path: str, line: str) -> None:
    with open(path, "a") as file:
        file.write(line)


async def step(state: State, config: RunnableConfig) -> State:
    attempt = int(config.get("metadata", {}).get("run_attempt", 1))
    await asyncio.to_thread(_append, state["trace"], f"{attempt}\n")
    await asyncio.sleep(STEP)
    return {"steps": [attempt]}


def again(state: State) -> str:
    return END if os.path.exists(state["gate"]) else "step"


graph = (
    StateGraph(State)
    .add_node(step)
    .add_edge(START, "step")
    .add_conditional_edges("step", again, ["step", END])
    .compile()
)
