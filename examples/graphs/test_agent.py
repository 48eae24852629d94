"""The seed documents' ``test_agent``: three nodes ``foo`` -> ``bar`` -> ``baz``.

``foo`` copies ``bar`` into ``foo``, ``bar`` returns nothing, ``baz`` copies ``foo`` into
``baz``; with input ``{"foo": None, "bar": "checked", "baz": None}`` every key ends
``"checked"``, as in the seeds' outputs.
"""

from langgraph.graph import END, START, StateGraph
from typing_extensions import TypedDict  # pydantic builds the JSON schema on Python < 3.12 too


class State(TypedDict):
    foo: str | None
    bar: str | None
    baz: str | None


def foo(state: State) -> dict[str, str | None]:
    return {"foo": state["bar"]}


def bar(state: State) -> None:
    return None


def baz(state: State) -> dict[str, str | None]:
    return {"baz": state["foo"]}


graph = (
    StateGraph(State)
    .add_node(foo)
    .add_node(bar)
    .add_node(baz)
    .add_edge(START, "foo")
    .add_edge("foo", "bar")
    .add_edge("bar", "baz")
    .add_edge("baz", END)
    .compile()
)
