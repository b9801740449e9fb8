"""Money limits that cannot be raced: every paid submission reserves its estimate in the same
transaction as the budget check, and the reservation becomes the reported charge or is released."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client

from mediamux.sandbox import Sandbox
from mediamux.server.app import MediamuxServer
from tests.test_muapi_tools import call, text

pytestmark = pytest.mark.faults

IMAGE = {"endpoint": "flux-schnell-image", "params": {"prompt": "a heron"}}  # quoted at $0.003


async def concurrently(client: Client, calls: list[tuple[str, dict[str, Any]]]) -> list[Any]:
    results: list[Any] = [None] * len(calls)

    async def one(i: int, name: str, args: dict[str, Any]) -> None:
        results[i] = await call(client, name, args)

    with anyio.fail_after(60):
        async with anyio.create_task_group() as tg:
            for i, (name, args) in enumerate(calls):
                tg.start_soon(one, i, name, args)
    return results


async def costs(client: Client) -> dict[str, Any]:
    with anyio.fail_after(10):
        read = await client.read_resource("mediamux://costs")
    return dict(json.loads(read.contents[0].text))


async def test_ten_concurrent_distinct_paid_calls_never_commit_more_than_the_budget(
    make_server: Callable[..., MediamuxServer], sandbox: Sandbox
) -> None:
    async with Client(make_server(MEDIAMUX_BUDGET_USD="0.01")) as client:
        results = await concurrently(
            client, [("muapi_generate", {**IMAGE, "params": {"prompt": f"bird {i}"}}) for i in range(10)]
        )
        ledger = await costs(client)

    accepted = [r for r in results if not r.is_error]
    refused = [r for r in results if r.is_error]
    assert len(accepted) == 3, [text(r) for r in results]
    assert all(r.meta["mediamux/error"]["class"] == "budget" for r in refused)
    assert sandbox.muapi.submissions == 3
    assert ledger["all_time"]["usd"] == pytest.approx(0.009)


async def test_four_concurrent_renders_estimated_over_the_budget_make_exactly_the_ones_that_fit(
    make_server: Callable[..., MediamuxServer], sandbox: Sandbox
) -> None:
    # 60 s at $0.01 a token = $0.60 each, against $1.
    server = make_server(MEDIAMUX_BUDGET_USD="1", MEDIAMUX_MUZAIC_USD_PER_TOKEN="0.01")
    async with Client(server) as client:
        results = await concurrently(
            client, [("muzaic_generate_music", {"duration": 60, "tags": [t]}) for t in (1, 2, 3, 4)]
        )

    assert sum(not r.is_error for r in results) == 1, [text(r) for r in results]
    assert sandbox.muzaic.generations == 1


async def test_a_provider_that_cannot_be_priced_is_refused_under_a_budget_with_how_to_price_it(
    make_server: Callable[..., MediamuxServer], sandbox: Sandbox
) -> None:
    async with Client(make_server(MEDIAMUX_BUDGET_USD="5")) as client:
        result = await call(client, "muzaic_generate_music", {"duration": 10})

    assert result.is_error and result.meta["mediamux/error"]["class"] == "budget"
    message = text(result)
    assert "MEDIAMUX_UNPRICED_JOB_USD" in message and "MEDIAMUX_MUZAIC_USD_PER_TOKEN" in message
    assert sandbox.muzaic.generations == 0


async def test_an_unpriced_job_counts_at_its_reservation_never_as_free(
    make_server: Callable[..., MediamuxServer], sandbox: Sandbox
) -> None:
    server = make_server(MEDIAMUX_BUDGET_USD="0.5", MEDIAMUX_UNPRICED_JOB_USD="0.3")
    async with Client(server) as client:
        first = await call(client, "muzaic_generate_music", {"duration": 10})
        second = await call(client, "muzaic_generate_music", {"duration": 11})

    assert not first.is_error, text(first)
    assert first.structured_content["cost"]["usd"] is None  # Muzaic reported tokens, not dollars
    assert second.is_error and "$0.30 is already spent or held" in text(second)
    assert sandbox.muzaic.generations == 1


async def test_a_reported_charge_replaces_the_reservation(
    make_server: Callable[..., MediamuxServer], sandbox: Sandbox
) -> None:
    # Budget for exactly two images: once the first is charged, its quote is no longer held twice.
    async with Client(make_server(MEDIAMUX_BUDGET_USD="0.006")) as client:
        first = await call(client, "muapi_generate", IMAGE)
        second = await call(client, "muapi_generate", {**IMAGE, "params": {"prompt": "an egret"}})
        third = await call(client, "muapi_generate", {**IMAGE, "params": {"prompt": "a stork"}})

    assert not first.is_error and not second.is_error, text(second)
    assert third.is_error and third.meta["mediamux/error"]["class"] == "budget"
    assert sandbox.muapi.submissions == 2


RACER = """
import sys
import anyio
from pathlib import Path
from pydantic import BaseModel
from mediamux.clock import SystemClock
from mediamux.jobs.engine import BudgetExceeded, DriverBase, JobEngine, Outcome
from mediamux.jobs.journal import Journal


class Args(BaseModel):
    n: int


class Quoted(DriverBase):
    provider, operation, title, args_model = "muapi", "generate", "Stub", Args

    async def estimate_usd(self, args):
        return 0.3

    async def submit(self, args, options, progress):
        return Outcome(status="queued", provider_job_id=f"p{args.n}")

    async def poll(self, provider_job_id, args, options):
        return Outcome(status="running")


async def main():
    journal = Journal(Path(sys.argv[1]))
    engine = JobEngine(journal, clock=SystemClock(), budget_usd=1.0)
    engine.register(Quoted())
    accepted = 0

    async def one(n):
        nonlocal accepted
        try:
            await engine.run("muapi", "generate", Args(n=n), wait_s=0)
            accepted += 1
        except BudgetExceeded:
            pass

    async with anyio.create_task_group() as tg:
        for n in range(int(sys.argv[2]), int(sys.argv[2]) + 5):
            tg.start_soon(one, n)
    journal.close()
    print(accepted)


anyio.run(main)
"""


def test_two_processes_on_one_home_together_never_commit_more_than_the_budget(tmp_path: Path) -> None:
    import subprocess
    import sys

    src = Path(__file__).resolve().parents[1] / "src"
    env = {"PYTHONPATH": str(src), "PATH": "/usr/bin:/bin"}
    journal = tmp_path / "mediamux.sqlite3"
    racers = [
        subprocess.Popen(
            [sys.executable, "-c", RACER, str(journal), str(start)],
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        for start in (0, 100)
    ]
    accepted = [int(p.communicate(timeout=60)[0].strip()) for p in racers]

    # Five $0.30 quotes each against $1 between them: three fit, whichever process they came from.
    assert sum(accepted) == 3, accepted
