"""Time as a dependency.

Every wait in mediamux (poll backoff, retry delays, heartbeats, wait budgets) goes through a
``Clock`` so tests can run hours of provider time in milliseconds without real sleeps.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Protocol

import anyio
import anyio.lowlevel

from mediamux.jobs import offload


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


@dataclass(order=True)
class _Sleeper:
    deadline: float
    seq: int
    # Set when this sleeper should look at the clock again: its deadline has come, or the task
    # that was driving the clock has left and someone must take over.
    wake: anyio.Event = field(compare=False, default_factory=anyio.Event)


_PATIENT_LOOKS = 100
_BUSY_POLL_S = 0.001


def _blocked(task: asyncio.Task[object]) -> bool:
    waiter = getattr(task, "_fut_waiter", None)  # what the task awaits; None while it is runnable
    return waiter is not None and not waiter.done()


async def wait_all_tasks_blocked() -> None:
    """Return once every other task in the event loop is waiting on something.

    The same test as ``anyio.wait_all_tasks_blocked`` (which is used as is on trio), but on asyncio
    anyio re-looks only every 0.1 s of real time — in step with uvicorn's 0.1 s ticks, so it can
    miss every quiet moment for good. Here the looks are one event-loop iteration apart, each one
    letting every runnable task take a step and pending I/O be delivered; only a task that stays
    busy for many iterations makes it look every millisecond instead.
    """
    try:
        me = asyncio.current_task()
    except RuntimeError:
        me = None
    if me is None:
        await anyio.wait_all_tasks_blocked()
        return
    looks = 0
    while True:
        await anyio.lowlevel.checkpoint()
        if offload.pending() == 0 and all(_blocked(task) for task in asyncio.all_tasks() if task is not me):
            return
        looks += 1
        if looks >= _PATIENT_LOOKS:
            await anyio.sleep(_BUSY_POLL_S)


class FakeClock:
    """A clock whose time passes only when every task is waiting — like trio's autojump clock.

    ``sleep`` registers a deadline. One sleeper at a time *drives* the clock: it waits until every
    other task in the event loop is blocked (:func:`wait_all_tasks_blocked`: parked on an event,
    a lock, a socket, a real-time timer or another fake sleep), then jumps time to the earliest
    registered deadline and wakes every sleeper that is due. So concurrent sleepers (a poll loop
    and a watcher) wake in deadline order, and fake time never runs ahead of a task that can still
    make progress. When the driver's own deadline has come it hands the role to the next sleeper.

    A journal call in a worker thread holds the clock until its answer is taken (it is in-process work
    of microseconds; counting its caller as waiting let time jump past several polls while one ran).
    A task blocked on real I/O counts as waiting, as in trio: time may jump while a request is on
    the wire. It never jumps past the earliest sleeper's deadline, and the emulators only read the
    clock, so such a request sees a later ``now()``, as it would over a slow network. (Loopback
    data is delivered within one event-loop iteration, and the task it wakes counts as runnable,
    so in practice a request in flight holds the clock until it lands.)

    ``advance`` moves time by hand; ``sleeps`` records every requested sleep, for assertions.
    """

    def __init__(self, start: float = 1_000.0, wall: datetime | None = None) -> None:
        self._t = start
        self._start = start
        self._wall0 = wall or datetime(2026, 1, 1, tzinfo=UTC)
        self._sleepers: list[_Sleeper] = []
        self._seq = itertools.count()
        self._driver: _Sleeper | None = None
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
        for sleeper in self._sleepers:
            if sleeper.deadline <= self._t:
                sleeper.wake.set()

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        me = _Sleeper(self._t + max(0.0, seconds), next(self._seq))
        self._sleepers.append(me)
        try:
            await anyio.lowlevel.checkpoint()
            while self._t < me.deadline:
                if self._driver is None:
                    await self._drive(me)
                else:
                    await me.wake.wait()
                    me.wake = anyio.Event()
        finally:
            self._sleepers.remove(me)

    async def _drive(self, me: _Sleeper) -> None:
        """Advance time for everyone until ``me`` is due, then hand the role to another sleeper."""
        self._driver = me
        try:
            while self._t < me.deadline:
                # Nothing else can run: no task could still register an earlier deadline or
                # make progress that should happen before the next deadline.
                await wait_all_tasks_blocked()
                self._t = max(self._t, min(self._sleepers).deadline)
                self._wake_due()
        finally:
            self._driver = None
            # Whoever is left must drive now; each wakes, and the first to run takes the role.
            for sleeper in self._sleepers:
                if sleeper is not me:
                    sleeper.wake.set()
