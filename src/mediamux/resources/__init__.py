"""MCP resources: jobs, the cost ledger, saved outputs, MuAPI predictions.

Lists are computed when read, from the journal; nothing is cached in memory.
"""

from __future__ import annotations

import json
import mimetypes
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ResourceError, ResourceNotFoundError

from mediamux.files import OUTPUTS_PREFIX, FileAccessError, output_path
from mediamux.jobs.engine import JobNotFound
from mediamux.providers.errors import NotFound, ProviderError
from mediamux.resources.mixpeek import register_mixpeek_resources

if TYPE_CHECKING:
    from mediamux.providers.museai import MuseaiClient
    from mediamux.server.app import MediamuxServer
    from mediamux.server.services import Services

# Hosts accept results of about 1 MiB and base64 adds a third; bigger outputs are read from disk by path.
MAX_INLINE_OUTPUT_BYTES = 768 * 1024


def _dump(data: Any) -> str:
    return json.dumps(data, indent=1, ensure_ascii=False)


def register_resources(server: MediamuxServer, toolsets: list[str]) -> None:
    def svc() -> Services:
        if server.services is None:
            raise ResourceError("mediamux is starting up; try again in a moment")
        return server.services

    @server.resource(
        "mediamux://jobs",
        name="jobs",
        title="Recent jobs",
        mime_type="application/json",
        description="The 50 most recent jobs from the local journal, newest first",
    )
    def jobs() -> str:
        s = svc()
        return _dump(
            [
                s.engine.view(r).model_dump(mode="json", by_alias=True, exclude={"result"})
                for r in s.journal.list(limit=50)
            ]
        )

    @server.resource(
        "mediamux://jobs/{job_id}",
        name="job",
        title="Job",
        mime_type="application/json",
        description="One job: status, result, error and cost",
    )
    def job(job_id: str) -> str:
        s = svc()
        try:
            record = s.engine.get_record(job_id)
        except JobNotFound as exc:
            raise ResourceNotFoundError(exc.message) from None
        return _dump(s.engine.view(record).model_dump(mode="json", by_alias=True))

    @server.resource(
        "mediamux://costs",
        name="costs",
        title="Cost ledger",
        mime_type="application/json",
        description="Spend recorded this session and all time, per provider, against the budget",
    )
    def costs() -> str:
        s = svc()
        return _dump(
            {
                "session_id": s.engine.session_id,
                "session": s.journal.totals(s.engine.session_id),
                "all_time": s.journal.totals(),
                "budget_usd": s.settings.budget_usd,
                "note": "USD as reported by providers; refunded charges count as 0; entries_without_usd were "
                "jobs whose provider reported no dollar figure",
            }
        )

    @server.resource(
        OUTPUTS_PREFIX + "{name}",
        name="output",
        title="Saved output",
        mime_type="application/octet-stream",
        description="A generated file saved in the output folder (served with its own media type)",
    )
    def output(name: str) -> bytes:
        # Served by MediamuxServer.read_resource with the file's real media type; this registration
        # makes the template discoverable.
        return _read_output(svc(), name)[0]

    if "museai" in toolsets:
        register_museai_resources(server, svc)

    if "mixpeek" in toolsets:
        register_mixpeek_resources(server, svc)

    if "muapi" in toolsets:

        @server.resource(
            "muapi://predictions/{request_id}",
            name="muapi_prediction",
            title="MuAPI prediction",
            mime_type="application/json",
            description="Live status, outputs and cost of a MuAPI request",
        )
        async def prediction(request_id: str, ctx: Context) -> str:
            s = svc()
            if s.muapi is None:
                raise ResourceError("MuAPI is not configured; set MUAPI_API_KEY")
            try:
                p = await s.muapi.get_result(request_id)
            except NotFound:
                raise ResourceNotFoundError(f"no MuAPI prediction {request_id}") from None
            except ProviderError as exc:
                raise ResourceError(exc.message) from None
            data = p.model_dump(
                mode="json",
                include={"id", "status", "outputs", "has_nsfw_contents", "created_at", "cost"},
            )
            # Provider text is relayed scrubbed, as the tools do.
            data["error"] = s.muapi.t.scrub(p.error_message) if p.error_message else None
            return _dump(data)


def register_museai_resources(server: MediamuxServer, svc: Callable[[], Services]) -> None:
    def client() -> MuseaiClient:
        s = svc()
        if s.museai is None:
            raise ResourceError("muse.ai is not configured; set MUSEAI_API_KEY")
        return s.museai

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
        items = await guarded(client().list_videos(), "no videos")
        return _dump([v.model_dump(mode="json", exclude_none=True) for v in items])

    @server.resource(
        "museai://videos/{svid}",
        name="museai_video",
        title="muse.ai video",
        mime_type="application/json",
        description="One video with its subtitle tracks; updated when it finishes ingesting or changes",
    )
    async def video(svid: str) -> str:
        c = client()
        v = await guarded(c.get_video(svid), f"no muse.ai video {svid}")
        tracks = await guarded(c.list_subtitles(svid), f"no muse.ai video {svid}")
        return _dump({**v.model_dump(mode="json", exclude_none=True), "subtitles": tracks})

    @server.resource(
        "museai://collections",
        name="museai_collections",
        title="muse.ai collections",
        mime_type="application/json",
        description="The account's collections, read live",
    )
    async def collections() -> str:
        items = await guarded(client().list_collections(), "no collections")
        return _dump([c.model_dump(mode="json", exclude_none=True) for c in items])

    @server.resource(
        "museai://collections/{scid}",
        name="museai_collection",
        title="muse.ai collection",
        mime_type="application/json",
        description="One collection with its videos",
    )
    async def collection(scid: str) -> str:
        c = await guarded(client().get_collection(scid), f"no muse.ai collection {scid}")
        return _dump(c.model_dump(mode="json", exclude_none=True))

    @server.resource(
        "museai://videos/{svid}/subtitles/{subtitle_id}",
        name="museai_subtitles",
        title="muse.ai subtitles",
        mime_type="text/vtt",
        description="One subtitle track as WebVTT",
    )
    async def subtitles(svid: str, subtitle_id: str) -> str:
        return str(
            await guarded(client().get_subtitles(svid, subtitle_id), f"no subtitles {subtitle_id} on {svid}")
        )


def _read_output(s: Services, name: str) -> tuple[bytes, str]:
    try:
        path = output_path(s.output_dir, name)
    except FileAccessError as exc:
        raise ResourceNotFoundError(str(exc)) from None
    size = path.stat().st_size
    if size > MAX_INLINE_OUTPUT_BYTES:
        raise ResourceError(
            f"{name} is {size} bytes, too large to send inline (limit {MAX_INLINE_OUTPUT_BYTES}); open {path}"
        )
    mime = mimetypes.guess_type(name)[0] or "application/octet-stream"
    return path.read_bytes(), mime


def read_output(s: Services, uri: str) -> tuple[bytes, str]:
    return _read_output(s, uri.removeprefix(OUTPUTS_PREFIX))
