"""The four built-in multitask strategies (contract §7).

``enqueue`` waits its turn; ``reject`` answers 409 and creates nothing; ``interrupt``
interrupts every in-flight run (partial writes stay) and the new run starts from there;
``rollback`` cancels them and deletes them with their checkpoints.
"""

from __future__ import annotations

from collections.abc import Sequence

from triograph.core.engine.multitask import Admission, MultitaskRegistry
from triograph.core.infra.errors import Conflict
from triograph.core.infra.hookspecs import hookimpl
from triograph.core.infra.models import Run


class EnqueueStrategy:
    def admit(self, new_run: Run, in_flight: Sequence[Run]) -> Admission:
        return Admission()


class RejectStrategy:
    def admit(self, new_run: Run, in_flight: Sequence[Run]) -> Admission:
        raise Conflict(
            "Thread is already running a task. Wait for it to finish or choose a different "
            "multitask strategy."
        )


class InterruptStrategy:
    def admit(self, new_run: Run, in_flight: Sequence[Run]) -> Admission:
        return Admission(cancel=tuple(r.run_id for r in in_flight), action="interrupt")


class RollbackStrategy:
    def admit(self, new_run: Run, in_flight: Sequence[Run]) -> Admission:
        return Admission(cancel=tuple(r.run_id for r in in_flight), action="rollback")


@hookimpl
def triograph_register_multitask(registry: MultitaskRegistry) -> None:
    registry.add("enqueue", EnqueueStrategy())
    registry.add("reject", RejectStrategy())
    registry.add("interrupt", InterruptStrategy())
    registry.add("rollback", RollbackStrategy())
