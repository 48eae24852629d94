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
import threading
import time
from typing import IO, Literal

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


class BatchingHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A stream handler that writes its lines in batches: at once for a record at WARNING or
    above (and everything before it) or once 64 KiB wait, else at most ``interval`` seconds
    after the first line that waits. A line per request and per run transition made one
    ``write`` system call each (~8% of a stateless run's CPU); batched, a busy server makes a
    few per second. What waits is written when logging shuts down (``logging.shutdown`` at
    exit flushes every handler); a process killed outright loses at most ``interval``
    seconds of INFO lines, never a warning or an error.
    """

    def __init__(self, stream: IO[str], interval: float = 0.1) -> None:
        super().__init__(stream)
        self._interval = interval
        self._lines: list[str] = []
        self._size = 0
        self._due = threading.Event()  # a line waits: the writer thread's timer runs
        threading.Thread(target=self._writer, name="triograph-log-writer", daemon=True).start()

    def emit(self, record: logging.LogRecord) -> None:  # called with self.lock held
        try:
            line = self.format(record) + self.terminator
        except Exception:
            self.handleError(record)
            return
        self._lines.append(line)
        self._size += len(line)
        if record.levelno >= logging.WARNING or self._size >= 65536:
            self._write()
        elif len(self._lines) == 1:
            self._due.set()

    def flush(self) -> None:
        with self.lock:  # type: ignore[union-attr]
            self._write()

    def _write(self) -> None:
        if self._lines:
            lines, self._lines, self._size = self._lines, [], 0
            try:
                self.stream.write("".join(lines))
                self.stream.flush()
            except ValueError:  # the stream was closed (the process is ending): nowhere to say it
                pass
            except Exception:  # a broken stream: as StreamHandler, say so
                self.handleError(logging.makeLogRecord({"msg": "log write failed"}))

    def _writer(self) -> None:
        while True:
            self._due.wait()
            time.sleep(self._interval)
            self._due.clear()
            self.flush()


def configure(level: str = "INFO", fmt: LogFormat = "plain") -> None:
    """Send every log record at ``level`` or above to stderr, formatted as ``fmt``; called
    once by the command line (tests keep pytest's capture). Records do not look up the
    caller's frame, thread, process or asyncio task names, which no line shows (the logging
    docs' "Optimization" settings): a third of a record's cost. (The task's name is looked
    up with ``asyncio.current_task()``, which raises, caught, on Trio's thread.)"""
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    logging.logAsyncioTasks = False  # type: ignore[attr-defined,unused-ignore]  # 3.12+
    handler = BatchingHandler(sys.stderr)
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
