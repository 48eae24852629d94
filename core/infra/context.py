"""``Core``: the objects one app is made of, wired once in the lifespan.

There is no module-level state: each app builds its own ``Core``, so tests can run several
servers in one process.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import attrs

from triograph.core.infra.intake import Intake

if TYPE_CHECKING:
    import pluggy
    from prometheus_client import CollectorRegistry

    from triograph.core.engine.cluster import ClusterLink
    from triograph.core.engine.emitters import StreamModeRegistry
    from triograph.core.engine.event_log import ThreadEventLog
    from triograph.core.engine.multitask import MultitaskRegistry
    from triograph.core.engine.streams import Heartbeats
    from triograph.core.engine.supervisor import RunSupervisor
    from triograph.core.engine.thread_streams import ThreadStreams
    from triograph.core.infra.auth import Access
    from triograph.core.infra.graph_bridge import GraphBridge
    from triograph.core.infra.graphs import GraphRegistry
    from triograph.core.infra.plugin_manager import Hooks
    from triograph.core.infra.settings import Settings
    from triograph.core.infra.storage import Storage, StorageRegistry
    from triograph.core.resources.assistants import AssistantService
    from triograph.core.resources.crons import CronService
    from triograph.core.resources.protocol import ProtocolService
    from triograph.core.resources.runs import RunService
    from triograph.core.resources.store import StoreService
    from triograph.core.resources.threads import ThreadService


@attrs.define(kw_only=True)
class Core:
    settings: Settings
    pm: pluggy.PluginManager
    hooks: Hooks
    #: asks the auth plugins (authenticate a request, authorize an action)
    access: Access
    storages: StorageRegistry
    stream_modes: StreamModeRegistry
    multitask: MultitaskRegistry
    graphs: GraphRegistry
    bridge: GraphBridge
    #: why the lifespan could not start (the storage would not open, ...), for the one line
    #: the command line prints; None while starting and once started
    startup_failure: str | None = None
    # set when the lifespan opens storage and starts the supervisor
    storage: Storage = attrs.field(default=None)
    supervisor: RunSupervisor = attrs.field(default=None)
    assistants: AssistantService = attrs.field(default=None)
    threads: ThreadService = attrs.field(default=None)
    runs: RunService = attrs.field(default=None)
    crons: CronService = attrs.field(default=None)
    store: StoreService = attrs.field(default=None)
    protocol: ProtocolService = attrs.field(default=None)
    thread_streams: ThreadStreams = attrs.field(default=None)
    #: the thread-centric protocol's events of every thread (``core.engine.event_log``)
    event_log: ThreadEventLog = attrs.field(default=None)
    #: the one timer of every open SSE response's heartbeats
    heartbeats: Heartbeats = attrs.field(default=None)
    #: how this process coordinates with the others on its storage (a local link when none
    #: share it); set with the storage
    cluster: ClusterLink = attrs.field(default=None)
    #: what ``GET /metrics`` exposes; plugins register on it (``PluginServices.metrics``)
    metrics: CollectorRegistry = attrs.field(default=None)
    #: SSE responses being sent right now
    open_streams: int = 0
    #: the API requests being taken in (counted by ``core/http/admission.py``), which
    #: background runs give way to
    intake: Intake = attrs.Factory(Intake)
