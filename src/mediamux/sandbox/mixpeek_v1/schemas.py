"""Request bodies of the emulated v1 API and its error body.

Only the keys the SDK 1.3.783 models declare are accepted: the SDK says undeclared keys are refused with
422 ``extra_forbidden`` from 2026-11-02, and this emulator plays a server after that date. Object bodies
are the exception the API itself makes: their extra keys are the bucket schema's fields, checked against
the schema instead.
"""

from __future__ import annotations

import json
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field
from pydantic import ValidationError as PydanticValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse

from mediamux.sandbox.common import Refusal

FieldType = Literal[
    "string", "number", "integer", "float", "boolean", "object", "array", "date", "datetime", "text",
    "image", "audio", "video", "pdf", "excel",
]  # fmt: skip
BLOB_TYPES = frozenset({"image", "audio", "video", "pdf", "excel", "text"})


def error(
    status: int,
    message: str,
    kind: str,
    *,
    code: str | None = None,
    details: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    """The v1 error body: ``{success: false, status, error: {message, type, code?, details?}}``."""
    body: dict[str, Any] = {"message": message, "type": kind}
    if code is not None:
        body["code"] = code
    if details is not None:
        body["details"] = details
    return JSONResponse(
        {"success": False, "status": status, "error": body}, status_code=status, headers=headers
    )


def not_found(what: str, ident: str, code: str | None = None) -> JSONResponse:
    return error(404, f"{what} {ident!r} not found", "NotFoundError", code=code)


def invalid(problems: list[dict[str, Any]]) -> JSONResponse:
    first = problems[0] if problems else {"loc": [], "msg": "invalid request"}
    where = ".".join(str(p) for p in first.get("loc", []))
    return error(
        422,
        f"Request validation failed: {where}: {first.get('msg')}"
        if where
        else f"Request validation failed: {first.get('msg')}",
        "ValidationError",
        details={"validation_errors": problems},
    )


def problem(loc: list[str | int], msg: str, kind: str = "value_error") -> dict[str, Any]:
    return {"loc": loc, "msg": msg, "type": kind}


def refused(loc: list[str | int], msg: str, kind: str = "value_error") -> JSONResponse:
    return invalid([problem(loc, msg, kind)])


class _Declared(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CreateNamespace(_Declared):
    namespace_id: str | None = None
    namespace_name: str = Field(min_length=3, max_length=64)
    mode: str | None = None
    description: str | None = None
    features: list[str] | None = None
    feature_extractors: list[dict[str, Any]] | None = None
    payload_indexes: list[dict[str, Any]] | None = None
    auto_create_indexes: bool | None = None
    ttl_seconds: int | None = Field(None, ge=60)


class SchemaField(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: FieldType


class BucketSchema(_Declared):
    properties: dict[str, SchemaField]


class CreateBucket(_Declared):
    bucket_name: str = Field(min_length=1, max_length=200)
    description: str | None = None
    bucket_schema: BucketSchema
    metadata: dict[str, Any] | None = None
    unique_key: dict[str, Any] | None = None
    storage_class: str | None = None


class FieldPassthrough(_Declared):
    source_path: str
    target_path: str | None = None
    default: Any = None
    required: bool = False


class FeatureExtractorConfig(_Declared):
    feature_extractor_name: str
    version: str
    params: dict[str, Any] | None = None
    parameters: dict[str, Any] | None = None
    input_mappings: dict[str, str] | None = None
    field_passthrough: list[FieldPassthrough] | None = None
    include_all_source_fields: bool = False


class SourceConfig(_Declared):
    type: Literal["bucket", "collection"]
    bucket_ids: list[str] | None = Field(None, min_length=1)
    # The 2026-02 quickstart spelling; the SDK says bucket_ids. Both are read.
    bucket_id: str | None = None
    collection_id: str | None = None


class CreateCollection(_Declared):
    collection_name: str = Field(min_length=3, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]*$")
    description: str | None = None
    source: SourceConfig
    feature_extractor: FeatureExtractorConfig | None = None
    features: list[str] | None = None
    enabled: bool = True
    metadata: dict[str, Any] | None = None


class MultimodalParameters(_Declared):
    """The multimodal extractor's parameters the emulator acts on (others are accepted and kept)."""

    model_config = ConfigDict(extra="allow")
    extractor_type: str | None = None
    split_method: Literal["time", "scene", "silence"] | None = None
    time_split_interval: int = Field(10, ge=1, le=3600)
    run_transcription: bool = False
    run_video_description: bool = False
    run_ocr: bool = False
    run_multimodal_embedding: bool = True
    run_transcription_embedding: bool = False
    enable_thumbnails: bool = True


class CreateBlob(_Declared):
    property: str = Field(min_length=1, max_length=100)
    type: FieldType
    data: str | dict[str, Any] | None = None
    upload_id: str | None = None
    key_prefix: str | None = None
    checksum: str | None = None
    metadata: dict[str, Any] | None = None


class CreateUpload(_Declared):
    filename: str = Field(min_length=1, max_length=255)
    content_type: str
    file_size_bytes: int | None = Field(None, ge=1)
    presigned_url_expiration: int = Field(3600, ge=60, le=86400)
    metadata: dict[str, Any] | None = None
    create_object_on_confirm: bool = True
    object_metadata: dict[str, Any] | None = None
    blob_property: str | None = None
    blob_type: str | None = None
    file_hash: str | None = Field(None, min_length=64, max_length=64)
    skip_duplicates: bool = True


class ConfirmUpload(_Declared):
    etag: str | None = None
    file_size_bytes: int | None = Field(None, ge=1)
    auto_submit_batch: bool = False


class CreateBatch(_Declared):
    object_ids: list[str] | None = Field(None, min_length=1)
    filters: dict[str, Any] | None = None
    collection_ids: list[str] | None = None
    limit: int | None = Field(None, ge=1, le=50000)
    dedup_strategy: Literal["skip", "replace", "force"] | None = None
    metadata: dict[str, Any] | None = None
    batch_name: str | None = Field(None, max_length=256)
    auto_submit: bool | None = None


class SubmitBatch(_Declared):
    include_processing_history: bool = True
    collection_ids: list[str] | None = None
    webhook_url: str | None = None


class ListBatches(_Declared):
    status: str | None = None
    collection_id: str | None = None
    bucket_id: str | None = None
    namespace_id: str | None = None
    offset: int = Field(0, ge=0)
    limit: int = Field(100, ge=1, le=1000)
    cursor: str | None = None


class TextQuery(_Declared):
    input_mode: Literal["text"] = "text"
    value: str | None = None
    text: str | None = None
    embedding_task: str | None = None


class FeatureSearch(_Declared):
    feature_uri: str = Field(min_length=1)
    query: TextQuery
    top_k: int = Field(100, ge=1, le=5000)
    min_score: float | None = Field(None, ge=0, le=1)
    weight: float = Field(1.0, ge=0, le=1)
    lexical: bool = False
    optional: bool = False
    on_empty: str | None = None
    collection_identifiers: list[str] | None = None


class FeatureSearchParameters(BaseModel):
    model_config = ConfigDict(extra="allow")
    searches: list[FeatureSearch] = Field(default_factory=list, max_length=10)
    final_top_k: int = Field(25, ge=1, le=5000)
    fusion: str | None = None
    collection_identifiers: list[str] | None = None


class StageConfig(_Declared):
    stage_name: str = Field(min_length=1)
    stage_type: str | None = None
    config: dict[str, Any]
    batch_size: str | None = None
    description: str | None = None
    on_error: str | None = None
    output_alias: str | None = None


class OffsetPagination(_Declared):
    method: Literal["offset"] = "offset"
    page_size: int = Field(10, ge=1, le=500)
    page_number: int = Field(1, ge=1)


class ExecuteRetriever(_Declared):
    collection_identifiers: list[str] | None = None
    input_schema: dict[str, Any] | None = None
    stages: list[StageConfig] = Field(min_length=1)
    inputs: dict[str, Any] | None = None
    filters: dict[str, Any] | None = None
    budget_limits: dict[str, Any] | None = None
    pagination: OffsetPagination | None = None
    limit: int | None = Field(None, ge=1, le=500)
    stream: bool = False


M = TypeVar("M", bound=BaseModel)


def validation_problems(exc: PydanticValidationError, prefix: list[str | int]) -> list[dict[str, Any]]:
    problems: list[dict[str, Any]] = json.loads(exc.json(include_url=False))
    return [{"loc": [*prefix, *p["loc"]], "msg": p["msg"], "type": p["type"]} for p in problems]


def parse(model: type[M], data: Any, prefix: list[str | int] | None = None) -> M:
    try:
        return model.model_validate(data)
    except PydanticValidationError as exc:
        raise Refusal(invalid(validation_problems(exc, prefix or ["body"]))) from exc


async def body_of(request: Request, *, optional: bool = False) -> Any:
    raw = await request.body()
    if not raw.strip():
        if optional:
            return {}
        raise Refusal(invalid([{"loc": ["body"], "msg": "Field required", "type": "missing"}]))
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise Refusal(
            invalid([{"loc": ["body"], "msg": "JSON decode error", "type": "json_invalid"}])
        ) from None
