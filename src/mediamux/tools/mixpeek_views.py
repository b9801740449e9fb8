"""What the Mixpeek tools answer, the same whichever API generation is configured.

Each reader takes the configured client (v0 quickstart or v1) and shapes its answer into one model, so
the tool catalog and the resource do not depend on configuration. The tools and ``mixpeek://assets/{id}``
both read through here.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import BaseModel, Field

from mediamux.jobs.backend import JournalBackend
from mediamux.jobs.mixpeek import IndexedAsset, Segment
from mediamux.providers.errors import NotFound, ProviderError
from mediamux.providers.mixpeek import Filters, MixpeekClient
from mediamux.providers.mixpeek_filters import parse_filters
from mediamux.providers.mixpeek_v1 import BatchInfo, Document, MixpeekV1Client, TaskInfo
from mediamux.providers.status import normalize_status

MixpeekApi = MixpeekClient | MixpeekV1Client
SearchType = Literal["semantic", "fulltext"]
DONE = ("COMPLETED", "COMPLETED_WITH_ERRORS")


def generation(client: MixpeekApi) -> Literal["v0", "v1"]:
    return "v1" if isinstance(client, MixpeekV1Client) else "v0"


# -- tasks ---------------------------------------------------------------------------------------


class TaskView(BaseModel):
    task_id: str
    status: str = Field(
        description="queued | running | completed | partial | failed | cancelled, or the raw word"
    )
    provider_status: str | None = Field(None, description="Mixpeek's own status word")
    asset_id: str | None = Field(None, description="The indexed object (v0: asset)")
    batch_id: str | None = Field(None, description="v1: the batch the task processes")
    documents_ready: bool | None = Field(None, description="v1: the documents can be searched")
    error: str | None = None
    job_id: str | None = Field(None, description="The mediamux job that submitted it, if this server did")
    note: str | None = None


class CancelView(TaskView):
    message: str | None = Field(None, description="Mixpeek's answer to the cancellation")


async def task_view(client: MixpeekApi, task_id: str, journal: JournalBackend) -> TaskView:
    job = journal.find_by_provider_id("mixpeek", task_id)
    job_id = job.job_id if job else None
    if isinstance(client, MixpeekClient):
        found = await client.get_task(task_id)
        error = found.error_message
        return TaskView(
            task_id=task_id,
            status=normalize_status(found.status),
            provider_status=found.status,
            asset_id=found.asset_id,
            error=client.scrub(error) if error else None,
            job_id=job_id,
        )
    known = IndexedAsset.model_validate(job.result) if job is not None and job.result else None
    try:
        info = await client.get_task(task_id)
    except NotFound as exc:
        if known is None or not (known.bucket_id and known.batch_id):
            exc.message = exc.summary + "; Mixpeek keeps tasks about 24 h, then only their batch"
            raise
        expired = await client.get_batch(known.bucket_id, known.batch_id, "get_task")
        view = _v1_view(client, task_id, None, expired, known, job_id)
        view.note = "the task record has expired (Mixpeek keeps tasks about 24 h); this is its batch's status"
        return view
    batch_id = info.batch_id or (known.batch_id if known else None)
    bucket_id = info.bucket_id or (known.bucket_id if known else None)
    batch: BatchInfo | None = None
    if info.status.upper() in DONE and batch_id and bucket_id:
        batch = await client.get_batch(bucket_id, batch_id, "get_task")
    return _v1_view(client, task_id, info, batch, known, job_id, batch_id)


def _v1_view(
    client: MixpeekV1Client,
    task_id: str,
    task: TaskInfo | None,
    batch: BatchInfo | None,
    known: IndexedAsset | None,
    job_id: str | None,
    batch_id: str | None = None,
) -> TaskView:
    word = (task.status if task is not None else batch.status if batch is not None else "UNKNOWN").upper()
    error = (task.error_message if task is not None else None) or (
        batch.failure if batch is not None else None
    )
    objects = batch.object_ids if batch is not None and batch.object_ids else []
    return TaskView(
        task_id=task_id,
        status="partial" if word == "COMPLETED_WITH_ERRORS" else normalize_status(word),
        provider_status=word,
        asset_id=(known.asset_id if known else None) or (objects[0] if objects else None),
        batch_id=(batch.batch_id if batch is not None else None)
        or batch_id
        or (known.batch_id if known else None),
        documents_ready=batch.documents_resolvable if batch is not None else None,
        error=client.scrub(error) if error and word not in DONE else None,
        job_id=job_id,
    )


async def cancel_view(client: MixpeekApi, task_id: str, journal: JournalBackend) -> CancelView:
    answer = await client.cancel_task(task_id)
    try:
        view = await task_view(client, task_id, journal)
    except ProviderError:
        # The kill was accepted; a task that is gone afterwards has nothing more to report.
        job = journal.find_by_provider_id("mixpeek", task_id)
        view = TaskView(task_id=task_id, status="unknown", job_id=job.job_id if job else None)
    message = answer.get("message")
    return CancelView(
        **view.model_dump(), message=client.scrub(str(message)) if message is not None else None
    )


# -- documents -----------------------------------------------------------------------------------


class AssetSegment(Segment):
    document_id: str | None = Field(None, description="v1 document id (v0: feature id)")
    thumbnail_url: str | None = None
    metadata: dict[str, Any] | None = None


class AssetDocuments(BaseModel):
    asset_id: str
    total: int = Field(description="Segments Mixpeek holds for it")
    page: int
    page_size: int
    total_pages: int
    segments: list[AssetSegment] = Field(default_factory=list, description="In time order")
    next_page: int | None = Field(None, description="The page to ask for next; null on the last")


async def documents_view(client: MixpeekApi, asset_id: str, page: int, page_size: int) -> AssetDocuments:
    if isinstance(client, MixpeekV1Client):
        found = await client.object_documents(asset_id)
        items = [_segment_of(d) for d in found.documents]
        return _paged(asset_id, items, page, page_size, max(found.total, len(items)))
    features = await client.get_asset_features(asset_id, page=page, page_size=page_size)
    items = [AssetSegment.of(f, document_id=f.feature_id, metadata=f.metadata) for f in features.features]
    paging = features.pagination
    if paging is None:  # the unpaged grouped shape: every feature at once
        return _paged(asset_id, items, page, page_size, len(items))
    total = paging.total if paging.total is not None else len(items)
    return AssetDocuments(
        asset_id=asset_id,
        total=total,
        page=paging.page or page,
        page_size=paging.page_size or page_size,
        total_pages=paging.total_pages if paging.total_pages is not None else math.ceil(total / page_size),
        segments=items,
    )


def _segment_of(doc: Document) -> AssetSegment:
    return AssetSegment.of(
        doc, document_id=doc.document_id, thumbnail_url=doc.thumbnail_url, metadata=doc.metadata
    )


def _paged(asset_id: str, items: list[AssetSegment], page: int, page_size: int, total: int) -> AssetDocuments:
    start = (page - 1) * page_size
    return AssetDocuments(
        asset_id=asset_id,
        total=total,
        page=page,
        page_size=page_size,
        total_pages=math.ceil(total / page_size),
        segments=items[start : start + page_size],
    )


# -- search --------------------------------------------------------------------------------------


class SearchHit(Segment):
    score: float | None = None
    asset_id: str | None = None
    document_id: str | None = None
    collection_id: str | None = None
    metadata: dict[str, Any] | None = None


class SearchView(BaseModel):
    query: str
    search_type: SearchType
    results: list[SearchHit] = Field(default_factory=list, description="Best first")
    total: int | None = Field(None, description="Matches in all pages, when Mixpeek says")
    page: int
    page_size: int
    missing_collections: list[str] | None = Field(None, description="Requested collections that do not exist")
    note: str | None = None
    next_page: int | None = Field(None, description="The page to ask for next; null on the last")


async def search_view(
    client: MixpeekApi,
    query: str,
    collections: list[str],
    *,
    filters: dict[str, Any] | None,
    search_type: SearchType,
    page: int,
    page_size: int,
) -> SearchView:
    group = parse_filters(filters, generation(client)) if filters is not None else None
    base = {"query": query, "search_type": search_type, "page": page, "page_size": page_size}
    if isinstance(client, MixpeekV1Client):
        found = await client.search(
            query,
            collections,
            lexical=search_type == "fulltext",
            filters=group,
            page=page,
            page_size=page_size,
        )
        hits = [
            SearchHit(
                **d.model_dump(include=set(SearchHit.model_fields) - {"asset_id"}), asset_id=d.object_id
            )
            for d in found.documents
        ]
        note = None
        if found.unsearchable:
            note = f"not searched: {', '.join(found.unsearchable)} (created without the embedding, so no vector index)"
        return SearchView(
            **base, results=hits, total=found.total, missing_collections=found.missing or None, note=note
        )
    v0_filters = Filters.model_validate(group.to_v0()) if group is not None else None
    results = await client.search(
        query,
        collections,
        filters=v0_filters,
        search_type=search_type,
        page_size=page_size,
        offset_position=(page - 1) * page_size,
    )
    hits = [
        SearchHit.of(
            h,
            score=h.score,
            asset_id=h.asset_id,
            document_id=h.feature_id,
            collection_id=h.collection_id,
            description=h.description or h.caption,
            metadata=h.metadata,
        )
        for h in results.results
    ]
    total = results.pagination.total if results.pagination else None
    return SearchView(**base, results=hits, total=total)


__all__ = [
    "AssetDocuments",
    "AssetSegment",
    "CancelView",
    "MixpeekApi",
    "SearchHit",
    "SearchType",
    "SearchView",
    "TaskView",
    "cancel_view",
    "documents_view",
    "generation",
    "search_view",
    "task_view",
]
