"""The run log: one line per run transition on ``triograph.runs``, as a plugin.

``pending`` when a run is stored (with its thread, assistant and attempt), ``running`` when
it reaches its graph, and its outcome (``success``, ``error``, ``interrupted``,
``rolled_back``) with the time since it was stored and, for an error or interrupt, the
error's class and message. Nothing from the run's input, config or output is logged. Each
line carries the fields as structured ``extra`` for ``--log-format json``. Disable with
``"disable_plugins": ["triograph.plugins.runlog"]``.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from triograph.core.infra.hookspecs import hookimpl

if TYPE_CHECKING:
    from triograph.core.infra.models import Run

log = logging.getLogger("triograph.runs")


class RunLog:
    """One per app (``DEFAULT_PLUGINS`` names the class): when each run in flight was stored."""

    def __init__(self) -> None:
        self._created: dict[str, float] = {}

    @hookimpl
    def triograph_run_created(self, run: Run) -> None:
        self._created[run.run_id] = time.perf_counter()
        if log.isEnabledFor(logging.INFO):
            log.info(
                "run %s pending thread=%s assistant=%s attempt=%d",
                run.run_id,
                run.thread_id,
                run.assistant_id,
                run.attempt,
                extra=_fields(run, "pending"),
            )

    @hookimpl
    def triograph_run_started(self, run: Run) -> None:
        if log.isEnabledFor(logging.INFO):
            log.info("run %s running", run.run_id, extra=_fields(run, "running"))

    @hookimpl
    def triograph_run_finished(self, run: Run, outcome: str, error: dict[str, str] | None) -> None:
        created = self._created.pop(run.run_id, None)
        if not log.isEnabledFor(logging.INFO):
            return
        ms = None if created is None else round((time.perf_counter() - created) * 1000, 1)
        fields = _fields(run, outcome)
        fields["duration_ms"] = ms
        text = ""
        if error is not None:
            fields["error"] = f"{error.get('error')}: {error.get('message')}"
            text = f" {fields['error']}"
        log.info("run %s %s %sms%s", run.run_id, outcome, ms, text, extra=fields)


def _fields(run: Run, status: str) -> dict[str, object]:
    return {
        "run_id": run.run_id,
        "thread_id": run.thread_id,
        "assistant_id": run.assistant_id,
        "attempt": run.attempt,
        "outcome": status,
    }
