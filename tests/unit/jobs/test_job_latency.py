"""How soon the engine sees a job finish, and how often it asks: the learned poll plan, the last look
before answering, reads, and webhooks. A stub provider whose jobs take a fixed time on the FakeClock,
and a real SQLite journal."""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
from pydantic import BaseModel

from mediamux.clock import FakeClock
from mediamux.jobs.engine import (
    ACCEPTED_OPTION,
    FINISHED_OPTION,
    FRESH_S,
    HOOK_OPTION,
    WEBHOOK_URL_OPTION,
    DriverBase,
    JobEngine,
    Outcome,
)
from mediamux.jobs.journal import Journal
from mediamux.jobs.schedule import JITTER, Expectation, baseline_polls, dense_step
from mediamux.providers.cost import Cost
from mediamux.providers.errors import ServerError
from tests.support import eventually

JOB_S = 10.0


class Args(BaseModel):
    n: int


class Timed(DriverBase):
    """Jobs that finish ``seconds`` after the provider accepted them (then, with ``settling_s``, are
    still finishing up for that long, as Mixpeek's documents are)."""

    provider = "muapi"
    operation = "generate"
    title = "Stub"
    args_model = Args

    def __init__(
        self, clock: FakeClock, seconds: float = JOB_S, *, hooks: bool = False, settling_s: float = 0.0
    ) -> None:
        self.clock = clock
        self.seconds = seconds
        self.hooks = hooks
        self.settling_s = settling_s
        self.accepted: dict[str, float] = {}
        self.polls: dict[str, list[float]] = defaultdict(list)  # the age of every poll, per job
        self.webhooks: dict[str, str] = {}

    def price_key(self, args: Args) -> str:
        return "model-x"

    def takes_webhook(self, args: Args) -> bool:
        return self.hooks

    async def submit(self, args: Args, options: dict[str, Any], progress: Any) -> Outcome:
        pid = f"r{args.n}"
        self.accepted[pid] = self.clock.monotonic()
        if WEBHOOK_URL_OPTION in options:
            self.webhooks[pid] = options[WEBHOOK_URL_OPTION]
        return Outcome(status="running", provider_status="queued", provider_job_id=pid)

    async def poll(self, provider_job_id: str, args: Args, options: dict[str, Any]) -> Outcome:
        age = self.clock.monotonic() - self.accepted[provider_job_id]
        self.polls[provider_job_id].append(age)
        if age >= self.seconds + self.settling_s:
            return Outcome(
                status="completed", provider_status="completed", result={"n": args.n}, cost=Cost(usd=0.01)
            )
        return Outcome(status="running", provider_status="settling" if age >= self.seconds else "processing")

    def age(self, pid: str) -> float:
        return self.clock.monotonic() - self.accepted[pid]


@asynccontextmanager
async def engine_on(path: Path, clock: FakeClock, driver: Timed) -> AsyncIterator[JobEngine]:
    journal = Journal(path)
    engine = JobEngine(journal, clock=clock, dedup_window_s=0)
    engine.register(driver)
    try:
        yield engine
    finally:
        journal.close()


async def one_job(engine: JobEngine, driver: Timed, n: int, *, wait_s: float = 120.0) -> tuple[float, int]:
    """Run job n to the end: (how late it was seen finished, how many polls it took)."""
    with anyio.fail_after(30):
        view = await engine.run("muapi", "generate", Args(n=n), wait_s=wait_s)
    assert view.status == "completed", view
    ages = driver.polls[f"r{n}"]
    return ages[-1] - driver.seconds, len(ages)


async def test_the_first_job_of_a_kind_is_polled_on_the_fixed_backoff(tmp_path: Path) -> None:
    clock = FakeClock()
    driver = Timed(clock)
    async with engine_on(tmp_path / "j.sqlite3", clock, driver) as engine:
        late, polls = await one_job(engine, driver, 0)

    assert polls == baseline_polls(JOB_S) == 5
    assert 2.0 < late < 4.5  # the fixed backoff's last gap: what the issue measured (3.3 s)


async def test_later_jobs_of_a_kind_are_seen_finished_within_a_dense_step_with_no_more_polls(
    tmp_path: Path,
) -> None:
    clock = FakeClock()
    driver = Timed(clock)
    async with engine_on(tmp_path / "j.sqlite3", clock, driver) as engine:
        runs = [await one_job(engine, driver, n) for n in range(8)]
        durations = engine.journal.recent_durations("muapi", "generate", "model-x")

    expectation = Expectation.learn(durations)
    assert expectation is not None
    # What was learned is when the jobs finished, not when they were seen to: no drift upwards.
    assert abs(expectation.typical_s - JOB_S) < 0.5
    for late, polls in runs[3:]:
        assert 0 <= late <= dense_step(expectation) * (1 + 2 * JITTER) + 0.2
        assert late < 1.0
        assert polls <= baseline_polls(JOB_S)


async def test_a_job_first_seen_finished_long_after_it_finished_is_learned_as_its_kind_takes(
    tmp_path: Path,
) -> None:
    """Looked at once, 30 s after it was accepted, a 10 s job is known only to have taken at most 30 s:
    it is learned as what its kind takes, not as the 15 s halfway there, which would spread every later
    plan's dense polls (under load, jobs accepted late and seen at their first poll did just that)."""
    clock = FakeClock()
    driver = Timed(clock)
    async with engine_on(tmp_path / "j.sqlite3", clock, driver) as engine:
        for n in range(6):
            await one_job(engine, driver, n)
        expectation = Expectation.learn(engine.journal.recent_durations("muapi", "generate", "model-x"))
        with anyio.fail_after(30):
            started = await engine.run("muapi", "generate", Args(n=9), wait_s=0)
            clock.advance(30)
            done = await engine.wait(started.job_id, wait_s=60)
        record = engine.journal.get(started.job_id)

    assert done.status == "completed" and len(driver.polls["r9"]) == 1
    assert expectation is not None and record is not None
    assert expectation.early_s <= record.options[FINISHED_OPTION] <= expectation.late_s


async def test_a_new_process_plans_from_the_history_in_the_journal(tmp_path: Path) -> None:
    clock = FakeClock()
    path = tmp_path / "j.sqlite3"
    first = Timed(clock)
    async with engine_on(path, clock, first) as earlier:
        for n in range(6):
            await one_job(earlier, first, n)

    driver = Timed(clock)
    async with engine_on(path, clock, driver) as later:  # another engine: nothing in memory
        late, polls = await one_job(later, driver, 99)

    assert late < 1.0 and polls < baseline_polls(JOB_S)


async def test_what_other_kinds_took_does_not_shape_this_kind(tmp_path: Path) -> None:
    clock = FakeClock()
    fast = Timed(clock, seconds=2.0)
    async with engine_on(tmp_path / "j.sqlite3", clock, fast) as engine:
        for n in range(5):
            await one_job(engine, fast, n)
        fast.price_key = lambda args: "model-y"  # type: ignore[method-assign]
        fast.seconds = JOB_S
        late, polls = await one_job(engine, fast, 50)

    assert polls == baseline_polls(JOB_S)  # model-y has no history: the fixed backoff
    assert late > 2.0


async def test_a_wait_that_ends_first_looks_once_more_right_before_answering_within_the_budget(
    tmp_path: Path,
) -> None:
    clock = FakeClock()
    driver = Timed(clock)
    async with engine_on(tmp_path / "j.sqlite3", clock, driver) as engine:
        for n in range(5):
            await one_job(engine, driver, n)
        with anyio.fail_after(30):
            started = await engine.run("muapi", "generate", Args(n=7), wait_s=5)
            answered_at = driver.age("r7")
            done = await engine.wait(started.job_id, wait_s=60)

    ages = driver.polls["r7"]
    assert started.status == "running"
    assert answered_at - FRESH_S <= ages[0] <= answered_at  # the last look came right before the answer
    assert done.status == "completed" and ages[-1] - JOB_S < 1.0
    assert len(ages) <= baseline_polls(JOB_S)  # the extra look used up a planned poll


async def test_a_job_that_finished_before_the_wait_ends_is_never_answered_as_running(tmp_path: Path) -> None:
    clock = FakeClock()
    driver = Timed(clock, seconds=3.5)
    async with engine_on(tmp_path / "j.sqlite3", clock, driver) as engine:
        with anyio.fail_after(30):
            # The fixed backoff would look at 1, 2.5 and 4.75 s: past the 4 s budget.
            view = await engine.run("muapi", "generate", Args(n=1), wait_s=4)

    assert view.status == "completed"


async def test_a_read_asks_the_provider_only_when_the_last_look_is_stale(tmp_path: Path) -> None:
    clock = FakeClock()
    driver = Timed(clock)
    async with engine_on(tmp_path / "j.sqlite3", clock, driver) as engine:
        with anyio.fail_after(30):
            started = await engine.run("muapi", "generate", Args(n=1), wait_s=0)
            fresh = await engine.read(started.job_id)  # the submission's answer is a moment old
            clock.advance(JOB_S + 1)
            stale = await engine.read(started.job_id)

    assert started.status == "running" and fresh.status == "running"
    assert len(driver.polls["r1"]) == 1 and stale.status in ("completed", "saving_outputs")


# -- webhooks ------------------------------------------------------------------------------------------


def token_of(driver: Timed, pid: str) -> tuple[str, str]:
    """(job id, token) from the webhook URL the provider was given."""
    *_, job_id, token = driver.webhooks[pid].split("/")
    return job_id, token


async def test_a_webhook_wakes_the_waiting_job_at_once_and_the_fallback_polls_stay_sparse(
    tmp_path: Path,
) -> None:
    clock = FakeClock()
    driver = Timed(clock, hooks=True)
    async with engine_on(tmp_path / "j.sqlite3", clock, driver) as engine:
        engine.hook_base = "https://mediamux.example/hooks"
        views: list[Any] = []
        async with anyio.create_task_group() as tg:

            async def run() -> None:
                views.append(await engine.run("muapi", "generate", Args(n=1), wait_s=120))

            tg.start_soon(run)
            await eventually(lambda: "r1" in driver.webhooks, clock=clock)
            await eventually(lambda: driver.age("r1") >= JOB_S, clock=clock)  # it finishes, and says so
            job_id, token = token_of(driver, "r1")
            assert await engine.wake(job_id, token)
            finished_at = driver.age("r1")
        record = engine.journal.get(job_id)

    assert views[0].status == "completed"
    ages = driver.polls["r1"]
    assert ages[-1] == pytest.approx(finished_at, abs=0.05)  # polled at once, not at the next planned poll
    assert len(ages) <= 3  # the fallback polls (2 and 6 s with no history) and the webhook's
    assert record is not None and HOOK_OPTION in record.options and token not in str(record.options)
    assert record.options[FINISHED_OPTION] == pytest.approx(JOB_S, abs=0.05)
    assert ACCEPTED_OPTION in record.options


async def test_a_wrong_token_or_an_unknown_job_wakes_nothing(tmp_path: Path) -> None:
    clock = FakeClock()
    driver = Timed(clock, hooks=True)
    async with engine_on(tmp_path / "j.sqlite3", clock, driver) as engine:
        engine.hook_base = "https://mediamux.example/hooks"
        with anyio.fail_after(30):
            started = await engine.run("muapi", "generate", Args(n=1), wait_s=0)
            clock.advance(JOB_S + 1)
            job_id, token = token_of(driver, "r1")
            forged = await engine.wake(job_id, token[:-2] + ("AA" if token[-2:] != "AA" else "BB"))
            unknown = await engine.wake("job_doesnotexist", token)
            other_job = await engine.wake(started.job_id + "x", token)
            record = engine.journal.get(started.job_id)

    assert (forged, unknown, other_job) == (False, False, False)
    assert driver.polls["r1"] == []  # nothing was asked of the provider
    assert record is not None and record.status == "running"


async def test_a_webhook_for_a_job_nobody_waits_on_is_polled_and_finished_in_the_background(
    tmp_path: Path,
) -> None:
    clock = FakeClock()
    driver = Timed(clock, hooks=True)
    async with engine_on(tmp_path / "j.sqlite3", clock, driver) as engine, anyio.create_task_group() as tg:
        engine.hook_base = "https://mediamux.example/hooks"
        engine.task_group = tg
        with anyio.fail_after(30):
            started = await engine.run("muapi", "generate", Args(n=1), wait_s=0)
            clock.advance(JOB_S)
            assert await engine.wake(*token_of(driver, "r1"))
            await eventually(lambda: engine.journal.get(started.job_id).finalized, clock=clock)  # type: ignore[union-attr]
        tg.cancel_scope.cancel()

    assert len(driver.polls["r1"]) == 1


async def test_a_webhook_whose_job_is_still_settling_is_followed_by_quick_polls(tmp_path: Path) -> None:
    clock = FakeClock()
    driver = Timed(clock, hooks=True, settling_s=1.2)  # as Mixpeek: COMPLETED, documents a moment later
    async with engine_on(tmp_path / "j.sqlite3", clock, driver) as engine:
        engine.hook_base = "https://mediamux.example/hooks"
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: engine.run("muapi", "generate", Args(n=1), wait_s=120))
            await eventually(lambda: "r1" in driver.webhooks, clock=clock)
            await eventually(lambda: driver.age("r1") >= JOB_S, clock=clock)
            assert await engine.wake(*token_of(driver, "r1"))

    ages = driver.polls["r1"]
    assert ages[-1] - (JOB_S + 1.2) <= 1.0  # seen settled within a second, not at the next fallback poll
    assert len(ages) <= 6


async def test_a_replayed_webhook_wakes_its_job_once_a_second_at_most(tmp_path: Path) -> None:
    clock = FakeClock()
    driver = Timed(clock, hooks=True, seconds=60.0)
    async with engine_on(tmp_path / "j.sqlite3", clock, driver) as engine, anyio.create_task_group() as tg:
        engine.hook_base = "https://mediamux.example/hooks"
        engine.task_group = tg
        with anyio.fail_after(30):
            await engine.run("muapi", "generate", Args(n=1), wait_s=0)
            clock.advance(5)
            woken = [await engine.wake(*token_of(driver, "r1")) for _ in range(50)]  # a leaked URL, replayed
            # Real-time looks: fake time must not run on while the background poll reads the journal.
            await eventually(lambda: len(driver.polls["r1"]) >= 1)
            await clock.sleep(0.5)
        tg.cancel_scope.cancel()

    assert all(woken)  # the token is right; the replays are just not acted on
    assert driver.polls["r1"][0] == pytest.approx(5.0, abs=0.05)
    assert len([age for age in driver.polls["r1"] if age < 5.5]) == 1


class Unreachable(Timed):
    """Every poll fails the way a provider that is down does (after the transport's own retries)."""

    async def poll(self, provider_job_id: str, args: Args, options: dict[str, Any]) -> Outcome:
        self.polls[provider_job_id].append(self.age(provider_job_id))
        raise ServerError("Stub: 503", provider="muapi", operation="poll", status=503)


async def test_failing_polls_back_off_and_the_wait_still_ends_on_time(tmp_path: Path) -> None:
    clock = FakeClock()
    driver = Unreachable(clock)
    async with engine_on(tmp_path / "j.sqlite3", clock, driver) as engine:
        with anyio.fail_after(30):
            start = clock.monotonic()
            view = await engine.run("muapi", "generate", Args(n=1), wait_s=45)
            took = clock.monotonic() - start

    ages = driver.polls["r1"]
    assert view.status == "running" and "Last poll failed" in (view.note or "")
    assert 44 <= took <= 46
    assert len(ages) <= baseline_polls(45) + 1  # backing off, plus the last look before answering
    assert all(b - a >= 0.9 for a, b in itertools.pairwise(ages))
