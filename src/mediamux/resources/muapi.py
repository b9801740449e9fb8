"""MuAPI resources: a prediction's live status, outputs and cost."""

from __future__ import annotations

from typing import Any

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ResourceError, ResourceNotFoundError

from mediamux.providers.errors import NotFound, ProviderError
from mediamux.providers.muapi import MuapiClient
from mediamux.resources import client, dump


def register_muapi_resources(server: MCPServer[Any]) -> None:
    @server.resource(
        "muapi://predictions/{request_id}",
        name="muapi_prediction",
        title="MuAPI prediction",
        mime_type="application/json",
        description="Live status, outputs and cost of a MuAPI request",
    )
    async def prediction(request_id: str) -> str:
        muapi = client("muapi", MuapiClient)
        try:
            p = await muapi.get_result(request_id)
        except NotFound:
            raise ResourceNotFoundError(f"no MuAPI prediction {request_id}") from None
        except ProviderError as exc:
            raise ResourceError(exc.message) from None
        data = p.model_dump(
            mode="json",
            include={"id", "status", "outputs", "has_nsfw_contents", "created_at", "cost"},
        )
        # Provider text is relayed scrubbed, as the tools do.
        data["error"] = muapi.scrub(p.error_message) if p.error_message else None
        return dump(data)
