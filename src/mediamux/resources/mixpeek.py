"""Mixpeek resources: an indexed video's segments, read live (either API generation)."""

from __future__ import annotations

import json
from typing import Any

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ResourceError, ResourceNotFoundError

from mediamux.providers.errors import NotFound, ProviderError
from mediamux.resources import client
from mediamux.server.completions import journal_ids
from mediamux.tools.mixpeek_views import documents_view

# One read gives a reader the whole of a typical video; longer ones page with the tool.
ASSET_PAGE_SIZE = 100


def register_mixpeek_resources(server: MCPServer[Any]) -> None:
    @server.resource(
        "mixpeek://assets/{asset_id}",
        name="mixpeek_asset",
        title="Mixpeek video",
        mime_type="application/json",
        description=f"An indexed video's segments (its first {ASSET_PAGE_SIZE}), read live from Mixpeek",
    )
    async def asset(asset_id: str) -> str:
        mixpeek = client("mixpeek", object)
        try:
            found = await documents_view(mixpeek, asset_id, 1, ASSET_PAGE_SIZE)  # type: ignore[arg-type]
        except NotFound:
            raise ResourceNotFoundError(f"no Mixpeek video {asset_id}") from None
        except ProviderError as exc:
            raise ResourceError(exc.message) from None
        return json.dumps(found.model_dump(mode="json", exclude_none=True), indent=1, ensure_ascii=False)


# The videos indexed from here, most recent first, read from the journal (no Mixpeek call).
COMPLETIONS = (
    journal_ids("asset_id", "mixpeek", lambda record: [str((record.result or {}).get("asset_id") or "")]),
)
