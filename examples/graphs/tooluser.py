"""``tooluser``: a chat agent that calls a tool, asks for approval, then answers.

``plan`` returns a whole ``AIMessage`` calling the ``add`` tool (no model streams it),
``tools`` runs it (LangGraph's ``ToolNode``), ``approve`` stops at ``interrupt()`` with the
sum, and ``answer`` streams the reply token by token from a fake chat model: "the sum is
<n>, <resume value>". Exercises every channel of the thread protocol.
"""

from typing import Annotated

from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, AnyMessage
from langchain_core.tools import tool
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages
from langgraph.prebuilt import ToolNode
from langgraph.types import interrupt
from typing_extensions import TypedDict  # pydantic builds the JSON schema on Python < 3.12 too


class State(TypedDict, total=False):
    messages: Annotated[list[AnyMessage], add_messages]
    verdict: str


@tool
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


def plan(state: State) -> State:
    call = {"name": "add", "args": {"a": 1, "b": 2}, "id": "call_add"}
    return {"messages": [AIMessage(content="", tool_calls=[call])]}


def approve(state: State) -> State:
    verdict = interrupt({"question": "send the answer?", "sum": state["messages"][-1].content})
    return {"verdict": str(verdict)}


async def answer(state: State) -> State:
    text = f"the sum is {state['messages'][-1].content}, {state['verdict']}"
    model = GenericFakeChatModel(messages=iter([AIMessage(content=text)]))
    return {"messages": [await model.ainvoke(state["messages"])]}


graph = (
    StateGraph(State)
    .add_node(plan)
    .add_node("tools", ToolNode([add]))
    .add_node(approve)
    .add_node(answer)
    .add_edge(START, "plan")
    .add_edge("plan", "tools")
    .add_edge("tools", "approve")
    .add_edge("approve", "answer")
    .add_edge("answer", END)
    .compile()
)
