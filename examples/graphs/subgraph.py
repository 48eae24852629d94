"""``subgraph``: the seed's parent graph whose node ``node_2`` is a compiled subgraph."""

from langgraph.graph import START, StateGraph
from typing_extensions import TypedDict  # pydantic builds the JSON schema on Python < 3.12 too


class SubgraphState(TypedDict):
    foo: str  # shared with the parent
    bar: str


def subgraph_node_1(state: SubgraphState) -> dict[str, str]:
    return {"bar": "bar"}


def subgraph_node_2(state: SubgraphState) -> dict[str, str]:
    return {"foo": state["foo"] + state["bar"]}


_sub = StateGraph(SubgraphState)
_sub.add_node(subgraph_node_1)
_sub.add_node(subgraph_node_2)
_sub.add_edge(START, "subgraph_node_1")
_sub.add_edge("subgraph_node_1", "subgraph_node_2")
subgraph = _sub.compile()


class ParentState(TypedDict):
    foo: str


def node_1(state: ParentState) -> dict[str, str]:
    return {"foo": "hi! " + state["foo"]}


_parent = StateGraph(ParentState)
_parent.add_node("node_1", node_1)
_parent.add_node("node_2", subgraph)
_parent.add_edge(START, "node_1")
_parent.add_edge("node_1", "node_2")
graph = _parent.compile()
