"""The store API over the backend's LangGraph store. (Placeholder; being written.)"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from triograph.core.context import Core


class StoreService:
    def __init__(self, core: Core) -> None:
        self.core = core
