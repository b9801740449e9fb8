"""The ledger, summed the way people ask about money: this session, today, all time, per provider."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field

from mediamux import registry
from mediamux.clock import Clock
from mediamux.jobs.backend import JournalBackend
from mediamux.principals import LOCAL, current_principal

if TYPE_CHECKING:
    from mediamux.context import Services


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


class AuditEntry(BaseModel):
    ts: float
    principal: str
    action: str = Field(description="submit, cancel or delete")
    tool: str | None = None
    job_id: str | None = None
    estimate_usd: float | None = None
    cost_usd: float | None = Field(None, description="Reported cost, once known")
    detail: str | None = None


class Costs(BaseModel):
    session: Spend = Field(description="This server process")
    today: Spend = Field(description="Since midnight UTC")
    all_time: Spend
    budget_usd: float | None = None
    committed_usd: float = Field(description="Charged plus what running jobs hold against the budget")
    principal: str | None = Field(
        None, description="Whose spend this is; null: everybody's (the operator's view)"
    )
    audit: list[AuditEntry] = Field(
        default_factory=list, description="Recent paid submissions, cancels, deletions"
    )


def cost_report(
    journal: JournalBackend,
    session_id: str,
    clock: Clock,
    *,
    budget_usd: float | None,
    principal: str | None = None,
    audit_limit: int = 10,
) -> Costs:
    """The ledger as the costs tool and the mediamux://costs resource show it: one principal's
    spend, or with ``principal`` None everybody's."""
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
        session=spend(journal.totals(session_id, principal=principal)),
        today=spend(journal.totals(since_ts=midnight, principal=principal)),
        all_time=spend(journal.totals(principal=principal)),
        budget_usd=budget_usd,
        committed_usd=round(journal.committed_usd(principal), 6),
        principal=principal,
        audit=[AuditEntry(**e) for e in journal.audit_trail(principal=principal, limit=audit_limit)],
    )


def caller_costs(svc: Services) -> Costs:
    """The report for whoever is asking: a signed-in principal sees their own spend against their
    own budget; the local principal (stdio, the shared token, the CLI) is the operator and sees
    everybody's against the server's."""
    principal = current_principal()
    if principal == LOCAL:
        return cost_report(svc.journal, svc.engine.session_id, svc.clock, budget_usd=svc.settings.budget_usd)
    return cost_report(
        svc.journal,
        svc.engine.session_id,
        svc.clock,
        budget_usd=svc.engine.principal_budget(principal),
        principal=principal,
    )
