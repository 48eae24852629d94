"""Crons: schedules that create runs. (Placeholder; the implementation is being written.)"""

from __future__ import annotations

from typing import TYPE_CHECKING

import trio

if TYPE_CHECKING:
    from triograph.core.context import Core


class CronService:
    def __init__(self, core: Core) -> None:
        self.core = core

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The scheduler: runs in the supervisor's nursery until it is cancelled."""
        task_status.started()
        await trio.sleep_forever()
