"""The asyncio bridge: with its ASGI half (``graph_asgi``), the only code of triograph that
touches asyncio.

LangGraph's Pregel runtime, its checkpointers and the LLM SDKs are asyncio code. They all
run on one dedicated asyncio event loop in its own thread, owned by a :class:`GraphBridge`
that the app lifespan starts and stops. Trio reaches that loop only through two calls:

* :meth:`GraphBridge.call` runs one coroutine there and returns its result;
* :meth:`GraphBridge.stream` runs an async iterator there and hands its items back to Trio
  in batches, with one cross-thread wake-up per batch rather than per item.

User code that is not a graph, an asyncio ASGI app (the custom ``http.app``), runs there too,
through ``graph_asgi.serve``, the bridge's ASGI half.

Cancellation crosses explicitly: a Trio cancel becomes exactly one ``task.cancel()`` on the
asyncio side, followed by a shielded wait, bounded by ``cleanup_timeout``, for that task to
finish its own cleanup (``finally`` blocks in nodes) and for every task it started to end
(checkpointer writes). Exceptions cross with their traceback. Measured before this design
was fixed: trio-asyncio costs about 2x CPU per run and 14x per chunk, and anyio cancel
scopes around ``astream`` leak the node task.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import contextvars
import sys
import threading
import weakref
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, Generic, TypeAlias, TypeVar

import trio

try:
    import uvloop
except ImportError:  # Windows, or not installed: stock asyncio
    uvloop = None  # type: ignore[assignment,unused-ignore]

T = TypeVar("T")

Message: TypeAlias = dict[str, Any]
Receive: TypeAlias = Callable[[], Awaitable[Message]]
Send: TypeAlias = Callable[[Message], Awaitable[None]]
ASGIApp: TypeAlias = Callable[[dict[str, Any], Receive, Send], Awaitable[None]]

#: How long a cancelled asyncio task may take to clean up before Trio stops waiting for it.
CLEANUP_TIMEOUT = 10.0
#: seconds between two looks for a follower among the streams nobody follows (see ``stream``)
LAZY_DELAY = 0.05


#: the job whose task (or a task it started) is running: a task runs in a copy of the
#: context of the code that started it, so every task a job's code starts carries the job
_CURRENT_JOB: contextvars.ContextVar[_Job[Any] | None] = contextvars.ContextVar(
    "triograph_job", default=None
)

if sys.version_info >= (3, 12):

    def _job_of(task: asyncio.Task[Any]) -> _Job[Any] | None:
        """The job whose code started ``task``, read from the context it runs in. This sees
        eager tasks too (``asyncio.eager_task_factory``, which LangGraph starts its
        checkpoint writes with): they never pass through the loop's task factory."""
        return task.get_context().get(_CURRENT_JOB)

    _task_factory = None

else:  # no Task.get_context, and no eager tasks: every task passes the task factory
    _TASK_JOBS: weakref.WeakKeyDictionary[asyncio.Task[Any], _Job[Any]] = (
        weakref.WeakKeyDictionary()
    )

    def _job_of(task: asyncio.Task[Any]) -> _Job[Any] | None:
        return _TASK_JOBS.get(task)

    def _task_factory(
        loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any
    ) -> asyncio.Task[Any]:
        """The graph loop's task factory: notes the job of each task for :func:`_job_of`."""
        task: asyncio.Task[Any] = asyncio.Task(coro, loop=loop, **kwargs)
        context = kwargs.get("context")
        job = context.get(_CURRENT_JOB) if context is not None else _CURRENT_JOB.get()
        if job is not None:
            _TASK_JOBS[task] = job
        return task


def new_graph_loop() -> asyncio.AbstractEventLoop:
    """A new event loop for the graphs: uvloop's where it is installed (a dependency on
    Linux and macOS, as it is of the official server, whose Uvicorn runs on it), stock
    asyncio's elsewhere. uvloop runs the loop itself (its turns, callbacks and handles, its
    selector) in C: the graph side of a small run executes ~7% fewer instructions
    (bench/README.md)."""
    if uvloop is None:
        return asyncio.new_event_loop()
    loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    return loop


def detached(fn: Callable[[], T]) -> T:
    """``fn()`` (on the graph loop) outside the job it is called from: a long-lived task it
    starts (a store's batch task, a pool's workers) belongs to no job, so a cancelled job
    does not wait for it."""
    return contextvars.Context().run(fn)


async def shielded(write: Awaitable[T]) -> T:
    """Await ``write`` (on the graph loop) to its end even if the caller is cancelled: for
    statements that must not be cut apart (a SQL statement and its commit). The caller's
    cancel still ends its own wait; a cancelled job waits for ``write`` (a task it started)."""
    return await asyncio.shield(write)


class _Mailbox:
    """Calls posted from one thread and run, in order, on the other: one cross-thread
    wake-up for however many calls are posted before the other side gets to them.

    ``wake(run)`` schedules ``run`` on the other side (``call_soon_threadsafe`` of the graph
    loop, ``run_sync_soon`` of Trio); each costs a write to a wake-up socket and a turn of
    the other side's loop, so under load one wake-up per batch is much cheaper than one per
    call. A call that raises does not keep the calls after it from running; the first
    error is raised again once all have run.
    """

    def __init__(self, wake: Callable[[Callable[[], None]], object]) -> None:
        self._wake = wake
        self._lock = threading.Lock()
        self._calls: collections.deque[tuple[Callable[..., None], tuple[Any, ...]]] = (
            collections.deque()
        )
        self._armed = False  # a wake-up is on its way: later posts ride on it

    def post(self, fn: Callable[..., None], *args: Any) -> None:
        with self._lock:
            self._calls.append((fn, args))
            if self._armed:
                return
            self._armed = True
        try:
            self._wake(self._run)
        except BaseException:
            with self._lock:
                self._armed = False
            raise

    def _run(self) -> None:
        with self._lock:
            calls, self._calls = self._calls, collections.deque()
            self._armed = False
        error: BaseException | None = None
        for fn, args in calls:
            try:
                fn(*args)
            except BaseException as exc:  # each call runs whatever the others did
                error = error or exc
        if error is not None:
            raise error


class _Job(Generic[T]):
    """One asyncio task started from Trio, with a Trio event set when it is done.

    A cancelled job waits for every task its code started, however it was started:
    LangGraph writes a run's checkpoints in background tasks, which a cancel cuts its
    ``astream`` loose from (the cancel reaches the ``asyncio.wait`` on them, not the writes),
    and the run's outcome (the thread's values; a rollback's deletion of the run's
    checkpoints) must be recorded after those land, not before.
    """

    def __init__(
        self,
        bridge: GraphBridge,
        make: Callable[[], Awaitable[T]],
        on_done: Callable[[], None] | None = None,
    ) -> None:
        self.done = trio.Event()
        self._on_done = on_done  # called on Trio with ``done.set``: the same wake-up
        self._task: asyncio.Task[T] | None = None
        self._cancel_requested = False
        self._cancel_sent = False  # Trio side: a task is cancelled at most once
        self._loop = bridge.loop
        self._to_loop, self._to_trio = bridge.mailboxes
        self._to_loop.post(self._start, make)

    # -- asyncio side --
    def _start(self, make: Callable[[], Awaitable[T]]) -> None:
        async def runner() -> T:
            _CURRENT_JOB.set(self)
            try:
                return await make()
            except asyncio.CancelledError:
                while started := self._started():
                    await asyncio.wait(started)
                raise

        self._task = self._loop.create_task(runner())
        self._task.add_done_callback(self._notify)
        if self._cancel_requested:
            self._task.cancel()

    def _started(self) -> list[asyncio.Task[Any]]:
        """The unfinished tasks this job's code started, directly or not."""
        me = asyncio.current_task()
        return [t for t in asyncio.all_tasks() if t is not me and _job_of(t) is self]

    def _notify(self, _: object) -> None:
        with contextlib.suppress(trio.RunFinishedError):  # Trio is gone: nobody waits
            self._to_trio.post(self._set_done)

    def _set_done(self) -> None:  # on Trio
        self.done.set()
        if self._on_done is not None:
            self._on_done()

    def _cancel_on_loop(self) -> None:
        self._cancel_requested = True
        if self._task is not None:
            self._task.cancel()

    # -- Trio side --
    def cancel(self) -> None:
        if not self._cancel_sent:
            self._cancel_sent = True
            self._to_loop.post(self._cancel_on_loop)

    async def settle(self) -> None:
        """After a Trio cancel: cancel the task once and wait (shielded, bounded) for it."""
        if self.done.is_set():
            return
        self.cancel()
        with trio.CancelScope(shield=True), trio.move_on_after(CLEANUP_TIMEOUT):
            await self.done.wait()

    def result(self) -> T:
        assert self._task is not None
        return self._task.result()


class _Pipe(Generic[T]):
    """Items produced on the asyncio loop, consumed in batches by one Trio task.

    While the consumer waits, each item wakes it (its ``live()`` says it must pass them on
    as they come), or, when ``live()`` says nobody follows them yet, only the end of the
    stream, a full buffer, or the bridge's sweep finding ``live()`` true (every
    :data:`LAZY_DELAY` seconds) do: a ``/wait`` nobody streams gets its run's items in one
    batch, one wake-up of Trio instead of one per item. One sweep for every lazy pipe, not
    a timeout each: a burst of background runs had hundreds of pipes waiting at once, each
    timing out (a cancel scope and an unwinding ``Cancelled``) every 50 ms for nothing."""

    def __init__(
        self, bridge: GraphBridge, max_buffer: int, live: Callable[[], bool] | None
    ) -> None:
        self._bridge = bridge
        self._to_loop, self._to_trio = bridge.mailboxes
        self._lock = threading.Lock()
        self._items: list[T] = []
        self._finished = False
        self._wakeup: trio.Event | None = None
        #: the consumer waits for the end, a full buffer or a follower, not for each item
        self._lazy = False
        self._live = live
        self._max_buffer = max_buffer
        self._space: asyncio.Event | None = None

    # -- asyncio side --
    async def pump(self, factory: Callable[[], AsyncIterator[T]]) -> None:
        # its end is told by the job's (``finish``), in the same wake-up of Trio
        async for item in factory():
            with self._lock:
                self._items.append(item)
                if len(self._items) >= self._max_buffer:
                    self._space = space = asyncio.Event()
                else:
                    space = None
                if self._lazy and space is None:
                    wake = None
                else:
                    wake, self._wakeup = self._wakeup, None
            if wake is not None:
                self._to_trio.post(wake.set)
            if space is not None:  # back-pressure: wait until Trio drained the batch
                await space.wait()

    # -- Trio side --
    async def batches(self, job: _Job[None]) -> AsyncGenerator[list[T]]:
        while True:
            lazy = self._live is not None and not self._live()
            with self._lock:
                batch, self._items = self._items, []
                finished = self._finished
                space, self._space = self._space, None
                wait = None
                if not batch and not finished:
                    self._wakeup = wait = trio.Event()
                    self._lazy = lazy
            if space is not None:
                self._to_loop.post(space.set)
            if batch:
                yield batch
            elif finished:  # set with the job's done event (``finish``)
                job.result()  # re-raises the graph's exception with its traceback
                return
            elif wait is not None:
                if lazy:
                    lazy_pipes = self._bridge.lazy_pipes
                    lazy_pipes.add(self)
                    try:
                        await wait.wait()
                    finally:
                        lazy_pipes.discard(self)
                else:
                    await wait.wait()

    def finish(self) -> None:
        """The producer's job is done (called on Trio once its ``done`` event is set): the
        only place the stream is marked finished."""
        with self._lock:
            self._finished = True
            wake, self._wakeup = self._wakeup, None
        if wake is not None:
            wake.set()

    def sweep(self) -> None:
        """Wake the consumer, waiting lazily, if ``live()`` now says someone follows."""
        assert self._live is not None
        if self._live():
            with self._lock:
                self._lazy = False
                wake, self._wakeup = self._wakeup, None
            if wake is not None:
                wake.set()

    def leftover(self) -> list[T]:
        """The items the consumer has not taken (it left early)."""
        with self._lock:
            items, self._items = self._items, []
        return items


class _LazyPipes:
    """The pipes whose consumer waits lazily, swept every :data:`LAZY_DELAY` seconds while
    there are any (see :class:`_Pipe`)."""

    def __init__(self) -> None:
        self._pipes: set[_Pipe[Any]] = set()
        self._added: trio.Event | None = None

    def add(self, pipe: _Pipe[Any]) -> None:
        self._pipes.add(pipe)
        if self._added is not None:
            self._added.set()
            self._added = None

    def discard(self, pipe: _Pipe[Any]) -> None:
        self._pipes.discard(pipe)

    async def sweep(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Until cancelled: the app runs it as a service, beside its runs."""
        task_status.started()
        while True:
            await trio.sleep(LAZY_DELAY)
            if self._pipes:
                for pipe in list(self._pipes):
                    pipe.sweep()
            else:  # parked only once a sweep found none: not woken for each run meanwhile
                self._added = added = trio.Event()
                await added.wait()


class GraphBridge:
    """Owns the asyncio loop thread that every graph, checkpointer and store runs on.

    Resource handling: :meth:`open` starts the thread and closes it on exit, after
    cancelling whatever is still running there. Use it as ``async with bridge.open():`` in
    the app lifespan; nothing else starts or stops the loop.
    """

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._mailboxes: tuple[_Mailbox, _Mailbox] | None = None
        #: the pipes whose consumer waits lazily; ``lazy_pipes.sweep`` must run while runs
        #: stream (the app starts it as a service), or those see a joiner only at their end
        self.lazy_pipes = _LazyPipes()

    @property
    def mailboxes(self) -> tuple[_Mailbox, _Mailbox]:
        """Calls to run on the graph loop, and calls to run on Trio (see :class:`_Mailbox`)."""
        if self._mailboxes is None:
            raise RuntimeError("the graph loop is not running (use `async with bridge.open()`)")
        return self._mailboxes

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            raise RuntimeError("the graph loop is not running (use `async with bridge.open()`)")
        return self._loop

    @asynccontextmanager
    async def open(self) -> AsyncIterator[GraphBridge]:
        loop = new_graph_loop()
        loop.set_task_factory(_task_factory)  # None from Python 3.12 on: not needed
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(loop)
            loop.call_soon(ready.set)
            loop.run_forever()

        self._thread = threading.Thread(target=run, name="triograph-graph-loop", daemon=True)
        self._thread.start()
        await trio.to_thread.run_sync(ready.wait)
        self._loop = loop
        token = trio.lowlevel.current_trio_token()
        self._mailboxes = (_Mailbox(loop.call_soon_threadsafe), _Mailbox(token.run_sync_soon))
        try:
            yield self
        finally:
            with trio.CancelScope(shield=True):
                await self._close(loop)

    async def _close(self, loop: asyncio.AbstractEventLoop) -> None:
        async def drain() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await loop.shutdown_asyncgens()

        with trio.move_on_after(CLEANUP_TIMEOUT):
            await self.call(drain)
        loop.call_soon_threadsafe(loop.stop)
        assert self._thread is not None
        await trio.to_thread.run_sync(self._thread.join)
        loop.close()
        self._loop = None
        self._mailboxes = None

    async def call(self, make: Callable[[], Awaitable[T]]) -> T:
        """Run ``make()`` on the graph loop and return its result.

        Cancelling the calling Trio task cancels the asyncio task once and waits, shielded
        and bounded by ``CLEANUP_TIMEOUT``, for it to finish before ``Cancelled`` propagates.
        """
        job: _Job[T] = _Job(self, make)
        try:
            await job.done.wait()
        finally:
            await job.settle()
        return job.result()

    @asynccontextmanager
    async def stream(
        self,
        factory: Callable[[], AsyncIterator[T]],
        *,
        max_buffer: int = 256,
        live: Callable[[], bool] | None = None,
        leftover: Callable[[list[T]], None] | None = None,
    ) -> AsyncIterator[AsyncIterator[list[T]]]:
        """Run the async iterator ``factory()`` on the graph loop; yield its items in batches.

        Use as ``async with bridge.stream(f) as batches: async for batch in batches: ...``.
        The producer pauses while ``max_buffer`` items wait unconsumed. Leaving the block
        early, or a Trio cancel, cancels the producer and waits for it as :meth:`call` does.
        An exception raised by the producer is re-raised from the iteration.

        Items are handed over as soon as they come, unless ``live`` is given and returns
        False when the consumer is about to wait: then it waits for the producer's end, a
        full buffer, or ``live()`` to turn true (seen within :data:`LAZY_DELAY` seconds),
        whichever comes first (see :class:`_Pipe`). Items made that the consumer had not
        taken when it left (a cancel) are handed to ``leftover``, once the producer is done.
        """
        pipe: _Pipe[T] = _Pipe(self, max_buffer, live)

        def pump() -> Awaitable[None]:
            return pipe.pump(factory)

        job: _Job[None] = _Job(self, pump, pipe.finish)
        batches = pipe.batches(job)
        try:
            yield batches
        finally:
            await batches.aclose()  # the consumer may have left mid-iteration
            await job.settle()
            if leftover is not None and (rest := pipe.leftover()):
                leftover(rest)
