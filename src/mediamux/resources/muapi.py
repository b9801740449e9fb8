"""MuAPI resources: a prediction's live status, outputs and cost; a model's inputs and price."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ResourceError, ResourceNotFoundError

from mediamux.providers.errors import InvalidRequest, NotFound, ProviderError
from mediamux.providers.muapi import MuapiClient
from mediamux.resources import client, dump
from mediamux.server.completions import Candidates, CompletionSource, journal_ids
from mediamux.tools.muapi import MODEL_CATALOG_TTL_S

if TYPE_CHECKING:
    from mediamux.context import Services


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

    @server.resource(
        "muapi://models/{+endpoint}",
        name="muapi_model",
        title="MuAPI model",
        mime_type="application/json",
        description="One model's endpoint, category, price and the JSON Schema of its inputs (free to read)",
    )
    async def model(endpoint: str) -> str:
        muapi = client("muapi", MuapiClient)
        try:
            m = await muapi.get_model(muapi.check_endpoint(endpoint, "get_model"))
        except (NotFound, InvalidRequest):
            raise ResourceNotFoundError(f"no MuAPI model {endpoint}") from None
        except ProviderError as exc:
            raise ResourceError(exc.message) from None
        return dump(
            {
                "name": m.name,
                "endpoint": m.endpoint or m.name,
                "category": m.category,
                "description": m.description,
                "price": m.cost,
                "input_schema": m.input_schema,
            }
        )


# -- completion ------------------------------------------------------------------------------------


async def _model_slugs(svc: Services, given: Mapping[str, str]) -> Candidates:
    models = await svc.clients.require("muapi", MuapiClient).list_models()
    return Candidates(sorted({m.endpoint or m.name for m in models}))


COMPLETIONS = (
    # Requests made from here, most recent first, from the journal (no MuAPI call).
    journal_ids("request_id", "muapi", lambda record: [record.provider_job_id]),
    # Model slugs, wherever a prompt argument or template variable is named endpoint.
    CompletionSource("endpoint", _model_slugs, cached=True, ttl_s=MODEL_CATALOG_TTL_S, provider="muapi"),
)
