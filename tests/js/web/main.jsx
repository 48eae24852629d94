// A small chat page on useStream of @langchain/react against the server that serves it:
// the thread id goes into ?thread= (so a reload re-attaches), messages render as they
// stream, an interrupt renders with an Approve button that resumes it.
import { useState } from "react";
import { createRoot } from "react-dom/client";
import { useStream } from "@langchain/react";

const params = new URLSearchParams(location.search);

function text(message) {
  const content = message.content;
  if (typeof content === "string") return content;
  return (content ?? []).map((block) => block.text ?? "").join("");
}

function kind(message) {
  return message.type ?? (message.getType ? message.getType() : message.role);
}

function Chat() {
  const [draft, setDraft] = useState("");
  const stream = useStream({
    assistantId: params.get("assistant") ?? "tooluser",
    apiUrl: location.origin,
    threadId: params.get("thread") ?? undefined,
    onThreadId: (id) => {
      const url = new URL(location.href);
      url.searchParams.set("thread", id);
      history.replaceState(null, "", url);
    },
  });
  const pause = Number(params.get("pause") ?? "0");
  return (
    <main>
      <ul>
        {stream.messages.map((m, i) => (
          <li key={m.id ?? i} data-testid="message" data-kind={kind(m)}>
            {text(m)}
          </li>
        ))}
      </ul>
      {stream.interrupts.map((interrupt, i) => (
        <div key={interrupt.id ?? i} data-testid="interrupt">
          <span>{JSON.stringify(interrupt.value)}</span>
          <button onClick={() => void stream.respond("yes")}>Approve</button>
        </div>
      ))}
      <p data-testid="status">{stream.isLoading ? "loading" : "idle"}</p>
      <input data-testid="draft" value={draft} onChange={(e) => setDraft(e.target.value)} />
      <button
        onClick={() => {
          void stream.submit({ messages: [{ type: "human", content: draft }], pause });
          setDraft("");
        }}
      >
        Send
      </button>
    </main>
  );
}

createRoot(document.getElementById("root")).render(<Chat />);
