"""The benchmark's chat graph: one node whose fake chat model streams ``tokens`` tokens.

The model streams natively on asyncio, as the clients of real providers do; LangChain's
``GenericFakeChatModel`` alone would hop to a worker thread for every token, which no real
model does. It never waits between tokens, so a run streams all its tokens in one go while
the other runs wait (the heaviest load per token the server can be given); with the input
``interleave: true`` it yields to the event loop after each token, as a real client does
while it waits for the next chunk from the network, so that runs take turns token by token.
The reply is ``tokens`` tokens (words and the spaces between them).
"""

import asyncio
from collections.abc import AsyncIterator
from typing import Annotated, Any, TypedDict

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, AnyMessage, BaseMessage
from langchain_core.outputs import ChatGenerationChunk
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages


class StreamingFakeChat(GenericFakeChatModel):
    interleave: bool = False

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        for chunk in self._stream(messages, stop=stop, **kwargs):
            if run_manager is not None:
                await run_manager.on_llm_new_token(chunk.text, chunk=chunk)
            yield chunk
            if self.interleave:
                await asyncio.sleep(0)


class State(TypedDict, total=False):
    messages: Annotated[list[AnyMessage], add_messages]
    tokens: int
    interleave: bool


async def chat(state: State) -> State:
    words = max(1, (state.get("tokens", 100) + 1) // 2)  # "w w w": 2 * words - 1 tokens
    reply = AIMessage(content=" ".join(["token"] * words))
    model = StreamingFakeChat(messages=iter([reply]), interleave=state.get("interleave", False))
    return {"messages": [await model.ainvoke(state.get("messages", []))]}


graph = StateGraph(State).add_node(chat).add_edge(START, "chat").add_edge("chat", END).compile()
