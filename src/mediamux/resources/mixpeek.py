"""Mixpeek resources: an indexed video's segments, read live (either API generation)."""

from __future__ import annotations

from typing import Any

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ResourceError, ResourceNotFoundError

from mediamux.providers.errors import NotFound, ProviderError
from mediamux.resources import client, cursor_guard
from mediamux.server.completions import journal_ids
from mediamux.tools.mixpeek_views import documents_view
from mediamux.tools.pages import json_page, make_cursor, offset_of

# Segments read from Mixpeek per request while paging the resource; a page holds those that fit.
ASSET_PAGE_SIZE = 100


def register_mixpeek_resources(server: MCPServer[Any]) -> None:
    async def asset_page(asset_id: str, cursor: str | None) -> str:
        start = cursor_guard(lambda: offset_of("mixpeek_asset", cursor))
        mixpeek = client("mixpeek", object)
        try:
            found = await documents_view(
                mixpeek,  # type: ignore[arg-type]
                asset_id,
                start // ASSET_PAGE_SIZE + 1,
                ASSET_PAGE_SIZE,
            )
        except NotFound:
            raise ResourceNotFoundError(f"no Mixpeek video {asset_id}") from None
        except ProviderError as exc:
            raise ResourceError(exc.message) from None
        segments = [s.model_dump(mode="json", exclude_none=True) for s in found.segments]
        skip = start % ASSET_PAGE_SIZE

        def after(n: int) -> str | None:
            following = start + n
            if following >= found.total:
                return None
            return f"mixpeek://assets/{asset_id}?cursor={make_cursor('mixpeek_asset', o=following)}"

        return json_page(
            segments[skip:],
            key="segments",
            next_uri=after,
            extra={"asset_id": asset_id, "total": found.total},
        )

    @server.resource(
        "mixpeek://assets/{asset_id}",
        name="mixpeek_asset",
        title="Mixpeek video",
        mime_type="application/json",
        description="An indexed video's segments, read live from Mixpeek, a page at a time (next: the next page's URI)",
    )
    async def asset(asset_id: str) -> str:
        return await asset_page(asset_id, None)

    @server.resource(
        "mixpeek://assets/{asset_id}{?cursor}",
        name="mixpeek_asset_page",
        title="Mixpeek video, a later page",
        mime_type="application/json",
        description="The page of a video's segments a next URI points at",
    )
    async def asset_after(asset_id: str, cursor: str = "") -> str:
        return await asset_page(asset_id, cursor or None)


# The videos indexed from here, most recent first, read from the journal (no Mixpeek call).
COMPLETIONS = (
    journal_ids("asset_id", "mixpeek", lambda record: [str((record.result or {}).get("asset_id") or "")]),
)
