"""Mixpeek tools: index a video or image (URL or local file), follow the task, read features, search."""

from __future__ import annotations

import json
from typing import Annotated, Any

from mcp.server.mcpserver import Context
from mcp_types import CallToolResult, ResourceLink
from pydantic import BaseModel, Field

from mediamux.errors import InputError
from mediamux.jobs.mixpeek import IndexArgs, IndexedAsset, IndexOperation
from mediamux.jobs.models import JobResult
from mediamux.providers.errors import ProviderError
from mediamux.providers.mixpeek import (
    ID_RE,
    KEY_PATTERN,
    AssetFeatures,
    Filters,
    GroupBy,
    ImageSettings,
    MixpeekClient,
    SearchModel,
    SearchResults,
    SearchType,
    Sort,
    VideoSetting,
    check_url,
)
from mediamux.providers.status import normalize_status
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

toolset = Toolset(
    id="mixpeek",
    title="Mixpeek",
    description="Multimodal indexing of videos and images (transcripts, descriptions, on-screen text) and "
    "semantic or full-text search over them with metadata filters.",
)

MAX_METADATA_BYTES = 64 * 1024

CollectionId = Annotated[
    str,
    Field(
        min_length=1,
        max_length=200,
        pattern=r"^[^\x00-\x1f\x7f]+$",
        description="Collection name, e.g. 'quickstart'; created on first use",
    ),
]
TaskId = Annotated[
    str, Field(min_length=1, max_length=200, pattern=ID_RE.pattern, description="Mixpeek task id")
]
AssetId = Annotated[
    str, Field(min_length=1, max_length=200, pattern=ID_RE.pattern, description="Mixpeek asset id")
]
LocalPath = Annotated[
    str, Field(min_length=1, max_length=4096, description="Local video or image inside the allowed folders")
]
Metadata = Annotated[
    dict[str, Any] | None,
    Field(
        description='Key/values stored with the asset, e.g. {"hello": "world"}; search filters reach them as '
        "metadata.<key>"
    ),
]
VideoSettings = Annotated[
    list[VideoSetting] | None,
    Field(
        min_length=1,
        max_length=10,
        description='Extractors per video, each with its own segment length, e.g. [{"interval_sec": 10, '
        '"transcribe": {}, "describe": {"prompt": "..."}}]; unset: Mixpeek\'s defaults',
    ),
]
ImageSettingsArg = Annotated[
    ImageSettings | None, Field(description="Extractors for an image; unset: Mixpeek's defaults")
]
PreventDuplicate = Annotated[
    bool | None,
    Field(description="Ask Mixpeek to return the existing asset instead of indexing the same media again"),
]


def client_of(ctx: Context) -> MixpeekClient:
    return provider_client(ctx, "mixpeek", MixpeekClient)


def asset_link(asset_id: str) -> ResourceLink:
    return ResourceLink(
        type="resource_link", uri=f"mixpeek://assets/{asset_id}", name=asset_id, mime_type="application/json"
    )


# -- indexing ----------------------------------------------------------------------------------


def _index_args(
    collection_id: str,
    metadata: dict[str, Any] | None,
    video_settings: list[VideoSetting] | None,
    image_settings: ImageSettings | None,
    prevent_duplicate: bool | None,
    **source: str,
) -> IndexArgs:
    """Journal arguments: only what the caller set, so identical requests share one duplicate key."""
    if metadata is not None and len(json.dumps(metadata, default=str)) > MAX_METADATA_BYTES:
        raise InputError(
            f"metadata is larger than {MAX_METADATA_BYTES // 1024} KiB; keep it to short key/values"
        )
    return IndexArgs(
        collection_id=collection_id.strip(),
        metadata=metadata,
        video_settings=video_settings or None,
        image_settings=image_settings,
        prevent_duplicate=prevent_duplicate,
        **source,
    )


async def _run_index(
    ctx: Context, operation: IndexOperation, args: IndexArgs, wait_s: float, new_job: bool
) -> CallToolResult:
    client_of(ctx)
    view = await services(ctx).engine.run(
        "mixpeek", operation, args, new_job=new_job, wait_s=wait_s, progress=progress_of(ctx)
    )
    result = job_result(view, title=f"Mixpeek {operation}")
    asset_id = (view.result or {}).get("asset_id") if isinstance(view.result, dict) else None
    if asset_id:
        result.content.append(asset_link(asset_id))
    return result


@toolset.tool(title="Index a URL with Mixpeek", read_only=False, open_world=True)
async def mixpeek_index_url(
    url: Annotated[
        str,
        Field(
            min_length=8,
            max_length=4096,
            pattern=r"^[Hh][Tt][Tt][Pp][Ss]?://\S+$",
            description="Public http(s) URL of the video or image; Mixpeek downloads it",
        ),
    ],
    collection_id: CollectionId,
    ctx: Context,
    metadata: Metadata = None,
    video_settings: VideoSettings = None,
    image_settings: ImageSettingsArg = None,
    prevent_duplicate: PreventDuplicate = None,
    wait_s: WaitS = 45,
    new_job: NewJob = False,
) -> Annotated[CallToolResult, JobResult[IndexedAsset]]:
    """Indexes a video or image URL with Mixpeek (segments with transcript, description, on-screen text,
    embeddings) and waits for the task: returns the asset id and a summary of its features. Paid from the
    Mixpeek plan's credits; Mixpeek reports no per-request charge, so cost stays empty. Takes about as
    long as the video; past wait_s it returns a job_id for jobs_wait. An identical call within the
    duplicate window returns the earlier job."""
    args = _index_args(
        collection_id, metadata, video_settings, image_settings, prevent_duplicate, url=check_url(url)
    )
    return await _run_index(ctx, "index_url", args, wait_s, new_job)


@toolset.tool(title="Index a local file with Mixpeek", read_only=False, open_world=True)
async def mixpeek_index_file(
    path: LocalPath,
    collection_id: CollectionId,
    ctx: Context,
    metadata: Metadata = None,
    video_settings: VideoSettings = None,
    image_settings: ImageSettingsArg = None,
    prevent_duplicate: PreventDuplicate = None,
    wait_s: WaitS = 45,
    new_job: NewJob = False,
) -> Annotated[CallToolResult, JobResult[IndexedAsset]]:
    """Uploads a local video or image to Mixpeek (streamed, with byte progress) and indexes it like
    mixpeek_index_url, returning the asset id and a summary of its features. Paid from the Mixpeek
    plan's credits; no per-request charge is reported. Upload time grows with file size (2 GB at most); past
    wait_s it returns a job_id for jobs_wait."""
    resolved = upload_path(ctx, path, kinds=("video", "image"))
    args = _index_args(
        collection_id,
        metadata,
        video_settings,
        image_settings,
        prevent_duplicate,
        path=str(resolved),
        file=file_stamp(resolved),
    )
    return await _run_index(ctx, "index_file", args, wait_s, new_job)


# -- tasks -------------------------------------------------------------------------------------


class TaskView(BaseModel):
    task_id: str
    status: str = Field(description="queued | running | completed | failed | cancelled, or the raw word")
    provider_status: str | None = Field(
        None, description="INITIALIZING, DOWNLOADING, PROCESSING, DONE or FAILED"
    )
    asset_id: str | None = None
    error: str | None = None
    job_id: str | None = Field(None, description="The mediamux job that submitted it, if this server did")


def _task_view(
    ctx: Context,
    client: MixpeekClient,
    task_id: str,
    raw_status: str | None,
    asset_id: str | None,
    error: str | None,
) -> TaskView:
    job = services(ctx).journal.find_by_provider_id("mixpeek", task_id)
    return TaskView(
        task_id=task_id,
        status=normalize_status(raw_status),
        provider_status=raw_status,
        asset_id=asset_id,
        error=client.scrub(error) if error else None,
        job_id=job.job_id if job else None,
    )


@toolset.tool(title="Get a Mixpeek task", read_only=True)
async def mixpeek_get_task(task_id: TaskId, ctx: Context) -> Annotated[CallToolResult, TaskView]:
    """Reads the status of one Mixpeek indexing task (INITIALIZING, DOWNLOADING, PROCESSING, DONE or
    FAILED), its asset id and failure reason. Free; returns at once. For tasks started here, jobs_wait
    also waits and summarises the features."""
    client = client_of(ctx)
    task = await client.get_task(task_id)
    view = _task_view(ctx, client, task_id, task.status, task.asset_id, task.error_message)
    links = [asset_link(view.asset_id)] if view.asset_id and view.status == "completed" else []
    return model_result(view, f"Mixpeek task {task_id}: {view.provider_status or view.status}", links=links)


class CancelView(TaskView):
    message: str | None = Field(None, description="Mixpeek's answer to the cancellation")


@toolset.tool(title="Cancel a Mixpeek task", read_only=False, destructive=True, idempotent=True)
async def mixpeek_cancel_task(task_id: TaskId, ctx: Context) -> Annotated[CallToolResult, CancelView]:
    """Stops a running Mixpeek indexing task; the work done so far is lost and cannot be resumed. Free;
    returns at once with the task's status afterwards (a finished task is left as it is)."""
    client = client_of(ctx)
    answer = await client.cancel_task(task_id)
    status: str | None = None
    asset_id = error = None
    try:
        task = await client.get_task(task_id)
        status, asset_id, error = task.status, task.asset_id, task.error_message
    except ProviderError:
        pass  # the kill was accepted; a task that is gone afterwards has nothing more to report
    base = _task_view(ctx, client, task_id, status, asset_id, error)
    message = answer.get("message")
    view = CancelView(
        **base.model_dump(), message=client.scrub(str(message)) if message is not None else None
    )
    return model_result(
        view, f"Mixpeek task {task_id}: cancel requested · now {view.provider_status or 'unknown'}"
    )


# -- features and search -----------------------------------------------------------------------


@toolset.tool(title="Get a Mixpeek asset's features", read_only=True)
async def mixpeek_get_asset_features(
    asset_id: AssetId,
    ctx: Context,
    page: Annotated[int, Field(ge=1, le=10_000)] = 1,
    page_size: Annotated[int, Field(ge=1, le=100)] = 10,
) -> Annotated[CallToolResult, AssetFeatures]:
    """Reads the features Mixpeek extracted from one asset, a page at a time: per segment its start and
    end seconds, transcription, description, on-screen text and JSON output (either documented response
    shape is accepted). Free; returns at once. Empty until the indexing task is DONE."""
    features = await client_of(ctx).get_asset_features(asset_id, page=page, page_size=page_size)
    pages = features.pagination
    where = (
        f"page {pages.page or page} of {pages.total_pages}" if pages and pages.total_pages else f"page {page}"
    )
    return model_result(
        features,
        f"Mixpeek asset {asset_id}: {len(features.features)} segment(s), {where}",
        links=[asset_link(asset_id)],
    )


class SearchView(SearchResults):
    query: str
    search_type: str


@toolset.tool(title="Search Mixpeek collections", read_only=True)
async def mixpeek_search(
    query: Annotated[str, Field(min_length=1, max_length=2000, description="What to look for, in words")],
    collection_ids: Annotated[list[CollectionId], Field(min_length=1, max_length=50)],
    ctx: Context,
    filters: Annotated[
        Filters | None,
        Field(
            description='Conditions on indexed fields, e.g. {"AND": [{"key": "metadata.hello", "operator": "eq", '
            '"value": "world"}]}; groups AND / OR / NOR nest'
        ),
    ] = None,
    model_id: SearchModel | None = None,
    search_type: Annotated[
        SearchType, Field(description="semantic: closest in meaning; fulltext: the words themselves")
    ] = "semantic",
    group_by: GroupBy | None = None,
    sort: Annotated[Sort | None, Field(description="Order by a field instead of by score")] = None,
    select: Annotated[
        list[Annotated[str, Field(max_length=200, pattern=KEY_PATTERN)]] | None,
        Field(max_length=50, description="Keep only these fields (dot notation) in each result"),
    ] = None,
    page_size: Annotated[int | None, Field(ge=1, le=100)] = None,
    offset_position: Annotated[
        int | None, Field(ge=0, description="Results to skip, for the next page (not with group_by)")
    ] = None,
) -> Annotated[CallToolResult, SearchView]:
    """Searches indexed Mixpeek collections for video segments and images matching a text query, by
    meaning (semantic) or by the words in transcripts, descriptions and on-screen text (fulltext),
    optionally filtered on metadata and other fields. Returns scored segments with asset ids and
    seconds. No per-call charge is documented; returns at once."""
    if group_by is not None and offset_position is not None:
        raise InputError("offset_position does not work with group_by; page grouped results with page_size")
    found = await client_of(ctx).search(
        query,
        collection_ids,
        filters=filters,
        model_id=model_id,
        search_type=search_type,
        group_by=group_by,
        sort=sort,
        select=select,
        page_size=page_size,
        offset_position=offset_position,
    )
    view = SearchView(query=query, search_type=search_type, **found.model_dump())
    hits = list(view.results) + [h for g in view.groups or [] for h in g.features]
    assets = list(dict.fromkeys(h.asset_id for h in hits if h.asset_id))
    count = f"{len(view.groups)} group(s)" if view.groups is not None else f"{len(view.results)} result(s)"
    return model_result(
        view, f"Mixpeek {search_type} search {query!r}: {count}", links=[asset_link(a) for a in assets[:10]]
    )
