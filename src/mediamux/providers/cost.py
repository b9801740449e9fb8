"""The provider-neutral cost block every paid result carries.

Each field is exactly what the provider reported, or ``None`` when it reported nothing — never
a made-up zero, because "free" and "unknown" lead a user to different decisions.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class Cost(BaseModel):
    usd: float | None = Field(None, description="Charge in US dollars as reported by the provider")
    credits: float | None = Field(None, description="Charge in the provider's credits")
    bonus_credits: float | None = Field(None, description="Part of the charge paid from a bonus pool")
    refunded: bool | None = Field(None, description="True once the provider refunded a failed job")
    tokens: float | None = Field(None, description="Provider tokens used (Muzaic: 1 token = 1 s of audio)")
    balance_usd: float | None = Field(None, description="Account balance after this request, when reported")
    source: Literal["body", "headers", "body+headers", "estimate"] | None = Field(
        None, description="Where the figures came from"
    )
    note: str | None = Field(None, description="Why there are no figures, when the provider reports none")

    @property
    def is_empty(self) -> bool:
        return all(
            v is None
            for v in (
                self.usd,
                self.credits,
                self.bonus_credits,
                self.refunded,
                self.tokens,
                self.balance_usd,
            )
        )

    def merged_with(self, newer: Cost) -> Cost:
        """A later report about the same job: newer figures win, older ones fill the gaps."""
        data = self.model_dump()
        for key, value in newer.model_dump().items():
            if value is not None:
                data[key] = value
        return Cost.model_validate(data)


def total_cost(costs: list[Cost]) -> Cost:
    """Several jobs' charges as one: each figure summed over the jobs that reported it."""

    def total(name: str) -> float | None:
        values = [getattr(c, name) for c in costs if getattr(c, name) is not None]
        return round(sum(values), 6) if values else None

    notes = {c.note for c in costs if c.note}
    return Cost(
        usd=total("usd"),
        credits=total("credits"),
        bonus_credits=total("bonus_credits"),
        tokens=total("tokens"),
        note=next(iter(notes)) if len(notes) == 1 else None,
    )


def format_usd(usd: float) -> str:
    """Dollars with at least cents and up to six decimals ($1.40, $0.003, $0.0042): never rounded to a lie."""
    text = f"{usd:.6f}".rstrip("0")
    whole, _, frac = text.partition(".")
    return f"${whole}.{frac.ljust(2, '0')}"
