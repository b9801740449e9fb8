"""Poll-until-done engine shared by every asynchronous or slow provider operation.

A *driver* knows one provider operation: how to submit it, how to poll it, and what to do with
a finished result (save outputs, store an expiring transcript). The engine does the rest, the
same way for every provider:

* the duplicate-spend guard, then (where configured) the user's consent to the estimate, then the
  budget check and a journal row — all before any paid call;
* the submission itself is shielded from client cancellation, so a request id the provider
  has issued is always recorded;
* polling on a plan learned from how long jobs of the same kind took (``jobs.schedule``) inside the
  caller's wait budget, woken at once by the provider's webhook where there is one; progress at
  submission and at least every ``HEARTBEAT_S`` seconds, and cancellation that stops polling at once
  while the job stays in the journal for ``jobs_wait``;
* an unfinished job is reported as such only on a look at the provider at most ``FRESH_S`` old;
* an unknown provider status is non-terminal until the budget runs out, then reported by name.
* a drain (a rolling restart, :meth:`JobEngine.drain`) refuses new paid work, lets what is in flight
  finish within a bound and marks what cannot, and sends waiting callers back with their job ids.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import hashlib
import hmac
import json
import logging
import os
import secrets
import socket
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, Protocol

import anyio
from anyio.abc import TaskGroup
from pydantic import BaseModel

from mediamux import deadlines
from mediamux.clock import Clock
from mediamux.errors import MediamuxError
from mediamux.jobs.backend import JournalBackend, SharedJournal
from mediamux.jobs.journal import JournalError, JournalWriteError, OverBudget
from mediamux.jobs.leases import LeaseKeeper
from mediamux.jobs.models import JobError, JobRecord, JobResult
from mediamux.jobs.offload import in_thread
from mediamux.jobs.schedule import (
    BACKOFF,
    FIRST_POLL_S,
    HISTORY,
    MAX_POLL_S,
    Expectation,
    Plan,
    finish_estimate,
)
from mediamux.jobs.states import Change, Event, IllegalTransition, advance
from mediamux.principals import current_principal
from mediamux.providers.cost import Cost, format_usd
from mediamux.providers.errors import (
    NotFound,
    OutOfTime,
    ProviderConnectionError,
    ProviderError,
    ProviderResponseError,
    RateLimited,
    ServerError,
)
from mediamux.providers.status import IN_PROGRESS_WORDS

logger = logging.getLogger("mediamux.jobs")

# Parametrized once: pydantic keeps a generic's parametrized class only while something refers to it,
# so ``JobResult[Any](...)`` inline rebuilt the class (and its validator) again and again.
_JobView = JobResult[Any]

HEARTBEAT_S = 10.0
# A job is reported as not finished only on a look at the provider at most this old: a status read
# asks again, and a wait that ends makes one last poll (in place of the next planned one).
FRESH_S = 1.0
# That last poll starts this long before the wait budget ends, so the answer is not late.
FINAL_LEAD_S = 0.25
# After a webhook whose poll found the job not quite finished (Mixpeek writes its documents after
# saying COMPLETED): polls this long apart, doubling, until MAX_POLL_S.
FOLLOW_FIRST_S = 0.5
# How long a webhook for a job nobody is waiting on is followed: polled, and its outputs saved.
WAKE_FOLLOW_S = 15.0
# Webhooks for one job closer together than this wake it once.
WAKE_MIN_GAP_S = 1.0
# How long learned durations are trusted before the journal is read again (other processes' jobs).
HISTORY_TTL_S = 60.0
# What the engine keeps in a job's options (never shown, never sent upstream): the SHA-256 of its
# webhook token, when the provider accepted it (where its age counts from), and how long after that
# it finished as best the engine could tell (what the next jobs of its kind are planned from).
HOOK_OPTION = "_hook"
ACCEPTED_OPTION = "_accepted_ts"
FINISHED_OPTION = "_finished_s"
# Handed to a driver's submit (only): the URL the provider should POST to when the job finishes.
WEBHOOK_URL_OPTION = "_webhook_url"
_NO_HOOK = "0" * 64
MAX_REMEMBERED_HOOKS = 10_000
# A submission whose process left no heartbeat (rows from older releases) is presumed lost after this.
ORPHAN_SUBMIT_S = 600.0
# Each process says it is alive this often; one silent for OWNER_STALE_S (on another host) is gone.
OWNER_BEAT_S = 30.0
OWNER_STALE_S = 120.0
# How long an accepted job that could not be journaled is retried from memory.
UNSAVED_RETRY_S = 3600.0
UNSAVED_RETRY_EVERY_S = 5.0
# After a drain's time is up, how long stopped renders and uploads get to record their end.
STOP_GRACE_S = 5.0
# A poll started with little budget left still gets this long before its request is cut.
POLL_GRACE_S = 2.0
# Reads that refresh a stale job: how long they may take, how many jobs one list refreshes, how many
# at once (a list of 200 jobs must not become 200 provider calls in a burst).
REFRESH_S = 8.0
REFRESH_MANY = 20
REFRESH_CONCURRENCY = 4
EARLY_404_S = 30.0

ProgressFn = Callable[[float, float | None, str], Awaitable[None]]

# Set around a tool call that may become an MCP task: the caller can poll the job as a task, so no
# job tool keeps it waiting longer than this, whatever its wait_s. Unset: wait_s alone decides.
SYNC_WINDOW_S: ContextVar[float | None] = ContextVar("mediamux_sync_window_s", default=None)


def within_sync_window(wait_s: float) -> float:
    window = SYNC_WINDOW_S.get()
    return wait_s if window is None else min(wait_s, window)


class JobsError(MediamuxError):
    error_class = "invalid_input"


class BudgetExceeded(JobsError):
    error_class = "budget"


class JobNotFound(JobsError):
    error_class = "not_found"


class ProviderUnavailable(JobsError):
    error_class = "auth"


class ServerDraining(JobsError):
    """This server is stopping (a rolling restart) and takes no new paid work; nothing was sent."""

    # The one class in the vocabulary that means "the same call will work shortly": behind a load
    # balancer the retry reaches a server that is not stopping.
    error_class = "rate_limited"


class SubmissionInterrupted(JobsError):
    """A drain stopped a submission that may have reached the provider; the job is recorded as uncertain."""

    error_class = "provider_error"


class JournalUnavailable(JobsError):
    """The journal could not be written; the message says whether anything reached the provider."""

    error_class = "provider_error"
    job_id: str | None = None  # set when the provider has the job: the id that resumes it


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # alive, and someone else's
    return True


def default_recovery_path(journal_location: Path | str) -> Path:
    """Where accepted jobs the journal could not take are written: outside MEDIAMUX_HOME, whose disk
    may be the full one, and per journal, so a restart replays only its own."""
    owner = getattr(os, "getuid", lambda: 0)()
    where = str(journal_location)
    if "://" not in where:
        where = str(Path(where).resolve())
    digest = hashlib.sha256(where.encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"mediamux-{owner}" / f"recovery-{digest}.jsonl"


@dataclass
class Outcome:
    """What a driver learned from one submit or poll."""

    status: str
    provider_status: str | None = None
    provider_job_id: str | None = None
    result: dict[str, Any] | None = None
    error: JobError | None = None
    cost: Cost = field(default_factory=Cost)

    def change(self) -> Change:
        return Change(
            status=self.status,
            provider_status=self.provider_status,
            provider_job_id=self.provider_job_id,
            result=self.result,
            error=self.error,
            cost=self.cost,
        )


class JobDriver(Protocol):
    provider: str
    operation: str
    title: str
    # "poll": submit returns a provider job id that is polled. "background": one long synchronous
    # request (Muzaic renders) that runs in the server's task group, outliving the tool call.
    mode: Literal["poll", "background"]
    # The operation's arguments as a model: what the tool hands over, what the journal keeps (as
    # JSON), and what every method below receives, validated again when a job is resumed.
    args_model: type[BaseModel]
    # Said when a budget is set and the job cannot be priced: how this provider could be.
    price_hint: str

    async def estimate_usd(self, args: Any) -> float | None:
        """What the job will cost in dollars, if that can be known before paying (asked only when a
        budget or a confirmation threshold needs it)."""
        ...

    def price_key(self, args: Any) -> str | None:
        """What past charges of this kind are remembered under (MuAPI: the model), if anything."""
        ...

    # Whether the provider can stop a submitted job (cancel() tells it to).
    can_cancel: bool

    async def cancel(self, provider_job_id: str, args: Any) -> None: ...

    async def prepare(self, args: Any, options: dict[str, Any], progress: ProgressFn) -> Any:
        """Free, cancellable work before submitting (uploading local inputs); returns the arguments to send."""
        ...

    async def submit(self, args: Any, options: dict[str, Any], progress: ProgressFn) -> Outcome: ...

    async def poll(self, provider_job_id: str, args: Any, options: dict[str, Any]) -> Outcome: ...

    async def finalize(
        self, outcome: Outcome, args: Any, options: dict[str, Any], progress: ProgressFn
    ) -> Outcome: ...

    def takes_webhook(self, args: Any) -> bool:
        """Whether submit passes ``options[WEBHOOK_URL_OPTION]`` to the provider, which POSTs to it when
        the job finishes."""
        ...


@dataclass(frozen=True)
class SpendQuote:
    """What a new paid job is expected to cost, worked out once, before anything is reserved: what
    the user is asked to agree to when a confirmation is due."""

    provider: str
    operation: str
    title: str  # the provider as people know it ("MuAPI")
    subject: str  # what runs: the model (MuAPI's endpoint) or the operation
    dedup_key: str
    # The provider's quote, else what the last job of its kind cost; None: not known in advance.
    estimate_usd: float | None
    reserve_usd: float | None = None  # what it will hold against MEDIAMUX_BUDGET_USD
    budget_usd: float | None = None
    committed_usd: float | None = None  # spent or held by running jobs when the quote was made

    @property
    def remaining_usd(self) -> float | None:
        if self.budget_usd is None or self.committed_usd is None:
            return None
        return max(0.0, self.budget_usd - self.committed_usd)


class SpendGate(Protocol):
    """Asks the person behind the client before money is spent; one per tool call (``SPEND_GATE``).

    The engine knows nothing of how the question travels: mid-call (``elicitation/create``) or as a
    multi-round result, where ``confirm`` ends the round by raising and the retry brings the answer
    and the quote that was shown (``recall``)."""

    def can_ask(self) -> bool:
        """Whether this call's client declared that it can put a question to its user."""
        ...

    def recall(self, dedup_key: str) -> SpendQuote | None:
        """The quote shown for this very job in an earlier round of this call, if any."""
        ...

    async def confirm(self, quote: SpendQuote) -> bool:
        """True to go ahead, False when the user said no (declined or cancelled)."""
        ...


# Set by the tool layer around each tool call: a paid job started inside it asks through this gate.
SPEND_GATE: ContextVar[SpendGate | None] = ContextVar("mediamux_spend_gate", default=None)


class DriverBase:
    """Defaults for the parts of ``JobDriver`` most operations do not need."""

    mode: Literal["poll", "background"] = "poll"
    price_hint = ""
    can_cancel = False

    async def cancel(self, provider_job_id: str, args: Any) -> None:
        raise NotImplementedError

    async def estimate_usd(self, args: Any) -> float | None:
        return None

    def price_key(self, args: Any) -> str | None:
        return None

    async def prepare(self, args: Any, options: dict[str, Any], progress: ProgressFn) -> Any:
        return args

    async def finalize(
        self, outcome: Outcome, args: Any, options: dict[str, Any], progress: ProgressFn
    ) -> Outcome:
        return outcome

    def takes_webhook(self, args: Any) -> bool:
        return False


async def _no_progress(progress: float, total: float | None, message: str) -> None:
    return None


class Progress:
    """Progress that only ever increases, as MCP requires, across steps and byte transfers.

    One per tool call: a tool that runs several jobs (transcribe, then align) passes the same one to
    each, so the host sees one rising sequence, not one that starts again at every step.

    Job steps count up by one. A transfer reports (bytes sent, size); a second transfer in the
    same job starts again from zero, so its bytes are shown on top of where progress already is,
    with the total moved up by the same amount: increasing, and never past its total.
    """

    def __init__(self, fn: ProgressFn) -> None:
        self._fn = fn
        self._n = 0.0
        self._base = 0.0
        self._last_bytes = -1.0
        self.sent = 0

    async def __call__(self, progress: float, total: float | None, message: str) -> None:
        shown_total: float | None = None
        if total is not None:
            if progress <= self._last_bytes:  # a new transfer has begun
                self._base = self._n
            self._last_bytes = progress
            value, shown_total = self._base + progress, self._base + total
        else:
            self._last_bytes = -1.0
            value = self._n + 1
        self._n = max(value, self._n + 1e-6)
        self.sent += 1
        try:
            await self._fn(self._n, shown_total, message)
        except anyio.get_cancelled_exc_class():
            raise
        except Exception:  # a client that cannot take progress must not break the job
            logger.debug("progress notification failed", exc_info=True)

    async def step(self, message: str) -> None:
        await self(self._n + 1, None, message)

    @property
    def silent(self) -> bool:
        """Nobody listens (the caller asked for no progress): there is nothing to keep alive."""
        return self._fn is _no_progress

    @classmethod
    def of(cls, progress: ProgressFn | None) -> Progress:
        return progress if isinstance(progress, Progress) else cls(progress or _no_progress)


@dataclass
class _Slot:
    """What concurrent callers of one job share in this process; dropped when the last one leaves."""

    lock: anyio.Lock = field(default_factory=anyio.Lock)
    submitted: anyio.Event | None = None  # set when this process's submission has an answer
    finalizing: anyio.Event | None = None  # set when saving outputs has ended
    background: anyio.CancelScope | None = None  # a synchronous render running in the server
    users: int = 0
    waiters: int = 0  # callers in _wait, who poll when woken
    # Set by a webhook (wake); the poll that takes it replaces it. woken_ts: when it came (wall clock).
    wake: anyio.Event = field(default_factory=anyio.Event)
    woken_ts: float | None = None
    # The job as this process last wrote or read it, and when (clock.monotonic): within FRESH_S it
    # stands for a journal read on the paths that follow our own writes (see _fetch).
    latest: JobRecord | None = None
    latest_at: float = float("-inf")


@dataclass
class _Beating:
    """One call's heartbeat task, started late in the server's task group (see _heartbeating)."""

    stopped: bool = False
    scope: anyio.CancelScope | None = None
    done: anyio.Event | None = None

    async def stop(self) -> None:
        self.stopped = True
        if self.scope is not None:
            self.scope.cancel()
        if self.done is not None:
            with anyio.CancelScope(shield=True):
                await self.done.wait()


@dataclass
class _History:
    """Recent durations of one kind of job (newest first) and what they say about the next one."""

    durations: list[float]
    loaded: float  # clock.monotonic() when read from the journal
    expectation: Expectation | None = None

    def __post_init__(self) -> None:
        self.expectation = Expectation.learn(self.durations)

    def add(self, duration_s: float) -> None:
        self.durations = [duration_s, *self.durations[: HISTORY - 1]]
        self.expectation = Expectation.learn(self.durations)


@dataclass(eq=False)
class _InFlight:
    """Paid work this process must finish, or stop and mark, before it exits (see ``JobEngine.drain``)."""

    what: str  # for the log: "MuAPI generate job_…"
    job_id: str | None = None  # once journaled
    # The request may be on its way: if it cannot finish, the job is marked uncertain, never forgotten.
    sending: bool = False
    # Stops it: a synchronous render in the background, or local files still being uploaded.
    scope: anyio.CancelScope | None = None


def dedup_key(provider: str, operation: str, args: dict[str, Any]) -> str:
    canonical = json.dumps([provider, operation, args], sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def hook_digest(token: str) -> str:
    """What the journal keeps of a webhook token: enough to check one, not to forge one."""
    return hashlib.sha256(token.encode()).hexdigest()


def iso(ts: float | None) -> str | None:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds") if ts is not None else None


class JobEngine:
    def __init__(
        self,
        journal: JournalBackend,
        *,
        clock: Clock,
        session_id: str | None = None,
        dedup_window_s: float = 600.0,
        budget_usd: float | None = None,
        unpriced_job_usd: float | None = None,
        confirm_usd: float | None = None,
        heartbeat_s: float = HEARTBEAT_S,
        recovery_path: Path | None = None,
        principal_budget: Callable[[str], float | None] | None = None,
    ) -> None:
        self.journal = journal
        # Each signed-in principal's own limit (MEDIAMUX_PRINCIPAL_BUDGET_USD and its overrides).
        self.principal_budget = principal_budget or (lambda principal: None)
        self.heartbeat_s = heartbeat_s
        self.clock = clock
        self.session_id = session_id or secrets.token_hex(8)
        self.dedup_window_s = dedup_window_s
        self.budget_usd = budget_usd
        # What a job with no price known in advance reserves against the budget (None: such jobs are
        # refused while a budget is set, rather than counted as free).
        self.unpriced_job_usd = unpriced_job_usd
        # A paid job estimated above this (or, under a budget, one that cannot be priced) is put to the
        # user first, when the calling client can be asked (SPEND_GATE); None: never asked.
        self.confirm_usd = confirm_usd
        self._drivers: dict[tuple[str, str], JobDriver] = {}
        self._slots: dict[str, _Slot] = {}
        # Who submitted a job: a waiter elsewhere declares a submission lost only once this is gone.
        self.host = socket.gethostname()
        self.owner = f"{self.host}:{os.getpid()}:{self.session_id}"
        # Accepted jobs the journal could not take yet: never lost, answered from here meanwhile.
        self._unsaved: dict[str, JobRecord] = {}
        # The session's spend as the journal said at this engine's last call (every store and read
        # brings it along, in the same worker-thread call), so a job view needs no journal read. A
        # session this engine names itself has spent nothing yet; a resumed one is read once.
        self._spent: float | None = None if session_id else 0.0
        self.recovery_path = recovery_path or default_recovery_path(journal.location)
        # Set by the server: where synchronous provider requests run, outliving any one tool call.
        self.task_group: TaskGroup | None = None
        # Set by the HTTP server when providers can reach it (MEDIAMUX_PUBLIC_URL): where webhooks go,
        # as <hook_base>/<job_id>/<token>.
        self.hook_base: str | None = None
        self._hook_tokens: dict[str, str] = {}  # job_id -> token, from claim until submission
        # job_id -> what its token hashes to, for jobs submitted here: a webhook is checked without I/O.
        self._hook_digests: dict[str, str] = {}
        self._following: set[str] = set()  # jobs a webhook woke with nobody waiting on them
        self._woken: dict[str, float] = {}  # job_id -> when a webhook last woke it (clock.monotonic)
        self._history: dict[tuple[str, str, str | None], _History] = {}
        self._history_locks: dict[tuple[str, str, str | None], anyio.Lock] = {}
        # Rolling restarts: see drain().
        self._draining = False
        self._closed = False  # the drain's time is up: not even work admitted before it may start now
        self._in_flight: set[_InFlight] = set()
        self._quiet: anyio.Event | None = None  # set when the last work in flight ends during a drain
        self._naps: set[anyio.CancelScope] = set()  # waiters sleeping between polls
        self._drain_hooks: list[Callable[[], None]] = []
        # A journal other servers share: the replica holding a job's lease polls it, waiters watch the row.
        self.leases = LeaseKeeper(self, journal) if isinstance(journal, SharedJournal) else None

    def register(self, driver: JobDriver) -> None:
        self._drivers[(driver.provider, driver.operation)] = driver

    # -- rolling restarts ------------------------------------------------------------------------

    @property
    def draining(self) -> bool:
        """Whether this server is stopping: no new paid work, and /healthz reports not ready."""
        return self._draining

    def on_drain(self, hook: Callable[[], None]) -> None:
        """Call ``hook`` (synchronously) when a drain begins, e.g. to stop taking poll leases and hand
        back those held; at once if one has begun already."""
        self._drain_hooks.append(hook)
        if self._draining:
            hook()

    def begin_drain(self) -> None:
        """Refuse new paid work from now on and send waiting callers back with their job ids. Idempotent;
        synchronous, so a signal handler can call it."""
        if self._draining:
            return
        self._draining = True
        for nap in list(self._naps):
            nap.cancel()
        for hook in self._drain_hooks:
            try:
                hook()
            except Exception:
                logger.exception("a drain hook failed")

    @property
    def in_flight(self) -> list[str]:
        """What this process is submitting or saving right now, for people."""
        return sorted(work.what for work in self._in_flight)

    async def drain(self, timeout_s: float) -> list[str]:
        """Stop taking new paid work and give what is in flight (submissions, renders, output saves)
        up to ``timeout_s`` to finish; then stop what has not and mark it in the journal — a request
        that may have reached the provider becomes ``uncertain``, never forgotten and never re-sent.
        Returns what had to be stopped (empty: everything finished). Running jobs need nothing: they
        are in the journal, and the next start (or another replica) follows them."""
        self.begin_drain()
        if self._in_flight:
            logger.warning(
                "draining: waiting up to %.0f s for %d submission(s) in flight",
                timeout_s,
                len(self._in_flight),
            )
            self._quiet = anyio.Event()
            # Real seconds on every clock: this bound is the orchestrator's grace period.
            await self.clock.wait_for(self._quiet, within_s=timeout_s)
        self._closed = True
        left = list(self._in_flight)
        for work in left:
            await self._stop(work)
        if self._in_flight:
            # What was stopped records its end (shielded) as it unwinds; give it a moment to.
            self._quiet = anyio.Event()
            await self.clock.wait_for(self._quiet, within_s=STOP_GRACE_S)
        if left:
            logger.warning("draining: stopped and marked in the journal: %s", ", ".join(w.what for w in left))
        return [work.what for work in left]

    def _admit(self, driver: JobDriver) -> _InFlight:
        if self._draining:
            raise ServerDraining(
                f"nothing was sent to {driver.title}: this server is restarting and takes no new paid work; "
                "call again — the load balancer sends it to a server that is not stopping"
                " (an identical earlier job is still returned here, free)",
                retry_after_s=1.0,
            )
        work = _InFlight(what=f"{driver.title} {driver.operation}")
        self._in_flight.add(work)
        return work

    def _done(self, work: _InFlight | None) -> None:
        if work is None:
            return
        self._in_flight.discard(work)
        if not self._in_flight and self._quiet is not None:
            self._quiet.set()

    async def _stop(self, work: _InFlight) -> None:
        """The drain's time is up for ``work``: stop it; it records its own end, shielded — withdrawn if
        nothing had left, uncertain if the request may have reached the provider."""
        if work.scope is not None:
            work.scope.cancel()
        else:
            # Not journaled yet (the claim refuses it now), or outputs being saved: the job stays
            # "saving" and the next start, or another replica, saves them.
            self._done(work)

    @asynccontextmanager
    async def _slot(self, job_id: str) -> AsyncIterator[_Slot]:
        slot = self._slots.get(job_id)
        if slot is None:
            slot = self._slots[job_id] = _Slot()
        slot.users += 1
        try:
            yield slot
        finally:
            slot.users -= 1
            if slot.users == 0:
                self._slots.pop(job_id, None)

    async def _transition(self, record: JobRecord, event: Event, change: Change | None = None) -> JobRecord:
        """The only writer of a job's state: apply ``event`` (checked against jobs.states) and record it.
        Returns the job as the journal holds it (a finished copy written elsewhere wins)."""
        new = advance(record, event, change, now=self._wall())
        return await self._store(new)

    async def _store(self, record: JobRecord) -> JobRecord:
        # In a worker thread (which the caller waits for even when cancelled): a journal another
        # program holds locked stalls this job, not the server, and a state change that has happened
        # upstream is recorded even if the caller leaves.
        held = await in_thread(self._store_now, record)
        self._unsaved.pop(record.job_id, None)
        self._seen(held)
        return held

    def _store_now(self, record: JobRecord) -> JobRecord:
        # The job and its ledger entry in one transaction: between two, a released reservation and a
        # charge not yet recorded would let a concurrent claim see neither and pass the budget.
        held = self.journal.save(record, charge=True)
        self._spent = self.journal.spent_usd(self.session_id)
        return held

    def _get_now(self, job_id: str) -> JobRecord | None:
        record = self.journal.get(job_id)
        self._spent = self.journal.spent_usd(self.session_id)
        return record

    def _seen(self, record: JobRecord) -> None:
        slot = self._slots.get(record.job_id)
        if slot is not None:
            slot.latest, slot.latest_at = record, self.clock.monotonic()

    async def _fetch(self, job_id: str, *, recent_ok: bool = False) -> JobRecord | None:
        """The job as the journal holds it, read in a worker thread. ``recent_ok``: on the paths that
        follow this process's own writes (a wait, saving outputs), a copy this process wrote or read
        less than FRESH_S ago stands for the read, unless other servers share the journal (their
        writes are announced, and must be seen)."""
        unsaved = self._unsaved.get(job_id)
        if unsaved is not None:
            return unsaved
        slot = self._slots.get(job_id)
        if (
            recent_ok
            and slot is not None
            and slot.latest is not None
            and not self.journal.shared
            and self.clock.monotonic() - slot.latest_at < FRESH_S
        ):
            return slot.latest
        record = await in_thread(self._get_now, job_id)
        if record is not None:
            self._seen(record)
        return record

    def _session_spent(self) -> float:
        if self._spent is None:
            self._spent = self.journal.spent_usd(self.session_id)  # once, before any other journal call
        return round(self._spent, 6)

    async def _accepted(self, record: JobRecord, driver: JobDriver, outcome: Outcome) -> JobRecord:
        """Record the provider's answer to a submission; if the journal cannot take it, the answer is
        kept in memory, written beside the journal's folder and retried, and the caller is told the
        provider's id: a job the provider accepted is never lost."""
        now = self._wall()
        change = outcome.change()
        change.options = {**record.options, ACCEPTED_OPTION: now}  # the job's age counts from here
        new = advance(record, Event.ACCEPTED, change, now=now)
        try:
            await self._store(new)
        except JournalWriteError as exc:
            self._unsaved[new.job_id] = new
            copy = self._write_recovery(new)
            logger.error(
                "%s accepted %s (job %s) but the journal could not record it: %s; kept in memory%s",
                driver.title,
                new.provider_job_id or "a request",
                new.job_id,
                exc,
                f" and in {copy}" if copy else "",
            )
            if self.task_group is not None:
                self.task_group.start_soon(self._retry_unsaved, new.job_id)
            error = JournalUnavailable(
                f"{driver.title} accepted request {new.provider_job_id or '(no id given)'}; it could not be "
                f"recorded: {exc}; it may have been charged. mediamux keeps it and retries writing it"
                + (f" (a copy is in {copy})" if copy else "")
                + f"; jobs_wait with job_id {new.job_id} resumes it, and an identical call returns it instead "
                "of paying again"
            )
            error.job_id = new.job_id
            raise error from None
        if self.leases is not None:
            self.leases.follow(new.job_id)
        return new

    def _write_recovery(self, record: JobRecord) -> Path | None:
        try:
            self.recovery_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(self.recovery_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            with os.fdopen(fd, "a", encoding="utf-8") as f:
                f.write(record.model_dump_json() + "\n")
            return self.recovery_path
        except OSError:
            logger.exception("could not write the recovery copy of job %s either", record.job_id)
            return None

    async def _retry_unsaved(self, job_id: str) -> None:
        deadline = self.clock.monotonic() + UNSAVED_RETRY_S
        while job_id in self._unsaved and self.clock.monotonic() < deadline:
            await self.clock.sleep(UNSAVED_RETRY_EVERY_S)
            record = self._unsaved.get(job_id)
            if record is None:
                return
            try:
                await self._store(record)
            except JournalWriteError:
                continue
            logger.warning("job %s (%s) is in the journal now", job_id, record.provider_job_id)

    async def recover(self) -> int:
        """Write accepted jobs a previous run could not journal (from the recovery file); returns how many."""
        try:
            lines = self.recovery_path.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return 0
        recovered, kept = 0, []
        for line in lines:
            try:
                saved = JobRecord.model_validate_json(line)
            except ValueError:
                continue
            current = await in_thread(self.journal.get, saved.job_id)
            if current is not None and current.submit_state != "pending":
                continue  # recorded since (by the retry loop, or another process)
            try:
                await self._store(saved)
                recovered += 1
            except JournalWriteError:
                kept.append(line)
        if kept:
            self.recovery_path.write_text("".join(k + "\n" for k in kept), encoding="utf-8")
        else:
            self.recovery_path.unlink(missing_ok=True)
        return recovered

    async def keep_alive(self) -> None:
        """Say, as long as this process runs, that its submissions in flight are not orphans.

        Real time, not the injected clock: liveness is about real processes, and a periodic sleeper
        on a test's jumping clock would drag every other job's time along with it."""
        beat = functools.partial(self.journal.beat, self.owner, host=self.host, pid=os.getpid())
        try:
            while True:
                await anyio.to_thread.run_sync(functools.partial(beat, ts=time.time()))
                await anyio.sleep(OWNER_BEAT_S)
        except JournalWriteError:
            logger.warning("could not record this process's heartbeat in the journal", exc_info=True)
        finally:
            # A clean exit says so at once; a crash is noticed by the pid check or the stale heartbeat.
            with anyio.CancelScope(shield=True), suppress(JournalWriteError):
                await anyio.to_thread.run_sync(self.journal.forget_owner, self.owner)

    async def _owner_gone(self, record: JobRecord) -> bool:
        """Whether the process that submitted this job can no longer record its answer."""
        age = self._wall() - record.submitted_ts
        if record.owner is None:
            return age > ORPHAN_SUBMIT_S  # written by an older release: no heartbeat to go by
        if record.owner == self.owner:
            return True  # ours, yet nothing of ours is submitting it: the attempt ended without a word
        found = await in_thread(self.journal.owner, record.owner)
        if found is None:
            return age > ORPHAN_SUBMIT_S
        host, pid, seen_ts = found
        if host == self.host:
            return not _pid_alive(pid)
        return time.time() - seen_ts > OWNER_STALE_S

    def driver_for(self, record: JobRecord) -> JobDriver:
        driver = self._drivers.get((record.provider, record.operation))
        if driver is None:
            raise ProviderUnavailable(
                f"job {record.job_id} belongs to {record.provider} {record.operation}, which this server "
                "has not enabled; configure that provider's key (see mediamux doctor) to resume it"
            )
        return driver

    def _wall(self) -> float:
        return self.clock.now().timestamp()

    # -- entry points ----------------------------------------------------------------------

    async def run(
        self,
        provider: str,
        operation: str,
        args: BaseModel,
        *,
        options: dict[str, Any] | None = None,
        new_job: bool = False,
        wait_s: float = 45.0,
        progress: ProgressFn | None = None,
    ) -> JobResult[Any]:
        """Submit (or reuse an identical recent job) and wait up to ``wait_s`` for it.

        Raises:
            BudgetExceeded: the ledger has reached MEDIAMUX_BUDGET_USD.
            ProviderError: the submission was refused or its outcome is unknown.
        """
        driver = self._drivers[(provider, operation)]
        wait_s = within_sync_window(wait_s)
        if not isinstance(args, driver.args_model):
            raise TypeError(
                f"{provider} {operation} takes {driver.args_model.__name__}, not {type(args).__name__}"
            )
        payload = args.model_dump(mode="json", exclude_none=True)
        report = Progress.of(progress)
        now = self._wall()
        principal = current_principal()
        key = dedup_key(provider, operation, payload)
        window = None if new_job or self.dedup_window_s <= 0 else now - self.dedup_window_s
        # An identical recent job is returned before the budget is consulted or the user asked: returning
        # it costs nothing, and a client re-sending a request whose stream broke must not be refused.
        # Only the caller's own jobs count: another person's identical prompt is not theirs to receive.
        # Without a budget, a question or a drain in the way, the claim's own check (in its transaction)
        # is enough, and this journal call is saved.
        if window is not None and (
            self.budget_usd is not None
            or self.confirm_usd is not None
            or self._draining
            or self.principal_budget(principal) is not None
        ):
            existing = await in_thread(self.journal.find_duplicate, key, window, principal)
            if existing is not None:
                return await self._reuse(existing, driver, options or {}, wait_s, report)
        work = self._admit(driver)
        try:
            return await self._new_job(
                driver, args, payload, key, window, now, options, wait_s=wait_s, report=report, work=work
            )
        finally:
            self._done(work)  # a render in the background holds a place of its own

    async def _new_job(
        self,
        driver: JobDriver,
        args: BaseModel,
        payload: dict[str, Any],
        key: str,
        window: float | None,
        now: float,
        options: dict[str, Any] | None,
        *,
        wait_s: float,
        report: Progress,
        work: _InFlight,
    ) -> JobResult[Any]:
        """A new paid job, admitted while this server takes new work: consent, budget, journal, submit."""
        provider, operation = driver.provider, driver.operation
        principal = current_principal()
        principal_budget = self.principal_budget(principal)
        limited = principal_budget is not None
        gate = SPEND_GATE.get()
        if (
            (self.confirm_usd is not None or self.budget_usd is not None or limited)
            and gate is not None
            and gate.can_ask()
        ):
            # The estimate is made once per job, not once per round: a retry carries the one shown.
            quote = gate.recall(key) or await self._quote(driver, args, key, limited=limited)
            if self._needs_consent(quote, limited=limited):
                quote = await self._with_budget_left(driver, quote, principal, principal_budget)
                if not await gate.confirm(quote):
                    return self._declined(driver, quote)
            reserve = self._reserve(driver, quote.estimate_usd, limited=limited)
        else:
            reserve = await self._reservation(driver, args, limited=limited)
        caller_options = options or {}
        options = dict(caller_options)
        token = None
        if self.hook_base is not None and driver.mode == "poll" and driver.takes_webhook(args):
            token = secrets.token_urlsafe(24)
            options[HOOK_OPTION] = hook_digest(token)
        record = JobRecord(
            job_id="job_" + secrets.token_urlsafe(12),
            provider=provider,
            operation=operation,
            dedup_key=key,
            args=payload,
            options=options,
            status="queued",
            session_id=self.session_id,
            submitted_ts=now,
            updated_ts=now,
            reserved_usd=reserve,
            price_key=driver.price_key(args),
            owner=self.owner,
            principal=principal,
        )
        claim = functools.partial(
            self.journal.claim,
            record,
            window_start_ts=window,
            budget_usd=self.budget_usd,
            principal_budget_usd=principal_budget,
            # The audit entry of a paid submission is written with the job, in its transaction.
            audit={
                "principal": principal,
                "action": "submit",
                "ts": now,
                "tool": f"{provider}.{operation}",
                "job_id": record.job_id,
                "estimate_usd": reserve,
            },
        )
        if self._closed:
            # Admitted before a drain whose time has run out meanwhile: too late to start anything now.
            raise ServerDraining(
                f"nothing was sent to {driver.title}: this server stopped while the request was being "
                "prepared; call again",
                retry_after_s=1.0,
            )
        work.job_id = record.job_id
        work.what = f"{driver.title} {driver.operation} {record.job_id}"
        # The job's slot, with its "submitted" event, exists before the row does: the claim runs in a
        # thread, and an identical call that finds the row meanwhile must find us submitting it.
        async with self._slot(record.job_id) as slot:
            slot.submitted = anyio.Event()
            created = False
            try:
                claimed, created = await in_thread(claim)
            except OverBudget as exc:
                raise self._over_budget(driver, exc, principal_budget) from None
            except JournalWriteError as exc:
                raise JournalUnavailable(
                    f"nothing was sent to {driver.title}: the job journal at {self.journal.location} could not be "
                    f"written ({exc}), and mediamux pays for nothing it cannot record; try again shortly"
                ) from None
            finally:
                if not created:
                    slot.submitted.set()  # nothing of ours will be submitted under this id
            if not created:
                self._done(work)
                return await self._reuse(claimed, driver, caller_options, wait_s, report)
            self._seen(record)
            if token is not None:
                self._hook_tokens[record.job_id] = token
                self._remember_hook(record.job_id, options[HOOK_OPTION])
            if driver.mode == "background" and self.task_group is not None:
                # One long synchronous request: it runs in the server's task group, so a client that
                # stops waiting (or times out) neither cancels nor loses a render it will be billed for.
                record.provider_status = "working"
                render = _InFlight(what=work.what, job_id=record.job_id, sending=True)
                self._in_flight.add(render)
                self.task_group.start_soon(self._submit_in_background, record, driver, render)
                await report.step(f"{driver.title}: working (job {record.job_id})")
            else:
                try:
                    record = await self._submit(record, driver, report, work)
                finally:
                    slot.submitted.set()
                    self._hook_tokens.pop(record.job_id, None)
                await report.step(
                    f"{driver.title}: submitted"
                    + (f" (provider id {record.provider_job_id})" if record.provider_job_id else "")
                    + f", {record.status}"
                )
            self._done(work)
            return await self._wait(record, driver, wait_s, report, deduplicated=False)

    async def _submit(
        self, record: JobRecord, driver: JobDriver, report: Progress, work: _InFlight | None = None
    ) -> JobRecord:
        async with self._heartbeating(report, driver, record, self.clock.monotonic()):
            if self._closed and work is not None:
                refusal = ServerDraining(
                    f"nothing was sent to {driver.title}: this server stopped before the request could leave; "
                    "call again",
                    retry_after_s=1.0,
                )
                await self._abandon(record, refusal)
                raise refusal
            # A drain whose time runs out stops this part through the scope: nothing has left yet.
            with anyio.CancelScope() as preparing:
                if work is not None:
                    work.scope = preparing
                try:
                    # Free, cancellable work first (uploading local files named in the arguments).
                    submit_args = await driver.prepare(self._args(driver, record), record.options, report)
                    record.provider_status = "submitting"
                    await report.step(f"{driver.title}: submitting")
                except BaseException as exc:
                    await self._abandon(record, exc)
                    raise
            if preparing.cancelled_caught:
                raise ServerDraining(
                    f"nothing was sent to {driver.title}: this server stopped while preparing the request "
                    f"(job {record.job_id} is recorded as withdrawn); call again",
                    retry_after_s=1.0,
                )
            # Shielded: once the request is on the wire, the provider's answer (its job id, its
            # charge) must be recorded even if the client gives up on this call meanwhile. Only a
            # drain whose time is up stops it, through this very scope, and records it as uncertain.
            with anyio.CancelScope(shield=True) as sending:
                if work is not None:
                    work.sending, work.scope = True, sending
                try:
                    with deadlines.unbounded():
                        outcome = await driver.submit(submit_args, self._submit_options(record), report)
                except ProviderError as exc:
                    await self._fail_submission(record, exc)
                    raise
                except Exception as exc:
                    # Our own failure to read an answer the provider did send: the job may
                    # exist and be billed, so it must not look like a free retry.
                    logger.exception(
                        "%s %s: unexpected failure after sending", record.provider, record.operation
                    )
                    unexpected = ProviderResponseError(
                        f"{driver.title} {record.operation}: the provider's answer could not be read "
                        f"({type(exc).__name__})",
                        provider=record.provider,
                        operation=record.operation,
                        maybe_sent=True,
                    )
                    await self._fail_submission(record, unexpected)
                    raise unexpected from None
                record = await self._accepted(record, driver, outcome)
            if sending.cancelled_caught:
                await self._interrupted(record, driver)
        return record

    def _remember_hook(self, job_id: str, digest: str) -> None:
        if len(self._hook_digests) >= MAX_REMEMBERED_HOOKS:
            # The oldest go first; their webhooks are then checked against the journal.
            for old in list(self._hook_digests)[: MAX_REMEMBERED_HOOKS // 4]:
                del self._hook_digests[old]
        self._hook_digests[job_id] = digest

    def _submit_options(self, record: JobRecord) -> dict[str, Any]:
        """The job's options, plus where its webhook should go if it has one (the token is never stored)."""
        token = self._hook_tokens.pop(record.job_id, None)
        if token is None or self.hook_base is None:
            return record.options
        return {**record.options, WEBHOOK_URL_OPTION: f"{self.hook_base}/{record.job_id}/{token}"}

    async def _interrupted(self, record: JobRecord, driver: JobDriver) -> None:
        """A drain stopped this submission on the wire: record it as uncertain (it may have been charged,
        so an identical call returns it rather than paying again) and tell the caller so."""
        message = (
            f"the server was restarting (MEDIAMUX_DRAIN_S ran out) while this request was on its way to "
            f"{driver.title}; it may have reached {driver.title} and been charged: check its dashboard. An "
            f"identical call within {self.dedup_window_s:.0f} s returns this record (job {record.job_id}) "
            "unless new_job is true"
        )
        await self._settle(
            record, Event.INTERRUPTED, Change(error=JobError(error_class="provider_error", message=message))
        )
        raise SubmissionInterrupted(message)

    async def _reuse(
        self, record: JobRecord, driver: JobDriver, options: dict[str, Any], wait_s: float, report: Progress
    ) -> JobResult[Any]:
        await report.step(f"{driver.title}: an identical job {record.job_id} is already {record.status}")
        # The caller may want more done with the same paid result (save_outputs, say): finish
        # the job again with those options rather than hand back less than was asked for.
        wanted = {k: v for k, v in options.items() if v and not record.options.get(k)}
        if wanted:
            record = await self._transition(
                record, Event.AMENDED, Change(options={**record.options, **wanted})
            )
        if record.submit_state == "uncertain":
            return self._view(record, deduplicated=True)
        return await self._wait(record, driver, wait_s, report, deduplicated=True)

    async def wait(
        self, job_id: str, *, wait_s: float = 45.0, progress: ProgressFn | None = None
    ) -> JobResult[Any]:
        record = await self.get_record(job_id)
        report = Progress.of(progress)
        wait_s = within_sync_window(wait_s)
        finished = record.terminal and (record.status != "completed" or record.finalized)
        if finished or record.submit_state in ("rejected", "uncertain"):
            return self._view(record)
        return await self._wait(record, self.driver_for(record), wait_s, report, deduplicated=False)

    async def get_record(self, job_id: str) -> JobRecord:
        """The caller's job: another principal's is "not found", exactly like one that never existed."""
        record = await self._fetch(job_id.strip())
        if record is None or record.principal != current_principal():
            raise JobNotFound(f"no job {job_id!r} in the journal; jobs_list shows the known jobs")
        return record

    def view(self, record: JobRecord) -> JobResult[Any]:
        return self._view(record)

    async def read(self, job_id: str) -> JobResult[Any]:
        """A job as it is now: asked of the provider first when the record is stale."""
        return self._view(await self.refresh(await self.get_record(job_id)))

    # -- internals -------------------------------------------------------------------------

    @staticmethod
    def _args(driver: JobDriver, record: JobRecord) -> Any:
        return driver.args_model.model_validate(record.args)

    async def _reservation(
        self, driver: JobDriver, args: BaseModel, *, limited: bool = False
    ) -> float | None:
        """What a new job holds against the budget until its provider reports the charge: its
        estimate, else the most recent jobs of its kind cost, else MEDIAMUX_UNPRICED_JOB_USD.
        ``limited``: the caller has a budget of their own, even where the server has none."""
        if self.budget_usd is None and not limited:
            return None
        return self._reserve(driver, await self._estimate(driver, args), limited=limited)

    async def _estimate(self, driver: JobDriver, args: BaseModel) -> float | None:
        """The provider's quote (free to ask), else what the most recent job of its kind cost."""
        estimate = await driver.estimate_usd(args)
        key = driver.price_key(args)
        if estimate is None and key is not None:
            estimate = await in_thread(self.journal.price_history, driver.provider, driver.operation, key)
        return estimate

    async def _quote(
        self, driver: JobDriver, args: BaseModel, dedup: str, *, limited: bool = False
    ) -> SpendQuote:
        estimate = await self._estimate(driver, args)
        # A job the budget would refuse is refused before anyone is asked.
        self._reserve(driver, estimate, limited=limited)
        return SpendQuote(
            provider=driver.provider,
            operation=driver.operation,
            title=driver.title,
            subject=driver.price_key(args) or driver.operation.replace("_", " "),
            dedup_key=dedup,
            estimate_usd=estimate,
        )

    def _needs_consent(self, quote: SpendQuote, *, limited: bool = False) -> bool:
        if quote.estimate_usd is None:
            # A blind charge against a limit the user (or the operator, for them) set.
            return self.budget_usd is not None or limited
        return self.confirm_usd is not None and quote.estimate_usd > self.confirm_usd + 1e-9

    async def _with_budget_left(
        self,
        driver: JobDriver,
        quote: SpendQuote,
        principal: str,
        principal_budget: float | None = None,
    ) -> SpendQuote:
        """The quote with the tighter of the budgets as it stands now (the server's, the caller's own);
        a job that no longer fits is refused unasked (the claim checks again, atomically, after the
        answer)."""
        limits: list[tuple[float, float, str | None]] = []
        if self.budget_usd is not None:
            limits.append((self.budget_usd, await in_thread(self.journal.committed_usd), None))
        if principal_budget is not None:
            limits.append(
                (principal_budget, await in_thread(self.journal.committed_usd, principal), principal)
            )
        if not limits:
            return quote
        reserve = self._reserve(driver, quote.estimate_usd, limited=True)
        for limit, committed, whose in limits:
            if committed + (reserve or 0.0) > limit + 1e-9:
                raise self._over_budget(driver, OverBudget(committed, reserve, principal=whose), limit)
        limit, committed, _ = min(limits, key=lambda item: item[0] - item[1])
        return dataclasses.replace(quote, reserve_usd=reserve, budget_usd=limit, committed_usd=committed)

    def _declined(self, driver: JobDriver, quote: SpendQuote) -> JobResult[Any]:
        """The answer to a "no": a normal result, with no job, no reservation and no charge."""
        return _JobView(
            job_id="",
            provider=driver.provider,
            operation=driver.operation,
            status="declined",
            cost=Cost(usd=0.0, note="not submitted, so not charged"),
            session_spent_usd=self._session_spent(),
            submitted_at="",
            note=f"not run: the user declined {driver.title} {quote.subject}"
            + (f" at an estimated {format_usd(quote.estimate_usd)}" if quote.estimate_usd is not None else "")
            + "; nothing was submitted, reserved or charged. Call it again only if the user asks to",
        )

    def _reserve(self, driver: JobDriver, estimate: float | None, *, limited: bool = False) -> float | None:
        """What to hold against the budgets (None: no budget applies); ``limited``: the caller's own."""
        if self.budget_usd is None and not limited:
            return None
        if estimate is None:
            estimate = self.unpriced_job_usd
        if estimate is None:
            raise BudgetExceeded(
                f"MEDIAMUX_BUDGET_USD is set, but the price of this {driver.title} {driver.operation} job is not "
                "known before it runs, so it cannot be held against the budget. Set MEDIAMUX_UNPRICED_JOB_USD to "
                "the most one such job may cost (it is reserved, then replaced by what the provider reports)"
                + (f", {driver.price_hint}" if driver.price_hint else "")
                + ", or unset MEDIAMUX_BUDGET_USD"
            )
        return estimate

    def _over_budget(
        self, driver: JobDriver, exc: OverBudget, principal_budget: float | None = None
    ) -> BudgetExceeded:
        committed, estimate = exc.committed_usd, exc.reserved_usd or 0.0
        if exc.principal is not None:
            assert principal_budget is not None
            limit, name, who = principal_budget, "your budget on this server", "your"
            fix = "ask the server's operator to raise it (MEDIAMUX_PRINCIPAL_BUDGET_USD or your entry in MEDIAMUX_PRINCIPALS_FILE)"
        else:
            assert self.budget_usd is not None
            limit, name, who = self.budget_usd, "MEDIAMUX_BUDGET_USD", "the"
            fix = "raise MEDIAMUX_BUDGET_USD to allow more paid work"
        if committed >= limit - 1e-9:
            return BudgetExceeded(
                f"budget reached: {who} ledger has recorded {format_usd(committed)} of spend (charges plus what "
                f"running jobs hold) and {name} is {format_usd(limit)}; {fix} (jobs_costs has the breakdown)"
            )
        return BudgetExceeded(
            f"over budget: this {driver.title} job is estimated at {format_usd(estimate)}, "
            f"{format_usd(committed)} is already spent or held by running jobs and {name} is "
            f"{format_usd(limit)}; choose a cheaper request, or {fix}"
        )

    async def _audit(self, record: JobRecord, action: str, **fields: Any) -> None:
        """The audit trail: never a reason to lose or refuse a job, so a failed write is logged only."""
        try:
            await in_thread(
                functools.partial(
                    self.journal.audit,
                    principal=record.principal,
                    action=action,
                    ts=self._wall(),
                    tool=f"{record.provider}.{record.operation}",
                    job_id=record.job_id,
                    **fields,
                )
            )
        except JournalError as exc:
            logger.warning("audit entry for %s %s not written: %s", action, record.job_id, exc)

    async def _abandon(self, record: JobRecord, exc: BaseException) -> None:
        """Preparation failed or was cancelled: nothing reached the provider, so nothing was paid."""
        if isinstance(exc, anyio.get_cancelled_exc_class()):
            error = JobError(error_class="invalid_input", message="cancelled before submission")
            await self._transition(record, Event.WITHDRAWN, Change(error=error))
        else:
            error_class = exc.error_class if isinstance(exc, MediamuxError) else "invalid_input"
            error = JobError(error_class=error_class, message=str(exc)[:500])
            await self._transition(record, Event.REJECTED, Change(error=error))

    async def _submit_in_background(
        self, record: JobRecord, driver: JobDriver, render: _InFlight | None = None
    ) -> None:
        async with self._slot(record.job_id) as slot:
            # jobs_cancel stops the render through this scope, and so does a drain whose time is up; a
            # server shutdown cancels the whole group.
            with anyio.CancelScope() as scope:
                slot.background = scope
                if render is not None:
                    render.scope = scope
                try:
                    args = await driver.prepare(self._args(driver, record), record.options, _no_progress)
                    try:
                        outcome = await driver.submit(args, record.options, _no_progress)
                    except ProviderError as exc:
                        await self._fail_submission(record, exc)
                        return
                    await self._accepted(record, driver, outcome)
                except JournalUnavailable:
                    return  # kept in memory and retried; the error was logged with the provider's id
                except anyio.get_cancelled_exc_class():
                    with anyio.CancelScope(shield=True):
                        await self._cancelled_in_flight(record)  # cancelled, or the server is stopping
                    raise
                except Exception as exc:
                    logger.exception("background %s %s failed", record.provider, record.operation)
                    error = JobError(
                        error_class="provider_error", message=f"{driver.title}: {type(exc).__name__}"
                    )
                    await self._settle(record, Event.LOST, Change(error=error))
                finally:
                    slot.background = None
                    self._done(render)
                    if slot.submitted is not None:
                        slot.submitted.set()

    async def _cancelled_in_flight(self, record: JobRecord) -> None:
        """The server stopped while a submission it could not shield was on the wire."""
        error = JobError(
            error_class="provider_error",
            message=f"stopped while {record.provider} was working on it (cancelled, or the server stopped); it may "
            "have charged for the "
            "work. "
            f"An identical call within {self.dedup_window_s:.0f} s returns this record unless new_job is true",
        )
        await self._settle(record, Event.INTERRUPTED, Change(error=error))

    async def _settle(self, record: JobRecord, event: Event, change: Change) -> None:
        """End a submission that failed in a way we did not foresee, unless its answer was already
        recorded (the failure came after): a crash here would take the server's task group down."""
        fresh = (await self._fetch(record.job_id)) or record
        if fresh.submit_state == "pending":
            await self._transition(fresh, event, change)

    async def _fail_submission(self, record: JobRecord, exc: ProviderError) -> None:
        message = exc.message
        if exc.maybe_sent:
            message = (
                f"{exc.summary.rstrip('.')}. The request may have reached {record.provider} before the answer "
                "was lost, and no job id came back, so mediamux cannot track it: check the provider's dashboard "
                f"or balance before retrying. An identical call within {self.dedup_window_s:.0f} s returns "
                f"this record (job {record.job_id}) unless new_job is true"
            )
            exc.message = message
        error = JobError(error_class=exc.error_class, message=message, retry_after_s=exc.retry_after_s)
        await self._transition(record, Event.LOST if exc.maybe_sent else Event.REJECTED, Change(error=error))

    async def _wait(
        self, record: JobRecord, driver: JobDriver, wait_s: float, report: Progress, *, deduplicated: bool
    ) -> JobResult[Any]:
        start = self.clock.monotonic()
        deadline = start + max(0.0, wait_s)
        last_problem: str | None = None
        failures = 0
        not_before = start  # no poll before this (the provider asked us to wait, or polls are failing)
        last_look = False  # this call's look right before answering "not finished" has been made
        follow: float | None = None  # quick re-polls after a webhook, while the provider finishes up
        plan: Plan | None = None
        expectation: Expectation | None = None
        last_said: tuple[str, str | None] | None = None
        async with self._heartbeating(report, driver, record, start), self._slot(record.job_id) as slot:
            if self.leases is not None:
                record = await self.leases.watch(record, driver, slot, deadline, report)
                return self._view(record, deduplicated=deduplicated)
            slot.waiters += 1
            try:
                while True:
                    if record.submit_state == "pending":
                        record = await self._await_submission(record, slot, deadline)
                        if record.submit_state != "accepted":
                            break
                    # One poller per job at a time: concurrent waiters (a duplicate call, jobs_wait from
                    # another client) take turns and each starts from the journal's latest state, so
                    # none overwrites another's progress or saves the outputs twice.
                    async with slot.lock:
                        record = (await self._fetch(record.job_id, recent_ok=True)) or record
                    if record.terminal:
                        self._hook_digests.pop(record.job_id, None)
                        if record.status == "completed" and not record.finalized:
                            record = await self._finalize_within(record, driver, slot, deadline)
                        break
                    if self._draining:
                        break  # the job goes on upstream; the caller resumes it elsewhere with its id
                    now = self.clock.monotonic()
                    remaining = deadline - now
                    woken = by_follow = final = False
                    if remaining <= 0:
                        # The answer is due; it may say "not finished" only on a fresh look. A budget of
                        # 0 is the non-blocking check every result suggests: one poll now, unless the
                        # provider was asked a moment ago.
                        if last_look or self._fresh(record) or not_before > now:
                            break
                        final = True
                        woken = slot.wake.is_set()
                    else:
                        e = await self._expectation(record)
                        if plan is None or e is not expectation:
                            expectation = e
                            plan = Plan(e, seed=record.job_id, webhook=self._hooked(record))
                        anchor = self._anchor(record)
                        age = self._wall() - anchor
                        checked = (record.checked_ts or anchor) - anchor
                        delay = plan.due(record.polls, checked) - age
                        if follow is not None and follow < delay:
                            delay, by_follow = follow, True
                        delay = max(delay, not_before - now, 0.0)
                        lead = min(FINAL_LEAD_S, remaining)
                        nap_only = False
                        if delay > remaining - lead:
                            # The next planned poll falls after the answer is due: the last look is
                            # taken in its place, unless the one before is still fresh by then (or
                            # it was taken already, or the provider asked us to wait past the end).
                            by_follow = False
                            fresh_at_end = self._wall() + remaining - (record.checked_ts or anchor) <= FRESH_S
                            if last_look or fresh_at_end or not_before - now >= remaining:
                                delay, nap_only = remaining, True
                            else:
                                delay, final = max(remaining - lead, not_before - now), True
                        woken = await self._nap(delay, slot)
                        if self._draining:
                            break
                        if nap_only and not woken:
                            continue
                    async with slot.lock:
                        record = (await self._fetch(record.job_id, recent_ok=True)) or record
                        if record.terminal:
                            continue
                        if woken and not slot.wake.is_set():
                            continue  # another waiter has already answered that webhook
                        woken_ts = None
                        if slot.wake.is_set():
                            woken_ts, slot.wake, slot.woken_ts = slot.woken_ts, anyio.Event(), None
                        record, last_problem, retry_after = await self._poll_once(
                            record, driver, deadline, woken_ts=woken_ts
                        )
                    last_look = last_look or final
                    now = self.clock.monotonic()
                    if last_problem:
                        # Never faster than the provider asked, and slower while polls keep failing.
                        failures += 1
                        backoff = min(MAX_POLL_S, FIRST_POLL_S * BACKOFF ** (failures - 1))
                        not_before = now + max(backoff, retry_after or 0.0)
                        await report.step(f"{driver.title}: {record.status}; poll failed, will retry")
                        continue
                    failures = 0
                    if woken_ts is not None:
                        follow = FOLLOW_FIRST_S
                    elif by_follow and follow is not None:
                        follow = follow * 2 if follow * 2 <= MAX_POLL_S else None
                    # Progress when the provider's word changes; the heartbeat says "still at it" (a
                    # notification per poll costs 200 jobs at once a burst of them at the finish).
                    said = (record.status, record.provider_status)
                    if said != last_said:
                        last_said = said
                        await report.step(self._progress_line(driver, record, start))
            finally:
                slot.waiters -= 1
                if slot.waiters == 0 and slot.wake.is_set():
                    # A webhook came as this call was answering: someone must still look.
                    self._follow_wake(record.job_id)
        note = None
        if self._draining and not record.terminal:
            note = "this server is restarting, so it stopped waiting here; " + (
                self._next_step(record, last_problem) or ""
            )
        return self._view(record, deduplicated=deduplicated, problem=last_problem, note=note)

    async def _poll_once(
        self, record: JobRecord, driver: JobDriver, deadline: float, *, woken_ts: float | None = None
    ) -> tuple[JobRecord, str | None, float | None]:
        """One poll under the job's lock: the new record, what went wrong (if anything) and how long
        the provider asked us to wait. ``woken_ts``: when a webhook said the job had finished."""
        assert record.provider_job_id is not None
        # The poll, retries and body included, ends within what is left of the caller's budget.
        left = max(0.0, deadline - self.clock.monotonic()) + POLL_GRACE_S
        try:
            with deadlines.within(left):
                outcome = await driver.poll(
                    record.provider_job_id, self._args(driver, record), record.options
                )
        except OutOfTime:
            return record, None, None  # the caller's budget ran out mid-poll: nothing went wrong upstream
        except NotFound as exc:
            if self._wall() - record.submitted_ts < EARLY_404_S:
                return record, exc.message, None  # a job can take a moment to become visible
            error = JobError(error_class="not_found", message=exc.message)
            return await self._transition(record, Event.VANISHED, Change(error=error)), None, None
        except (ProviderConnectionError, ServerError, RateLimited, ProviderResponseError) as exc:
            # The transport already retried; the job itself is fine. Keep waiting, and never faster
            # than the provider asked.
            return record, exc.message, exc.retry_after_s
        change = outcome.change()
        finished = outcome.status == "completed" and not record.terminal
        if finished:
            change.options = {**record.options, FINISHED_OPTION: self._finish_estimate(record, woken_ts)}
        new = await self._transition(record, Event.POLLED, change)
        if finished:
            self._learn(new)
        return new, None, None

    # -- the poll plan and webhooks ----------------------------------------------------------------

    @staticmethod
    def _anchor(record: JobRecord) -> float:
        """Where a job's age counts from: when the provider accepted it (rows from older releases: the
        submission)."""
        accepted = record.options.get(ACCEPTED_OPTION)
        return float(accepted) if isinstance(accepted, int | float) else record.submitted_ts

    def _fresh(self, record: JobRecord) -> bool:
        return self._wall() - (record.checked_ts or record.submitted_ts) <= FRESH_S

    def _hooked(self, record: JobRecord) -> bool:
        return self.hook_base is not None and HOOK_OPTION in record.options

    def _finish_estimate(self, record: JobRecord, woken_ts: float | None) -> float:
        """How long after acceptance a job just seen finished did finish: when its webhook came, else
        between the look that found it unfinished and this one (jobs.schedule.finish_estimate)."""
        anchor = self._anchor(record)
        if woken_ts is not None:
            return round(max(0.0, woken_ts - anchor), 3)
        before = max(0.0, (record.checked_ts or anchor) - anchor)
        known = self._history.get(self._kind(record))
        estimate = finish_estimate(before, self._wall() - anchor, known.expectation if known else None)
        return round(max(0.0, estimate), 3)

    @staticmethod
    def _kind(record: JobRecord) -> tuple[str, str, str | None]:
        return record.provider, record.operation, record.price_key

    async def _expectation(self, record: JobRecord) -> Expectation | None:
        """What recent jobs of this kind say about this one; read from the journal (in a worker thread,
        once per kind however many jobs ask at once) at most every HISTORY_TTL_S."""
        kind = self._kind(record)
        known = self._history.get(kind)
        if known is not None and self.clock.monotonic() - known.loaded < HISTORY_TTL_S:
            return known.expectation
        lock = self._history_locks.setdefault(kind, anyio.Lock())
        async with lock:
            known = self._history.get(kind)
            if known is None or self.clock.monotonic() - known.loaded >= HISTORY_TTL_S:
                read = functools.partial(self.journal.recent_durations, *kind, limit=HISTORY)
                try:
                    durations = await in_thread(read)
                except JournalError:
                    logger.debug("could not read past durations of %s", kind, exc_info=True)
                    durations = known.durations if known is not None else []
                known = self._history[kind] = _History(durations, self.clock.monotonic())
        return known.expectation

    def _learn(self, record: JobRecord) -> None:
        """A job finished here: the next jobs of its kind are planned with it at once."""
        known = self._history.get(self._kind(record))
        finished = record.options.get(FINISHED_OPTION)
        if known is not None and isinstance(finished, int | float):
            known.add(float(finished))

    async def _nap(self, seconds: float, slot: _Slot | None = None) -> bool:
        """Sleep on the clock between polls, cut short by a webhook for the slot's job (True) or by a
        drain, which wakes every napper at once so blocking calls return promptly (False)."""
        if self._draining:
            return False
        wake = slot.wake if slot is not None else None
        if wake is not None and wake.is_set():
            return True
        if seconds <= 0:
            return False
        woken = False
        with anyio.CancelScope() as scope:
            self._naps.add(scope)
            try:
                async with anyio.create_task_group() as tg:
                    if wake is not None:

                        async def alarm() -> None:
                            nonlocal woken
                            await wake.wait()
                            woken = True
                            tg.cancel_scope.cancel()

                        tg.start_soon(alarm)
                    await self.clock.sleep(seconds)
                    tg.cancel_scope.cancel()
            finally:
                self._naps.discard(scope)
        return woken

    async def wake(self, job_id: str, token: str) -> bool:
        """A webhook for ``job_id`` came with ``token``. When the token is that job's, the job is polled
        now (by whoever waits on it, else in the background, its outputs saved) and True is returned;
        anything else is False and changes nothing. Nothing the webhook carried is used: the job's
        status, result and cost are read from the provider, as on every poll."""
        expected = self._hook_digests.get(job_id)
        if expected is None:
            # Submitted by another process, or before a restart: the journal has what the token hashes to.
            record = self._unsaved.get(job_id)
            if record is None:
                record = await in_thread(self.journal.get, job_id)
            found = record.options.get(HOOK_OPTION) if record is not None else None
            expected = found if isinstance(found, str) else None
        if not hmac.compare_digest(hook_digest(token), expected or _NO_HOOK) or expected is None:
            return False
        # A provider sends one; more than one a second for a job is a replay (a leaked URL), and
        # must not turn into a poll each.
        now = self.clock.monotonic()
        if now - self._woken.get(job_id, -WAKE_MIN_GAP_S) < WAKE_MIN_GAP_S:
            return True
        if len(self._woken) >= MAX_REMEMBERED_HOOKS:
            self._woken.clear()
        self._woken[job_id] = now
        slot = self._slots.get(job_id)
        if slot is not None:
            if not slot.wake.is_set():
                slot.woken_ts = self._wall()
            slot.wake.set()
            if slot.waiters:
                return True
        self._follow_wake(job_id)
        return True

    def _follow_wake(self, job_id: str) -> None:
        """Poll a job a webhook woke that nobody is waiting on, in the server's task group."""
        if self.task_group is None or job_id in self._following:
            return
        self._following.add(job_id)
        self.task_group.start_soon(self._follow, job_id, self._wall())

    async def _follow(self, job_id: str, woken_ts: float) -> None:
        try:
            async with self._slot(job_id) as slot:
                record = await self._fetch(job_id)
                if record is None or (record.terminal and (record.status != "completed" or record.finalized)):
                    self._hook_digests.pop(job_id, None)
                    return
                driver = self._drivers.get((record.provider, record.operation))
                if driver is None:
                    return
                if not slot.wake.is_set():
                    slot.woken_ts = woken_ts
                    slot.wake.set()
                await self._wait(record, driver, WAKE_FOLLOW_S, Progress(_no_progress), deduplicated=False)
        except Exception:  # best effort: the job's own waiters and reads still poll it
            logger.warning("following the webhook of job %s failed", job_id, exc_info=True)
        finally:
            self._following.discard(job_id)

    # -- fresh status for reads, and cancel ------------------------------------------------------

    def _due(self, record: JobRecord) -> bool:
        """Whether a read of this job should ask the provider first: it is live upstream and the last
        look at it is more than FRESH_S old (a finished job is never reported as running)."""
        if record.terminal or record.submit_state != "accepted" or not record.provider_job_id:
            return False
        if self.leases is not None:
            return False  # the replica holding its lease keeps it fresh
        driver = self._drivers.get((record.provider, record.operation))
        if driver is None or driver.mode == "background":
            return False  # nothing to poll: the render's own request brings the answer
        return not self._fresh(record)

    def poll_interval_s(self, record: JobRecord) -> float:
        """How often a client polling this job (an MCP task) is worth answering anew: dense early, every
        MAX_POLL_S later; the engine's own polls follow the learned plan (jobs.schedule)."""
        age = self._wall() - record.submitted_ts
        return min(MAX_POLL_S, max(FIRST_POLL_S, age / 4))

    async def refresh(self, record: JobRecord, *, within_s: float = REFRESH_S) -> JobRecord:
        """The record, asked of the provider first when it is stale; never two polls of one job at
        once (a job someone is polling right now is read as it is)."""
        if not self._due(record):
            return record
        driver = self._drivers[(record.provider, record.operation)]
        async with self._slot(record.job_id) as slot:
            if slot.lock.locked():
                return (await self._fetch(record.job_id, recent_ok=True)) or record
            async with slot.lock:
                fresh = (await self._fetch(record.job_id, recent_ok=True)) or record
                if not self._due(fresh):
                    return fresh
                fresh, _, _ = await self._poll_once(fresh, driver, self.clock.monotonic() + within_s)
                return fresh

    async def refresh_all(self, records: list[JobRecord], *, limit: int = REFRESH_MANY) -> list[JobRecord]:
        """Fresh copies of a list of jobs: at most ``limit`` polls, REFRESH_CONCURRENCY at a time, all
        within REFRESH_S; the rest are shown as last checked (every view says when that was)."""
        due = [i for i, r in enumerate(records) if self._due(r)][:limit]
        out = list(records)
        limiter = anyio.CapacityLimiter(REFRESH_CONCURRENCY)

        async def one(i: int) -> None:
            async with limiter:
                out[i] = await self.refresh(records[i])

        with anyio.move_on_after(REFRESH_S):
            async with anyio.create_task_group() as tg:
                for i in due:
                    tg.start_soon(one, i)
        return [(await self._fetch(r.job_id)) or r for r in out]

    async def cancel(self, job_id: str) -> JobResult[Any]:
        """Stop a job: polling stops at once; the provider is told where it can be (the driver says),
        otherwise the job is no longer followed and whatever it costs stands."""
        record = await self.get_record(job_id)
        if record.terminal:
            return self._view(record, note=f"already {record.status}; nothing was cancelled")
        driver = self.driver_for(record)
        slot = self._slots.get(job_id)
        if record.submit_state == "pending":
            if slot is not None and slot.background is not None:
                # A synchronous render: stopping our request is all there is; the provider may bill it.
                slot.background.cancel()
                done = slot.submitted
                if done is not None:
                    await self.clock.wait_for(done, within_s=REFRESH_S)
                return self._view((await self._fetch(job_id)) or record)
            raise JobsError(
                f"job {job_id} is being submitted right now; cancel it once the provider has answered "
                "(jobs_get shows when), so its charge, if any, is known"
            )
        upstream = False
        problem = None
        if driver.can_cancel and record.provider_job_id:
            try:
                await driver.cancel(record.provider_job_id, self._args(driver, record))
                upstream = True
            except ProviderError as exc:
                problem = exc.message
        async with slot.lock if slot is not None else anyio.Lock():
            fresh = (await self._fetch(job_id)) or record
            if fresh.terminal:
                return self._view(fresh, note=f"it {fresh.status} before the cancel arrived")
            await self._audit(fresh, "cancel", detail="upstream" if upstream else "here only")
            if upstream:
                fresh = await self._transition(fresh, Event.CANCELLED, Change(provider_status="cancelled"))
                note = f"cancelled: {driver.title} stopped the job"
            else:
                fresh = await self._transition(fresh, Event.ABANDONED)
                note = (
                    f"cancelled here: {driver.title} could not be told ({problem}), so the job may still run"
                    if problem
                    else f"cancelled here: {driver.title} has no way to stop a job, so it may still run upstream"
                ) + "; any charge for it stands"
        return self._view(fresh, note=note)

    async def _await_submission(self, record: JobRecord, slot: _Slot, deadline: float) -> JobRecord:
        """Wait, within the budget, for a submission in flight: ours running in the background, a
        duplicate call's original, or one made by another process sharing the journal — which is
        declared lost only once that process is gone, however long its upload takes."""
        ours = slot.submitted
        if ours is not None:
            await self.clock.wait_for(ours, within_s=deadline - self.clock.monotonic())
            return (await self._fetch(record.job_id, recent_ok=True)) or record
        while True:
            fresh = (await self._fetch(record.job_id)) or record
            if fresh.submit_state != "pending":
                return fresh
            if await self._owner_gone(fresh):
                error = JobError(
                    error_class="provider_error",
                    message="this job's submission never recorded an outcome (the server that sent it stopped "
                    "mid-request); it may or may not have reached the provider — check the provider's dashboard",
                )
                return await self._transition(fresh, Event.ORPHANED, Change(error=error))
            remaining = deadline - self.clock.monotonic()
            if remaining <= 0 or self._draining:
                return fresh
            await self._nap(min(remaining, 0.5))

    async def _finalize_within(
        self, record: JobRecord, driver: JobDriver, slot: _Slot, deadline: float
    ) -> JobRecord:
        """Finish a completed job (save its outputs) in the server's task group, waiting for it only
        within the caller's budget: a large download must neither break the wait budget nor be
        restarted by every later jobs_wait."""
        job_id = record.job_id
        if slot.finalizing is None:
            done = slot.finalizing = anyio.Event()

            # A drain lets the save finish within its bound; one cut short resumes at the next start.
            saving = _InFlight(what=f"saving the outputs of {job_id}", job_id=job_id)
            self._in_flight.add(saving)

            async def work() -> None:
                # Holds its own place in the slot, so the event outlives every waiter that gives up.
                # It takes no lock: a slow download must never stop a status read (the event already
                # makes it the only save of this job in this process).
                async with self._slot(job_id) as own:
                    try:
                        fresh = (await self._fetch(job_id, recent_ok=True)) or record
                        if fresh.status == "completed" and not fresh.finalized:
                            await self._finalize(fresh, driver, Progress(_no_progress))
                    finally:
                        own.finalizing = None
                        self._done(saving)
                        done.set()

            if self.task_group is None:
                await work()
            else:
                self.task_group.start_soon(work)
        finalizing = slot.finalizing
        if finalizing is not None:
            await self.clock.wait_for(finalizing, within_s=deadline - self.clock.monotonic())
        return (await self._fetch(job_id, recent_ok=True)) or record

    async def _finalize(self, record: JobRecord, driver: JobDriver, report: Progress) -> JobRecord:
        outcome = Outcome(status="completed", result=record.result, cost=Cost())
        try:
            outcome = await driver.finalize(outcome, self._args(driver, record), record.options, report)
        except Exception as exc:
            # The paid result is safe in the journal; a failed save must not turn it into a failure.
            logger.warning("finalizing %s failed: %s", record.job_id, type(exc).__name__)
            result = dict(record.result or {})
            result["save_error"] = str(exc)[:300]
            outcome = Outcome(status="completed", result=result)
        try:
            return await self._transition(record, Event.FINALIZED, outcome.change())
        except IllegalTransition:
            # Another process saved it first; outputs are named by content, so nothing is doubled.
            return (await self._fetch(record.job_id)) or record

    @asynccontextmanager
    async def _heartbeating(
        self, report: Progress, driver: JobDriver, record: JobRecord, start: float
    ) -> AsyncIterator[None]:
        """Heartbeats alongside the body; a failure of the body surfaces as itself, not as a group.

        Most calls end before a beat is due, and a task (with its group and cancel scope) costs more
        than the rest of a quick job's bookkeeping: so on asyncio with a server task group, a timer
        starts the beating task there only once the first beat is due, and it is stopped (and waited
        for) before the call returns, so no beat follows the result."""
        if report.silent:
            yield
            return
        host = self.task_group
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        if host is not None and loop is not None:
            beating = _Beating()

            def due(last: int) -> None:
                if not beating.stopped:
                    host.start_soon(self._beat_until_stopped, beating, report, driver, record, start, last)

            timer = loop.call_later(self.heartbeat_s, due, report.sent)
            try:
                yield
            finally:
                timer.cancel()
                await beating.stop()
            return
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._heartbeat, report, driver, record, start)
                try:
                    yield
                finally:
                    tg.cancel_scope.cancel()
        except BaseExceptionGroup as group:
            if len(group.exceptions) == 1:
                raise group.exceptions[0] from None
            raise

    async def _beat_until_stopped(
        self,
        beating: _Beating,
        report: Progress,
        driver: JobDriver,
        record: JobRecord,
        start: float,
        last: int,
    ) -> None:
        if beating.stopped:
            return
        beating.done = anyio.Event()
        try:
            with anyio.CancelScope() as beating.scope:
                if report.sent == last:
                    await report.step(self._progress_line(driver, record, start))
                await self._heartbeat(report, driver, record, start)
        finally:
            beating.done.set()

    async def _heartbeat(self, report: Progress, driver: JobDriver, record: JobRecord, start: float) -> None:
        # Real time, not the injected clock: this promise is to the person watching the client, and a
        # poll can stall for a while inside the transport's retries.
        last = report.sent
        while True:
            await anyio.sleep(self.heartbeat_s)
            if report.sent == last:
                await report.step(self._progress_line(driver, record, start))
            last = report.sent

    def _progress_line(self, driver: JobDriver, record: JobRecord, start: float) -> str:
        elapsed = self.clock.monotonic() - start
        status = record.provider_status or record.status
        return f"{driver.title}: {status} · {elapsed:.0f} s"

    def _cost_of(self, record: JobRecord) -> Cost:
        """The reported cost; for a job the provider may bill but reported nothing about, it says so."""
        if not record.cost.is_empty or record.submit_state not in ("accepted", "uncertain"):
            return record.cost
        driver = self._drivers.get((record.provider, record.operation))
        return record.cost.model_copy(
            update={"note": f"not reported by {driver.title if driver else record.provider}"}
        )

    @staticmethod
    def _next_step(record: JobRecord, problem: str | None) -> str | None:
        if record.status == "completed" and not record.finalized:
            return (
                f"finished; its outputs are still being saved. Call jobs_wait with job_id {record.job_id} "
                "for the saved files (nothing is charged again)"
            )
        if record.terminal:
            return None
        note = (
            f"still {record.status}; call jobs_wait with job_id {record.job_id} to keep waiting "
            "(nothing is charged again)"
        )
        if record.provider_status and record.provider_status.lower() not in IN_PROGRESS_WORDS:
            note = f"unrecognised provider status {record.provider_status!r}; " + note
        if problem:
            note += f". Last poll failed: {problem}"
        return note

    def _view(
        self,
        record: JobRecord,
        *,
        deduplicated: bool = False,
        problem: str | None = None,
        note: str | None = None,
    ) -> JobResult[Any]:
        end = record.completed_ts if record.completed_ts is not None else self._wall()
        return _JobView(
            job_id=record.job_id,
            provider=record.provider,
            operation=record.operation,
            provider_job_id=record.provider_job_id,
            # Finished upstream, outputs still downloading: resumable, and not yet what was asked for.
            status="saving_outputs"
            if record.status == "completed" and not record.finalized
            else record.status,
            provider_status=record.provider_status,
            result=record.result,
            error=record.error,
            cost=self._cost_of(record),
            session_spent_usd=self._session_spent(),
            elapsed_s=round(max(0.0, end - record.submitted_ts), 3),
            submitted_at=iso(record.submitted_ts) or "",
            completed_at=iso(record.completed_ts),
            checked_at=iso(record.checked_ts),
            deduplicated=deduplicated,
            note=note if note is not None else self._next_step(record, problem),
        )
