"""triograph-hello: an example third-party triograph plugin.

Two things, each through a hook of ``triograph.core.infra.hookspecs``:

* a run-audit log: ``triograph_run_created``, ``triograph_run_started`` and
  ``triograph_run_finished`` append one JSON line each to the file named by the environment
  variable ``TRIOGRAPH_AUDIT_LOG`` (nothing happens when it is unset or empty). The hooks are
  ``async def``: triograph awaits them in the run's Trio task, so the file is written through
  ``trio.Path``, whose I/O runs in a worker thread and never blocks the event loop;
* a stream mode ``"node-names"``: for every LangGraph ``updates`` chunk, the names of the
  nodes that just ran, as ``event: node-names`` / ``data: {"nodes": [...]}`` (namespaced
  ``node-names|<node>:<task id>`` inside subgraphs, like the built-in modes).

Installed with pip, the plugin is found through the ``triograph`` entry-point group; without
installing it, name the module in ``langgraph.json`` (``"triograph": {"plugins":
["triograph_hello"]}``) or on the command line (``--plugin triograph_hello``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, ClassVar

import trio

from triograph.core.engine.emitters import Namespace, RunInfo, SSEEvent, event_name
from triograph.core.infra.hookspecs import hookimpl

if TYPE_CHECKING:
    from triograph.core.engine.emitters import StreamModeRegistry
    from triograph.core.infra.models import Run

__all__ = ["AUDIT_ENV", "NodeNamesEmitter"]

#: the environment variable naming the audit file
AUDIT_ENV = "TRIOGRAPH_AUDIT_LOG"


# -- the run-audit log -------------------------------------------------------------------------


async def _audit(record: dict[str, Any]) -> None:
    """Append ``record`` as one JSON line to ``$TRIOGRAPH_AUDIT_LOG``, if it is set.

    The environment is read on every call, so the log can be switched on and off while the
    server runs. One ``write`` per line on a file opened for appending keeps lines whole even
    when several runs finish at once.
    """
    path = os.environ.get(AUDIT_ENV)
    if not path:
        return
    line = json.dumps(record, default=str) + "\n"
    async with await trio.Path(path).open("a", encoding="utf-8") as f:
        await f.write(line)


def _run_record(hook: str, run: Run) -> dict[str, Any]:
    return {"hook": hook, "run_id": run.run_id, "thread_id": run.thread_id, "status": run.status}


@hookimpl
async def triograph_run_created(run: Run) -> None:
    await _audit(_run_record("run_created", run))


@hookimpl
async def triograph_run_started(run: Run) -> None:
    await _audit(_run_record("run_started", run))


@hookimpl
async def triograph_run_finished(run: Run, outcome: str, error: dict[str, str] | None) -> None:
    await _audit({**_run_record("run_finished", run), "outcome": outcome, "error": error})


# -- the "node-names" stream mode -------------------------------------------------------------


class NodeNamesEmitter:
    """``node-names``: which nodes produced each ``updates`` chunk.

    An ``updates`` chunk is ``{"<node>": <update>, ...}``; the emitter sends the keys, minus
    ``__interrupt__`` (an interrupt is not a node). A chunk that only carries an interrupt
    produces no event.
    """

    wire_name: ClassVar[str] = "node-names"
    langgraph_modes: ClassVar[frozenset[str]] = frozenset({"updates"})

    def __init__(self, info: RunInfo) -> None:
        self.info = info

    def emit(self, ns: Namespace, mode: str, data: Any) -> Iterable[SSEEvent]:
        if not isinstance(data, dict):
            return []
        nodes = [name for name in data if name != "__interrupt__"]
        if not nodes:
            return []
        return [(event_name(self.wire_name, ns), {"nodes": nodes})]


@hookimpl
def triograph_register_stream_modes(registry: StreamModeRegistry) -> None:
    registry.add(NodeNamesEmitter.wire_name, NodeNamesEmitter)
