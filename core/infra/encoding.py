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

# Exception classes whose message is shown to clients; any other class is reported as
# "An internal error occurred" so a stack's secrets do not leak (contract §6.3).
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
    message = str(exc) if name in _SHOWN_ERRORS else "An internal error occurred"
    if name == "KeyError" and exc.args:
        message = repr(exc.args[0])
    return {"error": name, "message": message}


def default(obj: Any) -> Any:
    """orjson fallback: the JSON shape the official server gives each LangGraph object."""
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
    return orjson.dumps(obj, default=default, option=orjson.OPT_NON_STR_KEYS)


def loads(data: bytes | str) -> Any:
    return orjson.loads(data)


def jsonable(obj: Any) -> Any:
    """A plain-JSON copy of ``obj`` (for values kept in records, e.g. a thread's ``values``)."""
    return orjson.loads(dumps(obj))
