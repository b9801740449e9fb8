"""The engine touches the journal only from worker threads: a journal another program holds locked,
or a slow disk, stalls the job that needs it, never the event loop serving everyone else.

Every statement SQLite runs is traced with the thread that ran it, so a read or write slipped back
onto the loop fails here whichever method it came through.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from mediamux.clock import FakeClock
from mediamux.jobs.engine import JobEngine
from mediamux.jobs.journal import Journal
from mediamux.jobs.offload import in_thread
from tests.test_job_states import CountingArgs, CountingDriver


@pytest.fixture
def journal(tmp_path: Path) -> Iterator[Journal]:
    j = Journal(tmp_path / "mediamux.sqlite3")
    yield j
    j.close()


def _trace(journal: Journal) -> list[tuple[int, str]]:
    ran: list[tuple[int, str]] = []
    for connection in (journal._db, journal._reader):
        connection.set_trace_callback(lambda sql: ran.append((threading.get_ident(), sql)))
    return ran


@pytest.mark.parametrize("mode", ["poll", "background"])
@pytest.mark.parametrize("budget", [None, 10.0], ids=["no-budget", "budget"])
async def test_submitting_waiting_reading_and_cancelling_never_touch_the_journal_on_the_event_loop(
    journal: Journal, tmp_path: Path, mode: str, budget: float | None
) -> None:
    engine = JobEngine(
        journal,
        clock=FakeClock(),
        budget_usd=budget,
        unpriced_job_usd=1.0,
        recovery_path=tmp_path / "recovery.jsonl",
    )
    driver = CountingDriver(mode)
    engine.register(driver)
    ran = _trace(journal)
    loop_thread = threading.get_ident()
    views: list[Any] = []
    async with anyio.create_task_group() as tg:
        engine.task_group = tg
        with anyio.fail_after(20):
            assert await engine.recover() == 0
            first = await engine.run("muapi", "generate", CountingArgs(p=1), wait_s=60)
            views += [first, await engine.run("muapi", "generate", CountingArgs(p=1), wait_s=60)]
            views += [await engine.wait(first.job_id, wait_s=5), await engine.read(first.job_id)]
            running = await engine.run("muapi", "generate", CountingArgs(p=2), wait_s=0)
            views += [running, await engine.cancel(running.job_id)]
        tg.cancel_scope.cancel()

    assert views[1].deduplicated and views[1].job_id == first.job_id
    assert first.status == "completed"
    assert len(ran) > 10
    on_loop = [sql for thread, sql in ran if thread == loop_thread]
    assert on_loop == []


async def test_the_session_spend_in_every_view_is_the_journals(journal: Journal) -> None:
    engine = JobEngine(journal, clock=FakeClock())
    engine.register(CountingDriver())
    async with anyio.create_task_group() as tg:
        engine.task_group = tg
        with anyio.fail_after(20):
            one = await engine.run("muapi", "generate", CountingArgs(p=1), wait_s=60)
            two = await engine.run("muapi", "generate", CountingArgs(p=2), wait_s=60)
        tg.cancel_scope.cancel()
    assert (one.session_spent_usd, two.session_spent_usd) == (0.5, 1.0)  # $0.50 charged per job
    assert journal.spent_usd(engine.session_id) == 1.0
    # Another server resuming this session's spend sees it too.
    assert (
        JobEngine(journal, clock=FakeClock(), session_id=engine.session_id)
        .view(
            journal.get(two.job_id)  # type: ignore[arg-type]
        )
        .session_spent_usd
        == 1.0
    )


async def test_a_cancelled_caller_still_waits_for_its_journal_call_to_finish() -> None:
    """A state change that happened upstream is on record before the caller hears anything else."""
    started, release = threading.Event(), threading.Event()
    finished: list[str] = []

    def slow_write() -> str:
        started.set()
        release.wait(10)
        finished.append("written")
        return "written"

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:

            async def caller() -> None:
                await in_thread(slow_write)
                finished.append("caller resumed")

            tg.start_soon(caller)
            await anyio.to_thread.run_sync(started.wait, 10)
            tg.cancel_scope.cancel()  # the caller is cancelled while the write is in the thread
            with anyio.CancelScope(shield=True):
                for _ in range(20):
                    await anyio.sleep(0)  # the cancellation has every chance to reach the caller
                assert finished == []  # which still waits on the write
                release.set()

    assert finished[0] == "written"


async def test_a_journal_call_sees_the_callers_context_and_raises_its_own_errors() -> None:
    from mediamux.principals import current_principal

    with anyio.fail_after(10):
        assert await in_thread(current_principal) == current_principal()
        with pytest.raises(ZeroDivisionError):
            await in_thread(lambda: 1 / 0)


async def test_fake_time_waits_for_a_journal_call_in_flight() -> None:
    """A journal call is in-process work: a test's fake clock must not jump past polls while one runs
    (it did, and a webhook test then saw its job at the 22 s fallback poll instead of the 2 s one)."""
    clock = FakeClock()
    release, woke = threading.Event(), threading.Event()
    start = clock.monotonic()
    woke_at: list[float] = []
    done: list[str] = []

    async def sleeper() -> None:
        await clock.sleep(5.0)
        woke_at.append(clock.monotonic() - start)
        woke.set()

    async def journal_call() -> None:
        done.append(await in_thread(lambda: release.wait(10) and "written"))

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(sleeper)
            tg.start_soon(journal_call)
            # Every task now waits on something; only the journal call in its thread can still move.
            jumped = await anyio.to_thread.run_sync(woke.wait, 0.3)
            assert not jumped and woke_at == []
            release.set()
    assert done == ["written"] and woke_at == [5.0]
