"""``/docs`` in a real browser without internet: headless Chromium (Debian's, driven by
Playwright) renders every operation of ``/openapi.json`` with every request the page makes
answered by this server, and none going anywhere else.

Needs Debian's ``chromium`` (``.ci/chromium`` installs it and exports
``TRIOGRAPH_TEST_CHROMIUM``); skipped only where neither is there. It does not depend on
the storage backend, so it runs on the memory pass only.
"""

from __future__ import annotations

import os
import pathlib
from typing import Any

import pytest
import trio

from tests.conftest import TEST_STORAGE
from tests.sdk import Server

CHROMIUM = os.environ.get("TRIOGRAPH_TEST_CHROMIUM", "/usr/bin/chromium")

pytestmark = pytest.mark.skipif(TEST_STORAGE != "memory", reason="the page uses no storage")
needs_chromium = pytest.mark.skipif(
    not os.path.exists(CHROMIUM) and "TRIOGRAPH_TEST_CHROMIUM" not in os.environ,
    reason="no chromium (source .ci/chromium)",
)


def browse(url: str, screenshot: pathlib.Path) -> dict[str, Any]:
    """Open ``url``/docs offline; what the page showed and which requests it made."""
    from playwright.sync_api import sync_playwright

    local, foreign = [], []
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"]
        )
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 2000})

            def route(r: Any) -> None:  # the machine is offline: only the server answers
                if r.request.url.startswith(url):
                    local.append(r.request.url.removeprefix(url))
                    r.continue_()
                else:
                    foreign.append(r.request.url)
                    r.abort()

            page.route("**/*", route)
            page.goto(url + "/docs")
            page.wait_for_selector(".opblock", timeout=30_000)
            page.screenshot(path=str(screenshot), full_page=False)
            shown = {
                "title": page.title(),
                "paths": page.eval_on_selector_all(
                    ".opblock-summary-path", "els => els.map(e => e.getAttribute('data-path'))"
                ),
                "methods": page.eval_on_selector_all(
                    ".opblock-summary-method", "els => els.map(e => e.textContent)"
                ),
                "errors": page.eval_on_selector_all(".errors-wrapper", "els => els.length"),
            }
        finally:
            browser.close()
    return {**shown, "local": local, "foreign": foreign}


@needs_chromium
async def test_docs_render_every_operation_offline(server: Server, tmp_path: pathlib.Path) -> None:
    async with server.http() as h:
        document = (await h.get("/openapi.json")).json()
    operations = sum(len(methods) for methods in document["paths"].values())
    shot = tmp_path / "docs.png"
    seen = await trio.to_thread.run_sync(browse, server.url, shot)
    assert seen["foreign"] == []
    assert {"/docs", "/docs/swagger-ui-bundle.js", "/docs/swagger-ui.css", "/openapi.json"} <= set(
        seen["local"]
    )
    assert seen["errors"] == 0
    assert len(seen["paths"]) == operations
    assert set(seen["paths"]) == set(document["paths"])
    assert "/runs/wait" in seen["paths"]
    assert "POST" in seen["methods"]
    assert shot.stat().st_size > 10_000  # a picture with something on it
    assert shot.read_bytes().startswith(b"\x89PNG")


async def test_docs_assets_are_served_and_nothing_else(server: Server) -> None:
    async with server.http() as h:
        page = await h.get("/docs")
        assert page.status_code == 200
        assert "cdn" not in page.text
        script = await h.get("/docs/swagger-ui-bundle.js")
        assert script.status_code == 200
        assert script.headers["content-type"].startswith("text/javascript")
        assert b"SwaggerUIBundle" in script.content
        missing = await h.get("/docs/..%2Fpyproject.toml")
        assert missing.status_code == 404
        assert (await h.get("/docs/LICENSE")).status_code == 404
