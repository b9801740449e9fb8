"""Duplicate guard and journal cost: the time the job engine adds to one paid submission.

An in-process ``JobEngine`` with a real SQLite journal in a temporary folder, and a trivial
driver whose submission completes at once, against the same driver called directly (prepare,
submit, finalize) with no engine. Every submission has its own arguments (the duplicate check
runs and misses); a second pass repeats them all (the guard hits and returns the earlier job).
The server's task group is reproduced, so finalizing runs where it runs in ``mediamux serve``.

Twice: on an empty journal, and on one that already holds ``SEEDED_JOBS`` finished, charged jobs
of the same session (a long-running server), written by one bulk insert so seeding takes seconds.
"""

from __future__ import annotations

import json
import sqlite3
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio

from bench.common import Config, Row, Section, median, percentile
from mediamux.clock import SystemClock
from mediamux.jobs.engine import DriverBase, JobEngine, Outcome, ProgressFn
from mediamux.jobs.journal import Journal
from mediamux.jobs.muapi import GenerateArgs
from mediamux.providers.cost import Cost

BLOCKS = 10
SEEDED_JOBS = 50_000
SESSION = "bench-session"


class InstantDriver(DriverBase):
    """A paid operation that the provider accepts and finishes in the same answer."""

    provider = "muapi"  # the journal's job views accept only real provider names
    operation = "generate"
    title = "Bench"
    mode = "poll"
    args_model = GenerateArgs

    def __init__(self) -> None:
        self.submitted = 0

    async def estimate_usd(self, args: GenerateArgs) -> float | None:
        return 0.001

    async def prepare(
        self, args: dict[str, Any], options: dict[str, Any], progress: ProgressFn
    ) -> dict[str, Any]:
        return args

    async def submit(self, args: dict[str, Any], options: dict[str, Any], progress: ProgressFn) -> Outcome:
        self.submitted += 1
        return Outcome(
            status="completed",
            provider_status="completed",
            provider_job_id=f"bench-{self.submitted}",
            result={"outputs": [f"https://example.invalid/{self.submitted}.png"]},
            cost=Cost(usd=0.001, source="body"),
        )

    async def poll(self, provider_job_id: str, args: dict[str, Any], options: dict[str, Any]) -> Outcome:
        raise AssertionError("an instant job is never polled")

    async def finalize(
        self, outcome: Outcome, args: dict[str, Any], options: dict[str, Any], progress: ProgressFn
    ) -> Outcome:
        return outcome


async def _no_progress(progress: float, total: float | None, message: str) -> None:
    return None


def _args(i: int) -> GenerateArgs:
    return GenerateArgs(endpoint="bench-model", params={"prompt": f"submission {i}", "seed": i})


def seed(path: Path, jobs: int, *, session_id: str) -> None:
    """Fill a journal (created by ``Journal``) with ``jobs`` finished, charged MuAPI jobs of one session
    in one transaction; the journal then brings its running sums up to date from the rows."""
    now = time.time() - 3600.0  # outside the duplicate window, like the jobs of an hour ago
    cost = json.dumps({"usd": 0.001, "source": "body"})
    rows = (
        (
            f"job_seed{i:06d}",
            "muapi",
            "generate",
            f"seed-{i:06d}",
            json.dumps({"endpoint": "bench-model", "params": {"prompt": f"seed {i}", "seed": i}}),
            json.dumps({"save_outputs": False}),
            f"seed-req-{i}",
            "completed",
            "completed",
            "accepted",
            json.dumps({"outputs": [f"https://example.invalid/seed/{i}.png"]}),
            None,
            cost,
            session_id,
            now + i * 0.01,
            now + i * 0.01,
            now + i * 0.01,
            0,
            1,
            None,
            "bench-model",
            None,
            now + i * 0.01,
            "local",
        )
        for i in range(jobs)
    )
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute("BEGIN IMMEDIATE")
        db.executemany(
            "INSERT INTO jobs (job_id, provider, operation, dedup_key, args_json, options_json, provider_job_id, "
            "status, provider_status, submit_state, result_json, error_json, cost_json, session_id, submitted_ts, "
            "updated_ts, completed_ts, polls, finalized, reserved_usd, price_key, owner, checked_ts, principal) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
        db.execute(
            "INSERT INTO ledger (entry_id, provider, operation, session_id, usd, credits, tokens, refunded, "
            "recorded_ts, principal) SELECT job_id, provider, operation, session_id, 0.001, NULL, NULL, NULL, "
            "updated_ts, principal FROM jobs"
        )
        db.execute("COMMIT")
    finally:
        db.close()


async def run(cfg: Config) -> Section:
    n = cfg.submissions
    driver = InstantDriver()
    empty_us: list[float] = []
    big_us: list[float] = []
    direct_us: list[float] = []
    dup_us: list[float] = []
    with tempfile.TemporaryDirectory(dir=cfg.work) as tmp:
        seeded = Path(tmp) / "seeded.sqlite3"
        Journal(seeded).close()
        started = time.perf_counter()
        seed(seeded, SEEDED_JOBS, session_id=SESSION)
        empty, big = Journal(Path(tmp) / "empty.sqlite3"), Journal(seeded)
        big.rebuild_totals()
        seed_s = time.perf_counter() - started
        try:
            # One engine per journal, the big one in the session that holds the seeded jobs.
            engines = (
                JobEngine(empty, clock=SystemClock()),
                JobEngine(big, clock=SystemClock(), session_id=SESSION),
            )
            for engine in engines:
                engine.register(driver)

            async def through(engine: JobEngine, i: int, into: list[float]) -> None:
                start = time.perf_counter()
                view = await engine.run(
                    "muapi", "generate", _args(i), options={"save_outputs": False}, wait_s=10
                )
                into.append((time.perf_counter() - start) * 1e6)
                if view.status != "completed":
                    raise RuntimeError(f"submission {i}: {view.status}")

            async def direct(i: int) -> None:
                start = time.perf_counter()
                args = await driver.prepare(_args(i), {}, _no_progress)
                outcome = await driver.submit(args, {}, _no_progress)
                await driver.finalize(outcome, args, {}, _no_progress)
                direct_us.append((time.perf_counter() - start) * 1e6)

            with anyio.fail_after(600):
                async with anyio.create_task_group() as tg:
                    for engine in engines:
                        engine.task_group = tg
                    # Interleaved in blocks, so the machine's noise falls on all three alike.
                    block = max(1, n // BLOCKS)
                    for first in range(0, n, block):
                        numbers = range(first, min(n, first + block))
                        for i in numbers:
                            await through(engines[0], i, empty_us)
                        for i in numbers:
                            await through(engines[1], i, big_us)
                        for i in numbers:
                            await direct(i)
                    for i in range(n):
                        await through(engines[0], i, dup_us)
        finally:
            empty.close()
            big.close()
    deduplicated = driver.submitted - 3 * n  # submissions the guard let through
    baseline = "the same driver called directly (prepare, submit, finalize), no engine"
    bench = "Engine: duplicate guard + journal"
    jobs = f"{SEEDED_JOBS:,}"
    section = Section(
        [
            Row(
                bench,
                f"new paid submission, empty journal, median of {n}",
                median(empty_us),
                median(direct_us),
                "µs",
                baseline,
            ),
            Row(
                bench,
                f"new paid submission, empty journal, p99 of {n}",
                percentile(empty_us, 99),
                percentile(direct_us, 99),
                "µs",
                baseline,
            ),
            Row(
                bench,
                f"new paid submission, journal of {jobs} jobs, median of {n}",
                median(big_us),
                median(direct_us),
                "µs",
                baseline,
            ),
            Row(
                bench,
                f"identical call within the window (guard hit), median of {n}",
                median(dup_us),
                median(direct_us),
                "µs",
                baseline,
            ),
            Row(
                bench,
                f"new paid submission: journal of {jobs} jobs against an empty one, median",
                median(big_us),
                median(empty_us),
                "µs",
                "the same on an empty journal, same run",
            ),
        ]
    )
    section.notes.append(
        f"Engine: `JobEngine` with a real SQLite journal (WAL) in a temporary folder and an instant driver; "
        f"{n} submissions with distinct arguments on an empty journal, the same number on a journal holding "
        f"{jobs} finished, charged jobs of the engine's session (a long-running server; bulk-inserted in "
        f"{seed_s:.1f} s), and as many direct driver calls, interleaved in {BLOCKS} blocks; then the first "
        f"{n} again (the duplicate guard returned the earlier job {'every time' if deduplicated == 0 else f'except {deduplicated} times'}). "
        "Δ is the time the engine adds per submission: duplicate lookup, journal row before the call, "
        "shielded submission, journal and ledger updates (in worker threads), finalize, and the result view; "
        "a per-call cost that grows with the journal shows as a ratio above 1 in the last row."
    )
    return section
