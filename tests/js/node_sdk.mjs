// The JS SDK's client.threads.stream against a triograph server, from Node.
// usage: node node_sdk.mjs <server url> <sse|websocket>
// Prints one JSON object: the streamed tokens, the tool call, the interrupt and the outputs.
import { Client } from "@langchain/langgraph-sdk";
import { WebSocket } from "ws";

// Node 20 has no global WebSocket (22 has): the SDK's WebSocket transport uses the global one
globalThis.WebSocket ??= WebSocket;

const [url, transport] = process.argv.slice(2);
const client = new Client({ apiUrl: url });
const out = {};

// a chat run: tokens as they stream, then the final state
// (projections are opened before the run starts: a projection opened later may find the
// message already complete)
const chat = client.threads.stream({ assistantId: "chat", transport });
out.tokens = [];
const tokens = (async () => {
  for await (const message of chat.messages) {
    for await (const token of message.text) out.tokens.push(token);
    break;
  }
})();
await chat.run.start({ input: { messages: [{ role: "user", content: "hi" }] } });
await tokens;
out.chat = await chat.output;
await chat.close();

// a tool call, an interrupt answered, the streamed answer
const tools = client.threads.stream({ assistantId: "tooluser", transport });
const calls = (async () => {
  for await (const call of tools.toolCalls) {
    out.call = { name: call.name, input: call.input, output: await call.output };
    break;
  }
})();
await tools.run.start({ input: { messages: [{ role: "user", content: "add" }] } });
await calls;
for (let i = 0; i < 200 && !tools.interrupted; i++) await new Promise((r) => setTimeout(r, 50));
out.interrupts = tools.interrupts.map((i) => ({ ...i }));
await tools.input.respond({
  interrupt_id: tools.interrupts[0].interruptId,
  response: "yes",
});
// the resumed run's end, read from the thread's state (the SDK's per-run projections of
// this stream object belong to the interrupted run)
for (let i = 0; i < 400; i++) {
  const state = await client.threads.getState(tools.threadId);
  if (state.values.verdict && state.next.length === 0) {
    out.tools = state.values;
    break;
  }
  await new Promise((r) => setTimeout(r, 50));
}
await tools.close();

console.log(JSON.stringify(out));
process.exit(0);
