"""The journal's interface, which both backends satisfy, and the choice between them.

``JournalBackend`` is what the engine, the tools and the resources use: the SQLite journal (one
host, the default) and the PostgreSQL one (several replicas) both provide it, with the same method
names and meanings, checked by one contract test run against each.

The methods are synchronous on purpose. The engine calls them from worker threads (writes, which
may wait on a lock) and from the event loop (reads: one indexed row or a small aggregate). Making
them coroutines would change some thirty call sites in the engine's hot paths for no gain in
SQLite, and in PostgreSQL a read is one round trip on a pooled connection that never waits on a
row lock (MVCC), so it costs the loop what a SQLite page read does. What only a shared database
can do — leases, and waking waiters when another replica changes a row — is ``SharedJournal``,
and that part is async where it waits.

``open_journal`` picks the backend from the settings; without ``MEDIAMUX_DATABASE_URL`` nothing
here imports psycopg.
"""

from __future__ import annotations

import builtins
from collections.abc import Mapping
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from anyio.abc import TaskStatus

from mediamux.clock import Clock
from mediamux.jobs.models import JobRecord
from mediamux.providers.cost import Cost

if TYPE_CHECKING:
    from mediamux.config import Settings


@runtime_checkable
class JournalBackend(Protocol):
    """Jobs, the cost ledger, the duplicate guard, budget reservations and process heartbeats."""

    # Where the journal lives, for messages and for naming its recovery file: a path, or a
    # database URL without its password.
    location: str
    # Whether other servers share it (and so whether the engine coordinates through leases).
    shared: bool

    def close(self) -> None: ...

    def claim(
        self,
        record: JobRecord,
        *,
        window_start_ts: float | None,
        budget_usd: float | None = None,
        principal_budget_usd: float | None = None,
        audit: Mapping[str, Any] | None = None,
    ) -> tuple[JobRecord, bool]:
        """Insert ``record`` unless an identical job of the same principal inside the window stands
        for it; atomically with the budget checks (the server's, and the record's principal's), the
        record's reservation and, for a new job only, ``audit`` (the fields of ``audit()``). Raises
        OverBudget."""
        ...

    def find_duplicate(
        self, dedup_key: str, window_start_ts: float, principal: str = "local"
    ) -> JobRecord | None: ...

    def save(self, record: JobRecord, *, charge: bool = False) -> JobRecord:
        """Write a job's state; a finished job is never overwritten by an unfinished copy. ``charge``:
        also write the job's ledger entry (its cost; every job the provider may bill, priced or not),
        in the same transaction. Returns the job as the journal now holds it: ``record``, or the
        finished copy that won."""
        ...

    def get(self, job_id: str) -> JobRecord | None: ...

    def find_by_provider_id(self, provider: str, provider_job_id: str) -> JobRecord | None: ...

    def list(
        self,
        *,
        status: str | None = None,
        provider: str | None = None,
        limit: int = 20,
        principal: str | None = None,
    ) -> list[JobRecord]:
        """Newest first; ``principal`` None lists everybody's (the operator's view)."""
        ...

    def output_owners(self, uri: str) -> set[str]:
        """The principals whose jobs saved the output at ``uri`` (a mediamux://outputs/ link)."""
        ...

    def foreign_output_uris(self, principal: str, *, limit: int = 5000) -> builtins.list[str]:
        """mediamux://outputs/ links that other principals' jobs saved."""
        ...

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
        principal: str = "local",
    ) -> None: ...

    def totals(
        self, session_id: str | None = None, *, since_ts: float | None = None, principal: str | None = None
    ) -> dict[str, Any]: ...

    def spent_usd(self, session_id: str | None = None, *, principal: str | None = None) -> float: ...

    def committed_usd(self, principal: str | None = None) -> float:
        """Charged plus reserved dollars, what budgets are checked against. This and ``spent_usd``
        read running sums kept with the rows, in O(1)."""
        ...

    def rebuild_totals(self) -> None:
        """Recompute the running sums from the rows."""
        ...

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
        """One entry of the audit trail: a paid submission, a cancel, a deletion."""
        ...

    def audit_trail(
        self, *, principal: str | None = None, limit: int = 50
    ) -> builtins.list[dict[str, Any]]: ...

    def price_history(self, provider: str, operation: str, price_key: str) -> float | None: ...

    def recent_durations(
        self, provider: str, operation: str, price_key: str | None, *, limit: int = 30
    ) -> builtins.list[float]:
        """Seconds the most recent completed jobs of one kind took, newest first (the poll plan learns
        from them)."""
        ...

    def beat(self, owner: str, *, host: str, pid: int, ts: float) -> None: ...

    def owner(self, owner: str) -> tuple[str, int, float] | None: ...

    def forget_owner(self, owner: str) -> None: ...


class Watch(Protocol):
    """Notice of changes to one job row, from any replica, while the watch is open."""

    async def changed(self, clock: Clock, within_s: float) -> bool:
        """Wait until the row may have changed since the last call, or ``within_s`` (on ``clock``)
        passes; True when a change was announced."""
        ...


@runtime_checkable
class SharedJournal(JournalBackend, Protocol):
    """A journal several servers share: each job is polled by the one replica holding its lease.

    A lease is held by this process (``replica``) until ``lease_s`` after its last renewal; every
    write of a held job is fenced — it lands only while this process still holds that lease — and
    a job whose lease expired (its holder died) is taken by whichever replica asks first.
    """

    replica: str
    lease_s: float

    def holds(self, job_id: str) -> bool: ...

    def held(self) -> list[str]: ...

    def lease_due(self, *, pollable: list[str], finishable: list[str], limit: int) -> list[JobRecord]:
        """Lease jobs that need a poller and have none: live jobs of the ``provider/operation`` pairs in
        ``pollable``, finished ones in ``finishable`` whose outputs are not saved, and submissions whose
        server stopped renewing (to be declared uncertain)."""
        ...

    def renew(self) -> list[str]:
        """Extend every lease this process holds; returns the job ids whose lease it had lost."""
        ...

    def release(self, job_id: str) -> None: ...

    def release_all(self, *, keep_pending: bool = True) -> int:
        """Hand back this process's leases (a clean stop), so another replica picks them up at once;
        submissions still in flight keep theirs unless ``keep_pending`` is False."""
        ...

    def watch(self, job_id: str) -> AbstractAsyncContextManager[Watch]: ...

    async def listen(self, *, task_status: TaskStatus[None]) -> None:
        """Receive change and work announcements from the database until cancelled."""
        ...

    async def work_announced(self, within_s: float) -> None:
        """Return when another replica announced work nobody holds (or ``within_s`` real seconds pass)."""
        ...


class LeaseLost(Exception):
    """This process no longer holds the lease of a job it was writing: another replica polls it now."""


def open_journal(settings: Settings) -> JournalBackend:
    """The journal the settings select: PostgreSQL with ``MEDIAMUX_DATABASE_URL``, else SQLite in the home."""
    if settings.database_url is not None:
        from mediamux.jobs.pg_journal import PostgresJournal

        return PostgresJournal(
            settings.database_url.get_secret_value(),
            lease_s=settings.lease_s,
            pool_size=settings.database_pool_size,
        )
    from mediamux.jobs.journal import Journal

    return Journal(settings.state_db)


__all__ = ["JournalBackend", "LeaseLost", "SharedJournal", "Watch", "open_journal"]
