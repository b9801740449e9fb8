"""Protocol errors for requests that name something this server does not have."""

from __future__ import annotations

import logging
from typing import Any

from mcp import MCPError
from mcp_types import INVALID_PARAMS

logger = logging.getLogger("mediamux.server")


def invalid_params(message: str, **data: Any) -> MCPError:
    """-32602 in our words. Logged at DEBUG: a client asking for a name we lack is no fault of ours,
    and the client is told in full."""
    logger.debug("refused: %s", message)
    return MCPError(code=INVALID_PARAMS, message=message, data={"class": "not_found", **data})
