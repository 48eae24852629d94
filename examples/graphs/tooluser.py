"""``tooluser``: a chat agent that calls a tool, asks for approval, then answers.

``plan`` returns a whole ``AIMessage`` calling the ``add`` tool (no model streams it),
``tools`` runs it (LangGraph's ``ToolNode``), ``approve`` stops at ``interrupt()`` with the
sum, and ``answer`` streams the reply token by token from a fake chat model: "the sum is
<n>, <resume value>", ``pause`` seconds apart (input ``pause``, default 0: a browser test
reloads its page mid-answer); ``approve`` waits ``pause`` seconds too before it stops.
Exercises every channel of the thread protocol.
"""

import asyncio
from collections.abc import AsyncIterator
from typing import Annotated, Any

from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, AnyMessage
from langchain_core.outputs import ChatGenerationChunk
from langchain_core.tools import tool
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages
from langgraph.prebuilt import ToolNode
from langgraph.types import interrupt
from typing_extensions import TypedDict  # pydantic builds the JSON schema on Python < 3.12 too


class State(TypedDict, total=False):
    messages: Annotated[list[AnyMessage], add_messages]
    verdict: str
    pause: float


class _PausingModel(GenericFakeChatModel):
    """The fake chat model, waiting ``pause`` seconds before each token."""

    pause: float = 0.0

    async def _astream(self, *args: Any, **kwargs: Any) -> AsyncIterator[ChatGenerationChunk]:
        async for chunk in super()._astream(*args, **kwargs):
            await asyncio.sleep(self.pause)
            yield chunk


@tool
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


def plan(state: State) -> State:
    call = {"name": "add", "args": {"a": 1, "b": 2}, "id": "call_add"}
    return {"messages": [AIMessage(content="", tool_calls=[call])]}


async def approve(state: State) -> State:
    await asyncio.sleep(state.get("pause", 0))  # a client's view of the tool call comes first
    verdict = interrupt({"question": "send the answer?", "sum": state["messages"][-1].content})
    return {"verdict": str(verdict)}


async def answer(state: State) -> State:
    text = f"the sum is {state['messages'][-1].content}, {state['verdict']}"
    model = _PausingModel(messages=iter([AIMessage(content=text)]), pause=state.get("pause", 0))
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
