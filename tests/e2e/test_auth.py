"""Custom authentication: loading ``auth`` from ``langgraph.json``, who may come in, what the
authenticate handler is given and where it runs, what clients get when it refuses, and the
user a run carries. (Who may see what is ``test_tenants.py``.)"""

from __future__ import annotations

import datetime as dt
import functools
import json
import pathlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import attrs
import httpx
import jwt
import pytest
import trio
import wsproto
import wsproto.events

from tests import authapps
from tests.auth import SECRET, auth_server, bearer, token
from tests.conftest import ROOT, example_settings, start_server
from tests.e2e.test_webhooks import WEBHOOKS, Receiver
from tests.sdk import Server, poll
from triograph.core.http import cli
from triograph.core.http.app import app_core, create_app
from triograph.core.infra.models import RUN_STATUSES, Run, now
from triograph.core.infra.settings import GraphSpec, load_settings

WHO = GraphSpec(graph_id="whoami", path=f"{ROOT / 'tests' / 'authapps.py'}:who_graph")


def user(name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer user:{name}"}


@asynccontextmanager
async def serving(nursery: trio.Nursery, auth: str, **overrides: Any) -> AsyncIterator[Server]:
    """A server whose ``auth.path`` is ``tests.authapps:<auth>``, with the ``whoami`` graph."""
    settings = example_settings(auth={"path": f"tests.authapps:{auth}"}, shutdown_grace=0.5)
    settings = attrs.evolve(settings, graphs=(*settings.graphs, WHO), **overrides)
    async with asynccontextmanager(start_server)(nursery, settings) as server:
        yield server


async def whoami(server: Server, headers: dict[str, str], **body: Any) -> dict[str, Any]:
    async with server.http() as http:
        response = await http.post(
            "/runs/wait", json={"assistant_id": "whoami", "input": {}, **body}, headers=headers
        )
    assert response.status_code == 200, response.text
    return response.json()["who"]  # type: ignore[no-any-return]


# -- loading: a bad ``auth`` stops the server before it serves (exit status 2) ------------------


def _config(tmp_path: pathlib.Path, auth: Any, files: dict[str, str] | None = None) -> str:
    for name, text in (files or {}).items():
        (tmp_path / name).write_text(text)
    config = {"graphs": {"agent": str(ROOT / "examples" / "graphs" / "agent.py") + ":graph"}}
    (tmp_path / "langgraph.json").write_text(json.dumps({**config, "auth": auth}))
    return str(tmp_path / "langgraph.json")


@pytest.mark.parametrize(
    ("auth", "files", "says"),
    [
        ({"path": "./missing.py:auth"}, None, "auth.path: cannot load"),
        ({"path": "./auth.py:nope"}, {"auth.py": "x = 1\n"}, "has no 'nope'"),
        ({"path": "tests.authapps:not_an_auth"}, None, "is a dict, not a langgraph_sdk.Auth"),
        ({"path": "tests.authapps:no_authenticate"}, None, "no @auth.authenticate handler"),
        ({"path": "tests.authapps:unsupported_parameter"}, None, "takes ['db']"),
        ({"path": "./auth.py:auth"}, {"auth.py": "raise KeyError('SECRET')\n"}, "KeyError"),
        ({"path": "tests.authapps:recording", "cache": 3}, None, "auth.cache: expected"),
        ({"path": "tests.authapps:recording", "nope": 1}, None, "auth.nope: unknown key"),
        ({"path": "tests.authapps:recording", "allow_langsmith_api_keys": True}, None, "LangSmith"),
        ({"disable_studio_auth": True}, None, "auth.path: expected"),
        ("./auth.py:auth", None, "'auth' must be an object"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_a_bad_auth_stops_start_up(
    tmp_path: pathlib.Path,
    capsys: pytest.CaptureFixture[str],
    auth: Any,
    files: dict[str, str] | None,
    says: str,
) -> None:
    assert cli.main(["dev", "--config", _config(tmp_path, auth, files)]) == 2
    assert says in capsys.readouterr().err


def test_auth_sees_the_env_and_dependencies_of_langgraph_json(tmp_path: pathlib.Path) -> None:
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "secrets_of_test.py").write_text("PREFIX = 'from-lib'\n")
    files = {
        "auth.py": "import os\nimport secrets_of_test\nfrom langgraph_sdk import Auth\n"
        "auth = Auth()\nSECRET = os.environ['AUTH_TEST_SECRET_X'] + secrets_of_test.PREFIX\n"
        "@auth.authenticate\nasync def who(authorization: str | None) -> str:\n"
        "    return SECRET\n"
    }
    config = _config(tmp_path, {"path": "./auth.py:auth"}, files)
    raw = json.loads(pathlib.Path(config).read_text())
    raw |= {"env": {"AUTH_TEST_SECRET_X": "s3"}, "dependencies": ["./lib"]}
    pathlib.Path(config).write_text(json.dumps(raw))
    app = create_app(load_settings(config, storage="memory"))
    plugin = app_core(app).pm.get_plugin("triograph.plugins.sdk_auth")
    assert plugin.auth._authenticate_handler.__globals__["SECRET"] == "s3from-lib"


def test_auth_configured_but_its_plugin_disabled_stops_start_up(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _config(tmp_path, {"path": "tests.authapps:recording"})
    raw = json.loads(pathlib.Path(config).read_text())
    raw["triograph"] = {"disable_plugins": ["triograph.plugins.sdk_auth"]}
    pathlib.Path(config).write_text(json.dumps(raw))
    assert cli.main(["dev", "--config", config]) == 2
    assert "no plugin authenticates requests" in capsys.readouterr().err


# -- who may come in -------------------------------------------------------------------------------


async def test_every_route_but_health_and_docs_needs_credentials(nursery: trio.Nursery) -> None:
    async with auth_server(nursery) as server, server.http() as http:
        for path in ("/ok", "/", "/docs", "/openapi.json"):
            assert (await http.get(path)).status_code == 200, path
        for method, path in [
            ("GET", "/info"),
            ("POST", "/threads/search"),
            ("POST", "/assistants/search"),
            ("POST", "/runs/wait"),
            ("POST", "/store/items/search"),
            ("GET", "/no/such/route"),
        ]:
            response = await http.request(method, path, json={})
            assert response.status_code == 401, (method, path)
            assert response.json() == {"detail": "Missing bearer token"}
            assert response.headers["www-authenticate"] == "Bearer"
        assert (await http.get("/info", headers=bearer("alice"))).status_code == 200


async def test_bad_tokens_are_401s_that_say_why(nursery: trio.Nursery) -> None:
    async with auth_server(nursery) as server, server.http() as http:
        cases = {
            "expired": (bearer("alice", ttl=-60), "Token expired"),
            "malformed": ({"Authorization": "Bearer not.a.jwt"}, "Invalid token"),
            "wrong key": (bearer("alice", secret="another-secret-of-32-bytes-or-more!!"), None),
            "no sub": (
                {"Authorization": "Bearer " + jwt.encode({"name": "x"}, SECRET, "HS256")},
                "Invalid token",
            ),
            "not bearer": ({"Authorization": f"Basic {token('alice')}"}, "Missing bearer token"),
        }
        for name, (headers, detail) in cases.items():
            response = await http.post("/threads/search", json={}, headers=headers)
            assert response.status_code == 401, name
            assert response.json()["detail"] == (detail or "Invalid token"), name
        assert (await http.get("/info", headers=bearer("alice"))).status_code == 200


async def test_an_oversized_token_is_refused_and_the_server_goes_on(nursery: trio.Nursery) -> None:
    async with auth_server(nursery) as server, server.http() as http:
        huge = await http.get("/info", headers={"Authorization": "Bearer " + "x" * 128_000})
        assert huge.status_code == 431  # Hypercorn's header limit: the handler never runs
        long = await http.get("/info", headers={"Authorization": "Bearer " + "x" * 16_000})
        assert (long.status_code, long.json()) == (401, {"detail": "Invalid token"})
        big = bearer("alice", padding="p" * 6000)  # large but valid: accepted
        assert (await http.get("/info", headers=big)).status_code == 200


async def test_browsers_can_read_refusals_and_preflights_need_no_credentials(
    nursery: trio.Nursery,
) -> None:
    async with auth_server(nursery) as server, server.http() as http:
        origin = {"Origin": "http://studio.example"}
        preflight = await http.options(
            "/threads/search",
            headers={**origin, "Access-Control-Request-Method": "POST"},
        )
        refused = await http.post("/threads/search", json={}, headers=origin)
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == "*"
    assert refused.status_code == 401
    assert refused.headers["access-control-allow-origin"] == "*"


# -- what authenticate gets, and where it runs ---------------------------------------------------


async def test_authenticate_gets_the_parameters_it_names(nursery: trio.Nursery) -> None:
    authapps.SEEN.clear()
    async with serving(nursery, "recording") as server, server.http() as http:
        thread = (await http.post("/threads", json={}, headers=user("ann"))).json()
        tid = thread["thread_id"]
        response = await http.get(
            f"/threads/{tid}?q=1&q=2", headers={**user("ann"), "x-probe": "p"}
        )
        assert response.status_code == 200
        body = {"metadata": {"k": "v"}}
        await http.patch(f"/threads/{tid}", json=body, headers=user("ann"))
    get, patch = authapps.SEEN[1], authapps.SEEN[2]
    assert get == {
        "body": None,
        "request_body": b"",
        "request_path": f"/threads/{tid}",
        "header": b"p",
        "authorization": "Bearer user:ann",
        "method": "GET",
        "path": f"/threads/{tid}",
        "path_params": {"thread_id": tid},
        "query": "1",
        "scope_type": "http",
        "thread": "triograph-graph-loop",
    }
    assert (patch["body"], json.loads(patch["request_body"])) == (body, body)
    assert patch["method"] == "PATCH"


async def test_handlers_get_the_user_and_the_value(nursery: trio.Nursery) -> None:
    authapps.ASKED.clear()
    async with serving(nursery, "recording") as server, server.http() as http:
        response = await http.post("/threads", json={"metadata": {"a": 1}}, headers=user("ann"))
        tid = response.json()["thread_id"]
        assert (await http.get(f"/threads/{tid}", headers=user("ann"))).status_code == 200
    (create_resource, create_action, create_value), (_, read_action, read_value) = authapps.ASKED
    assert (create_resource, create_action) == ("threads", "create")
    assert create_value == {
        "thread_id": tid,
        "metadata": {"a": 1},
        "if_exists": "raise",
        "ttl": None,
    }
    assert (read_action, read_value) == ("read", {"thread_id": tid})


async def test_a_sync_handler_runs_in_a_worker_thread(nursery: trio.Nursery) -> None:
    authapps.RELEASE.clear()
    authapps.THREADS.clear()
    async with serving(nursery, "blocking") as server, server.http() as http:
        done = trio.Event()

        async def blocked() -> None:
            assert (await http.get("/info", headers={"x-block": "1"})).status_code == 200
            done.set()

        nursery.start_soon(blocked)
        await poll(lambda: _now(authapps.THREADS), bool)
        # the first request waits in its handler; the loop serves others meanwhile
        assert (await http.get("/info")).status_code == 200
        assert not done.is_set()
        authapps.RELEASE.set()
        with trio.fail_after(10):
            await done.wait()
    assert all(name != "MainThread" and "graph-loop" not in name for name in authapps.THREADS)


async def test_an_async_handler_runs_on_an_asyncio_loop(nursery: trio.Nursery) -> None:
    async with serving(nursery, "asyncio_native") as server:
        who = await whoami(server, user("nat"))
    assert (who["identity"], who["fields"]["display_name"]) == ("nat", "Native")


async def _now(value: Any) -> Any:
    return value


# -- refusals --------------------------------------------------------------------------------------


async def test_what_clients_get_when_a_handler_refuses(nursery: trio.Nursery) -> None:
    async with serving(nursery, "failing") as server, server.http() as http:

        async def create(fail: str = "", deny: str = "") -> httpx.Response:
            body = {"metadata": {"deny": deny}} if deny else {}
            return await http.post("/threads", json=body, headers={"x-fail": fail})

        crash = await create("crash")
        assert (crash.status_code, crash.json()) == (401, {"detail": "Unauthorized"})
        assert "hunter2" not in crash.text
        rate = await create("rate")
        assert (rate.status_code, rate.json(), rate.headers["retry-after"]) == (
            429,
            {"detail": "slow down"},
            "7",
        )
        assert (await create("forbidden")).status_code == 403
        assert (await create("nobody")).status_code == 401
        assert (await create(deny="false")).json() == {"detail": "Forbidden"}
        assert (await create(deny="false")).status_code == 403
        asserted = await create(deny="assert")
        assert (asserted.status_code, asserted.json()) == (403, {"detail": "not your thread"})
        assert (await create(deny="teapot")).status_code == 418
        assert (await create(deny="junk")).status_code == 500
        assert (await create(deny="badfilter")).status_code == 500
        search = await http.post("/threads/search", json={}, headers={"x-fail": ""})
        assert search.json() == []  # nothing was created by any refused request
        created = await create()
        assert created.status_code == 200


async def test_users_from_tuples_and_objects(nursery: trio.Nursery) -> None:
    async with serving(nursery, "failing") as server:
        tupled = await whoami(server, {"x-fail": "tuple"})
        objecty = await whoami(server, {"x-fail": "object"})
        async with server.http() as http:
            made = await http.post("/threads", json={}, headers={"x-fail": "object"})
    assert tupled["fields"] == {
        "identity": "tupled",
        "display_name": "tupled",
        "is_authenticated": True,
        "permissions": ["admin"],
        "email": "t@example.com",
    }
    assert (objecty["identity"], objecty["fields"]["level"], objecty["permissions"]) == (
        "objecty",
        3,
        ["p1"],
    )
    assert made.json()["metadata"]["shouted"] == "HI"  # the handler saw the object's methods


async def test_the_docs_tutorial_auth_works_unchanged(nursery: trio.Nursery) -> None:
    """The shapes of the official tutorial: a token table, scoped handlers, assistants
    refused with a 403, store namespaces asserted."""
    one, two = {"Authorization": "Bearer user1-token"}, {"Authorization": "Bearer user2-token"}
    async with serving(nursery, "tutorial") as server, server.http() as http:
        assert (await http.post("/threads", json={})).status_code == 401  # assert authorization
        bad = await http.post("/threads", json={}, headers={"Authorization": "Bearer x"})
        assert (bad.status_code, bad.json()) == (401, {"detail": "Invalid token"})
        thread = (await http.post("/threads", json={}, headers=one)).json()
        assert thread["metadata"] == {"owner": "user1"}
        refused = await http.post("/assistants/search", json={}, headers=one)
        assert (refused.status_code, refused.json()) == (
            403,
            {"detail": "User lacks the required permissions."},
        )
        run = await http.post(
            "/runs/wait", json={"assistant_id": "agent", "input": {"topic": "t"}}, headers=two
        )
        assert run.json()["joke"] == "This is a joke about t and cats"
        item = {"namespace": ["user1", "prefs"], "key": "k", "value": {"v": 1}}
        assert (await http.put("/store/items", json=item, headers=one)).status_code == 204
        theirs = await http.put("/store/items", json=item, headers=two)
        assert (theirs.status_code, theirs.json()) == (403, {"detail": "Not authorized"})
        query = {"namespace": "user1.prefs", "key": "k"}
        assert (await http.get("/store/items", params=query, headers=two)).status_code == 403
        mine = await http.get("/store/items", params=query, headers=one)
        assert mine.json()["value"] == {"v": 1}


# -- the run's view ------------------------------------------------------------------------------


async def test_a_graph_factory_gets_the_user_in_its_server_runtime(
    nursery: trio.Nursery,
) -> None:
    """A ``(config, runtime)`` factory sees the authenticated user, for the run (with its
    context) and for a read of the thread's state, as the official server calls it."""
    from tests.e2e.test_conformance import FACTORY_LOG

    factory = GraphSpec(
        graph_id="two_parameter", path="tests.e2e.test_conformance:two_parameter_factory"
    )
    FACTORY_LOG.clear()
    settings = example_settings(auth={"path": "tests.authapps:recording"}, shutdown_grace=0.5)
    settings = attrs.evolve(settings, graphs=(*settings.graphs, factory))
    async with asynccontextmanager(start_server)(nursery, settings) as server:
        thread = await server.sync(lambda c: c.threads.create(), headers=user("ann"))
        tid = thread["thread_id"]
        result = await server.sync(
            lambda c: c.runs.wait(tid, "two_parameter", input={}, context={"who": "x"}),
            headers=user("ann"),
        )
        await server.sync(lambda c: c.threads.get_state(tid), headers=user("ann"))
    assert result["seen"] == "two_parameter|x"
    seen = {(access, getattr(who, "identity", None)) for access, who in FACTORY_LOG}
    assert {("threads.create_run", "ann"), ("threads.read", "ann")} <= seen


async def test_runs_carry_the_user_and_clients_cannot_forge_it(nursery: trio.Nursery) -> None:
    async with serving(nursery, "recording") as server:
        who = await whoami(server, user("ann"))
        forged = {
            "langgraph_auth_user": {"identity": "root"},
            "langgraph_auth_user_id": "root",
            "langgraph_auth_permissions": ["*"],
        }
        spoofed = await whoami(server, user("ann"), config={"configurable": forged})
        spoofed_ctx = await whoami(server, user("ann"), context=forged)
    assert who["identity"] == who["by_key"] == who["user_id"] == who["runtime"] == "ann"
    assert who["permissions"] == ["read", "write"]
    assert who["fields"]["team"] == "blue"
    for run in (spoofed, spoofed_ctx):
        assert (run["identity"], run["user_id"], run["permissions"]) == (
            "ann",
            "ann",
            ["read", "write"],
        )


async def test_a_run_does_its_own_chores_as_the_server(nursery: trio.Nursery) -> None:
    """A run's task does not inherit the request's user: deleting a stateless run's
    temporary thread afterwards is the server's business, not an action of the user's to
    authorize (the example's handlers would filter it)."""
    async with auth_server(nursery) as server, server.http() as http:
        body = {"assistant_id": "agent", "input": {"topic": "t"}}
        response = await http.post("/runs/wait", json=body, headers=bearer("alice"))
        assert response.json()["joke"] == "This is a joke about t and cats"
        threads = server.core.storage.threads
        await poll(lambda: threads.search(limit=0), lambda found: found[1] == 0)


async def test_without_auth_runs_carry_no_user(server: Server) -> None:
    run = await server.sync(
        lambda c: c.runs.wait(
            None,
            "agent",
            input={"topic": "x"},
            config={"configurable": {"langgraph_auth_user_id": "x"}},
        )
    )
    assert run["joke"]
    stored = await server.sync(lambda c: c.runs.create(None, "agent", input={"topic": "y"}))
    configurable = stored["kwargs"]["config"]["configurable"]
    assert not {k for k in configurable if k.startswith("langgraph_auth")}


async def test_configurable_headers(nursery: trio.Nursery) -> None:
    http_config = {
        "configurable_headers": {"includes": ["x-*", "authorization"], "excludes": ["x-secret"]}
    }
    async with serving(nursery, "recording", http=http_config) as server:
        headers = {**user("ann"), "x-tenant": "t1", "x-secret": "s", "x-api-key": "k"}
        who = await whoami(server, headers)
    assert who["headers"] == {"x-tenant": "t1"}
    assert who["authorization"] is None  # credentials never reach a run's stored config


async def test_a_cron_fires_as_its_creator(nursery: trio.Nursery) -> None:
    async with serving(nursery, "recording", cron_interval=0.1) as server, server.http() as http:
        cron = (
            await http.post(
                "/runs/crons",
                json={
                    "assistant_id": "whoami",
                    "schedule": "0 0 1 1 *",
                    "input": {},
                    "on_run_completed": "keep",  # the run stays to be looked at
                },
                headers=user("cronus"),
            )
        ).json()
        assert cron["user_id"] == "cronus"
        assert "user" not in cron
        repo = server.core.storage.crons
        stored = await repo.get(cron["cron_id"])
        assert stored is not None
        stored.next_run_date = now() - dt.timedelta(seconds=1)  # due now
        await repo.update(stored)

        async def fired() -> list[Run]:
            runs = await server.core.storage.runs.search(statuses=RUN_STATUSES)
            return [r for r in runs if r.kwargs["config"]["configurable"].get("cron_id")]

        runs = await poll(fired, bool)
    configurable = runs[0].kwargs["config"]["configurable"]
    assert configurable["langgraph_auth_user_id"] == "cronus"
    assert configurable["langgraph_auth_user"]["permissions"] == ["read", "write"]


async def test_a_webhook_names_the_user_its_run_acted_for(nursery: trio.Nursery) -> None:
    receiver = Receiver()
    listeners = await nursery.start(
        functools.partial(trio.serve_tcp, receiver.handle, 0, host="127.0.0.1")
    )
    receiver.url = f"http://127.0.0.1:{listeners[0].socket.getsockname()[1]}/hook"
    async with serving(nursery, "recording", webhooks=WEBHOOKS) as server:
        await whoami(server, user("hooked"), webhook=receiver.url)
        [delivery] = await receiver.wait_for(1)
    configurable = delivery.body["kwargs"]["config"]["configurable"]
    assert (configurable["langgraph_auth_user_id"], delivery.body["status"]) == (
        "hooked",
        "success",
    )
    assert configurable["langgraph_auth_user"]["team"] == "blue"


# -- CORS and custom routes ------------------------------------------------------------------------


async def test_http_cors_restricts_origins(nursery: trio.Nursery) -> None:
    cors = {
        "allow_origins": ["https://app.example"],
        "allow_headers": ["authorization"],
        "allow_methods": ["GET", "POST"],
        "expose_headers": ["x-pagination-total"],
    }
    async with serving(nursery, "recording", http={"cors": cors}) as server, server.http() as http:
        asked = {
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization",
        }
        good = await http.options(
            "/threads/search", headers={"Origin": "https://app.example", **asked}
        )
        bad = await http.options(
            "/threads/search", headers={"Origin": "https://evil.example", **asked}
        )
        call = await http.post(
            "/threads/search", json={}, headers={"Origin": "https://app.example", **user("ann")}
        )
        evil = await http.post(
            "/threads/search", json={}, headers={"Origin": "https://evil.example", **user("ann")}
        )
    assert good.status_code == 200
    assert good.headers["access-control-allow-origin"] == "https://app.example"
    assert bad.status_code == 400
    assert call.headers["access-control-allow-origin"] == "https://app.example"
    assert call.headers["access-control-expose-headers"] == "x-pagination-total"
    assert "access-control-allow-origin" not in evil.headers


def test_bad_http_sections_stop_start_up(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for http, says in [
        ({"cors": {"allow_origins": "*"}}, "http.cors.allow_origins: expected"),
        ({"cors": {"origins": []}}, "http.cors.origins: unknown key"),
        ({"configurable_headers": {"includes": "x-*"}}, "http.configurable_headers.includes"),
        ({"enable_custom_route_auth": "yes"}, "http.enable_custom_route_auth"),
    ]:
        config = _config(tmp_path, {"path": "tests.authapps:recording"})
        raw = json.loads(pathlib.Path(config).read_text())
        pathlib.Path(config).write_text(json.dumps({**raw, "http": http}))
        assert cli.main(["dev", "--config", config]) == 2
        assert says in capsys.readouterr().err


@pytest.mark.parametrize("protected", [False, True])
async def test_custom_routes_are_authenticated_only_when_asked(
    nursery: trio.Nursery, protected: bool
) -> None:
    http_config = {
        "app": str(ROOT / "examples" / "custom_app" / "app.py") + ":app",
        "enable_custom_route_auth": protected,
    }
    async with serving(nursery, "recording", http=http_config) as server, server.http() as http:
        anonymous = await http.get("/hello")
        known = await http.get("/hello", headers=user("ann"))
        api = await http.post("/threads/search", json={})
    assert anonymous.status_code == (401 if protected else 200)
    assert known.status_code == 200
    assert api.status_code == 401  # the API behind the custom app is always protected


async def test_custom_routes_see_the_user(nursery: trio.Nursery) -> None:
    http_config = {"app": "tests.authapps:custom_app", "enable_custom_route_auth": True}
    async with serving(nursery, "recording", http=http_config) as server, server.http() as http:
        me = await http.get("/me", headers=user("ann"))
        anonymous = await http.get("/me")
    assert me.json() == {"identity": "ann", "display": "ann", "scopes": ["read", "write"]}
    assert anonymous.status_code == 401


async def _handshake(url: str, headers: dict[str, str]) -> tuple[int, str]:
    """Open a WebSocket on ``url`` (raw, with wsproto): the refusal's HTTP status and body,
    or 101 and the first text message."""
    parsed = httpx.URL(url)
    client = wsproto.WSConnection(wsproto.ConnectionType.CLIENT)
    stream = await trio.open_tcp_stream(parsed.host, parsed.port)
    extra = [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    request = wsproto.events.Request(host=parsed.host, target=parsed.path, extra_headers=extra)
    await stream.send_all(client.send(request))
    status, text = 0, ""
    with trio.fail_after(10):
        while True:
            data = await stream.receive_some()
            client.receive_data(data or None)
            for event in client.events():
                if isinstance(event, wsproto.events.RejectConnection):
                    status = event.status_code
                elif isinstance(event, wsproto.events.RejectData):
                    text += event.data.decode()
                    if event.body_finished:
                        await stream.aclose()
                        return status, text
                elif isinstance(event, wsproto.events.AcceptConnection):
                    status = 101
                elif isinstance(event, wsproto.events.TextMessage):
                    await stream.aclose()
                    return status, event.data
            if not data:
                await stream.aclose()
                return status, text


async def test_websocket_handshakes_are_authenticated(nursery: trio.Nursery) -> None:
    http_config = {"app": "tests.authapps:custom_app", "enable_custom_route_auth": True}
    async with serving(nursery, "asyncio_native", http=http_config) as server:
        url = server.url + "/me/socket"
        accepted = await _handshake(url, user("ann"))
        status, body = await _handshake(url, {})
    assert accepted == (101, "ann")
    assert (status, json.loads(body)) == (401, {"detail": "who are you?"})


async def test_a_handler_taking_request_refuses_websockets(nursery: trio.Nursery) -> None:
    """As on the official server: a WebSocket has no Starlette ``Request`` to give."""
    http_config = {"app": "tests.authapps:custom_app", "enable_custom_route_auth": True}
    async with serving(nursery, "recording", http=http_config) as server:
        status, body = await _handshake(server.url + "/me/socket", user("ann"))
    assert status == 403
    assert "'request', which a WebSocket connection does not have" in json.loads(body)["detail"]


async def test_the_cache_asks_authenticate_once_per_credentials(nursery: trio.Nursery) -> None:
    authapps.SEEN.clear()
    auth = {
        "path": "tests.authapps:recording",
        "cache": {"cache_keys": ["Authorization"], "ttl_seconds": 60},
    }
    settings = example_settings(auth=auth, shutdown_grace=0.5)
    async with (
        asynccontextmanager(start_server)(nursery, settings) as server,
        server.http() as http,
    ):
        for name in ("ann", "ann", "ann", "bo", "ann"):
            assert (await http.get("/info", headers=user(name))).status_code == 200
    assert [seen["authorization"] for seen in authapps.SEEN] == [
        "Bearer user:ann",
        "Bearer user:bo",
    ]


async def test_auth_openapi_is_merged_into_the_document(nursery: trio.Nursery) -> None:
    schemes = {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}}
    auth = {
        "path": "tests.authapps:recording",
        "openapi": {"securitySchemes": schemes, "security": [{"bearer": []}]},
    }
    settings = example_settings(auth=auth, shutdown_grace=0.5)
    async with (
        asynccontextmanager(start_server)(nursery, settings) as server,
        server.http() as http,
    ):
        document = (await http.get("/openapi.json")).json()
    assert document["components"]["securitySchemes"] == schemes
    assert document["security"] == [{"bearer": []}]
    assert document["paths"]  # the rest is still there


async def test_the_studio_header_does_not_bypass_auth(nursery: trio.Nursery) -> None:
    settings_auth = {"path": "tests.authapps:recording", "disable_studio_auth": False}
    settings = example_settings(auth=settings_auth, shutdown_grace=0.5)
    async with (
        asynccontextmanager(start_server)(nursery, settings) as server,
        server.http() as http,
    ):
        response = await http.post(
            "/threads/search", json={}, headers={"x-auth-scheme": "langsmith"}
        )
    assert response.status_code == 401
