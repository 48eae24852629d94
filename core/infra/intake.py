"""The server's intake: the API requests being taken in, and whether they crowd in.

A request is being taken in from its arrival (its connection read it: ``core/http/server.py``)
until its response starts (its headers go out, as
:class:`~triograph.core.http.admission.Admission` sees): a stream or a ``/wait`` counts only
until it starts answering. Counting from the read, not from the first step of the request's
task, matters: a request whose answer takes no wait (a background run's creation) is taken
in and answered within one step, and requests read in the same turn would otherwise never
overlap, however fast they come. The intake is *crowded* when a request arrives while
at least :data:`CROWD` others that arrived in the last :data:`RECENT` seconds are still
being taken in: requests are arriving faster than the server answers them.

Background runs (``POST /runs``: nobody streams or waits for them) give way to a crowded
intake before they execute (``RunSupervisor``): under a burst of submissions the server
answers the submissions first and executes the runs once the intake has not been crowded
for :data:`CALM` seconds, or once a run has waited :data:`MAX_WAIT` seconds, whichever comes
first. The runs' total work is the same; the submissions are answered at the speed of
accepting alone, not of accepting and executing at once. A server that keeps up with its
requests is never crowded, and its background runs never wait: a client creating runs one
after the other, or creating one and joining it, sees no delay.

The server runs a request's app in the task that read it (``core/http/server.py``), so a
request answered without a wait leaves the intake in the step that read it. While the
server serves (:meth:`Intake.counting_turns`), a request that leaves still counts until the
end of the scheduler's turn: requests read in the same turn are a crowd, as they were when
each app waited for the next turn to start.
"""

from __future__ import annotations

import contextlib
import itertools
import math
from collections.abc import Iterator

import attrs
import trio

#: requests being taken in at once (the one arriving not counted) that make a crowd
CROWD = 8
#: seconds after its arrival that a request still being taken in counts towards a crowd:
#: one that takes long before it answers (an MCP or A2A call waiting for its run, a body
#: arriving slowly) is not the server falling behind
RECENT = 0.25
#: seconds without a crowd before background runs execute
CALM = 0.1
#: seconds a background run gives way to a crowded intake at most
MAX_WAIT = 1.0


@attrs.define(eq=False)
class Intake:
    """The requests being taken in, by arrival, and when they last crowded in."""

    #: request -> its arrival (Trio's clock), in arrival order
    _arrivals: dict[object, float] = attrs.field(factory=dict, init=False)
    #: when a request last arrived into a crowd (Trio's clock)
    crowded_at: float = attrs.field(default=-math.inf, init=False)
    #: the requests that left in this turn of the scheduler, while turns are counted
    #: (:meth:`counting_turns`; otherwise None, and a request leaves at once)
    _leaving: list[object] | None = attrs.field(default=None, init=False)

    @property
    def busy(self) -> int:
        """How many requests are being taken in."""
        return len(self._arrivals)

    def enter(self, request: object) -> None:
        """``request`` arrived."""
        now = trio.current_time()
        arrivals = self._arrivals
        if len(arrivals) >= CROWD:
            # the CROWD-th youngest of the others arrived recently: so did all after it
            others = next(itertools.islice(reversed(arrivals.values()), CROWD - 1, None))
            if now - others < RECENT:
                self.crowded_at = now
        arrivals[request] = now

    def swamped(self, count: int) -> bool:
        """Whether at least ``count`` requests that arrived in the last :data:`RECENT`
        seconds are still being taken in (``count`` >= 1)."""
        arrivals = self._arrivals
        if len(arrivals) < count:
            return False
        nth = next(itertools.islice(reversed(arrivals.values()), count - 1, None))
        return trio.current_time() - nth < RECENT

    def leave(self, request: object) -> None:
        """``request`` started its response (or ended without one); once is enough. While
        turns are counted, it counts until the end of this turn."""
        leaving = self._leaving
        if leaving is None:
            self._arrivals.pop(request, None)
        elif request in self._arrivals:
            leaving.append(request)

    def _end_turn(self) -> None:
        leaving = self._leaving
        if leaving:
            arrivals = self._arrivals
            for request in leaving:
                arrivals.pop(request, None)
            leaving.clear()

    @contextlib.contextmanager
    def counting_turns(self) -> Iterator[None]:
        """While the block runs (in Trio), a request that leaves counts until the end of the
        scheduler's turn (see the module docstring)."""
        turns = _Turns(self)
        self._leaving = []
        trio.lowlevel.add_instrument(turns)
        try:
            yield
        finally:
            trio.lowlevel.remove_instrument(turns)
            self._end_turn()
            self._leaving = None

    def __contains__(self, request: object) -> bool:
        return request in self._arrivals

    async def calm(self) -> None:
        """Return once the intake has not been crowded for :data:`CALM` seconds (at once if
        so already); within :data:`MAX_WAIT` seconds."""
        with trio.move_on_after(MAX_WAIT):
            # a deadline that each crowd moves on: no event to wait for, and a wake-up per
            # CALM seconds at most while the crowd lasts
            while trio.current_time() < (calm_at := self.crowded_at + CALM):  # noqa: ASYNC110
                await trio.sleep_until(calm_at)


class _Turns(trio.abc.Instrument):
    """Ends the intake's turn each time the scheduler has run its ready tasks (before it
    polls for I/O): Trio calls only the hooks an instrument defines, this one per turn."""

    def __init__(self, intake: Intake) -> None:
        self._intake = intake

    def before_io_wait(self, timeout: float) -> None:
        self._intake._end_turn()
