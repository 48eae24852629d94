"""``factory``: a graph factory, rebuilt for every run from the run's config."""

from typing import Any

from langgraph.graph import END, START, StateGraph
from typing_extensions import TypedDict  # pydantic builds the JSON schema on Python < 3.12 too


class State(TypedDict, total=False):
    greeting: str


def make_graph(config: dict[str, Any]) -> Any:
    who = config.get("configurable", {}).get("who", "world")

    def greet(state: State) -> State:
        return {"greeting": f"hello {who}"}

    return StateGraph(State).add_node(greet).add_edge(START, "greet").add_edge("greet", END)
