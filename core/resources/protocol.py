"""The thread-centric streaming protocol's commands and streams, as a service.

The protocol is another way to watch and drive the same runs: ``run.start`` and
``input.respond`` create ordinary runs through :class:`~triograph.core.resources.runs.
RunService` (stored, listable, cancellable, joinable, under the thread's multitask strategy,
authorized as ``threads.create_run``), whose stream modes are the protocol's channels
(``plugins/protocol_channels.py``); a stream reads the thread's protocol log
(:mod:`triograph.core.engine.event_log`) after ``threads.read``.

Commands are ``{id, method, params}``; the answer is ``{type: "success", id, result, meta}``
or ``{type: "error", id, error: <code>, message}``, the codes of the ``langchain-protocol``
package. A bad field is ``invalid_argument`` naming it; nothing has been changed then.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import attrs
import trio

from triograph.core.engine.event_log import ProtocolFilter, parse_since
from triograph.core.infra.errors import AccessDenied, NotFound, TriographError
from triograph.core.infra.models import RunCreate, structure, validate_uuid

if TYPE_CHECKING:
    from triograph.core.engine.event_log import ThreadEventLog
    from triograph.core.engine.streams import Subscription
    from triograph.core.infra.context import Core
    from triograph.core.infra.models import Thread

#: seconds ``input.respond`` waits for the run that asked for input to record its end
RUN_END_WAIT = 10.0
#: seconds between two looks at a thread whose run another process executes
RUN_END_POLL = 1.0
#: the stream modes of a run started through the protocol: every channel
RUN_MODES = [
    f"protocol:{c}"
    for c in (
        "values",
        "updates",
        "messages",
        "tools",
        "lifecycle",
        "custom",
        "tasks",
        "checkpoints",
        "input",
    )
]
COMMANDS = (
    "run.start",
    "input.respond",
    "subscription.subscribe",
    "subscription.unsubscribe",
    "agent.getTree",
)
#: a run's status as the protocol's agent status
AGENT_STATUS = {
    "pending": "started",
    "running": "running",
    "success": "completed",
    "error": "failed",
    "timeout": "failed",
    "interrupted": "interrupted",
}


class ProtocolError(Exception):
    """A command refused with one of the protocol's error codes."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def invalid(message: str) -> ProtocolError:
    return ProtocolError("invalid_argument", message)


def error_envelope(command_id: int | None, code: str, message: str) -> dict[str, Any]:
    return {"type": "error", "id": command_id, "error": code, "message": message}


def envelope_id(raw: Any) -> int | None:
    """The ``id`` an error about ``raw`` carries: its own if it is an integer, else null."""
    command_id = raw.get("id") if isinstance(raw, dict) else None
    if isinstance(command_id, bool) or not isinstance(command_id, int):
        return None
    return command_id


def parse_command(raw: Any) -> tuple[int, str, dict[str, Any]]:
    """``(id, method, params)`` of a command, or a :class:`ProtocolError` naming the field."""
    if not isinstance(raw, dict):
        raise invalid("a command must be a JSON object {id, method, params}")
    command_id = raw.get("id")
    if isinstance(command_id, bool) or not isinstance(command_id, int) or command_id < 0:
        raise invalid(f"id must be a non-negative integer, got {command_id!r}")
    method = raw.get("method")
    if not isinstance(method, str):
        raise invalid(f"method must be a string, got {method!r}")
    params = raw.get("params", {})
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise invalid("params must be an object")
    return command_id, method, params


@attrs.frozen(kw_only=True)
class CallerContext:
    """What the HTTP layer knows of the caller that a run keeps."""

    request_id: str | None = None
    headers: dict[str, str] | None = None


def _protocol_error(exc: TriographError) -> ProtocolError:
    if isinstance(exc, AccessDenied):
        return ProtocolError("permission_denied", exc.message)
    if exc.status_code >= 500:
        return ProtocolError("unknown_error", exc.message)
    return invalid(exc.message)


class ProtocolService:
    def __init__(self, core: Core) -> None:
        self.core = core
        self._methods: dict[str, Callable[..., Awaitable[dict[str, Any]]]] = {
            "run.start": self.run_start,
            "input.respond": self.input_respond,
            "subscription.subscribe": self.subscribe_stateless,
            "subscription.unsubscribe": self.unsubscribe_stateless,
            "agent.getTree": self.agent_tree,
        }

    async def command(
        self, thread_id: str, raw: Any, caller: CallerContext, *, seq: int = 0
    ) -> dict[str, Any]:
        """One command's answer (success or error envelope); never raises for the client's
        mistakes. ``seq``: the highest seq the connection has sent (``meta``)."""
        try:
            command_id, method, params = parse_command(raw)
        except ProtocolError as exc:
            return error_envelope(envelope_id(raw), exc.code, exc.message)
        handler = self._methods.get(method)
        try:
            if handler is None:
                raise ProtocolError(
                    "unknown_command", f"unknown method {method!r}; allowed: {', '.join(COMMANDS)}"
                )
            result = await handler(thread_id, params, caller)
        except ProtocolError as exc:
            return error_envelope(command_id, exc.code, exc.message)
        except TriographError as exc:
            error = _protocol_error(exc)
            return error_envelope(command_id, error.code, error.message)
        return {
            "type": "success",
            "id": command_id,
            "result": result,
            "meta": {"applied_through_seq": seq},
        }

    # -- commands -----------------------------------------------------------------------------

    async def run_start(
        self, thread_id: str, params: dict[str, Any], caller: CallerContext
    ) -> dict[str, Any]:
        """A run of the thread (created if absent), streaming every protocol channel. Input
        given while the thread waits at an interrupt is the value it resumes with."""
        thread_id = self._thread_id(thread_id)
        assistant_id = params.get("assistant_id")
        if not isinstance(assistant_id, str) or not assistant_id:
            raise invalid("params.assistant_id is required: an assistant id or graph id")
        for key in ("config", "metadata"):
            if params.get(key) is not None and not isinstance(params[key], dict):
                raise invalid(f"params.{key} must be an object")
        strategy = params.get("multitask_strategy", params.get("multitaskStrategy"))
        if strategy is not None and not isinstance(strategy, str):
            raise invalid("params.multitask_strategy must be a string")
        config = params.get("config") or {}
        checkpoint_id = (config.get("configurable") or {}).get("checkpoint_id")
        if checkpoint_id is not None:
            try:
                uuid.UUID(str(checkpoint_id))
            except ValueError:
                raise invalid(
                    "params.config.configurable.checkpoint_id must be a checkpoint id (UUID)"
                ) from None
        value, command = params.get("input"), None
        if value is not None:
            thread = await self.core.storage.threads.get(thread_id)
            if thread is not None and thread.status == "interrupted":
                value, command = None, {"resume": params["input"]}
        body: dict[str, Any] = {
            "assistant_id": assistant_id,
            "input": value,
            "command": command,
            "config": params.get("config"),
            "metadata": params.get("metadata"),
            "multitask_strategy": strategy,
            "langsmith_tracer": params.get("langsmith_tracer"),
        }
        run = await self._create(thread_id, body, caller)
        return {"run_id": run}

    async def input_respond(
        self, thread_id: str, params: dict[str, Any], caller: CallerContext
    ) -> dict[str, Any]:
        """Resume the thread's interrupts with the responses: a run of ``Command(resume=
        {interrupt_id: response, ...}, update, goto)`` on the thread's assistant."""
        if "responses" in params:
            responses = params["responses"]
            if not isinstance(responses, list) or not responses:
                raise invalid("params.responses must be a non-empty array")
            items = responses
        else:
            items = [params]
        resume: dict[str, Any] = {}
        for n, item in enumerate(items):
            where = f"params.responses[{n}]" if "responses" in params else "params"
            if not isinstance(item, dict):
                raise invalid(f"{where} must be an object")
            interrupt_id = item.get("interrupt_id")
            if not isinstance(interrupt_id, str) or not interrupt_id:
                raise invalid(f"{where}.interrupt_id is required: a string")
            namespace = item.get("namespace")
            if namespace is not None and not (
                isinstance(namespace, list) and all(isinstance(s, str) for s in namespace)
            ):
                raise invalid(f"{where}.namespace must be an array of strings")
            if "response" not in item:
                raise invalid(f"{where}.response is required")
            resume[interrupt_id] = item["response"]
        thread = await self._thread(thread_id)
        if thread.status == "busy":  # a client answers input.requested as soon as it sees it:
            thread = await self._after_runs(thread)  # the run that asked may still be ending
        pending = {
            i.get("id")
            for items_ in (thread.interrupts or {}).values()
            for i in items_
            if isinstance(i, dict)
        }
        unknown = [i for i in resume if i not in pending]
        if unknown:
            raise ProtocolError(
                "no_such_interrupt",
                f"interrupt {unknown[0]!r} is not pending on thread {thread.thread_id}",
            )
        assistant_id = await self._assistant_of(thread)
        command: dict[str, Any] = {"resume": resume}
        for key in ("update", "goto"):
            if params.get(key) is not None:
                command[key] = params[key]
        body = {
            "assistant_id": assistant_id,
            "command": command,
            "config": params.get("config"),
            "metadata": params.get("metadata"),
        }
        await self._create(thread.thread_id, body, caller)
        return {}

    async def subscribe_stateless(
        self, thread_id: str, params: dict[str, Any], caller: CallerContext
    ) -> dict[str, Any]:
        """Over HTTP a subscription is the stream request itself: checked, not kept."""
        ProtocolFilter.parse(params)
        await self.check_stream(thread_id)
        return {"subscription_id": str(uuid.uuid4()), "replayed_events": 0}

    async def unsubscribe_stateless(
        self, thread_id: str, params: dict[str, Any], caller: CallerContext
    ) -> dict[str, Any]:
        subscription_id = params.get("subscription_id")
        if not isinstance(subscription_id, str):
            raise invalid("params.subscription_id is required: a string")
        raise ProtocolError(
            "no_such_subscription",
            f"no subscription {subscription_id!r} on this connection (over HTTP, closing the "
            "event stream unsubscribes)",
        )

    async def agent_tree(
        self, thread_id: str, params: dict[str, Any], caller: CallerContext
    ) -> dict[str, Any]:
        """The thread's agent: its latest run's graph and status."""
        runs = await self.core.runs.for_thread(
            self._thread_id(thread_id), limit=1, offset=0, status=None
        )
        if not runs:
            raise ProtocolError("no_such_run", f"thread {thread_id} has no run")
        run = runs[0]
        graph = (run.kwargs.get("config") or {}).get("configurable", {}).get("graph_id")
        status = AGENT_STATUS.get(run.status, "running")
        return {"tree": {"namespace": [], "status": status, "graph_name": graph}}

    # -- streams ------------------------------------------------------------------------------

    def parse_stream(self, params: Any) -> tuple[ProtocolFilter, int | None]:
        """The filter and ``since`` of a stream request (:class:`InvalidRequest` if bad)."""
        flt = ProtocolFilter.parse(params)
        return flt, parse_since(params.get("since"))

    async def check_stream(self, thread_id: str) -> bool:
        """May the caller watch the thread? True if it exists (``threads.read`` passed);
        False if it does not exist yet (the client made its id up; a run will create it),
        and then the caller is checked again when the first event comes (:meth:`recheck`).
        Raises NotFound (404) for a thread the caller may not read."""
        thread_id = self._thread_id(thread_id)
        if await self.core.storage.threads.get(thread_id) is None:
            await self.core.threads.authorize("read", thread_id=thread_id)
            return False
        await self.core.threads.get(thread_id)
        return True

    async def recheck(self, thread_id: str) -> bool:
        """The thread exists now: may the caller read it?"""
        try:
            await self.core.threads.get(thread_id)
        except (NotFound, AccessDenied):
            return False
        return True

    async def subscribe(
        self, thread_id: str, flt: ProtocolFilter, since: int | None
    ) -> Subscription:
        log: ThreadEventLog = self.core.event_log
        return await log.subscribe(self._thread_id(thread_id), flt.accepts, since)

    # -- helpers ------------------------------------------------------------------------------

    def _thread_id(self, thread_id: str) -> str:
        try:
            return validate_uuid(thread_id, "thread")
        except TriographError as exc:
            raise invalid(exc.message) from None

    async def _after_runs(self, thread: Thread) -> Thread:
        """The thread once its runs have recorded their outcome (at most ``RUN_END_WAIT``
        seconds), as then stored: those this process executes (it waits for them), then,
        while the thread is still busy, those other processes execute (on a shared backend:
        woken by their end's notification, or polling)."""
        thread_id = thread.thread_id
        handles = self.core.supervisor.handles.values()  # with those recording their end
        ending = [h for h in handles if h.run.thread_id == thread_id]
        cluster = self.core.cluster
        with trio.move_on_after(RUN_END_WAIT):
            for handle in ending:
                await handle.done.wait()
            while True:
                ended = cluster.run_end_elsewhere(thread_id)  # listening before it looks
                thread = await self._thread(thread_id)
                if thread.status != "busy" or not await cluster.in_flight_elsewhere(thread_id):
                    return thread
                with trio.move_on_after(RUN_END_POLL):  # a notification may be lost
                    await ended.wait()
        return await self._thread(thread_id)

    async def _thread(self, thread_id: str) -> Thread:
        try:
            return await self.core.threads.get(self._thread_id(thread_id))
        except NotFound as exc:
            raise ProtocolError("no_such_run", exc.message) from None

    async def _assistant_of(self, thread: Thread) -> str:
        assistant_id = thread.metadata.get("assistant_id")
        if isinstance(assistant_id, str):
            return assistant_id
        runs = await self.core.storage.runs.for_thread(
            thread.thread_id, status=None, limit=1, offset=0
        )
        if not runs:
            raise ProtocolError("no_such_run", f"thread {thread.thread_id} has no run to resume")
        return runs[0].assistant_id

    async def _create(self, thread_id: str, body: dict[str, Any], caller: CallerContext) -> str:
        full = {
            **{k: v for k, v in body.items() if v is not None},
            "stream_mode": RUN_MODES,
            "stream_subgraphs": True,
            "if_not_exists": "create",
        }
        try:
            create = structure(full, RunCreate)
        except TriographError as exc:
            raise invalid(f"params: {exc.message}") from None
        run, _ = await self.core.runs.create(
            thread_id, create, request_id=caller.request_id, retain=True, headers=caller.headers
        )
        return run.run_id
