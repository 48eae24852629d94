"""A snapshot of what this process is doing: ``PluginServices.stats()`` and ``/metrics``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from triograph.core.infra.plugin_manager import ServerStats

if TYPE_CHECKING:
    from triograph.core.infra.context import Core


def server_stats(core: Core) -> ServerStats:
    """Runs in flight here (pending and running), open SSE responses, stream readers.
    Counts what this process holds: on a shared backend each process reports its own."""
    in_flight = core.supervisor.all_in_flight()
    running = sum(1 for handle in in_flight if handle.started)
    subscribers = sum(h.stream.subscriber_count for h in core.supervisor.handles.values())
    return ServerStats(
        runs_pending=len(in_flight) - running,
        runs_running=running,
        max_runs=core.settings.max_runs,
        open_streams=core.open_streams,
        subscribers=subscribers + core.thread_streams.subscribers,
    )
