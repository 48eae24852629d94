"""``subint``: a parent whose node ``inner`` is a subgraph that stops at ``interrupt()``.

Exercises nested state (``GET /threads/{id}/state?subgraphs=true``), interrupts keyed by
the subgraph's task id, and state updates on subgraph checkpoints.
"""

from langgraph.graph import START, StateGraph
from langgraph.types import interrupt
from typing_extensions import TypedDict  # pydantic builds the JSON schema on Python < 3.12 too


class State(TypedDict):
    foo: str


def pre(state: State) -> State:
    return {"foo": state["foo"] + "|pre"}


def ask(state: State) -> State:
    answer = interrupt("sub question")
    return {"foo": state["foo"] + f"|{answer}"}


_inner = StateGraph(State).add_node(pre).add_node(ask)
_inner.add_edge(START, "pre").add_edge("pre", "ask")


def post(state: State) -> State:
    return {"foo": state["foo"] + "|post"}


_parent = StateGraph(State).add_node("inner", _inner.compile()).add_node(post)
_parent.add_edge(START, "inner").add_edge("inner", "post")
graph = _parent.compile()
