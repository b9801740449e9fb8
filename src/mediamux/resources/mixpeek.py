"""Mixpeek resources: an indexed asset's features, read live."""

from __future__ import annotations

import json
from typing import Any

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ResourceError, ResourceNotFoundError

from mediamux.providers.errors import NotFound, ProviderError
from mediamux.providers.mixpeek import MixpeekClient
from mediamux.resources import client

# One read gives a reader the whole of a typical asset; longer ones page with the tool.
ASSET_PAGE_SIZE = 100


def register_mixpeek_resources(server: MCPServer[Any]) -> None:
    @server.resource(
        "mixpeek://assets/{asset_id}",
        name="mixpeek_asset",
        title="Mixpeek asset",
        mime_type="application/json",
        description=f"An indexed asset's features (its first {ASSET_PAGE_SIZE} segments), read live from Mixpeek",
    )
    async def asset(asset_id: str) -> str:
        mixpeek = client("mixpeek", MixpeekClient)
        try:
            features = await mixpeek.get_asset_features(asset_id, page=1, page_size=ASSET_PAGE_SIZE)
        except NotFound:
            raise ResourceNotFoundError(f"no Mixpeek asset {asset_id}") from None
        except ProviderError as exc:
            raise ResourceError(exc.message) from None
        return json.dumps(features.model_dump(mode="json", exclude_none=True), indent=1, ensure_ascii=False)
