"""Confirmation before spending: the job engine's ``SpendGate`` for one MCP tool call.

The engine decides *whether* to ask (MEDIAMUX_CONFIRM_USD, MEDIAMUX_BUDGET_USD) after the duplicate
guard and the estimate and before anything is reserved; this module only carries the question, and
only to a client that declared the elicitation capability. How it travels depends on the era:

* 2025-11-25: ``elicitation/create`` sent mid-call; the job goes on (or not) when the answer arrives.
* 2026-07-28: the server cannot send requests, so the call ends with an ``input_required`` result
  holding the question and a ``requestState`` (sealed by the SDK under MEDIAMUX_STATE_KEYS) that
  names the job and carries the estimate shown. The client retries the same call with the answer;
  the engine takes the estimate from the state instead of asking the provider again.

One mechanism for every paid tool: ``tools.base.guarded`` installs the gate around each call and
turns ``ConfirmationPending`` into the ``input_required`` result.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from mcp.server.elicitation import AcceptedElicitation, render_elicitation_schema
from mcp.server.mcpserver import Context
from mcp.shared.exceptions import MCPError
from mcp_types import ElicitRequest, ElicitRequestFormParams, ElicitResult, InputRequiredResult
from mcp_types.version import is_version_at_least
from pydantic import BaseModel, Field, ValidationError

from mediamux.errors import MediamuxError
from mediamux.jobs.engine import SpendQuote
from mediamux.providers.cost import format_usd

logger = logging.getLogger("mediamux.tools.confirm")

# The key of our question in inputRequests / inputResponses, and what our requestState says it is.
INPUT_KEY = "mediamux_confirm_spend"
STATE_KIND = "mediamux/confirm-spend"
STATE_VERSION = 1
MULTI_ROUND_VERSION = "2026-07-28"


class ConfirmSpend(BaseModel):
    """The form the user answers: accepting it as it comes is a yes."""

    confirm: bool = Field(True, title="Spend it", description="Go ahead and pay for this call")


class ConfirmationPending(Exception):
    """The question leaves as this call's result (2026-07-28); the retry brings the answer."""

    def __init__(self, result: InputRequiredResult) -> None:
        super().__init__("input required: confirm spending")
        self.result = result


class ConfirmationUnavailable(MediamuxError):
    error_class = "invalid_input"


def question(tool: str, quote: SpendQuote) -> str:
    """Short, and everything needed to decide: tool, model or operation, estimate, budget left."""
    what = f"{tool}: {quote.title} {quote.subject}"
    if quote.estimate_usd is not None:
        cost = f"estimated {format_usd(quote.estimate_usd)}"
    elif quote.reserve_usd is not None:
        cost = f"price not known in advance ({format_usd(quote.reserve_usd)} held against the budget)"
    else:
        cost = "price not known in advance"
    budget = ""
    if quote.remaining_usd is not None and quote.budget_usd is not None:
        budget = f"; {format_usd(quote.remaining_usd)} of the {format_usd(quote.budget_usd)} budget left"
    return f"{what}, {cost}{budget}. Spend it?"


def _said_yes(action: str, content: dict[str, Any] | None) -> bool:
    if action != "accept":
        return False
    try:
        return ConfirmSpend.model_validate(content or {}).confirm
    except ValidationError:
        return False  # an answer that cannot be read is not a yes: nothing is spent on it


class ElicitingGate:
    """Asks through the calling client; see the module docstring for the two eras."""

    def __init__(self, ctx: Context[Any, Any], tool: str) -> None:
        self.ctx = ctx
        self.tool = tool

    @property
    def multi_round(self) -> bool:
        version = self.ctx.protocol_version
        return version is not None and is_version_at_least(version, MULTI_ROUND_VERSION)

    def can_ask(self) -> bool:
        caps = self.ctx.client_capabilities
        elicitation = caps.elicitation if caps is not None else None
        # A bare `elicitation: {}` is form support (the only kind before modes); url-only is not.
        if elicitation is None or (elicitation.form is None and elicitation.url is not None):
            return False
        if self.multi_round:
            return True
        # A connection with no way back to the client (stateless legacy HTTP) cannot carry the question.
        return bool(self.ctx.session.can_send_request)

    def _state(self) -> dict[str, Any] | None:
        raw = self.ctx.request_state if self.multi_round else None
        if not raw:
            return None
        try:
            state = json.loads(raw)
        except ValueError:
            return None
        if not isinstance(state, dict) or state.get("kind") != STATE_KIND or state.get("v") != STATE_VERSION:
            return None
        return state

    def recall(self, dedup_key: str) -> SpendQuote | None:
        state = self._state()
        if state is None or state.get("dedup_key") != dedup_key:
            return None
        estimate = state.get("estimate_usd")
        return SpendQuote(
            provider=str(state.get("provider", "")),
            operation=str(state.get("operation", "")),
            title=str(state.get("title", "")),
            subject=str(state.get("subject", "")),
            dedup_key=dedup_key,
            estimate_usd=float(estimate) if isinstance(estimate, int | float) else None,
        )

    async def confirm(self, quote: SpendQuote) -> bool:
        message = question(self.tool, quote)
        if self.multi_round:
            return self._answer_or_ask(quote, message)
        try:
            answer = await self.ctx.elicit(message, ConfirmSpend)
        except ValueError:
            logger.info("%s: the confirmation answer could not be read; not spending", self.tool)
            return False
        except MCPError as exc:
            raise ConfirmationUnavailable(
                f"{quote.title} {quote.subject}: the client could not show the confirmation ({exc.error.message}); "
                "nothing was submitted or charged"
            ) from None
        return isinstance(answer, AcceptedElicitation) and answer.data.confirm

    def _answer_or_ask(self, quote: SpendQuote, message: str) -> bool:
        state = self._state()
        answer = (self.ctx.input_responses or {}).get(INPUT_KEY)
        # An answer counts only beside the state we issued for this very job: an inputResponses
        # sent unasked, or left over from a question about another job, is not consent.
        if (
            state is not None
            and state.get("dedup_key") == quote.dedup_key
            and isinstance(answer, ElicitResult)
        ):
            return _said_yes(answer.action, answer.content)
        state = {
            "kind": STATE_KIND,
            "v": STATE_VERSION,
            "tool": self.tool,
            "provider": quote.provider,
            "operation": quote.operation,
            "title": quote.title,
            "subject": quote.subject,
            "dedup_key": quote.dedup_key,
            "estimate_usd": quote.estimate_usd,
        }
        request = ElicitRequest(
            params=ElicitRequestFormParams(
                message=message, requested_schema=render_elicitation_schema(ConfirmSpend)
            )
        )
        raise ConfirmationPending(
            InputRequiredResult(input_requests={INPUT_KEY: request}, request_state=json.dumps(state))
        )
