"""Small helpers shared by test modules."""

from __future__ import annotations

from collections.abc import Callable

import anyio

from mediamux.clock import FakeClock

REAL_POLL_S = 0.001
FAKE_TICK_S = 0.01


async def eventually(
    condition: Callable[[], bool], *, clock: FakeClock | None = None, timeout_s: float = 10.0
) -> None:
    """Wait, bounded in real time, until ``condition()`` holds.

    It blocks between looks instead of spinning on ``sleep(0)``: a spinning task is always runnable,
    and the FakeClock moves only when every task is blocked, so a spin loop would starve the very
    progress it waits for.

    With ``clock``, the looks are one tick of fake time apart. The clock ticks only once every task
    is blocked, so at each look every request in flight has landed and nothing scheduled later than
    the tick has happened yet: the condition is seen as soon as it holds, before the next poll of a
    job can start (poll intervals are ~100 ticks). Without a clock, looks are a millisecond of real
    time apart.
    """
    with anyio.fail_after(timeout_s):
        while not condition():
            if clock is not None:
                await clock.sleep(FAKE_TICK_S)
            else:
                await anyio.sleep(REAL_POLL_S)
