"""Several replicas on one PostgreSQL database, in one test process: leases, fenced writes, takeover,
waiters woken by LISTEN/NOTIFY, and the subscription bus across processes.

A "replica" here is a journal, an engine and the background tasks a server runs for them (the change
listener and the lease keeper), on a real cluster. "Killing" one stops its tasks without handing back
its leases, as SIGKILL would; its jobs must be taken over when the lease runs out. The provider is a
stand-in shared by the replicas (each replica's driver counts its own calls), so the tests can say
which replica asked the provider what.
"""

from __future__ import annotations

import sys
import textwrap
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import pytest
from pydantic import BaseModel

from mediamux.clock import FakeClock, SystemClock
from mediamux.jobs.backend import LeaseLost
from mediamux.jobs.engine import DriverBase, JobEngine, Outcome
from mediamux.jobs.models import JobRecord
from mediamux.jobs.pg_journal import PostgresJournal
from mediamux.jobs.states import Change, Event, advance
from mediamux.providers.cost import Cost
from mediamux.providers.errors import ServerError
from tests.support import FAKE_TICK_S, eventually

T0 = 1_767_225_600.0
LEASE_S = 1.0
WAIT_S = 30.0


class Args(BaseModel):
    n: int = 0


@dataclass
class Upstream:
    """The provider: jobs it accepted, and whether they are finished."""

    submitted: list[str] = field(default_factory=list)
    finished: bool = False
    hang_submissions: bool = False


class Driver(DriverBase):
    provider, operation, title, args_model = "muapi", "generate", "Stub", Args

    def __init__(self, upstream: Upstream) -> None:
        self.upstream = upstream
        self.polls = 0
        self.finalized = 0

    async def submit(self, args: Any, options: dict[str, Any], progress: Any) -> Outcome:
        if self.upstream.hang_submissions:
            await anyio.Event().wait()
        request_id = f"req-{len(self.upstream.submitted) + 1}"
        self.upstream.submitted.append(request_id)
        return Outcome(status="queued", provider_job_id=request_id)

    async def poll(self, provider_job_id: str, args: Any, options: dict[str, Any]) -> Outcome:
        self.polls += 1
        if self.upstream.finished:
            return Outcome(status="completed", result={"url": f"https://cdn/{provider_job_id}.png"})
        return Outcome(status="running")

    async def finalize(self, outcome: Outcome, args: Any, options: dict[str, Any], progress: Any) -> Outcome:
        self.finalized += 1
        return Outcome(status="completed", result={**(outcome.result or {}), "saved": True})


@dataclass
class Replica:
    engine: JobEngine
    journal: PostgresJournal
    driver: Driver
    scope: anyio.CancelScope | None = None

    def kill(self) -> None:
        """Stop like a SIGKILL: no leases handed back."""
        self.journal.release_all = lambda **_: 0  # type: ignore[method-assign]
        assert self.scope is not None
        self.scope.cancel()


@asynccontextmanager
async def replica(url: str, upstream: Upstream, **engine_kwargs: Any) -> AsyncIterator[Replica]:
    journal = PostgresJournal(url, lease_s=LEASE_S, pool_size=4)
    engine = JobEngine(journal, clock=SystemClock(), **engine_kwargs)
    driver = Driver(upstream)
    engine.register(driver)
    made = Replica(engine, journal, driver)
    try:
        async with anyio.create_task_group() as tg:
            made.scope = tg.cancel_scope
            engine.task_group = tg
            await tg.start(journal.listen)
            assert engine.leases is not None
            tg.start_soon(engine.leases.run)
            yield made
            tg.cancel_scope.cancel()
    finally:
        journal.close()


def record(**fields: Any) -> JobRecord:
    values: dict[str, Any] = {
        "job_id": "job_one",
        "provider": "muapi",
        "operation": "generate",
        "dedup_key": "k",
        "args": {"n": 0},
        "status": "queued",
        "session_id": "s",
        "submitted_ts": T0,
        "updated_ts": T0,
    }
    values.update(fields)
    return JobRecord(**values)


# -- leases and fenced writes, on the journal ----------------------------------------------------------


async def test_a_lease_is_taken_over_once_its_holder_stops_renewing_and_the_old_holder_cannot_write(
    pg_url: str,
) -> None:
    holder = PostgresJournal(pg_url, lease_s=0.5, pool_size=2)
    other = PostgresJournal(pg_url, lease_s=0.5, pool_size=2)
    try:
        job, _ = holder.claim(record(), window_start_ts=None)
        running = advance(job, Event.ACCEPTED, Change(status="running", provider_job_id="r1"), now=T0 + 1)
        holder.save(running)
        assert other.lease_due(pollable=["muapi/generate"], finishable=[], limit=10) == []  # held

        taken: list[JobRecord] = []
        await eventually(
            lambda: bool(
                taken.extend(other.lease_due(pollable=["muapi/generate"], finishable=[], limit=10)) or taken
            )
        )

        assert [r.job_id for r in taken] == ["job_one"] and other.holds("job_one")
        polled = advance(running, Event.POLLED, Change(status="running", provider_status="late"), now=T0 + 2)
        with pytest.raises(LeaseLost):
            holder.save(polled)  # fenced: the old holder's answer does not land
        assert not holder.holds("job_one") and holder.renew() == []
        other.save(advance(running, Event.POLLED, Change(status="completed", result={"ok": 1}), now=T0 + 3))
        final = holder.get("job_one")
        assert final is not None and final.status == "completed" and final.provider_status != "late"
    finally:
        holder.close()
        other.close()


async def test_a_holder_never_overwrites_a_job_another_replica_cancelled(pg_url: str) -> None:
    holder = PostgresJournal(pg_url, lease_s=30, pool_size=2)
    other = PostgresJournal(pg_url, lease_s=30, pool_size=2)
    try:
        job, _ = holder.claim(record(), window_start_ts=None)
        running = advance(job, Event.ACCEPTED, Change(status="running", provider_job_id="r1"), now=T0 + 1)
        holder.save(running)
        other.save(advance(running, Event.CANCELLED, Change(provider_status="cancelled"), now=T0 + 2))

        holder.save(advance(running, Event.POLLED, Change(status="running"), now=T0 + 3))

        final = other.get("job_one")
        assert final is not None and final.status == "cancelled"
        assert not holder.holds("job_one")
    finally:
        holder.close()
        other.close()


async def test_a_write_fenced_out_by_a_lost_lease_moves_no_sum_and_the_new_holders_charge_does(
    pg_url: str,
) -> None:
    holder = PostgresJournal(pg_url, lease_s=0.5, pool_size=2)
    other = PostgresJournal(pg_url, lease_s=0.5, pool_size=2)
    try:
        job, _ = holder.claim(record(reserved_usd=0.5, principal="ann"), window_start_ts=None, budget_usd=1.0)
        running = advance(job, Event.ACCEPTED, Change(status="running", provider_job_id="r1"), now=T0 + 1)
        holder.save(running)
        taken: list[JobRecord] = []
        await eventually(
            lambda: bool(
                taken.extend(other.lease_due(pollable=["muapi/generate"], finishable=[], limit=10)) or taken
            )
        )

        stale = advance(running, Event.POLLED, Change(status="completed", cost=Cost(usd=0.3)), now=T0 + 2)
        with pytest.raises(LeaseLost):
            holder.save(stale, charge=True)
        assert (other.spent_usd(), other.committed_usd("ann"), other.totals()["usd"]) == (0.0, 0.5, 0.0)

        done = advance(taken[0], Event.POLLED, Change(status="completed", cost=Cost(usd=0.4)), now=T0 + 3)
        assert other.save(done, charge=True) == done
        assert (holder.spent_usd(principal="ann"), holder.committed_usd()) == (0.4, 0.4)
    finally:
        holder.close()
        other.close()


async def test_the_providers_answer_to_a_submission_declared_lost_meanwhile_is_still_recorded(
    pg_url: str,
) -> None:
    slow = PostgresJournal(pg_url, lease_s=0.5, pool_size=2)
    other = PostgresJournal(pg_url, lease_s=0.5, pool_size=2)
    try:
        pending, _ = slow.claim(record(), window_start_ts=None)
        taken: list[JobRecord] = []
        await eventually(
            lambda: bool(taken.extend(other.lease_due(pollable=[], finishable=[], limit=10)) or taken)
        )
        other.save(advance(taken[0], Event.ORPHANED, Change(), now=T0 + 5))
        assert (other.get("job_one") or pending).submit_state == "uncertain"

        slow.save(
            advance(pending, Event.ACCEPTED, Change(status="running", provider_job_id="r9"), now=T0 + 6)
        )

        final = other.get("job_one")
        assert final is not None and final.submit_state == "accepted" and final.provider_job_id == "r9"
        assert other.lease_due(pollable=["muapi/generate"], finishable=[], limit=10)[0].job_id == "job_one"
    finally:
        slow.close()
        other.close()


# -- replicas: engines with their keepers ----------------------------------------------------------------


async def test_a_waiter_on_another_replica_is_woken_by_notify_and_never_polls(pg_url: str) -> None:
    upstream = Upstream()
    with anyio.fail_after(60):
        async with replica(pg_url, upstream) as a, replica(pg_url, upstream) as b:
            started = await a.engine.run("muapi", "generate", Args(n=1), wait_s=0)
            assert started.status in ("queued", "running")
            results: list[Any] = []

            async def wait_on_b() -> None:
                results.append(await b.engine.wait(started.job_id, wait_s=WAIT_S))

            async with anyio.create_task_group() as tg:
                tg.start_soon(wait_on_b)
                await eventually(lambda: a.driver.polls >= 1)
                upstream.finished = True

    assert results[0].status == "completed" and results[0].result["saved"] is True
    assert upstream.submitted == ["req-1"]
    assert b.driver.polls == 0 and a.driver.polls >= 2
    assert a.driver.finalized == 1 and b.driver.finalized == 0


async def test_a_killed_replicas_job_is_finished_by_another_with_one_submission_and_one_save(
    pg_url: str,
) -> None:
    upstream = Upstream()
    with anyio.fail_after(60):
        async with replica(pg_url, upstream) as b:
            async with replica(pg_url, upstream) as a:
                started = await a.engine.run("muapi", "generate", Args(n=2), wait_s=0)
                await eventually(lambda: a.driver.polls >= 1)
                a.kill()
            upstream.finished = True

            done = await b.engine.wait(started.job_id, wait_s=WAIT_S)

    assert done.status == "completed" and done.result is not None and done.result["saved"] is True
    assert upstream.submitted == ["req-1"]
    assert b.driver.polls >= 1
    assert a.driver.finalized + b.driver.finalized == 1


async def test_a_submission_in_flight_on_a_killed_replica_becomes_uncertain_and_is_not_sent_again(
    pg_url: str,
) -> None:
    upstream = Upstream(hang_submissions=True)
    with anyio.fail_after(60):
        async with replica(pg_url, upstream) as b:
            # The dead replica: it journaled and leased the job, then vanished mid-request.
            dead = PostgresJournal(pg_url, lease_s=LEASE_S, pool_size=2)
            try:
                job_id = f"job_{'x' * 8}"
                from mediamux.jobs.engine import dedup_key

                key = dedup_key("muapi", "generate", {"n": 3})
                dead.claim(
                    record(
                        job_id=job_id,
                        dedup_key=key,
                        args={"n": 3},
                        submitted_ts=b.engine._wall(),
                        updated_ts=b.engine._wall(),
                    ),
                    window_start_ts=None,
                )
            finally:
                dead.close()

            seen = await b.engine.wait(job_id, wait_s=WAIT_S)
            again = await b.engine.run("muapi", "generate", Args(n=3), wait_s=0)

    assert seen.status == "failed" and "may or may not have reached the provider" in (
        seen.error.message if seen.error else ""
    )
    assert again.job_id == job_id and again.deduplicated
    assert upstream.submitted == []


class Failing(Driver):
    async def poll(self, provider_job_id: str, args: Any, options: dict[str, Any]) -> Outcome:
        self.polls += 1
        raise ServerError("MuAPI: 503 after retries", provider="muapi", operation="poll", status=503)


async def test_a_provider_failing_every_poll_is_asked_again_only_after_a_pause(pg_url: str) -> None:
    clock = FakeClock()
    journal = PostgresJournal(pg_url, lease_s=30, pool_size=2)
    engine = JobEngine(journal, clock=clock)
    driver = Failing(Upstream())
    engine.register(driver)
    try:
        with anyio.fail_after(60):
            async with anyio.create_task_group() as tg:
                engine.task_group = tg
                await tg.start(journal.listen)
                await engine.run("muapi", "generate", Args(n=4), wait_s=0)
                await eventually(lambda: driver.polls >= 5, clock=clock)
                tg.cancel_scope.cancel()
    finally:
        journal.close()

    follower_sleeps = [s for s in clock.sleeps if s != FAKE_TICK_S]
    assert driver.polls <= len(follower_sleeps) + 1  # no poll straight after a failed one
    assert min(follower_sleeps) >= 0.85  # FIRST_POLL_S, jittered down at most 15 %


# -- the subscription bus across processes ---------------------------------------------------------------

PUBLISHER = textwrap.dedent(
    """
    import sys
    import anyio
    from mcp.server.subscriptions import ResourcesListChanged, ResourceUpdated
    from mediamux.server.pg_bus import PostgresSubscriptionBus

    async def main():
        bus = PostgresSubscriptionBus(sys.argv[1])
        async with anyio.create_task_group() as tg:
            await tg.start(bus.serve)
            await bus.publish(ResourceUpdated(uri="museai://videos/v1"))
            await bus.publish(ResourcesListChanged())
            tg.cancel_scope.cancel()

    anyio.run(main)
    """
)


async def test_a_change_published_in_another_process_reaches_this_processs_listeners_once(
    pg_url: str,
) -> None:
    from mcp.server.subscriptions import ResourcesListChanged, ResourceUpdated, ServerEvent

    from mediamux.server.pg_bus import PostgresSubscriptionBus

    bus = PostgresSubscriptionBus(pg_url)
    heard: list[ServerEvent] = []
    relayed: list[ServerEvent] = []

    async def relay(event: ServerEvent) -> None:
        relayed.append(event)

    bus.subscribe(heard.append)
    bus.on_remote(relay)
    src = Path(__file__).resolve().parents[1] / "src"
    with anyio.fail_after(60):
        async with anyio.create_task_group() as tg:
            await tg.start(bus.serve)
            await bus.publish(ResourceUpdated(uri="museai://videos/local"))
            done = await anyio.run_process(
                [sys.executable, "-c", PUBLISHER, pg_url],
                env={"PYTHONPATH": str(src), "PATH": "/usr/bin:/bin"},
                check=False,
            )
            assert done.returncode == 0, done.stderr.decode()
            await eventually(lambda: len(heard) >= 3)
            tg.cancel_scope.cancel()

    assert heard == [
        ResourceUpdated(uri="museai://videos/local"),
        ResourceUpdated(uri="museai://videos/v1"),
        ResourcesListChanged(),
    ]
    assert relayed == heard[1:]  # only other processes' events go to the legacy relay
