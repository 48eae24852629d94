"""Records and the one wire converter.

Stored records (``Assistant``, ``Thread``, ``Run``) are ``attrs.define`` classes because the
services update them in place; request bodies are ``attrs.frozen`` values structured by the
single cattrs converter below, so every 422 names the field (``$.stream_mode[1]``) and
what was allowed. Primitive hooks are strict: ``"1"`` is not an int and ``1`` is not a string.
"""

from __future__ import annotations

import datetime as dt
import functools
import os
import time
import typing
import uuid
from collections.abc import Callable
from typing import Any, Literal, TypeVar, cast

import attrs
import cattrs
from cattrs.preconf.orjson import make_converter

from triograph.core.infra.errors import InvalidRequest

JSON = Any
T = TypeVar("T")

RunStatus = Literal["pending", "running", "error", "success", "timeout", "interrupted"]
ThreadStatus = Literal["idle", "busy", "interrupted", "error"]
Durability = Literal["sync", "async", "exit"]
OnDisconnect = Literal["cancel", "continue"]
OnCompletion = Literal["delete", "keep"]
IfNotExists = Literal["create", "reject"]
IfExists = Literal["raise", "do_nothing"]
CancelAction = Literal["interrupt", "rollback"]
RUN_STATUSES: tuple[str, ...] = typing.get_args(RunStatus)
THREAD_STATUSES: tuple[str, ...] = typing.get_args(ThreadStatus)
TERMINAL_RUN_STATUSES = frozenset({"error", "success", "timeout", "interrupted"})
#: the statuses of a run in flight (queued, or executing)
IN_FLIGHT_RUN_STATUSES = ("pending", "running")


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def new_id() -> str:
    """A time-ordered UUIDv7 string, as the official server generates for threads and runs
    (formatted here: ``uuid.UUID`` objects made and printed cost twice as much, three
    times per run)."""
    ms = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10)) & ((1 << 74) - 1)
    value = (
        (ms << 80) | (0x7 << 76) | ((rand >> 62) << 64) | (0b10 << 62) | (rand & ((1 << 62) - 1))
    )
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


#: the largest ``offset`` of any page: an int32, storable and comparable by every backend
MAX_OFFSET = 2**31 - 1
#: the longest a run may wait to start (``after_seconds``): a week; its thread is busy meanwhile
MAX_AFTER_SECONDS = 7 * 24 * 3600
#: the longest TTL of a thread or store item, in minutes: 100 years (later would overflow dates)
MAX_TTL_MINUTES = 100 * 365 * 24 * 60


def check_range(field: str, value: float, least: float, most: float) -> None:
    """A 422 naming ``field`` and the allowed range unless ``least <= value <= most``."""
    if not least <= value <= most:
        raise InvalidRequest(f"{field}: {value!r} is not between {least} and {most}")


#: the pattern of a string the server may store: no NUL character (``\u0000``), which
#: Postgres cannot store, so every backend refuses it (422) before anything is written
NO_NUL = "^[^\\u0000]*$"


def selecting(fields: tuple[str, ...]) -> Any:
    """An attrs field for a search's ``select``: None or a list of ``fields`` (what
    :func:`check_select` enforces, declared so in the OpenAPI document)."""
    names = {"type": "array", "items": {"type": "string", "enum": list(fields)}}
    return attrs.field(default=None, metadata={"json_schema": {"anyOf": [names, {"type": "null"}]}})


_LABEL = "[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_NAME = "[A-Za-z]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"  # the last label: a name, not a number
#: the shape of a webhook URL every policy accepts the form of (http or https, a host name,
#: a port below 10000, a printable path); ``webhooks.url`` may refuse some hosts and ports
WEBHOOK_SCHEMA = {
    "anyOf": [
        {
            "type": "string",
            "maxLength": 2048,
            "pattern": f"^https?://({_LABEL}\\.)*{_NAME}(:[1-9][0-9]{{0,3}})?(/[!-~]*)?$",
        },
        {"type": "null"},
    ]
}


ASSISTANT_FIELDS = (
    "assistant_id",
    "graph_id",
    "name",
    "description",
    "config",
    "context",
    "created_at",
    "updated_at",
    "metadata",
    "version",
)


def bounded(default: Any, least: float, most: float, *, exclusive_minimum: bool = False) -> Any:
    """An attrs field holding a number in ``least..most`` (above ``least`` with
    ``exclusive_minimum``), or None: anything else is a 422 naming the field and the range
    when the body is structured, and the OpenAPI document declares the range (read from the
    field's metadata)."""

    def check(_instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        if value is None:
            return
        if exclusive_minimum and value <= least:
            raise InvalidRequest(f"$.{attribute.name}: {value!r} is not above {least}")
        check_range(f"$.{attribute.name}", value, least, most)

    low = "exclusiveMinimum" if exclusive_minimum else "minimum"
    return attrs.field(default=default, validator=check, metadata={low: least, "maximum": most})


#: a thread's ``ttl`` in a request (checked by ``triograph.core.resources.threads``)
THREAD_TTL = {
    "anyOf": [
        {
            "type": "object",
            "properties": {
                "strategy": {"enum": ["delete", "keep_latest"]},
                "ttl": {"type": "number", "exclusiveMinimum": 0, "maximum": MAX_TTL_MINUTES},
            },
            "required": ["ttl"],
        },
        {"type": "null"},
    ]
}


# -- stored records ---------------------------------------------------------------------------


@attrs.define(kw_only=True)
class Assistant:
    assistant_id: str
    graph_id: str
    config: dict[str, JSON] = attrs.Factory(dict)
    context: dict[str, JSON] = attrs.Factory(dict)
    metadata: dict[str, JSON] = attrs.Factory(dict)
    name: str = "Untitled"
    description: str | None = None
    version: int = 1
    created_at: dt.datetime = attrs.Factory(now)
    updated_at: dt.datetime = attrs.Factory(now)


@attrs.define(kw_only=True)
class AssistantVersion:
    """One row of an assistant's history; ``Assistant`` is the row it currently points at."""

    assistant_id: str
    version: int
    graph_id: str
    config: dict[str, JSON] = attrs.Factory(dict)
    context: dict[str, JSON] = attrs.Factory(dict)
    metadata: dict[str, JSON] = attrs.Factory(dict)
    name: str = "Untitled"
    description: str | None = None
    created_at: dt.datetime = attrs.Factory(now)


@attrs.define(kw_only=True)
class Thread:
    thread_id: str
    metadata: dict[str, JSON] = attrs.Factory(dict)
    config: dict[str, JSON] = attrs.Factory(dict)
    status: ThreadStatus = "idle"
    values: JSON = None
    interrupts: dict[str, list[JSON]] = attrs.Factory(dict)
    error: JSON = None
    created_at: dt.datetime = attrs.Factory(now)
    updated_at: dt.datetime = attrs.Factory(now)
    state_updated_at: dt.datetime = attrs.Factory(now)
    #: ``{"strategy": "delete"|"keep_latest", "ttl_minutes": n, "expires_at": datetime}`` or None
    ttl: dict[str, JSON] | None = None


@attrs.define(kw_only=True)
class Run:
    run_id: str
    thread_id: str
    assistant_id: str
    metadata: dict[str, JSON] = attrs.Factory(dict)
    status: RunStatus = "pending"
    kwargs: dict[str, JSON] = attrs.Factory(dict)
    multitask_strategy: str = "enqueue"
    created_at: dt.datetime = attrs.Factory(now)
    updated_at: dt.datetime = attrs.Factory(now)
    langsmith_session_name: str | None = None
    #: which attempt at executing the run this is: 1, plus one each time a server stopped
    #: while running it (it is then retried, up to ``settings.max_attempts``). Stored, but
    #: not in the wire object (contract §5.1): each attempt's ``metadata`` event carries it.
    attempt: int = attrs.field(default=1, metadata={"wire": False})


@attrs.define(kw_only=True)
class Cron:
    """A schedule that creates a run from ``payload`` (a RunCreate body) each time it fires."""

    cron_id: str
    assistant_id: str
    schedule: str
    thread_id: str | None = None
    user_id: str = ""
    timezone: str | None = None
    end_time: dt.datetime | None = None
    payload: dict[str, JSON] = attrs.Factory(dict)
    next_run_date: dt.datetime | None = None
    metadata: dict[str, JSON] = attrs.Factory(dict)
    on_run_completed: OnCompletion | None = None
    enabled: bool = True
    created_at: dt.datetime = attrs.Factory(now)
    updated_at: dt.datetime = attrs.Factory(now)
    #: the user who created it (``User.dict()``), whom its firings act as; not on the wire
    user: dict[str, JSON] | None = attrs.field(default=None, metadata={"wire": False})


Record = TypeVar("Record", Assistant, AssistantVersion, Thread, Run, Cron)


def _copier(cls: type[Record]) -> Callable[[Record], Record]:
    """The function that copies a ``cls`` field by field, written out as attrs writes its
    ``__init__``: one plain attribute copy per field (a slot's, the fastest Python has),
    where a loop over the field names would call ``getattr`` and ``object.__setattr__``
    for each (twice the bytecodes, a stateless run copying its records some nine times)."""
    assert cls.__setattr__ is object.__setattr__, f"{cls.__name__} runs code when set"
    lines = [f"    new.{field.name} = record.{field.name}\n" for field in attrs.fields(cls)]
    source = f"def copy(record):\n    new = make(cls)\n{''.join(lines)}    return new\n"
    namespace: dict[str, Any] = {"make": object.__new__, "cls": cls}
    exec(compile(source, f"<copier of {cls.__qualname__}>", "exec"), namespace)
    return cast("Callable[[Record], Record]", namespace["copy"])


_COPIERS: dict[type, Callable[[Any], Any]] = {
    cls: _copier(cls) for cls in (Assistant, AssistantVersion, Thread, Run, Cron)
}


def copied(record: Record) -> Record:
    """A shallow copy of a record, each field the same object: what ``attrs.evolve(record)``
    makes, at a fraction of its cost (its ``__init__`` does not run; these records have no
    validator, converter or post-init step, and every field is copied). A stateless run's
    path copies its records some nine times: what storage keeps and hands out, the answer,
    what each lifecycle hook gets."""
    return cast("Record", _COPIERS[type(record)](record))


# -- request bodies ---------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class Send:
    node: str
    input: JSON = None


@attrs.frozen(kw_only=True)
class CommandBody:
    update: JSON = None
    resume: JSON = None
    goto: list[Send | str] | None = None


@attrs.frozen(kw_only=True)
class CheckpointRef:
    thread_id: str | None = None
    checkpoint_ns: str = ""
    checkpoint_id: str | None = None
    checkpoint_map: dict[str, JSON] | None = None


@attrs.frozen(kw_only=True)
class RunCreate:
    """Every field of the official RunCreate (contract §5.2); stateful and stateless alike."""

    assistant_id: str
    input: JSON = None
    command: CommandBody | None = None
    stream_mode: list[str] = attrs.Factory(lambda: ["values"])
    stream_subgraphs: bool = False
    stream_resumable: bool = False
    metadata: dict[str, JSON] | None = None
    config: dict[str, JSON] | None = None
    context: dict[str, JSON] | None = None
    checkpoint: CheckpointRef | None = None
    checkpoint_id: str | None = None
    checkpoint_during: bool | None = None
    durability: Durability | None = None
    interrupt_before: list[str] | Literal["*"] | None = None
    interrupt_after: list[str] | Literal["*"] | None = None
    feedback_keys: list[str] | None = None
    webhook: str | None = attrs.field(default=None, metadata={"json_schema": WEBHOOK_SCHEMA})
    multitask_strategy: str | None = None
    if_not_exists: IfNotExists | None = None
    on_disconnect: OnDisconnect | None = None
    on_completion: OnCompletion | None = None
    after_seconds: float | None = bounded(None, 0, MAX_AFTER_SECONDS)
    langsmith_tracer: dict[str, JSON] | None = None


@attrs.frozen(kw_only=True)
class ThreadCreate:
    thread_id: str | None = None
    metadata: dict[str, JSON] | None = None
    if_exists: IfExists | None = None
    ttl: dict[str, JSON] | None = attrs.field(default=None, metadata={"json_schema": THREAD_TTL})


@attrs.frozen(kw_only=True)
class AssistantSearch:
    metadata: dict[str, JSON] | None = None
    graph_id: str | None = None
    name: str | None = None
    limit: int = bounded(10, 1, 1000)
    offset: int = bounded(0, 0, MAX_OFFSET)
    sort_by: Literal["assistant_id", "created_at", "updated_at", "name", "graph_id"] | None = None
    sort_order: Literal["asc", "desc"] | None = None
    select: list[str] | None = selecting(ASSISTANT_FIELDS)


@attrs.frozen(kw_only=True)
class CancelMany:
    """Runs to cancel: by ``status``, or by ``run_ids`` on ``thread_id``."""

    #: which fields are given (their values are checked by the fields' own schemas)
    __json_schema__: typing.ClassVar[dict[str, Any]] = {
        "oneOf": [
            {
                "required": ["status"],
                "properties": {
                    "status": {"type": "string"},
                    "thread_id": {"type": "null"},
                    "run_ids": {"type": "null"},
                },
            },
            {
                "required": ["thread_id", "run_ids"],
                "properties": {
                    "status": {"type": "null"},
                    "thread_id": {"type": "string"},
                    "run_ids": {"type": "array", "minItems": 1},
                },
            },
        ]
    }

    status: Literal["pending", "running", "all"] | None = None
    thread_id: str | None = None
    run_ids: list[str] | None = None


# -- the converter ----------------------------------------------------------------------------

converter = make_converter(forbid_extra_keys=False)


def _strict(kind: type, *, name: str) -> typing.Callable[[Any, Any], Any]:
    def hook(value: Any, _: Any) -> Any:
        if isinstance(value, bool) and kind is not bool:
            raise ValueError(f"expected {name}, got a boolean")
        if kind is float and isinstance(value, int):
            return float(value)
        if kind is int and isinstance(value, float) and value.is_integer():
            return int(value)  # JSON has one number type: 10.0 is the integer 10
        if not isinstance(value, kind):
            raise ValueError(f"expected {name}, got {type(value).__name__}")
        return value

    return hook


converter.register_structure_hook(str, _strict(str, name="a string"))
converter.register_structure_hook(bool, _strict(bool, name="a boolean"))
converter.register_structure_hook(int, _strict(int, name="an integer"))
converter.register_structure_hook(float, _strict(float, name="a number"))


def _is_literal(tp: Any) -> bool:
    return typing.get_origin(tp) is Literal


def _literal_hook(tp: Any) -> typing.Callable[[Any, Any], Any]:
    allowed = typing.get_args(tp)

    def hook(value: Any, _: Any) -> Any:
        if value not in allowed:
            raise ValueError(f"got {value!r}; allowed: {', '.join(map(repr, allowed))}")
        return value

    return hook


converter.register_structure_hook_factory(_is_literal, _literal_hook)


def _dict_hook(value: Any, _: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValueError(f"expected an object, got {type(value).__name__}")
    return value


converter.register_structure_hook_func(lambda t: t == dict[str, JSON], _dict_hook)


def _str_list_hook(value: Any, _: Any) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError("expected a list of strings")
    return value


converter.register_structure_hook_func(lambda t: t == list[str], _str_list_hook)


def _object_first(cls: type) -> typing.Callable[[Any, Any], Any]:
    """Nested records (``command``, ``checkpoint``) must be JSON objects, not strings."""
    inner: Any = cattrs.gen.make_dict_structure_fn(cls, converter)

    def hook(value: Any, tp: Any) -> Any:
        if not isinstance(value, dict):
            raise ValueError(f"expected an object, got {type(value).__name__}")
        return inner(value, tp)

    return hook


def _stream_mode_hook(value: Any, _: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value) or ["values"]
    raise ValueError("expected a stream mode name or a list of them")


def _interrupt_nodes_hook(value: Any, _: Any) -> list[str] | str | None:
    if value is None or value == "*":
        return value  # type: ignore[no-any-return]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return value
    raise ValueError('expected "*" or a list of node names')


def _goto_hook(value: Any, _: Any) -> list[Send | str] | None:
    if value is None:
        return None
    items = value if isinstance(value, list) else [value]
    out: list[Send | str] = []
    for item in items:
        if isinstance(item, str):
            out.append(item)
        elif isinstance(item, dict) and isinstance(item.get("node"), str) and "input" in item:
            out.append(Send(node=item["node"], input=item["input"]))
        else:
            raise ValueError('expected a node name, {"node": str, "input": any}, or a list of them')
    return out


converter.register_structure_hook_func(lambda t: t == list[Send | str] | None, _goto_hook)
converter.register_structure_hook_func(
    lambda t: t == list[str] | Literal["*"] | None, _interrupt_nodes_hook
)
for _nested in (CommandBody, CheckpointRef):
    converter.register_structure_hook(_nested, _object_first(_nested))
# stream_mode is the only plain list[str] field with this normalisation; register it by field.
_run_create_hook = cattrs.gen.make_dict_structure_fn(
    RunCreate,
    converter,
    stream_mode=cattrs.gen.override(struct_hook=_stream_mode_hook),
)
converter.register_structure_hook(RunCreate, _run_create_hook)


def _format_errors(exc: BaseException, path: str = "$") -> list[str]:
    if isinstance(exc, cattrs.ClassValidationError | cattrs.IterableValidationError):
        out: list[str] = []
        for sub in exc.exceptions:
            if isinstance(sub, InvalidRequest):  # a field validator's: "$.field: ..." here
                out.append(path + sub.message.removeprefix("$"))
                continue
            note = getattr(sub, "__notes__", [""])
            detail = getattr(note[0] if note else "", "name", None)
            if detail is None:
                detail = getattr(note[0] if note else "", "index", None)
            sub_path = f"{path}.{detail}" if isinstance(detail, str) else f"{path}[{detail}]"
            out.extend(_format_errors(sub, sub_path))
        return out
    if isinstance(exc, KeyError):
        return [f"{path}: required field missing"]
    return [f"{path}: {exc}"]


def structure(data: Any, cls: type[T]) -> T:
    """Turn a decoded JSON body into ``cls``, or raise ``InvalidRequest`` naming each bad field."""
    if not isinstance(data, dict):
        raise InvalidRequest(f"request body must be a JSON object, got {type(data).__name__}")
    try:
        return converter.structure(data, cls)
    except (cattrs.BaseValidationError, ValueError, TypeError) as exc:
        raise InvalidRequest("; ".join(_format_errors(exc))) from None


def to_wire(record: Any) -> dict[str, Any]:
    """The wire object of a record: what the converter gives (and storage may keep), less
    the fields declared with ``metadata={"wire": False}``."""
    data: dict[str, Any] = converter.unstructure(record)
    cls: type = type(record)
    for name in _hidden_fields(cls):
        del data[name]
    return data


@functools.cache
def _hidden_fields(cls: type) -> tuple[str, ...]:
    if not attrs.has(cls):
        return ()
    return tuple(f.name for f in attrs.fields(cls) if f.metadata.get("wire") is False)


def check_page(limit: int, offset: int, *, most: int = 1000) -> None:
    """``limit`` in 1..``most`` and ``offset`` in 0..``MAX_OFFSET``, else a 422 naming the
    field."""
    check_range("$.limit", limit, 1, most)
    check_range("$.offset", offset, 0, MAX_OFFSET)


def check_select(select: list[str] | None, allowed: tuple[str, ...]) -> None:
    """Every ``select`` field is one of ``allowed``, else a 422 listing them."""
    bad = [f for f in select or () if f not in allowed]
    if bad:
        raise InvalidRequest(f"$.select: invalid fields {bad}; allowed: {list(allowed)}")


def selected(rows: list[dict[str, Any]], select: list[str] | None) -> list[dict[str, Any]]:
    """Wire rows cut down to the ``select`` fields (all of them without one)."""
    return [{k: row[k] for k in select} for row in rows] if select else rows


def validate_uuid(value: str, what: str) -> str:
    """Return the canonical lowercase form of a UUID string, or raise 422 ``Invalid <what> ID``."""
    try:
        return str(uuid.UUID(value))
    except (ValueError, AttributeError, TypeError):
        raise InvalidRequest(f"Invalid {what} ID: must be a UUID") from None
