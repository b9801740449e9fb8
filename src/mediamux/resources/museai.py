"""muse.ai resources: videos, collections and subtitles, read live; videos announce their changes."""

from __future__ import annotations

from collections.abc import Awaitable, Mapping
from typing import TYPE_CHECKING, Any

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ResourceError, ResourceNotFoundError

from mediamux.providers.errors import NotFound, ProviderError
from mediamux.providers.museai import MuseaiClient
from mediamux.resources import client, dump
from mediamux.server.completions import Candidates, CompletionSource

if TYPE_CHECKING:
    from mediamux.context import Services
from mediamux.resources import cursor_guard, listing_page
from mediamux.tools.pages import offset_of


def register_museai_resources(server: MCPServer[Any]) -> None:
    def museai() -> MuseaiClient:
        return client("museai", MuseaiClient)

    async def guarded(read: Awaitable[Any], missing: str) -> Any:
        try:
            return await read
        except NotFound:
            raise ResourceNotFoundError(missing) from None
        except ProviderError as exc:
            raise ResourceError(exc.message) from None

    async def videos_page(cursor: str | None) -> str:
        start = cursor_guard(lambda: offset_of("museai_videos", cursor))
        items = await guarded(museai().list_videos(), "no videos")
        return listing_page(
            [v.model_dump(mode="json", exclude_none=True) for v in items],
            start,
            "videos",
            "museai://videos",
            "museai_videos",
        )

    @server.resource(
        "museai://videos",
        name="museai_videos",
        title="muse.ai videos",
        mime_type="application/json",
        description="The account's videos, read live from muse.ai, a page at a time (next: the next page's URI)",
    )
    async def videos() -> str:
        return await videos_page(None)

    @server.resource(
        "museai://videos{?cursor}",
        name="museai_videos_page",
        title="muse.ai videos, a later page",
        mime_type="application/json",
        description="The page of museai://videos a next URI points at",
    )
    async def videos_after(cursor: str = "") -> str:
        return await videos_page(cursor or None)

    @server.resource(
        "museai://videos/{svid}",
        name="museai_video",
        title="muse.ai video",
        mime_type="application/json",
        description="One video with its subtitle tracks; updated when it finishes ingesting or changes",
    )
    async def video(svid: str) -> str:
        c = museai()
        v = await guarded(c.get_video(svid), f"no muse.ai video {svid}")
        tracks = await guarded(c.list_subtitles(svid), f"no muse.ai video {svid}")
        return dump({**v.model_dump(mode="json", exclude_none=True), "subtitles": tracks})

    async def collections_page(cursor: str | None) -> str:
        start = cursor_guard(lambda: offset_of("museai_collections", cursor))
        items = await guarded(museai().list_collections(), "no collections")
        # A collection's videos are counted here and listed by museai://collections/{scid}.
        listed = [
            {**c.model_dump(mode="json", exclude_none=True, exclude={"videos"}), "video_count": len(c.videos)}
            for c in items
        ]
        return listing_page(listed, start, "collections", "museai://collections", "museai_collections")

    @server.resource(
        "museai://collections",
        name="museai_collections",
        title="muse.ai collections",
        mime_type="application/json",
        description="The account's collections, read live, a page at a time (next: the next page's URI)",
    )
    async def collections() -> str:
        return await collections_page(None)

    @server.resource(
        "museai://collections{?cursor}",
        name="museai_collections_page",
        title="muse.ai collections, a later page",
        mime_type="application/json",
        description="The page of museai://collections a next URI points at",
    )
    async def collections_after(cursor: str = "") -> str:
        return await collections_page(cursor or None)

    async def collection_page(scid: str, cursor: str | None) -> str:
        start = cursor_guard(lambda: offset_of("museai_collection", cursor))
        c = await guarded(museai().get_collection(scid), f"no muse.ai collection {scid}")
        head = c.model_dump(mode="json", exclude_none=True, exclude={"videos"})
        videos = [v.model_dump(mode="json", exclude_none=True) for v in c.videos]
        return listing_page(
            videos,
            start,
            "videos",
            f"museai://collections/{scid}",
            "museai_collection",
            extra={**head, "video_count": len(videos)},
        )

    @server.resource(
        "museai://collections/{scid}",
        name="museai_collection",
        title="muse.ai collection",
        mime_type="application/json",
        description="One collection with its videos, a page of videos at a time",
    )
    async def collection(scid: str) -> str:
        return await collection_page(scid, None)

    @server.resource(
        "museai://collections/{scid}{?cursor}",
        name="museai_collection_page",
        title="muse.ai collection, a later page",
        mime_type="application/json",
        description="The page of a collection's videos a next URI points at",
    )
    async def collection_after(scid: str, cursor: str = "") -> str:
        return await collection_page(scid, cursor or None)

    @server.resource(
        "museai://videos/{svid}/subtitles/{subtitle_id}",
        name="museai_subtitles",
        title="muse.ai subtitles",
        mime_type="text/vtt",
        description="One subtitle track as WebVTT",
    )
    async def subtitles(svid: str, subtitle_id: str) -> str:
        return str(
            await guarded(museai().get_subtitles(svid, subtitle_id), f"no subtitles {subtitle_id} on {svid}")
        )


# -- completion ------------------------------------------------------------------------------------
# Read from the account's listings (free), through the completion cache: see mediamux.server.completions.


async def _svids(svc: Services, given: Mapping[str, str]) -> Candidates:
    videos = await svc.clients.require("museai", MuseaiClient).list_videos()
    return Candidates([v.svid for v in videos])


async def _scids(svc: Services, given: Mapping[str, str]) -> Candidates:
    collections = await svc.clients.require("museai", MuseaiClient).list_collections()
    return Candidates([c.scid for c in collections if c.scid])


async def _subtitle_ids(svc: Services, given: Mapping[str, str]) -> Candidates:
    tracks = await svc.clients.require("museai", MuseaiClient).list_subtitles(given["svid"])
    return Candidates(list(tracks))


COMPLETIONS = (
    CompletionSource("svid", _svids, cached=True, provider="museai"),
    CompletionSource("scid", _scids, cached=True, provider="museai"),
    # A video's tracks: known once the svid is.
    CompletionSource(
        "subtitle_id",
        _subtitle_ids,
        cached=True,
        provider="museai",
        scope=lambda given: given.get("svid") or None,
    ),
)
