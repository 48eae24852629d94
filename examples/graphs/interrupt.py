"""``interrupter``: asks a question with ``interrupt()`` and answers with the resume value."""

from langgraph.graph import END, START, StateGraph
from langgraph.types import interrupt
from typing_extensions import TypedDict  # pydantic builds the JSON schema on Python < 3.12 too


class State(TypedDict, total=False):
    question: str
    answer: str


def ask(state: State) -> State:
    name = interrupt({"question": state["question"]})
    return {"answer": f"{name}!"}


graph = StateGraph(State).add_node(ask).add_edge(START, "ask").add_edge("ask", END).compile()
