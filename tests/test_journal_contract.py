"""The journal contract, run against both backends: SQLite (one host) and PostgreSQL (replicas).

Every test gets a ``store`` that opens journals on one shared database — two opens stand for two
server processes (or two replicas) — so the promises that matter across processes are checked where
they can break:

* an identical request inside the window is one job, however many callers race for it;
* a budget is never overcommitted: N concurrent claims reserve at most what fits;
* a reservation is released when the job fails, and replaced by the reported charge;
* a finished job is never overwritten by an unfinished copy;
* the ledger keeps one row per job, and refunds are not spent;
* the running sums the budgets read equal what the rows sum to, after any sequence of writes from
  either process and under concurrent ones; a save returns what the journal holds; a claim writes
  its audit entry only when it makes a job;
* the same holds through the engine: concurrent paid calls, and identical calls on two engines.

PostgreSQL only, at the end: the previous schema migrates with its sums, and every hot statement can
be answered from an index.
"""

from __future__ import annotations

import random
import sqlite3
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from pydantic import BaseModel

from mediamux.clock import SystemClock
from mediamux.jobs.backend import JournalBackend
from mediamux.jobs.engine import BudgetExceeded, DriverBase, JobEngine, Outcome
from mediamux.jobs.journal import Journal, OverBudget
from mediamux.jobs.models import JobRecord
from mediamux.jobs.states import Change, Event, advance
from mediamux.providers.cost import Cost

T0 = 1_767_225_600.0


class Store:
    """Opens journals on one database; each open is one 'process'. ``where`` is the database: a
    SQLite file, or a PostgreSQL URL."""

    def __init__(self, backend: str, open_one: Callable[[], JournalBackend], where: str) -> None:
        self.backend = backend
        self._open = open_one
        self.where = where
        self.opened: list[JournalBackend] = []

    def sql(self, statement: str) -> None:
        """Run one statement on the database itself, around the journal; ``{jobs}``, ``{ledger}`` and
        ``{totals}`` name the tables (PostgreSQL's carry a ``mediamux_`` prefix)."""
        prefix = "" if self.backend == "sqlite" else "mediamux_"
        statement = statement.format(**{t: prefix + t for t in ("jobs", "ledger", "totals")})
        if self.backend == "sqlite":
            raw = sqlite3.connect(self.where)
            try:
                raw.execute(statement)
                raw.commit()
            finally:
                raw.close()
        else:
            import psycopg

            with psycopg.connect(self.where, autocommit=True) as conn:
                conn.execute(statement.encode())

    def open(self) -> JournalBackend:
        journal = self._open()
        self.opened.append(journal)
        return journal

    def close(self) -> None:
        for journal in self.opened:
            journal.close()


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "sqlite":
        path = tmp_path / "state" / "mediamux.sqlite3"
        made = Store("sqlite", lambda: Journal(path), str(path))
    else:
        from mediamux.jobs.pg_journal import PostgresJournal

        url = request.getfixturevalue("pg_url")
        made = Store("postgres", lambda: PostgresJournal(url, lease_s=30.0, pool_size=12), url)
    yield made
    made.close()


@pytest.fixture
def job() -> Callable[..., JobRecord]:
    counter = iter(range(1, 100_000))

    def make(**fields: Any) -> JobRecord:
        n = next(counter)
        values: dict[str, Any] = {
            "job_id": f"job_{n:05d}_{threading.get_ident() % 1000}",
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


def race(n: int, fn: Callable[[int], Any]) -> list[Any]:
    """Run ``fn(i)`` for i in range(n) on n threads released at the same moment."""
    results: list[Any] = [None] * n
    gate = threading.Barrier(n)

    def one(i: int) -> None:
        gate.wait(timeout=30)
        try:
            results[i] = fn(i)
        except Exception as exc:
            results[i] = exc

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
        assert not t.is_alive(), "a claim did not finish"
    return results


# -- the journal itself ------------------------------------------------------------------------------


def test_a_claimed_job_reads_back_field_for_field(store: Store, job: Callable[..., JobRecord]) -> None:
    journal = store.open()
    record = job(
        options={"save_outputs": True},
        provider_job_id="req-1",
        reserved_usd=0.25,
        price_key="flux",
        owner="host:1:s",
    )
    claimed, created = journal.claim(record, window_start_ts=None)
    assert created and claimed == record
    assert journal.get(record.job_id) == record
    assert journal.find_by_provider_id("muapi", "req-1") == record
    assert journal.list(status="active") == [record]
    assert journal.list(status="completed") == []


def test_identical_requests_racing_on_two_processes_make_one_job(
    store: Store, job: Callable[..., JobRecord]
) -> None:
    journals = [store.open(), store.open()]
    records = [job() for _ in range(20)]

    results = race(20, lambda i: journals[i % 2].claim(records[i], window_start_ts=T0))

    assert not [r for r in results if isinstance(r, Exception)], results
    created = [claimed for claimed, new in results if new]
    assert len(created) == 1
    assert {claimed.job_id for claimed, _ in results} == {created[0].job_id}


def test_a_one_dollar_budget_takes_exactly_two_of_ten_concurrent_fifty_cent_claims(
    store: Store, job: Callable[..., JobRecord]
) -> None:
    journals = [store.open(), store.open()]
    records = [job(dedup_key=f"request-{i}", reserved_usd=0.5) for i in range(10)]

    results = race(10, lambda i: journals[i % 2].claim(records[i], window_start_ts=T0, budget_usd=1.0))

    accepted = [r for r in results if isinstance(r, tuple) and r[1]]
    refused = [r for r in results if isinstance(r, OverBudget)]
    assert len(accepted) == 2 and len(refused) == 8, results
    assert journals[0].committed_usd() == pytest.approx(1.0)


def test_identical_requests_of_two_principals_make_two_jobs_and_each_budget_is_its_own(
    store: Store, job: Callable[..., JobRecord]
) -> None:
    journals = [store.open(), store.open()]
    records = [job(principal=("alice", "bob")[i % 2], reserved_usd=0.5) for i in range(8)]

    results = race(
        8,
        lambda i: journals[i % 2].claim(
            records[i], window_start_ts=T0, budget_usd=10.0, principal_budget_usd=1.0
        ),
    )

    created = [claimed for claimed, new in (r for r in results if isinstance(r, tuple)) if new]
    assert sorted(c.principal for c in created) == ["alice", "bob"]
    # Identical prompts: one job per principal, each answering only its own principal's calls.
    for claimed, _ in (r for r in results if isinstance(r, tuple)):
        assert claimed.principal in ("alice", "bob")
    assert {r.principal for r in journals[0].list(limit=10, principal="alice")} == {"alice"}
    assert journals[1].committed_usd("alice") == journals[1].committed_usd("bob") == pytest.approx(0.5)
    # A third request of Alice's ($0.60) passes the server's $10 but not her own $1.
    over = job(dedup_key="another", principal="alice", reserved_usd=0.6)
    with pytest.raises(OverBudget) as raised:
        journals[0].claim(over, window_start_ts=T0, budget_usd=10.0, principal_budget_usd=1.0)
    assert raised.value.principal == "alice"
    journals[0].audit(
        principal="alice", action="submit", ts=T0, tool="muapi.generate", job_id=created[0].job_id
    )
    assert [e["principal"] for e in journals[1].audit_trail(principal="alice")] == ["alice"]
    assert journals[1].audit_trail(principal="bob") == []


def test_a_failed_job_releases_its_reservation_and_a_reported_charge_replaces_it(
    store: Store, job: Callable[..., JobRecord]
) -> None:
    journal = store.open()
    first, _ = journal.claim(job(dedup_key="a", reserved_usd=0.5), window_start_ts=None, budget_usd=1.0)
    second, _ = journal.claim(job(dedup_key="b", reserved_usd=0.5), window_start_ts=None, budget_usd=1.0)
    with pytest.raises(OverBudget):
        journal.claim(job(dedup_key="c", reserved_usd=0.5), window_start_ts=None, budget_usd=1.0)

    failed = advance(first, Event.REJECTED, Change(), now=T0 + 50)
    journal.save(failed)
    assert journal.committed_usd() == pytest.approx(0.5)

    accepted = advance(second, Event.ACCEPTED, Change(status="completed", cost=Cost(usd=0.2)), now=T0 + 51)
    journal.save(accepted, charge=True)  # the reservation goes and the charge comes in one write
    assert accepted.reserved_usd is None
    assert journal.committed_usd() == pytest.approx(0.2)
    assert journal.totals()["providers"]["muapi"]["usd"] == pytest.approx(0.2)
    _, created = journal.claim(job(dedup_key="c", reserved_usd=0.5), window_start_ts=None, budget_usd=1.0)
    assert created


def test_a_finished_job_is_never_overwritten_by_an_unfinished_copy(
    store: Store, job: Callable[..., JobRecord]
) -> None:
    writer, stale_reader = store.open(), store.open()
    record, _ = writer.claim(job(), window_start_ts=None)
    running = advance(record, Event.ACCEPTED, Change(status="running", provider_job_id="r1"), now=T0 + 10)
    writer.save(running)
    stale = stale_reader.get(record.job_id)
    assert stale is not None
    done = advance(running, Event.POLLED, Change(status="failed"), now=T0 + 20)
    writer.save(done)

    stale_reader.save(stale)  # a waiter elsewhere that read the row before it finished

    final = writer.get(record.job_id)
    assert final is not None and final.status == "failed"


def test_the_ledger_keeps_one_row_per_job_and_refunds_are_not_spent(store: Store) -> None:
    journal = store.open()
    for usd in (0.1, 0.3):  # a re-poll reports the final figure: replaced, not added
        journal.record_cost(
            "job_1", provider="muapi", operation="generate", session_id="s1", cost=Cost(usd=usd), ts=T0
        )
    journal.record_cost(
        "job_2",
        provider="muapi",
        operation="generate",
        session_id="s2",
        cost=Cost(usd=5.0, refunded=True),
        ts=T0,
    )
    journal.record_cost(
        "job_3", provider="muzaic", operation="generate", session_id="s1", cost=Cost(tokens=12), ts=T0 + 5
    )
    journal.record_cost(
        "job_4", provider="museai", operation="x", session_id="s1", cost=Cost(), ts=T0
    )  # nothing known
    journal.record_cost(
        "job_5", provider="museai", operation="x", session_id="s1", cost=Cost(), ts=T0, always=True
    )

    totals = journal.totals()
    assert totals["usd"] == pytest.approx(0.3)
    assert totals["providers"]["muapi"]["entries"] == 2
    assert totals["providers"]["muzaic"]["tokens"] == 12
    assert totals["providers"]["museai"]["entries_without_usd"] == 1
    assert journal.spent_usd("s1") == pytest.approx(0.3)
    assert journal.totals(since_ts=T0 + 1)["providers"].keys() == {"muzaic"}


def test_the_price_history_remembers_the_most_a_recent_job_of_a_kind_cost(
    store: Store, job: Callable[..., JobRecord]
) -> None:
    journal = store.open()
    for i, usd in enumerate((0.02, 0.05)):
        record, _ = journal.claim(job(dedup_key=f"k{i}", price_key="flux"), window_start_ts=None)
        journal.record_cost(
            record.job_id, provider="muapi", operation="generate", session_id="s", cost=Cost(usd=usd), ts=T0
        )
    assert journal.price_history("muapi", "generate", "flux") == pytest.approx(0.05)
    assert journal.price_history("muapi", "generate", "other") is None


def test_a_process_heartbeat_is_recorded_and_forgotten(store: Store) -> None:
    journal = store.open()
    journal.beat("host:42:s", host="host", pid=42, ts=T0)
    journal.beat("host:42:s", host="host", pid=42, ts=T0 + 30)
    assert store.open().owner("host:42:s") == ("host", 42, T0 + 30)
    journal.forget_owner("host:42:s")
    assert journal.owner("host:42:s") is None


# -- running sums ------------------------------------------------------------------------------------


def _from_rows(journal: JournalBackend, sessions: list[str], principals: list[str]) -> dict[str, float]:
    """Spend and reservations summed from the rows themselves: the ledger as ``totals`` adds it up, and
    the reservations of the jobs as listed."""
    jobs = journal.list(limit=100_000)

    def held(who: str | None = None) -> float:
        return sum(r.reserved_usd or 0.0 for r in jobs if who is None or r.principal == who)

    spent = journal.totals()["usd"]
    sums = {"spent": spent, "committed": spent + held()}
    sums.update({s: journal.totals(s)["usd"] for s in sessions})
    for who in principals:
        spent = journal.totals(principal=who)["usd"]
        sums[f"spent by {who}"] = spent
        sums[f"committed by {who}"] = spent + held(who)
    return sums


def _kept(journal: JournalBackend, sessions: list[str], principals: list[str]) -> dict[str, float]:
    """The same figures as the journal keeps them, read in O(1)."""
    kept = {"spent": journal.spent_usd(), "committed": journal.committed_usd()}
    kept.update({s: journal.spent_usd(s) for s in sessions})
    for who in principals:
        kept[f"spent by {who}"] = journal.spent_usd(principal=who)
        kept[f"committed by {who}"] = journal.committed_usd(who)
    return kept


def test_running_sums_equal_what_the_rows_sum_to_after_any_sequence_of_writes_from_two_processes(
    store: Store, job: Callable[..., JobRecord]
) -> None:
    journals = [store.open(), store.open()]
    rng = random.Random(11)
    sessions, principals = ["s1", "s2", "s3"], ["local", "ann", "bob"]
    jobs: list[JobRecord] = []
    for step in range(400):
        journal = rng.choice(journals)
        move = rng.random()
        if move < 0.3 or not jobs:
            record = job(
                dedup_key=f"k{step}",
                session_id=rng.choice(sessions),
                principal=rng.choice(principals),
                reserved_usd=rng.choice([None, 0.25, 1.5]),
            )
            try:
                claimed, _ = journal.claim(
                    record,
                    window_start_ts=None,
                    budget_usd=rng.choice([None, 60.0]),
                    principal_budget_usd=rng.choice([None, 25.0]),
                    audit={"principal": record.principal, "action": "submit", "ts": T0}
                    if rng.random() < 0.5
                    else None,
                )
            except OverBudget:
                continue
            jobs.append(claimed)
            continue
        i = rng.randrange(len(jobs))
        held = jobs[i]  # as the journal holds it: every write below keeps what save returns
        if move < 0.6:  # a poll: maybe finished, charged or refunded; the reservation may end
            decided = (
                held.submit_state if held.submit_state != "pending" else rng.choice(["accepted", "rejected"])
            )
            update = {
                "status": rng.choice(["running", "completed", "failed"]),
                "submit_state": decided,
                "cost": rng.choice([Cost(), Cost(usd=0.003), Cost(usd=1.4), Cost(usd=1.4, refunded=True)]),
                "reserved_usd": rng.choice([held.reserved_usd, None]),
            }
            jobs[i] = journal.save(held.model_copy(update=update), charge=True)
        elif move < 0.8:
            jobs[i] = journal.save(held.model_copy(update={"reserved_usd": rng.choice([None, 0.5])}))
        else:  # a charge recorded alone, for a job or for a request that is no job
            journal.record_cost(
                held.job_id if rng.random() < 0.5 else f"req_{rng.randrange(20)}",
                provider="muapi",
                operation="generate",
                session_id=rng.choice(sessions),
                cost=Cost(usd=rng.choice([0.01, 2.0]), refunded=rng.random() < 0.2),
                ts=T0,
                principal=rng.choice(principals),
            )

    summed = _from_rows(journals[0], sessions, principals)
    assert summed["spent"] > 1 and summed["committed"] > summed["spent"]  # the sequence did move money
    for journal in journals:
        kept = _kept(journal, sessions, principals)
        assert kept == {k: pytest.approx(summed[k], abs=1e-6) for k in kept}


def test_running_sums_equal_what_the_rows_sum_to_after_concurrent_claims_and_charges(
    store: Store, job: Callable[..., JobRecord]
) -> None:
    journals = [store.open(), store.open()]
    sessions, principals = ["s0", "s1", "s2"], ["ann", "bob"]

    def one(i: int) -> None:
        journal = journals[i % 2]
        for n in range(6):
            record, _ = journal.claim(
                job(
                    dedup_key=f"c{i}-{n}",
                    session_id=f"s{i % 3}",
                    principal=principals[n % 2],
                    reserved_usd=0.5,
                ),
                window_start_ts=None,
                budget_usd=1000.0,
                principal_budget_usd=500.0,
            )
            if n % 3:  # two jobs in three finish with their charge; the others keep their reservation
                done = record.model_copy(
                    update={
                        "status": "completed",
                        "submit_state": "accepted",
                        "reserved_usd": None,
                        "cost": Cost(usd=0.125 * n, refunded=n == 5),
                    }
                )
                journal.save(done, charge=True)
            journal.record_cost(
                f"req-{i}-{n}",
                provider="muapi",
                operation="generate",
                session_id=record.session_id,
                cost=Cost(usd=0.01),
                ts=T0,
                principal=record.principal,
            )

    results = race(12, one)

    assert results == [None] * 12
    summed = _from_rows(journals[0], sessions, principals)
    # 12 callers: 2 held jobs of $0.50 each, charges of $0.125 + $0.25 + $0.50 (+ $0.625 refunded), 6 x $0.01.
    assert summed["committed"] == pytest.approx(12 * (1.0 + 0.875 + 0.06))
    kept = _kept(journals[1], sessions, principals)
    assert kept == {k: pytest.approx(summed[k], abs=1e-6) for k in kept}


def test_rebuilding_the_sums_puts_back_what_the_rows_say(store: Store, job: Callable[..., JobRecord]) -> None:
    journal = store.open()
    journal.claim(job(reserved_usd=0.75, principal="ann"), window_start_ts=None)
    journal.record_cost(
        "job_x",
        provider="muapi",
        operation="generate",
        session_id="s1",
        cost=Cost(usd=1.25),
        ts=T0,
        principal="ann",
    )
    store.sql(
        "UPDATE {totals} SET spent_usd = 99, reserved_usd = 99"
    )  # sums gone wrong, however that happened
    assert journal.spent_usd() == 99

    journal.rebuild_totals()

    assert (journal.spent_usd(), journal.spent_usd("s1"), journal.spent_usd(principal="ann")) == (
        1.25,
        1.25,
        1.25,
    )
    assert journal.committed_usd() == journal.committed_usd("ann") == 2.0
    assert journal.committed_usd("local") == 0.0


def test_a_save_returns_the_copy_the_journal_holds_and_a_stale_one_changes_neither_row_nor_charge(
    store: Store, job: Callable[..., JobRecord]
) -> None:
    writer, other = store.open(), store.open()
    record, _ = writer.claim(job(reserved_usd=0.5), window_start_ts=None)
    running = record.model_copy(
        update={"status": "running", "submit_state": "accepted", "provider_job_id": "r1"}
    )
    assert writer.save(running) == running
    stale = other.get(record.job_id)
    assert stale is not None
    done = running.model_copy(
        update={
            "status": "completed",
            "reserved_usd": None,
            "cost": Cost(usd=0.4),
            "polls": 3,
            "completed_ts": T0 + 9,
        }
    )
    assert writer.save(done, charge=True) == done

    late = stale.model_copy(update={"polls": 9, "cost": Cost(usd=0.75)})  # read before it finished
    for journal in (other, writer):  # another process, and the one that wrote it
        assert journal.save(late, charge=True) == done

    assert other.get(record.job_id) == done
    assert writer.spent_usd() == writer.committed_usd() == 0.4
    assert writer.totals()["usd"] == pytest.approx(0.4)


def test_a_claim_writes_its_audit_entry_only_when_it_makes_the_job(
    store: Store, job: Callable[..., JobRecord]
) -> None:
    journals = [store.open(), store.open()]
    entry = {
        "principal": "local",
        "action": "submit",
        "ts": T0,
        "tool": "muapi.generate",
        "estimate_usd": 0.5,
    }
    records = [job(reserved_usd=0.5) for _ in range(8)]

    results = race(
        8,
        lambda i: journals[i % 2].claim(
            records[i], window_start_ts=T0, audit={**entry, "job_id": records[i].job_id}
        ),
    )
    refused = job(dedup_key="too dear", reserved_usd=5.0)
    with pytest.raises(OverBudget):
        journals[0].claim(
            refused, window_start_ts=T0, budget_usd=1.0, audit={**entry, "job_id": refused.job_id}
        )

    created = [claimed for claimed, new in results if new]
    assert len(created) == 1
    trail = journals[1].audit_trail()
    assert [(e["action"], e["job_id"], e["estimate_usd"]) for e in trail] == [
        ("submit", created[0].job_id, 0.5)
    ]


# -- through the engine ------------------------------------------------------------------------------


class Args(BaseModel):
    n: int = 0


class Quoted(DriverBase):
    provider, operation, title, args_model = "muapi", "generate", "Stub", Args

    def __init__(self, usd: float = 0.5) -> None:
        self.usd = usd
        self.submitted: list[int] = []

    async def estimate_usd(self, args: Any) -> float | None:
        return self.usd

    async def submit(self, args: Any, options: dict[str, Any], progress: Any) -> Outcome:
        self.submitted.append(args.n)
        await anyio.sleep(0.05)  # long enough for every racer to be waiting on the first
        return Outcome(status="queued", provider_job_id=f"p{args.n}-{len(self.submitted)}")

    async def poll(self, provider_job_id: str, args: Any, options: dict[str, Any]) -> Outcome:
        return Outcome(status="running")


def engine_on(journal: JournalBackend, driver: Quoted, **kwargs: Any) -> JobEngine:
    engine = JobEngine(journal, clock=SystemClock(), **kwargs)
    engine.register(driver)
    return engine


async def test_ten_concurrent_fifty_cent_calls_under_a_one_dollar_budget_make_two_jobs(store: Store) -> None:
    driver = Quoted(usd=0.5)
    engines = [engine_on(store.open(), driver, budget_usd=1.0) for _ in range(2)]
    outcomes: list[str] = []

    async def one(n: int) -> None:
        try:
            await engines[n % 2].run("muapi", "generate", Args(n=n), wait_s=0)
            outcomes.append("accepted")
        except BudgetExceeded:
            outcomes.append("refused")

    with anyio.fail_after(60):
        async with anyio.create_task_group() as tg:
            for n in range(10):
                tg.start_soon(one, n)

    assert sorted(outcomes) == ["accepted"] * 2 + ["refused"] * 8
    assert len(driver.submitted) == 2


class ChargedAtOnce(Quoted):
    """Finishes in the submission's answer with its dollar charge: the reservation turns into a
    ledger charge while other calls are still claiming."""

    async def submit(self, args: Any, options: dict[str, Any], progress: Any) -> Outcome:
        self.submitted.append(args.n)
        return Outcome(status="completed", provider_job_id=f"p{args.n}", result={}, cost=Cost(usd=self.usd))


async def test_a_reservation_turning_into_a_charge_never_opens_room_under_the_budget(store: Store) -> None:
    driver = ChargedAtOnce(usd=0.25)
    engines = [engine_on(store.open(), driver, budget_usd=1.0) for _ in range(2)]
    outcomes: list[str] = []

    async def one(n: int) -> None:
        try:
            await engines[n % 2].run("muapi", "generate", Args(n=n), wait_s=0)
            outcomes.append("accepted")
        except BudgetExceeded:
            outcomes.append("refused")

    with anyio.fail_after(60):
        async with anyio.create_task_group() as tg:
            for n in range(24):
                tg.start_soon(one, n)

    assert outcomes.count("accepted") == 4
    assert engines[0].journal.totals()["usd"] == pytest.approx(1.0)


async def test_identical_calls_on_two_engines_sharing_a_journal_make_one_submission(store: Store) -> None:
    driver = Quoted(usd=0.5)
    engines = [engine_on(store.open(), driver) for _ in range(2)]
    results: list[Any] = []

    async def one(i: int) -> None:
        results.append(await engines[i % 2].run("muapi", "generate", Args(n=7), wait_s=0))

    with anyio.fail_after(60):
        async with anyio.create_task_group() as tg:
            for i in range(12):
                tg.start_soon(one, i)

    assert driver.submitted == [7]
    assert len({r.job_id for r in results}) == 1
    assert sum(not r.deduplicated for r in results) == 1


def test_recent_durations_are_what_the_poll_plan_learns_from(
    store: Store, job: Callable[..., JobRecord]
) -> None:
    journal = store.open()
    for i, (seconds, polls) in enumerate(((9.5, 3), (11.0, 2), (4.0, 0))):
        record = job(dedup_key=f"d-{i}", price_key="flux", options={"_finished_s": seconds})
        journal.claim(record, window_start_ts=None)
        done = record.model_copy(
            update={
                "status": "completed",
                "submit_state": "accepted",
                "polls": polls,
                "completed_ts": T0 + 100 + i,
            }
        )
        journal.save(done)
    other = job(dedup_key="other", price_key="sdxl", options={"_finished_s": 30.0})
    journal.claim(other, window_start_ts=None)

    # Newest first; a job answered at submission (never polled) says nothing about how long jobs take.
    assert journal.recent_durations("muapi", "generate", "flux") == [11.0, 9.5]
    assert journal.recent_durations("muapi", "generate", "missing") == []


# -- PostgreSQL only -------------------------------------------------------------------------------------


def test_a_postgresql_journal_of_schema_2_gets_its_sums_from_its_rows_and_older_writers_keep_them(
    pg_url: str,
) -> None:
    import psycopg

    from mediamux.jobs.pg_journal import MIGRATIONS, PostgresJournal

    job_row = (
        "INSERT INTO mediamux_jobs (job_id, provider, operation, dedup_key, args_json, status, submit_state, "
        "session_id, submitted_ts, updated_ts, reserved_usd, principal) "
        "VALUES (%s, 'muapi', 'generate', %s, '{}', %s, 'accepted', 's1', 0, 0, %s, %s)"
    )
    ledger_row = (
        "INSERT INTO mediamux_ledger (entry_id, provider, operation, session_id, usd, refunded, recorded_ts, "
        "principal) VALUES (%s, 'muapi', 'generate', %s, %s, %s, 0, %s)"
    )
    # A database as the release of schema 2 left it: its own steps, then its rows.
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE mediamux_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        for step in (0, 1):
            conn.execute(MIGRATIONS[step].encode())
        conn.execute("INSERT INTO mediamux_meta VALUES ('schema_version', '2')")
        for values in (("j1", "a", "queued", 0.75, "ann"), ("j2", "b", "running", 0.5, "local")):
            conn.execute(job_row, values)
        conn.execute(job_row, ("j3", "c", "completed", None, "ann"))
        for entry in (
            ("j3", "s1", 1.25, None, "ann"),
            ("jy", "s1", 0.5, True, "local"),
            ("jz", "s2", 0.125, False, "local"),
            ("jn", "s2", None, None, "local"),  # billable, not priced
        ):
            conn.execute(ledger_row, entry)

    journal = PostgresJournal(pg_url, lease_s=30.0, pool_size=2)
    try:
        assert (journal.spent_usd(), journal.spent_usd("s1"), journal.spent_usd("s2")) == (1.375, 1.25, 0.125)
        assert journal.committed_usd() == 1.375 + 1.25
        assert journal.committed_usd("ann") == 1.25 + 0.75
        assert journal.spent_usd(principal="local") == 0.125

        # A replica still on the previous release writes as it always did; the sums follow its rows.
        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute(ledger_row, ("old", "s2", 2.0, None, "local"))
            conn.execute(
                "UPDATE mediamux_jobs SET reserved_usd = NULL, status = 'failed' WHERE job_id = 'j1'"
            )
            version = conn.execute("SELECT value FROM mediamux_meta WHERE key = 'schema_version'").fetchone()
        assert version == ("3",)
        assert (journal.spent_usd(), journal.spent_usd("s2")) == (3.375, 2.125)
        assert journal.committed_usd("ann") == 1.25 and journal.committed_usd() == 3.375 + 0.5

        # An operator's SQL, in a session of its own search path, moving a job to another principal
        # and a charge to another session.
        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute("CREATE SCHEMA elsewhere")
            conn.execute("SET search_path = elsewhere")
            conn.execute("UPDATE public.mediamux_jobs SET principal = 'ann' WHERE job_id = 'j2'")
            conn.execute(
                "UPDATE public.mediamux_ledger SET session_id = 's3', usd = 0.25 WHERE entry_id = 'jz'"
            )
        assert (journal.committed_usd("ann"), journal.committed_usd("local")) == (1.75, 2.25)
        assert (journal.spent_usd(), journal.spent_usd("s2"), journal.spent_usd("s3")) == (3.5, 2.0, 0.25)
    finally:
        journal.close()


def _plan_nodes(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield node
    for child in node.get("Plans", ()):
        yield from _plan_nodes(child)


def test_every_hot_postgresql_statement_can_be_answered_from_an_index(
    pg_url: str, job: Callable[..., JobRecord], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Checked on the statements the journal really sends, over a history the probes mostly do not
    want (300 finished MuAPI jobs of one principal): with sequential scans and explicit sorts priced
    out, a plan still holding one has no index to use, and a read that walks an index discarding
    history row by row ("Rows Removed by Filter") has none that fits. Sorting the live jobs (the
    active list, the lease scan) is allowed: it stays the size of the live work."""
    import psycopg

    from mediamux.jobs.pg_journal import PostgresJournal

    journal = PostgresJournal(pg_url, lease_s=30.0, pool_size=2)
    try:
        for n in range(300):
            record = job(dedup_key=f"k{n}", status="completed", submit_state="accepted", provider_job_id=f"r{n}",
                         price_key="flux", cost=Cost(usd=0.01), polls=2, completed_ts=T0 + n + 5)  # fmt: skip
            journal.save(record, charge=True)
            journal.audit(principal="local", action="submit", ts=T0 + n, job_id=record.job_id)
        for n, (provider, principal) in enumerate((("museai", "ann"), ("muzaic", "bob"))):
            rare = job(dedup_key=f"rare{n}", provider=provider, principal=principal, status="completed",
                       submit_state="accepted", polls=1, completed_ts=T0 + 400 + n)  # fmt: skip
            journal.save(rare, charge=True)
        sent: list[tuple[Any, Any]] = []
        execute = psycopg.Connection.execute

        def recording(self: Any, query: Any, params: Any = None, **kwargs: Any) -> Any:
            sent.append((query, params))
            return execute(self, query, params, **kwargs)

        monkeypatch.setattr(psycopg.Connection, "execute", recording)
        new = job(dedup_key="new", reserved_usd=0.2, price_key="flux", principal="ann")
        audit = {"principal": "ann", "action": "submit", "ts": T0, "job_id": new.job_id}
        journal.claim(new, window_start_ts=T0 - 600, budget_usd=100.0, principal_budget_usd=50.0, audit=audit)
        journal.find_duplicate("new", T0 - 600, "ann")
        journal.save(new.model_copy(update={"submit_state": "accepted", "cost": Cost(usd=0.2)}), charge=True)
        journal.save(job(dedup_key="unheld", reserved_usd=0.1), charge=True)
        journal.get(new.job_id)
        journal.find_by_provider_id("muapi", "r7")
        journal.find_by_provider_id("museai", "r7")
        for filters in (
            {},
            {"status": "active"},
            {"status": "failed"},
            {"provider": "muzaic"},
            {"principal": "bob"},
        ):
            journal.list(limit=20, **filters)
        journal.spent_usd("session-a")
        journal.spent_usd(principal="ann")
        journal.committed_usd()
        journal.committed_usd("ann")
        journal.price_history("muapi", "generate", "flux")
        journal.price_history("muapi", "generate", "sdxl")
        journal.recent_durations("muapi", "generate", "flux")
        journal.recent_durations("museai", "generate", None)
        journal.audit_trail(principal="ann")
        journal.audit_trail()
        journal.beat("me", host="h", pid=1, ts=T0)
        journal.owner("me")
        journal.lease_due(pollable=["muapi/generate"], finishable=["muapi/generate"], limit=10)
        journal.renew()
        monkeypatch.undo()
    finally:
        journal.close()

    ours = {"mediamux_jobs", "mediamux_ledger", "mediamux_audit", "mediamux_totals", "mediamux_owners"}
    statements = [
        (query if isinstance(query, str) else bytes(query).decode(), params)
        for query, params in sent
        if str(query).lstrip().split(" ")[0].upper() in ("SELECT", "INSERT", "UPDATE", "WITH")
    ]
    assert len({sql for sql, _ in statements}) > 20
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("ANALYZE")  # the statistics autovacuum keeps on a real server
        conn.execute("SET enable_seqscan = off")
        for sql, params in statements:
            live = "status = ANY" in sql or "lease_expires < now()" in sql
            conn.execute(f"SET enable_sort = {'on' if live else 'off'}")
            # Reads run (ANALYZE) to count what they discard; writes and lock or notice calls are planned only.
            read = sql.startswith("SELECT") and "pg_" not in sql
            explain = "EXPLAIN (ANALYZE, FORMAT JSON)" if read else "EXPLAIN (FORMAT JSON)"
            row = conn.execute(f"{explain} {sql}".encode(), params).fetchone()
            assert row is not None
            nodes = list(_plan_nodes(row[0][0]["Plan"]))
            scans = [
                n["Relation Name"]
                for n in nodes
                if n["Node Type"] == "Seq Scan" and n["Relation Name"] in ours
            ]
            assert not scans, (sql, scans)
            if not live:
                assert not [n for n in nodes if n["Node Type"] == "Sort"], (sql, nodes)
            discarded = sum(
                n.get("Rows Removed by Filter", 0) + n.get("Rows Removed by Join Filter", 0) for n in nodes
            )
            assert discarded < 30, (sql, params, discarded, nodes)
