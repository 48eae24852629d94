"""``chat``: one node calling a fake streaming chat model (no network, no API key)."""

from typing import Annotated

from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, AnyMessage
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages
from typing_extensions import TypedDict  # pydantic builds the JSON schema on Python < 3.12 too


class State(TypedDict):
    messages: Annotated[list[AnyMessage], add_messages]


def _model() -> GenericFakeChatModel:
    # a fresh iterator per call: every reply is the same three tokens, "hello there friend"
    return GenericFakeChatModel(messages=iter([AIMessage(content="hello there friend")]))


async def chat(state: State) -> State:
    reply = await _model().ainvoke(state["messages"])
    return {"messages": [reply]}


graph = StateGraph(State).add_node(chat).add_edge(START, "chat").add_edge("chat", END).compile()
