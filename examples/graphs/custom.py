"""``custom``: a node that writes progress through the stream writer."""

from langgraph.config import get_stream_writer
from langgraph.graph import END, START, StateGraph
from typing_extensions import TypedDict  # pydantic builds the JSON schema on Python < 3.12 too


class State(TypedDict, total=False):
    query: str
    n: int


def writer_node(state: State) -> State:
    write = get_stream_writer()
    write({"progress": 0})
    write({"progress": 1})
    write("plain string")
    return {"n": 3}


graph = (
    StateGraph(State)
    .add_node(writer_node)
    .add_edge(START, "writer_node")
    .add_edge("writer_node", END)
).compile()
