"""The provider-neutral cost block every paid result carries.

Each field is exactly what the provider reported, or ``None`` when it reported nothing — never
a made-up zero, because "free" and "unknown" lead a user to different decisions.

A figure that cannot be a charge (negative, infinite, NaN, not a number) is a provider fault, not
a charge: it is logged and treated as not reported. Believing it would corrupt the ledger — a
negative charge lowers the session's spend below what was paid, and one infinity turns the
all-time total into something JSON cannot carry and SQL sums to NULL, after which the budget
would never see another charge.
"""

from __future__ import annotations

import logging
import math
from typing import Literal

from pydantic import BaseModel, Field, field_validator

logger = logging.getLogger("mediamux.providers.cost")


def reported_amount(value: object, what: str, provider: str, *, signed: bool = False) -> float | None:
    """An amount as the provider reported it (a number or numeric text), or None.

    None when the provider sent nothing, and also when what it sent cannot be an amount: that is
    logged as the provider's fault, naming the field but never quoting text (it could echo a
    secret). ``signed`` admits negative values, for a balance that may be overdrawn; a charge never
    is negative.
    """
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    read: float | None = None
    if not isinstance(value, bool) and isinstance(value, int | float | str):
        try:
            read = float(value)
        except (ValueError, OverflowError):
            read = None
    if read is None:
        reason = "not a number"
    elif not math.isfinite(read):
        reason = f"not finite ({read})"
    elif read < 0 and not signed:
        reason = f"negative ({read:g})"
    else:
        return read
    logger.warning(
        "%s reported an unusable amount: %s is %s; it is treated as not reported", provider, what, reason
    )
    return None


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

    @field_validator("usd", "credits", "bonus_credits", "tokens", mode="before")
    @classmethod
    def _a_charge(cls, value: object) -> float | None:
        # The last line of defence: the clients already refuse these, with the provider's name.
        return reported_amount(value, "a charge", "a provider")

    @field_validator("balance_usd", mode="before")
    @classmethod
    def _a_balance(cls, value: object) -> float | None:
        return reported_amount(value, "a balance", "a provider", signed=True)

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
