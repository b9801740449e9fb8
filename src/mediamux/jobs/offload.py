"""Journal calls off the event loop, at a cost small beside the calls themselves.

Every journal read and write of the engine runs in a worker thread: a SQLite journal another program
holds locked, or a PostgreSQL round trip, then stalls one job, never the server. A paid submission
makes three such calls, and ``anyio.to_thread`` (a checkpoint, a capacity-limiter token, an executor
future chained to an asyncio one) costs the loop about 80 µs per call, more than a journal write. Here
a call is one queue put, one thread wake-up and one ``call_soon_threadsafe``: about 30 µs.

Threads start as calls find none idle, up to ``LIMIT``; they are daemons and wait on the queue between
calls. The caller always waits for its call to finish, even when cancelled (a state change that
happened upstream must be on record before the caller learns anything else), and the call runs in the
caller's context (context variables such as the current principal are visible in it).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import anyio

T = TypeVar("T")

LIMIT = 16  # concurrent journal calls; SQLite writes serialize anyway, reads and PostgreSQL do not

_Call = tuple[
    asyncio.AbstractEventLoop, "asyncio.Future[Any]", contextvars.Context, Callable[..., Any], tuple[Any, ...]
]


class _Threads:
    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._calls: queue.SimpleQueue[_Call] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._started = 0
        self._idle = 0

    def submit(
        self, loop: asyncio.AbstractEventLoop, fn: Callable[..., T], args: tuple[Any, ...]
    ) -> asyncio.Future[T]:
        future: asyncio.Future[T] = loop.create_future()
        with self._lock:
            if self._idle == 0 and self._started < self._limit:
                self._started += 1
                threading.Thread(
                    target=self._work, name=f"mediamux-journal-{self._started}", daemon=True
                ).start()
            else:
                self._idle -= 1  # this call takes an idle thread (or queues behind a busy one)
        self._calls.put((loop, future, contextvars.copy_context(), fn, args))
        return future

    def _work(self) -> None:
        while True:
            loop, future, context, fn, args = self._calls.get()
            try:
                outcome: tuple[bool, Any] = (True, context.run(fn, *args))
            except BaseException as exc:  # handed to the caller, whatever it is
                outcome = (False, exc)
            with self._lock:
                self._idle += 1
            with contextlib.suppress(RuntimeError):  # the loop has closed: nobody is waiting any more
                loop.call_soon_threadsafe(_answer, future, outcome)


_pending = 0  # calls handed to a thread whose answer the event loop has not taken yet


def pending() -> int:
    """Journal calls in flight. A test clock does not jump while one is (see clock.FakeClock): it is
    in-process work that lands in microseconds, not a wait on the network."""
    return _pending


def _answer(future: asyncio.Future[Any], outcome: tuple[bool, Any]) -> None:
    global _pending
    _pending -= 1
    if future.done():
        return
    ok, value = outcome
    if ok:
        future.set_result(value)
    else:
        future.set_exception(value)


_THREADS = _Threads(LIMIT)


async def in_thread(fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` in a worker thread; the caller waits for it even when cancelled."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:  # not on asyncio (trio): anyio's own hand-off
        with anyio.CancelScope(shield=True):
            return await anyio.to_thread.run_sync(fn, *args)
    global _pending
    _pending += 1
    future = _THREADS.submit(loop, fn, args)
    with anyio.CancelScope(shield=True):
        # A shielded scope keeps anyio's cancellation away; asyncio's own (a bare task.cancel()) is
        # kept off the call by shielding the future, and the result is still awaited to the end.
        try:
            result = await asyncio.shield(future)
        except asyncio.CancelledError:
            if not future.done():
                await asyncio.wait([future])
            raise
    return result
