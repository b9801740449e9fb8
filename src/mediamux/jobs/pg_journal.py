"""The job journal in PostgreSQL, shared by every replica of a team's deployment.

Same rows and promises as the SQLite journal (``mediamux.jobs.journal``), plus what several
servers on one database need:

* **one submission per identical request**: ``claim`` takes a transaction-scoped advisory lock on
  the request's key before the duplicate-window lookup and the insert, so identical calls arriving
  at different replicas at once queue on the lock and all but the first find the first's row;
* **a budget no race can pass**: with a budget, ``claim`` also takes the budget's advisory lock, reads
  what is charged and reserved (running sums that triggers move with every row, read in O(1)), and
  inserts the job with its reservation, all in that transaction;
* **leases**: the submitting replica holds a job's lease from the insert; every write of a held job
  is fenced (it lands only while this process still holds that lease, with the token it took), and
  renewals keep it while the process lives. A job whose lease expired is leased by another replica
  (``FOR UPDATE SKIP LOCKED``): polled if it is live upstream, declared uncertain if it was still
  being submitted;
* **change notices**: every write of a job sends ``NOTIFY mediamux_job, '<job_id>'`` in its
  transaction, so a waiter on any replica wakes and re-reads the row instead of polling anyone.

Writes run in the engine's worker threads on a pooled connection; reads (one indexed row, or a
small aggregate) run where they are called, on a second, smaller pool so a burst of writes never
delays them. See ``mediamux.jobs.backend`` for why these methods are synchronous.
"""

from __future__ import annotations

import builtins
import logging
import os
import secrets
import socket
import threading
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import anyio
import psycopg
from anyio.abc import TaskStatus
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool, PoolTimeout

from mediamux.clock import Clock
from mediamux.jobs.backend import LeaseLost
from mediamux.jobs.journal import JournalError, JournalWriteError, OverBudget, ledger_entry, sane_cost
from mediamux.jobs.models import ACTIVE_STATUSES, TERMINAL_STATUSES, JobError, JobRecord
from mediamux.principals import LOCAL
from mediamux.providers.cost import Cost

logger = logging.getLogger("mediamux.jobs.postgres")

SCHEMA_VERSION = 3

# Running sums of what the budgets are checked against, one row per scope in ``mediamux_totals``:
# ``all`` (charged dollars, refunds excluded, and what live jobs hold), ``session:<id>`` (charged) and
# ``principal:<p>`` (charged, and held), read in O(1) where the ledger and the journal would be summed.
#
# They are kept by triggers on the rows they sum, not by the code that writes those rows:
# * a write moves the sums exactly when it lands: a fenced update that matched no row (a lease lost),
#   a rolled-back transaction and an upsert that changed nothing move nothing, and every writer —
#   a replica of an older release during a rolling upgrade, an operator's SQL — keeps them right;
# * the triggers are deferred to the commit, so a transaction takes the sums' row locks last, after
#   the locks on its job and ledger rows, in scope order with ``all`` first (every change moves
#   ``all``): two writers can queue on a sum but never deadlock on one, and a row lock on ``all`` is
#   held only while its transaction commits;
# * the sums are NUMERIC: each dollar figure enters as the same decimal it leaves with, so a
#   reservation taken and released returns the sum to exactly where it was, however long it runs.
#
# Every charged save and every reservation moves the ``all`` row, so commits that move money are
# serialised on it across replicas. That adds no new queue: each of those transactions also sends a
# NOTIFY, and PostgreSQL already serialises every committing transaction that notified, cluster-wide,
# on one lock held until its commit ends (``PreCommit_Notify`` in src/backend/commands/async.c); the
# deferred triggers run just before it is taken, one cached upsert each. Splitting ``all`` into slots
# would save nothing while that lock stays, and would make each budget check read several rows.
ALL = "all"
SESSION = "session:"
PRINCIPAL = "principal:"

_CHARGED = "CASE WHEN refunded THEN 0 ELSE COALESCE(usd, 0)::numeric END"
# Recomputes every running sum from the rows (the 2 -> 3 step, and ``rebuild_totals``), with both
# tables locked against writers so no write lands between the rows read and the sums written.
_REBUILD_TOTALS = f"""
LOCK TABLE mediamux_jobs, mediamux_ledger IN SHARE ROW EXCLUSIVE MODE;
DELETE FROM mediamux_totals;
INSERT INTO mediamux_totals (scope, spent_usd, reserved_usd)
SELECT scope, SUM(spent), SUM(held) FROM (
    SELECT 'all' AS scope, {_CHARGED} AS spent, 0::numeric AS held FROM mediamux_ledger
    UNION ALL SELECT 'session:' || session_id, {_CHARGED}, 0 FROM mediamux_ledger
    UNION ALL SELECT 'principal:' || principal, {_CHARGED}, 0 FROM mediamux_ledger
    UNION ALL SELECT 'all', 0, reserved_usd::numeric FROM mediamux_jobs WHERE reserved_usd IS NOT NULL
    UNION ALL SELECT 'principal:' || principal, 0, reserved_usd::numeric FROM mediamux_jobs
        WHERE reserved_usd IS NOT NULL
) moved GROUP BY scope;
"""

# Each step takes the schema from version N to N + 1, in one transaction, under a session advisory
# lock so replicas starting together migrate once. Add steps; never edit a released one.
MIGRATIONS: dict[int, str] = {
    0: """
CREATE TABLE mediamux_jobs (
    job_id TEXT PRIMARY KEY,
    provider TEXT NOT NULL,
    operation TEXT NOT NULL,
    dedup_key TEXT NOT NULL,
    args_json JSONB NOT NULL,
    options_json JSONB NOT NULL DEFAULT '{}',
    provider_job_id TEXT,
    status TEXT NOT NULL,
    provider_status TEXT,
    submit_state TEXT NOT NULL,
    result_json JSONB,
    error_json JSONB,
    cost_json JSONB,
    session_id TEXT NOT NULL,
    submitted_ts DOUBLE PRECISION NOT NULL,
    updated_ts DOUBLE PRECISION NOT NULL,
    completed_ts DOUBLE PRECISION,
    polls INTEGER NOT NULL DEFAULT 0,
    finalized BOOLEAN NOT NULL DEFAULT FALSE,
    reserved_usd DOUBLE PRECISION,
    price_key TEXT,
    owner TEXT,
    checked_ts DOUBLE PRECISION,
    -- The replica polling the job (or submitting it), until when, and a token that changes with every
    -- new holder: writes carry the token they leased with, so a holder that lost the job cannot write.
    lease_owner TEXT,
    lease_expires TIMESTAMPTZ,
    lease_token BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX mediamux_jobs_dedup ON mediamux_jobs (dedup_key, submitted_ts);
CREATE INDEX mediamux_jobs_recent ON mediamux_jobs (submitted_ts);
CREATE INDEX mediamux_jobs_provider_id ON mediamux_jobs (provider, provider_job_id);
CREATE INDEX mediamux_jobs_price ON mediamux_jobs (provider, operation, price_key);
CREATE INDEX mediamux_jobs_reserved ON mediamux_jobs (job_id) WHERE reserved_usd IS NOT NULL;
-- What a lease scan looks at: jobs someone must still poll, finish or declare uncertain.
CREATE INDEX mediamux_jobs_work ON mediamux_jobs (submitted_ts)
    WHERE status IN ('queued', 'running') OR (status = 'completed' AND NOT finalized) OR submit_state = 'pending';
CREATE TABLE mediamux_ledger (
    entry_id TEXT PRIMARY KEY,
    provider TEXT NOT NULL,
    operation TEXT NOT NULL,
    session_id TEXT NOT NULL,
    usd DOUBLE PRECISION,
    credits DOUBLE PRECISION,
    tokens DOUBLE PRECISION,
    refunded BOOLEAN,
    recorded_ts DOUBLE PRECISION NOT NULL
);
CREATE INDEX mediamux_ledger_session ON mediamux_ledger (session_id);
CREATE INDEX mediamux_ledger_recorded ON mediamux_ledger (recorded_ts);
CREATE TABLE mediamux_owners (
    owner TEXT PRIMARY KEY,
    host TEXT NOT NULL,
    pid INTEGER NOT NULL,
    seen_ts DOUBLE PRECISION NOT NULL
);
""",
    # 1 -> 2: whose job and whose charge (sign-in over HTTP; before, everything was the local
    # user's), and the audit trail of paid submissions, cancels and deletions.
    1: """
ALTER TABLE mediamux_jobs ADD COLUMN principal TEXT NOT NULL DEFAULT 'local';
ALTER TABLE mediamux_ledger ADD COLUMN principal TEXT NOT NULL DEFAULT 'local';
CREATE INDEX mediamux_jobs_principal ON mediamux_jobs (principal, submitted_ts);
CREATE INDEX mediamux_ledger_principal ON mediamux_ledger (principal);
CREATE TABLE mediamux_audit (
    seq BIGSERIAL PRIMARY KEY,
    ts DOUBLE PRECISION NOT NULL,
    principal TEXT NOT NULL,
    action TEXT NOT NULL,
    tool TEXT,
    job_id TEXT,
    estimate_usd DOUBLE PRECISION,
    cost_usd DOUBLE PRECISION,
    detail TEXT
);
CREATE INDEX mediamux_audit_principal ON mediamux_audit (principal, ts);
""",
    # 2 -> 3: running sums of spend and reservations, kept by triggers and computed here from the rows
    # (see above ``ALL``); indexes that let the job lists, the provider-id lookup, the price history,
    # the learned durations and a principal's audit trail stop after their first rows. The old
    # partial index on reservations only served the sums that scanned the journal.
    2: """
LOCK TABLE mediamux_jobs, mediamux_ledger IN SHARE ROW EXCLUSIVE MODE;
DROP INDEX mediamux_jobs_reserved;
DROP INDEX mediamux_jobs_price;
CREATE INDEX mediamux_jobs_price ON mediamux_jobs (provider, operation, price_key, submitted_ts);
CREATE INDEX mediamux_jobs_durations ON mediamux_jobs (provider, operation, price_key, completed_ts);
-- "price_key IS NULL" selects rows of the index above but gives no order by completed_ts (it is no
-- equality to the planner), and every provider but MuAPI prices jobs without a key.
CREATE INDEX mediamux_jobs_durations_unkeyed ON mediamux_jobs (provider, operation, completed_ts)
    WHERE price_key IS NULL;
DROP INDEX mediamux_jobs_provider_id;
CREATE INDEX mediamux_jobs_provider_id ON mediamux_jobs (provider, provider_job_id, submitted_ts);
CREATE INDEX mediamux_jobs_status ON mediamux_jobs (status, submitted_ts);
CREATE INDEX mediamux_jobs_provider_recent ON mediamux_jobs (provider, submitted_ts);
CREATE INDEX mediamux_audit_principal_seq ON mediamux_audit (principal, seq);
CREATE TABLE mediamux_totals (
    scope TEXT PRIMARY KEY,
    spent_usd NUMERIC NOT NULL DEFAULT 0,
    reserved_usd NUMERIC NOT NULL DEFAULT 0
);
-- The sums' rows are upserted in scope order ('all' < 'principal:' < 'session:'), so writers lock
-- them in one order. A job's principal and a charge's session and principal never change in
-- mediamux's own writes, so every scope moves by one amount; the general case sorts explicitly.
CREATE FUNCTION mediamux_jobs_totals() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    was NUMERIC := 0;
    held NUMERIC := 0;
    who TEXT;
BEGIN
    IF TG_OP <> 'INSERT' THEN
        was := COALESCE(OLD.reserved_usd, 0);
        who := OLD.principal;
    END IF;
    IF TG_OP <> 'DELETE' THEN
        held := COALESCE(NEW.reserved_usd, 0);
        IF TG_OP = 'UPDATE' AND NEW.principal IS DISTINCT FROM who THEN
            INSERT INTO mediamux_totals AS t (scope, reserved_usd)
            SELECT scope, SUM(d) FROM (VALUES ('all', held - was), ('principal:' || who, -was),
                ('principal:' || NEW.principal, held)) moved (scope, d) GROUP BY scope ORDER BY scope
            ON CONFLICT (scope) DO UPDATE SET reserved_usd = t.reserved_usd + EXCLUDED.reserved_usd;
            RETURN NULL;
        END IF;
        who := NEW.principal;
    END IF;
    IF held <> was THEN
        INSERT INTO mediamux_totals AS t (scope, reserved_usd)
        VALUES ('all', held - was), ('principal:' || who, held - was)
        ON CONFLICT (scope) DO UPDATE SET reserved_usd = t.reserved_usd + EXCLUDED.reserved_usd;
    END IF;
    RETURN NULL;
END
$$;
CREATE FUNCTION mediamux_ledger_totals() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    was NUMERIC := 0;
    spent NUMERIC := 0;
    session TEXT;
    who TEXT;
BEGIN
    IF TG_OP <> 'INSERT' THEN
        was := CASE WHEN OLD.refunded THEN 0 ELSE COALESCE(OLD.usd, 0) END;
        session := OLD.session_id;
        who := OLD.principal;
    END IF;
    IF TG_OP <> 'DELETE' THEN
        spent := CASE WHEN NEW.refunded THEN 0 ELSE COALESCE(NEW.usd, 0) END;
        IF TG_OP = 'UPDATE' AND (NEW.session_id IS DISTINCT FROM session OR NEW.principal IS DISTINCT FROM who) THEN
            INSERT INTO mediamux_totals AS t (scope, spent_usd)
            SELECT scope, SUM(d) FROM (VALUES ('all', spent - was), ('principal:' || who, -was),
                ('session:' || session, -was), ('principal:' || NEW.principal, spent),
                ('session:' || NEW.session_id, spent)) moved (scope, d) GROUP BY scope ORDER BY scope
            ON CONFLICT (scope) DO UPDATE SET spent_usd = t.spent_usd + EXCLUDED.spent_usd;
            RETURN NULL;
        END IF;
        session := NEW.session_id;
        who := NEW.principal;
    END IF;
    IF spent <> was THEN
        INSERT INTO mediamux_totals AS t (scope, spent_usd)
        VALUES ('all', spent - was), ('principal:' || who, spent - was), ('session:' || session, spent - was)
        ON CONFLICT (scope) DO UPDATE SET spent_usd = t.spent_usd + EXCLUDED.spent_usd;
    END IF;
    RETURN NULL;
END
$$;
-- Whoever writes (an operator's session, with its own search_path), the sums are those beside the
-- tables: the schema they were created in.
DO $$
BEGIN
    EXECUTE format('ALTER FUNCTION mediamux_jobs_totals() SET search_path = %I', current_schema());
    EXECUTE format('ALTER FUNCTION mediamux_ledger_totals() SET search_path = %I', current_schema());
END
$$;
CREATE CONSTRAINT TRIGGER mediamux_jobs_held_insert AFTER INSERT ON mediamux_jobs
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW WHEN (NEW.reserved_usd IS NOT NULL)
    EXECUTE FUNCTION mediamux_jobs_totals();
CREATE CONSTRAINT TRIGGER mediamux_jobs_held_update AFTER UPDATE ON mediamux_jobs
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW
    WHEN (OLD.reserved_usd IS DISTINCT FROM NEW.reserved_usd OR OLD.principal IS DISTINCT FROM NEW.principal)
    EXECUTE FUNCTION mediamux_jobs_totals();
CREATE CONSTRAINT TRIGGER mediamux_jobs_held_delete AFTER DELETE ON mediamux_jobs
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW WHEN (OLD.reserved_usd IS NOT NULL)
    EXECUTE FUNCTION mediamux_jobs_totals();
CREATE CONSTRAINT TRIGGER mediamux_ledger_spent_insert AFTER INSERT ON mediamux_ledger
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW WHEN (NEW.usd IS NOT NULL AND NEW.refunded IS NOT TRUE)
    EXECUTE FUNCTION mediamux_ledger_totals();
CREATE CONSTRAINT TRIGGER mediamux_ledger_spent_update AFTER UPDATE ON mediamux_ledger
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW
    WHEN ((CASE WHEN OLD.refunded THEN NULL ELSE OLD.usd END) IS DISTINCT FROM (CASE WHEN NEW.refunded THEN NULL ELSE NEW.usd END)
        OR OLD.session_id IS DISTINCT FROM NEW.session_id OR OLD.principal IS DISTINCT FROM NEW.principal)
    EXECUTE FUNCTION mediamux_ledger_totals();
CREATE CONSTRAINT TRIGGER mediamux_ledger_spent_delete AFTER DELETE ON mediamux_ledger
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW WHEN (OLD.usd IS NOT NULL AND OLD.refunded IS NOT TRUE)
    EXECUTE FUNCTION mediamux_ledger_totals();
"""
    + _REBUILD_TOTALS,
}

# Advisory lock classes (the first key of the two-key form), so ours never collide with an
# application sharing the database: 0x6d6d is "mm".
LOCK_MIGRATE = (0x6D6D, 0)
LOCK_REQUEST = 0x6D6E  # + hashtext(dedup key): identical requests, one at a time
LOCK_BUDGET = 0x6D6F  # + hashtext(budget scope): every budgeted claim, one at a time

JOB_CHANNEL = "mediamux_job"  # payload: the job id whose row changed
WORK_CHANNEL = "mediamux_work"  # a job needs a holder (released, or answered after being declared lost)

# A reader is never needed for long: a small pool of its own keeps reads off the writers' queue.
READ_POOL_SIZE = 4
STATEMENT_TIMEOUT = "30s"
CONNECT_TIMEOUT_S = 10
# How often a waiter re-reads its row even without a notice (a notice lost while the listening
# connection was being re-established).
RECHECK_S = 10.0
LISTEN_RETRY_S = 2.0

_TERMINAL_SQL = "('completed', 'failed', 'cancelled', 'expired')"

_COLUMNS = (
    "job_id",
    "provider",
    "operation",
    "dedup_key",
    "args_json",
    "options_json",
    "provider_job_id",
    "status",
    "provider_status",
    "submit_state",
    "result_json",
    "error_json",
    "cost_json",
    "session_id",
    "submitted_ts",
    "updated_ts",
    "completed_ts",
    "polls",
    "finalized",
    "reserved_usd",
    "price_key",
    "owner",
    "checked_ts",
    "principal",
)
_SELECT = ", ".join(_COLUMNS)
_SELECT_J = ", ".join(f"j.{c}" for c in _COLUMNS)
_INSERT_VALUES = ", ".join(f"%({c})s" for c in _COLUMNS)
# What a write of a job's state replaces: everything but its identity. Options are merged, never
# replaced: a duplicate call on another replica may have added one (save_outputs) meanwhile.
_STATE = [
    c
    for c in _COLUMNS
    if c
    not in (
        "job_id",
        "provider",
        "operation",
        "dedup_key",
        "args_json",
        "session_id",
        "submitted_ts",
        "options_json",
        "principal",
    )
]
_SET_STATE = (
    ", ".join(f"{c} = %({c})s" for c in _STATE)
    + ", options_json = mediamux_jobs.options_json || %(options_json)s"
)
_SET_EXCLUDED = (
    ", ".join(f"{c} = EXCLUDED.{c}" for c in _STATE)
    + ", options_json = mediamux_jobs.options_json || EXCLUDED.options_json"
)


def describe_location(url: str) -> str:
    """The database a URL names, without its password: ``user@host:port/dbname``."""
    try:
        parts = conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "postgresql://(unparsable URL)"
    user = f"{parts['user']}@" if parts.get("user") else ""
    host = parts.get("host") or "localhost"
    port = f":{parts['port']}" if parts.get("port") else ""
    return f"postgresql://{user}{host}{port}/{parts.get('dbname') or ''}"


def _describe(exc: BaseException) -> str:
    if isinstance(exc, PoolTimeout):
        return "no database connection became free in time (the database is slow or unreachable)"
    if isinstance(exc, psycopg.errors.QueryCanceled):
        return f"the database did not answer within {STATEMENT_TIMEOUT}"
    if isinstance(exc, psycopg.errors.DiskFull):
        return "the database's disk is full"
    if isinstance(exc, psycopg.errors.ReadOnlySqlTransaction):
        return "the database is read-only (a standby, or in recovery)"
    if isinstance(exc, psycopg.OperationalError):
        first = (str(exc).strip().splitlines() or [""])[0]
        return (
            f"the database could not be reached ({first})" if first else "the database could not be reached"
        )
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


class _Watch:
    """One waiter's notice of changes to one row. Set by the listening task, on the same event loop."""

    def __init__(self) -> None:
        self._event = anyio.Event()

    def notify(self) -> None:
        self._event.set()

    async def changed(self, clock: Clock, within_s: float) -> bool:
        if not self._event.is_set():
            async with anyio.create_task_group() as tg:

                async def timer() -> None:
                    # On the caller's clock: a waiter's budget is provider time, like any poll wait.
                    await clock.sleep(max(0.0, within_s))
                    tg.cancel_scope.cancel()

                tg.start_soon(timer)
                await self._event.wait()
                tg.cancel_scope.cancel()
        hit = self._event.is_set()
        self._event = anyio.Event()
        return hit


class PostgresJournal:
    shared = True

    def __init__(self, url: str, *, lease_s: float = 30.0, pool_size: int = 10) -> None:
        self.url = url
        self.location = describe_location(url)
        self.lease_s = float(lease_s)
        # Who holds leases: this process (several engines in one process would each open a journal).
        self.replica = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self._held: dict[str, int] = {}  # job id -> the lease token this process writes with
        self._held_lock = threading.Lock()
        self._watchers: dict[str, set[_Watch]] = {}
        self._work = anyio.Event()
        self._migrate()
        kwargs: dict[str, Any] = {
            "autocommit": True,
            "row_factory": dict_row,
            "connect_timeout": CONNECT_TIMEOUT_S,
        }
        self._pool: ConnectionPool[Any] = ConnectionPool(
            url,
            min_size=1,
            max_size=pool_size,
            kwargs=kwargs,
            configure=_configure,
            check=ConnectionPool.check_connection,
            open=False,
            name="mediamux-writes",
        )
        self._readers: ConnectionPool[Any] = ConnectionPool(
            url,
            min_size=1,
            max_size=READ_POOL_SIZE,
            kwargs=kwargs,
            configure=_configure,
            check=ConnectionPool.check_connection,
            open=False,
            name="mediamux-reads",
        )
        try:
            self._pool.open(wait=True, timeout=CONNECT_TIMEOUT_S)
            self._readers.open(wait=True, timeout=CONNECT_TIMEOUT_S)
        except (PoolTimeout, psycopg.Error) as exc:
            self.close()
            raise JournalError(f"cannot open the journal at {self.location}: {_describe(exc)}") from None

    # -- set-up ------------------------------------------------------------------------------

    def _migrate(self) -> None:
        """Create the schema, or bring one written by an older release up to date."""
        try:
            conn = psycopg.connect(self.url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S)
        except psycopg.Error as exc:
            raise JournalError(
                f"cannot open the journal at {self.location}: {_describe(exc)}; check MEDIAMUX_DATABASE_URL"
            ) from None
        try:
            with conn:
                conn.execute("SELECT pg_advisory_lock(%s, %s)", LOCK_MIGRATE)
                try:
                    conn.execute(
                        "CREATE TABLE IF NOT EXISTS mediamux_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)"
                    )
                    row = conn.execute(
                        "SELECT value FROM mediamux_meta WHERE key = 'schema_version'"
                    ).fetchone()
                    version = int(row[0]) if row is not None else 0
                    if version > SCHEMA_VERSION:
                        raise JournalError(
                            f"the journal at {self.location} was written by a newer mediamux (schema {version}, "
                            f"this one reads up to {SCHEMA_VERSION}); upgrade every replica to the same release"
                        )
                    while version < SCHEMA_VERSION:
                        with conn.transaction():
                            conn.execute(MIGRATIONS[version].encode())
                            version += 1
                            conn.execute(
                                "INSERT INTO mediamux_meta (key, value) VALUES ('schema_version', %s) "
                                "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
                                (str(version),),
                            )
                finally:
                    conn.execute("SELECT pg_advisory_unlock(%s, %s)", LOCK_MIGRATE)
        except psycopg.Error as exc:
            raise JournalError(f"cannot prepare the journal at {self.location}: {_describe(exc)}") from None

    def close(self) -> None:
        self._pool.close()
        self._readers.close()

    @contextmanager
    def _tx(self) -> Iterator[psycopg.Connection[Any]]:
        """One transaction on a writer connection; a failure to write is a JournalWriteError saying why."""
        try:
            with self._pool.connection() as conn, conn.transaction():
                yield conn
        except (psycopg.Error, PoolTimeout) as exc:
            raise JournalWriteError(_describe(exc)) from exc

    @contextmanager
    def _read(self) -> Iterator[psycopg.Connection[Any]]:
        try:
            with self._readers.connection() as conn:
                yield conn
        except (psycopg.Error, PoolTimeout) as exc:
            raise JournalError(f"cannot read the journal at {self.location}: {_describe(exc)}") from exc

    # -- jobs ------------------------------------------------------------------------------

    def claim(
        self,
        record: JobRecord,
        *,
        window_start_ts: float | None,
        budget_usd: float | None = None,
        principal_budget_usd: float | None = None,
        audit: Mapping[str, Any] | None = None,
    ) -> tuple[JobRecord, bool]:
        """Insert ``record`` unless an identical job from inside the window can stand for it.

        Identical requests serialise on an advisory lock on their key, held to the end of this
        transaction, so whichever replica commits first is the one every other finds; budgeted claims
        serialise on the budget's lock, so the sum they check is the sum they leave (the running sums
        move at the commit, before the lock is let go). The new job is leased to this process, which
        submits it. ``audit``: the fields of ``audit()``, written with a new job, in the statement that
        inserts it.

        Raises:
            OverBudget: the committed spend plus this job's reservation would pass ``budget_usd``, or
                the principal's own spend would pass ``principal_budget_usd``.
        """
        with self._tx() as db:
            if window_start_ts is not None:
                db.execute(
                    "SELECT pg_advisory_xact_lock(%s, hashtext(%s))",
                    (LOCK_REQUEST, f"{record.principal}\n{record.dedup_key}"),
                )
                existing = self._duplicate(db, record.dedup_key, window_start_ts, record.principal)
                if existing is not None:
                    return existing, False
            reserve = record.reserved_usd or 0.0
            # Locks in one order (the server's budget, then the principal's), so claims never deadlock.
            # Each sum is read after its lock is held: in READ COMMITTED a statement sees what committed
            # before it began, so the read sees every claim that held the lock before this one.
            if budget_usd is not None:
                db.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (LOCK_BUDGET, "all"))
                committed = self._committed(db)
                if committed + reserve > budget_usd + 1e-9:
                    raise OverBudget(committed, record.reserved_usd)
            if principal_budget_usd is not None:
                db.execute(
                    "SELECT pg_advisory_xact_lock(%s, hashtext(%s))",
                    (LOCK_BUDGET, f"principal\n{record.principal}"),
                )
                committed = self._committed(db, record.principal)
                if committed + reserve > principal_budget_usd + 1e-9:
                    raise OverBudget(committed, record.reserved_usd, principal=record.principal)
            params: dict[str, Any] = {**_values(record), "me": self.replica, "lease_s": self.lease_s}
            entry = ""
            if audit is not None:
                # In the insert's own statement: one round trip fewer while the budget locks are held.
                entry = f", entry AS ({_AUDIT_INSERT})"
                params.update(_audit_params(**audit))
            row = db.execute(
                f"WITH job AS (INSERT INTO mediamux_jobs ({_SELECT}, lease_owner, lease_expires, lease_token) "
                f"VALUES ({_INSERT_VALUES}, %(me)s, now() + make_interval(secs => %(lease_s)s), 1) "
                f"RETURNING lease_token){entry} SELECT lease_token, pg_notify('{JOB_CHANNEL}', %(job_id)s) FROM job",
                params,
            ).fetchone()
        assert row is not None
        with self._held_lock:
            self._held[record.job_id] = int(row["lease_token"])
        return record, True

    def find_duplicate(
        self, dedup_key: str, window_start_ts: float, principal: str = LOCAL
    ) -> JobRecord | None:
        with self._read() as db:
            return self._duplicate(db, dedup_key, window_start_ts, principal)

    @staticmethod
    def _duplicate(
        db: psycopg.Connection[Any], dedup_key: str, window_start_ts: float, principal: str = LOCAL
    ) -> JobRecord | None:
        row = db.execute(
            f"SELECT {_SELECT} FROM mediamux_jobs WHERE dedup_key = %s AND submitted_ts >= %s AND principal = %s "
            "AND (status IN ('queued', 'running', 'completed') OR submit_state = 'uncertain') "
            "ORDER BY submitted_ts DESC LIMIT 1",
            (dedup_key, window_start_ts, principal),
        ).fetchone()
        return _record(row) if row is not None else None

    def save(self, record: JobRecord, *, charge: bool = False) -> JobRecord:
        """Write a job's state; returns the job as the journal now holds it: ``record`` (with the
        options another replica added meanwhile), or the finished copy that won.

        A job this process holds the lease of is written fenced: only while the lease is still ours
        and the row not finished by someone else (a cancel from another replica). ``charge``: the
        job's ledger entry too, in the same transaction, only when the write landed. Losing the lease
        raises LeaseLost — except for a provider's answer to our own submission, which is recorded
        even over a row another replica declared uncertain meanwhile: the job exists upstream, and its
        id must not be lost. A job finished for good drops its lease in the same write.

        No write turns a finished job back into a running one, and whether the provider has a job
        (``submit_state``) is decided once, by the submission's answer. A write that does not land
        leaves the ledger as it is: the row's own cost is the truth, not the copy's.
        """
        with self._held_lock:
            token = self._held.get(record.job_id)
        done = record.terminal and (record.status != "completed" or record.finalized)
        values = {
            **_values(record),
            "me": self.replica,
            "token": token,
            "lease_s": self.lease_s,
            "done": done,
        }
        work = False
        with self._tx() as db:
            if token is not None:
                row = db.execute(
                    f"UPDATE mediamux_jobs SET {_SET_STATE}, "
                    "lease_owner = CASE WHEN %(done)s THEN NULL ELSE lease_owner END, "
                    "lease_expires = CASE WHEN %(done)s THEN NULL ELSE now() + make_interval(secs => %(lease_s)s) END "
                    "WHERE job_id = %(job_id)s AND lease_owner = %(me)s AND lease_token = %(token)s "
                    # Whether the provider has the job is decided once, by the submission's answer.
                    "AND (submit_state = 'pending' OR submit_state = %(submit_state)s) "
                    f"AND (status NOT IN {_TERMINAL_SQL} OR (status = 'completed' AND %(status)s = 'completed')) "
                    "RETURNING options_json",
                    values,
                ).fetchone()
                if row is not None:
                    if done:
                        self._drop(record.job_id, token)
                else:
                    self._drop(record.job_id, token)
                    row = db.execute(
                        f"UPDATE mediamux_jobs SET {_SET_STATE}, lease_owner = NULL, lease_expires = NULL "
                        "WHERE job_id = %(job_id)s AND submit_state IN ('pending', 'uncertain') "
                        "AND provider_job_id IS NULL AND %(submit_state)s = 'accepted' "
                        "AND (%(provider_job_id)s::text IS NOT NULL OR %(status)s = 'completed') "
                        "RETURNING options_json",
                        values,
                    ).fetchone()
                    if row is not None:
                        logger.warning(
                            "job %s: the provider's answer arrived after another server declared the submission "
                            "lost; recorded it (provider id %s)",
                            record.job_id,
                            record.provider_job_id,
                        )
                        work = True
                    else:
                        held = db.execute(
                            f"SELECT {_SELECT} FROM mediamux_jobs WHERE job_id = %s", (record.job_id,)
                        ).fetchone()
                        if held is not None and held["status"] not in TERMINAL_STATUSES:
                            raise LeaseLost(record.job_id)
                        # Finished by someone else: the row is the truth.
                        return _record(held) if held is not None else record
            else:
                row = db.execute(
                    f"INSERT INTO mediamux_jobs ({_SELECT}) VALUES ({_INSERT_VALUES}) "
                    f"ON CONFLICT (job_id) DO UPDATE SET {_SET_EXCLUDED} "
                    f"WHERE NOT (mediamux_jobs.status IN {_TERMINAL_SQL} AND EXCLUDED.status NOT IN {_TERMINAL_SQL}) "
                    "AND (mediamux_jobs.submit_state = 'pending' OR mediamux_jobs.submit_state = EXCLUDED.submit_state) "
                    "RETURNING options_json",
                    values,
                ).fetchone()
                if row is None:
                    # Not written: a finished row, or a submission another write already decided. The
                    # copy's options are still merged in (save_outputs asked on another replica).
                    if record.options:
                        held = db.execute(
                            "UPDATE mediamux_jobs SET options_json = options_json || %s WHERE job_id = %s "
                            f"RETURNING {_SELECT}",
                            (Jsonb(record.options), record.job_id),
                        ).fetchone()
                        db.execute("SELECT pg_notify(%s, %s)", (JOB_CHANNEL, record.job_id))
                    else:
                        held = db.execute(
                            f"SELECT {_SELECT} FROM mediamux_jobs WHERE job_id = %s", (record.job_id,)
                        ).fetchone()
                    return _record(held) if held is not None else record
                work = (record.status in ACTIVE_STATUSES and record.submit_state == "accepted") or (
                    record.status == "completed" and not record.finalized
                )
            if charge:
                entry = ledger_entry(record)
                if entry is not None:
                    db.execute(_LEDGER_UPSERT, _pg_ledger_row(entry))
            db.execute("SELECT pg_notify(%s, %s)", (JOB_CHANNEL, record.job_id))
            if work:
                db.execute("SELECT pg_notify(%s, '')", (WORK_CHANNEL,))
        options = row["options_json"] or {}
        return record if options == record.options else record.model_copy(update={"options": options})

    def get(self, job_id: str) -> JobRecord | None:
        with self._read() as db:
            row = db.execute(f"SELECT {_SELECT} FROM mediamux_jobs WHERE job_id = %s", (job_id,)).fetchone()
        return _record(row) if row else None

    def find_by_provider_id(self, provider: str, provider_job_id: str) -> JobRecord | None:
        with self._read() as db:
            row = db.execute(
                f"SELECT {_SELECT} FROM mediamux_jobs WHERE provider = %s AND provider_job_id = %s "
                "ORDER BY submitted_ts DESC LIMIT 1",
                (provider, provider_job_id),
            ).fetchone()
        return _record(row) if row else None

    def list(
        self,
        *,
        status: str | None = None,
        provider: str | None = None,
        limit: int = 20,
        principal: str | None = None,
    ) -> list[JobRecord]:
        clauses: list[str] = []
        params: list[Any] = []
        if principal is not None:
            clauses.append("principal = %s")
            params.append(principal)
        if status == "active":
            clauses.append("status = ANY(%s)")
            params.append(sorted(ACTIVE_STATUSES))
        elif status:
            clauses.append("status = %s")
            params.append(status)
        if provider:
            clauses.append("provider = %s")
            params.append(provider)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        with self._read() as db:
            rows = db.execute(
                f"SELECT {_SELECT} FROM mediamux_jobs {where} ORDER BY submitted_ts DESC, job_id DESC LIMIT %s",
                (*params, int(limit)),
            ).fetchall()
        return [_record(r) for r in rows]

    # -- ledger ----------------------------------------------------------------------------

    def record_cost(
        self,
        entry_id: str,
        *,
        provider: str,
        operation: str,
        session_id: str,
        cost: Cost,
        ts: float,
        always: bool = False,
        principal: str = LOCAL,
    ) -> None:
        """Upsert the charge for one job (or one non-job request): re-polls replace, never add."""
        cost = sane_cost(cost)
        if not always and cost.usd is None and cost.credits is None and cost.tokens is None:
            return
        with self._tx() as db:
            db.execute(
                _LEDGER_UPSERT,
                (
                    entry_id,
                    provider,
                    operation,
                    session_id,
                    cost.usd,
                    cost.credits,
                    cost.tokens,
                    cost.refunded,
                    ts,
                    principal,
                ),
            )

    def totals(
        self, session_id: str | None = None, *, since_ts: float | None = None, principal: str | None = None
    ) -> dict[str, Any]:
        clauses: list[str] = []
        params: list[Any] = []
        if principal is not None:
            clauses.append("principal = %s")
            params.append(principal)
        if session_id:
            clauses.append("session_id = %s")
            params.append(session_id)
        if since_ts is not None:
            clauses.append("recorded_ts >= %s")
            params.append(since_ts)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        with self._read() as db:
            rows = db.execute(
                "SELECT provider, "
                "SUM(CASE WHEN refunded THEN 0 ELSE usd END) AS usd, "
                "SUM(CASE WHEN refunded THEN 0 ELSE credits END) AS credits, "
                "SUM(tokens) AS tokens, COUNT(*) AS entries, "
                "SUM(CASE WHEN usd IS NULL THEN 1 ELSE 0 END) AS unpriced "
                f"FROM mediamux_ledger {where} GROUP BY provider ORDER BY provider",
                params,
            ).fetchall()
        per_provider = {
            r["provider"]: {
                "usd": r["usd"],
                "credits": r["credits"],
                "tokens": r["tokens"],
                "entries": int(r["entries"]),
                "entries_without_usd": int(r["unpriced"]),
            }
            for r in rows
        }
        usd = sum((v["usd"] or 0.0) for v in per_provider.values())
        return {"usd": round(usd, 6), "providers": per_provider}

    def spent_usd(self, session_id: str | None = None, *, principal: str | None = None) -> float:
        """Charged dollars, refunds excluded: all time, of one session, or of one principal; O(1),
        from the running sums (both filters at once are rare and summed from the ledger)."""
        if session_id and principal is not None:
            return float(self.totals(session_id, principal=principal)["usd"])
        scope = (
            SESSION + session_id if session_id else PRINCIPAL + principal if principal is not None else ALL
        )
        with self._read() as db:
            return _sums(db, scope)[0]

    def committed_usd(self, principal: str | None = None) -> float:
        """Reported spend plus what live jobs have reserved (of everybody, or of one principal)."""
        with self._read() as db:
            return self._committed(db, principal)

    @staticmethod
    def _committed(db: psycopg.Connection[Any], principal: str | None = None) -> float:
        spent, held = _sums(db, ALL if principal is None else PRINCIPAL + principal)
        return spent + held

    def rebuild_totals(self) -> None:
        """Recompute the running sums from the rows. The triggers keep them through every write, so
        this is for what bypasses row triggers (TRUNCATE, a restore of one table); writers wait for it."""
        with self._tx() as db:
            db.execute(_REBUILD_TOTALS.encode())

    def output_owners(self, uri: str) -> set[str]:
        with self._read() as db:
            rows = db.execute(
                "SELECT DISTINCT principal FROM mediamux_jobs WHERE result_json @> %s",
                (Jsonb({"saved": [{"uri": uri}]}),),
            ).fetchall()
        return {r["principal"] for r in rows}

    def foreign_output_uris(self, principal: str, *, limit: int = 5000) -> builtins.list[str]:
        with self._read() as db:
            rows = db.execute(
                "SELECT result_json FROM mediamux_jobs WHERE principal <> %s AND result_json ? 'saved' "
                "ORDER BY submitted_ts DESC LIMIT %s",
                (principal, int(limit)),
            ).fetchall()
        uris: builtins.list[str] = []
        for row in rows:
            for saved in (row["result_json"] or {}).get("saved") or []:
                if isinstance(saved, dict) and isinstance(saved.get("uri"), str):
                    uris.append(saved["uri"])
        return uris

    # -- audit -----------------------------------------------------------------------------

    def audit(
        self,
        *,
        principal: str,
        action: str,
        ts: float,
        tool: str | None = None,
        job_id: str | None = None,
        estimate_usd: float | None = None,
        cost_usd: float | None = None,
        detail: str | None = None,
    ) -> None:
        params = _audit_params(
            principal=principal,
            action=action,
            ts=ts,
            tool=tool,
            job_id=job_id,
            estimate_usd=estimate_usd,
            cost_usd=cost_usd,
            detail=detail,
        )
        with self._tx() as db:
            db.execute(_AUDIT_INSERT, params)

    def audit_trail(self, *, principal: str | None = None, limit: int = 50) -> builtins.list[dict[str, Any]]:
        where, params = ("WHERE a.principal = %s", (principal,)) if principal is not None else ("", ())
        with self._read() as db:
            rows = db.execute(
                "SELECT a.seq, a.ts, a.principal, a.action, a.tool, a.job_id, a.estimate_usd, "
                "COALESCE(a.cost_usd, CASE WHEN l.refunded THEN 0 ELSE l.usd END) AS cost_usd, a.detail "
                f"FROM mediamux_audit a LEFT JOIN mediamux_ledger l ON l.entry_id = a.job_id {where} "
                "ORDER BY a.seq DESC LIMIT %s",
                (*params, int(limit)),
            ).fetchall()
        return [dict(r) for r in rows]

    def price_history(self, provider: str, operation: str, price_key: str) -> float | None:
        with self._read() as db:
            row = db.execute(
                "SELECT MAX(usd) AS usd FROM (SELECT l.usd AS usd FROM mediamux_jobs j "
                "JOIN mediamux_ledger l ON l.entry_id = j.job_id WHERE j.provider = %s AND j.operation = %s "
                "AND j.price_key = %s AND l.usd IS NOT NULL AND l.refunded IS NOT TRUE "
                "ORDER BY j.submitted_ts DESC LIMIT 20) recent",
                (provider, operation, price_key),
            ).fetchone()
        return None if row is None or row["usd"] is None else float(row["usd"])

    def recent_durations(
        self, provider: str, operation: str, price_key: str | None, *, limit: int = 30
    ) -> builtins.list[float]:
        """Seconds the most recent completed (and polled) jobs of one kind took, newest first: the
        engine's recorded finish time, else submission to when it was seen finished."""
        # "= %s" or "IS NULL", not IS NOT DISTINCT FROM, which no index answers.
        key = "price_key IS NULL" if price_key is None else "price_key = %s"
        with self._read() as db:
            rows = db.execute(
                "SELECT COALESCE((options_json->>'_finished_s')::double precision, completed_ts - submitted_ts) "
                f"AS seconds FROM mediamux_jobs WHERE provider = %s AND operation = %s AND {key} "
                "AND status = 'completed' AND polls > 0 "
                "AND completed_ts IS NOT NULL ORDER BY completed_ts DESC LIMIT %s",
                (provider, operation, *(() if price_key is None else (price_key,)), int(limit)),
            ).fetchall()
        return [float(r["seconds"]) for r in rows if r["seconds"] is not None]

    # -- owners ----------------------------------------------------------------------------

    def beat(self, owner: str, *, host: str, pid: int, ts: float) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT INTO mediamux_owners (owner, host, pid, seen_ts) VALUES (%s, %s, %s, %s) "
                "ON CONFLICT (owner) DO UPDATE SET seen_ts = EXCLUDED.seen_ts",
                (owner, host, pid, ts),
            )

    def owner(self, owner: str) -> tuple[str, int, float] | None:
        with self._read() as db:
            row = db.execute(
                "SELECT host, pid, seen_ts FROM mediamux_owners WHERE owner = %s", (owner,)
            ).fetchone()
        return None if row is None else (row["host"], int(row["pid"]), float(row["seen_ts"]))

    def forget_owner(self, owner: str) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM mediamux_owners WHERE owner = %s", (owner,))

    # -- leases ----------------------------------------------------------------------------

    def holds(self, job_id: str) -> bool:
        with self._held_lock:
            return job_id in self._held

    def held(self) -> builtins.list[str]:
        with self._held_lock:
            return list(self._held)

    def _drop(self, job_id: str, token: int) -> None:
        with self._held_lock:
            if self._held.get(job_id) == token:
                del self._held[job_id]

    def lease_due(
        self, *, pollable: builtins.list[str], finishable: builtins.list[str], limit: int
    ) -> builtins.list[JobRecord]:
        with self._tx() as db:
            rows = db.execute(
                "WITH due AS (SELECT job_id FROM mediamux_jobs "
                "WHERE (lease_owner IS NULL OR lease_expires < now()) AND ("
                # A submission whose replica stopped renewing (not ours: we are alive, merely late).
                "   (submit_state = 'pending' AND lease_owner IS DISTINCT FROM %(me)s)"
                "   OR (status IN ('queued', 'running') AND submit_state = 'accepted' AND provider_job_id IS NOT NULL"
                "       AND provider || '/' || operation = ANY(%(pollable)s))"
                "   OR (status = 'completed' AND NOT finalized AND provider || '/' || operation = ANY(%(finishable)s))"
                ") ORDER BY submitted_ts LIMIT %(limit)s FOR UPDATE SKIP LOCKED) "
                "UPDATE mediamux_jobs j SET lease_owner = %(me)s, "
                "lease_expires = now() + make_interval(secs => %(lease_s)s), lease_token = j.lease_token + 1 "
                f"FROM due WHERE j.job_id = due.job_id RETURNING {_SELECT_J}, j.lease_token",
                {
                    "pollable": pollable,
                    "finishable": finishable,
                    "limit": int(limit),
                    "me": self.replica,
                    "lease_s": self.lease_s,
                },
            ).fetchall()
        with self._held_lock:
            for row in rows:
                self._held[row["job_id"]] = int(row["lease_token"])
        return [_record(r) for r in rows]

    def renew(self) -> builtins.list[str]:
        with self._held_lock:
            snapshot = dict(self._held)
        if not snapshot:
            return []
        with self._tx() as db:
            kept = {
                r["job_id"]
                for r in db.execute(
                    "UPDATE mediamux_jobs j SET lease_expires = now() + make_interval(secs => %s) "
                    "FROM unnest(%s::text[], %s::bigint[]) AS h(job_id, token) "
                    "WHERE j.job_id = h.job_id AND j.lease_owner = %s AND j.lease_token = h.token "
                    "RETURNING j.job_id",
                    (self.lease_s, list(snapshot), list(snapshot.values()), self.replica),
                ).fetchall()
            }
        lost = [job_id for job_id in snapshot if job_id not in kept]
        for job_id in lost:
            self._drop(job_id, snapshot[job_id])
        return lost

    def release(self, job_id: str) -> None:
        with self._held_lock:
            token = self._held.get(job_id)
        if token is None:
            return
        with self._tx() as db:
            db.execute(
                "UPDATE mediamux_jobs SET lease_owner = NULL, lease_expires = NULL "
                "WHERE job_id = %s AND lease_owner = %s AND lease_token = %s",
                (job_id, self.replica, token),
            )
            db.execute("SELECT pg_notify(%s, '')", (WORK_CHANNEL,))
        self._drop(job_id, token)

    def release_all(self, *, keep_pending: bool = True) -> int:
        with self._held_lock:
            snapshot = dict(self._held)
        if not snapshot:
            return 0
        with self._tx() as db:
            released = [
                r["job_id"]
                for r in db.execute(
                    "UPDATE mediamux_jobs j SET lease_owner = NULL, lease_expires = NULL "
                    "FROM unnest(%s::text[], %s::bigint[]) AS h(job_id, token) "
                    "WHERE j.job_id = h.job_id AND j.lease_owner = %s AND j.lease_token = h.token "
                    "AND (NOT %s OR j.submit_state <> 'pending') RETURNING j.job_id",
                    (list(snapshot), list(snapshot.values()), self.replica, keep_pending),
                ).fetchall()
            ]
            if released:
                db.execute("SELECT pg_notify(%s, '')", (WORK_CHANNEL,))
        for job_id in released:
            self._drop(job_id, snapshot[job_id])
        return len(released)

    # -- change notices --------------------------------------------------------------------

    @asynccontextmanager
    async def watch(self, job_id: str) -> AsyncIterator[_Watch]:
        """Notice of writes to ``job_id`` from every replica, from now until the block ends."""
        watch = _Watch()
        self._watchers.setdefault(job_id, set()).add(watch)
        try:
            yield watch
        finally:
            watchers = self._watchers.get(job_id)
            if watchers is not None:
                watchers.discard(watch)
                if not watchers:
                    del self._watchers[job_id]

    async def work_announced(self, within_s: float) -> None:
        with anyio.move_on_after(max(0.0, within_s)):
            await self._work.wait()
        self._work = anyio.Event()

    async def listen(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Deliver the database's change notices to this process's waiters, reconnecting as needed."""
        started = False
        while True:
            try:
                conn = await psycopg.AsyncConnection.connect(
                    self.url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S
                )
            except psycopg.Error as exc:
                if not started:
                    raise JournalError(
                        f"cannot listen for changes at {self.location}: {_describe(exc)}"
                    ) from None
                logger.warning("listening for job changes: %s; retrying", _describe(exc))
                await anyio.sleep(LISTEN_RETRY_S)
                continue
            try:
                async with conn:
                    await conn.execute(f"LISTEN {JOB_CHANNEL}")
                    await conn.execute(f"LISTEN {WORK_CHANNEL}")
                    if not started:
                        started = True
                        task_status.started()
                    else:
                        self._wake_all()  # notices sent while we were away are lost: everyone re-reads
                    async for notice in conn.notifies():
                        if notice.channel == JOB_CHANNEL:
                            for watch in list(self._watchers.get(notice.payload, ())):
                                watch.notify()
                        else:
                            self._work.set()
            except psycopg.Error as exc:
                logger.warning("listening for job changes: %s; reconnecting", _describe(exc))
                self._wake_all()
                await anyio.sleep(LISTEN_RETRY_S)

    def _wake_all(self) -> None:
        for watchers in self._watchers.values():
            for watch in watchers:
                watch.notify()
        self._work.set()


_LEDGER_UPSERT = (
    "INSERT INTO mediamux_ledger (entry_id, provider, operation, session_id, usd, credits, tokens, "
    "refunded, recorded_ts, principal) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (entry_id) DO "
    "UPDATE SET usd = EXCLUDED.usd, credits = EXCLUDED.credits, tokens = EXCLUDED.tokens, "
    "refunded = EXCLUDED.refunded"
)


_AUDIT_FIELDS = ("ts", "principal", "action", "tool", "job_id", "estimate_usd", "cost_usd", "detail")
_AUDIT_INSERT = (
    f"INSERT INTO mediamux_audit ({', '.join(_AUDIT_FIELDS)}) "
    f"VALUES ({', '.join(f'%(audit_{f})s' for f in _AUDIT_FIELDS)})"
)


def _audit_params(
    *,
    principal: str,
    action: str,
    ts: float,
    tool: str | None = None,
    job_id: str | None = None,
    estimate_usd: float | None = None,
    cost_usd: float | None = None,
    detail: str | None = None,
) -> dict[str, Any]:
    """The parameters of ``_AUDIT_INSERT``; the signature of ``audit()``, so a claim's ``audit`` is
    checked the same way."""
    given = {
        "ts": ts,
        "principal": principal,
        "action": action,
        "tool": tool,
        "job_id": job_id,
        "estimate_usd": estimate_usd,
        "cost_usd": cost_usd,
        "detail": detail,
    }
    return {f"audit_{k}": v for k, v in given.items()}


def _sums(db: psycopg.Connection[Any], scope: str) -> tuple[float, float]:
    """(charged, held) of one scope, rounded as the SQLite journal rounds its own (where a sum of
    floating-point increments can land a hair off the rows' sum) so both backends answer alike."""
    row = db.execute(
        "SELECT spent_usd, reserved_usd FROM mediamux_totals WHERE scope = %s", (scope,)
    ).fetchone()
    if row is None:
        return 0.0, 0.0
    return max(0.0, round(float(row["spent_usd"]), 9)), max(0.0, round(float(row["reserved_usd"]), 9))


def _pg_ledger_row(entry: tuple[Any, ...]) -> tuple[Any, ...]:
    refunded = entry[7]
    return (*entry[:7], None if refunded is None else bool(refunded), *entry[8:])


def _configure(conn: psycopg.Connection[Any]) -> None:
    # A statement stuck behind a lock, or a database gone silent, must fail rather than stall a job.
    conn.execute(f"SET statement_timeout = '{STATEMENT_TIMEOUT}'")
    conn.execute("SET application_name = 'mediamux'")


def _values(r: JobRecord) -> dict[str, Any]:
    return {
        "job_id": r.job_id,
        "provider": r.provider,
        "operation": r.operation,
        "dedup_key": r.dedup_key,
        "args_json": Jsonb(r.args),
        "options_json": Jsonb(r.options),
        "provider_job_id": r.provider_job_id,
        "status": r.status,
        "provider_status": r.provider_status,
        "submit_state": r.submit_state,
        "result_json": Jsonb(r.result) if r.result is not None else None,
        "error_json": Jsonb(r.error.model_dump(mode="json", by_alias=True)) if r.error else None,
        "cost_json": Jsonb(r.cost.model_dump(mode="json")),
        "session_id": r.session_id,
        "submitted_ts": r.submitted_ts,
        "updated_ts": r.updated_ts,
        "completed_ts": r.completed_ts,
        "polls": r.polls,
        "finalized": r.finalized,
        "reserved_usd": r.reserved_usd,
        "price_key": r.price_key,
        "owner": r.owner,
        "checked_ts": r.checked_ts,
        "principal": r.principal,
    }


def _record(row: dict[str, Any]) -> JobRecord:
    return JobRecord(
        job_id=row["job_id"],
        provider=row["provider"],
        operation=row["operation"],
        dedup_key=row["dedup_key"],
        args=row["args_json"],
        options=row["options_json"] or {},
        provider_job_id=row["provider_job_id"],
        status=row["status"],
        provider_status=row["provider_status"],
        submit_state=row["submit_state"],
        result=row["result_json"],
        error=JobError.model_validate(row["error_json"]) if row["error_json"] else None,
        cost=Cost.model_validate(row["cost_json"]) if row["cost_json"] else Cost(),
        session_id=row["session_id"],
        submitted_ts=row["submitted_ts"],
        updated_ts=row["updated_ts"],
        completed_ts=row["completed_ts"],
        polls=row["polls"],
        finalized=bool(row["finalized"]),
        reserved_usd=row["reserved_usd"],
        price_key=row["price_key"],
        owner=row["owner"],
        checked_ts=row["checked_ts"],
        principal=row["principal"],
    )
