"""Admission: requests are handled in the order they arrived when more arrive than fit.

Trio runs every ready task a step at a time, in turn. When ten thousand requests arrive at
once (clients opening their streams), every one of them would advance a step per turn, and
all would get their answers late and together: the first stream opened after as long as
the last. :class:`Admission` lets at most :data:`LIMIT` requests be handled at once, in
the order they arrived (``trio.CapacityLimiter`` is fair); a request holds its place only
until its response starts (the headers go out), so a long stream or a ``/wait`` occupies
no place while it waits for its run (one that waits before its response starts gives its
place back through ``scope[RELEASE]``). Under a burst the first requests are answered at the
server's full speed while the later ones wait their turn, cheaply.

Health checks (``GET /ok``, ``/info``, ``/metrics``) go past the queue, so a burst never
makes the server look dead. The custom ``http.app`` is mounted outside this layer: its
routes are the user's own and may hold a request open before answering.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any

import trio

from triograph.core.http.server import REQUEST_CHANNEL
from triograph.core.infra import heap
from triograph.core.infra.graph_bridge import ASGIApp
from triograph.core.infra.intake import Intake

#: requests handled at once until their response starts; more wait in arrival order
LIMIT = 64
#: the scope key of a function giving the request's place back before its response starts
#: (a ``/wait`` that holds its headers back for a quick result, ``core/http/wire.py``)
RELEASE = "triograph.admission.release"
#: paths answered without waiting (cheap, and what a load balancer polls)
BYPASS = frozenset({"/ok", "/info", "/metrics"})


class Admission:
    """ASGI middleware around the API app; see the module docstring."""

    def __init__(self, app: ASGIApp, intake: Intake, limit: int = LIMIT) -> None:
        self.app = app
        self.intake = intake
        self.limiter = trio.CapacityLimiter(limit)

    def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Awaitable[None]:
        if scope["type"] != "http" or scope["path"] in BYPASS:
            self.intake.leave(scope.get(REQUEST_CHANNEL))  # answered at once: no crowd
            return self.app(scope, receive, send)  # awaited with no frame of this layer
        return self._admitted(scope, receive, send)

    async def _admitted(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        heap.note_activity()
        # counted since its connection read it (``core/http/server.py``); a request from
        # within the process (the SDK's loopback) is counted from here
        key = scope.get(REQUEST_CHANNEL)
        place = _Place(self.limiter, self.intake, send, key if key in self.intake else None)
        scope[RELEASE] = place.release
        try:
            await trio.lowlevel.checkpoint_if_cancelled()
            try:  # a free place is taken without a turn of the scheduler (the limiter's takes one)
                self.limiter.acquire_on_behalf_of_nowait(place)
            except trio.WouldBlock:  # taken by others, or others wait: in arrival order
                await self.limiter.acquire_on_behalf_of(place)
            place.held = True
            await self.app(scope, receive, place.send)
        finally:
            place.release()


class _Place:
    """A request's place in the admission queue and the intake, given back (once) when its
    response starts or it ends: an object with slots rather than two closures and their
    cells, held for as long as the request lasts (an open stream's whole life)."""

    __slots__ = ("_intake", "_key", "_limiter", "_send", "held")

    def __init__(
        self, limiter: trio.CapacityLimiter, intake: Intake, send: Any, key: object | None
    ) -> None:
        self._limiter = limiter
        self._intake = intake
        self._send = send
        if key is None:  # not counted yet: counted as itself
            key = self
            intake.enter(self)
        self._key = key
        self.held = False

    def release(self) -> None:
        if self.held:
            self.held = False
            self._limiter.release_on_behalf_of(self)
        self._intake.leave(self._key)  # (a second time changes nothing)

    async def send(self, message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            self.release()
        await self._send(message)
