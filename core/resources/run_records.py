"""The record of a new run: how a request and its assistant become the run's ``config``,
``context`` and ``configurable`` (contract §1.6, §1.7), which keys the server reserves for
itself (a client may not set them: the user a run acts for among them), and the checks on a
request's ``config``. Pure functions; :mod:`triograph.core.resources.runs` stores the run.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import attrs

from triograph.core.infra import encoding
from triograph.core.infra.auth import current_user
from triograph.core.infra.errors import InvalidRequest
from triograph.core.infra.models import Run, RunCreate, new_id, now

if TYPE_CHECKING:
    from triograph.core.infra.models import Assistant

#: configurable/context keys the official server silently strips (contract §1.6)
RESERVED_CONFIGURABLE = frozenset(
    {
        "langgraph_auth_user",
        "langgraph_auth_user_id",
        "langgraph_auth_permissions",
        "langgraph_request_id",
        "__langsmith_project__",
        "__langsmith_example_id__",
        "__request_start_time_ms__",
        "__after_seconds__",
        "__otel_traceparent__",
        "__otel_tracestate__",
        "__dd_trace_headers__",
        "__pregel_node_finished",
        "__context_provided__",
    }
)
#: the 400 for a request giving both ``config.configurable`` and ``context`` (contract §1.7)
BOTH_CONFIGURABLE_AND_CONTEXT = (
    "Cannot specify both configurable and context. Prefer setting context alone. Context was "
    "introduced in LangGraph 0.6.0 and is the long term planned replacement for configurable."
)


#: the largest ``config.recursion_limit`` (LangGraph's default is 25)
MAX_RECURSION_LIMIT = 2**31 - 1
#: the typed keys of a request's ``config``: what is allowed, and the check
CONFIG_KEYS: dict[str, tuple[str, Callable[[Any], bool]]] = {
    "tags": (
        "a list of strings",
        lambda v: isinstance(v, list) and all(isinstance(t, str) for t in v),
    ),
    "recursion_limit": (
        f"an integer from 1 to {MAX_RECURSION_LIMIT}",
        lambda v: isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= MAX_RECURSION_LIMIT,
    ),
    "configurable": ("an object", lambda v: isinstance(v, dict)),
    "metadata": ("an object", lambda v: isinstance(v, dict)),
}


def check_config(config: dict[str, Any] | None, field: str = "$.config") -> None:
    """The keys of a ``config`` object that have a type (contract §1.7); 422 naming one."""
    for key, (allowed, ok) in CONFIG_KEYS.items():
        value = (config or {}).get(key)
        if value is not None and not ok(value):
            raise InvalidRequest(f"{field}.{key}: expected {allowed}")


def clean_configurable(values: dict[str, Any] | None) -> dict[str, Any]:
    """``configurable`` or ``context`` without the keys the server reserves (contract §1.6)."""
    return {k: v for k, v in (values or {}).items() if k not in RESERVED_CONFIGURABLE}


def build_run(
    body: RunCreate,
    assistant: Assistant,
    thread_id: str,
    modes: list[str],
    checkpoint: dict[str, Any],
    temporary: bool,
    request_id: str | None,
    headers: dict[str, str] | None,
) -> Run:
    """The record of a new run on ``thread_id`` from its request and assistant, acting for
    the current user: ``config`` and ``context`` merged from the assistant's and the
    request's (reserved keys dropped), the keys the server fills in ``configurable``, and
    ``headers`` (those ``http.configurable_headers`` copies). Its ``metadata`` is the
    caller's to complete: the thread's is not known yet."""
    run_id = new_id()
    run_config = dict(body.config or {})
    config: dict[str, Any] = {**assistant.config, **run_config}
    tags = [*assistant.config.get("tags", ()), *run_config.get("tags", ())]
    if tags:
        config["tags"] = tags
    configurable = {
        **clean_configurable(assistant.config.get("configurable")),
        **clean_configurable(run_config.get("configurable")),
    }
    context = {
        **clean_configurable(assistant.context),
        **configurable,
        **clean_configurable(body.context),
    }
    configurable.update(clean_configurable(body.context))
    configurable.update(
        {
            "run_id": run_id,
            "thread_id": thread_id,
            "graph_id": assistant.graph_id,
            "assistant_id": assistant.assistant_id,
            "user_id": configurable.get("user_id", ""),  # the client's, as on the official server
            "langgraph_request_id": request_id or str(uuid.uuid4()),
            "__after_seconds__": body.after_seconds or 0,
            **{k: v for k, v in checkpoint.items() if v is not None and k != "thread_id"},
            **(headers or {}),
        }
    )
    user = current_user()
    if user is not None:  # the run acts for the user who made it (contract of the SDK)
        configurable.update(
            {
                "langgraph_auth_user": encoding.jsonable(user.dict()),
                "langgraph_auth_user_id": user.identity,
                "langgraph_auth_permissions": user.permissions,
            }
        )
    config["configurable"] = configurable
    durability = body.durability or ("exit" if body.checkpoint_during is False else "async")
    command = attrs.asdict(body.command) if body.command is not None else None
    created_at = now() + dt.timedelta(seconds=body.after_seconds or 0)
    return Run(
        run_id=run_id,
        thread_id=thread_id,
        assistant_id=assistant.assistant_id,
        multitask_strategy=body.multitask_strategy or "enqueue",
        created_at=created_at,
        updated_at=created_at,
        kwargs={
            "input": body.input,
            "command": command,
            "config": config,
            "context": context,
            "stream_mode": modes,
            "interrupt_before": body.interrupt_before,
            "interrupt_after": body.interrupt_after,
            "webhook": body.webhook,
            "feedback_keys": body.feedback_keys,
            "temporary": temporary,
            "subgraphs": body.stream_subgraphs,
            "resumable": body.stream_resumable,
            "checkpoint_during": durability != "exit",
            "durability": durability,
        },
    )
