"""Mixpeek tools: index a video (URL or local file), follow the task, read the segments, search.

The same six tools speak to whichever API generation ``MIXPEEK_API_VERSION`` configures (the live v1 API
by default, the v0 quickstart API on request); their arguments and answers do not change with it.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from mcp.server.mcpserver import Context
from mcp_types import CallToolResult, ResourceLink
from pydantic import Field

from mediamux.errors import InputError
from mediamux.jobs.mixpeek import (
    ALL_FEATURES,
    DEFAULT_SEGMENT_S,
    Feature,
    IndexArgs,
    IndexedAsset,
    IndexOperation,
    Segment,
)
from mediamux.jobs.models import JobResult
from mediamux.providers.mixpeek import ID_RE, MixpeekClient, check_url
from mediamux.providers.mixpeek_v1 import COLLECTION_NAME_RE, MixpeekV1Client
from mediamux.tools.base import (
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
)
from mediamux.tools.mixpeek_views import (
    AssetDocuments,
    CancelView,
    MixpeekApi,
    SearchType,
    SearchView,
    TaskView,
    cancel_view,
    documents_view,
    generation,
    search_view,
    task_view,
)
from mediamux.tools.pages import Column, fit, seconds
from mediamux.tools.schemas import opaque

toolset = Toolset(
    id="mixpeek",
    title="Mixpeek",
    description="index videos; search their segments by meaning or words",
    mark=("M8 1l7 7-7 7-7-7z", "#16a34a"),  # a facet: indexed segments
)

MAX_METADATA_BYTES = 64 * 1024
# Checked in the tool rather than stated in the schema: every token of a tool's definition is paid for
# in each conversation that lists it.
MAX_URL_CHARS = 4096

CollectionId = Annotated[str, Field(pattern=COLLECTION_NAME_RE.pattern)]
TaskId = Annotated[str, Field(max_length=200, pattern=ID_RE.pattern), opaque()]
Metadata = Annotated[dict[str, Any], Field(description="Filterable as metadata.<key>")]
# Defaults stand for "the collection's own" on an existing collection (its extractor is fixed when it is
# created), so they are left out of the journaled arguments and only a changed value is checked against it.
Features = Annotated[list[Feature], Field(description="Fixed per collection")]
SegmentS = Annotated[int, Field(ge=5, le=119, description="Seconds per segment, also fixed")]


def client_of(ctx: Context) -> MixpeekApi:
    client = provider_client(ctx, "mixpeek", object)
    if not isinstance(client, MixpeekClient | MixpeekV1Client):
        raise TypeError(f"mixpeek client is a {type(client).__name__}")
    return client


def asset_link(asset_id: str) -> ResourceLink:
    return ResourceLink(
        type="resource_link", uri=f"mixpeek://assets/{asset_id}", name=asset_id, mime_type="application/json"
    )


# -- indexing ----------------------------------------------------------------------------------


def _index_args(
    collection_id: str, metadata: dict[str, Any], features: list[Feature], segment_s: int, **source: str
) -> IndexArgs:
    """Journal arguments: only what the caller set, so identical requests share one duplicate key."""
    if len(json.dumps(metadata, default=str)) > MAX_METADATA_BYTES:
        raise InputError(
            f"metadata is larger than {MAX_METADATA_BYTES // 1024} KiB; keep it to short key/values"
        )
    if not features:
        raise InputError("features needs at least one of transcription, description, ocr, embedding")
    chosen = sorted(set(features))
    return IndexArgs(
        collection_id=collection_id,
        metadata=metadata or None,
        features=None if chosen == sorted(ALL_FEATURES) else chosen,
        segment_s=None if segment_s == DEFAULT_SEGMENT_S else segment_s,
        **source,
    )


async def _run_index(
    ctx: Context, operation: IndexOperation, args: IndexArgs, wait_s: float, new_job: bool
) -> CallToolResult:
    view = await services(ctx).engine.run(
        "mixpeek", operation, args, new_job=new_job, wait_s=wait_s, progress=progress_of(ctx)
    )
    result = job_result(view, title=f"Mixpeek {operation}")
    indexed = IndexedAsset.model_validate(view.result) if isinstance(view.result, dict) else None
    if indexed is not None and indexed.asset_id and indexed.documents is not None:
        result.content.append(asset_link(indexed.asset_id))
    return result


@toolset.tool(title="Index a video URL with Mixpeek", read_only=False, open_world=True)
async def mixpeek_index_url(
    url: Annotated[str, Field(description="Public video URL")],
    collection_id: CollectionId,
    ctx: Context,
    metadata: Metadata = {},  # noqa: B006 - validated into a fresh dict per call, never mutated
    features: Features = list(ALL_FEATURES),  # noqa: B006 - likewise
    segment_s: SegmentS = DEFAULT_SEGMENT_S,
    wait_s: WaitS = 45,
    new_job: NewJob = False,
) -> Annotated[CallToolResult, JobResult[IndexedAsset]]:
    """Indexes a video URL into a Mixpeek collection (created if new) and returns the object id and a
    segment summary. Paid in Mixpeek credits; takes about the video's length."""
    if len(url) > MAX_URL_CHARS:
        raise InputError(f"url is longer than {MAX_URL_CHARS} characters")
    args = _index_args(collection_id, metadata, features, segment_s, url=check_url(url))
    client_of(ctx)
    return await _run_index(ctx, "index_url", args, wait_s, new_job)


@toolset.tool(title="Index a local video file with Mixpeek", read_only=False, open_world=True)
async def mixpeek_index_file(
    path: Annotated[str, Field(min_length=1, max_length=4096), opaque()],
    collection_id: CollectionId,
    ctx: Context,
    metadata: Metadata = {},  # noqa: B006 - validated into a fresh dict per call, never mutated
    features: Features = list(ALL_FEATURES),  # noqa: B006 - likewise
    segment_s: SegmentS = DEFAULT_SEGMENT_S,
    wait_s: WaitS = 45,
    new_job: NewJob = False,
) -> Annotated[CallToolResult, JobResult[IndexedAsset]]:
    """Uploads a local video (streamed, with progress) and indexes it like mixpeek_index_url. Paid in
    Mixpeek credits."""
    kinds = ("video",) if generation(client_of(ctx)) == "v1" else ("video", "image")
    resolved = upload_path(ctx, path, kinds=kinds)
    if resolved.stat().st_size == 0:
        raise InputError(f"{resolved.name} is empty; there is nothing to index")
    args = _index_args(
        collection_id, metadata, features, segment_s, path=str(resolved), file=file_stamp(resolved)
    )
    return await _run_index(ctx, "index_file", args, wait_s, new_job)


# -- tasks -------------------------------------------------------------------------------------


@toolset.tool(title="Get a Mixpeek task", read_only=True)
async def mixpeek_get_task(task_id: TaskId, ctx: Context) -> Annotated[CallToolResult, TaskView]:
    """Reads a Mixpeek indexing task: status, object id, failure reason. Free, instant."""
    view = await task_view(client_of(ctx), task_id, services(ctx).journal)
    links = [asset_link(view.asset_id)] if view.asset_id and view.status == "completed" else []
    return model_result(view, f"Mixpeek task {task_id}: {view.provider_status or view.status}", links=links)


@toolset.tool(title="Cancel a Mixpeek task", read_only=False, destructive=True, idempotent=True)
async def mixpeek_cancel_task(task_id: TaskId, ctx: Context) -> Annotated[CallToolResult, CancelView]:
    """Stops a running Mixpeek indexing task, losing the work done; a finished task is left as it is.
    Free; returns the status after."""
    view = await cancel_view(client_of(ctx), task_id, services(ctx).journal)
    return model_result(
        view, f"Mixpeek task {task_id}: cancel requested · now {view.provider_status or 'unknown'}"
    )


# -- segments and search -----------------------------------------------------------------------

SEGMENT_COLUMNS = (
    Column("time", 14),
    Column("transcription", 48),
    Column("description", 40),
    Column("on screen", 24),
)
HIT_COLUMNS = (Column("score", 6), Column("object", 64), *SEGMENT_COLUMNS)


def segment_row(segment: Segment) -> tuple[object, ...]:
    return (
        seconds(segment.start_time, segment.end_time),
        segment.transcription,
        segment.description,
        segment.ocr_text,
    )


def next_page_line(page: str | None) -> str | None:
    return f"more: call again with page={page}" if page else None


def cut_note(shown: int, total: int) -> str:
    return (
        f"rows {shown + 1}–{total} of this page: in structuredContent only (no room here); "
        f"page_size={shown} shows them as text"
    )


@toolset.tool(title="Get a Mixpeek video's segments", read_only=True)
async def mixpeek_get_asset_features(
    asset_id: Annotated[str, Field(max_length=200, pattern=ID_RE.pattern), opaque("Object (v0: asset) id")],
    ctx: Context,
    page: Annotated[int, Field(ge=1, le=10_000)] = 1,
    page_size: Annotated[int, Field(ge=1, le=100)] = 10,
) -> Annotated[CallToolResult, AssetDocuments]:
    """Reads a page of the segments Mixpeek extracted from an indexed video: seconds, transcription,
    description, on-screen text. Free; empty until indexed."""
    found = await documents_view(client_of(ctx), asset_id, page, page_size)
    found.next_page = found.page + 1 if found.page < found.total_pages else None
    shown = fit(
        head=lambda n: (
            f"Mixpeek {asset_id}: {len(found.segments)} of {found.total} segment(s), "
            f"page {found.page}/{found.total_pages}"
        ),
        columns=SEGMENT_COLUMNS,
        rows=[segment_row(s) for s in found.segments],
        next_cursor=lambda n: str(found.next_page) if found.next_page else None,
        keep_all=True,
        more=next_page_line,
        cut_note=cut_note,
    )
    return shown.result(found, links=[asset_link(asset_id)])


@toolset.tool(title="Search Mixpeek collections", read_only=True)
async def mixpeek_search(
    query: Annotated[str, Field(min_length=1, max_length=2000)],
    collection_ids: Annotated[list[Annotated[CollectionId, opaque()]], Field(min_length=1, max_length=20)],
    ctx: Context,
    filters: Annotated[
        dict[str, Any] | None,
        Field(
            description='e.g. {"AND": [{"field": "metadata.lang", "operator": "eq", "value": "en"}]}; '
            "AND/OR/NOT nest; operators eq ne gt lt gte lte in nin contains exists text"
        ),
    ] = None,
    search_type: Annotated[
        SearchType, Field(description="semantic: by meaning; fulltext: the words")
    ] = "semantic",
    page: Annotated[int, Field(ge=1, le=1000)] = 1,
    page_size: Annotated[int, Field(ge=1, le=100)] = 10,
) -> Annotated[CallToolResult, SearchView]:
    """Searches Mixpeek collections for video segments matching a query, by meaning or by the words in
    transcripts, descriptions and on-screen text, optionally filtered; returns scored segments with
    object ids and seconds. Free."""
    found = await search_view(
        client_of(ctx),
        query,
        collection_ids,
        filters=filters,
        search_type=search_type,
        page=page,
        page_size=page_size,
    )
    assets = list(dict.fromkeys(h.asset_id for h in found.results if h.asset_id))
    # A full page may have a successor. Mixpeek v1's total counts only the candidates it ranked for the
    # pages asked so far, so it is not an end: only a short page is.
    full = len(found.results) == page_size and (found.total is None or found.total >= page * page_size)
    found.next_page = page + 1 if full else None
    shown = fit(
        head=lambda n: (
            f"Mixpeek {search_type} search {query[:60]!r}: {len(found.results)} result(s)"
            + (f" of {found.total}" if found.total is not None else "")
            + (f", page {page}" if page > 1 or found.next_page else "")
        ),
        columns=HIT_COLUMNS,
        rows=[(h.score, h.asset_id, *segment_row(h)) for h in found.results],
        next_cursor=lambda n: str(found.next_page) if found.next_page else None,
        keep_all=True,
        more=next_page_line,
        cut_note=cut_note,
        notes=[
            *(
                [f"no such collection(s): {', '.join(found.missing_collections)}"]
                if found.missing_collections
                else []
            ),
            *([f"note: {found.note}"] if found.note else []),
        ],
    )
    return shown.result(found, links=[asset_link(a) for a in assets[:10]])
