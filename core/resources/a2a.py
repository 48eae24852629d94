"""A2A tasks: an assistant as an A2A agent, its messages as runs on threads.

The protocol (JSON-RPC, the A2A 1.0 method names and the 0.3 ones, the wire form of tasks
and events, errors) is the official ``a2a-sdk``'s: its ``JsonRpcDispatcher`` parses a
request and calls a ``RequestHandler``; :class:`A2ATasks` is that handler, written on Trio
over the run services, with the SDK's protobuf types. ``core.http.routes.a2a`` serves it.
The mapping, after the official server's:

* a context id is a thread (a new one when the message has none; created on first use), a
  task is a run on it (the task id is the run id);
* ``SendMessage`` / ``message/send``: the message becomes a run's input (text parts are
  a human message in ``messages``, data parts are merged into the input), waited for; the
  answer is the task: ``completed`` with the thread's values as an artifact (the last AI
  message's text as a text artifact when there is one), ``input-required`` when the run
  was interrupted (the interrupts in the status message), ``failed``, ``canceled``; with
  ``returnImmediately`` the task as it is once the run is stored (``submitted``);
* a message on a thread that is interrupted resumes it: a data part ``{"resume": value}``,
  or else its text (or data), becomes ``Command(resume=...)``;
* ``SendStreamingMessage`` / ``message/stream``: the task (``submitted``), ``working``,
  one artifact update per ``values`` event of the run, and the final status;
* ``GetTask`` / ``tasks/get`` reads the run and its thread; ``CancelTask`` /
  ``tasks/cancel`` interrupts a run in flight (a finished one is not cancelable).

Push notifications, task lists and subscriptions are not offered (the agent card says so).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncGenerator
from importlib import metadata
from typing import TYPE_CHECKING, Any

import orjson
from a2a.helpers.proto_helpers import get_data_parts, get_text_parts, new_data_part
from a2a.server.request_handlers.request_handler import RequestHandler
from a2a.types import a2a_pb2 as pb
from a2a.utils.errors import (
    InvalidParamsError,
    TaskNotCancelableError,
    TaskNotFoundError,
    UnsupportedOperationError,
)

from triograph.core.infra import encoding
from triograph.core.infra.errors import NotFound, TriographError
from triograph.core.infra.models import IN_FLIGHT_RUN_STATUSES, RunCreate, structure

if TYPE_CHECKING:
    from a2a.server.context import ServerCallContext
    from a2a.server.events import Event

    from triograph.core.engine.handles import RunHandle
    from triograph.core.infra.context import Core
    from triograph.core.infra.models import Assistant, Run, Thread

#: ``ServerCallContext.state`` key of the assistant the request is for
ASSISTANT = "assistant_id"
MODES = ["text/plain", "application/json"]
_STATES = {
    "pending": pb.TASK_STATE_SUBMITTED,
    "running": pb.TASK_STATE_WORKING,
    "success": pb.TASK_STATE_COMPLETED,
    "error": pb.TASK_STATE_FAILED,
    "timeout": pb.TASK_STATE_FAILED,
    "interrupted": pb.TASK_STATE_CANCELED,
}


def agent_card(assistant: Assistant, url: str) -> pb.AgentCard:
    """The card of ``assistant`` served at ``url`` (its JSON-RPC endpoint): A2A 1.0, and
    0.3 at the same URL."""
    name = assistant.name or assistant.graph_id
    return pb.AgentCard(
        name=name,
        description=assistant.description or f"The {name} assistant (graph {assistant.graph_id})",
        version=_version(),
        supported_interfaces=[
            pb.AgentInterface(url=url, protocol_binding="JSONRPC", protocol_version=version)
            for version in ("1.0", "0.3")
        ],
        capabilities=pb.AgentCapabilities(streaming=True, push_notifications=False),
        default_input_modes=MODES,
        default_output_modes=MODES,
        skills=[
            pb.AgentSkill(
                id=f"{assistant.graph_id}-main",
                name=name,
                description=assistant.description or f"Runs the {assistant.graph_id} graph",
                tags=["assistant", assistant.graph_id],
                input_modes=MODES,
                output_modes=MODES,
            )
        ],
    )


class A2ATasks(RequestHandler):
    """The SDK's request handler over ``core``'s runs (see the module docstring). The
    assistant comes from ``context.state["assistant_id"]``, set by the route."""

    def __init__(self, core: Core) -> None:
        self.core = core

    # -- messages -------------------------------------------------------------------------------

    async def on_message_send(
        self, params: pb.SendMessageRequest, context: ServerCallContext
    ) -> pb.Task:
        run, handle = await self._start(params.message, context)
        if not params.configuration.return_immediately:
            await handle.done.wait()
        return await self._task(run.run_id, params.message)

    async def on_message_send_stream(
        self, params: pb.SendMessageRequest, context: ServerCallContext
    ) -> AsyncGenerator[Event]:
        run, handle = await self._start(params.message, context)
        sub = handle.stream.subscribe(after=-1)
        task_id, context_id = run.run_id, run.thread_id
        try:
            yield pb.Task(
                id=run.run_id,
                context_id=run.thread_id,
                status=pb.TaskStatus(state=pb.TASK_STATE_SUBMITTED),
                history=[params.message],
            )
            working = pb.TaskStatus(state=pb.TASK_STATE_WORKING)
            yield pb.TaskStatusUpdateEvent(task_id=task_id, context_id=context_id, status=working)
            while events := await sub.receive():
                for event in events:
                    if event.name == "values":
                        artifact = pb.Artifact(
                            artifact_id=f"{run.run_id}-values",
                            name="values",
                            parts=[new_data_part(orjson.loads(event.data))],
                        )
                        yield pb.TaskArtifactUpdateEvent(
                            task_id=task_id, context_id=context_id, artifact=artifact
                        )
            await handle.done.wait()
            task = await self._task(run.run_id, params.message)
            yield pb.TaskStatusUpdateEvent(
                task_id=task_id, context_id=context_id, status=task.status
            )
        finally:
            sub.close()

    async def _start(
        self, message: pb.Message, context: ServerCallContext
    ) -> tuple[Run, RunHandle]:
        """A run of the context's assistant on the message's thread, for the message."""
        core = self.core
        assistant = await self._assistant(context)
        thread_id = message.context_id or str(uuid.uuid4())
        if message.task_id:  # a reply to a task: its thread
            run = await self._run(message.task_id)
            if message.context_id and message.context_id != run.thread_id:
                raise InvalidParamsError(message="taskId is not a task of contextId")
            thread_id = run.thread_id
        thread = await self._thread(thread_id)
        body: dict[str, Any] = {
            "assistant_id": assistant.assistant_id,
            "if_not_exists": "create",
            "stream_mode": ["values"],
            "metadata": {"a2a_message_id": message.message_id},
        }
        resume, values = _read(message, thread)
        if resume is not None:
            body["command"] = {"resume": resume[0]}
        else:
            body["input"] = values
        try:
            return await core.runs.create(thread_id, structure(body, RunCreate))
        except TriographError as exc:
            raise InvalidParamsError(message=exc.message) from exc

    # -- tasks ----------------------------------------------------------------------------------

    async def on_get_task(self, params: pb.GetTaskRequest, context: ServerCallContext) -> pb.Task:
        await self._assistant(context)
        return await self._task((await self._run(params.id)).run_id)

    async def on_cancel_task(
        self, params: pb.CancelTaskRequest, context: ServerCallContext
    ) -> pb.Task:
        await self._assistant(context)
        run = await self._run(params.id)
        if run.status not in IN_FLIGHT_RUN_STATUSES:
            raise TaskNotCancelableError(message=f"task {run.run_id} is {run.status}")
        try:
            handle = await self.core.runs.cancel(run.thread_id, run.run_id, "interrupt")
        except NotFound as exc:  # it finished meanwhile
            raise TaskNotCancelableError(message=exc.message) from exc
        await handle.done.wait()
        return await self._task(run.run_id)

    async def _task(self, run_id: str, message: pb.Message | None = None) -> pb.Task:
        """The task of a run: its state, the thread's values as artifacts, its interrupts."""
        run = await self._run(run_id)
        thread = await self._thread(run.thread_id)
        state = _STATES.get(run.status, pb.TASK_STATE_UNSPECIFIED)
        status = pb.TaskStatus(state=state)
        artifacts: list[pb.Artifact] = []
        if run.status == "success" and thread is not None and thread.status == "interrupted":
            status.state = pb.TASK_STATE_INPUT_REQUIRED
            interrupts = [i for items in (thread.interrupts or {}).values() for i in items]
            status.message.CopyFrom(
                _agent_message(run, [new_data_part(_json(i)) for i in interrupts])
            )
        elif run.status in ("error", "timeout", "interrupted") and thread is not None:
            error = thread.error or {}
            text = f"{error.get('error', run.status)}: {error.get('message', '')}"
            status.message.CopyFrom(_agent_message(run, [pb.Part(text=text)]))
        if run.status == "success" and thread is not None and thread.values:
            artifacts = _artifacts(run, thread.values)
        return pb.Task(
            id=run.run_id,
            context_id=run.thread_id,
            status=status,
            artifacts=artifacts,
            history=[message] if message is not None else [],
        )

    # -- lookups --------------------------------------------------------------------------------

    async def _assistant(self, context: ServerCallContext) -> Assistant:
        assistant_id = context.state.get(ASSISTANT, "")
        try:
            uuid.UUID(assistant_id)
            return await self.core.assistants.get(assistant_id)
        except ValueError:
            raise InvalidParamsError(
                message=f"assistant_id must be a UUID: {assistant_id!r}"
            ) from None
        except NotFound as exc:
            raise InvalidParamsError(message=exc.message) from None

    async def _run(self, task_id: str) -> Run:
        try:
            uuid.UUID(task_id)
        except ValueError:
            raise TaskNotFoundError(message=f"no task {task_id!r}") from None
        run = await self.core.storage.runs.get(task_id)
        if run is None:
            raise TaskNotFoundError(message=f"no task {task_id!r}")
        return run

    async def _thread(self, thread_id: str) -> Thread | None:
        try:
            uuid.UUID(thread_id)
        except ValueError:
            raise InvalidParamsError(message=f"contextId must be a UUID: {thread_id!r}") from None
        return await self.core.storage.threads.get(thread_id)

    # -- not offered ----------------------------------------------------------------------------

    async def on_list_tasks(self, params: Any, context: ServerCallContext) -> Any:
        raise UnsupportedOperationError(message="ListTasks is not supported")

    async def on_create_task_push_notification_config(self, params: Any, context: Any) -> Any:
        raise UnsupportedOperationError(message="push notifications are not supported")

    async def on_get_task_push_notification_config(self, params: Any, context: Any) -> Any:
        raise UnsupportedOperationError(message="push notifications are not supported")

    async def on_list_task_push_notification_configs(self, params: Any, context: Any) -> Any:
        raise UnsupportedOperationError(message="push notifications are not supported")

    async def on_delete_task_push_notification_config(self, params: Any, context: Any) -> Any:
        raise UnsupportedOperationError(message="push notifications are not supported")

    async def on_subscribe_to_task(self, params: Any, context: Any) -> AsyncGenerator[Event]:
        raise UnsupportedOperationError(message="task subscriptions are not supported")
        yield  # an async generator, as the SDK expects

    async def on_get_extended_agent_card(self, params: Any, context: Any) -> Any:
        raise UnsupportedOperationError(message="there is no extended agent card")


def _read(message: pb.Message, thread: Thread | None) -> tuple[tuple[Any] | None, dict[str, Any]]:
    """A message as ``(resume,)`` (on an interrupted thread, or given as ``{"resume": ...}``)
    or as a run input."""
    texts = get_text_parts(message.parts)
    data: dict[str, Any] = {}
    for value in get_data_parts(message.parts):
        if not isinstance(value, dict):
            raise InvalidParamsError(message="a data part must hold a JSON object")
        data.update(value)
    if "resume" in data:
        return (data.pop("resume"),), data
    if thread is not None and thread.status == "interrupted":
        return ("\n".join(texts) if texts else data,), data
    values = dict(data)
    if texts:
        text = "\n".join(texts)
        values["messages"] = [{"role": "human", "content": text, "id": message.message_id}]
    return None, values


def _artifacts(run: Run, values: dict[str, Any]) -> list[pb.Artifact]:
    out = [
        pb.Artifact(
            artifact_id=f"{run.run_id}-values", name="values", parts=[new_data_part(_json(values))]
        )
    ]
    messages = values.get("messages")
    last = messages[-1] if isinstance(messages, list) and messages else None
    if isinstance(last, dict) and last.get("type") == "ai" and isinstance(last.get("content"), str):
        out.insert(
            0,
            pb.Artifact(
                artifact_id=f"{run.run_id}-answer",
                name="answer",
                parts=[pb.Part(text=last["content"])],
            ),
        )
    return out


def _agent_message(run: Run, parts: list[pb.Part]) -> pb.Message:
    return pb.Message(
        message_id=str(uuid.uuid4()),
        context_id=run.thread_id,
        task_id=run.run_id,
        role=pb.ROLE_AGENT,
        parts=parts,
    )


def _json(value: Any) -> Any:
    """``value`` as plain JSON types (what a protobuf ``Value`` takes)."""
    return orjson.loads(encoding.dumps(value))


def _version() -> str:
    try:
        return metadata.version("triograph")
    except metadata.PackageNotFoundError:
        return "0"
