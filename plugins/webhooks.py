"""Webhooks: POST a finished run to its ``webhook`` URL (contract §5.11), as a plugin.

The lifecycle hooks never wait on the network. ``triograph_run_finished`` is awaited inside
the supervisor's shielded, time-bounded cleanup, so it only builds the payload (reading the
thread's values before a temporary thread is deleted) and hands it to a bounded memory
channel; a full channel drops the webhook and logs it. The delivery task, started at server
start-up in the supervisor's nursery (``services.start``), runs :data:`WORKERS` workers that
share one ``httpx.AsyncClient`` (httpx runs on Trio through anyio), so at most that many
POSTs are in flight.

Each attempt resolves the host again, refuses it if any address is blocked
(:meth:`WebhookPolicy.resolve`), connects to the address that was checked (the URL's host
stays in ``Host`` and in TLS SNI/verification), never follows redirects, and is bounded by
``webhooks.timeout_seconds`` in total. Connection errors, timeouts, 429 and 5xx are retried
up to ``webhooks.max_attempts`` with exponential back-off and jitter; any other answer ends
the delivery. A failure is logged with the run id and URL and never touches the run.

Which runs get a webhook: every outcome (``success``, ``error``, ``interrupted``,
``timeout``) except ``rolled_back``, whose run has been deleted (a receiver could not fetch
it). ``values`` are the thread's values when the run ended; a temporary thread (a stateless
run with ``on_completion="delete"``) keeps no checkpoints, so its ``values`` are null.

Shutdown: the task is cancelled with the supervisor's nursery once runs had their grace
period (so runs interrupted by the shutdown have queued theirs). Every delivery not yet done,
whether queued, waiting for a retry or cut short mid-attempt, then gets one more attempt,
all within :data:`SHUTDOWN_DRAIN_SECONDS`. What the drain cannot send in time is lost and
logged with the run ids. A receiver may get a cut attempt twice: deduplicate by run id.
"""

from __future__ import annotations

import logging
import random
import urllib.parse
from typing import TYPE_CHECKING, Any

import attrs
import httpx
import trio

from triograph.core.infra import encoding
from triograph.core.infra.errors import InvalidRequest
from triograph.core.infra.hookspecs import hookimpl
from triograph.core.infra.models import now, to_wire
from triograph.core.infra.webhooks import WebhookPolicy

if TYPE_CHECKING:
    from triograph.core.infra.models import Run
    from triograph.core.infra.plugin_manager import PluginServices
    from triograph.core.infra.settings import Settings
    from triograph.core.infra.storage import Storage

log = logging.getLogger("triograph.webhooks")

#: webhooks waiting for a worker; more are dropped (and logged)
QUEUE_SIZE = 1000
#: deliveries in flight at once
WORKERS = 8
#: seconds queued deliveries get at shutdown
SHUTDOWN_DRAIN_SECONDS = 5.0
#: the longest wait between two attempts
MAX_BACKOFF_SECONDS = 60.0


@attrs.frozen(kw_only=True)
class _Delivery:
    url: str
    run_id: str
    #: everything but ``webhook_sent_at``, which each attempt sets
    payload: dict[str, Any]

    @property
    def shown(self) -> str:
        return shown_url(self.url)


def shown_url(url: str) -> str:
    """``url`` as logs show it: without its user info and query string, where a receiver's
    token may be."""
    parts = urllib.parse.urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}{parts.path}"


class WebhookPlugin:
    """One per app (``DEFAULT_PLUGINS`` names the class): its queue and delivery task."""

    def __init__(self) -> None:
        self._send, self._receive = trio.open_memory_channel[_Delivery](QUEUE_SIZE)
        self._started_at: dict[str, str] = {}
        #: deliveries whose attempt was cancelled: the shutdown drain tries them once more
        self._cut: list[_Delivery] = []
        self._storage: Storage | None = None
        self._policy: WebhookPolicy | None = None

    @property
    def policy(self) -> WebhookPolicy:
        assert self._policy is not None, "the server has not started"
        return self._policy

    # -- hooks --------------------------------------------------------------------------------

    @hookimpl
    async def triograph_server_startup(self, settings: Settings, services: PluginServices) -> None:
        self._policy = WebhookPolicy(settings)
        self._storage = services.storage
        if not self._policy.delivery.disabled:
            await services.start(self._serve)

    @hookimpl
    def triograph_run_started(self, run: Run) -> None:
        if run.kwargs.get("webhook"):
            self._started_at[run.run_id] = now().isoformat()

    @hookimpl
    async def triograph_run_finished(
        self, run: Run, outcome: str, error: dict[str, str] | None
    ) -> None:
        started_at = self._started_at.pop(run.run_id, None)
        url, storage, policy = run.kwargs.get("webhook"), self._storage, self._policy
        if not url or outcome == "rolled_back" or storage is None or policy is None:
            return  # no webhook, the run is gone, or the server has not started yet
        if policy.delivery.disabled:
            return
        thread = await storage.threads.get(run.thread_id)
        payload = {
            **to_wire(run),
            "run_started_at": started_at,  # None: cancelled before it started
            "run_ended_at": now().isoformat(),
            "values": thread.values if thread is not None else None,
        }
        if error is not None:
            payload["error"] = error
        try:
            self._send.send_nowait(_Delivery(url=url, run_id=run.run_id, payload=payload))
        except trio.WouldBlock:
            log.warning(
                "webhook queue full (%d): dropped the webhook of run %s to %s",
                QUEUE_SIZE,
                run.run_id,
                shown_url(url),
            )

    # -- delivering ---------------------------------------------------------------------------

    async def _serve(self, *, task_status: trio.TaskStatus[None]) -> None:
        """The delivery task: workers until cancelled, then the shutdown drain."""
        client = httpx.AsyncClient(
            timeout=self.policy.delivery.timeout_seconds,
            follow_redirects=False,  # a redirect could lead to an address never checked
            trust_env=False,  # a proxy from the environment would bypass the address check
            # no connection reuse: a connection opened for one host name is never handed to
            # another name that resolves to the same address
            limits=httpx.Limits(max_connections=WORKERS, max_keepalive_connections=0),
        )
        try:
            async with trio.open_nursery() as nursery:
                for _ in range(WORKERS):
                    nursery.start_soon(self._work, client)
                task_status.started()
        finally:
            with trio.CancelScope(shield=True):
                await self._drain(client)
                await client.aclose()

    async def _work(self, client: httpx.AsyncClient) -> None:
        async for delivery in self._receive:
            await self._deliver(client, delivery, self.policy.delivery.max_attempts)

    async def _drain(self, client: httpx.AsyncClient) -> None:
        """At shutdown: one attempt for each delivery cut short or still queued, all within
        :data:`SHUTDOWN_DRAIN_SECONDS`; what is left is logged."""
        pending, self._cut = [*self._cut, *self._queued()], []

        async def worker() -> None:
            while pending:
                await self._deliver(client, pending.pop(0), 1)

        with trio.move_on_after(SHUTDOWN_DRAIN_SECONDS):
            async with trio.open_nursery() as nursery:
                for _ in range(min(WORKERS, len(pending))):
                    nursery.start_soon(worker)
        lost = [*pending, *self._cut, *self._queued()]
        if lost:
            log.warning(
                "shutdown: %d webhook(s) not delivered, of runs %s",
                len(lost),
                ", ".join(d.run_id for d in lost),
            )

    def _queued(self) -> list[_Delivery]:
        out = []
        while True:
            try:
                out.append(self._receive.receive_nowait())
            except trio.WouldBlock:
                return out

    async def _deliver(self, client: httpx.AsyncClient, delivery: _Delivery, attempts: int) -> None:
        """Up to ``attempts`` attempts; a delivery cancelled midway is kept for the drain."""
        finished = False
        try:
            await self._attempts(client, delivery, attempts)
            finished = True
        except Exception:  # a bug here must never reach the supervisor's nursery
            finished = True
            log.exception("webhook of run %s to %s failed", delivery.run_id, delivery.shown)
        finally:
            if not finished:
                self._cut.append(delivery)

    async def _attempts(
        self, client: httpx.AsyncClient, delivery: _Delivery, attempts: int
    ) -> None:
        base = self.policy.delivery.retry_base_seconds
        for attempt in range(1, attempts + 1):
            failure = await self._attempt(client, delivery)
            if failure is None:
                log.debug(
                    "webhook of run %s to %s delivered (attempt %d of %d)",
                    delivery.run_id,
                    delivery.shown,
                    attempt,
                    attempts,
                )
                return
            retry, reason = failure
            if not retry or attempt == attempts:
                log.warning(
                    "webhook of run %s to %s failed (attempt %d of %d, giving up): %s",
                    delivery.run_id,
                    delivery.shown,
                    attempt,
                    attempts,
                    reason,
                )
                return
            log.info(
                "webhook of run %s to %s failed (attempt %d of %d, retrying): %s",
                delivery.run_id,
                delivery.shown,
                attempt,
                attempts,
                reason,
            )
            backoff = min(base * 2 ** (attempt - 1), MAX_BACKOFF_SECONDS)
            await trio.sleep(backoff * random.uniform(0.5, 1.0))

    async def _attempt(
        self, client: httpx.AsyncClient, delivery: _Delivery
    ) -> tuple[bool, str] | None:
        """One POST, bounded in total. None once delivered, else (worth retrying, why not)."""
        settings = self.policy.delivery
        with trio.move_on_after(settings.timeout_seconds):
            try:
                url, address = await self.policy.resolve(delivery.url)
            except InvalidRequest as exc:
                return False, exc.message
            except OSError as exc:  # the name does not resolve (yet)
                return True, f"cannot resolve the host: {exc}"
            payload = {**delivery.payload, "webhook_sent_at": now().isoformat()}
            if settings.allowed_fields is not None:
                payload = {k: v for k, v in payload.items() if k in settings.allowed_fields}
            headers = {
                **settings.headers,
                "Content-Type": "application/json",
                "Host": url.netloc.decode("ascii"),
            }
            try:
                async with client.stream(
                    "POST",
                    url.copy_with(host=address),
                    content=encoding.dumps(payload),
                    headers=headers,
                    extensions={"sni_hostname": url.raw_host.decode("ascii")},
                ) as response:  # the body is never read: only the status matters
                    status = response.status_code
            except httpx.TransportError as exc:
                return True, f"{type(exc).__name__}: {exc}"
            if 200 <= status < 300:
                return None
            if 300 <= status < 400:
                return False, f"HTTP {status} (redirects are not followed)"
            return status == 429 or status >= 500, f"HTTP {status}"
        return True, f"no answer within {settings.timeout_seconds} s"
