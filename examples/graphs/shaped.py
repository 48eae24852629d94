"""``shaped``: a graph factory whose nodes come from the config it is built with.

``configurable.steps`` names the nodes, run in that order (default: one node ``only``);
each appends its name to ``trail``. An assistant's drawing and schemas therefore show the
graph its own config makes.
"""

from typing import Any

from langgraph.graph import START, StateGraph
from typing_extensions import TypedDict  # pydantic builds the JSON schema on Python < 3.12 too


class State(TypedDict, total=False):
    trail: list[str]


def _step(name: str) -> Any:
    def step(state: State) -> State:
        return {"trail": [*state.get("trail", []), name]}

    return step


def make_graph(config: dict[str, Any]) -> Any:
    steps = config.get("configurable", {}).get("steps") or ["only"]
    builder = StateGraph(State)
    previous = START
    for name in steps:
        builder.add_node(name, _step(name))
        builder.add_edge(previous, name)
        previous = name
    return builder
