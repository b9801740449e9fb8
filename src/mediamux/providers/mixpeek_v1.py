"""Mixpeek client for the live v1 API: namespaces, buckets, collections, objects, batches, tasks,
documents and retrievers, every path under ``/v1/``.

Contract: ``shared/providers/mixpeek-v1.md`` and ``mixpeek-v1-operations.txt`` (from the published SDK
1.3.783, "API version 0.82"), with field details from the SDK's models. What mediamux builds on it:

* Every namespaced call carries ``X-Namespace`` (``MIXPEEK_NAMESPACE``). The namespace is created the
  first time something is indexed, never by a read.
* A mediamux ``collection_id`` is a Mixpeek collection of that name fed by a bucket of the same name
  (a ``video`` property and a ``metadata`` object passed through to every document, so searches filter on
  ``metadata.<key>``), with the multimodal extractor. :meth:`MixpeekV1Client.collection` finds or creates
  the pair once per process however many callers ask at once; across processes the provider's unique
  collection names decide, and whoever loses the race reads the winner's collection (a bucket made for
  nothing is left unused rather than guessed away).
* Indexing: an object with the video (a URL, or a file uploaded through a presigned URL and confirmed),
  a batch of that one object, then its submission, which starts the paid work and answers a task.
* Reads are tolerant (new fields are kept, documents are read whether their fields sit at the root or
  under ``payload``); requests send only the keys the SDK models declare, since undeclared keys may be
  refused from 2026-11-02.

Writes that cannot double anything are retried like reads: object creation carries an idempotency key,
a second namespace, bucket or collection create meets the first one's name, and a duplicated DRAFT
batch is never submitted (the service reaps drafts). Only the batch submission is retried just when it
provably never left this machine.
"""

from __future__ import annotations

import mimetypes
import re
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import anyio
from pydantic import BaseModel, ConfigDict, Field

from mediamux.files import raw_file_upload
from mediamux.providers._util import Tolerant, number, path_segment
from mediamux.providers.errors import InvalidRequest, NotFound, ProviderError, ProviderStatusError
from mediamux.providers.mixpeek_filters import Group
from mediamux.providers.transport import Retry, Transport

Progress = Callable[[int, int], Awaitable[None]]

EXTRACTOR: Final = "multimodal_extractor"
EXTRACTOR_VERSION: Final = "v1"
VIDEO_PROPERTY: Final = "video"
METADATA_FIELD: Final = "metadata"
# Collection names: "alphanumeric with underscores/hyphens, 3-100 characters" (CollectionResponse).
COLLECTION_NAME_RE: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{2,99}$")
# A task that has left the fast store is found again through its batch; a bucket holds one batch per
# indexing call, so the search is bounded rather than exhaustive.
BATCH_PAGE = 1000
BATCH_SCAN_PAGES = 10
FINAL_TOP_K_MAX = 5000
TERMINAL: Final = frozenset({"COMPLETED", "COMPLETED_WITH_ERRORS", "FAILED", "CANCELED", "CANCELLED"})


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _seg(value: str, what: str, operation: str) -> str:
    return path_segment(value, what, title="Mixpeek", provider="mixpeek", operation=operation)


def check_collection_name(name: str, operation: str) -> str:
    if not COLLECTION_NAME_RE.fullmatch(name):
        raise InvalidRequest(
            f"Mixpeek {operation}: {name[:100]!r} is not a collection name Mixpeek accepts (3-100 letters, "
            "digits, '_' or '-', starting with a letter or digit)",
            provider="mixpeek",
            operation=operation,
        )
    return name


# -- what a collection extracts ----------------------------------------------------------------


@dataclass(frozen=True)
class Extraction:
    """The multimodal extractor's settings of a mediamux collection; fixed when it is created."""

    transcription: bool = True
    description: bool = True
    ocr: bool = True
    embedding: bool = True
    segment_s: int = 10

    def parameters(self) -> dict[str, Any]:
        return {
            "split_method": "time",
            "time_split_interval": self.segment_s,
            "run_transcription": self.transcription,
            "run_video_description": self.description,
            "run_ocr": self.ocr,
            "run_multimodal_embedding": self.embedding,
        }

    @classmethod
    def from_parameters(cls, params: Any) -> Extraction | None:
        if not isinstance(params, dict):
            return None
        interval = number(params.get("time_split_interval"))
        # Absent flags read as the extractor's documented defaults (all off but the embedding).
        return cls(
            transcription=params.get("run_transcription") is True,
            description=params.get("run_video_description") is True,
            ocr=params.get("run_ocr") is True,
            embedding=params.get("run_multimodal_embedding") is not False,
            segment_s=int(interval) if interval else 10,
        )

    def describe(self) -> str:
        names = [n for n in ("transcription", "description", "ocr", "embedding") if getattr(self, n)]
        return f"{', '.join(names) or 'no features'} every {self.segment_s} s"


@dataclass(frozen=True)
class CollectionRef:
    """A collection as indexing and search need it."""

    collection_id: str
    name: str
    bucket_id: str | None
    feature_uris: tuple[str, ...]
    extraction: Extraction | None
    passes_metadata: bool
    video_property: str | None = None

    @property
    def search_uri(self) -> str | None:
        """The vector index a text search should use: the multimodal embedding when there is one."""
        for uri in self.feature_uris:
            if "multimodal" in uri:
                return uri
        return self.feature_uris[0] if self.feature_uris else None


# -- answers -------------------------------------------------------------------------------------


class TaskInfo(Tolerant):
    task_id: str | None = None
    task_type: str | None = None
    status: str = "UNKNOWN"
    error: Any = None
    additional_data: dict[str, Any] | None = None
    queue_position: int | None = None
    estimated_wait_minutes: float | None = None

    def _extra(self, key: str) -> str | None:
        value = (self.additional_data or {}).get(key)
        return value if isinstance(value, str) and value else None

    @property
    def batch_id(self) -> str | None:
        return self._extra("batch_id")

    @property
    def bucket_id(self) -> str | None:
        return self._extra("bucket_id")

    @property
    def error_message(self) -> str | None:
        for value in (self.error, (self.additional_data or {}).get("error")):
            if value in (None, "", {}, []):
                continue
            if isinstance(value, dict):
                return str(value.get("message") or value.get("detail") or value)
            return str(value)
        return None


class BatchInfo(Tolerant):
    batch_id: str | None = None
    bucket_id: str | None = None
    status: str = "UNKNOWN"
    task_id: str | None = None
    object_ids: list[str] | None = None
    error: Any = None
    failure_reason: str | None = None
    failed_objects: list[Any] | None = None
    partial_objects: list[Any] | None = None
    documents_written: int | None = None
    documents_resolvable: bool | None = False
    documents_resolvable_error: str | None = None
    lifecycle: str | None = None
    lifecycle_reason: str | None = None
    cost: dict[str, Any] | None = None
    tier_tasks: list[Any] | None = None

    def has_task(self, task_id: str) -> bool:
        if self.task_id == task_id:
            return True
        return any(isinstance(t, dict) and t.get("task_id") == task_id for t in self.tier_tasks or [])

    @property
    def failure(self) -> str | None:
        for value in (self.failure_reason, self.error, self.lifecycle_reason):
            if isinstance(value, str) and value.strip():
                return value
        return None

    def problems(self) -> list[str]:
        """What went wrong for single objects, one line each (failed and partly indexed ones)."""
        found: list[str] = []
        for kind, items in (("failed", self.failed_objects), ("partly indexed", self.partial_objects)):
            for item in items or []:
                if not isinstance(item, dict):
                    continue
                what = (
                    item.get("error") or item.get("error_message") or item.get("message") or "no reason given"
                )
                missing = item.get("missing_feature")
                line = f"object {item.get('object_id') or '?'} {kind}: {what}"
                found.append(line + (f" (no {missing} documents)" if missing else ""))
        return found

    @property
    def credits(self) -> float | None:
        return number((self.cost or {}).get("credits_consumed"))

    @property
    def cost_usd(self) -> float | None:
        return number((self.cost or {}).get("cost_usd"))


class Document(BaseModel):
    """One document (a video segment) with the fields a reader wants; vectors are never kept."""

    model_config = ConfigDict(extra="ignore")

    document_id: str | None = None
    collection_id: str | None = None
    object_id: str | None = Field(None, description="The object the document was extracted from")
    start_time: float | None = None
    end_time: float | None = None
    transcription: str | None = None
    description: str | None = None
    ocr_text: str | None = None
    thumbnail_url: str | None = None
    metadata: dict[str, Any] | None = None
    score: float | None = None


def read_document(raw: Any) -> Document | None:
    """A document in whichever layout it came: fields at the root (documents/list) or under ``payload``
    (retriever results), the source object under ``_internal.lineage`` or at the root."""
    if not isinstance(raw, dict):
        return None
    flat = {**raw, **raw["payload"]} if isinstance(raw.get("payload"), dict) else dict(raw)
    internal = _dict(flat.get("_internal"))
    lineage = _dict(internal.get("lineage"))
    object_id = next(
        (
            v
            for v in (
                lineage.get("root_object_id"),
                lineage.get("source_object_id"),
                flat.get("root_object_id"),
                flat.get("source_object_id"),
                flat.get("object_id"),
            )
            if isinstance(v, str) and v
        ),
        None,
    )
    text = {
        k: flat.get(k) if isinstance(flat.get(k), str) else None for k in ("transcription", "description")
    }
    ocr = flat.get("ocr_text") if isinstance(flat.get("ocr_text"), str) else None
    metadata = flat.get(METADATA_FIELD)
    return Document(
        document_id=flat.get("document_id") if isinstance(flat.get("document_id"), str) else None,
        collection_id=flat.get("collection_id") if isinstance(flat.get("collection_id"), str) else None,
        object_id=object_id,
        start_time=number(flat.get("start_time")),
        end_time=number(flat.get("end_time")),
        ocr_text=ocr,
        thumbnail_url=flat.get("thumbnail_url") if isinstance(flat.get("thumbnail_url"), str) else None,
        metadata=metadata if isinstance(metadata, dict) else None,
        score=number(flat.get("score")),
        **text,
    )


def _documents(items: Any) -> list[Document]:
    return [d for d in (read_document(item) for item in items or []) if d is not None]


def _by_time(documents: list[Document]) -> list[Document]:
    return sorted(documents, key=lambda d: (d.start_time is None, d.start_time or 0.0, d.document_id or ""))


@dataclass
class ObjectDocuments:
    object_id: str
    documents: list[Document]  # in time order
    total: int


@dataclass
class SearchPage:
    documents: list[Document]
    total: int | None
    page: int
    page_size: int
    missing: list[str]  # requested collections that do not exist
    unsearchable: list[str]  # existing collections without a vector index to search


# -- client --------------------------------------------------------------------------------------


class MixpeekV1Client:
    provider = "mixpeek"
    generation = "v1"

    def __init__(self, transport: Transport, *, namespace: str) -> None:
        self.t = transport
        self.namespace = namespace
        self._namespace_ready = False
        self._collections: dict[str, CollectionRef] = {}
        self._locks: dict[str, anyio.Lock] = {}

    @property
    def origin(self) -> str:
        return self.t.origin

    def scrub(self, text: str, limit: int = 300) -> str:
        return self.t.scrub(text, limit)

    @property
    def _ns(self) -> dict[str, str]:
        return {"X-Namespace": self.namespace}

    def _lock(self, key: str) -> anyio.Lock:
        # Made on first use, inside the event loop that will wait on it.
        lock = self._locks.get(key)
        if lock is None:
            lock = self._locks[key] = anyio.Lock()
        return lock

    async def _post(
        self, path: str, body: Any, *, operation: str, retry: Retry = Retry.ALWAYS, namespaced: bool = True
    ) -> Any:
        response = await self.t.request(
            "POST",
            path,
            operation=operation,
            retry=retry,
            json_body=body,
            headers=self._ns if namespaced else None,
        )
        return self.t.parse_json(response, operation)

    async def _get(self, path: str, *, operation: str, namespaced: bool = True, **params: Any) -> Any:
        return await self.t.get_json(
            path, operation=operation, params=params or None, headers=self._ns if namespaced else None
        )

    def _object(self, data: Any, operation: str, key: str) -> dict[str, Any]:
        if not isinstance(data, dict) or not isinstance(data.get(key), str) or not data[key]:
            error = self.t.malformed(operation, f"no {key} in the answer")
            error.maybe_sent = True
            raise error
        self.t.checked_id(data[key], key, operation)
        return data

    # -- namespace -------------------------------------------------------------------------------

    async def namespace_exists(self, operation: str = "health") -> bool:
        try:
            await self._get(
                f"v1/namespaces/{_seg(self.namespace, 'namespace', operation)}",
                operation=operation,
                namespaced=False,
            )
        except NotFound:
            return False
        return True

    async def ensure_namespace(self, operation: str) -> None:
        """Create MIXPEEK_NAMESPACE if it does not exist yet (once per process)."""
        if self._namespace_ready:
            return
        async with self._lock("\0namespace"):
            if self._namespace_ready:
                return
            if not await self.namespace_exists(operation):
                if self.namespace.startswith("ns_"):
                    raise InvalidRequest(
                        f"Mixpeek {operation}: namespace id {self.namespace} does not exist; set MIXPEEK_NAMESPACE "
                        "to an existing namespace id, or to a name (it is created on first use)",
                        provider="mixpeek",
                        operation=operation,
                    )
                try:
                    await self._post(
                        "v1/namespaces",
                        {
                            "namespace_name": self.namespace,
                            "description": "Created by mediamux (MIXPEEK_NAMESPACE)",
                        },
                        operation=operation,
                        namespaced=False,
                    )
                except ProviderStatusError as exc:
                    # Someone else created it meanwhile: their namespace is ours too.
                    if exc.status not in (400, 409) or not await self.namespace_exists(operation):
                        raise
            self._namespace_ready = True

    # -- collections ----------------------------------------------------------------------------

    async def collection(
        self, name: str, *, operation: str, create: Extraction | None = None
    ) -> CollectionRef | None:
        """The collection ``name`` (and its bucket), created with ``create`` when it does not exist;
        None when it does not exist and ``create`` is None. Found once per process."""
        check_collection_name(name, operation)
        found = self._collections.get(name)
        if found is not None:
            return found
        async with self._lock(name):
            found = self._collections.get(name)
            if found is None:
                if create is not None:
                    await self.ensure_namespace(operation)
                found = await self._read_collection(name, operation)
                if found is None and create is not None:
                    found = await self._create_collection(name, create, operation)
                if found is not None:
                    self._collections[name] = found
        return found

    def forget(self, name: str) -> None:
        """Drop what is known of a collection (it was deleted or replaced upstream)."""
        self._collections.pop(name, None)

    async def _read_collection(self, name: str, operation: str) -> CollectionRef | None:
        try:
            data = await self._get(
                f"v1/collections/{_seg(name, 'collection', operation)}", operation=operation
            )
        except NotFound:
            return None
        if not isinstance(data, dict) or not isinstance(data.get("collection_id"), str):
            raise self.t.malformed(operation, "no collection_id in the collection")
        source = _dict(data.get("source"))
        buckets = source.get("bucket_ids") or ([source["bucket_id"]] if source.get("bucket_id") else [])
        extractor = _dict(data.get("feature_extractor"))
        passthrough = extractor.get("field_passthrough") or []
        uris = tuple(
            str(ix["feature_uri"])
            for ix in data.get("vector_indexes") or []
            if isinstance(ix, dict) and isinstance(ix.get("feature_uri"), str) and ix["feature_uri"]
        )
        mappings = _dict(extractor.get("input_mappings"))
        mapped = mappings.get(VIDEO_PROPERTY)
        return CollectionRef(
            collection_id=data["collection_id"],
            name=str(data.get("collection_name") or name),
            bucket_id=buckets[0] if buckets and isinstance(buckets[0], str) else None,
            feature_uris=uris,
            extraction=Extraction.from_parameters(extractor.get("parameters"))
            if extractor.get("feature_extractor_name") in (None, EXTRACTOR)
            else None,
            passes_metadata=any(
                isinstance(p, dict) and p.get("source_path") == METADATA_FIELD for p in passthrough
            ),
            video_property=mapped if isinstance(mapped, str) and mapped else None,
        )

    async def _create_collection(self, name: str, extraction: Extraction, operation: str) -> CollectionRef:
        bucket_id = await self._find_bucket(name, operation) or await self._create_bucket(name, operation)
        body = {
            "collection_name": name,
            "description": "Videos indexed by mediamux",
            "source": {"type": "bucket", "bucket_ids": [bucket_id]},
            "feature_extractor": {
                "feature_extractor_name": EXTRACTOR,
                "version": EXTRACTOR_VERSION,
                "input_mappings": {VIDEO_PROPERTY: VIDEO_PROPERTY},
                "parameters": extraction.parameters(),
                "field_passthrough": [{"source_path": METADATA_FIELD}],
            },
        }
        try:
            await self._post("v1/collections", body, operation=operation)
        except ProviderStatusError as exc:
            if exc.status not in (400, 409):
                raise
        # Read back rather than trusted from the create answer: when another process won the race,
        # its collection (and its bucket) is the one to use.
        found = await self._read_collection(name, operation)
        if found is None:
            raise self.t.malformed(operation, f"collection {name} was created but cannot be read back")
        return found

    async def _find_bucket(self, name: str, operation: str) -> str | None:
        data = await self._get("v1/buckets", operation=operation, search=name, limit=100)
        items = data.get("results") if isinstance(data, dict) else data
        for item in items if isinstance(items, list) else []:
            if (
                isinstance(item, dict)
                and item.get("bucket_name") == name
                and isinstance(item.get("bucket_id"), str)
            ):
                return str(item["bucket_id"])
        return None

    async def _create_bucket(self, name: str, operation: str) -> str:
        body = {
            "bucket_name": name,
            "description": "Videos indexed by mediamux",
            "bucket_schema": {
                "properties": {VIDEO_PROPERTY: {"type": "video"}, METADATA_FIELD: {"type": "object"}}
            },
        }
        try:
            data = await self._post("v1/buckets", body, operation=operation)
        except ProviderStatusError as exc:
            found = await self._find_bucket(name, operation) if exc.status in (400, 409) else None
            if found is None:
                raise
            return found
        return str(self._object(data, operation, "bucket_id")["bucket_id"])

    async def video_property(self, ref: CollectionRef, operation: str) -> str:
        """The bucket property the collection's extractor reads the video from."""
        if ref.video_property is not None:
            return ref.video_property
        if ref.bucket_id is None:
            raise InvalidRequest(
                f"Mixpeek {operation}: collection {ref.name} is not fed by a bucket, so nothing can be indexed "
                "into it; use another collection_id",
                provider="mixpeek",
                operation=operation,
            )
        data = await self._get(
            f"v1/buckets/{_seg(ref.bucket_id, 'bucket id', operation)}", operation=operation
        )
        schema = data.get("bucket_schema") if isinstance(data, dict) else None
        props = schema.get("properties") if isinstance(schema, dict) else None
        videos = [
            k
            for k, v in (props or {}).items()
            if isinstance(v, dict) and str(v.get("type")).lower() == "video"
        ]
        if not videos:
            raise InvalidRequest(
                f"Mixpeek {operation}: the bucket of collection {ref.name} has no video property; use another "
                "collection_id",
                provider="mixpeek",
                operation=operation,
            )
        return VIDEO_PROPERTY if VIDEO_PROPERTY in videos else videos[0]

    # -- indexing -------------------------------------------------------------------------------

    async def create_url_object(
        self, bucket_id: str, url: str, *, prop: str, metadata: dict[str, Any] | None, operation: str
    ) -> str:
        body: dict[str, Any] = {
            "blobs": [{"property": prop, "type": "video", "data": url}],
            "idempotency_key": uuid.uuid4().hex,
        }
        if metadata:
            body[METADATA_FIELD] = metadata
        data = await self._post(
            f"v1/buckets/{_seg(bucket_id, 'bucket id', operation)}/objects", body, operation=operation
        )
        return str(self._object(data, operation, "object_id")["object_id"])

    async def upload_file_object(
        self,
        bucket_id: str,
        path: Path,
        allowed: Sequence[Path],
        *,
        prop: str,
        metadata: dict[str, Any] | None,
        operation: str,
        on_progress: Progress | None = None,
    ) -> str:
        """Upload a local file the v1 way: presigned URL, PUT, confirm; answers the object created."""
        bucket = _seg(bucket_id, "bucket id", operation)
        size = (await anyio.Path(path).stat()).st_size
        content_type = mimetypes.guess_type(path.name)[0] or "video/mp4"
        request: dict[str, Any] = {
            "filename": _upload_name(path.name),
            "content_type": content_type,
            "file_size_bytes": max(1, size),
            "create_object_on_confirm": True,
            "blob_property": prop,
            "blob_type": "video",
            # Re-indexing the same bytes on purpose (new_job) must make a new object, not the old one.
            "skip_duplicates": False,
        }
        if metadata:
            request["object_metadata"] = {METADATA_FIELD: metadata}
        upload = await self._post(f"v1/buckets/{bucket}/uploads", request, operation=operation)
        upload = self._object(upload, operation, "upload_id")
        upload_id = _seg(upload["upload_id"], "upload id", operation)
        presigned = upload.get("presigned_url")
        if not isinstance(presigned, str) or not presigned.startswith(("https://", "http://")):
            existing = upload.get("existing_object_id") or upload.get("object_id")
            if isinstance(existing, str) and existing:
                return existing
            raise self.t.malformed(operation, "no presigned_url for the upload")

        def body() -> tuple[dict[str, str], Any]:
            stream = raw_file_upload(path, allowed, content_type=content_type, on_progress=on_progress)
            return stream.headers, stream.stream

        stored = await self.t.request(
            "PUT",
            presigned,
            operation=operation,
            retry=Retry.IF_NOT_SENT,
            body=body,
            authenticated=False,
            external=True,
        )
        confirm: dict[str, Any] = {"file_size_bytes": max(1, size)}
        etag = stored.headers.get("etag")
        if etag:
            confirm["etag"] = etag
        done = await self._post(
            f"v1/buckets/{bucket}/uploads/{upload_id}/confirm", confirm, operation=operation
        )
        return str(self._object(done, operation, "object_id")["object_id"])

    async def create_batch(self, bucket_id: str, object_id: str, *, operation: str) -> BatchInfo:
        data = await self._post(
            f"v1/buckets/{_seg(bucket_id, 'bucket id', operation)}/batches",
            {"object_ids": [object_id]},
            operation=operation,
        )
        return BatchInfo.model_validate(self._object(data, operation, "batch_id"))

    async def submit_batch(
        self, bucket_id: str, batch_id: str, *, operation: str, webhook_url: str | None = None
    ) -> TaskInfo:
        """Start the paid work; answers the batch's task. With ``webhook_url``, Mixpeek POSTs the
        batch's outcome there when it finishes (once, not retried)."""
        data = await self._post(
            f"v1/buckets/{_seg(bucket_id, 'bucket id', operation)}/batches/{_seg(batch_id, 'batch id', operation)}/submit",
            {"webhook_url": webhook_url} if webhook_url else {},
            operation=operation,
            retry=Retry.IF_NOT_SENT,
        )
        return TaskInfo.model_validate(self._object(data, operation, "task_id"))

    # -- tasks and batches -----------------------------------------------------------------------

    async def get_task(self, task_id: str, operation: str = "get_task") -> TaskInfo:
        # No X-Namespace: tasks are read by id alone (the one namespaced exception the SDK documents).
        data = await self._get(
            f"v1/tasks/{_seg(task_id, 'task id', operation)}", operation=operation, namespaced=False
        )
        if not isinstance(data, dict):
            raise self.t.malformed(operation, "expected an object")
        return TaskInfo.model_validate(data)

    async def cancel_task(self, task_id: str) -> dict[str, Any]:
        response = await self.t.request(
            "DELETE",
            f"v1/tasks/{_seg(task_id, 'task id', 'cancel_task')}",
            operation="cancel_task",
            retry=Retry.ALWAYS,  # killing a task twice is killing it once
        )
        if not response.content.strip():
            return {}
        data = self.t.parse_json(response, "cancel_task")
        return data if isinstance(data, dict) else {"answer": data}

    async def get_batch(self, bucket_id: str, batch_id: str, operation: str = "get_batch") -> BatchInfo:
        data = await self._get(
            f"v1/buckets/{_seg(bucket_id, 'bucket id', operation)}/batches/{_seg(batch_id, 'batch id', operation)}",
            operation=operation,
        )
        if not isinstance(data, dict):
            raise self.t.malformed(operation, "expected an object")
        return BatchInfo.model_validate(data)

    async def find_batch_of_task(self, bucket_id: str, task_id: str, operation: str) -> BatchInfo | None:
        """The batch whose task this is, from the bucket's batch list (bounded)."""
        bucket = _seg(bucket_id, "bucket id", operation)
        for page in range(BATCH_SCAN_PAGES):
            data = await self._post(
                f"v1/buckets/{bucket}/batches/list",
                {"limit": BATCH_PAGE, "offset": page * BATCH_PAGE},
                operation=operation,
            )
            items = data.get("results") if isinstance(data, dict) else data
            if not isinstance(items, list):
                raise self.t.malformed(operation, "no results in the batch list")
            for item in items:
                if isinstance(item, dict):
                    batch = BatchInfo.model_validate(item)
                    if batch.has_task(task_id):
                        return batch
            if len(items) < BATCH_PAGE:
                break
        return None

    # -- documents and search --------------------------------------------------------------------

    async def object_documents(
        self, object_id: str, operation: str = "get_asset_features"
    ) -> ObjectDocuments:
        data = await self._get(
            f"v1/objects/{_seg(object_id, 'object id', operation)}/documents", operation=operation
        )
        items: Any = data
        total = None
        if isinstance(data, dict):
            items = next((data[k] for k in ("documents", "results") if isinstance(data.get(k), list)), None)
            total = number(data.get("total_documents"))
            if items is None:
                raise self.t.malformed(operation, "no documents in the answer")
        if not isinstance(items, list):
            raise self.t.malformed(operation, "expected a list of documents")
        documents = _by_time(_documents(items))
        return ObjectDocuments(object_id, documents, int(total) if total is not None else len(documents))

    async def search(
        self,
        query: str,
        collections: Sequence[str],
        *,
        lexical: bool,
        filters: Group | None = None,
        page: int = 1,
        page_size: int = 10,
    ) -> SearchPage:
        """One ad hoc retriever with a feature_search stage: per distinct feature URI one search (read
        from each collection's vector indexes), fused by the service when there are several."""
        operation = "search"
        refs: list[CollectionRef] = []
        missing: list[str] = []
        for name in dict.fromkeys(collections):
            ref = await self.collection(name, operation=operation)
            if ref is None:
                missing.append(name)
            else:
                refs.append(ref)
        by_uri: dict[str, list[str]] = {}
        unsearchable = []
        for ref in refs:
            uri = ref.search_uri
            if uri is None:
                unsearchable.append(ref.name)
            else:
                by_uri.setdefault(uri, []).append(ref.name)
        if not by_uri:
            return SearchPage([], 0, page, page_size, missing, unsearchable)
        pool = min(FINAL_TOP_K_MAX, max(25, page * page_size))
        searches = [
            {
                "feature_uri": uri,
                "query": {"input_mode": "text", "value": query},
                "top_k": pool,
                "lexical": lexical,
                "collection_identifiers": names,
            }
            for uri, names in by_uri.items()
        ]
        body: dict[str, Any] = {
            "collection_identifiers": [n for names in by_uri.values() for n in names],
            "stages": [
                {
                    "stage_name": "search",
                    "stage_type": "filter",
                    "config": {
                        "stage_id": "feature_search",
                        "parameters": {"searches": searches, "final_top_k": pool},
                    },
                }
            ],
            "pagination": {"method": "offset", "page_size": page_size, "page_number": page},
        }
        if filters is not None:
            body["filters"] = filters.to_v1()
        data = await self._post("v1/retrievers/execute", body, operation=operation)
        if not isinstance(data, dict):
            raise self.t.malformed(operation, "expected an object")
        if str(data.get("status") or "").lower() == "failed":
            raise ProviderError(
                f"Mixpeek search: the retriever failed: {self.scrub(str(data.get('error') or 'no reason given'))}",
                provider="mixpeek",
                operation=operation,
            )
        items = data.get("documents") if isinstance(data.get("documents"), list) else data.get("results")
        if not isinstance(items, list):
            raise self.t.malformed(operation, "no documents in the answer")
        paging = _dict(data.get("pagination"))
        total = number(paging.get("total"))
        return SearchPage(
            _documents(items),
            int(total) if total is not None else None,
            page,
            page_size,
            missing,
            unsearchable,
        )


def _upload_name(name: str) -> str:
    cleaned = re.sub(r"[^A-Za-z0-9._-]", "_", name.replace("\\", "/").rsplit("/", 1)[-1]).strip("._")
    return (cleaned or "upload.mp4")[:255]


__all__ = [
    "BatchInfo",
    "CollectionRef",
    "Document",
    "Extraction",
    "MixpeekV1Client",
    "ObjectDocuments",
    "SearchPage",
    "TaskInfo",
    "check_collection_name",
    "read_document",
]
