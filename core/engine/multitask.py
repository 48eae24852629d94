"""Multitask strategies: what happens when a run is created on a thread that is busy.

A strategy is registered by its wire name (``"enqueue"``, ``"reject"``, ...) through
``triograph_register_multitask``. When a stateful run is created while other runs of its
thread are pending or running ("in flight"), the strategy named by the new run decides,
before anything is stored: raise :class:`~triograph.core.infra.errors.Conflict` to reject the new
run (nothing is created), or return an :class:`Admission` naming in-flight runs to cancel
once the new run is stored. The new run always waits its turn on the thread: runs of one
thread execute one at a time, in the order of their scheduled start (``created_at``), and a
run starts only once the one before it has recorded its outcome (a rollback's deletions
included).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

import attrs

from triograph.core.infra.registry import Registry

if TYPE_CHECKING:
    from triograph.core.infra.models import CancelAction, Run


@attrs.frozen(kw_only=True)
class Admission:
    """The strategy's decision: which in-flight runs to cancel, and how."""

    cancel: tuple[str, ...] = ()
    action: CancelAction = "interrupt"


class MultitaskStrategy(Protocol):
    def admit(self, new_run: Run, in_flight: Sequence[Run]) -> Admission:
        """Decide for ``new_run`` given the thread's in-flight runs (oldest first, never empty).

        Called in the request's Trio task, synchronously, right before the new run is
        reserved in flight (no other request can change ``in_flight`` in between); the
        runs are live records: ``status`` tells ``pending`` from ``running``. Raise
        ``Conflict`` to reject.
        """
        ...


class MultitaskRegistry(Registry[MultitaskStrategy]):
    def __init__(self) -> None:
        super().__init__("multitask strategy")
