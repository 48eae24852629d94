"""``ctxgraph``: a run context schema, distinct input/output schemas, and the shared store.

The node reads ``runtime.context.user``, remembers the call in the store under
``("ctx", user)`` and answers with what the store held for that user before (so items put
through the store API are visible to the graph, and the graph's writes to the API).
"""

from dataclasses import dataclass

from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime
from typing_extensions import TypedDict  # pydantic builds its JSON schema on Python < 3.12 too


@dataclass
class Context:
    user: str = "anonymous"


class Input(TypedDict):
    question: str


class Output(TypedDict):
    answer: str
    seen: list[str]


class State(Input, Output, total=False):
    pass


async def remember(state: State, runtime: Runtime[Context]) -> State:
    user = runtime.context.user
    assert runtime.store is not None
    namespace = ("ctx", user)
    seen = sorted(item.key for item in await runtime.store.asearch(namespace, limit=100))
    await runtime.store.aput(namespace, f"q{len(seen)}", {"question": state["question"]})
    return {"answer": f"{user} asked {state['question']}", "seen": seen}


graph = (
    StateGraph(State, context_schema=Context, input_schema=Input, output_schema=Output)
    .add_node(remember)
    .add_edge(START, "remember")
    .add_edge("remember", END)
    .compile(name="ctxgraph")
)
