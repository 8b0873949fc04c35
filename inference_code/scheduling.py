"""Which waiting request gets a worker next (issue 13).

Requests wait for one of the server's workers in order of `priority`: their arrival time plus
`cost_weight` times their estimated seconds of work (inference_code/cost.py), at most
`max_delay_s`. Cheap requests go first; an expensive one waits behind cheap ones that arrive up to
that long after it, then runs: it is delayed, never starved, since the server sets `max_delay_s`
below the request deadline. With the default weight of 8, a client that sends only the most work
the limits admit gets about 1/9 of a saturated server, however fast it sends. The same priority
orders the model rows waiting for a core (inference_code/encoders.py RowPool).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools


def request_priority(arrived: float, cost_s: float, cost_weight: float, max_delay_s: float) -> float:
    return arrived + min(cost_weight * cost_s, max_delay_s)


class WorkerSlots:
    """`slots` workers handed out lowest priority first; ties in arrival order. Event-loop only."""

    def __init__(self, slots: int):
        self.slots = slots
        self.free = slots
        self._waiting: list[tuple[float, int, asyncio.Future]] = []
        self._order = itertools.count()

    @property
    def waiting(self) -> int:
        return sum(not future.cancelled() for _, _, future in self._waiting)

    async def acquire(self, priority: float) -> None:
        if self.free > 0 and not self.waiting:
            self.free -= 1
            return
        future = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiting, (priority, next(self._order), future))
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self.release()  # handed a worker while being cancelled: pass it on
            raise

    def release(self) -> None:
        while self._waiting:
            _, _, future = heapq.heappop(self._waiting)
            if not future.done():
                future.set_result(None)  # the worker passes straight to the next request
                return
        self.free += 1
