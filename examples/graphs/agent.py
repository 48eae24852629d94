"""The seed documents' ``agent``: refine a topic, then tell a joke about it."""

from langgraph.graph import END, START, StateGraph
from typing_extensions import TypedDict  # pydantic builds the JSON schema on Python < 3.12 too


class State(TypedDict, total=False):
    topic: str
    joke: str


def refine_topic(state: State) -> State:
    return {"topic": state["topic"] + " and cats"}


def generate_joke(state: State) -> State:
    return {"joke": f"This is a joke about {state['topic']}"}


graph = (
    StateGraph(State)
    .add_node(refine_topic)
    .add_node(generate_joke)
    .add_edge(START, "refine_topic")
    .add_edge("refine_topic", "generate_joke")
    .add_edge("generate_joke", END)
    .compile()
)
