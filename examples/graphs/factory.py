"""``factory``: a graph factory, rebuilt for every run from the run's config."""

from typing import Any, TypedDict

from langgraph.graph import END, START, StateGraph


class State(TypedDict, total=False):
    greeting: str


def make_graph(config: dict[str, Any]) -> Any:
    who = config.get("configurable", {}).get("who", "world")

    def greet(state: State) -> State:
        return {"greeting": f"hello {who}"}

    return StateGraph(State).add_node(greet).add_edge(START, "greet").add_edge("greet", END)
