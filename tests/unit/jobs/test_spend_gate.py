"""The engine's side of confirmation before spending: where the question falls (after the duplicate
guard and the one estimate, before any reservation) and what a "no" leaves behind (nothing)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from mediamux.clock import FakeClock
from mediamux.jobs.engine import SPEND_GATE, DriverBase, JobEngine, Outcome, ProgressFn, SpendQuote
from mediamux.jobs.journal import Journal


class Args(BaseModel):
    prompt: str


class Driver(DriverBase):
    provider = "muapi"
    operation = "generate"
    title = "MuAPI"
    args_model = Args

    def __init__(self, price: float | None) -> None:
        self.price = price
        self.estimates = 0
        self.submits = 0

    async def estimate_usd(self, args: Any) -> float | None:
        self.estimates += 1
        return self.price

    def price_key(self, args: Any) -> str | None:
        return "flux-dev-image"

    async def submit(self, args: Any, options: dict[str, Any], progress: ProgressFn) -> Outcome:
        self.submits += 1
        return Outcome(status="completed", provider_job_id=f"r{self.submits}", result={"ok": True})

    async def poll(self, provider_job_id: str, args: Any, options: dict[str, Any]) -> Outcome:
        raise AssertionError("completed at submission; never polled")


class Gate:
    def __init__(self, *, can_ask: bool = True, answer: bool = True, recalled: float | None = None) -> None:
        self._can_ask = can_ask
        self.answer = answer
        self.recalled = recalled
        self.quotes: list[SpendQuote] = []

    def can_ask(self) -> bool:
        return self._can_ask

    def recall(self, dedup_key: str) -> SpendQuote | None:
        if self.recalled is None:
            return None
        return SpendQuote("muapi", "generate", "MuAPI", "flux-dev-image", dedup_key, self.recalled)

    async def confirm(self, quote: SpendQuote) -> bool:
        self.quotes.append(quote)
        return self.answer


@pytest.fixture
def journal(tmp_path: Path) -> Journal:
    j = Journal(tmp_path / "journal.sqlite3")
    yield j  # type: ignore[misc]
    j.close()


def engine(journal: Journal, driver: Driver, **limits: Any) -> JobEngine:
    e = JobEngine(journal, clock=FakeClock(), recovery_path=journal.path.with_suffix(".recovery"), **limits)
    e.register(driver)
    return e


async def run(e: JobEngine, gate: Gate | None, prompt: str = "a heron") -> Any:
    token = SPEND_GATE.set(gate)
    try:
        return await e.run("muapi", "generate", Args(prompt=prompt), wait_s=5)
    finally:
        SPEND_GATE.reset(token)


async def test_a_no_leaves_no_job_no_reservation_and_no_submission(journal: Journal) -> None:
    driver, gate = Driver(0.4), Gate(answer=False)
    e = engine(journal, driver, confirm_usd=0.25, budget_usd=5.0)

    view = await run(e, gate)

    assert view.status == "declined" and view.job_id == "" and view.cost.usd == 0.0
    assert driver.submits == 0 and journal.list(limit=10) == [] and journal.committed_usd() == 0
    (quote,) = gate.quotes
    assert (quote.estimate_usd, quote.reserve_usd, quote.budget_usd, quote.remaining_usd) == (
        0.4,
        0.4,
        5.0,
        5.0,
    )


async def test_a_yes_reserves_the_estimate_it_showed_and_submits_once(journal: Journal) -> None:
    driver, gate = Driver(0.4), Gate(answer=True)
    e = engine(journal, driver, confirm_usd=0.25, budget_usd=5.0)

    view = await run(e, gate)

    assert view.status == "completed" and driver.submits == 1 and driver.estimates == 1
    assert journal.get(view.job_id).reserved_usd == 0.4  # type: ignore[union-attr]


async def test_an_identical_recent_job_is_returned_before_the_gate_or_the_estimate(journal: Journal) -> None:
    driver = Driver(0.4)
    e = engine(journal, driver, confirm_usd=0.25)
    first = await run(e, Gate(answer=True))
    later = Gate(answer=False)

    again = await run(e, later)

    assert again.deduplicated and again.job_id == first.job_id
    assert later.quotes == [] and driver.estimates == 1


async def test_below_the_threshold_nothing_is_asked(journal: Journal) -> None:
    driver, gate = Driver(0.1), Gate(answer=False)
    view = await run(engine(journal, driver, confirm_usd=0.25), gate)

    assert view.status == "completed" and gate.quotes == []


async def test_a_client_that_cannot_ask_gets_no_question_and_no_extra_estimate(journal: Journal) -> None:
    driver, gate = Driver(0.4), Gate(can_ask=False, answer=False)
    view = await run(engine(journal, driver, confirm_usd=0.25), gate)

    assert view.status == "completed" and gate.quotes == [] and driver.estimates == 0


async def test_a_retry_carrying_the_quote_it_was_shown_does_not_ask_the_provider_again(
    journal: Journal,
) -> None:
    driver, gate = Driver(0.4), Gate(answer=True, recalled=0.4)
    e = engine(journal, driver, confirm_usd=0.25, budget_usd=5.0)

    view = await run(e, gate)

    assert view.status == "completed" and driver.estimates == 0
    assert gate.quotes[0].estimate_usd == 0.4 and journal.get(view.job_id).reserved_usd == 0.4  # type: ignore[union-attr]


async def test_under_a_budget_an_unpriced_job_is_asked_about_with_what_it_will_hold(journal: Journal) -> None:
    driver, gate = Driver(None), Gate(answer=False)
    view = await run(engine(journal, driver, budget_usd=5.0, unpriced_job_usd=1.0), gate)

    assert view.status == "declined"
    assert gate.quotes[0].estimate_usd is None and gate.quotes[0].reserve_usd == 1.0


async def test_a_signed_in_callers_question_shows_the_tighter_of_their_budget_and_the_servers(
    journal: Journal,
) -> None:
    from mediamux import principals

    driver = Driver(0.4)
    e = engine(
        journal,
        driver,
        confirm_usd=0.25,
        budget_usd=5.0,
        principal_budget=lambda who: 1.0 if who == "alice" else None,
    )
    principals.install(lambda: ("alice", frozenset({"mediamux:spend"})))
    try:
        first, second = Gate(answer=True), Gate(answer=False)
        await run(e, first, "one")
        await run(e, second, "two")
    finally:
        principals.install(lambda: None)

    (shown,) = second.quotes
    # Alice's own dollar is the limit that binds: 0.4 of it is held by her first job.
    assert (shown.budget_usd, shown.committed_usd) == (1.0, 0.4)
    assert journal.committed_usd("alice") == 0.4 and driver.submits == 1
