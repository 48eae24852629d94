"""The benchmark's echo graph: three trivial nodes in a line, nothing else."""

from typing import TypedDict

from langgraph.graph import END, START, StateGraph


class State(TypedDict, total=False):
    msg: str
    n: int


def first(state: State) -> State:
    return {"n": state.get("n", 0) + 1}


def second(state: State) -> State:
    return {"n": state.get("n", 0) + 1}


def third(state: State) -> State:
    return {"msg": state.get("msg", ""), "n": state.get("n", 0) + 1}


graph = (
    StateGraph(State)
    .add_node(first)
    .add_node(second)
    .add_node(third)
    .add_edge(START, "first")
    .add_edge("first", "second")
    .add_edge("second", "third")
    .add_edge("third", END)
    .compile()
)
