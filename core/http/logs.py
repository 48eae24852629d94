"""Operator logs: where log records go and how a line reads (``--log-format``).

One handler on the root logger writes every line to stderr, once: Hypercorn's own logger is
handed to it as a plain ``logging.Logger`` (see :func:`hypercorn_logger`), so Hypercorn adds
no handler of its own and its lines are not printed twice in two formats. ``plain`` lines
read ``2026-12-02T07:05:47.123Z INFO triograph.access: POST /runs/wait 200 3.1ms
run=...``; ``json`` writes one JSON object per line with ``time``, ``level``, ``logger``,
``message`` and the record's structured fields (:data:`FIELDS`: the access log's method,
route, status, ``duration_ms``, run id; the run log's thread, assistant, status, ...).

Nothing here logs request headers, bodies or query strings; the loggers of the HTTP client
libraries (which print whole URLs, webhook tokens included) are kept at WARNING.
"""

from __future__ import annotations

import datetime as dt
import logging
import sys
from typing import Literal

import orjson

LogFormat = Literal["plain", "json"]
LOG_FORMATS: tuple[LogFormat, ...] = ("plain", "json")

#: structured fields a record may carry (``extra=``), copied into the JSON line
FIELDS = (
    "method",
    "route",
    "status",
    "duration_ms",
    "run_id",
    "thread_id",
    "assistant_id",
    "attempt",
    "outcome",
    "error",
    "disconnected",
)
#: libraries that log whole URLs (a webhook's query string may hold a token) at INFO
_QUIET = ("httpx", "httpcore")


_second: tuple[int, str] = (-1, "")


def _timestamp(record: logging.LogRecord) -> str:
    """``2026-12-02T07:05:47.123Z``; the part up to the second is formatted once a second
    (a line per request makes this the formatter's main cost)."""
    global _second
    whole = int(record.created)
    if whole != _second[0]:
        moment = dt.datetime.fromtimestamp(whole, dt.UTC)
        _second = (whole, moment.strftime("%Y-%m-%dT%H:%M:%S"))
    return f"{_second[1]}.{int(record.msecs):03d}Z"


class PlainFormatter(logging.Formatter):
    """``<time> <LEVEL> <logger>: <message>``, the traceback (if any) on the lines after."""

    def format(self, record: logging.LogRecord) -> str:
        line = f"{_timestamp(record)} {record.levelname} {record.name}: {record.getMessage()}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object per record; a traceback goes in ``exc_info`` as text."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, object] = {
            "time": _timestamp(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in FIELDS:
            value = record.__dict__.get(key)
            if value is not None:
                out[key] = value
        if record.exc_info:
            out["exc_info"] = self.formatException(record.exc_info)
        return orjson.dumps(out, default=str).decode()


def configure(level: str = "INFO", fmt: LogFormat = "plain") -> None:
    """Send every log record at ``level`` or above to stderr, formatted as ``fmt``; called
    once by the command line (tests keep pytest's capture). Records do not look up the
    caller's frame, thread or process names, which no line shows (the logging docs'
    "Optimization" settings): a third of a record's cost."""
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else PlainFormatter())
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(level.upper())
    for name in _QUIET:
        logging.getLogger(name).setLevel(max(logging.WARNING, root.level))


def hypercorn_logger() -> logging.Logger:
    """The logger Hypercorn writes its own lines to (``config.errorlog``): given as a logger
    object, Hypercorn uses it as it is, so its lines go through our handler once."""
    return logging.getLogger("hypercorn.error")
