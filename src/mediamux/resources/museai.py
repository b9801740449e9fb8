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

    @server.resource(
        "museai://videos",
        name="museai_videos",
        title="muse.ai videos",
        mime_type="application/json",
        description="The account's videos, read live from muse.ai",
    )
    async def videos() -> str:
        items = await guarded(museai().list_videos(), "no videos")
        return dump([v.model_dump(mode="json", exclude_none=True) for v in items])

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

    @server.resource(
        "museai://collections",
        name="museai_collections",
        title="muse.ai collections",
        mime_type="application/json",
        description="The account's collections, read live",
    )
    async def collections() -> str:
        items = await guarded(museai().list_collections(), "no collections")
        return dump([c.model_dump(mode="json", exclude_none=True) for c in items])

    @server.resource(
        "museai://collections/{scid}",
        name="museai_collection",
        title="muse.ai collection",
        mime_type="application/json",
        description="One collection with its videos",
    )
    async def collection(scid: str) -> str:
        c = await guarded(museai().get_collection(scid), f"no muse.ai collection {scid}")
        return dump(c.model_dump(mode="json", exclude_none=True))

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
