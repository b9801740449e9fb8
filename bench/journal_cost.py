"""Duplicate guard and journal cost: the time the job engine adds to one paid submission.

An in-process ``JobEngine`` with a real SQLite journal in a temporary folder, and a trivial
driver whose submission completes at once, against the same driver called directly (prepare,
submit, finalize) with no engine. Every submission has its own arguments (the duplicate check
runs and misses); a second pass repeats them all (the guard hits and returns the earlier job).
The server's task group is reproduced, so finalizing runs where it runs in ``mediamux serve``.
"""

from __future__ import annotations

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


async def run(cfg: Config) -> Section:
    n = cfg.submissions
    driver = InstantDriver()
    engine_us: list[float] = []
    direct_us: list[float] = []
    dup_us: list[float] = []
    with tempfile.TemporaryDirectory(dir=cfg.work) as tmp:
        journal = Journal(Path(tmp) / "mediamux.sqlite3")
        try:
            engine = JobEngine(journal, clock=SystemClock())
            engine.register(driver)

            async def through_engine(i: int, into: list[float]) -> None:
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
                    engine.task_group = tg
                    block = max(1, n // BLOCKS)
                    for first in range(0, n, block):
                        for i in range(first, min(n, first + block)):
                            await through_engine(i, engine_us)
                        for i in range(first, min(n, first + block)):
                            await direct(i)
                    for i in range(n):
                        await through_engine(i, dup_us)
            deduplicated = driver.submitted - 2 * n  # submissions the guard let through twice
        finally:
            journal.close()
    decile = max(1, n // 10)
    baseline = "the same driver called directly (prepare, submit, finalize), no engine"
    bench = "Engine: duplicate guard + journal"
    section = Section(
        [
            Row(
                bench,
                f"new paid submission, median of {n}",
                median(engine_us),
                median(direct_us),
                "µs",
                baseline,
            ),
            Row(
                bench,
                f"new paid submission, p99 of {n}",
                percentile(engine_us, 99),
                percentile(direct_us, 99),
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
                f"new submission, last {decile} (journal holds ~{n} jobs), median",
                median(engine_us[-decile:]),
                median(engine_us[:decile]),
                "µs",
                f"the first {decile} submissions (near-empty journal), same run",
            ),
        ]
    )
    section.notes.append(
        f"Engine: `JobEngine` with a real SQLite journal (WAL) in a temporary folder and an instant driver; "
        f"{n} submissions with distinct arguments in {BLOCKS} blocks interleaved with direct driver calls, then "
        f"the same {n} again (the duplicate guard returned the earlier job {'every time' if deduplicated == 0 else f'except {deduplicated} times'}). "
        "Δ is the time the engine adds per submission: budget check, duplicate lookup, journal row before "
        "the call, shielded submission, journal and ledger updates, finalize, and the result view. The last "
        "row compares the same work at two journal sizes (all jobs in one session, as in one long-running "
        "server), so a per-call cost that grows with the journal shows as a ratio above 1."
    )
    return section
