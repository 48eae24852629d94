"""Prometheus metrics of runs, requests, streams, errors and loop lag, as a plugin.

Counted from the lifecycle hooks: runs that ended by outcome, their duration (stored to
ended) and queue wait (stored to running); HTTP requests by method, route template and
status, their duration, clients that left early; unexpected errors, and among them storage
errors. Sampled at each scrape from ``PluginServices.stats()``: runs pending (the queue
depth) and running, the run slots, open SSE streams and stream readers. A background task
(started at start-up, in the supervisor's nursery) measures every :data:`PROBE_INTERVAL`
seconds how late the Trio loop wakes up and how long a no-op takes to cross to the graph
loop and back.

Labels stay low-cardinality: the route is the template (``/threads/{thread_id}``), an
unmatched path is ``unmatched``, unusual methods are ``OTHER``. Everything is on the app's
own registry (``GET /metrics``), never on ``prometheus_client``'s global one. Disable with
``"disable_plugins": ["triograph.plugins.metrics"]``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import trio
from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric

from triograph.core.infra.hookspecs import hookimpl

if TYPE_CHECKING:
    from triograph.core.infra.models import Run
    from triograph.core.infra.plugin_manager import PluginServices, ServerStats
    from triograph.core.infra.settings import Settings

#: seconds between two loop-lag probes
PROBE_INTERVAL = 2.0
_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})
_HTTP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
_RUN_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)
#: an error is a storage error when its class comes from one of these packages, or it was
#: raised in a frame of one of these modules (a backend's own checks)
_STORAGE_PACKAGES = ("psycopg", "psycopg_pool", "sqlite3", "aiosqlite", "langgraph.checkpoint")
_STORAGE_MODULES = ("triograph.storage",)
#: what ``PluginServices.stats()`` holds, as gauges sampled at each scrape
_SAMPLED = (
    (
        "triograph_runs_pending",
        "Runs stored and waiting in this process (the queue)",
        "runs_pending",
    ),
    ("triograph_runs_running", "Runs executing their graph in this process", "runs_running"),
    ("triograph_runs_max", "Runs that may execute at once in this process", "max_runs"),
    ("triograph_open_streams", "SSE responses being sent", "open_streams"),
    ("triograph_stream_subscribers", "Live readers of run and thread streams", "subscribers"),
)


class Metrics:
    """One per app (``DEFAULT_PLUGINS`` names the class); a ``prometheus_client`` collector
    registered on the app's registry at start-up."""

    def __init__(self) -> None:
        self.runs = Counter(
            "triograph_runs", "Runs that ended, by outcome", ["outcome"], registry=None
        )
        self.run_seconds = Histogram(
            "triograph_run_duration_seconds",
            "Seconds from a run being stored to its end, by outcome",
            ["outcome"],
            buckets=_RUN_BUCKETS,
            registry=None,
        )
        self.queue_seconds = Histogram(
            "triograph_run_queue_seconds",
            "Seconds from a run being stored to it running",
            buckets=_RUN_BUCKETS,
            registry=None,
        )
        self.requests = Counter(
            "triograph_http_requests",
            "HTTP requests answered, by method, route and status",
            ["method", "route", "status"],
            registry=None,
        )
        self.request_seconds = Histogram(
            "triograph_http_request_duration_seconds",
            "Seconds from a request's arrival to the end of its response, by method and route",
            ["method", "route"],
            buckets=_HTTP_BUCKETS,
            registry=None,
        )
        self.disconnects = Counter(
            "triograph_http_client_disconnects",
            "Requests whose client left before the response was complete, by route",
            ["route"],
            registry=None,
        )
        self.errors = Counter(
            "triograph_errors",
            "Unexpected errors logged, by where (http, run)",
            ["where"],
            registry=None,
        )
        self.storage_errors = Counter(
            "triograph_storage_errors",
            "Unexpected errors raised by the storage backend, by where (http, run)",
            ["where"],
            registry=None,
        )
        self.lag = Gauge(
            "triograph_loop_lag_seconds",
            "Last probe: how late the Trio loop woke (trio), a no-op's round trip to the "
            "graph loop (graph)",
            ["loop"],
            registry=None,
        )
        self._own = (
            self.runs,
            self.run_seconds,
            self.queue_seconds,
            self.requests,
            self.request_seconds,
            self.disconnects,
            self.errors,
            self.storage_errors,
            self.lag,
        )
        self._stored: dict[str, float] = {}
        self._stats: Any = None
        #: (method, route, status) -> its request counter and duration histogram: looking
        #: children up by label values costs more than the update itself, on every request
        self._by_request: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    # -- the collector --------------------------------------------------------------------------

    def collect(self) -> Iterator[Metric]:
        for metric in self._own:
            yield from metric.collect()
        stats: ServerStats | None = self._stats() if self._stats is not None else None
        for name, text, field in _SAMPLED:
            family = GaugeMetricFamily(name, text)
            if stats is not None:
                family.add_metric([], getattr(stats, field))
            yield family

    # -- start-up -------------------------------------------------------------------------------

    @hookimpl
    async def triograph_server_startup(self, settings: Settings, services: PluginServices) -> None:
        self._stats = services.stats
        services.metrics.register(self)
        bridge = services.bridge

        async def probe(*, task_status: trio.TaskStatus[None]) -> None:
            task_status.started()
            while True:
                asked = trio.current_time()
                await trio.sleep(PROBE_INTERVAL)
                self.lag.labels("trio").set(max(trio.current_time() - asked - PROBE_INTERVAL, 0))
                sent = trio.current_time()
                await bridge.call(_nothing)
                self.lag.labels("graph").set(trio.current_time() - sent)

        await services.start(probe)

    # -- runs -----------------------------------------------------------------------------------

    @hookimpl
    def triograph_run_created(self, run: Run) -> None:
        self._stored.setdefault(run.run_id, time.perf_counter())

    @hookimpl
    def triograph_run_started(self, run: Run) -> None:
        stored = self._stored.get(run.run_id)
        if stored is not None:
            self.queue_seconds.observe(time.perf_counter() - stored)

    @hookimpl
    def triograph_run_finished(self, run: Run, outcome: str) -> None:
        self.runs.labels(outcome).inc()
        stored = self._stored.pop(run.run_id, None)
        if stored is not None:
            self.run_seconds.labels(outcome).observe(time.perf_counter() - stored)

    # -- requests and errors --------------------------------------------------------------------

    @hookimpl
    def triograph_http_request(
        self, method: str, route: str | None, status: int, seconds: float, disconnected: bool
    ) -> None:
        route = route or "unmatched"
        key = (method if method in _METHODS else "OTHER", route, status)
        children = self._by_request.get(key)
        if children is None:
            children = self._by_request[key] = (
                self.requests.labels(key[0], route, str(status)),
                self.request_seconds.labels(key[0], route),
            )
        children[0].inc()
        children[1].observe(seconds)
        if disconnected:
            self.disconnects.labels(route).inc()

    @hookimpl
    def triograph_error(self, error: Exception, where: str) -> None:
        self.errors.labels(where).inc()
        if is_storage_error(error):
            self.storage_errors.labels(where).inc()


def is_storage_error(error: BaseException) -> bool:
    """Raised by a database driver or a LangGraph checkpointer (by its class), or inside a
    triograph storage backend (by its traceback)."""
    module = type(error).__module__
    if module.startswith(_STORAGE_PACKAGES):
        return True
    tb = error.__traceback__
    while tb is not None:
        if str(tb.tb_frame.f_globals.get("__name__", "")).startswith(_STORAGE_MODULES):
            return True
        tb = tb.tb_next
    return False


async def _nothing() -> None:
    """The graph-loop probe's no-op."""
