"""``erroring``: the first node writes ``x``, the second raises ``ValueError``."""

from typing import TypedDict

from langgraph.graph import END, START, StateGraph


class State(TypedDict, total=False):
    x: int


def ok_node(state: State) -> State:
    return {"x": 1}


def bad_node(state: State) -> State:
    raise ValueError("boom from node")


graph = (
    StateGraph(State)
    .add_node(ok_node)
    .add_node(bad_node)
    .add_edge(START, "ok_node")
    .add_edge("ok_node", "bad_node")
    .add_edge("bad_node", END)
    .compile()
)
