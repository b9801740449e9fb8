"""The job journal and cost ledger: the promises the engine builds on, checked on a real SQLite file.

* ``claim`` inserts a job unless an identical one inside the window can stand for it — atomically,
  across two connections to one file (two server processes);
* a job that is running, finished well, or whose submission outcome is unknown is a duplicate; a
  refused or failed one is not;
* ``save`` never lets an unfinished copy overwrite a finished job;
* the ledger holds one row per job, so re-polls replace a charge instead of adding it, refunds are
  not spent, and unreported amounts are counted as unpriced rather than as zero.
"""

from __future__ import annotations

import random
import re
import shutil
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from mediamux.jobs.journal import Journal
from mediamux.jobs.models import JobError, JobRecord
from mediamux.providers.cost import Cost

T0 = 1_767_225_600.0  # 2026-01-01, wall-clock seconds


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "state" / "mediamux.sqlite3"


@pytest.fixture
def journal(db: Path) -> Iterator[Journal]:
    j = Journal(db)
    yield j
    j.close()


@pytest.fixture
def job() -> Callable[..., JobRecord]:
    counter = iter(range(1, 10_000))

    def make(**fields: Any) -> JobRecord:
        n = next(counter)
        values: dict[str, Any] = {
            "job_id": f"job_{n:04d}",
            "provider": "muapi",
            "operation": "generate",
            "dedup_key": "same-request",
            "args": {"endpoint": "flux-schnell-image", "params": {"prompt": "a heron"}},
            "status": "queued",
            "session_id": "session-a",
            "submitted_ts": T0 + n,
            "updated_ts": T0 + n,
        }
        values.update(fields)
        return JobRecord(**values)

    return make


# -- claim and the duplicate window ------------------------------------------------------------------


def test_a_claim_inserts_a_new_job_and_it_reads_back_field_for_field(
    journal: Journal, job: Callable[..., JobRecord]
) -> None:
    record = job(
        options={"save_outputs": True},
        provider_job_id="req-1",
        status="completed",
        submit_state="accepted",
        result={"outputs": ["https://cdn/x.png"]},
        error=JobError(error_class="provider_error", message="was flaky once"),
        cost=Cost(usd=0.003, credits=1, source="body"),
        completed_ts=T0 + 9,
        polls=3,
    )

    claimed, created = journal.claim(record, window_start_ts=None)

    assert created and claimed == record
    assert journal.get(record.job_id) == record


def test_an_identical_request_inside_the_window_gets_the_existing_job(
    journal: Journal, job: Callable[..., JobRecord]
) -> None:
    first, _ = journal.claim(job(), window_start_ts=T0 - 600)

    again, created = journal.claim(job(), window_start_ts=T0 - 600)

    assert not created and again.job_id == first.job_id
    assert [r.job_id for r in journal.list()] == [first.job_id]


def test_an_identical_request_after_the_window_is_a_new_job(
    journal: Journal, job: Callable[..., JobRecord]
) -> None:
    first, _ = journal.claim(job(), window_start_ts=None)

    later, created = journal.claim(job(), window_start_ts=first.submitted_ts + 1)

    assert created and later.job_id != first.job_id


def test_a_different_request_is_never_a_duplicate(journal: Journal, job: Callable[..., JobRecord]) -> None:
    journal.claim(job(), window_start_ts=None)

    _, created = journal.claim(job(dedup_key="another-request"), window_start_ts=T0 - 600)

    assert created


@pytest.mark.parametrize(
    ("status", "submit_state", "duplicate"),
    [
        ("queued", "pending", True),
        ("running", "accepted", True),
        ("completed", "accepted", True),
        ("failed", "uncertain", True),  # may have been charged: never a blind second payment
        ("cancelled", "uncertain", True),
        ("failed", "rejected", False),  # refused upstream: a retry must go through
        ("failed", "accepted", False),  # the provider ran it and it failed
        ("cancelled", "accepted", False),
        ("expired", "accepted", False),
    ],
)
def test_which_earlier_jobs_stand_for_an_identical_request(
    journal: Journal, job: Callable[..., JobRecord], status: str, submit_state: str, duplicate: bool
) -> None:
    earlier = job(status=status, submit_state=submit_state)
    journal.claim(earlier, window_start_ts=None)

    found = journal.find_duplicate("same-request", T0 - 600)
    _, created = journal.claim(job(), window_start_ts=T0 - 600)

    assert (found is not None and found.job_id == earlier.job_id) is duplicate
    assert created is not duplicate


def test_the_newest_qualifying_job_is_the_duplicate(journal: Journal, job: Callable[..., JobRecord]) -> None:
    journal.claim(job(status="completed", submit_state="accepted"), window_start_ts=None)
    newer = job(status="running", submit_state="accepted")
    journal.claim(newer, window_start_ts=None)

    found = journal.find_duplicate("same-request", T0 - 600)

    assert found is not None and found.job_id == newer.job_id


def test_two_processes_claiming_the_same_request_create_exactly_one_job(
    db: Path, job: Callable[..., JobRecord]
) -> None:
    one, two = Journal(db), Journal(db)
    try:
        a, created_a = one.claim(job(), window_start_ts=T0 - 600)
        b, created_b = two.claim(job(), window_start_ts=T0 - 600)
        listed_by_other = one.list()
    finally:
        one.close()
        two.close()

    assert (created_a, created_b) == (True, False)
    assert b.job_id == a.job_id and [r.job_id for r in listed_by_other] == [a.job_id]


# -- save ------------------------------------------------------------------------------------------


def test_save_records_progress_of_an_unfinished_job(journal: Journal, job: Callable[..., JobRecord]) -> None:
    record, _ = journal.claim(job(), window_start_ts=None)

    journal.save(record.model_copy(update={"status": "running", "provider_job_id": "req-9", "polls": 2}))

    saved = journal.get(record.job_id)
    assert saved is not None and (saved.status, saved.provider_job_id, saved.polls) == ("running", "req-9", 2)


@pytest.mark.parametrize("finished", ["completed", "failed", "cancelled", "expired"])
def test_save_never_lets_an_unfinished_copy_overwrite_a_finished_job(
    journal: Journal, job: Callable[..., JobRecord], finished: str
) -> None:
    record, _ = journal.claim(job(status="running", submit_state="accepted"), window_start_ts=None)
    stale = record.model_copy()  # a waiter that read the row before it finished
    journal.save(record.model_copy(update={"status": finished, "result": {"outputs": ["x"]}}))

    journal.save(stale.model_copy(update={"status": "running", "polls": 99}))

    saved = journal.get(record.job_id)
    assert saved is not None and saved.status == finished and saved.polls == 0


def test_a_finished_job_can_still_be_updated_by_a_finished_copy(
    journal: Journal, job: Callable[..., JobRecord]
) -> None:
    record, _ = journal.claim(job(status="completed", submit_state="accepted"), window_start_ts=None)

    journal.save(record.model_copy(update={"options": {"_finalized": True}, "result": {"saved": ["a.png"]}}))

    saved = journal.get(record.job_id)
    assert (
        saved is not None and saved.options == {"_finalized": True} and saved.result == {"saved": ["a.png"]}
    )


# -- reading ---------------------------------------------------------------------------------------


def test_list_filters_by_status_and_provider_newest_first_within_the_limit(
    journal: Journal, job: Callable[..., JobRecord]
) -> None:
    rows = [
        job(dedup_key="a", status="running"),
        job(dedup_key="b", status="completed"),
        job(dedup_key="c", status="queued", provider="muzaic"),
        job(dedup_key="d", status="failed", provider="muzaic"),
    ]
    for record in rows:
        journal.claim(record, window_start_ts=None)

    def ids(**filters: Any) -> list[str]:
        return [r.job_id for r in journal.list(**filters)]

    assert ids() == [r.job_id for r in reversed(rows)]
    assert ids(status="active") == [rows[2].job_id, rows[0].job_id]
    assert ids(status="completed") == [rows[1].job_id]
    assert ids(provider="muzaic") == [rows[3].job_id, rows[2].job_id]
    assert ids(status="active", provider="muapi") == [rows[0].job_id]
    assert ids(limit=2) == [rows[3].job_id, rows[2].job_id]


def test_a_job_is_found_by_the_providers_id_and_unknown_ids_are_none(
    journal: Journal, job: Callable[..., JobRecord]
) -> None:
    record, _ = journal.claim(job(provider_job_id="req-42"), window_start_ts=None)

    found = journal.find_by_provider_id("muapi", "req-42")

    assert found is not None and found.job_id == record.job_id
    assert journal.find_by_provider_id("museai", "req-42") is None
    assert journal.get("job_nope") is None


def test_the_journal_outlives_the_process_that_wrote_it(db: Path, job: Callable[..., JobRecord]) -> None:
    first = Journal(db)
    record, _ = first.claim(job(status="running", submit_state="accepted"), window_start_ts=None)
    first.record_cost(
        record.job_id, provider="muapi", operation="generate", session_id="s", cost=Cost(usd=1.4), ts=T0
    )
    first.close()

    second = Journal(db)
    try:
        assert second.get(record.job_id) == record
        assert second.spent_usd() == pytest.approx(1.4)
    finally:
        second.close()


# -- the ledger --------------------------------------------------------------------------------------


def charge(
    journal: Journal,
    entry: str,
    cost: Cost,
    *,
    provider: str = "muapi",
    session: str = "s1",
    principal: str = "local",
) -> None:
    journal.record_cost(
        entry,
        provider=provider,
        operation="generate",
        session_id=session,
        cost=cost,
        ts=T0,
        principal=principal,
    )


def test_a_re_polled_job_replaces_its_charge_instead_of_adding_it(journal: Journal) -> None:
    charge(journal, "job_1", Cost(usd=1.4, credits=333))
    charge(journal, "job_1", Cost(usd=1.4, credits=333))
    charge(journal, "job_1", Cost(usd=1.5, credits=350))  # the final figure

    totals = journal.totals()

    assert totals["usd"] == pytest.approx(1.5)
    assert totals["providers"]["muapi"] == {
        "usd": pytest.approx(1.5),
        "credits": 350,
        "tokens": None,
        "entries": 1,
        "entries_without_usd": 0,
    }


def test_totals_are_per_provider_and_per_session_and_refunds_are_not_spent(journal: Journal) -> None:
    charge(journal, "job_1", Cost(usd=0.003, credits=1))
    charge(journal, "job_2", Cost(usd=1.4, credits=333, refunded=True))
    charge(journal, "job_3", Cost(tokens=12), provider="muzaic")
    charge(journal, "job_4", Cost(usd=0.5, tokens=30), provider="muzaic", session="s2")

    everything = journal.totals()
    session_one = journal.totals("s1")

    assert everything["usd"] == pytest.approx(0.503)
    muapi, muzaic = everything["providers"]["muapi"], everything["providers"]["muzaic"]
    assert (muapi["usd"], muapi["credits"], muapi["entries"]) == (pytest.approx(0.003), 1, 2)
    assert (muzaic["usd"], muzaic["tokens"], muzaic["entries"], muzaic["entries_without_usd"]) == (
        0.5,
        42,
        2,
        1,
    )
    assert session_one["usd"] == pytest.approx(0.003) and session_one["providers"]["muzaic"]["tokens"] == 12
    assert journal.spent_usd("s2") == pytest.approx(0.5) and journal.spent_usd("nobody") == 0.0


def test_a_refund_reported_later_takes_the_charge_out_of_the_spend(journal: Journal) -> None:
    charge(journal, "job_1", Cost(usd=1.4))
    assert journal.spent_usd() == pytest.approx(1.4)

    charge(journal, "job_1", Cost(usd=1.4, refunded=True))

    assert journal.spent_usd() == 0.0 and journal.totals()["providers"]["muapi"]["entries"] == 1


def test_a_cost_with_no_amount_is_not_a_ledger_entry(journal: Journal) -> None:
    charge(journal, "job_1", Cost(balance_usd=18.72, source="headers"))
    charge(journal, "job_2", Cost())

    assert journal.totals() == {"usd": 0.0, "providers": {}}


# -- how long jobs of a kind take (what the poll plan learns from) ------------------------------------


def test_recent_durations_are_per_kind_newest_first_and_only_of_jobs_seen_finishing(
    journal: Journal, job: Callable[..., JobRecord]
) -> None:
    def finished(
        price_key: str | None, took: float, *, status: str = "completed", polls: int = 3, **extra: Any
    ) -> None:
        record = job(price_key=price_key, status=status, polls=polls, submit_state="accepted", **extra)
        record.completed_ts = record.submitted_ts + took
        journal.save(record)

    finished("flux-schnell-image", 9.0)
    finished("flux-schnell-image", 12.0, options={"_accepted_ts": T0, "_finished_s": 10.25})
    finished("flux-schnell-image", 4.0, polls=0)  # answered finished at submission: says nothing
    finished("flux-schnell-image", 2.0, status="failed")  # failed early: not how long the work takes
    finished("kling-v2-video", 300.0)
    finished(None, 30.0)
    journal.save(job(price_key="flux-schnell-image", status="running", submit_state="accepted"))

    assert journal.recent_durations("muapi", "generate", "flux-schnell-image") == [10.25, 9.0]
    assert journal.recent_durations("muapi", "generate", "flux-schnell-image", limit=1) == [10.25]
    assert journal.recent_durations("muapi", "generate", "kling-v2-video") == [300.0]
    assert journal.recent_durations("muapi", "generate", None) == [30.0]
    assert journal.recent_durations("mixpeek", "index_url", None) == []


def test_recent_durations_read_a_journal_another_process_wrote(
    db: Path, job: Callable[..., JobRecord]
) -> None:
    first = Journal(db)
    record = job(
        price_key="m", status="completed", polls=2, submit_state="accepted", options={"_finished_s": 7.5}
    )
    record.completed_ts = record.submitted_ts + 8
    first.save(record)
    first.close()

    again = Journal(db)
    try:
        assert again.recent_durations("muapi", "generate", "m") == [7.5]
    finally:
        again.close()


# -- running sums, and the plans of the hot queries -----------------------------------------------------


def _summed(db: Path) -> dict[str, float]:
    """Spend and reservations recomputed from the rows themselves."""
    raw = sqlite3.connect(db)
    try:
        charged = "COALESCE(SUM(CASE WHEN refunded = 1 THEN 0 ELSE usd END), 0)"
        sums = {"spent": raw.execute(f"SELECT {charged} FROM ledger").fetchone()[0]}
        sums["committed"] = (
            sums["spent"] + raw.execute("SELECT COALESCE(SUM(reserved_usd), 0) FROM jobs").fetchone()[0]
        )
        for session, usd in raw.execute(f"SELECT session_id, {charged} FROM ledger GROUP BY session_id"):
            sums[session] = usd
        for who, usd in raw.execute(f"SELECT principal, {charged} FROM ledger GROUP BY principal"):
            sums[f"spent by {who}"] = usd
            sums[f"committed by {who}"] = usd
        for who, usd in raw.execute(
            "SELECT principal, COALESCE(SUM(reserved_usd), 0) FROM jobs GROUP BY principal"
        ):
            sums[f"committed by {who}"] = sums.get(f"committed by {who}", 0.0) + usd
        return sums
    finally:
        raw.close()


def _kept(journal: Journal, sessions: list[str], principals: list[str]) -> dict[str, float]:
    kept = {"spent": journal.spent_usd(), "committed": journal.committed_usd()}
    kept.update({s: journal.spent_usd(s) for s in sessions})
    for who in principals:
        kept[f"spent by {who}"] = journal.spent_usd(principal=who)
        kept[f"committed by {who}"] = journal.committed_usd(who)
    return kept


def test_running_sums_agree_with_the_rows_after_any_sequence_of_writes(
    db: Path, journal: Journal, job: Callable[..., JobRecord]
) -> None:
    rng = random.Random(7)
    sessions, principals = ["s1", "s2", "s3"], ["local", "ann", "bob"]
    jobs: list[JobRecord] = []
    for _ in range(500):
        move = rng.random()
        if move < 0.3 or not jobs:
            record, _ = journal.claim(
                job(
                    dedup_key=f"k{len(jobs)}",
                    session_id=rng.choice(sessions),
                    principal=rng.choice(principals),
                    reserved_usd=rng.choice([None, 0.25, 1.5]),
                ),
                window_start_ts=None,
                audit={"principal": "ann", "action": "submit", "ts": T0} if rng.random() < 0.5 else None,
            )
            jobs.append(record)
            continue
        i = rng.randrange(len(jobs))
        if move < 0.6:  # a poll: maybe finished, maybe charged, maybe refunded; the reservation may end
            cost = rng.choice([Cost(), Cost(usd=0.003), Cost(usd=1.4), Cost(usd=1.4, refunded=True)])
            update = {
                "status": rng.choice(["running", "completed", "failed"]),
                "submit_state": rng.choice(["accepted", "rejected"]),
                "cost": cost,
                "reserved_usd": rng.choice([jobs[i].reserved_usd, None]),
            }
            jobs[i] = journal.save(jobs[i].model_copy(update=update), charge=True)
        elif move < 0.8:
            journal.save(jobs[i].model_copy(update={"reserved_usd": rng.choice([None, 0.5])}))
            jobs[i] = journal.get(jobs[i].job_id) or jobs[i]
        else:  # a charge recorded alone, for a job or for a request that is no job
            entry = jobs[i].job_id if rng.random() < 0.5 else f"req_{rng.randrange(20)}"
            charge(journal, entry, Cost(usd=rng.choice([0.01, 2.0]), refunded=rng.random() < 0.2),
                   session=rng.choice(sessions), principal=rng.choice(principals))  # fmt: skip

    kept, summed = _kept(journal, sessions, principals), _summed(db)
    assert summed["spent"] > 1 and summed["committed"] > summed["spent"]  # the sequence did move money
    assert kept == {k: pytest.approx(summed.get(k, 0.0), abs=1e-9) for k in kept}


def test_a_journal_of_the_previous_schema_gets_its_sums_from_its_rows(
    db: Path, journal: Journal, job: Callable[..., JobRecord]
) -> None:
    journal.claim(job(dedup_key="a", reserved_usd=0.75, principal="ann"), window_start_ts=None)
    charge(journal, "job_x", Cost(usd=1.25), session="s1", principal="ann")
    charge(journal, "job_y", Cost(usd=0.5, refunded=True), session="s1")
    charge(journal, "job_z", Cost(usd=0.125), session="s2")
    journal.close()
    raw = sqlite3.connect(db)
    raw.executescript("DROP TABLE totals; UPDATE meta SET value = '5' WHERE key = 'schema_version';")
    raw.close()

    again = Journal(db)
    try:
        assert (again.spent_usd(), again.spent_usd("s1"), again.spent_usd("s2")) == (1.375, 1.25, 0.125)
        assert again.committed_usd() == pytest.approx(1.375 + 0.75)
        assert again.committed_usd("ann") == pytest.approx(1.25 + 0.75)
        assert again.spent_usd(principal="local") == 0.125
    finally:
        again.close()


def test_rebuilding_the_sums_puts_back_what_rows_written_around_the_journal_say(
    db: Path, journal: Journal, job: Callable[..., JobRecord]
) -> None:
    charge(journal, "job_x", Cost(usd=1.0))
    raw = sqlite3.connect(db)
    raw.execute(
        "INSERT INTO ledger (entry_id, provider, operation, session_id, usd, recorded_ts, principal) "
        "VALUES ('job_bulk', 'muapi', 'generate', 's1', 2.5, 0, 'local')"
    )
    raw.commit()
    raw.close()
    assert journal.spent_usd() == 1.0  # the sums know only what went through the journal

    journal.rebuild_totals()

    assert journal.spent_usd() == 3.5 and journal.spent_usd("s1") == 3.5


def test_save_with_its_charge_returns_what_the_journal_holds(
    journal: Journal, job: Callable[..., JobRecord]
) -> None:
    record, _ = journal.claim(job(status="running", submit_state="accepted"), window_start_ts=None)
    done = record.model_copy(update={"status": "completed", "cost": Cost(usd=0.5), "polls": 4})
    assert journal.save(done, charge=True) == done
    assert journal.get(record.job_id) == done and journal.spent_usd("session-a") == 0.5

    stale = record.model_copy(update={"polls": 9, "cost": Cost(usd=0.75)})  # read before it finished
    assert journal.save(stale, charge=True) == done  # what the journal holds, not what was asked
    assert journal.get(record.job_id) == done and journal.spent_usd("session-a") == 0.5


def test_a_claim_writes_its_audit_entry_only_for_a_new_job(
    journal: Journal, job: Callable[..., JobRecord]
) -> None:
    entry = {
        "principal": "local",
        "action": "submit",
        "ts": T0,
        "tool": "muapi.generate",
        "estimate_usd": 0.1,
    }
    first, _ = journal.claim(job(), window_start_ts=T0 - 600, audit={**entry, "job_id": "job_0001"})
    journal.claim(job(), window_start_ts=T0 - 600, audit={**entry, "job_id": "job_0002"})

    trail = journal.audit_trail()
    assert [(e["action"], e["job_id"]) for e in trail] == [("submit", first.job_id)]


def test_every_hot_query_is_answered_from_an_index(journal: Journal, job: Callable[..., JobRecord]) -> None:
    """No full scan of jobs or ledger, and no sort whose size grows with history (the active-job list
    sorts the live jobs only); checked on the statements the journal really runs."""
    for n in range(300):
        record = job(dedup_key=f"k{n}", status="completed", submit_state="accepted", provider_job_id=f"r{n}",
                     price_key="flux", cost=Cost(usd=0.01), polls=2, completed_ts=T0 + n + 5)  # fmt: skip
        journal.save(record, charge=True)
    statements: list[str] = []
    for connection in (journal._db, journal._reader):
        connection.set_trace_callback(statements.append)
    new = job(dedup_key="new", reserved_usd=0.2, price_key="flux")
    journal.claim(new, window_start_ts=T0 - 600, budget_usd=100.0, principal_budget_usd=50.0)
    journal.find_duplicate("new", T0 - 600)
    journal.save(new.model_copy(update={"submit_state": "accepted", "cost": Cost(usd=0.2)}), charge=True)
    journal.get(new.job_id)
    journal.find_by_provider_id("muapi", "r7")
    # As the tools list: each caller's own jobs (all of them, the live ones, by status, by provider);
    # and the operator's view of everybody's (the CLI).
    for filters in (
        {"principal": "local"},
        {"principal": "local", "status": "active"},
        {"principal": "local", "status": "completed"},
        {"principal": "local", "provider": "muapi"},
        {},
        {"status": "active"},
    ):
        journal.list(limit=20, **filters)  # type: ignore[arg-type]
    journal.spent_usd("session-a")
    journal.spent_usd(principal="local")
    journal.committed_usd()
    journal.committed_usd("local")
    journal.price_history("muapi", "generate", "flux")
    journal.recent_durations("muapi", "generate", "flux")
    journal.beat("me", host="h", pid=1, ts=T0)
    journal.owner("me")
    for connection in (journal._db, journal._reader):
        connection.set_trace_callback(None)

    queries = {s for s in statements if s.lstrip().split()[0].upper() in ("SELECT", "INSERT", "UPDATE")}
    assert len(queries) > 15
    # The duplicate lookup goes straight to its request's rows, not through every job in the window.
    lookup = next(s for s in queries if "WHERE dedup_key" in s)
    plan = [row[3] for row in journal._reader.execute(f"EXPLAIN QUERY PLAN {lookup}")]
    assert plan == ["SEARCH jobs USING INDEX jobs_dedup (dedup_key=? AND principal=? AND submitted_ts>?)"]
    for sql in queries:
        plan = [row[3] for row in journal._reader.execute(f"EXPLAIN QUERY PLAN {sql}")]
        full_scans = [p for p in plan if re.fullmatch(r"SCAN (TABLE )?(jobs|ledger|j|l)( AS \w+)?", p)]
        assert not full_scans, (sql, plan)
        # Sorting ties of one submission time by job id ("RIGHT PART") stops at the limit, as the index does.
        sorts = [p for p in plan if "TEMP B-TREE" in p and "RIGHT PART" not in p]
        if "status IN" not in sql:
            assert not sorts, (sql, plan)


def test_a_migrated_journal_has_the_indexes_and_tables_of_a_new_one(tmp_path: Path) -> None:
    old, new = tmp_path / "old.sqlite3", tmp_path / "new.sqlite3"
    shutil.copy(Path(__file__).parents[2] / "fixtures" / "journal-v1.sqlite3", old)
    Journal(old).close()
    Journal(new).close()

    def schema(path: Path) -> set[tuple[str, str, str]]:
        db = sqlite3.connect(path)
        try:
            rows = db.execute("SELECT type, name, sql FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'")
            # ALTER TABLE leaves its own spacing in the stored statement; the columns are what count.
            return {(kind, name, re.sub(r"\s+", "", sql or "")) for kind, name, sql in rows}
        finally:
            db.close()

    assert schema(old) == schema(new)
