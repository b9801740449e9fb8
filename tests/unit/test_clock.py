"""The FakeClock: fake time passes only when every other task is blocked, in deadline order."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import anyio
import anyio.lowlevel
import pytest

from mediamux.clock import FakeClock, wait_all_tasks_blocked

BOUND_S = 5  # real seconds; every test here takes milliseconds


async def test_a_lone_sleeper_jumps_its_own_time_at_once() -> None:
    clock = FakeClock(start=100.0, wall=datetime(2026, 1, 1, tzinfo=UTC))
    started = time.monotonic()

    with anyio.fail_after(BOUND_S):
        await clock.sleep(3600)

    assert time.monotonic() - started < 1
    assert clock.monotonic() == 3700.0
    assert clock.now() == datetime(2026, 1, 1, 1, 0, tzinfo=UTC)
    assert clock.sleeps == [3600]


@pytest.mark.parametrize("seconds", [0, -5])
async def test_a_sleep_of_nothing_returns_without_moving_time(seconds: float) -> None:
    clock = FakeClock(start=100.0)

    with anyio.fail_after(BOUND_S):
        await clock.sleep(seconds)

    assert clock.monotonic() == 100.0 and clock.sleeps == [seconds]


async def test_concurrent_sleepers_wake_in_deadline_order_each_at_its_own_time() -> None:
    clock = FakeClock(start=0.0)
    woke: list[tuple[str, float]] = []

    async def sleeper(name: str, seconds: float) -> None:
        await clock.sleep(seconds)
        woke.append((name, clock.monotonic()))

    with anyio.fail_after(BOUND_S):
        async with anyio.create_task_group() as tg:
            for name, seconds in (("five", 5), ("one", 1), ("three", 3), ("also-three", 3)):
                tg.start_soon(sleeper, name, seconds)

    assert woke == [("one", 1.0), ("three", 3.0), ("also-three", 3.0), ("five", 5.0)]


async def test_a_sleeper_that_starts_later_still_wakes_at_its_own_deadline() -> None:
    clock = FakeClock(start=0.0)
    woke: list[tuple[str, float]] = []

    async def poller() -> None:
        for _ in range(3):
            await clock.sleep(2)
            woke.append(("poll", clock.monotonic()))

    async def late() -> None:
        await clock.sleep(1)  # from t=0: wakes at 1, between polls
        await clock.sleep(2.5)  # from t=1: wakes at 3.5
        woke.append(("late", clock.monotonic()))

    with anyio.fail_after(BOUND_S):
        async with anyio.create_task_group() as tg:
            tg.start_soon(poller)
            tg.start_soon(late)

    assert woke == [("poll", 2.0), ("late", 3.5), ("poll", 4.0), ("poll", 6.0)]


async def test_time_stands_still_while_another_task_keeps_running() -> None:
    clock = FakeClock(start=0.0)
    seen_by_worker: list[float] = []
    order: list[str] = []

    async def worker() -> None:
        for _ in range(500):  # never blocked: it yields but is always ready to run again
            seen_by_worker.append(clock.monotonic())
            await anyio.lowlevel.checkpoint()
        order.append("worker done")

    async def sleeper() -> None:
        await clock.sleep(10)
        order.append(f"sleeper woke at {clock.monotonic():g}")

    with anyio.fail_after(BOUND_S):
        async with anyio.create_task_group() as tg:
            tg.start_soon(sleeper)
            tg.start_soon(worker)

    assert set(seen_by_worker) == {0.0}
    assert order == ["worker done", "sleeper woke at 10"]


async def test_time_stands_still_while_tasks_hand_work_to_each_other() -> None:
    clock = FakeClock(start=0.0)
    send, receive = anyio.create_memory_object_stream[int](0)
    times: list[float] = []

    async def producer() -> None:
        async with send:
            for n in range(200):
                await send.send(n)

    async def consumer() -> None:
        async with receive:
            async for _ in receive:
                times.append(clock.monotonic())

    async def sleeper() -> None:
        await clock.sleep(30)
        times.append(clock.monotonic())

    with anyio.fail_after(BOUND_S):
        async with anyio.create_task_group() as tg:
            tg.start_soon(sleeper)
            tg.start_soon(producer)
            tg.start_soon(consumer)

    assert times == [0.0] * 200 + [30.0]


async def test_a_task_waiting_on_real_time_counts_as_blocked() -> None:
    clock = FakeClock(start=0.0)
    order: list[str] = []

    async def real() -> None:
        await anyio.sleep(0.2)
        order.append("real timer")

    async def fake() -> None:
        await clock.sleep(3600)
        order.append("fake hour")

    with anyio.fail_after(BOUND_S):
        async with anyio.create_task_group() as tg:
            tg.start_soon(real)
            tg.start_soon(fake)

    assert order == ["fake hour", "real timer"]


async def test_when_the_driving_sleeper_leaves_another_takes_over() -> None:
    clock = FakeClock(start=0.0)
    woke: list[float] = []

    async def short() -> None:  # starts first, drives, and is gone after one wake-up
        await clock.sleep(1)

    async def long() -> None:
        await clock.sleep(50)
        woke.append(clock.monotonic())

    with anyio.fail_after(BOUND_S):
        async with anyio.create_task_group() as tg:
            tg.start_soon(short)
            tg.start_soon(long)

    assert woke == [50.0]


async def test_a_cancelled_driver_hands_the_clock_to_the_next_sleeper() -> None:
    clock = FakeClock(start=0.0)
    woke: list[float] = []
    busy = True
    driver_scope = anyio.CancelScope()

    async def blocker() -> None:  # keeps the driver waiting for everyone else to block
        while busy:
            await anyio.lowlevel.checkpoint()

    async def driver() -> None:
        with driver_scope:
            await clock.sleep(10)  # first sleeper: it drives
        woke.append(-1.0)  # cancelled, never woken by the clock

    async def other() -> None:
        await clock.sleep(20)
        woke.append(clock.monotonic())

    with anyio.fail_after(BOUND_S):
        async with anyio.create_task_group() as tg:
            tg.start_soon(blocker)
            tg.start_soon(driver)
            tg.start_soon(other)
            for _ in range(20):
                await anyio.lowlevel.checkpoint()
            driver_scope.cancel()
            for _ in range(20):
                await anyio.lowlevel.checkpoint()
            assert clock.monotonic() == 0.0  # nothing moved while the blocker ran
            busy = False

    assert woke == [-1.0, 20.0]


def test_advance_moves_time_and_the_wall_clock_by_hand() -> None:
    clock = FakeClock(start=5.0)
    wall = clock.now()

    clock.advance(61)
    clock.advance(-3)  # time never runs backwards

    assert clock.monotonic() == 66.0 and clock.now() - wall == timedelta(seconds=61)


async def test_advance_wakes_a_sleeper_that_is_due() -> None:
    clock = FakeClock(start=0.0)
    woke: list[float] = []
    parked = anyio.Event()

    async def sleeper() -> None:
        await clock.sleep(30)
        woke.append(clock.monotonic())

    async def blocker() -> None:
        # Holds the clock: a task that is never blocked keeps fake time from moving by itself.
        while not parked.is_set():
            await anyio.lowlevel.checkpoint()

    with anyio.fail_after(BOUND_S):
        async with anyio.create_task_group() as tg:
            tg.start_soon(blocker)
            tg.start_soon(sleeper)
            for _ in range(10):
                await anyio.lowlevel.checkpoint()
            clock.advance(45)
            parked.set()

    assert woke == [45.0]


async def test_wait_all_tasks_blocked_returns_once_the_others_are_parked() -> None:
    steps = 0
    release = anyio.Event()

    async def busy_then_parked() -> None:
        nonlocal steps
        for _ in range(50):
            steps += 1
            await anyio.lowlevel.checkpoint()
        await release.wait()

    with anyio.fail_after(BOUND_S):
        async with anyio.create_task_group() as tg:
            tg.start_soon(busy_then_parked)
            await wait_all_tasks_blocked()
            assert steps == 50
            release.set()
