"""The thread protocol from JavaScript: the JS SDK's ``client.threads.stream`` from Node
(``tests/js/node_sdk.mjs``, SSE and WebSocket), and a real browser: a React page using
``useStream`` of ``@langchain/react`` (``tests/js/web``, built with Vite) in Debian's
Chromium driven by Playwright: send a message, render the tool call and the interrupt, resume
it, render the answer's tokens as they stream, reload mid-answer and see it finish.

The npm packages are installed into a directory outside the repository by ``.ci/js``
(``TRIOGRAPH_TEST_JS`` names it; ``.ci/run`` does it once and runs this module once): without
it these tests are skipped. They use no storage, so they run on the memory pass only.
"""

from __future__ import annotations

import mimetypes
import os
import pathlib
from typing import Any

import orjson
import pytest
import trio

from tests.conftest import TEST_STORAGE
from tests.sdk import Server

JS = os.environ.get("TRIOGRAPH_TEST_JS")
CHROMIUM = os.environ.get("TRIOGRAPH_TEST_CHROMIUM", "/usr/bin/chromium")

pytestmark = [
    pytest.mark.skipif(TEST_STORAGE != "memory", reason="the clients use no storage"),
    pytest.mark.skipif(JS is None, reason="no npm packages (run .ci/js, or .ci/run)"),
]


def content_text(message: dict[str, Any]) -> str:
    """The text of a message as the JS SDK serializes it (LangChain's constructor form)."""
    fields = message.get("kwargs", message)
    content = fields["content"]
    if isinstance(content, str):
        return content
    return "".join(b.get("text", "") for b in content if isinstance(b, dict))


@pytest.mark.parametrize("transport", ["sse", "websocket"])
async def test_js_sdk_threads_stream_from_node(server: Server, transport: str) -> None:
    assert JS is not None
    with trio.fail_after(90):
        done = await trio.run_process(
            ["node", "node_sdk.mjs", server.url, transport], cwd=JS, capture_stdout=True
        )
    got = orjson.loads(done.stdout.splitlines()[-1])
    # token by token; the SDK's text iterator may end at message-finish before handing over
    # the last delta of the same read (seen with 1.15.0), so the tokens are a prefix
    assert len(got["tokens"]) > 1
    assert "hello there friend".startswith("".join(got["tokens"]))
    assert content_text(got["chat"]["messages"][-1]) == "hello there friend"
    assert got["call"]["name"] == "add"
    assert got["call"]["input"] == {"a": 1, "b": 2}
    assert "3" in str(got["call"]["output"])
    assert got["interrupts"][0]["payload"] == {"question": "send the answer?", "sum": "3"}
    assert got["tools"]["verdict"] == "yes"
    assert content_text(got["tools"]["messages"][-1]) == "the sum is 3, yes"


def drive_page(url: str, dist: pathlib.Path, shots: pathlib.Path) -> dict[str, Any]:
    """The page's scenario in Chromium; what it saw at each step."""
    from playwright.sync_api import sync_playwright

    app = url + "/__page/"
    seen: dict[str, Any] = {}

    def serve(route: Any) -> None:  # the built page, from the API's origin (no CORS needed)
        path = route.request.url.removeprefix(app).split("?", 1)[0] or "index.html"
        file = dist / path
        kind = mimetypes.guess_type(file.name)[0] or "application/octet-stream"
        route.fulfill(status=200, body=file.read_bytes(), content_type=kind)

    def texts(page: Any) -> list[str]:
        return page.eval_on_selector_all(  # type: ignore[no-any-return]
            "[data-testid=message]", "els => els.map(e => e.dataset.kind + ':' + e.textContent)"
        )

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"]
        )
        try:
            page = browser.new_page()
            page.route(app + "**", serve)
            page.goto(app + "index.html?pause=0.4")
            page.fill("[data-testid=draft]", "add one and two")
            page.click("text=Send")
            page.wait_for_selector("[data-testid=interrupt]", timeout=30_000)
            seen["interrupt"] = page.text_content("[data-testid=interrupt]")
            seen["before_resume"] = texts(page)
            seen["thread"] = page.evaluate("new URLSearchParams(location.search).get('thread')")
            page.screenshot(path=str(shots / "interrupt.png"))
            page.click("text=Approve")
            # the answer streams a token every 0.4 s: catch it half written, then reload
            page.wait_for_function(
                "() => [...document.querySelectorAll('[data-testid=message]')]"
                ".some(e => e.textContent.startsWith('the sum') && !e.textContent.endsWith('yes'))",
                timeout=30_000,
            )
            seen["partial"] = texts(page)
            page.reload()
            page.wait_for_function(
                "() => [...document.querySelectorAll('[data-testid=message]')]"
                ".some(e => e.textContent === 'the sum is 3, yes')",
                timeout=30_000,
            )
            page.wait_for_selector("[data-testid=status]:has-text('idle')", timeout=30_000)
            seen["after_reload"] = texts(page)
            seen["thread_after"] = page.evaluate(
                "new URLSearchParams(location.search).get('thread')"
            )
            page.screenshot(path=str(shots / "answered.png"))
        finally:
            browser.close()
    return seen


@pytest.mark.skipif(
    not os.path.exists(CHROMIUM) and "TRIOGRAPH_TEST_CHROMIUM" not in os.environ,
    reason="no chromium (source .ci/chromium)",
)
async def test_use_stream_in_a_browser(server: Server, tmp_path: pathlib.Path) -> None:
    assert JS is not None
    seen = await trio.to_thread.run_sync(
        drive_page, server.url, pathlib.Path(JS) / "dist", tmp_path
    )
    assert "send the answer?" in seen["interrupt"]
    assert "human:add one and two" in seen["before_resume"]
    assert "tool:3" in seen["before_resume"]
    partial = [t for t in seen["partial"] if t.startswith("ai:the sum")]
    assert partial
    assert partial[0] != "ai:the sum is 3, yes"  # rendered while streaming
    assert seen["thread_after"] == seen["thread"]  # the reload re-attached to the same thread
    assert seen["after_reload"][-1] == "ai:the sum is 3, yes"
    state = await server.sync(lambda c: c.threads.get_state(seen["thread"]))
    assert state["values"]["verdict"] == "yes"
