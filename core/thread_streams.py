"""Thread streams: everything happening on a thread, for ``GET /threads/{id}/stream``.

(Placeholder interface; the implementation is being written.)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from triograph.core.context import Core


class ThreadStreams:
    def __init__(self, core: Core) -> None:
        self.core = core

    def publish(self, thread_id: str, name: str, data: bytes) -> None:
        """Deliver one event (``name``, compact JSON ``data``) to the thread's subscribers."""
