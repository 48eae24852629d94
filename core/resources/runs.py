"""Runs: validating a RunCreate, storing the run, admitting it on its thread, the
queries and commands on runs (list, get, delete, cancel, join), and taking over at start-up
the runs a stopped server left in flight.

Validation follows the official processing order (contract §5.2) and happens before
anything is stored, so a 4xx changes nothing.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from typing import TYPE_CHECKING, Any

import attrs
import trio

from triograph.core.engine.execution import Dispatcher
from triograph.core.infra import encoding
from triograph.core.infra.auth import Filters, scoped
from triograph.core.infra.errors import BadRequest, Conflict, InvalidRequest, NotFound
from triograph.core.infra.models import (
    IN_FLIGHT_RUN_STATUSES,
    RUN_STATUSES,
    CancelAction,
    Run,
    RunCreate,
    Thread,
    copied,
    new_id,
    now,
    validate_uuid,
)
from triograph.core.infra.storage import AssistantChanged
from triograph.core.infra.webhooks import WebhookPolicy
from triograph.core.resources.run_records import (
    BOTH_CONFIGURABLE_AND_CONTEXT,
    build_run,
    check_config,
)
from triograph.core.resources.threads import strip_reserved

if TYPE_CHECKING:
    from collections.abc import Iterable

    from triograph.core.engine.handles import RunHandle
    from triograph.core.engine.multitask import Admission
    from triograph.core.infra.context import Core
    from triograph.core.infra.models import Assistant

log = logging.getLogger("triograph.runs")

RUN_FIELDS = (
    "run_id",
    "thread_id",
    "assistant_id",
    "created_at",
    "updated_at",
    "status",
    "metadata",
    "kwargs",
    "multitask_strategy",
    "langsmith_session_name",
)


def _check_resumable(thread: Thread, in_flight: list[Run], *, at_checkpoint: bool) -> None:
    """``command.resume`` needs an interrupted thread (or a run in flight that may interrupt
    it before this one starts, or a checkpoint named to resume from): a 409 otherwise (the
    request conflicts with the thread's state), before the run exists (the official server
    creates the run, which fails)."""
    if at_checkpoint or in_flight or thread.status in ("interrupted", "busy"):
        return
    raise Conflict(
        f"$.command.resume: thread {thread.thread_id} is not interrupted (its status is "
        f"{thread.status!r}), so there is nothing to resume"
    )


@attrs.define(kw_only=True)
class _Plan:
    """A validated run creation, ready to be stored."""

    run: Run
    thread: Thread
    created: bool
    thread_metadata: dict[str, Any]
    assistant: Assistant
    admission: Admission | None
    #: the thread is a stateless run's, new: nobody else knows its id
    stateless: bool = False
    #: ``assistant`` may be this process's cached copy: the insert checks it is current
    cached: bool = False
    #: the request's ``after_seconds``: the run's scheduled start is this long after it is
    #: reserved on its thread
    after: float = 0.0


class RunService:
    def __init__(self, core: Core) -> None:
        self.core = core
        self.webhook_policy = WebhookPolicy(core.settings)

    # -- create -------------------------------------------------------------------------------

    async def create(
        self,
        thread_id: str | None,
        body: RunCreate,
        *,
        request_id: str | None = None,
        retain: bool = False,
        background: bool = False,
        headers: dict[str, str] | None = None,
    ) -> tuple[Run, RunHandle]:
        """Validate, store and start a run; ``thread_id=None`` makes it stateless.
        ``retain`` keeps it joinable from memory once finished; a ``background`` run (nobody
        streams or waits for it) gives way to the requests being taken in before it
        executes (``core/infra/intake.py``); ``headers`` go into ``config.configurable``
        (``http.configurable_headers``)."""
        if thread_id is None:  # a temporary thread: nobody else admits runs on it
            try:
                plan = await self.prepare(
                    None, body, request_id=request_id, headers=headers, cached=True
                )
                return await self.commit(plan, retain=retain, background=background)
            except AssistantChanged:  # the cached assistant is stale: again from storage
                plan = await self.prepare(None, body, request_id=request_id, headers=headers)
                return await self.commit(plan, retain=retain, background=background)
        # other processes admit runs on this thread too: decide and insert under its lock
        async with self.core.cluster.thread_lock(validate_uuid(thread_id, "thread")):
            plan = await self.prepare(thread_id, body, request_id=request_id, headers=headers)
            return await self.commit(plan, retain=retain, background=background)

    async def prepare(
        self,
        thread_id: str | None,
        body: RunCreate,
        *,
        request_id: str | None = None,
        headers: dict[str, str] | None = None,
        cached: bool = False,
    ) -> _Plan:
        """Every check of a run creation, and the records to write; writes nothing.
        ``headers``: request headers to copy into ``config.configurable``; ``cached``: the
        assistant may be this process's copy (``AssistantService.resolve``)."""
        core = self.core
        stateless = thread_id is None
        modes = core.stream_modes.validate(body.stream_mode)
        Dispatcher.check(core.stream_modes, modes)
        strategy_name = body.multitask_strategy or "enqueue"
        strategy = None if stateless else core.multitask.get(strategy_name)
        assistant_id = core.graphs.resolve_assistant_id(body.assistant_id)
        if not stateless:
            thread_id = validate_uuid(thread_id or "", "thread")
        checkpoint = attrs.asdict(body.checkpoint) if body.checkpoint else {}
        if body.checkpoint_id is not None:
            checkpoint["checkpoint_id"] = body.checkpoint_id
        if checkpoint.get("checkpoint_id"):
            try:
                uuid.UUID(checkpoint["checkpoint_id"])
            except ValueError:
                raise InvalidRequest("Invalid checkpoint ID") from None
        if stateless and body.command is not None and body.command.resume is not None:
            raise BadRequest("You must provide a thread_id when resuming.")
        check_config(body.config)
        run_config = dict(body.config or {})
        if (run_config.get("configurable") or {}) and body.context:
            raise BadRequest(BOTH_CONFIGURABLE_AND_CONTEXT)
        if body.webhook is not None:
            self.webhook_policy.check(body.webhook)
        assistant = await core.assistants.resolve(assistant_id, cached=cached)

        temporary = stateless and (body.on_completion or "delete") == "delete"
        thread_id = new_id() if thread_id is None else thread_id
        run = build_run(
            body, assistant, thread_id, modes, checkpoint, temporary, request_id, headers
        )
        if strategy is not None:
            run.multitask_strategy = strategy_name
        request_metadata, allowed = await self._authorize(run, body, stateless)
        if stateless:
            thread = Thread(thread_id=thread_id)
            created = True
        else:
            existing = await core.storage.threads.get(thread_id, **scoped(allowed))
            created = existing is None
            if existing is None and (
                (body.if_not_exists or "reject") != "create"
                or (allowed and await core.storage.threads.get(thread_id) is not None)
            ):  # absent; or another user's, which a create must not touch either
                raise NotFound("Thread or assistant not found.")
            thread = existing or Thread(thread_id=thread_id)
        config_metadata = strip_reserved((body.config or {}).get("metadata"))
        run.metadata = {
            **assistant.metadata,
            **thread.metadata,
            **config_metadata,
            **request_metadata,
            "graph_id": assistant.graph_id,
            "assistant_id": assistant.assistant_id,
        }
        if isinstance(run.kwargs.get("config"), dict):
            run.kwargs["config"]["metadata"] = run.metadata
        in_flight = await self.in_flight(thread.thread_id) if strategy else []
        if body.command is not None and body.command.resume is not None and not stateless:
            _check_resumable(thread, in_flight, at_checkpoint=bool(checkpoint.get("checkpoint_id")))
        admission = strategy.admit(run, in_flight) if strategy and in_flight else None
        thread_metadata = {**config_metadata, **request_metadata} if created else {}
        return _Plan(
            run=run,
            thread=thread,
            created=created,
            thread_metadata=thread_metadata,
            assistant=assistant,
            admission=admission,
            stateless=stateless,
            cached=cached,
            after=body.after_seconds or 0.0,
        )

    async def commit(
        self, plan: _Plan, *, retain: bool = False, background: bool = False
    ) -> tuple[Run, RunHandle]:
        """Store a prepared run (and its thread), start it, apply its multitask admission;
        returns the run as stored (``pending``) and its handle.

        The run is reserved in flight before the first ``await`` since :meth:`prepare`
        consulted the strategy, so no other run can be admitted in between. The writes and
        the start are shielded: a client leaving mid-way cannot leave a stored run without
        a task, or a thread ``busy`` for nothing. If a write or the start fails, the run is
        undone (reservation and record) and the thread status recomputed.
        """
        core, run = self.core, plan.run
        # The scheduled start is stamped with the reservation, not when the request arrived:
        # a delayed run of the thread whose time came while this request awaited storage
        # may have taken the thread already; it must count as scheduled first.
        run.created_at = run.updated_at = now() + dt.timedelta(seconds=plan.after)
        handle = core.supervisor.reserve(run, retain=retain, background=background)
        with trio.CancelScope(shield=True):
            try:
                await self._store(plan)
                stored = copied(run)  # the answer shows it as stored, not as it runs on
                await core.supervisor.start(handle)
            except AssistantChanged:  # nothing was stored: the thread's id is used no more
                core.supervisor.discard(handle)
                core.event_log.forget([run.thread_id])
                raise
            except Exception:
                core.supervisor.discard(handle)
                await core.storage.runs.delete(run.run_id)
                await core.threads.after_run(run, "rolled_back", None)  # it never ran
                raise
        admission = plan.admission
        if admission is not None and admission.cancel:
            reason = f"run {run.run_id} was created with multitask_strategy"
            reason += f"={run.multitask_strategy!r}"
            await self._cancel(list(admission.cancel), admission.action, reason)
        return stored, handle

    async def in_flight(self, thread_id: str) -> list[Run]:
        """The thread's runs pending or running, in submission order: this process's, and
        on a shared backend those of other processes too."""
        runs = [h.run for h in self.core.supervisor.in_flight(thread_id)]
        return runs + await self.core.cluster.in_flight_elsewhere(thread_id)

    async def handle(self, run: Run) -> RunHandle | None:
        """The run's handle here: its own if this process executes (or recently executed)
        it; for one stored in flight by another process, a :class:`RemoteRun`."""
        handle = self.core.supervisor.get(run.run_id)
        if handle is None and run.status in IN_FLIGHT_RUN_STATUSES:
            return await self.core.cluster.follow(run)
        return handle

    async def _cancel(
        self, run_ids: list[str], action: CancelAction, reason: str
    ) -> list[RunHandle]:
        """Cancel the in-flight runs among ``run_ids``, wherever they execute; returns the
        handles cancelled."""
        cancelled = self.core.supervisor.cancel(run_ids, action, reason)
        return cancelled + await self.core.cluster.cancel_elsewhere(run_ids, action, reason)

    async def _store(self, plan: _Plan) -> None:
        """The thread (created, or marked ``busy``), then the run as ``pending``; a stateless
        run's new thread and the run at once."""
        core, thread, assistant = self.core, plan.thread, plan.assistant
        graph = {"graph_id": assistant.graph_id, "assistant_id": assistant.assistant_id}
        if plan.created:
            thread.metadata.update({**graph, **plan.thread_metadata})
        if plan.stateless:  # no other request can know the thread: no lock, one write
            thread.status = "busy"
            current = plan.assistant if plan.cached else None
            await core.storage.runs.create(plan.run, thread=thread, assistant=current)
            await core.hooks.fire("triograph_thread_created", thread=copied(thread))
            return
        if await core.threads.mark_busy(thread, create=plan.created, metadata=graph):
            await core.hooks.fire("triograph_thread_created", thread=copied(thread))
        await core.storage.runs.create(plan.run)

    async def _authorize(
        self, run: Run, body: RunCreate, stateless: bool
    ) -> tuple[dict[str, Any], Filters | None]:
        """``threads.create_run``: the request's metadata as the handlers left it (the run
        and a thread it creates get it), and the filter the thread must pass. The
        handlers see ``run.kwargs`` itself, so what they change there is what runs."""
        value: dict[str, Any] = {
            "thread_id": None if stateless else run.thread_id,
            "assistant_id": run.assistant_id,
            "run_id": run.run_id,
            "status": "pending",
            "metadata": strip_reserved(body.metadata),
            "prevent_insert_if_inflight": True,
            "multitask_strategy": None if stateless else run.multitask_strategy,
            "if_not_exists": body.if_not_exists or "reject",
            "after_seconds": body.after_seconds or 0,
            "kwargs": run.kwargs,
            "action": None,
        }
        allowed = await self.core.access.authorize("threads", "create_run", value)
        if value["kwargs"] is not run.kwargs and isinstance(value["kwargs"], dict):
            run.kwargs = value["kwargs"]
        return strip_reserved(value.get("metadata")), allowed

    # -- recovery -----------------------------------------------------------------------------

    async def recover(self) -> None:
        """Take over the runs a stopped server left in flight. Called once by the lifespan,
        with the supervisor serving but not yet ``ready``, before anything can create runs.

        What is taken over, and how, is the cluster link's (:meth:`ClusterLink.adopt
        <triograph.core.engine.cluster.ClusterLink.adopt>`): on one process every run stored
        in flight, on a shared backend the runs of workers that stopped heartbeating. A run
        left ``running`` is retried from its last checkpoint with ``attempt`` one higher.
        The threads it returns (those runs', and those a crash may have left ``busy``) are
        recomputed: ``busy`` while a run of it is in flight, else as §3.7 says.
        """
        await self.settle(await self.core.cluster.adopt())

    async def settle(self, thread_ids: Iterable[str]) -> None:
        """Recompute each thread's values and status from its head checkpoint and its runs
        in flight; one that fails is logged and left as it is."""
        for thread_id in thread_ids:
            thread = await self.core.storage.threads.get(thread_id)
            if thread is None:
                continue
            try:
                await self.core.threads.recompute(thread)
            except Exception:
                log.exception("thread %s: recomputing its status after a restart failed", thread_id)

    # -- queries ------------------------------------------------------------------------------

    async def get(self, thread_id: str, run_id: str, action: str = "read") -> Run:
        """A run of a thread the user may do ``action`` on (``threads.<action>``)."""
        thread_id = validate_uuid(thread_id, "thread")
        run_id = validate_uuid(run_id, "run")
        await self.core.threads.visible(thread_id, action, run_id=run_id)
        run = await self.core.storage.runs.get(run_id)
        if run is None or run.thread_id != thread_id:
            raise NotFound("Not Found")
        return run

    async def stateless(self, run_id: str) -> Run:
        """A run by id alone (a stateless run's thread is temporary), if the user may read
        its thread."""
        run = await self.core.storage.runs.get(run_id)
        if run is not None:
            await self._check_thread(run.thread_id, "read", "Not Found", run_id=run_id)
            return run
        raise NotFound("Not Found")

    async def stateless_handle(self, run_id: str) -> RunHandle:
        """The live handle of a run by id alone, if the user may read its thread."""
        handle = self.core.supervisor.get(run_id)
        if handle is None:
            raise NotFound(f"Run {run_id} not found")
        thread_id = handle.run.thread_id
        await self._check_thread(thread_id, "read", f"Run {run_id} not found", run_id=run_id)
        return handle

    async def for_thread(
        self, thread_id: str, *, limit: int, offset: int, status: str | None
    ) -> list[Run]:
        thread = await self.core.threads.get(thread_id)
        if status is not None and status not in RUN_STATUSES:
            raise InvalidRequest(f"status: {status!r} is not one of {list(RUN_STATUSES)}")
        if limit < 0 or offset < 0:
            raise InvalidRequest("limit and offset must be 0 or more")
        return await self.core.storage.runs.for_thread(
            thread.thread_id, status=status, limit=limit, offset=offset
        )

    async def delete(self, thread_id: str, run_id: str) -> None:
        """Delete a run. A run in flight is rolled back first (stopped, deleted with its
        checkpoints, thread status recomputed), as the official server deletes what the
        run wrote; a finished run's checkpoints stay: later runs were built on them."""
        try:
            run = await self.get(thread_id, run_id, "delete")
        except NotFound as exc:
            if exc.message != "Not Found":  # the thread is unknown: say so
                raise
            raise NotFound("Run not found") from None
        handle = await self.handle(run)
        if handle is not None:
            reason = f"run deleted via DELETE /threads/{run.thread_id}/runs/{run.run_id}"
            handle.cancel("rollback", reason)
            await handle.done.wait()  # rolled back, or its outcome was already decided
        await self.core.storage.runs.delete(run.run_id)

    async def rollback(self, run: Run) -> None:
        """Delete a cancelled run and every checkpoint it wrote (called by the supervisor)."""
        checkpointer = self.core.storage.checkpointer
        await self.core.bridge.call(lambda: checkpointer.adelete_for_runs([run.run_id]))
        await self.core.storage.runs.delete(run.run_id)

    # -- cancel and join ----------------------------------------------------------------------

    async def _check_thread(self, thread_id: str, verb: str, missing: str, **value: Any) -> None:
        """404 ``missing`` unless the user may do ``verb`` on the thread (``threads.<verb>``).
        Without a filter there is nothing to check here: the caller's run lookup finds an
        absent thread."""
        allowed = await self.core.threads.authorize(verb, thread_id=thread_id, **value)
        if allowed is not None:
            try:
                await self.core.threads.lookup(thread_id, allowed)
            except NotFound:
                raise NotFound(missing) from None

    async def cancel(self, thread_id: str, run_id: str, action: CancelAction) -> RunHandle:
        """Cancel a run of a thread the user may update (``threads.update``)."""
        run_id, thread_id = validate_uuid(run_id, "run"), validate_uuid(thread_id, "thread")
        metadata = {"run_ids": [run_id], "status": None}
        await self._check_thread(
            thread_id, "update", "No runs found to cancel.", action=action, metadata=metadata
        )
        run = await self.core.storage.runs.get(run_id)
        if run is None or run.thread_id != thread_id:
            raise NotFound("No runs found to cancel.")
        handle = await self.handle(run)
        reason = f"interrupt requested via POST /threads/{thread_id}/runs/{run.run_id}/cancel"
        if handle is None or not handle.cancel(action, reason):
            raise NotFound(
                "No matching runs to cancel. Please verify the thread ID and run IDs are "
                "correct, and the runs haven't been deleted or completed."
            )
        return handle

    async def cancel_many(
        self,
        *,
        status: str | None,
        thread_id: str | None,
        run_ids: list[str] | None,
        action: CancelAction,
    ) -> int:
        """Cancel runs by status, or by id on one thread: only runs of threads the user may
        update (``threads.update``)."""
        if (status is None) == (thread_id is None and run_ids is None):
            raise InvalidRequest("give exactly one of: status, or thread_id with run_ids")
        if status is None and (thread_id is None or not run_ids):
            raise InvalidRequest("thread_id and run_ids go together")
        ids = [validate_uuid(r, "run") for r in run_ids or ()] or None
        thread_id = None if thread_id is None else validate_uuid(thread_id, "thread")
        value = {
            "thread_id": thread_id,
            "action": action,
            "metadata": {"run_ids": ids, "status": status},
        }
        allowed = await self.core.access.authorize("threads", "update", value)
        if status is not None:
            statuses = IN_FLIGHT_RUN_STATUSES if status == "all" else (status,)
            runs = await self.core.storage.runs.search(statuses=statuses, **scoped(allowed))
        else:
            runs = await self.core.storage.runs.search(
                thread_id=thread_id, run_ids=ids, **scoped(allowed)
            )
        reason = "cancelled via POST /runs/cancel"
        cancelled = await self._cancel([r.run_id for r in runs], action, reason)
        if not cancelled:
            raise NotFound("No runs found to cancel.")
        return len(cancelled)

    async def join_target(self, thread_id: str, run_id: str) -> tuple[Run | None, RunHandle | None]:
        """The run and its live (or recently finished) handle, for join and join stream, if
        the user may read its thread (``threads.read``)."""
        thread_id = validate_uuid(thread_id, "thread")
        run_id = validate_uuid(run_id, "run")
        await self._check_thread(thread_id, "read", f"Run {run_id} not found", run_id=run_id)
        handle = self.core.supervisor.get(run_id)
        if handle is not None and handle.run.thread_id == thread_id:
            return handle.run, handle
        run = await self.core.storage.runs.get(run_id)
        if run is None or run.thread_id != thread_id:
            raise NotFound(f"Run {run_id} not found")
        if run.kwargs.get("resumable"):  # stored events replay, even a finished run's
            remote = await self.core.cluster.follow(run)
            if remote is not None:
                return run, remote
        return run, await self.handle(run)

    async def result(self, run: Run, handle: RunHandle | None) -> bytes:
        """The join body of a finished run (contract §5.5-5.6)."""
        if handle is not None and handle.done.is_set() and not handle.remote:
            fallback: Any = {}
            if not handle.temporary:
                thread = await self.core.storage.threads.get(run.thread_id)
                fallback = (thread.values if thread else None) or {}
            return handle.output.body(fallback)
        thread = await self.core.storage.threads.get(run.thread_id)
        if thread is None:
            return encoding.dumps({})
        if thread.status == "error" and thread.error:
            return encoding.dumps({"__error__": thread.error})
        if thread.status == "interrupted" and thread.interrupts:
            return encoding.dumps(
                {"__interrupt__": [i for items in thread.interrupts.values() for i in items]}
            )
        return encoding.dumps(thread.values or {})
