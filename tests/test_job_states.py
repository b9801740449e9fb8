"""The job state machine: the table is the whole story, the docs are generated from it, and the
engine writes state only through it."""

from __future__ import annotations

import re
import shutil
import sqlite3
from collections import deque
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from mediamux.jobs import states
from mediamux.jobs.engine import DriverBase, Outcome
from mediamux.jobs.journal import SCHEMA_VERSION, Journal, JournalError
from mediamux.jobs.models import JobRecord
from mediamux.jobs.states import Change, Event, IllegalTransition, State, advance, state_of
from mediamux.providers.cost import Cost

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).parent / "fixtures"


def record(**fields: Any) -> JobRecord:
    base: dict[str, Any] = {
        "job_id": "job_test",
        "provider": "muapi",
        "operation": "generate",
        "dedup_key": "k",
        "args": {},
        "status": "queued",
        "session_id": "s",
        "submitted_ts": 100.0,
        "updated_ts": 100.0,
    }
    base.update(fields)
    return JobRecord(**base)


def test_the_state_diagram_in_docs_is_generated_from_the_transition_table() -> None:
    committed = (ROOT / "docs" / "job-states.md").read_text(encoding="utf-8")

    assert committed == states.document(), (
        "docs/job-states.md is stale: run python -m mediamux.jobs.states > docs/job-states.md"
    )


def test_every_state_is_reachable_from_submitting_and_every_terminal_state_is_final() -> None:
    seen, queue = {State.SUBMITTING}, deque([State.SUBMITTING])
    while queue:
        for targets in states.TRANSITIONS[queue.popleft()].values():
            for target in targets - seen:
                seen.add(target)
                queue.append(target)

    assert seen == set(State)
    for terminal in states.TERMINAL - {State.COMPLETED}:
        assert states.TRANSITIONS[terminal] == {}, terminal


@pytest.mark.parametrize(
    ("event", "status", "submit_state"),
    [
        (Event.REJECTED, "failed", "rejected"),
        (Event.WITHDRAWN, "cancelled", "rejected"),
        (Event.LOST, "failed", "uncertain"),
        (Event.INTERRUPTED, "cancelled", "uncertain"),
        (Event.ORPHANED, "failed", "uncertain"),
    ],
)
def test_a_submission_that_ends_without_an_answer_says_whether_it_may_have_been_charged(
    event: Event, status: str, submit_state: str
) -> None:
    after = advance(record(), event, now=200.0)

    assert (after.status, after.submit_state) == (status, submit_state)
    assert after.completed_ts == 200.0 and after.terminal


def test_an_accepted_submission_records_the_provider_id_cost_and_status() -> None:
    after = advance(
        record(),
        Event.ACCEPTED,
        Change(status="queued", provider_job_id="req-1", provider_status="IN_QUEUE", cost=Cost(usd=0.2)),
        now=101.0,
    )

    assert state_of(after) is State.QUEUED
    assert (after.submit_state, after.provider_job_id, after.cost.usd) == ("accepted", "req-1", 0.2)
    assert after.completed_ts is None and after.polls == 0


def test_an_unknown_provider_word_keeps_the_job_running_and_is_kept_by_name() -> None:
    queued = advance(record(), Event.ACCEPTED, Change(status="queued", provider_job_id="r"), now=101.0)

    after = advance(
        queued, Event.POLLED, Change(status="warming_up", provider_status="warming_up"), now=102.0
    )

    assert state_of(after) is State.RUNNING
    assert after.provider_status == "warming_up" and after.polls == 1


def test_a_completed_job_is_saving_until_its_outputs_are_finalized() -> None:
    running = advance(record(), Event.ACCEPTED, Change(status="running", provider_job_id="r"), now=101.0)
    done = advance(running, Event.POLLED, Change(status="completed", result={"outputs": ["u"]}), now=102.0)

    assert state_of(done) is State.SAVING and done.status == "completed" and not done.finalized
    saved = advance(done, Event.FINALIZED, Change(result={"outputs": ["u"], "saved": []}), now=103.0)
    assert state_of(saved) is State.COMPLETED and saved.finalized
    again = advance(saved, Event.AMENDED, Change(options={"save_outputs": True}), now=104.0)
    assert state_of(again) is State.SAVING and again.options == {"save_outputs": True}


@pytest.mark.parametrize("status", ["failed", "cancelled", "expired"])
def test_a_finished_job_cannot_be_polled_back_to_life(status: str) -> None:
    finished = record(status=status, submit_state="accepted", completed_ts=150.0)

    with pytest.raises(IllegalTransition):
        advance(finished, Event.POLLED, Change(status="running"), now=200.0)


def test_a_submission_cannot_be_finalized_or_polled_before_it_is_accepted() -> None:
    for event in (Event.POLLED, Event.FINALIZED, Event.VANISHED):
        with pytest.raises(IllegalTransition):
            advance(record(), event, Change(status="completed"), now=101.0)


def test_the_engine_writes_job_state_only_through_the_transition_function() -> None:
    source = (ROOT / "src" / "mediamux" / "jobs" / "engine.py").read_text(encoding="utf-8")

    assert source.count("self.journal.save(") == 1  # inside _transition
    assert not re.search(r"\.(status|submit_state|finalized)\s*=[^=]", source)


# -- journal migration ---------------------------------------------------------------------------


def test_a_journal_written_by_the_previous_release_is_migrated_with_finalized_as_a_column(
    tmp_path: Path,
) -> None:
    path = tmp_path / "mediamux.sqlite3"
    shutil.copy(FIXTURES / "journal-v1.sqlite3", path)

    journal = Journal(path)
    try:
        saved, unsaved = journal.get("job_saved"), journal.get("job_unsaved")
        running, lost = journal.get("job_running"), journal.get("job_lost")
        assert saved is not None and unsaved is not None and running is not None and lost is not None
        assert saved.finalized and saved.options == {"save_outputs": True}
        assert not unsaved.finalized and state_of(unsaved) is State.SAVING
        assert state_of(running) is State.RUNNING
        assert lost.submit_state == "uncertain" and state_of(lost) is State.FAILED
        assert journal.spent_usd() == pytest.approx(0.03)
    finally:
        journal.close()
    version = sqlite3.connect(path).execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    assert version == (str(SCHEMA_VERSION),)
    # Opening again is a no-op, not a second migration.
    Journal(path).close()


def test_a_journal_from_a_newer_release_is_refused_with_a_message_that_says_what_to_do(
    tmp_path: Path,
) -> None:
    path = tmp_path / "mediamux.sqlite3"
    Journal(path).close()
    db = sqlite3.connect(path)
    db.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    db.commit()
    db.close()

    with pytest.raises(JournalError, match=r"newer mediamux \(schema 99.*upgrade mediamux"):
        Journal(path)


# -- the engine on the state machine -------------------------------------------------------------


class CountingArgs(BaseModel):
    p: int


class CountingDriver(DriverBase):
    """Accepted at once, done on the third poll; or, in background mode, one synchronous call."""

    provider = "muapi"
    operation = "generate"
    title = "Stub"
    args_model = CountingArgs

    def __init__(self, mode: str = "poll") -> None:
        self.mode = mode
        self.polls = 0
        self.finalized = 0

    async def prepare(self, args: CountingArgs, options: dict[str, Any], progress: Any) -> CountingArgs:
        return args

    async def submit(self, args: CountingArgs, options: dict[str, Any], progress: Any) -> Any:
        if self.mode == "background":
            return Outcome(status="completed", provider_job_id="h1", result={"n": 1}, cost=Cost(tokens=3))
        return Outcome(status="queued", provider_job_id="r1", cost=Cost(usd=0.5))

    async def poll(self, provider_job_id: str, args: CountingArgs, options: dict[str, Any]) -> Any:
        self.polls += 1
        return Outcome(status="completed" if self.polls >= 3 else "running", result={"n": self.polls})

    async def finalize(self, outcome: Any, args: CountingArgs, options: dict[str, Any], progress: Any) -> Any:
        self.finalized += 1
        return outcome


@pytest.mark.parametrize("mode", ["poll", "background"])
async def test_per_job_coordination_is_dropped_when_the_job_ends(tmp_path: Path, mode: str) -> None:
    import anyio

    from mediamux.clock import FakeClock
    from mediamux.jobs.engine import JobEngine

    journal = Journal(tmp_path / "j.sqlite3")
    engine = JobEngine(journal, clock=FakeClock())
    driver = CountingDriver(mode)
    engine.register(driver)
    try:
        async with anyio.create_task_group() as tg:
            engine.task_group = tg
            with anyio.fail_after(10):
                view = await engine.run("muapi", "generate", CountingArgs(p=1), wait_s=60)
                again = await engine.wait(view.job_id, wait_s=60)
            tg.cancel_scope.cancel()
    finally:
        journal.close()

    assert view.status == "completed" and again.status == "completed"
    assert driver.finalized == 1  # saved once, not again by the second wait
    assert engine._slots == {}
    stored = Journal(tmp_path / "j.sqlite3")
    try:
        job = stored.get(view.job_id)
        assert job is not None and job.finalized and state_of(job) is State.COMPLETED
    finally:
        stored.close()
