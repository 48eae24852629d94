"""The operator log handler batches its writes without losing or reordering a line."""

from __future__ import annotations

import io
import logging
import time

from triograph.core.http.logs import BatchingHandler, PlainFormatter


def _logger(stream: io.StringIO, interval: float) -> tuple[logging.Logger, BatchingHandler]:
    handler = BatchingHandler(stream, interval=interval)
    handler.setFormatter(PlainFormatter())
    log = logging.getLogger(f"test.batching.{id(stream)}")
    log.propagate = False
    log.handlers = [handler]
    log.setLevel(logging.INFO)
    return log, handler


def test_info_lines_wait_and_a_warning_writes_them_in_order() -> None:
    stream = io.StringIO()
    log, _ = _logger(stream, interval=3600)
    log.info("one")
    log.info("two")
    assert stream.getvalue() == ""  # batched: the writer's timer is an hour away
    log.warning("three")
    lines = [line.split(": ", 1)[1] for line in stream.getvalue().splitlines()]
    assert lines == ["one", "two", "three"]


def test_waiting_lines_are_written_by_the_timer_and_by_flush() -> None:
    stream = io.StringIO()
    log, handler = _logger(stream, interval=0.05)
    log.info("timed")
    deadline = time.monotonic() + 10
    while "timed" not in stream.getvalue() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert stream.getvalue().endswith("timed\n")
    slow_log, slow = _logger(io.StringIO(), interval=3600)
    slow_log.info("at exit")
    slow.flush()  # what logging.shutdown does for every handler at exit
    assert slow.stream.getvalue().endswith("at exit\n")
    handler.close()


def test_a_full_batch_is_written_at_once() -> None:
    stream = io.StringIO()
    log, _ = _logger(stream, interval=3600)
    for i in range(2000):  # ~100 KiB of lines: past the 64 KiB batch
        log.info("line %d %s", i, "x" * 20)
    written = stream.getvalue().splitlines()
    assert 1000 < len(written) < 2000
    assert [w.rsplit(" ", 2)[1] for w in written] == [str(i) for i in range(len(written))]
