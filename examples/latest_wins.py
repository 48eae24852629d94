"""A third-party multitask strategy: ``latest_wins``, "latest wins, drop the queue".

When a run is created on a thread that has runs in flight, the run that is executing goes
on undisturbed, the runs still waiting behind it are cancelled (``interrupted``; they never
start), and the new run takes their place in the queue. Useful for a chat UI where only the
user's latest message matters once the current answer is done.

Enable it by naming this module in ``langgraph.json``::

    "triograph": {"plugins": ["latest_wins"]}

(with this directory on ``sys.path``), then create runs with
``multitask_strategy="latest_wins"``.
"""

from __future__ import annotations

from collections.abc import Sequence

from triograph.core import hookimpl
from triograph.core.engine.multitask import Admission, MultitaskRegistry
from triograph.core.infra.models import Run


class LatestWinsStrategy:
    def admit(self, new_run: Run, in_flight: Sequence[Run]) -> Admission:
        queued = tuple(run.run_id for run in in_flight if run.status == "pending")
        return Admission(cancel=queued, action="interrupt")


@hookimpl
def triograph_register_multitask(registry: MultitaskRegistry) -> None:
    registry.add("latest_wins", LatestWinsStrategy())
