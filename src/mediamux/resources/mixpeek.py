"""Mixpeek resources: an indexed asset's features, read live."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING

from mcp.server.mcpserver.exceptions import ResourceError, ResourceNotFoundError

from mediamux.providers.errors import NotFound, ProviderError

if TYPE_CHECKING:
    from mediamux.server.app import MediamuxServer
    from mediamux.server.services import Services

# One read gives a reader the whole of a typical asset; longer ones page with the tool.
ASSET_PAGE_SIZE = 100


def register_mixpeek_resources(server: MediamuxServer, svc: Callable[[], Services]) -> None:
    @server.resource(
        "mixpeek://assets/{asset_id}",
        name="mixpeek_asset",
        title="Mixpeek asset",
        mime_type="application/json",
        description=f"An indexed asset's features (its first {ASSET_PAGE_SIZE} segments), read live from Mixpeek",
    )
    async def asset(asset_id: str) -> str:
        client = svc().mixpeek
        if client is None:
            raise ResourceError("Mixpeek is not configured; set MIXPEEK_API_KEY")
        try:
            features = await client.get_asset_features(asset_id, page=1, page_size=ASSET_PAGE_SIZE)
        except NotFound:
            raise ResourceNotFoundError(f"no Mixpeek asset {asset_id}") from None
        except ProviderError as exc:
            raise ResourceError(exc.message) from None
        return json.dumps(features.model_dump(mode="json", exclude_none=True), indent=1, ensure_ascii=False)
