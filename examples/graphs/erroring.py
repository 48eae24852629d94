"""``erroring``: the first node writes ``x``, the second raises ``ValueError``."""

from langgraph.graph import END, START, StateGraph
from typing_extensions import TypedDict  # pydantic builds the JSON schema on Python < 3.12 too


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
