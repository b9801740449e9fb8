"""muse.ai tools: videos, subtitles, collections, in-video search, AI jobs, faces, keys."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from mcp.server.mcpserver import Context
from mcp_types import CallToolResult, ResourceLink
from pydantic import BaseModel, ConfigDict, Field

from mediamux.errors import InputError
from mediamux.jobs.models import JobResult
from mediamux.jobs.museai import OPERATIONS, FileJobArgs
from mediamux.jobs.museai_subtitles import AutoSubtitles, SubtitleWorkflow
from mediamux.providers.errors import NotFound
from mediamux.providers.museai import (
    AlignedWord,
    Collection,
    Colors,
    FaceDatabase,
    Faces,
    JobKind,
    MuseaiClient,
    ObjectBoxes,
    SearchHit,
    Sounds,
    TextBoxes,
    Transcript,
    Video,
)
from mediamux.tools.base import (
    ERROR_META_KEY,
    NewJob,
    Toolset,
    WaitS,
    file_stamp,
    job_result,
    model_result,
    progress_of,
    provider_client,
    services,
    upload_path,
    write_key_file,
)
from mediamux.tools.pages import Column, Cursor, fit, next_offset, offset_of, span
from mediamux.tools.schemas import opaque

toolset = Toolset(
    id="museai",
    title="muse.ai",
    description="video hosting, subtitles, collections, in-video search, media AI",
    mark=("M4 2v12l10-6z", "#e11d48"),  # play: video
)

# Ids and paths are advertised as plain strings (see opaque); the Field limits still apply.
Svid = Annotated[
    str, Field(min_length=1, max_length=32, pattern=r"^[A-Za-z0-9_-]+$"), opaque("Video id (svid)")
]
Scid = Annotated[
    str, Field(min_length=1, max_length=32, pattern=r"^[A-Za-z0-9_-]+$"), opaque("Collection id (scid)")
]
Fid = Annotated[
    str, Field(min_length=8, max_length=128, pattern=r"^[A-Za-z0-9_-]+$"), opaque("Video file id (fid)")
]
SubtitleId = Annotated[str, Field(min_length=1, max_length=32, pattern=r"^[A-Za-z0-9_-]+$"), opaque()]
VisibilityArg = Literal["private", "unlisted", "public"]
LocalPath = Annotated[str, Field(min_length=1, max_length=4096), opaque()]
WaitReady = Annotated[bool, Field(description="Also wait for it to finish ingesting")]


MAX_PAGE = 200  # items a page may hold at most; the text block usually fits fewer
MAX_LINKS = 20  # resource links a page carries, for hosts that show them


def client_of(ctx: Context) -> MuseaiClient:
    return provider_client(ctx, "museai", MuseaiClient)


def video_link(svid: str) -> ResourceLink:
    return ResourceLink(
        type="resource_link", uri=f"museai://videos/{svid}", name=svid, mime_type="application/json"
    )


async def _changed(ctx: Context, *, uris: tuple[str, ...] = (), listing: bool = False) -> None:
    notifier = services(ctx).notifier
    if notifier is None:
        return
    notifier.saw(ctx.session)
    for uri in uris:
        await notifier.resource_updated(uri)
    if listing:
        await notifier.resources_changed()


async def _changed_fid(ctx: Context, fid: str) -> None:
    """A change made by fid: subscribers know the video by svid, so look it up (one free read)."""
    notifier = services(ctx).notifier
    if notifier is None:
        return
    svids = [v.svid for v in await client_of(ctx).list_videos() if v.fid == fid]
    await _changed(ctx, uris=tuple(f"museai://videos/{svid}" for svid in svids), listing=True)


def _watch_ingest(ctx: Context, svid: str) -> None:
    """Tell subscribers when the video finishes ingesting, after this call has returned."""
    client = client_of(ctx)

    async def ingested() -> bool:
        return not (await client.get_video(svid)).ingesting

    services(ctx).watcher.watch(f"museai://videos/{svid}", ingested)


async def _wait_ready(ctx: Context, svid: str, wait_s: float) -> Video:
    """Poll the video until muse.ai stops ingesting it, or the wait budget runs out."""
    svc = services(ctx)
    client = client_of(ctx)
    report = progress_of(ctx)
    deadline = svc.clock.monotonic() + wait_s
    interval = 1.0
    step = 0
    while True:
        video = await client.get_video(svid)
        if not video.ingesting:
            await _changed(ctx, uris=(f"museai://videos/{svid}",))
            return video
        remaining = deadline - svc.clock.monotonic()
        if remaining <= 0:
            _watch_ingest(ctx, svid)
            return video
        step += 1
        await report(step, None, f"muse.ai: {svid} is still ingesting")
        await svc.clock.sleep(min(interval, remaining))
        interval = min(8.0, interval * 1.5)


# -- videos ------------------------------------------------------------------------------------


@toolset.tool(title="Upload a video to muse.ai", read_only=False, open_world=True)
async def museai_upload_video(
    path: LocalPath,
    ctx: Context,
    title: Annotated[str | None, Field(max_length=300)] = None,
    visibility: VisibilityArg | None = None,
    collection: Annotated[
        str | None,
        Field(max_length=32, pattern=r"^[A-Za-z0-9_-]+$"),
        opaque("Collection id (scid from museai_list_collections), not its name; the video is added to it"),
    ] = None,
    wait_ready: WaitReady = False,
    wait_s: WaitS = 45,
) -> Annotated[CallToolResult, Video]:
    """Uploads a local video or audio file to muse.ai with byte progress; returns its svid, fid and URL.
    No per-call charge (it counts against the storage plan); time grows with file size."""
    svc = services(ctx)
    client = client_of(ctx)
    resolved = upload_path(ctx, path)
    if collection:
        await _check_collection(client, collection)
    report = progress_of(ctx)

    async def on_bytes(sent: int, total: int) -> None:
        await report(sent, total, f"muse.ai: uploading {resolved.name} ({sent}/{total} bytes)")

    video = await client.upload_video(
        resolved, svc.files.allowed_dirs, visibility=visibility, collection=collection, on_progress=on_bytes
    )
    if title and video.fid:
        await client.update_video(video.fid, {"title": title})
        video.title = title
    await _changed(ctx, listing=True)
    if video.ingesting:
        video = await _wait_ready(ctx, video.svid, wait_s) if wait_ready else video
        if video.ingesting:
            _watch_ingest(ctx, video.svid)
    state = "ingesting" if video.ingesting else "ready"
    return model_result(
        video, f"muse.ai: uploaded {resolved.name} as {video.svid} ({state})", links=[video_link(video.svid)]
    )


async def _check_collection(client: MuseaiClient, scid: str) -> None:
    """One free read before an upload that may take minutes: an unknown collection is refused first.

    An agent often passes the collection's name; when one is named so, the error gives its id.
    """
    try:
        await client.get_collection(scid)
    except NotFound:
        named = [c.scid for c in await client.list_collections() if c.name == scid and c.scid]
        if named:
            raise InputError(
                f"{scid!r} is the name of collection {', '.join(named)}; pass the id (scid)",
                arguments=("collection",),
                advice="call again with it",
            ) from None
        raise


class VideoList(BaseModel):
    videos: list[Video]
    total: int | None = Field(None, description="Videos on the account")
    next_cursor: str | None = None


VIDEO_COLUMNS = (
    Column("svid", 32),
    Column("title", 40),
    Column("duration", 9),
    Column("visibility", 10),
    Column("ingesting", 9),
)


@toolset.tool(title="List muse.ai videos", read_only=True)
async def museai_list_videos(ctx: Context, cursor: Cursor = None) -> Annotated[CallToolResult, VideoList]:
    """Lists the account's muse.ai videos with id, title, duration, visibility and ingest state. Free."""
    start = offset_of("museai_videos", cursor)
    videos = await client_of(ctx).list_videos()
    window = videos[start : start + MAX_PAGE]
    shown = fit(
        head=lambda n: f"muse.ai: {len(videos)} video(s)" + span(start, n, len(videos)),
        columns=VIDEO_COLUMNS,
        rows=[(v.svid, v.title, v.duration, v.visibility, v.ingesting) for v in window],
        next_cursor=next_offset("museai_videos", start, len(videos)),
    )
    page = window[: shown.count]
    return shown.result(VideoList(videos=page, total=len(videos), next_cursor=shown.next_cursor))


@toolset.tool(title="Get a muse.ai video", read_only=True)
async def museai_get_video(svid: Svid, ctx: Context) -> Annotated[CallToolResult, Video]:
    """Reads a muse.ai video: title, description, duration, size, URL, visibility, ingest state. Free."""
    video = await client_of(ctx).get_video(svid)
    return model_result(
        video, f"muse.ai {svid}: {video.title or ''} · {video.duration or '?'} s", links=[video_link(svid)]
    )


class Updated(BaseModel):
    fid: str
    changed: dict[str, Any]


@toolset.tool(title="Update a muse.ai video", read_only=False, idempotent=True)
async def museai_update_video(
    fid: Fid,
    ctx: Context,
    title: Annotated[str | None, Field(max_length=300)] = None,
    description: Annotated[str | None, Field(max_length=5000)] = None,
    visibility: VisibilityArg | None = None,
    domains: Annotated[
        list[Annotated[str, Field(max_length=253)]] | None,
        Field(max_length=50, description="Only these domains may embed the video"),
    ] = None,
) -> Annotated[CallToolResult, Updated]:
    """Changes a muse.ai video's title, description, visibility or embedding domains; only the fields
    given are sent. Free."""
    changes = {
        k: v
        for k, v in {
            "title": title,
            "description": description,
            "visibility": visibility,
            "domains": domains,
        }.items()
        if v is not None
    }
    if not changes:
        raise InputError(
            "nothing to change: give at least one of them",
            arguments=("title", "description", "visibility", "domains"),
        )
    await client_of(ctx).update_video(fid, changes)
    await _changed_fid(ctx, fid)
    return model_result(
        Updated(fid=fid, changed=changes), f"muse.ai: updated {fid[:12]}… ({', '.join(changes)})"
    )


class Deleted(BaseModel):
    deleted: str


@toolset.tool(title="Delete a muse.ai video", read_only=False, destructive=True, idempotent=True)
async def museai_delete_video(fid: Fid, ctx: Context) -> Annotated[CallToolResult, Deleted]:
    """Deletes a muse.ai video with its subtitles and covers. Free; cannot be undone."""
    await client_of(ctx).delete_video(fid)
    await _changed(ctx, listing=True)
    return model_result(Deleted(deleted=fid), f"muse.ai: deleted video {fid[:12]}…")


@toolset.tool(title="Cut a clip from a muse.ai video", read_only=False, open_world=True)
async def museai_cut_clip(
    svid: Svid,
    start: Annotated[float, Field(ge=0, description="Seconds")],
    end: Annotated[float, Field(gt=0, description="Seconds")],
    ctx: Context,
    wait_ready: WaitReady = False,
    wait_s: WaitS = 45,
) -> Annotated[CallToolResult, Video]:
    """Makes a new muse.ai video from the start–end seconds of another; it ingests for a while before it
    plays. No per-call charge (it counts against the storage plan)."""
    if end <= start:
        raise InputError(f"must be after start ({start:g} s), got {end:g} s", arguments=("end",))
    client = client_of(ctx)
    source = await client.get_video(svid)
    if source.duration is not None and end > source.duration + 0.01:
        raise InputError(
            f"{end:g} s is past the end of {svid}, which lasts {source.duration:g} s", arguments=("end",)
        )
    clip = await client.cut(svid, start, end)
    await _changed(ctx, listing=True)
    if clip.ingesting and wait_ready:
        ready = await _wait_ready(ctx, clip.svid, wait_s)
        # A re-read video no longer says what it was cut from; keep that from the cut's answer.
        clip = ready.model_copy(update={k: getattr(clip, k) for k in ("cut_svid", "cut_start", "cut_end")})
    elif clip.ingesting:
        _watch_ingest(ctx, clip.svid)
    state = "ingesting" if clip.ingesting else "ready"
    return model_result(
        clip,
        f"muse.ai: clip {clip.svid} = {svid} {start:g}–{end:g} s ({state})",
        links=[video_link(clip.svid)],
    )


class CoverSet(BaseModel):
    fid: str
    source: str


@toolset.tool(title="Set a muse.ai video cover", read_only=False, idempotent=True)
async def museai_set_cover(
    fid: Fid,
    ctx: Context,
    time: Annotated[float | None, Field(ge=0, description="Use the frame at this second")] = None,
    image_path: Annotated[str | None, Field(max_length=4096), opaque("Or a local PNG/JPEG path")] = None,
) -> Annotated[CallToolResult, CoverSet]:
    """Sets a muse.ai video's cover from a frame (time in seconds) or a local PNG/JPEG. Free."""
    if (time is None) == (image_path is None):
        raise InputError("give exactly one of them", arguments=("time", "image_path"))
    client = client_of(ctx)
    if time is not None:
        await client.set_cover_time(fid, time)
        source = f"frame at {time:g} s"
    else:
        svc = services(ctx)
        resolved = upload_path(ctx, image_path or "", kinds=("image",), argument="image_path")
        await client.set_cover_image(fid, resolved, svc.files.allowed_dirs)
        source = resolved.name
    await _changed_fid(ctx, fid)
    return model_result(CoverSet(fid=fid, source=source), f"muse.ai: cover set from {source}")


# -- subtitles ---------------------------------------------------------------------------------


class SubtitleRef(BaseModel):
    svid: str
    subtitle_id: str
    name: str


def subtitle_link(svid: str, subtitle_id: str, name: str) -> ResourceLink:
    return ResourceLink(
        type="resource_link",
        uri=f"museai://videos/{svid}/subtitles/{subtitle_id}",
        name=name or subtitle_id,
        mime_type="text/vtt",
    )


@toolset.tool(title="Upload subtitles to muse.ai", read_only=False, open_world=True)
async def museai_upload_subtitles(
    svid: Svid,
    path: LocalPath,
    ctx: Context,
    name: Annotated[
        str | None, Field(max_length=64, pattern=r"^[\w .()-]+$", description="Track name, e.g. English")
    ] = None,
) -> Annotated[CallToolResult, SubtitleRef]:
    """Adds a WebVTT subtitle track from a local .vtt file to a muse.ai video. Free."""
    svc = services(ctx)
    resolved = upload_path(ctx, path, kinds=(), extensions=(".vtt",))
    ref = await client_of(ctx).upload_subtitles(
        svid, resolved, svc.files.allowed_dirs, name=name or resolved.stem
    )
    view = SubtitleRef(svid=svid, subtitle_id=ref["id"], name=ref["name"])
    await _changed(ctx, uris=(f"museai://videos/{svid}",))
    return model_result(
        view,
        f"muse.ai: subtitles {view.subtitle_id} ({view.name}) on {svid}",
        links=[subtitle_link(svid, view.subtitle_id, view.name)],
    )


class SubtitleList(BaseModel):
    svid: str
    tracks: list[SubtitleRef]
    total: int | None = Field(None, description="Tracks the video has")
    next_cursor: str | None = None


@toolset.tool(title="List a muse.ai video's subtitles", read_only=True)
async def museai_list_subtitles(
    svid: Svid, ctx: Context, cursor: Cursor = None
) -> Annotated[CallToolResult, SubtitleList]:
    """Lists the subtitle tracks of a muse.ai video (id and name). Free."""
    start = offset_of("museai_subtitles", cursor)
    tracks = [
        SubtitleRef(svid=svid, subtitle_id=k, name=v)
        for k, v in (await client_of(ctx).list_subtitles(svid)).items()
    ]
    window = tracks[start : start + MAX_PAGE]
    shown = fit(
        head=lambda n: f"muse.ai {svid}: {len(tracks)} subtitle track(s)" + span(start, n, len(tracks)),
        columns=(Column("subtitle_id", 32), Column("name", 40)),
        rows=[(t.subtitle_id, t.name) for t in window],
        next_cursor=next_offset("museai_subtitles", start, len(tracks)),
    )
    view = SubtitleList(
        svid=svid, tracks=window[: shown.count], total=len(tracks), next_cursor=shown.next_cursor
    )
    return shown.result(view)


class SubtitleText(BaseModel):
    svid: str
    subtitle_id: str
    vtt: str = Field(description="The WebVTT text")


@toolset.tool(title="Get muse.ai subtitles", read_only=True)
async def museai_get_subtitles(
    svid: Svid, subtitle_id: SubtitleId, ctx: Context
) -> Annotated[CallToolResult, SubtitleText]:
    """Reads one subtitle track of a muse.ai video as WebVTT. Free."""
    vtt = await client_of(ctx).get_subtitles(svid, subtitle_id)
    return model_result(
        SubtitleText(svid=svid, subtitle_id=subtitle_id, vtt=vtt),
        f"muse.ai {svid}/{subtitle_id}: {len(vtt)} characters of WebVTT",
    )


@toolset.tool(title="Rename muse.ai subtitles", read_only=False, idempotent=True)
async def museai_rename_subtitles(
    svid: Svid,
    subtitle_id: SubtitleId,
    name: Annotated[str, Field(min_length=1, max_length=64)],
    ctx: Context,
) -> Annotated[CallToolResult, SubtitleRef]:
    """Renames a subtitle track of a muse.ai video. Free."""
    await client_of(ctx).rename_subtitles(svid, subtitle_id, name)
    await _changed(ctx, uris=(f"museai://videos/{svid}",))
    return model_result(
        SubtitleRef(svid=svid, subtitle_id=subtitle_id, name=name),
        f"muse.ai: subtitles {subtitle_id} renamed to {name}",
    )


@toolset.tool(title="Delete muse.ai subtitles", read_only=False, destructive=True, idempotent=True)
async def museai_delete_subtitles(
    svid: Svid, subtitle_id: SubtitleId, ctx: Context
) -> Annotated[CallToolResult, Deleted]:
    """Deletes a subtitle track of a muse.ai video. Free; cannot be undone."""
    await client_of(ctx).delete_subtitles(svid, subtitle_id)
    await _changed(ctx, uris=(f"museai://videos/{svid}",))
    return model_result(Deleted(deleted=subtitle_id), f"muse.ai: deleted subtitles {subtitle_id} from {svid}")


# -- collections -------------------------------------------------------------------------------


class CollectionList(BaseModel):
    collections: list[Collection]
    total: int | None = Field(None, description="Collections on the account")
    next_cursor: str | None = None


class CollectionPage(Collection):
    total_videos: int | None = Field(None, description="Videos in the collection; videos holds one page")
    next_cursor: str | None = None


def collection_link(scid: str) -> ResourceLink:
    return ResourceLink(
        type="resource_link", uri=f"museai://collections/{scid}", name=scid, mime_type="application/json"
    )


COLLECTION_COLUMNS = (Column("scid", 32), Column("name", 40), Column("videos", 6), Column("visibility", 10))


@toolset.tool(title="List muse.ai collections", read_only=True)
async def museai_list_collections(
    ctx: Context, cursor: Cursor = None
) -> Annotated[CallToolResult, CollectionList]:
    """Lists the account's muse.ai collections with their videos. Free."""
    start = offset_of("museai_collections", cursor)
    items = await client_of(ctx).list_collections()
    window = items[start : start + MAX_PAGE]
    shown = fit(
        head=lambda n: f"muse.ai: {len(items)} collection(s)" + span(start, n, len(items)),
        columns=COLLECTION_COLUMNS,
        rows=[(c.scid, c.name, len(c.videos), c.visibility) for c in window],
        next_cursor=next_offset("museai_collections", start, len(items)),
    )
    page = window[: shown.count]
    return shown.result(CollectionList(collections=page, total=len(items), next_cursor=shown.next_cursor))


@toolset.tool(title="Get a muse.ai collection", read_only=True)
async def museai_get_collection(
    scid: Scid, ctx: Context, cursor: Cursor = None
) -> Annotated[CallToolResult, CollectionPage]:
    """Reads one muse.ai collection with its videos. Free."""
    start = offset_of("museai_collection", cursor)
    collection = await client_of(ctx).get_collection(scid)
    videos = collection.videos
    window = videos[start : start + MAX_PAGE]
    shown = fit(
        head=lambda n: (
            f"muse.ai collection {scid}: {collection.name} · {len(videos)} video(s)"
            + span(start, n, len(videos))
        ),
        columns=(Column("svid", 32), Column("title", 48), Column("duration", 9)),
        rows=[(v.svid, v.title, v.duration) for v in window],
        next_cursor=next_offset("museai_collection", start, len(videos)),
    )
    view = CollectionPage.model_validate(
        {
            **collection.model_dump(),
            "videos": [v.model_dump() for v in window[: shown.count]],
            "total_videos": len(videos),
            "next_cursor": shown.next_cursor,
        }
    )
    return shown.result(view, links=[collection_link(scid)])


class CreatedCollection(BaseModel):
    scid: str
    name: str
    visibility: str


@toolset.tool(title="Create a muse.ai collection", read_only=False)
async def museai_create_collection(
    name: Annotated[str, Field(min_length=1, max_length=200)],
    ctx: Context,
    visibility: Annotated[
        VisibilityArg,
        Field(description="unlisted: anyone with the link; private: the account only"),
    ] = "public",
) -> Annotated[CallToolResult, CreatedCollection]:
    """Creates a muse.ai collection and returns its id (scid) for museai_upload_video or
    museai_add_to_collection. Free, instant."""
    scid = await client_of(ctx).create_collection(name, visibility)
    await _changed(ctx, listing=True)
    return model_result(
        CreatedCollection(scid=scid, name=name, visibility=visibility),
        f"muse.ai: created collection {scid} ({name})",
        links=[collection_link(scid)],
    )


@toolset.tool(title="Delete a muse.ai collection", read_only=False, destructive=True, idempotent=True)
async def museai_delete_collection(scid: Scid, ctx: Context) -> Annotated[CallToolResult, Deleted]:
    """Deletes a muse.ai collection; its videos stay. Free; cannot be undone."""
    await client_of(ctx).delete_collection(scid)
    await _changed(ctx, listing=True)
    return model_result(Deleted(deleted=scid), f"muse.ai: deleted collection {scid}")


class Membership(BaseModel):
    scid: str
    svid: str
    member: bool


@toolset.tool(title="Add a video to a muse.ai collection", read_only=False, idempotent=True)
async def museai_add_to_collection(
    scid: Scid, svid: Svid, ctx: Context
) -> Annotated[CallToolResult, Membership]:
    """Adds a muse.ai video to a collection. Free."""
    await client_of(ctx).add_to_collection(scid, svid)
    await _changed(ctx, uris=(f"museai://collections/{scid}",))
    return model_result(Membership(scid=scid, svid=svid, member=True), f"muse.ai: {svid} added to {scid}")


@toolset.tool(
    title="Remove a video from a muse.ai collection", read_only=False, destructive=True, idempotent=True
)
async def museai_remove_from_collection(
    scid: Scid, svid: Svid, ctx: Context
) -> Annotated[CallToolResult, Membership]:
    """Removes a video from a muse.ai collection; the video stays. Free."""
    await client_of(ctx).remove_from_collection(scid, svid)
    await _changed(ctx, uris=(f"museai://collections/{scid}",))
    return model_result(
        Membership(scid=scid, svid=svid, member=False), f"muse.ai: {svid} removed from {scid}"
    )


# -- search ------------------------------------------------------------------------------------


class SearchResult(BaseModel):
    query: str
    scope: str
    hits: list[SearchHit]
    total: int | None = Field(None, description="Videos that match")
    next_cursor: str | None = None


MAX_TIMES_SHOWN = 8


@toolset.tool(title="Search inside muse.ai videos", read_only=True)
async def museai_search(
    query: Annotated[str, Field(min_length=1, max_length=500)],
    ctx: Context,
    scope: Literal["owned", "channel", "collection", "video"] = "owned",
    target_id: Annotated[
        str | None,
        Field(max_length=32, pattern=r"^[A-Za-z0-9_-]+$"),
        opaque("Channel id, scid or svid for those scopes"),
    ] = None,
    cursor: Cursor = None,
) -> Annotated[CallToolResult, SearchResult]:
    """Searches inside muse.ai videos; returns the matching videos with the seconds of each match.
    Prefixes pick a modality: s: speech, f: faces, t: on-screen text, o: objects, a: actions, z:
    sounds, n: title, d: description (e.g. "s:moon o:car"); plain words search all. Scope 'owned' is
    the account; the others search public items by target_id. Free."""
    if scope != "owned" and not target_id:
        raise InputError(f"required for scope {scope!r} (the {scope} id)", arguments=("target_id",))
    start = offset_of("museai_search", cursor)
    hits = await client_of(ctx).search(query, scope, target_id)
    window = hits[start : start + MAX_PAGE]
    shown = fit(
        head=lambda n: f"muse.ai search {query[:60]!r}: {len(hits)} video(s)" + span(start, n, len(hits)),
        columns=(Column("svid", 32), Column("matches", 7), Column("at seconds", 60)),
        rows=[(h.svid, len(h.times), _times(h.times)) for h in window],
        next_cursor=next_offset("museai_search", start, len(hits)),
    )
    page = window[: shown.count]
    view = SearchResult(query=query, scope=scope, hits=page, total=len(hits), next_cursor=shown.next_cursor)
    return shown.result(view, links=[video_link(h.svid) for h in page[:MAX_LINKS]])


def _times(times: list[float]) -> str:
    text = ", ".join(f"{t:g}" for t in times[:MAX_TIMES_SHOWN])
    return text + (f" … (+{len(times) - MAX_TIMES_SHOWN})" if len(times) > MAX_TIMES_SHOWN else "")


# -- AI jobs -----------------------------------------------------------------------------------


def _file_args(ctx: Context, path: str, phrase: str | None = None) -> FileJobArgs:
    resolved = upload_path(ctx, path)
    return FileJobArgs(path=str(resolved), file=file_stamp(resolved), phrase=phrase)


async def _run_job(
    ctx: Context, kind: JobKind, args: FileJobArgs, wait_s: float, new_job: bool
) -> CallToolResult:
    client_of(ctx)
    view = await services(ctx).engine.run(
        "museai", OPERATIONS[kind], args, new_job=new_job, wait_s=wait_s, progress=progress_of(ctx)
    )
    return job_result(view, title=f"muse.ai {kind}")


@toolset.tool(title="Transcribe speech with muse.ai", read_only=False)
async def museai_transcribe(
    path: LocalPath, ctx: Context, wait_s: WaitS = 45, new_job: NewJob = False
) -> Annotated[CallToolResult, JobResult[Transcript]]:
    """Transcribes the speech in a local audio or video file. Paid in muse.ai AI credits; takes about the
    audio's length. Kept here though muse.ai deletes it after an hour."""
    return await _run_job(ctx, "speech", _file_args(ctx, path), wait_s, new_job)


class Alignment(BaseModel):
    words: list[AlignedWord]


@toolset.tool(title="Align a transcript with muse.ai", read_only=False)
async def museai_align(
    path: LocalPath,
    phrase: Annotated[
        str, Field(min_length=1, max_length=100_000, description="The words spoken in the file")
    ],
    ctx: Context,
    wait_s: WaitS = 45,
    new_job: NewJob = False,
) -> Annotated[CallToolResult, JobResult[Alignment]]:
    """Aligns a known transcript to a local audio or video file: each word with its start and end second.
    Paid in muse.ai AI credits."""
    return await _run_job(ctx, "align", _file_args(ctx, path, phrase), wait_s, new_job)


@toolset.tool(title="Detect sounds with muse.ai", read_only=False)
async def museai_detect_sounds(
    path: LocalPath, ctx: Context, wait_s: WaitS = 45, new_job: NewJob = False
) -> Annotated[CallToolResult, JobResult[Sounds]]:
    """Finds speech, music, silence, laughter and applause segments (start/end seconds) in a local audio
    or video file. Paid in muse.ai AI credits."""
    return await _run_job(ctx, "sounds", _file_args(ctx, path), wait_s, new_job)


@toolset.tool(title="Detect colors with muse.ai", read_only=False)
async def museai_detect_colors(
    path: LocalPath, ctx: Context, wait_s: WaitS = 45, new_job: NewJob = False
) -> Annotated[CallToolResult, JobResult[Colors]]:
    """Measures the share of each named colour in a local image. Paid in muse.ai AI credits; usually
    seconds."""
    return await _run_job(ctx, "colors", _file_args(ctx, path), wait_s, new_job)


@toolset.tool(title="Detect faces with muse.ai", read_only=False)
async def museai_detect_faces(
    path: LocalPath, ctx: Context, wait_s: WaitS = 45, new_job: NewJob = False
) -> Annotated[CallToolResult, JobResult[Faces]]:
    """Finds faces in a local video, grouped by person, with when (seconds) and where (frame fractions)
    each appears. Paid in muse.ai AI credits."""
    return await _run_job(ctx, "faces", _file_args(ctx, path), wait_s, new_job)


@toolset.tool(title="Detect objects with muse.ai", read_only=False)
async def museai_detect_objects(
    path: LocalPath, ctx: Context, wait_s: WaitS = 45, new_job: NewJob = False
) -> Annotated[CallToolResult, JobResult[ObjectBoxes]]:
    """Finds objects in a local image: each label with its boxes (frame fractions) and confidence. Paid in
    muse.ai AI credits."""
    return await _run_job(ctx, "objects", _file_args(ctx, path), wait_s, new_job)


@toolset.tool(title="Detect text with muse.ai", read_only=False)
async def museai_detect_text(
    path: LocalPath, ctx: Context, wait_s: WaitS = 45, new_job: NewJob = False
) -> Annotated[CallToolResult, JobResult[TextBoxes]]:
    """Reads the words in a local image, each with its boxes (frame fractions). Paid in muse.ai AI
    credits."""
    return await _run_job(ctx, "text", _file_args(ctx, path), wait_s, new_job)


class FacePage(FaceDatabase):
    total: int | None = Field(None, description="People, deleted and ignored faces in all")
    next_cursor: str | None = None


@toolset.tool(title="List the muse.ai face database", read_only=True)
async def museai_list_faces(ctx: Context, cursor: Cursor = None) -> Annotated[CallToolResult, FacePage]:
    """Lists the account's muse.ai face database: detected people (with labels) and deleted or ignored
    faces. Free."""
    start = offset_of("museai_faces", cursor)
    db = await client_of(ctx).faces_db()
    # One sequence over the three lists (people first), so a cursor is one offset into it.
    entries: list[tuple[str, Any]] = [
        *(("person", c) for c in db.detected),
        *(("deleted", f) for f in db.deleted),
        *(("ignored", f) for f in db.ignored),
    ]
    window = entries[start : start + MAX_PAGE]

    def row(kind: str, item: Any) -> tuple[object, ...]:
        if kind == "person":
            return (kind, item.cluster_id, item.label, len(item.faces))
        return (kind, item.face_id, item.fid, 1)

    shown = fit(
        head=lambda n: (
            f"muse.ai faces: {len(db.detected)} people, {len(db.deleted)} deleted, "
            f"{len(db.ignored)} ignored" + span(start, n, len(entries))
        ),
        columns=(Column("kind", 7), Column("id", 64), Column("label or file", 64), Column("faces", 5)),
        rows=[row(k, i) for k, i in window],
        next_cursor=next_offset("museai_faces", start, len(entries)),
    )
    page = window[: shown.count]
    view = FacePage(
        detected=[i for k, i in page if k == "person"],
        deleted=[i for k, i in page if k == "deleted"],
        ignored=[i for k, i in page if k == "ignored"],
        total=len(entries),
        next_cursor=shown.next_cursor,
    )
    return shown.result(view)


class FaceChange(BaseModel):
    model_config = ConfigDict(extra="forbid")

    label: str | None = Field(None, max_length=200, description="Name the person")
    delete: bool | None = None
    ignore: bool | None = None
    purge: bool | None = Field(None, description="Remove permanently")


class FacesModified(BaseModel):
    changed: list[str]


@toolset.tool(title="Update the muse.ai face database", read_only=False, destructive=True, idempotent=True)
async def museai_update_faces(
    changes: Annotated[
        dict[Annotated[str, Field(pattern=r"^[A-Fa-f0-9]{8,128}$"), opaque()], FaceChange],
        Field(min_length=1, max_length=500, description="Face or cluster id → change"),
    ],
    ctx: Context,
) -> Annotated[CallToolResult, FacesModified]:
    """Labels, deletes, ignores or purges faces in the muse.ai face database; purge cannot be undone.
    Free."""
    body = {k: v.model_dump(exclude_none=True) for k, v in changes.items()}
    if not all(body.values()):
        empty = [face for face, change in body.items() if not change]
        raise InputError(
            "each change needs at least one of label, delete, ignore, purge",
            arguments=(f"changes.{empty[0]}",),
        )
    await client_of(ctx).modify_faces(body)
    return model_result(FacesModified(changed=list(body)), f"muse.ai faces: {len(body)} change(s) applied")


class KeyFile(BaseModel):
    key_file: str = Field(description="File (readable only by you) holding the new key")
    key_hint: str


@toolset.tool(title="Create a muse.ai API key", read_only=False)
async def museai_create_api_key(ctx: Context) -> Annotated[CallToolResult, KeyFile]:
    """Creates another muse.ai API key and writes it to a private file (its path is in the result), never
    into the conversation. Free."""
    key = await client_of(ctx).create_key()
    path = write_key_file(services(ctx).settings.home, "museai", key)
    return model_result(
        KeyFile(key_file=str(path), key_hint="…" + key[-4:]), f"muse.ai: new key saved to {path}"
    )


# -- beyond the API: subtitles from speech ------------------------------------------------------


@toolset.tool(title="Subtitle a muse.ai video automatically", read_only=False)
async def museai_auto_subtitles(
    svid: Svid,
    ctx: Context,
    name: Annotated[
        str,
        Field(
            min_length=1,
            max_length=64,
            pattern=r"^[\w .()-]+$",
            description="Track name, usually its language, e.g. 'English'",
        ),
    ] = "Auto",
    wait_s: WaitS = 45,
) -> Annotated[CallToolResult, AutoSubtitles]:
    """Subtitles a muse.ai video: transcribes and aligns its audio, then uploads the WebVTT cues as a new
    track. muse.ai takes no language setting: the words come in whatever language it recognises. Paid
    from muse.ai AI credits (two jobs); takes about the video's length, and calling again resumes
    without paying twice."""
    svc = services(ctx)
    workflow = SubtitleWorkflow(
        client=client_of(ctx),
        engine=svc.engine,
        downloads=svc.files.downloads,
        output_dir=svc.files.output_dir,
        clock=svc.clock,
        max_download_bytes=svc.files.max_download_bytes,
        outputs=svc.files.outputs,
    )
    view = await workflow.run(svid, name=name, wait_s=wait_s, progress=progress_of(ctx))
    if view.status == "running":
        view.note = "the speech jobs are still running; call museai_auto_subtitles again to resume them"
    if view.status == "failed" and view.error is not None:
        error = view.error
        # Told in the one error shape, with the workflow's own result (its jobs, their cost) kept.
        result = model_result(view, f"[{error.error_class}] {error.message}")
        result.is_error = True
        meta = error.model_dump(mode="json", by_alias=True)
        if error.error_class == "invalid_input":
            meta["arguments"] = ["svid"]  # the video itself cannot be subtitled
        result.meta = {ERROR_META_KEY: meta}
        return result
    if view.status != "completed":
        return model_result(view, f"muse.ai auto-subtitles for {svid}: {view.status} · {view.note}")
    # A completed run always names its track; the asserts tell the type checker so.
    assert view.subtitle_id is not None
    assert view.name is not None
    await _changed(ctx, uris=(f"museai://videos/{svid}",))
    return model_result(
        view,
        f"muse.ai: subtitles {view.subtitle_id} ({view.cues} cues) added to {svid}",
        links=[subtitle_link(svid, view.subtitle_id, view.name)],
    )
