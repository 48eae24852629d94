"""Meta endpoints and CORS."""

from __future__ import annotations

from tests.sdk import Server


async def test_ok_and_info(server: Server) -> None:
    async with server.http() as http:
        assert (await http.get("/ok")).json()["ok"] is True
        info = (await http.get("/info")).json()
    assert info["flags"]["assistants"] is True
    assert info["flags"]["webhooks"] is True
    assert set(info["stream_modes"]) >= {"values", "messages-tuple", "events"}
    assert set(info["multitask_strategies"]) == {"enqueue", "reject", "interrupt", "rollback"}
    assert info["storage"] == server.core.storage.name


async def test_cors_for_browsers_only(server: Server) -> None:
    async with server.http() as http:
        preflight = await http.options(
            "/runs/stream",
            headers={"Origin": "http://studio.example", "Access-Control-Request-Method": "POST"},
        )
        plain = await http.get("/ok")
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == "*"
    assert "POST" in preflight.headers["access-control-allow-methods"]
    assert "access-control-allow-origin" not in plain.headers
