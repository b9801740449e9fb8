"""One poller per job across every replica sharing a database.

With a shared journal (PostgreSQL) the engine does not poll from inside tool calls. Each replica
runs a ``LeaseKeeper``:

* it **follows** every job it holds the lease of — the ones it submitted, and the ones it leased
  because nobody held them — polling each on the engine's schedule, writing every answer fenced by
  the lease, saving outputs once the job is done, then letting the lease go;
* it **renews** its leases every third of the lease time, and **scans** for jobs whose lease expired
  (their replica stopped) or that nobody holds, as soon as the database announces one and at least
  that often;
* a submission whose replica stopped before recording the provider's answer is **declared
  uncertain**, never re-sent: it may have reached the provider.

Waiters — a blocking tool call, ``jobs_wait`` — ask no provider anything: they watch the row, woken
by ``LISTEN/NOTIFY`` when any replica writes it, until it is finished or their budget runs out.
"""

from __future__ import annotations

import contextlib
import logging
import random
from typing import TYPE_CHECKING

import anyio

from mediamux.jobs.backend import LeaseLost, SharedJournal
from mediamux.jobs.journal import JournalError
from mediamux.jobs.models import JobError, JobRecord
from mediamux.jobs.states import Change, Event

if TYPE_CHECKING:
    from mediamux.jobs.engine import JobDriver, JobEngine, Progress, _Slot

logger = logging.getLogger("mediamux.jobs.leases")

# Polls in flight at once from one replica (each job is still polled on its own schedule).
POLL_CONCURRENCY = 16
# Jobs leased per scan; a full batch is followed at once by another scan.
SCAN_LIMIT = 200
# A waiter re-reads its row at least this often, notice or not (one lost while reconnecting).
RECHECK_S = 10.0
# After a database error, a follower tries again this much later (real time).
RETRY_S = 2.0

ORPHANED_MESSAGE = (
    "this job's submission never recorded an outcome (the server that sent it stopped mid-request); it may "
    "or may not have reached the provider — check the provider's dashboard"
)


class LeaseKeeper:
    def __init__(self, engine: JobEngine, journal: SharedJournal) -> None:
        self.engine = engine
        self.journal = journal
        self._following: set[str] = set()
        self._limiter = anyio.CapacityLimiter(POLL_CONCURRENCY)
        self._rng = random.Random()
        # A rolling restart: stop taking leases and hand back the ones held (see run), so the other
        # replicas carry on with this one's jobs at once rather than after the lease time.
        self._scanning = anyio.CancelScope()
        engine.on_drain(self._scanning.cancel)

    # -- the replica's side: renew, take over, follow -------------------------------------------

    def follow(self, job_id: str, *, orphan: bool = False) -> None:
        """Start following a job this replica holds, unless it is followed already."""
        group = self.engine.task_group
        if job_id in self._following or group is None:
            return
        self._following.add(job_id)
        group.start_soon(self._follow, job_id, orphan)

    def _pairs(self) -> tuple[list[str], list[str]]:
        drivers = self.engine._drivers
        pollable = [f"{p}/{o}" for (p, o), d in drivers.items() if d.mode == "poll"]
        return pollable, [f"{p}/{o}" for (p, o) in drivers]

    def _lease_due(self) -> list[JobRecord]:
        pollable, finishable = self._pairs()
        return self.journal.lease_due(pollable=pollable, finishable=finishable, limit=SCAN_LIMIT)

    async def run(self) -> None:
        """Renew this replica's leases and take jobs nobody holds, until cancelled; then hand back the
        leases of jobs it was following so another replica carries on at once."""
        every = self.journal.lease_s / 3
        try:
            with self._scanning:
                await self._scan(every)
        finally:
            with anyio.CancelScope(shield=True):
                try:
                    await anyio.to_thread.run_sync(self.journal.release_all)
                except JournalError:
                    logger.warning(
                        "could not hand back this server's leases; they expire in %.0f s",
                        self.journal.lease_s,
                    )

    async def _scan(self, every: float) -> None:
        while True:
            leased: list[JobRecord] = []
            try:
                lost = await anyio.to_thread.run_sync(self.journal.renew)
                if lost:
                    logger.warning("another server took over %d job(s) from this one", len(lost))
                leased = await anyio.to_thread.run_sync(self._lease_due)
            except JournalError as exc:
                logger.warning("lease scan failed: %s", exc)
            for record in leased:
                self.follow(record.job_id, orphan=record.submit_state == "pending")
            if len(leased) < SCAN_LIMIT:
                await self.journal.work_announced(every)

    async def _follow(self, job_id: str, orphan: bool) -> None:
        keep = False  # True: the lease stays (our own submission in flight, or the server is stopping)
        try:
            while True:
                try:
                    if await self._step(job_id, orphan):
                        continue
                    keep = await self._submitting(job_id)
                    return
                except LeaseLost:
                    return
                except JournalError as exc:
                    logger.warning("job %s: %s; trying again", job_id, exc)
                    await anyio.sleep(RETRY_S)
        except anyio.get_cancelled_exc_class():
            keep = True
            raise
        except Exception:
            logger.exception("following job %s failed", job_id)
        finally:
            self._following.discard(job_id)
            if not keep and self.journal.holds(job_id):
                # Should this fail, the lease simply expires.
                with anyio.CancelScope(shield=True), contextlib.suppress(JournalError):
                    await anyio.to_thread.run_sync(self.journal.release, job_id)

    async def _submitting(self, job_id: str) -> bool:
        record = await self.engine._fetch(job_id)
        return record is not None and record.submit_state == "pending"

    async def _step(self, job_id: str, orphan: bool) -> bool:
        """One step of following a job; False when there is nothing more for this replica to do."""
        engine = self.engine
        record = await engine._fetch(job_id)
        if record is None or not self.journal.holds(job_id) or engine.draining:
            return False
        if record.submit_state == "pending":
            if orphan:
                # Its replica stopped renewing mid-submission: the request may have left, so it is
                # never re-sent; it becomes uncertain, and an identical call returns it.
                error = JobError(error_class="provider_error", message=ORPHANED_MESSAGE)
                await engine._transition(record, Event.ORPHANED, Change(error=error))
            return False  # else our own submission in flight: its answer is written by the submitter
        driver = engine._drivers.get((record.provider, record.operation))
        if driver is None:
            return False
        if record.terminal:
            if record.status == "completed" and not record.finalized:
                from mediamux.jobs.engine import Progress, _no_progress

                await engine._finalize(record, driver, Progress(_no_progress))
                return True
            return False
        if record.submit_state != "accepted" or not record.provider_job_id or driver.mode != "poll":
            return False
        wait = self._due_in(record)
        if wait > 0:
            # Jittered, so jobs started together do not poll the provider in lockstep.
            await engine.clock.sleep(wait * (0.85 + 0.3 * self._rng.random()))
            fresh = await engine._fetch(job_id)
            if fresh is None or fresh.terminal or fresh.checked_ts != record.checked_ts:
                return True  # cancelled, finished or polled meanwhile: look again
            record = fresh
        async with self._limiter:
            from mediamux.jobs.engine import REFRESH_S

            polled, _, retry_after = await engine._poll_once(
                record, driver, engine.clock.monotonic() + REFRESH_S
            )
        if polled.checked_ts == record.checked_ts:
            # No answer (the provider failed after the transport's retries, or the poll ran out of
            # time): wait a poll interval, and never less than the provider asked.
            await engine.clock.sleep(max(retry_after or 0.0, self._interval(record)))
        return True

    def _interval(self, record: JobRecord) -> float:
        """The poll interval for a job of this age: dense early, every MAX_POLL_S later."""
        from mediamux.jobs.engine import FIRST_POLL_S, MAX_POLL_S

        return min(MAX_POLL_S, max(FIRST_POLL_S, (self.engine._wall() - record.submitted_ts) / 4))

    def _due_in(self, record: JobRecord) -> float:
        """Seconds until the job is due for a poll."""
        return (record.checked_ts or record.submitted_ts) + self._interval(record) - self.engine._wall()

    # -- the waiter's side -----------------------------------------------------------------------

    async def watch(
        self, record: JobRecord, driver: JobDriver, slot: _Slot, deadline: float, report: Progress
    ) -> JobRecord:
        """The job once it is finished (outputs saved), its submission ended without an answer, or the
        budget ran out — whichever comes first; woken by every write of its row, from any replica."""
        engine = self.engine
        start = engine.clock.monotonic()
        async with self.journal.watch(record.job_id) as changes:
            while True:
                fresh = await engine._fetch(record.job_id) or record
                if (fresh.status, fresh.provider_status) != (record.status, record.provider_status):
                    await report.step(engine._progress_line(driver, fresh, start))
                record = fresh
                if record.terminal and (record.status != "completed" or record.finalized):
                    return record
                if record.submit_state in ("rejected", "uncertain") or engine.draining:
                    return record
                remaining = deadline - engine.clock.monotonic()
                if remaining <= 0:
                    return record
                ours = slot.submitted
                if record.submit_state == "pending" and ours is not None and not ours.is_set():
                    await engine.clock.wait_for(ours, within_s=remaining)
                    continue
                await changes.changed(engine.clock, min(remaining, RECHECK_S))
