"""Time as a dependency.

Every wait in mediamux (poll backoff, retry delays, heartbeats, wait budgets) goes through a
``Clock`` so tests can run hours of provider time in milliseconds without real sleeps.
"""

from __future__ import annotations

import heapq
import itertools
import time
from datetime import UTC, datetime, timedelta
from typing import Protocol

import anyio
import anyio.lowlevel


class Clock(Protocol):
    """Provider time: poll intervals, wait budgets, retry delays, heartbeats' bookkeeping.

    The one exception is ``wait_for``: waiting for our own in-process work (a submission or a
    download in flight) is bounded by a budget measured on this clock, but that work is real I/O,
    so how long to wait for it is the clock's decision, made here and nowhere else.
    """

    def monotonic(self) -> float: ...

    def now(self) -> datetime: ...

    async def sleep(self, seconds: float) -> None: ...

    async def wait_for(self, event: anyio.Event, *, within_s: float) -> bool:
        """Wait until ``event`` is set or ``within_s`` passes; True when it was set."""
        ...


class SystemClock:
    def monotonic(self) -> float:
        return time.monotonic()

    def now(self) -> datetime:
        return datetime.now(UTC)

    async def sleep(self, seconds: float) -> None:
        await anyio.sleep(max(0.0, seconds))

    async def wait_for(self, event: anyio.Event, *, within_s: float) -> bool:
        with anyio.move_on_after(max(0.0, within_s)):
            await event.wait()
        return event.is_set()


class FakeClock:
    """A clock that jumps: a sleeper never waits in real time for fake time to pass.

    Each ``sleep`` registers a deadline and then advances time to the earliest registered
    deadline, waking every sleeper that is due — like trio's autojump clock. Concurrent sleepers
    (a poll loop and a heartbeat, an emulator's job timer) therefore wake in deadline order.
    A short real-time fallback wake keeps a sleeper from waiting forever when the task that
    would have advanced time has finished.
    """

    def __init__(self, start: float = 1_000.0, wall: datetime | None = None) -> None:
        self._t = start
        self._start = start
        self._wall0 = wall or datetime(2026, 1, 1, tzinfo=UTC)
        self._sleepers: list[tuple[float, int, anyio.Event]] = []
        self._seq = itertools.count()
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self._t

    def now(self) -> datetime:
        return self._wall0 + timedelta(seconds=self._t - self._start)

    async def wait_for(self, event: anyio.Event, *, within_s: float) -> bool:
        # In-process work is real I/O (loopback requests to an emulator): jumping fake time would
        # give up on it before it could possibly finish, so the budget is spent in real seconds.
        with anyio.move_on_after(max(0.0, within_s)):
            await event.wait()
        return event.is_set()

    def advance(self, seconds: float) -> None:
        self._t += max(0.0, seconds)
        self._wake_due()

    def _wake_due(self) -> None:
        while self._sleepers and self._sleepers[0][0] <= self._t:
            heapq.heappop(self._sleepers)[2].set()

    def _jump(self) -> None:
        if self._sleepers:
            self._t = max(self._t, self._sleepers[0][0])
            self._wake_due()

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        event = anyio.Event()
        entry = (self._t + max(0.0, seconds), next(self._seq), event)
        heapq.heappush(self._sleepers, entry)
        try:
            # Let every task that is runnable now reach its own sleep first, so the jump goes to
            # the true earliest deadline.
            for _ in range(3):
                await anyio.lowlevel.checkpoint()
            while not event.is_set():
                self._jump()
                if event.is_set():
                    break
                with anyio.move_on_after(0.1):
                    await event.wait()
        finally:
            if entry in self._sleepers:
                self._sleepers.remove(entry)
                heapq.heapify(self._sleepers)
