"""The keys that seal multi-round request state (MEDIAMUX_STATE_KEYS), and a refusal people can act on.

A 2026-07-28 ``input_required`` result (the confirmation before spending) hands the client a
``requestState`` that comes back with the retry. The SDK seals it with AES-GCM, binds it to the tool,
its arguments, this server's name and the caller, and lets it live 10 minutes. Replicas that share
MEDIAMUX_STATE_KEYS open each other's states, so a retry may land on any of them; unset, a random
key held by this process alone does, which is all one process needs.
"""

from __future__ import annotations

import logging
from typing import Any

from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.server.mcpserver import MCPServer, RequestStateSecurity
from mcp.server.request_state import RequestStateBoundary
from mcp.shared.exceptions import MCPError
from mcp_types import INVALID_PARAMS

from mediamux.config import Settings

logger = logging.getLogger("mediamux.server")

REFUSED_STATE = (
    "this requestState was not issued by this service under its current MEDIAMUX_STATE_KEYS, was "
    "altered, or is more than 10 minutes old; nothing was run or spent. Call the tool again without "
    "requestState and inputResponses to be asked again"
)


def request_state_security(settings: Settings) -> RequestStateSecurity:
    if settings.state_keys:
        return RequestStateSecurity(keys=[k.get_secret_value() for k in settings.state_keys])
    logger.debug("MEDIAMUX_STATE_KEYS is unset: request state is sealed with a key only this process holds")
    return RequestStateSecurity.ephemeral()


async def explain_refused_state(ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
    """The SDK refuses a bad requestState with one fixed message (the real reason goes to the log):
    keep its code, data and words, and add what happened and what to do."""
    try:
        return await call_next(ctx)
    except MCPError as exc:
        data = exc.error.data
        if (
            exc.code != INVALID_PARAMS
            or not isinstance(data, dict)
            or data.get("reason") != "invalid_request_state"
        ):
            raise
        raise MCPError(code=INVALID_PARAMS, message=f"{exc.message}: {REFUSED_STATE}", data=data) from None


def install(server: MCPServer[Any]) -> None:
    """Put the explanation just outside the SDK's sealing boundary, whose refusals it rewords."""
    chain = server.middleware
    at = next((i for i, m in enumerate(chain) if isinstance(m, RequestStateBoundary)), 0)
    chain.insert(at, explain_refused_state)
