"""The job journal and the cost ledger: one SQLite database under ``MEDIAMUX_HOME``.

A job row is written before its submission leaves this machine and updated on every state
change, so a crash, a client timeout or a restart never loses a job that was paid for. The
ledger holds one row per job (re-polls overwrite it), so totals never count a charge twice.
"""

from __future__ import annotations

import builtins
import contextlib
import errno
import json
import sqlite3
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from mediamux.errors import MediamuxError
from mediamux.jobs.models import ACTIVE_STATUSES, TERMINAL_STATUSES, JobError, JobRecord
from mediamux.principals import LOCAL
from mediamux.providers.cost import Cost

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    job_id TEXT PRIMARY KEY,
    provider TEXT NOT NULL,
    operation TEXT NOT NULL,
    dedup_key TEXT NOT NULL,
    args_json TEXT NOT NULL,
    options_json TEXT NOT NULL DEFAULT '{}',
    provider_job_id TEXT,
    status TEXT NOT NULL,
    provider_status TEXT,
    submit_state TEXT NOT NULL,
    result_json TEXT,
    error_json TEXT,
    cost_json TEXT,
    session_id TEXT NOT NULL,
    submitted_ts REAL NOT NULL,
    updated_ts REAL NOT NULL,
    completed_ts REAL,
    polls INTEGER NOT NULL DEFAULT 0,
    finalized INTEGER NOT NULL DEFAULT 0,
    reserved_usd REAL,
    price_key TEXT,
    owner TEXT,
    checked_ts REAL,
    principal TEXT NOT NULL DEFAULT 'local'
);
CREATE INDEX IF NOT EXISTS jobs_price ON jobs (provider, operation, price_key, submitted_ts);
CREATE TABLE IF NOT EXISTS owners (owner TEXT PRIMARY KEY, host TEXT NOT NULL, pid INTEGER NOT NULL, seen_ts REAL NOT NULL);
CREATE INDEX IF NOT EXISTS jobs_dedup ON jobs (dedup_key, principal, submitted_ts);
CREATE INDEX IF NOT EXISTS jobs_recent ON jobs (submitted_ts);
CREATE INDEX IF NOT EXISTS jobs_provider_id ON jobs (provider, provider_job_id, submitted_ts);
CREATE TABLE IF NOT EXISTS ledger (
    entry_id TEXT PRIMARY KEY,
    provider TEXT NOT NULL,
    operation TEXT NOT NULL,
    session_id TEXT NOT NULL,
    usd REAL,
    credits REAL,
    tokens REAL,
    refunded INTEGER,
    recorded_ts REAL NOT NULL,
    principal TEXT NOT NULL DEFAULT 'local'
);
CREATE INDEX IF NOT EXISTS ledger_session ON ledger (session_id);
CREATE INDEX IF NOT EXISTS jobs_principal ON jobs (principal, submitted_ts);
CREATE INDEX IF NOT EXISTS jobs_live ON jobs (principal, submitted_ts) WHERE status IN ('queued', 'running');
CREATE INDEX IF NOT EXISTS ledger_principal ON ledger (principal);
CREATE TABLE IF NOT EXISTS audit (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    ts REAL NOT NULL,
    principal TEXT NOT NULL,
    action TEXT NOT NULL,
    tool TEXT,
    job_id TEXT,
    estimate_usd REAL,
    cost_usd REAL,
    detail TEXT
);
CREATE INDEX IF NOT EXISTS audit_principal ON audit (principal, ts);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS totals (
    scope TEXT PRIMARY KEY,
    spent_usd REAL NOT NULL DEFAULT 0,
    reserved_usd REAL NOT NULL DEFAULT 0
);
"""

SCHEMA_VERSION = 6

# Running sums kept beside the rows they sum, in the same transactions (table ``totals``): the budget
# checks of every claim and the session spend of every job view would otherwise scan the whole ledger
# and journal, which grows without end on a long-running server. One row per scope:
ALL = "all"  # everything: charged dollars (refunds excluded) and what live jobs hold
SESSION = "session:"  # + session id: its charged dollars
PRINCIPAL = "principal:"  # + principal: their charged dollars and what their live jobs hold

# Recomputes every running sum from the rows (a migration, and ``rebuild_totals``).
_REBUILD_TOTALS = """
DELETE FROM totals;
INSERT INTO totals (scope, spent_usd, reserved_usd) SELECT 'all',
    (SELECT COALESCE(SUM(CASE WHEN refunded = 1 THEN 0 ELSE usd END), 0) FROM ledger),
    (SELECT COALESCE(SUM(reserved_usd), 0) FROM jobs);
INSERT INTO totals (scope, spent_usd) SELECT 'session:' || session_id,
    COALESCE(SUM(CASE WHEN refunded = 1 THEN 0 ELSE usd END), 0) FROM ledger GROUP BY session_id;
INSERT INTO totals (scope, spent_usd, reserved_usd) SELECT 'principal:' || principal, SUM(spent), SUM(held) FROM (
    SELECT principal, COALESCE(SUM(CASE WHEN refunded = 1 THEN 0 ELSE usd END), 0) AS spent, 0 AS held
        FROM ledger GROUP BY principal
    UNION ALL
    SELECT principal, 0, COALESCE(SUM(reserved_usd), 0) FROM jobs GROUP BY principal
) GROUP BY principal;
"""

# Each step takes the schema from version N to N + 1, in one transaction.
MIGRATIONS: dict[int, str] = {
    # 1 -> 2: "outputs saved" was a key inside the caller's options; it is a column of its own now.
    1: """
ALTER TABLE jobs ADD COLUMN finalized INTEGER NOT NULL DEFAULT 0;
UPDATE jobs SET finalized = 1 WHERE json_extract(options_json, '$._finalized') = 1;
UPDATE jobs SET options_json = json_remove(options_json, '$._finalized')
    WHERE json_extract(options_json, '$._finalized') IS NOT NULL;
""",
    # 2 -> 3: budget reservations (what a live job may still cost), the price key its estimate is
    # learned under, and which process submitted it (a submission is orphaned only once that is gone).
    2: """
ALTER TABLE jobs ADD COLUMN reserved_usd REAL;
ALTER TABLE jobs ADD COLUMN price_key TEXT;
ALTER TABLE jobs ADD COLUMN owner TEXT;
CREATE INDEX IF NOT EXISTS jobs_price ON jobs (provider, operation, price_key);
CREATE TABLE IF NOT EXISTS owners (owner TEXT PRIMARY KEY, host TEXT NOT NULL, pid INTEGER NOT NULL, seen_ts REAL NOT NULL);
""",
    # 3 -> 4: when the provider was last asked about a job, so a status read knows whether to ask again.
    3: """
ALTER TABLE jobs ADD COLUMN checked_ts REAL;
UPDATE jobs SET checked_ts = updated_ts WHERE submit_state = 'accepted';
""",
    # 4 -> 5: whose job and whose charge (sign-in over HTTP); everything before was the local user's.
    # And the audit trail of paid submissions, cancels and deletions.
    4: """
ALTER TABLE jobs ADD COLUMN principal TEXT NOT NULL DEFAULT 'local';
ALTER TABLE ledger ADD COLUMN principal TEXT NOT NULL DEFAULT 'local';
CREATE INDEX IF NOT EXISTS jobs_principal ON jobs (principal, submitted_ts);
CREATE INDEX IF NOT EXISTS ledger_principal ON ledger (principal);
CREATE TABLE IF NOT EXISTS audit (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    ts REAL NOT NULL,
    principal TEXT NOT NULL,
    action TEXT NOT NULL,
    tool TEXT,
    job_id TEXT,
    estimate_usd REAL,
    cost_usd REAL,
    detail TEXT
);
CREATE INDEX IF NOT EXISTS audit_principal ON audit (principal, ts);
""",
    # 5 -> 6: running sums of spend and reservations (all, per session, per principal), read in O(1);
    # indexes that let the live-job list, the provider-id lookup, the price history and the learned
    # durations stop after their first rows however long the journal grows. Every index is a page more
    # to write per paid submission, so the live jobs have a partial one (small, whatever the history).
    # The duplicate lookup names the principal too: with (dedup_key, submitted_ts) only, SQLite chose
    # the principal's index and read every job of the window for each claim.
    5: """
DROP INDEX IF EXISTS jobs_price;
CREATE INDEX jobs_price ON jobs (provider, operation, price_key, submitted_ts);
DROP INDEX IF EXISTS jobs_provider_id;
CREATE INDEX jobs_provider_id ON jobs (provider, provider_job_id, submitted_ts);
DROP INDEX IF EXISTS jobs_dedup;
CREATE INDEX jobs_dedup ON jobs (dedup_key, principal, submitted_ts);
CREATE INDEX IF NOT EXISTS jobs_live ON jobs (principal, submitted_ts) WHERE status IN ('queued', 'running');
CREATE TABLE IF NOT EXISTS totals (
    scope TEXT PRIMARY KEY,
    spent_usd REAL NOT NULL DEFAULT 0,
    reserved_usd REAL NOT NULL DEFAULT 0
);
"""
    + _REBUILD_TOTALS,
}

# Fixed when a job is claimed; the rest (_MUTABLE) is what its later states change, so an update
# leaves the indexes over the fixed columns (duplicate key, submission time, principal, price key) alone.
_FIXED = "job_id, provider, operation, dedup_key, args_json, session_id, submitted_ts, price_key, principal"
_MUTABLE = (
    "options_json, provider_job_id, status, provider_status, submit_state, result_json, error_json, "
    "cost_json, updated_ts, completed_ts, polls, finalized, reserved_usd, owner, checked_ts"
)
_COLUMNS = f"{_FIXED}, {_MUTABLE}"
_PLACEHOLDERS = ", ".join("?" * len(_COLUMNS.split(",")))
_LIVE = "status IN ('queued', 'running')"
assert frozenset(("queued", "running")) == ACTIVE_STATUSES  # the partial index jobs_live says the same
_UPDATE = f"UPDATE jobs SET {', '.join(f'{c} = ?' for c in _MUTABLE.split(', '))} WHERE job_id = ?"


class JournalError(MediamuxError):
    """The journal cannot be used as it is; the message says what to do."""

    error_class = "provider_error"


class OverBudget(Exception):
    """A new job's reservation would take the committed spend past the budget."""

    def __init__(
        self, committed_usd: float, reserved_usd: float | None, *, principal: str | None = None
    ) -> None:
        super().__init__(f"committed {committed_usd}, reserving {reserved_usd}")
        self.committed_usd = committed_usd
        self.reserved_usd = reserved_usd
        # Set when the principal's own budget, not the server's, is what ran out.
        self.principal = principal


class JournalWriteError(JournalError):
    """A write did not reach the journal (disk full, a lock held too long, a read-only folder)."""


def _describe(exc: BaseException, busy_timeout_s: float) -> str:
    text = str(exc)
    if "disk is full" in text or getattr(exc, "errno", None) == errno.ENOSPC:
        return "the disk is full"
    if "locked" in text or "busy" in text:
        return f"another program held the journal's write lock for more than {busy_timeout_s:g} s"
    code = getattr(exc, "errno", None)
    if "readonly" in text or "read-only" in text.lower() or code in (errno.EROFS, errno.EACCES, errno.EPERM):
        return "the journal's folder is read-only"
    return text or type(exc).__name__


class Journal:
    shared = False  # one host: the engine coordinates pollers in-process

    def __init__(self, path: Path, *, busy_timeout_s: float = 10.0) -> None:
        self.path = path
        self.location = str(path)
        self.busy_timeout_s = busy_timeout_s
        try:
            # Prompts, paths and transcripts live here: the folder and the file are the user's alone.
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fresh = not path.exists()
            # Writes go through one connection (used from worker threads, so a held lock never stalls
            # the event loop); reads through another, which WAL lets proceed while a write waits.
            self._db = self._connect(path)
            self._reader = self._connect(path)
            if fresh:
                path.chmod(0o600)
        except (OSError, sqlite3.Error) as exc:
            raise JournalError(
                f"cannot open the journal at {path}: {_describe(exc, busy_timeout_s)}; set MEDIAMUX_HOME to a "
                "folder you can write to"
            ) from None
        self._lock = threading.RLock()
        self._rlock = threading.RLock()
        with self._lock:
            try:
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute("PRAGMA synchronous=NORMAL")
                self._migrate()
            except sqlite3.DatabaseError as exc:
                self.close()
                if isinstance(exc, sqlite3.OperationalError) and "not a database" not in str(exc):
                    raise JournalError(
                        f"cannot use the journal at {path}: {_describe(exc, busy_timeout_s)}; set MEDIAMUX_HOME "
                        "to a folder you can write to, or stop the program holding it"
                    ) from None
                raise JournalError(
                    f"the journal at {path} is damaged or is not a mediamux journal ({exc}); move it aside "
                    f"(mv {path} {path}.broken) and mediamux starts a new one; the old file can still be read "
                    "with sqlite3"
                ) from None
            except BaseException:
                self.close()
                raise

    def _connect(self, path: Path) -> sqlite3.Connection:
        db = sqlite3.connect(path, timeout=self.busy_timeout_s, isolation_level=None, check_same_thread=False)
        db.row_factory = sqlite3.Row
        return db

    def _migrate(self) -> None:
        """Create the schema, or bring a journal written by an older release up to date."""
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            exists = db.execute("SELECT 1 FROM sqlite_master WHERE name = 'meta'").fetchone() is not None
            row = (
                db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
                if exists
                else None
            )
            version = int(row[0]) if row is not None else None
            found = version
            if version is None:
                for statement in SCHEMA.split(";"):
                    if statement.strip():
                        db.execute(statement)
                version = SCHEMA_VERSION
            if version > SCHEMA_VERSION:
                raise JournalError(
                    f"the journal {self.path} was written by a newer mediamux (schema {version}, this one reads "
                    f"up to {SCHEMA_VERSION}); upgrade mediamux, or point MEDIAMUX_HOME at another folder"
                )
            while version < SCHEMA_VERSION:
                for statement in MIGRATIONS[version].split(";"):
                    if statement.strip():
                        db.execute(statement)
                version += 1
            if version != found:
                # Only when it changed: an opening that writes nothing leaves no WAL to checkpoint.
                db.execute(
                    "INSERT OR REPLACE INTO meta (key, value) VALUES ('schema_version', ?)", (str(version),)
                )
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    def close(self) -> None:
        self._db.close()
        self._reader.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One IMMEDIATE transaction; a failure to write is a JournalWriteError that says why."""
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise JournalWriteError(_describe(exc, self.busy_timeout_s)) from exc
            try:
                yield self._db
                self._db.execute("COMMIT")
            except (sqlite3.Error, OSError) as exc:
                self._rollback()
                raise JournalWriteError(_describe(exc, self.busy_timeout_s)) from exc
            except BaseException:
                self._rollback()
                raise

    def _rollback(self) -> None:
        # SQLite may already have rolled back on its own (a full disk does).
        with contextlib.suppress(sqlite3.Error):
            self._db.execute("ROLLBACK")

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

        The duplicate check, the budget check and the insert (with the record's reservation)
        happen in one IMMEDIATE transaction, so racing calls — in this process or another one
        sharing the file — create one job per identical request and can never commit more than
        ``budget_usd`` between them (nor more than ``principal_budget_usd`` for the record's
        principal). Duplicates are looked for among the principal's own jobs only. Returns the job
        to use and whether it is new. ``audit``: the fields of ``audit()``, written with a new job in
        the same transaction.

        Raises:
            OverBudget: the committed spend plus this job's reservation would pass ``budget_usd``.
        """
        with self._write() as db:
            if window_start_ts is not None:
                existing = self._duplicate(db, record.dedup_key, window_start_ts, record.principal)
                if existing is not None:
                    return existing, False
            reserve = record.reserved_usd or 0.0
            if budget_usd is not None:
                committed = self._committed(db)
                if committed + reserve > budget_usd + 1e-9:
                    raise OverBudget(committed, record.reserved_usd)
            if principal_budget_usd is not None:
                committed = self._committed(db, record.principal)
                if committed + reserve > principal_budget_usd + 1e-9:
                    raise OverBudget(committed, record.reserved_usd, principal=record.principal)
            db.execute(
                f"INSERT INTO jobs ({_COLUMNS}) VALUES ({_PLACEHOLDERS})",
                _values(record),
            )
            _hold(db, record.principal, reserve)
            if audit is not None:
                _audit(db, **audit)
        return record, True

    def find_duplicate(
        self, dedup_key: str, window_start_ts: float, principal: str = LOCAL
    ) -> JobRecord | None:
        with self._rlock:
            return self._duplicate(self._reader, dedup_key, window_start_ts, principal)

    @staticmethod
    def _duplicate(
        db: sqlite3.Connection, dedup_key: str, window_start_ts: float, principal: str = LOCAL
    ) -> JobRecord | None:
        """The job an identical request of the same principal inside the window should return: one
        that is running, finished well, or whose outcome is unknown (it may have been paid for)."""
        row = db.execute(
            f"SELECT {_COLUMNS} FROM jobs WHERE dedup_key = ? AND submitted_ts >= ? AND principal = ? "
            "AND (status IN ('queued', 'running', 'completed') OR submit_state = 'uncertain') "
            "ORDER BY submitted_ts DESC LIMIT 1",
            (dedup_key, window_start_ts, principal),
        ).fetchone()
        return _record(row) if row is not None else None

    def save(self, record: JobRecord, *, charge: bool = False) -> JobRecord:
        """Write a job's state; a finished job is never overwritten by an older, unfinished copy
        (another process, or a waiter that read the row before it finished). ``charge``: its ledger
        entry too, in the same transaction, so the budget never sees the reservation gone and the
        charge not yet there. Returns the job as the journal now holds it: ``record``, or the
        finished copy that won."""
        with self._write() as db:
            row = db.execute(
                "SELECT status, reserved_usd FROM jobs WHERE job_id = ?", (record.job_id,)
            ).fetchone()
            if row is not None and row["status"] in TERMINAL_STATUSES and not record.terminal:
                held = db.execute(
                    f"SELECT {_COLUMNS} FROM jobs WHERE job_id = ?", (record.job_id,)
                ).fetchone()
                return _record(held)
            if row is None:
                db.execute(f"INSERT INTO jobs ({_COLUMNS}) VALUES ({_PLACEHOLDERS})", _values(record))
            else:
                db.execute(_UPDATE, _changes(record))
            old = row["reserved_usd"] if row is not None else None
            _hold(db, record.principal, (record.reserved_usd or 0.0) - (old or 0.0))
            if charge:
                entry = ledger_entry(record)
                if entry is not None:
                    _charge(db, entry)
        return record

    def get(self, job_id: str) -> JobRecord | None:
        with self._rlock:
            row = self._reader.execute(f"SELECT {_COLUMNS} FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
        return _record(row) if row else None

    def find_by_provider_id(self, provider: str, provider_job_id: str) -> JobRecord | None:
        with self._rlock:
            row = self._reader.execute(
                f"SELECT {_COLUMNS} FROM jobs WHERE provider = ? AND provider_job_id = ? "
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
        """Newest first; ``principal`` None lists everybody's (the operator's view)."""
        clauses, params = [], []
        if principal is not None:
            clauses.append("principal = ?")
            params.append(principal)
        if status == "active":
            # Spelled out, not bound: only then does SQLite see that the partial index jobs_live applies.
            clauses.append(_LIVE)
        elif status:
            clauses.append("status = ?")
            params.append(status)
        if provider:
            clauses.append("provider = ?")
            params.append(provider)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        with self._rlock:
            rows = self._reader.execute(
                # job_id breaks ties, so every LIMIT lists a prefix of one order and listings can page.
                f"SELECT {_COLUMNS} FROM jobs {where} ORDER BY submitted_ts DESC, job_id DESC LIMIT ?",
                (*params, int(limit)),
            ).fetchall()
        return [_record(r) for r in rows]

    def foreign_output_uris(self, principal: str, *, limit: int = 5000) -> builtins.list[str]:
        """mediamux://outputs/ links that other principals' jobs saved (newest jobs first)."""
        with self._rlock:
            rows = self._reader.execute(
                "SELECT result_json FROM jobs WHERE principal != ? AND result_json IS NOT NULL "
                "AND instr(result_json, '\"saved\"') > 0 ORDER BY submitted_ts DESC LIMIT ?",
                (principal, int(limit)),
            ).fetchall()
        uris: builtins.list[str] = []
        for (raw,) in rows:
            for saved in json.loads(raw).get("saved") or []:
                if isinstance(saved, dict) and isinstance(saved.get("uri"), str):
                    uris.append(saved["uri"])
        return uris

    def output_owners(self, uri: str) -> set[str]:
        """The principals whose jobs saved the output at ``uri`` (a mediamux://outputs/ link)."""
        needle = json.dumps(uri)
        with self._rlock:
            rows = self._reader.execute(
                "SELECT DISTINCT principal FROM jobs WHERE result_json IS NOT NULL AND instr(result_json, ?) > 0",
                (needle,),
            ).fetchall()
        return {r[0] for r in rows}

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
        """Upsert the charge for one job (or one non-job request): re-polls replace, never add.

        ``always``: record the entry even with nothing reported (a job the provider accepted), so
        the ledger lists every paid job and says which providers report no figure."""
        cost = sane_cost(cost)
        if not always and cost.usd is None and cost.credits is None and cost.tokens is None:
            return
        with self._write() as db:
            _charge(
                db,
                (
                    entry_id,
                    provider,
                    operation,
                    session_id,
                    cost.usd,
                    cost.credits,
                    cost.tokens,
                    None if cost.refunded is None else int(cost.refunded),
                    ts,
                    principal,
                ),
            )

    def totals(
        self, session_id: str | None = None, *, since_ts: float | None = None, principal: str | None = None
    ) -> dict[str, Any]:
        """Spend per provider: charged USD (refunds excluded), credits, tokens, entries; for one
        session, or for entries first recorded since ``since_ts``, or all time; of one principal,
        or of everybody."""
        clauses: list[str] = []
        params: tuple[Any, ...] = ()
        if principal is not None:
            clauses.append("principal = ?")
            params += (principal,)
        if session_id:
            clauses.append("session_id = ?")
            params += (session_id,)
        if since_ts is not None:
            clauses.append("recorded_ts >= ?")
            params += (since_ts,)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        with self._rlock:
            rows = self._reader.execute(
                "SELECT provider, "
                "SUM(CASE WHEN refunded = 1 THEN 0 ELSE usd END) AS usd, "
                "SUM(CASE WHEN refunded = 1 THEN 0 ELSE credits END) AS credits, "
                "SUM(tokens) AS tokens, COUNT(*) AS entries, "
                "SUM(CASE WHEN usd IS NULL THEN 1 ELSE 0 END) AS unpriced "
                f"FROM ledger {where} GROUP BY provider ORDER BY provider",
                params,
            ).fetchall()
        per_provider = {
            r["provider"]: {
                "usd": r["usd"],
                "credits": r["credits"],
                "tokens": r["tokens"],
                "entries": r["entries"],
                "entries_without_usd": r["unpriced"],
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
        with self._rlock:
            return _sums(self._reader, scope)[0]

    def committed_usd(self, principal: str | None = None) -> float:
        """Reported spend plus what live jobs have reserved: what a budget is checked against
        (the server's, or with ``principal`` that principal's)."""
        with self._rlock:
            return self._committed(self._reader, principal)

    @staticmethod
    def _committed(db: sqlite3.Connection, principal: str | None = None) -> float:
        spent, held = _sums(db, ALL if principal is None else PRINCIPAL + principal)
        return spent + held

    def rebuild_totals(self) -> None:
        """Recompute the running sums from the rows (after rows were written by other means)."""
        with self._write() as db:
            for statement in _REBUILD_TOTALS.split(";"):
                if statement.strip():
                    db.execute(statement)

    # -- audit: who spent, cancelled or deleted what -------------------------------------------

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
        with self._write() as db:
            _audit(
                db,
                principal=principal,
                action=action,
                ts=ts,
                tool=tool,
                job_id=job_id,
                estimate_usd=estimate_usd,
                cost_usd=cost_usd,
                detail=detail,
            )

    def audit_trail(self, *, principal: str | None = None, limit: int = 50) -> builtins.list[dict[str, Any]]:
        """Newest first; with each job's reported cost as the ledger has it now."""
        where, params = ("WHERE a.principal = ?", (principal,)) if principal is not None else ("", ())
        with self._rlock:
            rows = self._reader.execute(
                "SELECT a.seq, a.ts, a.principal, a.action, a.tool, a.job_id, a.estimate_usd, "
                "COALESCE(a.cost_usd, CASE WHEN l.refunded = 1 THEN 0 ELSE l.usd END) AS cost_usd, a.detail "
                f"FROM audit a LEFT JOIN ledger l ON l.entry_id = a.job_id {where} "
                "ORDER BY a.seq DESC LIMIT ?",
                (*params, int(limit)),
            ).fetchall()
        return [dict(r) for r in rows]

    def price_history(self, provider: str, operation: str, price_key: str) -> float | None:
        """The most a recent job of this kind was charged in dollars, or None when none was priced."""
        with self._rlock:
            row = self._reader.execute(
                "SELECT MAX(usd) FROM (SELECT l.usd AS usd FROM jobs j JOIN ledger l ON l.entry_id = j.job_id "
                "WHERE j.provider = ? AND j.operation = ? AND j.price_key = ? AND l.usd IS NOT NULL "
                "AND (l.refunded IS NULL OR l.refunded = 0) ORDER BY j.submitted_ts DESC LIMIT 20)",
                (provider, operation, price_key),
            ).fetchone()
        return None if row is None or row[0] is None else float(row[0])

    def recent_durations(
        self, provider: str, operation: str, price_key: str | None, *, limit: int = 30
    ) -> builtins.list[float]:
        """How long the most recent completed jobs of one kind (provider, operation and price key: the
        MuAPI model) took, in seconds, newest submission first: what the engine recorded as the time from the
        provider's acceptance to its finish, or for rows without that, from submission to when the
        job was seen finished. Jobs that finished without being polled (answered at submission) say
        nothing about how long jobs take and are left out.

        Raises:
            JournalError: the journal could not be read.
        """
        try:
            with self._rlock:
                rows = self._reader.execute(
                    "SELECT COALESCE(json_extract(options_json, '$._finished_s'), completed_ts - submitted_ts) "
                    "FROM jobs WHERE provider = ? AND operation = ? AND price_key IS ? AND status = 'completed' "
                    "AND polls > 0 AND completed_ts IS NOT NULL ORDER BY submitted_ts DESC LIMIT ?",
                    (provider, operation, price_key, int(limit)),
                ).fetchall()
        except sqlite3.Error as exc:
            raise JournalError(f"cannot read the journal at {self.path}: {exc}") from exc
        return [float(r[0]) for r in rows if isinstance(r[0], int | float)]

    # -- owners: which process is alive to finish what it submitted --------------------------

    def beat(self, owner: str, *, host: str, pid: int, ts: float) -> None:
        with self._write() as db:
            db.execute(
                "INSERT INTO owners (owner, host, pid, seen_ts) VALUES (?, ?, ?, ?) "
                "ON CONFLICT(owner) DO UPDATE SET seen_ts = excluded.seen_ts",
                (owner, host, pid, ts),
            )

    def owner(self, owner: str) -> tuple[str, int, float] | None:
        """(host, pid, last heartbeat) of a process that submitted jobs, if it ever said so."""
        with self._rlock:
            row = self._reader.execute(
                "SELECT host, pid, seen_ts FROM owners WHERE owner = ?", (owner,)
            ).fetchone()
        return None if row is None else (row["host"], int(row["pid"]), float(row["seen_ts"]))

    def forget_owner(self, owner: str) -> None:
        with self._write() as db:
            db.execute("DELETE FROM owners WHERE owner = ?", (owner,))


def _audit(
    db: sqlite3.Connection,
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
    db.execute(
        "INSERT INTO audit (ts, principal, action, tool, job_id, estimate_usd, cost_usd, detail) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (ts, principal, action, tool, job_id, estimate_usd, cost_usd, detail),
    )


def _charge(db: sqlite3.Connection, entry: tuple[Any, ...]) -> None:
    """Upsert one ledger row (as ``ledger_entry`` lays it out) and move the running sums by what it
    changed. The row keeps the session and principal it was first recorded under (the upsert leaves
    them), and so do the sums."""
    old = db.execute(
        "SELECT session_id, principal, usd, credits, tokens, refunded FROM ledger WHERE entry_id = ?",
        (entry[0],),
    ).fetchone()
    if old is not None and tuple(old)[2:] == entry[4:8]:
        return  # unchanged (most polls and every save of outputs): nothing to write
    db.execute(_LEDGER_UPSERT, entry)
    was = 0.0 if old is None or old["refunded"] == 1 else (old["usd"] or 0.0)
    now = 0.0 if entry[7] == 1 else (entry[4] or 0.0)
    if now != was:
        session, principal = (
            (old["session_id"], old["principal"]) if old is not None else (entry[3], entry[9])
        )
        _move(
            db,
            [
                (ALL, now - was, 0.0),
                (SESSION + session, now - was, 0.0),
                (PRINCIPAL + principal, now - was, 0.0),
            ],
        )


def _hold(db: sqlite3.Connection, principal: str, usd: float) -> None:
    """Move the reservations held (all, and the principal's) by ``usd``."""
    if usd:
        _move(db, [(ALL, 0.0, usd), (PRINCIPAL + principal, 0.0, usd)])


def _move(db: sqlite3.Connection, deltas: builtins.list[tuple[str, float, float]]) -> None:
    """Add (charged, held) to each scope's sums, in one statement."""
    db.execute(
        "INSERT INTO totals (scope, spent_usd, reserved_usd) VALUES "
        + ", ".join(["(?, ?, ?)"] * len(deltas))
        + " ON CONFLICT(scope) DO UPDATE SET spent_usd = spent_usd + excluded.spent_usd, "
        "reserved_usd = reserved_usd + excluded.reserved_usd",
        [value for delta in deltas for value in delta],
    )


def _sums(db: sqlite3.Connection, scope: str) -> tuple[float, float]:
    """(charged, held) of one scope. A sum of increments can end a rounding error off where the rows
    sum to exactly zero, so both are rounded to the ledger's precision and never below zero."""
    row = db.execute("SELECT spent_usd, reserved_usd FROM totals WHERE scope = ?", (scope,)).fetchone()
    if row is None:
        return 0.0, 0.0
    return max(0.0, round(float(row[0]), 9)), max(0.0, round(float(row[1]), 9))


_LEDGER_UPSERT = (
    "INSERT INTO ledger (entry_id, provider, operation, session_id, usd, credits, tokens, refunded, "
    "recorded_ts, principal) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(entry_id) DO UPDATE SET "
    "usd = excluded.usd, credits = excluded.credits, tokens = excluded.tokens, "
    "refunded = excluded.refunded"
)


def sane_cost(cost: Cost) -> Cost:
    # Cost already refuses these; the ledger re-checks because one -inf or NaN stored here makes
    # every later total non-finite or NULL, and a negative one lowers spend below what was paid.
    return cost.model_copy(
        update={
            k: v if v is None or 0 <= v < float("inf") else None
            for k, v in (("usd", cost.usd), ("credits", cost.credits), ("tokens", cost.tokens))
        }
    )


def ledger_entry(record: JobRecord) -> tuple[Any, ...] | None:
    """A job's ledger row (entry id, provider, operation, session, usd, credits, tokens, refunded,
    recorded at, principal), or None when there is nothing to record: every job the provider may bill is in the
    ledger, priced or not; others only once something was reported."""
    cost = sane_cost(record.cost)
    billable = record.submit_state in ("accepted", "uncertain")
    if not billable and cost.usd is None and cost.credits is None and cost.tokens is None:
        return None
    return (
        record.job_id,
        record.provider,
        record.operation,
        record.session_id,
        cost.usd,
        cost.credits,
        cost.tokens,
        None if cost.refunded is None else int(cost.refunded),
        record.updated_ts,
        record.principal,
    )


def _values(r: JobRecord) -> tuple[Any, ...]:
    """The values of every column, in ``_COLUMNS``' order."""
    fixed = (
        r.job_id,
        r.provider,
        r.operation,
        r.dedup_key,
        json.dumps(r.args, sort_keys=True),
        r.session_id,
        r.submitted_ts,
        r.price_key,
        r.principal,
    )
    return fixed + _changes(r)[:-1]


def _changes(r: JobRecord) -> tuple[Any, ...]:
    """The values of ``_UPDATE``: the mutable columns in ``_MUTABLE``'s order, then the job id."""
    return (
        json.dumps(r.options, sort_keys=True),
        r.provider_job_id,
        r.status,
        r.provider_status,
        r.submit_state,
        json.dumps(r.result) if r.result is not None else None,
        r.error.model_dump_json(by_alias=True) if r.error else None,
        r.cost.model_dump_json(),
        r.updated_ts,
        r.completed_ts,
        r.polls,
        int(r.finalized),
        r.reserved_usd,
        r.owner,
        r.checked_ts,
        r.job_id,
    )


def _record(row: sqlite3.Row) -> JobRecord:
    return JobRecord(
        job_id=row["job_id"],
        provider=row["provider"],
        operation=row["operation"],
        dedup_key=row["dedup_key"],
        args=json.loads(row["args_json"]),
        options=json.loads(row["options_json"] or "{}"),
        provider_job_id=row["provider_job_id"],
        status=row["status"],
        provider_status=row["provider_status"],
        submit_state=row["submit_state"],
        result=json.loads(row["result_json"]) if row["result_json"] else None,
        error=JobError.model_validate_json(row["error_json"]) if row["error_json"] else None,
        cost=Cost.model_validate_json(row["cost_json"]) if row["cost_json"] else Cost(),
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
