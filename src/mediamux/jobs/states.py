"""A job's life, written down once.

Every change to a job's state is an ``Event`` applied by ``advance``: it checks the move against
``TRANSITIONS`` and returns the new record. The engine writes only what ``advance`` returns, so
this table is the whole story of how a job can move. ``docs/job-states.md`` is generated from it
(``python -m mediamux.jobs.states``) and a test keeps the two equal.

A job's *state* is derived from three journal columns: ``status`` (what users see),
``submit_state`` (whether the provider has the job) and ``finalized`` (outputs saved).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from mediamux.jobs.models import TERMINAL_STATUSES, JobError, JobRecord
from mediamux.providers.cost import Cost


class State(StrEnum):
    SUBMITTING = "submitting"  # journaled; the provider's answer has not arrived
    QUEUED = "queued"
    RUNNING = "running"
    SAVING = "saving"  # finished upstream; outputs not saved yet
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    EXPIRED = "expired"


class Event(StrEnum):
    ACCEPTED = "accepted"  # the submission answered: the provider has the job
    REJECTED = "rejected"  # refused before anything could be charged (bad input, a 4xx, preparation)
    WITHDRAWN = "withdrawn"  # the caller gave up before the request left this machine
    LOST = "lost"  # the request may have reached the provider, but no job id came back
    INTERRUPTED = "interrupted"  # the server stopped while the provider was working on it
    ORPHANED = "orphaned"  # the process that submitted it died before recording an answer
    POLLED = "polled"  # a poll answered
    VANISHED = "vanished"  # the provider no longer knows the job
    FINALIZED = "finalized"  # outputs saved (or saving failed; the paid result is kept either way)
    AMENDED = "amended"  # a duplicate call asked more of the same job (save its outputs, say)
    CANCELLED = "cancelled"  # the user cancelled it and the provider stopped it
    ABANDONED = "abandoned"  # the user cancelled it; the provider cannot be told, so it may still charge


# What a provider's answer can move a job to.
_ANSWERED = frozenset(
    {State.QUEUED, State.RUNNING, State.SAVING, State.FAILED, State.CANCELLED, State.EXPIRED}
)

TRANSITIONS: dict[State, dict[Event, frozenset[State]]] = {
    State.SUBMITTING: {
        Event.ACCEPTED: _ANSWERED,
        Event.REJECTED: frozenset({State.FAILED}),
        Event.WITHDRAWN: frozenset({State.CANCELLED}),
        Event.LOST: frozenset({State.FAILED}),
        Event.INTERRUPTED: frozenset({State.CANCELLED}),
        Event.ORPHANED: frozenset({State.FAILED}),
        Event.AMENDED: frozenset({State.SUBMITTING}),
    },
    State.QUEUED: {
        Event.POLLED: _ANSWERED,
        Event.VANISHED: frozenset({State.EXPIRED}),
        Event.AMENDED: frozenset({State.QUEUED}),
        Event.CANCELLED: frozenset({State.CANCELLED}),
        Event.ABANDONED: frozenset({State.CANCELLED}),
    },
    State.RUNNING: {
        Event.POLLED: _ANSWERED,
        Event.VANISHED: frozenset({State.EXPIRED}),
        Event.AMENDED: frozenset({State.RUNNING}),
        Event.CANCELLED: frozenset({State.CANCELLED}),
        Event.ABANDONED: frozenset({State.CANCELLED}),
    },
    State.SAVING: {
        Event.FINALIZED: frozenset({State.COMPLETED}),
        Event.AMENDED: frozenset({State.SAVING}),
    },
    # Saved outputs can be asked for again: the job goes back to saving with the new options.
    State.COMPLETED: {Event.AMENDED: frozenset({State.SAVING})},
    State.FAILED: {},
    State.CANCELLED: {},
    State.EXPIRED: {},
}

# How each event records whether the provider has the job. None: unchanged.
SUBMIT_STATE: dict[Event, str | None] = {
    Event.ACCEPTED: "accepted",
    Event.REJECTED: "rejected",
    Event.WITHDRAWN: "rejected",
    Event.LOST: "uncertain",
    Event.INTERRUPTED: "uncertain",
    Event.ORPHANED: "uncertain",
}

TERMINAL = frozenset({State.COMPLETED, State.FAILED, State.CANCELLED, State.EXPIRED})

# A submission that ends without the provider's answer ends with no word from the provider: the
# only ones it can carry are the engine's own ("submitting", Muzaic's "working"), and a failed job
# that still said "working" told the agent the provider was at it.
UNANSWERED = frozenset({Event.REJECTED, Event.WITHDRAWN, Event.LOST, Event.INTERRUPTED, Event.ORPHANED})


class IllegalTransition(RuntimeError):
    """A move the table does not allow: a bug in the engine, never the caller's mistake."""


def state_of(record: JobRecord) -> State:
    if record.submit_state == "pending":
        return State.SUBMITTING
    if record.status == "completed":
        return State.COMPLETED if record.finalized else State.SAVING
    return State(record.status)


@dataclass
class Change:
    """What an event carries: the provider's answer, or why the job stopped."""

    status: str | None = None  # the provider's word mapped to ours; unknown words mean still running
    provider_status: str | None = None
    provider_job_id: str | None = None
    result: dict[str, Any] | None = None
    error: JobError | None = None
    cost: Cost = field(default_factory=Cost)
    options: dict[str, Any] | None = None


def _target(current: State, event: Event, change: Change) -> State:
    if event in (Event.ACCEPTED, Event.POLLED):
        if change.status in ("completed",):
            return State.SAVING
        if change.status in TERMINAL_STATUSES or change.status in ("queued", "running"):
            return State(change.status)
        return State.RUNNING  # an unknown provider word: keep waiting, report it by name
    if event is Event.AMENDED:
        return State.SAVING if current is State.COMPLETED else current
    allowed = TRANSITIONS[current].get(event, frozenset())
    if len(allowed) != 1:
        raise IllegalTransition(f"{event} from {current}")
    return next(iter(allowed))


def advance(record: JobRecord, event: Event, change: Change | None = None, *, now: float) -> JobRecord:
    """The record after ``event``; raises IllegalTransition for a move the table does not allow."""
    change = change or Change()
    current = state_of(record)
    target = _target(current, event, change)
    if target not in TRANSITIONS[current].get(event, frozenset()):
        raise IllegalTransition(f"job {record.job_id}: {event} cannot move {current} to {target}")
    # The new record shares the old one's argument, option and result values: they are replaced
    # here and everywhere else, never changed in place, so the old record stays what it was.
    new: dict[str, Any] = {"updated_ts": now}
    submit_state = SUBMIT_STATE.get(event)
    if submit_state is not None:
        new["submit_state"] = submit_state
    if event is Event.POLLED:
        new["polls"] = record.polls + 1
    if event in (Event.ACCEPTED, Event.POLLED):
        new["checked_ts"] = now
    status = "completed" if target in (State.SAVING, State.COMPLETED) else target.value
    new["status"] = "queued" if target is State.SUBMITTING else status
    new["finalized"] = target is State.COMPLETED
    if change.provider_job_id:
        new["provider_job_id"] = change.provider_job_id
    if event in UNANSWERED:
        new["provider_status"] = change.provider_status
    else:
        new["provider_status"] = change.provider_status or record.provider_status
    if change.result is not None:
        new["result"] = change.result
    if change.error is not None:
        new["error"] = change.error
    cost = record.cost if change.cost.is_empty else record.cost.merged_with(change.cost)
    new["cost"] = cost
    if change.options is not None:
        new["options"] = change.options
    if record.reserved_usd is not None and _releases_reservation(
        cost, target, event, submit_state or record.submit_state
    ):
        new["reserved_usd"] = None
    if new["status"] in TERMINAL_STATUSES and record.completed_ts is None:
        new["completed_ts"] = now
    return record.model_copy(update=new)


def _releases_reservation(cost: Cost, target: State, event: Event, submit_state: str) -> bool:
    """A reservation holds budget for a charge not yet reported. It ends when the provider reports
    a dollar charge (the ledger counts that instead) or a refund, and when the job failed or was
    cancelled without any chance of a charge. It stands for a job whose outcome is uncertain and
    for a finished job whose provider never prices work in dollars: such a job counts at its
    reservation, never as free."""
    if cost.usd is not None or cost.refunded:
        return True
    if event is Event.ABANDONED:
        return False  # the provider goes on with it, and may charge for it
    return target in (State.FAILED, State.CANCELLED) and submit_state != "uncertain"


def mermaid() -> str:
    """The state diagram, for docs/job-states.md."""
    lines = ["stateDiagram-v2", "    [*] --> submitting: journaled before any paid call"]
    for source, events in TRANSITIONS.items():
        for event, targets in events.items():
            for target in [t for t in State if t in targets]:
                if event is Event.AMENDED and target is source:
                    continue  # options merged, state unchanged: noise in a diagram
                lines.append(f"    {source.value} --> {target.value}: {event.value}")
    lines += [f"    {s.value} --> [*]" for s in State if s in TERMINAL]
    return "\n".join(lines)


DOC_HEADER = """# Job states

Generated from `src/mediamux/jobs/states.py` by `python -m mediamux.jobs.states > docs/job-states.md`;
a test fails when the two differ. Every job starts in `submitting`: it is written to the journal
before any request that could cost money leaves this machine.

- **submitting** — the request is on its way; its answer (the provider's job id, its charge) is
  recorded even if the caller stops waiting.
- **queued / running** — the provider has the job; `jobs_wait` polls it, any number of times, for free.
- **saving** — finished upstream; outputs are being saved locally (their URLs are already in the result).
- **completed / failed / cancelled / expired** — final. A job that failed or was cancelled
  *after its request may have reached the provider* (`lost`, `interrupted`, `orphaned`) keeps
  `submit_state: uncertain`: it may have been charged, so an identical call returns it instead of
  paying again.

**Budget reservations.** With `MEDIAMUX_BUDGET_USD` set, a new job reserves its estimate (the
provider's quote, else the most recent jobs of its kind cost, else `MEDIAMUX_UNPRICED_JOB_USD`)
in the same transaction that checks the budget and journals it, so concurrent calls can never
commit more than the budget. The reservation ends when the provider reports a dollar charge or a
refund (the ledger counts that instead), or when the job fails or is cancelled with no chance of a
charge. It stands while the outcome is uncertain, for a job abandoned at a provider that cannot stop
it, and for a finished job whose provider reports no dollar figure: such a job counts at its
reservation, never as free.

| event | meaning |
|---|---|
"""


def document() -> str:
    rows = "".join(f"| `{e.value}` | {_EVENT_DOC[e]} |\n" for e in Event)
    return f"{DOC_HEADER}{rows}\n```mermaid\n{mermaid()}\n```\n"


_EVENT_DOC: dict[Event, str] = {
    Event.ACCEPTED: "the submission answered: the provider has the job (or finished it at once)",
    Event.REJECTED: "refused before anything could be charged (bad input, a 4xx, preparing files failed)",
    Event.WITHDRAWN: "the caller gave up before the request left this machine",
    Event.LOST: "the request may have reached the provider, but no job id came back",
    Event.INTERRUPTED: "the server stopped while the provider was working on it",
    Event.ORPHANED: "the process that submitted it died before recording the answer",
    Event.POLLED: "a poll answered; an unknown provider word keeps the job running",
    Event.VANISHED: "the provider no longer knows the job",
    Event.FINALIZED: "outputs saved (or saving failed; the paid result is kept either way)",
    Event.AMENDED: "an identical call asked more of the same job (save its outputs): saved again",
    Event.CANCELLED: "jobs_cancel, and the provider stopped the job",
    Event.ABANDONED: "jobs_cancel for a provider that cannot stop jobs: no longer followed; its charge stands",
}


if __name__ == "__main__":
    sys.stdout.write(document())
