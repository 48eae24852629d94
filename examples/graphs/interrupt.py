"""``interrupter``: asks a question with ``interrupt()`` and answers with the resume value."""

from typing import TypedDict

from langgraph.graph import END, START, StateGraph
from langgraph.types import interrupt


class State(TypedDict, total=False):
    question: str
    answer: str


def ask(state: State) -> State:
    name = interrupt({"question": state["question"]})
    return {"answer": f"{name}!"}


graph = StateGraph(State).add_node(ask).add_edge(START, "ask").add_edge("ask", END).compile()
