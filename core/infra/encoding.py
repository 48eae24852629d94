"""JSON encoding of what graphs produce: LangChain messages, interrupts, ``Send``, exceptions.

orjson encodes dicts, lists, tuples, dataclasses, datetimes and UUIDs natively and calls
:func:`default` for everything else, so the common path costs nothing extra.
"""

from __future__ import annotations

import base64
import dataclasses
import enum
import pathlib
from collections.abc import Callable
from typing import Any

import orjson
import pydantic

# Exception classes whose message is shown to clients, with their subclasses (a graph's
# ``class CustomError(RuntimeError)`` too); any other class is reported as "An internal
# error occurred" so a stack's secrets do not leak (contract §6.3).
_SHOWN_ERRORS = frozenset(
    {
        "ValueError",
        "TypeError",
        "KeyError",
        "AttributeError",
        "RuntimeError",
        "RecursionError",
        "GraphRecursionError",
        "TimeoutError",
        "InvalidUpdateError",
        "GraphBubbleUp",
        "EmptyInputError",
        "TaskNotFound",
        "HTTPException",
        "UserInterrupt",
        "NotImplementedError",
        "AssertionError",
    }
)


def error_payload(exc: BaseException) -> dict[str, str]:
    """``{"error": <class name>, "message": <text>}`` as the ``error`` event carries it."""
    name = type(exc).__name__
    shown = any(cls.__name__ in _SHOWN_ERRORS for cls in type(exc).__mro__)
    message = str(exc) if shown else "An internal error occurred"
    if name == "KeyError" and exc.args:
        message = repr(exc.args[0])
    return {"error": name, "message": message}


#: LangChain's message classes, each with whether its ``model_dump()`` is its fields as
#: stored (see :func:`_dumps_as_stored`)
_MESSAGE_CLASSES: dict[type, bool] = {}


def _dumps_as_stored(cls: type) -> bool:
    """Whether ``model_dump()`` of an instance of ``cls`` is its ``__dict__`` (its fields, in
    order) and then its extra fields: a message class of LangChain's own (``BaseMessage``
    allows extra fields) with no serializer, computed field or excluded field of its own.
    Its fields are plain data (strings, lists, dicts, ``TypedDict``s), which pydantic's
    dump copies as they are; orjson reads the stored ones instead, ~10x faster than the
    dump, for every streamed token's chunk. A subclass of a user's goes through
    ``model_dump()``."""
    decorators = getattr(cls, "__pydantic_decorators__", None)
    fields = getattr(cls, "__pydantic_fields__", None)
    return (
        cls.__module__.startswith("langchain_core.messages.")
        and decorators is not None
        and fields is not None
        and not decorators.field_serializers
        and not decorators.model_serializers
        and not decorators.computed_fields
        and not any(field.exclude for field in fields.values())
        and getattr(cls, "model_dump", None) is pydantic.BaseModel.model_dump
    )


def default(obj: Any) -> Any:
    """orjson fallback: the JSON shape the official server gives each LangGraph object."""
    cls = type(obj)
    as_stored = _MESSAGE_CLASSES.get(cls)
    if as_stored is None and cls.__module__.startswith("langchain_core.messages."):
        as_stored = _MESSAGE_CLASSES[cls] = _dumps_as_stored(cls)
    if as_stored:
        extra = obj.__pydantic_extra__
        return {**obj.__dict__, **extra} if extra else obj.__dict__
    dump: Callable[..., Any] | None = getattr(obj, "model_dump", None)
    if dump is not None:  # LangChain messages and any pydantic v2 model
        return dump()
    if isinstance(obj, set | frozenset):
        return list(obj)
    if type(obj).__name__ == "Send" and hasattr(obj, "node"):
        return {"node": obj.node, "args": obj.arg}
    if isinstance(obj, bytes | bytearray):
        return base64.b64encode(obj).decode()
    if isinstance(obj, BaseException):
        return error_payload(obj)
    if isinstance(obj, enum.Enum):
        return obj.value
    if isinstance(obj, pathlib.PurePath):
        return str(obj)
    if isinstance(obj, type):
        return obj.__name__
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.asdict(obj)
    to_dict = getattr(obj, "to_json", None) or getattr(obj, "dict", None)
    if callable(to_dict):
        return to_dict()
    return repr(obj)


def dumps(obj: Any) -> bytes:
    """``obj`` as compact JSON, in a ``bytes`` of exactly its length.

    An integer beyond 64 bits, which orjson refuses, is written as a float: PostgreSQL's
    ``jsonb`` hands back a large float (``1e24``) as such an integer, and a stored value must
    stay readable (every client reads JSON numbers as doubles anyway).

    orjson (3.12 on) hands back its whole output buffer: at least 4 KiB however short the
    JSON, and up to twice the length above that. What we encode is often kept (events in a
    run's log and in subscribers' queues, a ``/wait`` body, stored records), so the result
    is copied to its exact size: ~0.2 µs, where keeping the buffer cost ~4 KiB per event.
    """
    try:
        out = orjson.dumps(obj, default=default, option=orjson.OPT_NON_STR_KEYS)
    except orjson.JSONEncodeError as exc:
        if "64-bit" not in str(exc):
            raise
        out = orjson.dumps(
            _wide_ints_as_floats(obj), default=default, option=orjson.OPT_NON_STR_KEYS
        )
    return bytes(memoryview(out))


def _wide_ints_as_floats(obj: Any) -> Any:
    if isinstance(obj, int) and not isinstance(obj, bool) and not -(2**63) <= obj < 2**64:
        return float(obj)
    if isinstance(obj, dict):
        return {k: _wide_ints_as_floats(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_wide_ints_as_floats(v) for v in obj]
    if isinstance(obj, set | frozenset):
        return [_wide_ints_as_floats(v) for v in obj]
    return obj


def loads(data: bytes | str) -> Any:
    return orjson.loads(data)


def jsonable(obj: Any) -> Any:
    """A plain-JSON copy of ``obj`` (for values kept in records, e.g. a thread's ``values``)."""
    return orjson.loads(dumps(obj))
