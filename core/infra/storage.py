"""Storage: the protocols every backend implements, and the backend registry.

A backend is registered by name through ``triograph_register_storage`` with a factory
taking the storage spec from the command line (``"memory"``, ``"file:PATH"``,
``"postgresql://..."``) and the settings (for ``store.index`` / ``store.ttl``), returning
an async context manager that yields a :class:`Storage` for the app's lifetime (opened and
closed by the lifespan).

Everything on :class:`Storage` except ``checkpointer`` and ``store`` is called from Trio.
The checkpointer and the store are LangGraph objects used on the graph loop (through the
bridge) only. Records handed to a repository are copied by it: mutate a record you got,
then ``update`` it.

``filters`` (an authorization filter, :mod:`triograph.core.infra.auth`) restricts a call to
the records whose ``metadata`` it allows (a run's: its thread's), inside the backend's
query: a record it leaves out is absent (``get`` finds nothing, ``update`` and ``delete``
change nothing, a search and its total leave it out). ``triograph.storage.query`` holds the
semantics, in Python and compiled to SQL.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Collection, Sequence
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any, Protocol

import attrs

from triograph.core.infra.errors import NotAvailable
from triograph.core.infra.registry import Registry

if TYPE_CHECKING:
    from langgraph.checkpoint.base import BaseCheckpointSaver
    from langgraph.store.base import BaseStore

    from triograph.core.infra.auth import Filters
    from triograph.core.infra.models import Assistant, AssistantVersion, Cron, Run, Thread
    from triograph.core.infra.settings import Settings


class AssistantRepo(Protocol):
    """Assistants and their versions. The assistant row is the version it points at."""

    async def create(self, assistant: Assistant) -> bool:
        """Insert the assistant and its version row ``assistant.version``; False (and nothing
        written) if the id exists."""
        ...

    async def get(
        self, assistant_id: str, *, filters: Filters | None = None
    ) -> Assistant | None: ...

    async def update(self, assistant: Assistant, *, filters: Filters | None = None) -> None:
        """Replace the assistant row only (no new version): start-up re-sync, ``/latest``."""
        ...

    async def new_version(self, assistant: Assistant) -> Assistant:
        """Store ``assistant`` as a new version numbered one past the highest existing one
        (atomically), point the assistant at it, and return what was stored."""
        ...

    async def get_version(self, assistant_id: str, version: int) -> AssistantVersion | None: ...

    async def versions(
        self,
        assistant_id: str,
        *,
        metadata: dict[str, Any] | None = None,
        limit: int = 10,
        offset: int = 0,
    ) -> list[AssistantVersion]:
        """Versions whose metadata contains ``metadata``, newest first."""
        ...

    async def delete(self, assistant_id: str, *, filters: Filters | None = None) -> bool:
        """Delete the assistant, its versions and its crons; False if it did not exist."""
        ...

    async def search(
        self,
        *,
        graph_ids: Sequence[str] | None = None,
        metadata: dict[str, Any] | None = None,
        name: str | None = None,
        sort_by: str = "created_at",
        sort_order: str = "desc",
        limit: int = 10,
        offset: int = 0,
        filters: Filters | None = None,
    ) -> tuple[list[Assistant], int]:
        """One page of matches and the total number of matches. ``graph_ids``: the graph
        is one of these; ``metadata``: JSON containment; ``name``: case-insensitive
        substring. ``limit=0`` counts only."""
        ...


class ThreadRepo(Protocol):
    async def create(self, thread: Thread) -> bool:
        """Insert; False (and nothing written) if the id exists."""
        ...

    async def get(self, thread_id: str, *, filters: Filters | None = None) -> Thread | None: ...

    async def update(self, thread: Thread, *, filters: Filters | None = None) -> None: ...

    async def delete(self, thread_id: str, *, filters: Filters | None = None) -> bool:
        """Delete the thread, its runs and its crons; False if it did not exist."""
        ...

    async def search(
        self,
        *,
        ids: Sequence[str] | None = None,
        metadata: dict[str, Any] | None = None,
        values: dict[str, Any] | None = None,
        status: str | None = None,
        sort_by: str = "updated_at",
        sort_order: str = "desc",
        limit: int = 10,
        offset: int = 0,
        filters: Filters | None = None,
    ) -> tuple[list[Thread], int]:
        """One page of matches and the total. ``metadata`` / ``values``: JSON containment
        (a thread without values never matches a ``values`` filter). ``limit=0`` counts."""
        ...

    async def expired(self, at: dt.datetime, *, limit: int = 100) -> list[Thread]:
        """Threads whose ``ttl.expires_at`` is at or before ``at``, soonest first."""
        ...


class AssistantChanged(Exception):
    """``runs.create(..., assistant=...)`` wrote nothing: the run's assistant is no longer
    stored as the copy the run was made from (it was updated or deleted since)."""


class RunRepo(Protocol):
    async def create(
        self, run: Run, *, thread: Thread | None = None, assistant: Assistant | None = None
    ) -> None:
        """Store ``run``; with ``thread``, that new thread too (as ``threads.create``), in
        one write. With ``assistant`` (the copy the run was made from), only if the run's
        assistant is still stored as that one (the same ``updated_at``), checked in the same
        write; else nothing is written and :class:`AssistantChanged` raises.
        """
        ...

    async def get(self, run_id: str, *, filters: Filters | None = None) -> Run | None: ...

    async def update(self, run: Run, *, filters: Filters | None = None) -> None: ...

    async def delete(self, run_id: str, *, filters: Filters | None = None) -> bool: ...

    async def for_thread(
        self,
        thread_id: str,
        *,
        status: str | None = None,
        limit: int = 10,
        offset: int = 0,
    ) -> list[Run]:
        """Runs of a thread, newest first."""
        ...

    async def search(
        self,
        *,
        statuses: Sequence[str] | None = None,
        thread_id: str | None = None,
        run_ids: Sequence[str] | None = None,
        filters: Filters | None = None,
    ) -> list[Run]:
        """Runs matching every given filter, oldest first."""
        ...


class CronRepo(Protocol):
    async def create(self, cron: Cron) -> None: ...

    async def get(self, cron_id: str, *, filters: Filters | None = None) -> Cron | None: ...

    async def update(self, cron: Cron, *, filters: Filters | None = None) -> None: ...

    async def delete(self, cron_id: str, *, filters: Filters | None = None) -> bool: ...

    async def search(
        self,
        *,
        assistant_id: str | None = None,
        thread_id: str | None = None,
        enabled: bool | None = None,
        metadata: dict[str, Any] | None = None,
        sort_by: str = "created_at",
        sort_order: str = "desc",
        limit: int = 10,
        offset: int = 0,
        filters: Filters | None = None,
    ) -> tuple[list[Cron], int]:
        """One page of matches and the total; ``limit=0`` counts only."""
        ...

    async def due(self, at: dt.datetime, *, limit: int = 100) -> list[Cron]:
        """Enabled crons whose ``next_run_date`` is at or before ``at``, soonest first."""
        ...


#: one stored stream event of a run: (sequence number, event name, JSON-encoded data)
StoredEvent = tuple[int, str, bytes]
#: one event of a thread's protocol log: (thread sequence number, unix ms when it was
#: stored, event name ``protocol|<channel>|...``, JSON-encoded params)
ThreadEvent = tuple[int, int, str, bytes]


@attrs.frozen
class ThreadAppend:
    """What :meth:`Cluster.append_events` added to a thread's protocol log: the batch's
    protocol events, in order, numbered ``last - count + 1`` to ``last``, stored at ``ms``."""

    thread_id: str
    last: int
    count: int
    ms: int


class Cluster(Protocol):
    """How processes sharing one backend coordinate (Postgres). A backend only one process
    opens at a time has none (``Storage.cluster`` is ``None``).

    Every process is a *worker* with an id and a heartbeat the backend keeps up (every
    ``lease / 3`` seconds) while the storage is open. A run belongs to the worker that
    created or claimed it (``runs.create`` records this worker as its owner); it is
    *orphaned* once its owner's heartbeat is older than ``lease`` seconds, or it has none.
    Called from Trio.
    """

    worker_id: str

    async def claim(self, *, limit: int = 100) -> list[Run]:
        """Take over orphaned runs (``pending`` or ``running``), oldest first: rows locked
        with ``FOR UPDATE SKIP LOCKED`` so two workers never claim the same run, owner set
        to this worker; one that was ``running`` goes back to ``pending`` with ``attempt``
        one higher, in the same transaction. Returns them as now stored."""
        ...

    async def owns(self, run_id: str) -> bool:
        """Whether the run is still this worker's: no other worker has claimed it (this one's
        heartbeat stopped for a lease, say). True for a run no longer stored."""
        ...

    async def record(self, run: Run) -> bool:
        """Store ``run`` (``running`` as it starts, then its final record) if it is still
        this worker's, in one statement: :meth:`owns` and ``runs.update`` at once. Whether
        it was (True for a run no longer stored, which is not written again)."""
        ...

    async def discard(self, run: Run) -> bool | None:
        """The end of a finished temporary run (stateless, ``on_completion="delete"``):
        delete its thread, and so the run, if the run is still this worker's, in one
        statement (it is never stored final: the record that would say so is deleted by the
        same write). Whether the thread was deleted (False: gone already), or None if the
        run is another worker's, and nothing was deleted."""
        ...

    def watch(
        self, executing: Callable[[], Collection[str]], lost: Callable[[list[str]], None]
    ) -> None:
        """At every heartbeat, call ``lost(run_ids)`` (synchronously, in Trio) with those of
        the runs ``executing()`` names (the ones this worker executes) that another worker
        has claimed meanwhile: this worker's heartbeat stopped for a lease (a long pause, a
        partition), and the run is the claimant's now. This worker must stop executing them,
        writing nothing more of them."""
        ...

    def thread_lock(self, thread_id: str) -> AbstractAsyncContextManager[None]:
        """Exclusive across workers for the block: the admission of a run on a thread (the
        in-flight check, the multitask decision and the insert)."""
        ...

    @property
    def leader(self) -> bool:
        """This worker is the one that runs the cluster-wide chores (cron scheduler, TTL
        sweeps) now. Exactly one live worker is, give or take a lease."""
        ...

    async def notify(self, topic: str, payload: dict[str, Any]) -> None:
        """Send a notification to every other worker (``LISTEN/NOTIFY``); at most once, in
        order per sender, lost when no one listens."""
        ...

    def subscribe(self, callback: Callable[[str, dict[str, Any]], None]) -> None:
        """Call ``callback(topic, payload)`` (synchronously, in Trio: it must not block) for
        every notification another worker sends, from now until the storage closes."""
        ...

    async def append_events(
        self, run_id: str, events: Sequence[StoredEvent]
    ) -> ThreadAppend | None:
        """Store stream events of a run (they go with it) and notify topic ``events`` with
        ``{"run_id": ..., "seq": <last seq>}``, only while the run is this worker's.

        The batch's protocol events (named ``protocol|...``) also go to its thread's protocol
        log in the same statement, numbered after the thread's last (one sequence per thread,
        whoever stores); the log keeps the newest ``LOG_CAP`` of them
        (:mod:`triograph.core.engine.event_log`). The notice then also carries
        ``"thread_id"`` and ``"thread_seq"`` (the last number), and the return value says
        which numbers they got (None when none were stored)."""
        ...

    async def thread_events(self, thread_id: str, *, after: int) -> tuple[int, list[ThreadEvent]]:
        """The thread's protocol log: the last number given (0: none yet) and the kept events
        numbered above ``after``, in order, none above that last number."""
        ...

    async def thread_heads(self, thread_ids: Sequence[str]) -> dict[str, int]:
        """The last protocol event number of each thread that has one."""
        ...

    async def thread_run_start(self, thread_id: str) -> int:
        """Where a reader without ``since`` starts: the number before the first kept event of
        the thread's latest run, or the thread's last number if that run has stored none."""
        ...

    async def events(self, run_id: str, *, after: int = 0, limit: int = 1000) -> list[StoredEvent]:
        """The run's stored events with a sequence number above ``after``, in order."""
        ...

    async def prune_events(self, before: dt.datetime) -> int:
        """Delete the events of runs that finished (not ``pending``/``running``) before
        ``before``, and the oldest protocol events of threads whose log holds more than
        ``LOG_BYTES``; returns how many runs' events went."""
        ...


class Storage(Protocol):
    """What a backend provides for its lifetime."""

    name: str
    #: coordination with other processes sharing this backend; None for a single process
    cluster: Cluster | None

    @property
    def assistants(self) -> AssistantRepo: ...

    @property
    def threads(self) -> ThreadRepo: ...

    @property
    def runs(self) -> RunRepo: ...

    @property
    def crons(self) -> CronRepo: ...

    @property
    def checkpointer(self) -> BaseCheckpointSaver[Any]:
        """Must implement ``adelete_thread``, ``adelete_for_runs``, ``acopy_thread`` and
        ``aprune`` besides the usual methods."""
        ...

    @property
    def store(self) -> BaseStore: ...


StorageFactory = Callable[[str, "Settings"], AbstractAsyncContextManager[Storage]]


class StorageRegistry(Registry[StorageFactory]):
    """Backend name (``memory``, ``file``, ``postgres``) -> factory taking the storage spec."""

    def __init__(self) -> None:
        super().__init__("storage backend")

    def for_spec(self, spec: str) -> StorageFactory:
        """The factory for a ``--storage`` spec, or ``NotAvailable`` listing what is here."""
        name = backend_name(spec)
        if name not in self:
            raise NotAvailable(
                f"storage {spec!r} needs the {name!r} backend, which is not available in "
                f"this installation; available backends: {', '.join(sorted(self))}"
            )
        return self.get(name)


def backend_name(spec: str) -> str:
    """``memory`` -> memory, ``file:x.db`` -> file, ``postgresql://...`` -> postgres."""
    scheme = spec.split(":", 1)[0].lower()
    return {"postgresql": "postgres", "postgres": "postgres"}.get(scheme, scheme)
