"""The ledger, summed the way people ask about money: this session, today, all time, per provider."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from mediamux import registry
from mediamux.clock import Clock
from mediamux.jobs.backend import JournalBackend


class ProviderSpend(BaseModel):
    usd: float | None = Field(None, description="Dollars charged (refunds excluded); null if never reported")
    credits: float | None = None
    tokens: float | None = None
    entries: int = 0
    entries_without_usd: int = 0
    note: str | None = None


class Spend(BaseModel):
    usd: float
    providers: dict[str, ProviderSpend]


class Costs(BaseModel):
    session: Spend = Field(description="This server process")
    today: Spend = Field(description="Since midnight UTC")
    all_time: Spend
    budget_usd: float | None = None
    committed_usd: float = Field(description="Charged plus what running jobs hold against the budget")


def cost_report(journal: JournalBackend, session_id: str, clock: Clock, *, budget_usd: float | None) -> Costs:
    """The ledger as the costs tool and the mediamux://costs resource show it."""
    midnight = clock.now().replace(hour=0, minute=0, second=0, microsecond=0).timestamp()

    def spend(totals: dict[str, Any]) -> Spend:
        providers = {}
        for provider, t in totals["providers"].items():
            row = ProviderSpend(**t)
            if row.usd is None and row.credits is None and row.tokens is None:
                title = registry.PROVIDERS[provider].title if provider in registry.PROVIDERS else provider
                row.note = f"not reported by {title}"
            providers[provider] = row
        return Spend(usd=totals["usd"], providers=providers)

    return Costs(
        session=spend(journal.totals(session_id)),
        today=spend(journal.totals(since_ts=midnight)),
        all_time=spend(journal.totals()),
        budget_usd=budget_usd,
        committed_usd=round(journal.committed_usd(), 6),
    )
