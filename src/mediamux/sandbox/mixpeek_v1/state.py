"""What the emulated v1 service holds: namespaces, buckets, collections, objects, uploads, batches,
tasks and documents, and how a submitted batch moves on the injected clock."""

from __future__ import annotations

import hashlib
import math
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from mediamux.sandbox.mixpeek import _MISSING, _content, lookup, title_words
from mediamux.sandbox.mixpeek_v1.schemas import FieldPassthrough, MultimodalParameters

BatchStatus = Literal[
    "DRAFT",
    "PENDING",
    "IN_PROGRESS",
    "PROCESSING",
    "COMPLETED",
    "COMPLETED_WITH_ERRORS",
    "FAILED",
    "CANCELED",
]
FINISHED = frozenset({"COMPLETED", "COMPLETED_WITH_ERRORS", "FAILED", "CANCELED"})
LIFECYCLE = {
    "DRAFT": "accepted",
    "PENDING": "queued",
    "IN_PROGRESS": "extracting",
    "PROCESSING": "extracting",
    "COMPLETED": "indexed",
    "COMPLETED_WITH_ERRORS": "indexed",
    "FAILED": "failed",
    "CANCELED": "canceled",
}
# "10 credits/min video" (SDK billing notes); 1 credit = $0.001.
CREDITS_PER_MINUTE = 10
CREDIT_USD = 0.001


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(6)}"


def iso(ts: float | None = None) -> str:
    when = datetime.now(UTC) if ts is None else datetime.fromtimestamp(ts, UTC)
    return when.isoformat(timespec="seconds").replace("+00:00", "Z")


@dataclass
class Namespace:
    namespace_id: str
    name: str
    description: str | None
    created_at: str

    def json(self) -> dict[str, Any]:
        return {
            "object": "namespace",
            "namespace_id": self.namespace_id,
            "namespace_name": self.name,
            "description": self.description,
            "namespace_type": "STANDARD",
            "created_at": self.created_at,
        }


@dataclass
class Bucket:
    bucket_id: str
    namespace_id: str
    name: str
    schema: dict[str, dict[str, Any]]
    description: str | None
    created_at: str

    def json(self) -> dict[str, Any]:
        return {
            "bucket_id": self.bucket_id,
            "bucket_name": self.name,
            "description": self.description,
            "bucket_schema": {"properties": self.schema},
            "namespace_id": self.namespace_id,
            "created_at": self.created_at,
        }

    def field_type(self, name: str) -> str | None:
        spec = self.schema.get(name)
        return str(spec.get("type")).lower() if isinstance(spec, dict) else None


@dataclass
class Collection:
    collection_id: str
    namespace_id: str
    name: str
    bucket_ids: list[str]
    extractor: dict[str, Any]  # as given, echoed back
    params: MultimodalParameters
    passthrough: list[FieldPassthrough]
    vector_indexes: list[dict[str, Any]]
    description: str | None
    created_at: str

    @property
    def feature_uris(self) -> set[str]:
        return {str(ix["feature_uri"]) for ix in self.vector_indexes}

    def json(self, input_schema: dict[str, Any]) -> dict[str, Any]:
        output = {
            p.target_path or p.source_path.rsplit(".", 1)[-1]: {"type": "object"} for p in self.passthrough
        }
        output.update(
            {
                "start_time": {"type": "number"},
                "end_time": {"type": "number"},
                "transcription": {"type": "text"},
                "description": {"type": "text"},
                "ocr_text": {"type": "text"},
                "thumbnail_url": {"type": "string"},
            }
        )
        return {
            "collection_id": self.collection_id,
            "collection_name": self.name,
            "description": self.description,
            "source": {"type": "bucket", "bucket_ids": list(self.bucket_ids)},
            "input_schema": {"properties": input_schema},
            "output_schema": {"properties": output},
            "feature_extractor": self.extractor,
            "vector_indexes": self.vector_indexes,
            "enabled": True,
            "created_at": self.created_at,
        }


@dataclass
class StoredObject:
    object_id: str
    bucket_id: str
    namespace_id: str
    blobs: list[dict[str, Any]]
    fields: dict[str, Any]  # the schema fields at the object's root
    source: str  # the URL or file name the video came from
    seed: str
    duration_s: float
    unreachable: str | None
    idempotency_key: str | None
    created_at: str
    status: str = "PENDING"

    def json(self) -> dict[str, Any]:
        return {
            "object_id": self.object_id,
            "bucket_id": self.bucket_id,
            "blobs": self.blobs,
            "status": self.status,
            "created_at": self.created_at,
            **self.fields,
        }


@dataclass
class Upload:
    upload_id: str
    bucket_id: str
    namespace_id: str
    filename: str
    content_type: str
    expected_size: int | None
    blob_property: str | None
    object_metadata: dict[str, Any]
    create_object_on_confirm: bool
    created: float
    expires_in: int
    created_at: str
    data: bytes | None = None
    etag: str | None = None
    object_id: str | None = None


@dataclass
class Batch:
    batch_id: str
    bucket_id: str
    namespace_id: str
    object_ids: list[str]
    collection_ids: list[str]
    batch_name: str | None
    created_at: str
    stage_seconds: float
    resolve_seconds: float
    submitted: float | None = None
    task_id: str | None = None
    cancelled: float | None = None
    failure: str | None = None  # why the download fails, decided at submission
    partial: list[dict[str, Any]] = field(default_factory=list)  # objects whose transcription fails
    minutes: float = 0.0  # of video, for the cost
    written: bool = False
    documents_written: int | None = None
    webhook_url: str | None = None  # given at submission; POSTed to once the batch finishes
    webhook_sent: bool = False

    def webhook_payload(self, t: float, wall_now: float) -> dict[str, Any]:
        """What the webhook POST carries (the contract lists these fields, and no cost)."""
        status = self.status_at(t)
        done = self.finished_at(t)
        return {
            "batch_id": self.batch_id,
            "status": status,
            "failure_reason": self.failure if status == "FAILED" else None,
            "documents_written": self.documents_written,
            "progress": 100,
            "completed_at": iso(wall_now - (t - done)) if done is not None else None,
        }

    def status_at(self, t: float) -> BatchStatus:
        """The batch's (and its task's) status: PENDING, IN_PROGRESS, PROCESSING for one stage each, then
        the outcome; a download failure ends it at the end of IN_PROGRESS."""
        if self.submitted is None:
            return "DRAFT"
        if self.cancelled is not None:
            return "CANCELED"
        stage = 3 if self.stage_seconds <= 0 else int((t - self.submitted) // self.stage_seconds)
        if self.failure is not None and stage >= 2:
            return "FAILED"
        if stage < 3:
            return ("PENDING", "IN_PROGRESS", "PROCESSING")[stage]
        return "COMPLETED_WITH_ERRORS" if self.partial else "COMPLETED"

    def finished_at(self, t: float) -> float | None:
        status = self.status_at(t)
        if status not in FINISHED:
            return None
        if self.cancelled is not None:
            return self.cancelled
        assert self.submitted is not None
        return self.submitted + max(0.0, self.stage_seconds) * (2 if status == "FAILED" else 3)

    def resolvable(self, t: float) -> bool:
        done = self.finished_at(t)
        return (
            done is not None
            and self.status_at(t) in ("COMPLETED", "COMPLETED_WITH_ERRORS")
            and t >= done + self.resolve_seconds
        )

    def json(self, t: float) -> dict[str, Any]:
        status = self.status_at(t)
        body: dict[str, Any] = {
            "batch_id": self.batch_id,
            "bucket_id": self.bucket_id,
            "namespace_id": self.namespace_id,
            "batch_name": self.batch_name,
            "status": "IN_PROGRESS" if status == "PROCESSING" else status,
            "lifecycle": LIFECYCLE[status],
            "lifecycle_reason": self.failure if status == "FAILED" else None,
            "object_ids": list(self.object_ids),
            "collection_ids": list(self.collection_ids),
            "task_id": self.task_id,
            "type": "BUCKET",
            "created_at": self.created_at,
            "documents_resolvable": self.resolvable(t),
            "documents_resolvable_error": None,
            "failed_objects": [],
            "failed_object_count": 0,
            "partial_objects": [],
            "partial_object_count": 0,
            "documents_written": self.documents_written,
        }
        if status == "FAILED":
            body["failure_reason"] = self.failure
            body["error"] = self.failure
            body["failed_objects"] = [
                {"object_id": oid, "error": self.failure, "error_type": "permanent"}
                for oid in self.object_ids
            ]
            body["failed_object_count"] = len(self.object_ids)
        if status == "COMPLETED_WITH_ERRORS":
            body["partial_objects"] = list(self.partial)
            body["partial_object_count"] = len(self.partial)
        if status in ("COMPLETED", "COMPLETED_WITH_ERRORS"):
            credits = math.ceil(self.minutes * CREDITS_PER_MINUTE)
            body["cost"] = {
                "credits_consumed": credits,
                "cost_usd": round(credits * CREDIT_USD, 6),
                "credit_rate_usd": CREDIT_USD,
            }
        elif status in ("DRAFT", "PENDING", "FAILED", "CANCELED"):
            body["cost"] = {"credits_consumed": 0, "cost_usd": 0.0, "credit_rate_usd": CREDIT_USD}
        return body


@dataclass
class Task:
    task_id: str
    batch_id: str
    bucket_id: str
    namespace_id: str


def video_duration(seed: str) -> float:
    """20-300 s, decided by the video's identity so the same video is always as long."""
    return float(20 + int.from_bytes(hashlib.sha256(seed.encode()).digest()[:4], "big") % 281)


def segment_documents(
    obj: StoredObject, collection: Collection, *, embedding_output: str, failed_transcription: bool
) -> list[dict[str, Any]]:
    """One document per time segment of the object's video, with the extractor's outputs and the
    collection's passthrough fields at the root and the lineage under ``_internal``."""
    params = collection.params
    interval = float(params.time_split_interval)
    count = max(1, math.ceil(obj.duration_s / interval))
    title = title_words(obj.source)
    docs = []
    for k in range(count):
        start = k * interval
        end = min((k + 1) * interval, obj.duration_s)
        seed = f"{obj.seed}|{k}"
        content = _content(
            title,
            seed,
            start,
            end,
            read=params.run_ocr,
            transcribe=params.run_transcription and not failed_transcription,
            describe=params.run_video_description,
        )
        document_id = (
            "doc_"
            + hashlib.sha256(f"{collection.collection_id}/{obj.object_id}/{k}".encode()).hexdigest()[:16]
        )
        doc: dict[str, Any] = {
            "document_id": document_id,
            "collection_id": collection.collection_id,
            "start_time": float(start),
            "end_time": float(end),
            "transcription": content["transcription"],
            "description": content["description"],
            "ocr_text": content["text"],
            "thumbnail_url": f"/_storage/thumbnails/{document_id}.png" if params.enable_thumbnails else None,
        }
        for rule in collection.passthrough:
            value = lookup(obj.fields, rule.source_path)
            target = rule.target_path or rule.source_path.rsplit(".", 1)[-1]
            if value is not _MISSING:
                doc[target] = value
            elif rule.default is not None:
                doc[target] = rule.default
        doc["_internal"] = {
            "lineage": {
                "root_object_id": obj.object_id,
                "root_bucket_id": obj.bucket_id,
                "source_type": "bucket",
                "source_object_id": obj.object_id,
            },
            "modality": "video",
            "feature_uri": f"mixpeek://multimodal_extractor@v1/{embedding_output}"
            if params.run_multimodal_embedding
            else None,
        }
        docs.append(doc)
    return docs
