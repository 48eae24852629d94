"""Webhooks (contract §5.11, §11 "invalid webhook"): the payload of every outcome, retries,
the SSRF policy at creation and at delivery, headers, ``allowed_fields`` and bad config.

A receiver in the test's nursery (a raw HTTP/1.1 responder on 127.0.0.1:0) records every
request and answers with scripted statuses. Host names resolve through a Trio resolver the
test controls, so nothing reaches the network.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import json
import logging
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import attrs
import pytest
import trio

from tests.conftest import example_settings, start_server
from tests.sdk import Server, get, poll
from triograph.core.http.app import create_app
from triograph.core.infra.errors import ConfigError

serving = asynccontextmanager(start_server)

#: loopback allowed (the receiver is on 127.0.0.1), retries in milliseconds
WEBHOOKS: dict[str, Any] = {"url": {"disable_loopback": False}, "retry_base_seconds": 0.001}
JOKE = {"topic": "x and cats", "joke": "This is a joke about x and cats"}


@attrs.define
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: Any


@attrs.define
class Receiver:
    """Records requests; answers ``statuses`` in order, then 200. The first ``hang``
    requests get no answer until ``release`` is set."""

    url: str = ""
    requests: list[Request] = attrs.Factory(list)
    statuses: list[int] = attrs.Factory(list)
    hang: int = 0
    release: trio.Event = attrs.Factory(trio.Event)
    _arrival: trio.Event = attrs.Factory(trio.Event)

    async def handle(self, stream: trio.SocketStream) -> None:
        request = await self._read(stream)
        if request is None:  # the client went away mid-request
            return
        self.requests.append(request)
        self._arrival.set()
        self._arrival = trio.Event()
        if len(self.requests) <= self.hang:
            await self.release.wait()
        status = self.statuses.pop(0) if self.statuses else 200
        with contextlib.suppress(trio.BrokenResourceError):  # the client may have gone
            await stream.send_all(
                b"HTTP/1.1 %d X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n" % status
            )
        await stream.aclose()

    @staticmethod
    async def _read(stream: trio.SocketStream) -> Request | None:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = await stream.receive_some()
            if not chunk:
                return None
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        request_line, *lines = head.decode().split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in lines)}
        while len(body) < int(headers.get("content-length", 0)):
            chunk = await stream.receive_some()
            if not chunk:
                return None
            body += chunk
        method, path, _ = request_line.split(" ")
        return Request(method, path, headers, json.loads(body) if body else None)

    async def wait_for(self, n: int) -> list[Request]:
        with trio.fail_after(10):
            while len(self.requests) < n:
                await self._arrival.wait()
        return self.requests


class Resolver(trio.abc.HostnameResolver):
    """Test host names -> addresses; any other name fails, so nothing is looked up for real."""

    def __init__(self, names: dict[str, str]) -> None:
        self.names = names

    async def getaddrinfo(self, host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        name = host.decode() if isinstance(host, bytes) else host
        if name not in self.names:
            raise socket.gaierror(socket.EAI_NONAME, f"{name!r} is not a test name")
        return [
            (socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (self.names[name], port))
        ]

    async def getnameinfo(self, *args: Any) -> Any:
        raise NotImplementedError


@pytest.fixture
async def receiver(nursery: trio.Nursery) -> Receiver:
    r = Receiver()
    serve = functools.partial(trio.serve_tcp, r.handle, 0, host="127.0.0.1")
    listeners = await nursery.start(serve)
    r.url = f"http://127.0.0.1:{listeners[0].socket.getsockname()[1]}"
    return r


@pytest.fixture
async def names() -> AsyncIterator[dict[str, str]]:
    table: dict[str, str] = {}
    previous = trio.socket.set_custom_hostname_resolver(Resolver(table))
    yield table
    trio.socket.set_custom_hostname_resolver(previous)


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG, logger="triograph.webhooks")
    return caplog


def settings(**webhooks: Any) -> Any:
    return example_settings(shutdown_grace=0.5, webhooks={**WEBHOOKS, **webhooks})


async def logged(caplog: pytest.LogCaptureFixture, *parts: str) -> str:
    """The first webhook log line holding every part (waits for it)."""

    async def lines() -> list[str]:
        return [r.getMessage() for r in caplog.records if r.name == "triograph.webhooks"]

    found = await poll(lines, lambda ls: any(all(p in line for p in parts) for line in ls))
    return next(line for line in found if all(p in line for p in parts))


async def stateless_run(server: Server, webhook: str, **kwargs: Any) -> Any:
    return await server.sync(
        lambda c: c.runs.wait(None, "agent", input={"topic": "x"}, webhook=webhook, **kwargs)
    )


async def new_thread(server: Server) -> str:
    thread = await server.sync(lambda c: c.threads.create())
    return thread["thread_id"]  # type: ignore[no-any-return]


def iso(value: str) -> dt.datetime:
    return dt.datetime.fromisoformat(value)


# -- payloads ---------------------------------------------------------------------------------


async def test_successful_stateful_run(nursery: trio.Nursery, receiver: Receiver) -> None:
    async with serving(nursery, settings()) as server:
        tid = await new_thread(server)
        url = receiver.url + "/hook?x=1"
        await server.sync(
            lambda c: c.runs.wait(
                tid, "agent", input={"topic": "x"}, webhook=url, metadata={"m": 1}
            )
        )
        [request] = await receiver.wait_for(1)
        _, run = await get(server, f"/threads/{tid}/runs/{request.body['run_id']}")
    assert (request.method, request.path) == ("POST", "/hook?x=1")
    assert request.headers["content-type"] == "application/json"
    body = request.body
    assert body["status"] == "success"
    assert body["values"] == JOKE
    assert "error" not in body
    for field in ("run_id", "thread_id", "assistant_id", "metadata", "kwargs", "created_at"):
        assert body[field] == run[field], field
    assert body["kwargs"]["webhook"] == url
    assert body["multitask_strategy"] == run["multitask_strategy"]
    created, started = iso(body["created_at"]), iso(body["run_started_at"])
    ended, sent = iso(body["run_ended_at"]), iso(body["webhook_sent_at"])
    assert created <= started <= ended <= sent


async def test_failed_run_sends_error(nursery: trio.Nursery, receiver: Receiver) -> None:
    async with serving(nursery, settings()) as server:
        tid = await new_thread(server)
        await server.sync(
            lambda c: c.runs.wait(
                tid, "erroring", input={}, webhook=receiver.url, raise_error=False
            )
        )
        [request] = await receiver.wait_for(1)
    assert request.body["status"] == "error"
    assert request.body["error"] == {"error": "ValueError", "message": "boom from node"}
    assert request.body["values"] == {"x": 1}  # what the run wrote before failing


async def test_interrupted_run(nursery: trio.Nursery, receiver: Receiver) -> None:
    async with serving(nursery, settings()) as server:
        tid = await new_thread(server)
        run = await server.sync(
            lambda c: c.runs.create(tid, "slow", input={"delay": 5}, webhook=receiver.url)
        )
        path = f"/threads/{tid}/runs/{run['run_id']}"
        await poll(lambda: get(server, path), lambda v: v[1]["status"] == "running")
        await server.sync(lambda c: c.runs.cancel(tid, run["run_id"]))
        [request] = await receiver.wait_for(1)
    assert request.body["status"] == "interrupted"
    assert request.body["error"]["error"] == "UserInterrupt"
    assert request.body["run_started_at"] is not None


@pytest.mark.parametrize(("on_completion", "values"), [("delete", None), ("keep", JOKE)])
async def test_stateless_run(
    nursery: trio.Nursery, receiver: Receiver, on_completion: str, values: Any
) -> None:
    """A temporary thread keeps no checkpoints: its values are null; a kept one has them."""
    async with serving(nursery, settings()) as server:
        await stateless_run(server, receiver.url, on_completion=on_completion)
        [request] = await receiver.wait_for(1)
    assert request.body["status"] == "success"
    assert request.body["values"] == values


async def test_rolled_back_run_sends_nothing(nursery: trio.Nursery, receiver: Receiver) -> None:
    async with serving(nursery, settings()) as server:
        tid = await new_thread(server)
        first = await server.sync(
            lambda c: c.runs.create(tid, "slow", input={"delay": 5}, webhook=receiver.url + "/1")
        )
        path = f"/threads/{tid}/runs/{first['run_id']}"
        await poll(lambda: get(server, path), lambda v: v[1]["status"] == "running")
        await server.sync(
            lambda c: c.runs.wait(
                tid,
                "agent",
                input={"topic": "x"},
                webhook=receiver.url + "/2",
                multitask_strategy="rollback",
            )
        )
        await receiver.wait_for(1)
    assert [r.path for r in receiver.requests] == ["/2"]


# -- retries ----------------------------------------------------------------------------------


async def test_5xx_is_retried(
    nursery: trio.Nursery, receiver: Receiver, logs: pytest.LogCaptureFixture
) -> None:
    receiver.statuses = [503, 429]
    async with serving(nursery, settings()) as server:
        await stateless_run(server, receiver.url)
        line = await logged(logs, "delivered")
    assert "attempt 3 of 5" in line
    assert len(receiver.requests) == 3
    assert len({r.body["run_id"] for r in receiver.requests}) == 1


async def test_other_4xx_is_not_retried(
    nursery: trio.Nursery, receiver: Receiver, logs: pytest.LogCaptureFixture
) -> None:
    receiver.statuses = [400]
    async with serving(nursery, settings()) as server:
        await stateless_run(server, receiver.url)
        line = await logged(logs, "giving up")
    assert "HTTP 400" in line
    assert receiver.url in line
    assert len(receiver.requests) == 1


async def test_attempts_are_bounded(
    nursery: trio.Nursery, receiver: Receiver, logs: pytest.LogCaptureFixture
) -> None:
    receiver.statuses = [500] * 10
    async with serving(nursery, settings(max_attempts=2)) as server:
        await stateless_run(server, receiver.url)
        line = await logged(logs, "giving up")
    assert "attempt 2 of 2" in line
    assert len(receiver.requests) == 2


async def test_receiver_that_never_answers_does_not_hold_the_run(
    nursery: trio.Nursery, receiver: Receiver
) -> None:
    """The temporary thread is deleted after the finish hook: it goes only if the hook
    returned without waiting for the receiver (a blocked hook would be cut by the cleanup
    deadline, and the delete with it)."""
    receiver.hang = 1
    async with serving(nursery, settings(timeout_seconds=60)) as server:
        run = await server.sync(
            lambda c: c.runs.create(None, "agent", input={"topic": "x"}, webhook=receiver.url)
        )
        await receiver.wait_for(1)
        await poll(lambda: get(server, f"/threads/{run['thread_id']}"), lambda v: v[0] == 404)
        assert not receiver.release.is_set()  # the delivery is still waiting for an answer
        receiver.release.set()


async def test_shutdown_gives_a_cut_delivery_one_more_attempt(
    nursery: trio.Nursery, receiver: Receiver
) -> None:
    """The first attempt is still waiting for its answer when the server stops: the drain
    sends it once more before the server exits."""
    receiver.hang = 1
    async with serving(nursery, settings(timeout_seconds=60)) as server:
        await stateless_run(server, receiver.url)
        await receiver.wait_for(1)
    first, second = receiver.requests
    assert first.body["run_id"] == second.body["run_id"]


# -- the SSRF policy --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://127.0.0.1:9/x", "127.0.0.1 is a loopback address"),
        ("http://localhost/x", "'localhost' is a loopback name"),
        ("http://10.0.0.1/x", "10.0.0.1 is a private address"),
        ("http://[::1]/x", "::1 is a loopback address"),
        ("http://[::ffff:192.168.1.1]/x", "(192.168.1.1) is a private address"),
        ("http://169.254.169.254/", "169.254.169.254 is a link-local address"),
        ("http://2130706433/", "(127.0.0.1) is a loopback address"),
        ("http://0.0.0.0/", "unspecified"),
        ("http://224.0.0.1/", "multicast"),
        ("/my-hook", "loopback"),  # this server, on 127.0.0.1
    ],
)
async def test_blocked_hosts_are_refused_at_creation(server: Server, url: str, reason: str) -> None:
    """Default policy: nothing is created, on any endpoint that takes a webhook."""
    tid = await new_thread(server)
    run = {"assistant_id": "agent", "input": {}, "webhook": url}
    bodies = {
        f"/threads/{tid}/runs": run,
        f"/threads/{tid}/runs/wait": run,
        "/runs": run,
        "/runs/batch": [run],
        "/runs/crons": {**run, "schedule": "0 0 1 1 *"},
        f"/threads/{tid}/runs/crons": {**run, "schedule": "0 0 1 1 *"},
    }
    async with server.http() as h:
        for path, body in bodies.items():
            r = await h.post(path, json=body)
            assert r.status_code == 422, (path, r.text)
            assert r.json()["detail"].startswith("Webhook host blocked: "), (path, r.text)
            assert reason in r.json()["detail"]
        runs = (await h.get(f"/threads/{tid}/runs")).json()
        threads = (await h.post("/threads/count", json={})).json()
        crons = (await h.post("/runs/crons/count", json={})).json()
    assert (runs, threads, crons) == ([], 1, 0)


async def test_name_resolving_to_a_blocked_address_is_refused_at_delivery(
    server: Server, receiver: Receiver, names: dict[str, str], logs: pytest.LogCaptureFixture
) -> None:
    names["hooks.test"] = "127.0.0.1"
    port = receiver.url.rsplit(":", 1)[1]
    url = f"http://hooks.test:{port}/x"
    await stateless_run(server, url)
    line = await logged(logs, "giving up", "hooks.test")
    assert "Webhook host blocked: hooks.test (127.0.0.1) is a loopback address" in line
    assert "attempt 1 of" in line
    assert receiver.requests == []


async def test_delivery_connects_to_the_checked_address(
    nursery: trio.Nursery, receiver: Receiver, names: dict[str, str]
) -> None:
    names["hooks.test"] = "127.0.0.1"
    port = receiver.url.rsplit(":", 1)[1]
    async with serving(nursery, settings()) as server:
        await stateless_run(server, f"http://hooks.test:{port}/x")
        [request] = await receiver.wait_for(1)
    assert request.headers["host"] == f"hooks.test:{port}"


async def test_allowed_domains_ports_and_https(
    nursery: trio.Nursery, names: dict[str, str]
) -> None:
    names.update({"hooks.example.com": "127.0.0.1", "a.b.example.com": "127.0.0.1"})
    policy = {
        "allowed_domains": ["*.example.com", "hooks.corp.test"],
        "allowed_ports": [443, 8443],
        "require_https": True,
    }
    refused = {
        "https://example.com/x": "is not in the allowed domains",  # the wildcard: subdomains only
        "https://evil.com/x": "is not in the allowed domains",
        "https://hooks.example.com.evil.com/x": "is not in the allowed domains",
        "https://corp.test/x": "is not in the allowed domains",
        "http://hooks.example.com/x": "Webhook must use https",
        "https://hooks.example.com:8080/x": "Webhook port 8080 is not allowed",
        "https://10.0.0.1/x": "is not in the allowed domains",
    }
    accepted = [
        "https://hooks.example.com/x",
        "https://a.b.example.com:8443/x",
        "https://hooks.corp.test/x",
    ]
    async with serving(nursery, settings(url=policy)) as server:
        tid = await new_thread(server)
        async with server.http() as h:
            for url, message in refused.items():
                r = await h.post(
                    f"/threads/{tid}/runs", json={"assistant_id": "agent", "webhook": url}
                )
                assert r.status_code == 422, url
                assert message in r.json()["detail"], (url, r.text)
            for url in accepted:
                r = await h.post(
                    f"/threads/{tid}/runs/wait",
                    json={"assistant_id": "agent", "input": {"topic": "x"}, "webhook": url},
                )
                assert r.status_code == 200, (url, r.text)


async def test_long_urls_are_refused(nursery: trio.Nursery) -> None:
    url = "https://hooks.example.com/" + "x" * 20
    async with serving(nursery, settings(url={"max_url_length": 40})) as server, server.http() as h:
        r = await h.post("/runs", json={"assistant_id": "agent", "webhook": url})
    assert r.status_code == 422
    assert r.json()["detail"] == "Webhook URL too long: 46 characters (at most 40)"


async def test_private_addresses_can_be_allowed(nursery: trio.Nursery) -> None:
    """Crons are checked like runs (and never fire here: their schedule is yearly)."""
    cron = {"assistant_id": "agent", "schedule": "0 0 1 1 *"}
    policy = {"disable_private_ips": False}
    async with serving(nursery, settings(url=policy)) as server, server.http() as h:
        private = await h.post("/runs/crons", json={**cron, "webhook": "http://10.0.0.1/x"})
        multicast = await h.post("/runs/crons", json={**cron, "webhook": "http://224.0.0.1/x"})
    assert private.status_code == 200, private.text
    assert multicast.status_code == 422


async def test_relative_webhook_calls_the_server_itself(
    nursery: trio.Nursery, logs: pytest.LogCaptureFixture
) -> None:
    """``/my-hook`` is made absolute with the server's address; the server answers 404 for
    a path it does not serve, which is logged and not retried."""
    async with serving(nursery, settings()) as server:
        tid = await new_thread(server)
        await server.sync(
            lambda c: c.runs.wait(tid, "agent", input={"topic": "x"}, webhook="/my-hook")
        )
        [run] = await server.sync(lambda c: c.runs.list(tid))
        line = await logged(logs, "giving up", "/my-hook")
        async with server.http() as h:
            cron = (
                await h.post(
                    "/runs/crons",
                    json={"assistant_id": "agent", "schedule": "0 0 1 1 *", "webhook": "/my-hook"},
                )
            ).json()
    assert run["kwargs"]["webhook"] == f"{server.url}/my-hook"
    assert "HTTP 404" in line
    assert "attempt 1 of 5" in line
    assert cron["payload"]["webhook"] == f"{server.url}/my-hook"


# -- headers, fields, config ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("section", "expected"),
    [
        (
            {"headers": {"Authorization": "Bearer ${{ env.LG_WEBHOOK_TOKEN }}", "X-Static": "v"}},
            {"authorization": "Bearer s3cret", "x-static": "v"},
        ),
        (
            {"headers": {"X-Team": "${{env.MY_TEAM}}/${{ env.MY_TEAM }}"}, "env_prefix": "MY_"},
            {"x-team": "blue/blue"},
        ),
    ],
)
async def test_static_headers_with_env_templates(
    nursery: trio.Nursery,
    receiver: Receiver,
    monkeypatch: pytest.MonkeyPatch,
    section: dict[str, Any],
    expected: dict[str, str],
) -> None:
    monkeypatch.setenv("LG_WEBHOOK_TOKEN", "s3cret")
    monkeypatch.setenv("MY_TEAM", "blue")
    async with serving(nursery, settings(**section)) as server:
        await stateless_run(server, receiver.url)
        [request] = await receiver.wait_for(1)
    assert {k: request.headers[k] for k in expected} == expected


async def test_allowed_fields(nursery: trio.Nursery, receiver: Receiver) -> None:
    fields = ["run_id", "status", "values", "webhook_sent_at"]
    async with serving(nursery, settings(allowed_fields=fields)) as server:
        await stateless_run(server, receiver.url, on_completion="keep")
        [request] = await receiver.wait_for(1)
    assert set(request.body) == set(fields)
    assert request.body["values"] == JOKE


async def test_disable_webhooks(nursery: trio.Nursery, receiver: Receiver) -> None:
    """``http.disable_webhooks``: runs keep their webhook, nothing is sent, not even by the
    shutdown drain (the server has exited when the assertion runs)."""
    async with serving(nursery, attrs.evolve(settings(), http={"disable_webhooks": True})) as s:
        await stateless_run(s, receiver.url)
        assert (await s.sync(lambda c: c.http.get("/info")))["flags"]["webhooks"] is False
    assert receiver.requests == []


@pytest.mark.parametrize(
    ("webhooks", "message"),
    [
        ("yes", "webhooks must be an object"),
        (
            {"url": {"disable_loopback": "no"}},
            "webhooks.url.disable_loopback must be true or false",
        ),
        ({"url": {"disable_loopback": False, "typo": 1}}, "webhooks.url: unknown keys ['typo']"),
        ({"retries": 3}, "webhooks: unknown keys ['retries']"),
        ({"url": {"allowed_ports": [0]}}, "allowed_ports: 0 is not a port"),
        ({"url": {"allowed_ports": "443"}}, "allowed_ports must be a list"),
        ({"url": {"allowed_domains": ["a.*.com"]}}, "'a.*.com' is not a host name or '*.domain'"),
        ({"url": {"max_url_length": 0}}, "max_url_length must be an integer greater than 0"),
        ({"max_attempts": 1.5}, "max_attempts must be an integer"),
        ({"retry_base_seconds": -1}, "retry_base_seconds must be a number at least 0"),
        (
            {"headers": {"X": "${{ env.HOME }}"}},
            "'HOME' does not start with the env_prefix 'LG_WEBHOOK_'",
        ),
        (
            {"headers": {"X": "${{ env.LG_WEBHOOK_UNSET_FOR_TEST }}"}},
            "'LG_WEBHOOK_UNSET_FOR_TEST' is not set",
        ),
        ({"headers": {"X": "${{ env.LG_WEBHOOK_X }"}}, "malformed template"),
        ({"headers": {"Host": "a"}}, "the server sets this header itself"),
        ({"headers": {"X": 1}}, "webhooks.headers.X must be a string"),
        ({"allowed_fields": ["run_id", "secret"]}, "unknown payload fields ['secret']"),
    ],
)
def test_bad_config_stops_start_up(webhooks: Any, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        create_app(example_settings(webhooks=webhooks))
    assert message in caught.value.message


async def test_listed_as_a_plugin(server: Server) -> None:
    _, info = await get(server, "/info")
    assert "triograph.plugins.webhooks" in info["plugins"]
