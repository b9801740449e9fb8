"""The emulated Mixpeek v1 service: routes, state and lifecycle (see the package docstring)."""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import time
import weakref
from collections import Counter
from collections.abc import Callable
from typing import Any

import anyio
import httpx2
from pydantic import ValidationError as PydanticValidationError
from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from mediamux.sandbox.common import Refusal, WebhookSender, base_name, public_origin
from mediamux.sandbox.faults import ASGIApp, FaultMiddleware, FaultPlan, Receive, RequestLog, Scope, Send
from mediamux.sandbox.media import color_for, mp4_duration, png_bytes
from mediamux.sandbox.mixpeek import unreachable_reason
from mediamux.sandbox.mixpeek_v1 import retrieval
from mediamux.sandbox.mixpeek_v1.schemas import (
    BLOB_TYPES,
    ConfirmUpload,
    CreateBatch,
    CreateBlob,
    CreateBucket,
    CreateCollection,
    CreateNamespace,
    CreateUpload,
    ExecuteRetriever,
    FeatureSearchParameters,
    ListBatches,
    MultimodalParameters,
    OffsetPagination,
    SubmitBatch,
    body_of,
    error,
    invalid,
    not_found,
    parse,
    problem,
    refused,
    validation_problems,
)
from mediamux.sandbox.mixpeek_v1.state import (
    FINISHED,
    Batch,
    Bucket,
    Collection,
    Namespace,
    StoredObject,
    Task,
    Upload,
    iso,
    new_id,
    segment_documents,
    video_duration,
)

# Keys of a create-object body the API itself declares; any other key must be a bucket schema field.
OBJECT_KEYS = frozenset(
    {
        "key_prefix",
        "blobs",
        "skip_duplicates",
        "canonicalize_source",
        "force_remirror",
        "edges",
        "idempotency_key",
    }
)
TASK_TTL_S = 24 * 3600.0
NO_AUDIO_MARK = "no_audio"
# The webhook loop looks again as the next batch with a webhook is due to finish, and at least this
# often (batches advance on the injected clock); deliveries go out this many at once.
WEBHOOK_SWEEP_S = 0.5
WEBHOOK_MIN_NAP_S = 0.005
WEBHOOK_CONCURRENCY = 32

logger = logging.getLogger(__name__)


class MixpeekV1Emulator(WebhookSender):
    def __init__(
        self,
        *,
        now: Callable[[], float] = time.monotonic,
        master_key: str = "sandbox-mixpeek-key",
        stage_seconds: float = 2.0,
        resolve_seconds: float | None = None,
        task_ttl_s: float = TASK_TTL_S,
        webhook_client: httpx2.AsyncClient | None = None,
    ) -> None:
        self.now = now
        self.webhook_client = webhook_client
        self.webhooks_sent: list[dict[str, Any]] = []
        self.master_key = master_key
        self.stage_seconds = stage_seconds
        # How long COMPLETED batches stay "finalizing" (documents_resolvable false); half a stage by default.
        self.resolve_seconds = stage_seconds / 2 if resolve_seconds is None else resolve_seconds
        self.task_ttl_s = task_ttl_s
        # The name of the multimodal embedding's output in feature URIs; clients must read it from the
        # collection's vector_indexes, so tests change it to prove nobody hard-codes it.
        self.embedding_output = "multimodal_embedding"
        self.base_url = ""
        self.requests: list[tuple[str, str]] = []
        self.namespace_headers: list[tuple[str, str, str | None]] = []
        self.created: Counter[str] = Counter()
        self.polls: Counter[str] = Counter()
        self.faults = FaultPlan()
        self._throttle: list[tuple[str, int, float, bool]] = []
        self._secret = secrets.token_bytes(16)
        self.namespaces: dict[str, Namespace] = {}
        self.buckets: dict[str, Bucket] = {}
        self.collections: dict[str, Collection] = {}
        self.objects: dict[str, StoredObject] = {}
        self.uploads: dict[str, Upload] = {}
        self.batches: dict[str, Batch] = {}
        self.tasks: dict[str, Task] = {}
        self.documents: dict[str, dict[str, Any]] = {}  # document_id -> document
        stores = (
            self.namespaces,
            self.buckets,
            self.collections,
            self.objects,
            self.uploads,
            self.batches,
            self.tasks,
            self.documents,
        )
        self._finalizer = weakref.finalize(self, _clear, *stores)
        self.app: Starlette = self._build_app()

    def close(self) -> None:
        self._finalizer()

    # -- test knobs ---------------------------------------------------------------------------------

    def throttle(
        self, path_prefix: str, *, times: int = 1, retry_after_s: float = 2.0, header: bool = False
    ) -> None:
        """The next ``times`` requests under ``path_prefix`` are refused with 429 in the v1 shape, the wait in
        ``error.details.retry_after_seconds`` (and in Retry-After when ``header``)."""
        self._throttle.append((path_prefix, times, retry_after_s, header))

    async def deliver_due_webhooks(self) -> int:
        """POST the outcome of every finished batch whose submission named a webhook_url, once each (the
        contract: delivery is not retried; a failed POST is logged and dropped). Returns how many."""
        self._settle()
        t = self.now()
        due = [
            b
            for b in self.batches.values()
            if b.webhook_url and not b.webhook_sent and b.status_at(t) in FINISHED
        ]
        if not due:
            return 0
        for batch in due:  # marked first: the loop and a direct call may overlap
            batch.webhook_sent = True
        payloads = [(b.webhook_url or "", b.webhook_payload(t, time.time())) for b in due]
        self.webhooks_sent.extend(p for _, p in payloads)
        limiter = anyio.CapacityLimiter(WEBHOOK_CONCURRENCY)

        async def post(client: httpx2.AsyncClient, url: str, payload: dict[str, Any]) -> None:
            async with limiter:
                try:
                    await client.post(url, json=payload)
                except Exception as exc:  # a broken receiver must never take the emulator down
                    logger.warning("webhook delivery to %s failed: %r", url, exc)

        async def post_all(client: httpx2.AsyncClient) -> None:
            async with anyio.create_task_group() as tg:
                for url, payload in payloads:
                    tg.start_soon(post, client, url, payload)

        if self.webhook_client is not None:
            await post_all(self.webhook_client)
        else:
            async with httpx2.AsyncClient(timeout=5.0, trust_env=False) as client:
                await post_all(client)
        return len(due)

    def _next_webhook_in(self) -> float:
        t = self.now()
        soonest = WEBHOOK_SWEEP_S
        for batch in self.batches.values():
            if not batch.webhook_url or batch.webhook_sent or batch.submitted is None:
                continue
            if batch.status_at(t) in FINISHED:
                return WEBHOOK_MIN_NAP_S
            stages = 2 if batch.failure is not None else 3
            soonest = min(soonest, batch.submitted + stages * max(0.0, batch.stage_seconds) - t)
        return max(WEBHOOK_MIN_NAP_S, soonest)

    def task_status(self, task_id: str) -> str:
        task = self.tasks[task_id]
        return self.batches[task.batch_id].status_at(self.now())

    # -- app --------------------------------------------------------------------------------------

    def _build_app(self) -> Starlette:
        r = Route
        routes = [
            r("/v1/namespaces", self._create_namespace, methods=["POST"]),
            r("/v1/namespaces/{ident}", self._get_namespace, methods=["GET"]),
            r("/v1/buckets", self._create_bucket, methods=["POST"]),
            r("/v1/buckets", self._list_buckets, methods=["GET"]),
            r("/v1/buckets/{bucket}", self._get_bucket, methods=["GET"]),
            r("/v1/buckets/{bucket}/objects", self._create_object, methods=["POST"]),
            r("/v1/buckets/{bucket}/uploads", self._create_upload, methods=["POST"]),
            r("/v1/buckets/{bucket}/uploads/{upload_id}/confirm", self._confirm_upload, methods=["POST"]),
            r("/v1/buckets/{bucket}/batches", self._create_batch, methods=["POST"]),
            r("/v1/buckets/{bucket}/batches/list", self._list_batches, methods=["POST"]),
            r("/v1/buckets/{bucket}/batches/{batch_id}", self._get_bucket_batch, methods=["GET"]),
            r("/v1/buckets/{bucket}/batches/{batch_id}/submit", self._submit_batch, methods=["POST"]),
            r("/v1/batches/{batch_id}", self._get_batch, methods=["GET"]),
            r("/v1/collections", self._create_collection, methods=["POST"]),
            r("/v1/collections/{ident}", self._get_collection, methods=["GET"]),
            r("/v1/objects/{object_id}/documents", self._object_documents, methods=["GET"]),
            r("/v1/tasks/{task_id}", self._get_task, methods=["GET"]),
            r("/v1/tasks/{task_id}", self._kill_task, methods=["DELETE"]),
            r("/v1/retrievers/execute", self._execute, methods=["POST"]),
            r("/_storage/uploads/{upload_id}", self._store_upload, methods=["PUT"]),
            r("/_storage/thumbnails/{name}", self._thumbnail, methods=["GET"]),
        ]
        return Starlette(
            routes=routes,
            middleware=[
                Middleware(RequestLog, log=self.requests),
                Middleware(FaultMiddleware, plan=self.faults),
                Middleware(_Gate, emulator=self),
            ],
            exception_handlers={HTTPException: _http_error, Refusal: _refusal},
            lifespan=self._lifespan,
        )

    def authenticate(self, headers: Headers) -> bool:
        scheme, _, value = headers.get("authorization", "").partition(" ")
        token = value.strip()
        return (
            scheme.lower() == "bearer"
            and bool(token)
            and hmac.compare_digest(token.encode(), self.master_key.encode())
        )

    def throttled(self, path: str) -> Response | None:
        for i, (prefix, times, seconds, header) in enumerate(self._throttle):
            if path.startswith(prefix) and times > 0:
                self._throttle[i] = (prefix, times - 1, seconds, header)
                return error(
                    429,
                    "Rate limit exceeded for this API key; slow down",
                    "RateLimitError",
                    details={"retryable": True, "retry_after_seconds": seconds},
                    headers={"Retry-After": f"{seconds:g}"} if header else None,
                )
        return None

    # -- helpers ----------------------------------------------------------------------------------

    def _namespace(self, request: Request) -> Namespace:
        """The X-Namespace of a namespaced call, by name or id."""
        wanted = request.headers.get("x-namespace", "").strip()
        if not wanted:
            raise Refusal(
                error(400, "The X-Namespace header is required", "BadRequestError", code="namespace_required")
            )
        found = self._find_namespace(wanted)
        if found is None:
            raise Refusal(not_found("Namespace", wanted, code="namespace_not_found"))
        return found

    def _find_namespace(self, ident: str) -> Namespace | None:
        return self.namespaces.get(ident) or next(
            (n for n in self.namespaces.values() if n.name == ident), None
        )

    def _bucket(self, request: Request, ns: Namespace) -> Bucket:
        ident = request.path_params["bucket"]
        found = self.buckets.get(ident)
        if found is None or found.namespace_id != ns.namespace_id:
            found = next(
                (b for b in self.buckets.values() if b.name == ident and b.namespace_id == ns.namespace_id),
                None,
            )
        if found is None:
            raise Refusal(not_found("Bucket", ident))
        return found

    def _collection(self, ident: str, ns: Namespace) -> Collection | None:
        found = self.collections.get(ident)
        if found is not None and found.namespace_id == ns.namespace_id:
            return found
        return next(
            (c for c in self.collections.values() if c.name == ident and c.namespace_id == ns.namespace_id),
            None,
        )

    def _settle(self) -> None:
        """Write the documents of every batch that has finished by now, once."""
        t = self.now()
        for batch in self.batches.values():
            status = batch.status_at(t)
            if batch.written or status not in FINISHED:
                continue
            batch.written = True
            if status in ("FAILED", "CANCELED"):
                self._mark_objects(batch, status)
                continue
            failed = {p["object_id"] for p in batch.partial}
            batch.documents_written = 0
            for collection_id in batch.collection_ids:
                for oid in batch.object_ids:
                    for doc in segment_documents(
                        self.objects[oid],
                        self.collections[collection_id],
                        embedding_output=self.embedding_output,
                        failed_transcription=oid in failed,
                    ):
                        doc["_batch"] = batch.batch_id
                        self.documents[doc["document_id"]] = doc
                        batch.documents_written += 1
            self._mark_objects(batch, "COMPLETED")

    def _mark_objects(self, batch: Batch, status: str) -> None:
        for oid in batch.object_ids:
            self.objects[oid].status = status

    def _visible(self, doc: dict[str, Any]) -> bool:
        return self.batches[doc["_batch"]].resolvable(self.now())

    def _public(self, doc: dict[str, Any], origin: str, **extra: Any) -> dict[str, Any]:
        out = {k: v for k, v in doc.items() if k != "_batch"}
        if isinstance(out.get("thumbnail_url"), str) and out["thumbnail_url"].startswith("/"):
            out["thumbnail_url"] = origin + out["thumbnail_url"]
        return {**out, **extra}

    # -- namespaces -------------------------------------------------------------------------------

    async def _create_namespace(self, request: Request) -> Response:
        params = parse(CreateNamespace, await body_of(request))
        if self._find_namespace(params.namespace_name) is not None:
            return error(
                409,
                f"Namespace {params.namespace_name!r} already exists",
                "ConflictError",
                code="namespace_name_taken",
            )
        ns = Namespace(params.namespace_id or new_id("ns"), params.namespace_name, params.description, iso())
        self.namespaces[ns.namespace_id] = ns
        self.created["namespace"] += 1
        return JSONResponse(ns.json())

    async def _get_namespace(self, request: Request) -> Response:
        found = self._find_namespace(request.path_params["ident"])
        if found is None:
            return not_found("Namespace", request.path_params["ident"], code="namespace_not_found")
        return JSONResponse(found.json())

    # -- buckets ----------------------------------------------------------------------------------

    async def _create_bucket(self, request: Request) -> Response:
        ns = self._namespace(request)
        params = parse(CreateBucket, await body_of(request))
        if any(
            b.name == params.bucket_name and b.namespace_id == ns.namespace_id for b in self.buckets.values()
        ):
            return error(
                409,
                f"Bucket {params.bucket_name!r} already exists",
                "ConflictError",
                code="bucket_name_taken",
            )
        schema = {
            name: spec.model_dump(exclude_none=True) for name, spec in params.bucket_schema.properties.items()
        }
        bucket = Bucket(new_id("bkt"), ns.namespace_id, params.bucket_name, schema, params.description, iso())
        self.buckets[bucket.bucket_id] = bucket
        self.created["bucket"] += 1
        return JSONResponse(bucket.json())

    async def _list_buckets(self, request: Request) -> Response:
        ns = self._namespace(request)
        search = request.query_params.get("search", "").lower()
        limit = _int_param(request, "limit", 10, 1, 1000)
        offset = _int_param(request, "offset", 0, 0, None)
        found = [
            b.json()
            for b in self.buckets.values()
            if b.namespace_id == ns.namespace_id and search in b.name.lower()
        ]
        page = found[offset : offset + limit]
        return JSONResponse(
            {
                "results": page,
                "total_count": len(found),
                "pagination": {"total": len(found), "limit": limit, "offset": offset},
            }
        )

    async def _get_bucket(self, request: Request) -> Response:
        return JSONResponse(self._bucket(request, self._namespace(request)).json())

    # -- collections ------------------------------------------------------------------------------

    async def _create_collection(self, request: Request) -> Response:
        ns = self._namespace(request)
        params = parse(CreateCollection, await body_of(request))
        if self._collection(params.collection_name, ns) is not None:
            return error(
                409,
                f"Collection {params.collection_name!r} already exists",
                "ConflictError",
                code="collection_name_taken",
            )
        if params.source.type != "bucket":
            return refused(["body", "source", "type"], "only bucket sources are emulated", "value_error")
        bucket_ids = params.source.bucket_ids or (
            [params.source.bucket_id] if params.source.bucket_id else []
        )
        buckets = [self.buckets.get(b) for b in bucket_ids]
        if not buckets or any(b is None or b.namespace_id != ns.namespace_id for b in buckets):
            return not_found("Bucket", ", ".join(bucket_ids) or "(none given)")
        extractor = params.feature_extractor
        if extractor is None:
            return refused(["body", "feature_extractor"], "Field required", "missing")
        if extractor.feature_extractor_name != "multimodal_extractor":
            return error(
                404,
                f"Feature extractor {extractor.feature_extractor_name!r} not found",
                "NotFoundError",
                code="feature_extractor_not_found",
            )
        try:
            parameters = MultimodalParameters.model_validate(extractor.parameters or {})
        except PydanticValidationError as exc:
            return invalid(validation_problems(exc, ["body", "feature_extractor", "parameters"]))
        problems = []
        source = buckets[0]
        assert source is not None
        for name, prop in (extractor.input_mappings or {"video": "video"}).items():
            if source.field_type(prop) != "video":
                problems.append(
                    problem(
                        ["body", "feature_extractor", "input_mappings", name],
                        f"bucket has no video property {prop!r}",
                        "value_error",
                    )
                )
        for i, rule in enumerate(extractor.field_passthrough or []):
            if source.field_type(rule.source_path.split(".", 1)[0]) is None:
                problems.append(
                    problem(
                        ["body", "feature_extractor", "field_passthrough", i, "source_path"],
                        f"{rule.source_path!r} is not in the bucket schema",
                        "value_error",
                    )
                )
        if problems:
            return invalid(problems)
        indexes = []
        if parameters.run_multimodal_embedding:
            uri = f"mixpeek://multimodal_extractor@v1/{self.embedding_output}"
            indexes.append(
                {
                    "name": self.embedding_output,
                    "feature_uri": uri,
                    "type": "single",
                    "index": {"dimensions": 3072, "distance": "cosine"},
                }
            )
        if parameters.run_transcription and parameters.run_transcription_embedding:
            uri = "mixpeek://multimodal_extractor@v1/transcription_embedding"
            indexes.append(
                {
                    "name": "transcription_embedding",
                    "feature_uri": uri,
                    "type": "single",
                    "index": {"dimensions": 1024, "distance": "cosine"},
                }
            )
        collection = Collection(
            collection_id=new_id("col"),
            namespace_id=ns.namespace_id,
            name=params.collection_name,
            bucket_ids=bucket_ids,
            extractor=extractor.model_dump(exclude_none=True),
            params=parameters,
            passthrough=list(extractor.field_passthrough or []),
            vector_indexes=indexes,
            description=params.description,
            created_at=iso(),
        )
        self.collections[collection.collection_id] = collection
        self.created["collection"] += 1
        return JSONResponse(collection.json(source.schema))

    async def _get_collection(self, request: Request) -> Response:
        ns = self._namespace(request)
        found = self._collection(request.path_params["ident"], ns)
        if found is None:
            return not_found("Collection", request.path_params["ident"])
        return JSONResponse(found.json(self.buckets[found.bucket_ids[0]].schema))

    # -- objects and uploads ----------------------------------------------------------------------

    def _object_fields(
        self, bucket: Bucket, fields: dict[str, Any], where: list[str | int]
    ) -> list[dict[str, Any]]:
        problems = []
        for key, value in fields.items():
            kind = bucket.field_type(key)
            if kind is None:
                problems.append(
                    problem(
                        [*where, key],
                        "Extra inputs are not permitted (not in the bucket schema)",
                        "extra_forbidden",
                    )
                )
            elif kind in BLOB_TYPES:
                problems.append(
                    problem([*where, key], f"{key!r} is a {kind} property: send it as a blob", "value_error")
                )
            elif kind == "object" and not isinstance(value, dict):
                problems.append(problem([*where, key], "Input should be a valid dictionary", "dict_type"))
        return problems

    def _new_object(
        self,
        bucket: Bucket,
        ns: Namespace,
        blob: dict[str, Any],
        fields: dict[str, Any],
        *,
        source: str,
        seed: str,
        duration: float,
        unreachable: str | None,
        key: str | None,
    ) -> StoredObject:
        obj = StoredObject(
            new_id("obj"),
            bucket.bucket_id,
            ns.namespace_id,
            [blob],
            fields,
            source,
            seed,
            duration,
            unreachable,
            key,
            iso(),
        )
        self.objects[obj.object_id] = obj
        self.created["object"] += 1
        return obj

    async def _create_object(self, request: Request) -> Response:
        ns = self._namespace(request)
        bucket = self._bucket(request, ns)
        data = await body_of(request)
        if not isinstance(data, dict):
            return refused(["body"], "Input should be a valid dictionary", "dict_type")
        fields = {k: v for k, v in data.items() if k not in OBJECT_KEYS}
        problems = self._object_fields(bucket, fields, ["body"])
        blobs_raw = data.get("blobs")
        if not isinstance(blobs_raw, list) or len(blobs_raw) != 1:
            problems.append(
                problem(["body", "blobs"], "exactly one blob is emulated per object", "value_error")
            )
        if problems or not isinstance(blobs_raw, list):
            return invalid(problems)
        blob = parse(CreateBlob, blobs_raw[0], ["body", "blobs", 0])
        kind = bucket.field_type(blob.property)
        if kind is None or kind != blob.type:
            return refused(
                ["body", "blobs", 0, "property"],
                f"bucket property {blob.property!r} is not a {blob.type} field",
                "value_error",
            )
        url = blob.data if isinstance(blob.data, str) else (blob.data or {}).get("url")
        if not isinstance(url, str) or not url.lower().startswith(("http://", "https://")):
            return refused(["body", "blobs", 0, "data"], "a URL (http or https) is required", "url_parsing")
        key = data.get("idempotency_key")
        if isinstance(key, str):
            for existing in self.objects.values():
                if existing.bucket_id == bucket.bucket_id and existing.idempotency_key == key:
                    return JSONResponse(existing.json())
        obj = self._new_object(
            bucket,
            ns,
            {"property": blob.property, "type": blob.type, "properties": {"url": url}},
            fields,
            source=url,
            seed=url,
            duration=video_duration(url),
            unreachable=unreachable_reason(url),
            key=key if isinstance(key, str) else None,
        )
        return JSONResponse(obj.json())

    def _signature(self, upload_id: str) -> str:
        return hmac.new(self._secret, upload_id.encode(), hashlib.sha256).hexdigest()

    async def _create_upload(self, request: Request) -> Response:
        ns = self._namespace(request)
        bucket = self._bucket(request, ns)
        params = parse(CreateUpload, await body_of(request))
        prop = params.blob_property
        if prop is None:
            files = [k for k in bucket.schema if bucket.field_type(k) in BLOB_TYPES]
            prop = files[0] if len(files) == 1 else params.filename.rsplit(".", 1)[0]
        if params.create_object_on_confirm:
            if bucket.field_type(prop) not in BLOB_TYPES:
                return refused(
                    ["body", "blob_property"], f"{prop!r} is not a file property of the bucket", "value_error"
                )
            problems = self._object_fields(bucket, params.object_metadata or {}, ["body", "object_metadata"])
            if problems:
                return invalid(problems)
        upload = Upload(
            upload_id=new_id("upl"),
            bucket_id=bucket.bucket_id,
            namespace_id=ns.namespace_id,
            filename=base_name(params.filename),
            content_type=params.content_type,
            expected_size=params.file_size_bytes,
            blob_property=prop,
            object_metadata=dict(params.object_metadata or {}),
            create_object_on_confirm=params.create_object_on_confirm,
            created=self.now(),
            expires_in=params.presigned_url_expiration,
            created_at=iso(),
        )
        self.uploads[upload.upload_id] = upload
        origin = public_origin(self.base_url, request)
        url = f"{origin}/_storage/uploads/{upload.upload_id}?X-Amz-Expires={upload.expires_in}&X-Amz-Signature={self._signature(upload.upload_id)}"
        return JSONResponse(
            {
                "upload_id": upload.upload_id,
                "bucket_id": bucket.bucket_id,
                "filename": upload.filename,
                "content_type": upload.content_type,
                "file_size_bytes": upload.expected_size,
                "presigned_url": url,
                "presigned_url_expiration": upload.expires_in,
                "status": "PENDING",
                "create_object_on_confirm": upload.create_object_on_confirm,
                "object_metadata": upload.object_metadata,
                "blob_property": prop,
                "is_duplicate": False,
                "created_at": upload.created_at,
                "expires_at": iso(time.time() + upload.expires_in),
            }
        )

    async def _store_upload(self, request: Request) -> Response:
        """The storage side of a presigned URL: the signature is the only credential; S3-style XML errors."""
        upload = self.uploads.get(request.path_params["upload_id"])
        signature = request.query_params.get("X-Amz-Signature", "")
        if upload is None or not hmac.compare_digest(signature, self._signature(upload.upload_id)):
            return _s3_error(
                403, "SignatureDoesNotMatch", "The request signature we calculated does not match"
            )
        if self.now() > upload.created + upload.expires_in:
            return _s3_error(403, "AccessDenied", "Request has expired")
        if request.headers.get("content-type", "").split(";")[0].strip() != upload.content_type:
            return _s3_error(403, "SignatureDoesNotMatch", "Content-Type does not match the signed one")
        upload.data = await request.body()
        upload.etag = '"' + hashlib.md5(upload.data, usedforsecurity=False).hexdigest() + '"'
        return Response(status_code=200, headers={"ETag": upload.etag})

    async def _confirm_upload(self, request: Request) -> Response:
        ns = self._namespace(request)
        bucket = self._bucket(request, ns)
        upload = self.uploads.get(request.path_params["upload_id"])
        if upload is None or upload.bucket_id != bucket.bucket_id:
            return not_found("Upload", request.path_params["upload_id"])
        params = parse(ConfirmUpload, await body_of(request, optional=True))
        if upload.data is None:
            return error(
                400,
                "The file was not found in storage: PUT it to the presigned URL first",
                "BadRequestError",
                code="upload_not_found_in_storage",
            )
        if params.etag is not None and params.etag.strip('"') != (upload.etag or "").strip('"'):
            return error(
                400,
                "ETag mismatch: the stored file differs from the one you uploaded",
                "BadRequestError",
                code="etag_mismatch",
            )
        if params.file_size_bytes is not None and params.file_size_bytes != len(upload.data):
            return error(
                400,
                f"Size mismatch: {len(upload.data)} bytes stored, {params.file_size_bytes} declared",
                "BadRequestError",
                code="size_mismatch",
            )
        if upload.object_id is None and upload.create_object_on_confirm:
            digest = hashlib.sha256(upload.data).hexdigest()
            assert upload.blob_property is not None
            obj = self._new_object(
                bucket,
                ns,
                {
                    "property": upload.blob_property,
                    "type": "video",
                    "properties": {
                        "url": f"s3://mixpeek-sandbox/{upload.upload_id}/{upload.filename}",
                        "filename": upload.filename,
                    },
                },
                upload.object_metadata,
                source=upload.filename,
                seed=digest,
                duration=mp4_duration(upload.data) or video_duration(digest),
                unreachable=None,
                key=None,
            )
            upload.object_id = obj.object_id
        return JSONResponse(
            {
                "upload_id": upload.upload_id,
                "status": "COMPLETED",
                "etag": upload.etag,
                "file_size_bytes": len(upload.data),
                "object_id": upload.object_id,
                "completed_at": iso(),
            }
        )

    # -- batches and tasks ------------------------------------------------------------------------

    async def _create_batch(self, request: Request) -> Response:
        ns = self._namespace(request)
        bucket = self._bucket(request, ns)
        params = parse(CreateBatch, await body_of(request))
        if not params.object_ids:
            return refused(
                ["body", "object_ids"], "object_ids is required (filters are not emulated)", "missing"
            )
        unknown = [
            o
            for o in params.object_ids
            if o not in self.objects or self.objects[o].bucket_id != bucket.bucket_id
        ]
        if unknown:
            return not_found("Object", unknown[0])
        collections = [c.collection_id for c in self.collections.values() if bucket.bucket_id in c.bucket_ids]
        if params.collection_ids:
            collections = [
                c
                for c in collections
                if c in params.collection_ids or self.collections[c].name in params.collection_ids
            ]
        batch = Batch(
            batch_id=new_id("btch"),
            bucket_id=bucket.bucket_id,
            namespace_id=ns.namespace_id,
            object_ids=list(params.object_ids),
            collection_ids=collections,
            batch_name=params.batch_name,
            created_at=iso(),
            stage_seconds=self.stage_seconds,
            resolve_seconds=self.resolve_seconds,
        )
        self.batches[batch.batch_id] = batch
        self.created["batch"] += 1
        return JSONResponse(batch.json(self.now()))

    def _find_batch(self, request: Request, ns: Namespace, bucket: Bucket | None) -> Batch:
        batch = self.batches.get(request.path_params["batch_id"])
        if (
            batch is None
            or batch.namespace_id != ns.namespace_id
            or (bucket is not None and batch.bucket_id != bucket.bucket_id)
        ):
            raise Refusal(not_found("Batch", request.path_params["batch_id"]))
        return batch

    async def _submit_batch(self, request: Request) -> Response:
        ns = self._namespace(request)
        batch = self._find_batch(request, ns, self._bucket(request, ns))
        params = parse(SubmitBatch, await body_of(request, optional=True))
        if batch.submitted is not None:
            return error(
                409,
                f"Batch {batch.batch_id} was already submitted",
                "ConflictError",
                code="batch_already_submitted",
            )
        if not batch.collection_ids:
            return error(
                400, "No collection reads from this bucket: create one before submitting", "BadRequestError"
            )
        batch.submitted = self.now()
        batch.webhook_url = params.webhook_url or None
        objects = [self.objects[o] for o in batch.object_ids]
        batch.failure = next(
            (f"Failed to download {o.source}: {o.unreachable}" for o in objects if o.unreachable), None
        )
        transcribing = any(self.collections[c].params.run_transcription for c in batch.collection_ids)
        batch.partial = [
            {
                "object_id": o.object_id,
                "error": "transcription failed: the video has no audio track",
                "missing_feature": "transcription",
            }
            for o in objects
            if transcribing and NO_AUDIO_MARK in o.source.lower()
        ]
        batch.minutes = sum(o.duration_s for o in objects) / 60
        task = Task(new_id("tsk"), batch.batch_id, batch.bucket_id, ns.namespace_id)
        batch.task_id = task.task_id
        self.tasks[task.task_id] = task
        self.created["task"] += 1
        return JSONResponse(self._task_json(task))

    async def _get_bucket_batch(self, request: Request) -> Response:
        ns = self._namespace(request)
        self._settle()
        return JSONResponse(self._find_batch(request, ns, self._bucket(request, ns)).json(self.now()))

    async def _get_batch(self, request: Request) -> Response:
        ns = self._namespace(request)
        self._settle()
        return JSONResponse(self._find_batch(request, ns, None).json(self.now()))

    async def _list_batches(self, request: Request) -> Response:
        ns = self._namespace(request)
        bucket = self._bucket(request, ns)
        params = parse(ListBatches, await body_of(request, optional=True))
        self._settle()
        t = self.now()
        found = [
            b.json(t)
            for b in sorted(self.batches.values(), key=lambda b: b.created_at, reverse=True)
            if b.bucket_id == bucket.bucket_id
            and (params.status is None or b.json(t)["status"] == params.status)
        ]
        page = found[params.offset : params.offset + params.limit]
        return JSONResponse(
            {
                "results": page,
                "total_count": len(found),
                "pagination": {"offset": params.offset, "limit": params.limit},
            }
        )

    def _task_json(self, task: Task) -> dict[str, Any]:
        batch = self.batches[task.batch_id]
        status = batch.status_at(self.now())
        body: dict[str, Any] = {
            "task_id": task.task_id,
            "task_type": "api_buckets_batches_process",
            "status": status,
            "inputs": [task.batch_id],
            "outputs": [
                {
                    "documents_written": sum(
                        1 for d in self.documents.values() if d["_batch"] == batch.batch_id
                    )
                }
            ]
            if status in ("COMPLETED", "COMPLETED_WITH_ERRORS")
            else None,
            "additional_data": {
                "batch_id": batch.batch_id,
                "bucket_id": batch.bucket_id,
                "namespace_id": batch.namespace_id,
            },
            "queue_position": 1 if status == "PENDING" else None,
        }
        if status == "FAILED":
            body["error"] = batch.failure
            body["additional_data"]["error"] = batch.failure
        return body

    def _live_task(self, request: Request) -> Task | None:
        """The task, unless it never existed or has left the store (``task_ttl_s`` after it finished)."""
        task = self.tasks.get(request.path_params["task_id"])
        if task is None:
            return None
        done = self.batches[task.batch_id].finished_at(self.now())
        if done is not None and self.now() > done + self.task_ttl_s:
            return None
        return task

    async def _get_task(self, request: Request) -> Response:
        self.polls[request.path_params["task_id"]] += 1
        self._settle()
        task = self._live_task(request)
        if task is None:
            return not_found("Task", request.path_params["task_id"])
        return JSONResponse(self._task_json(task))

    async def _kill_task(self, request: Request) -> Response:
        self._settle()
        task = self._live_task(request)
        if task is None:
            return not_found("Task", request.path_params["task_id"])
        batch = self.batches[task.batch_id]
        if batch.status_at(self.now()) in FINISHED:
            return JSONResponse({"message": "Task already finished", "success": False})
        batch.cancelled = self.now()
        self._settle()
        return JSONResponse({"message": "Task killed", "success": True})

    # -- documents and retrieval -------------------------------------------------------------------

    async def _object_documents(self, request: Request) -> Response:
        ns = self._namespace(request)
        obj = self.objects.get(request.path_params["object_id"])
        if obj is None or obj.namespace_id != ns.namespace_id:
            return not_found("Object", request.path_params["object_id"])
        self._settle()
        wanted = set(request.query_params.getlist("collection_ids"))
        origin = public_origin(self.base_url, request)
        docs = [
            self._public(d, origin)
            for d in self.documents.values()
            if d["_internal"]["lineage"]["root_object_id"] == obj.object_id
            and self._visible(d)
            and (
                not wanted
                or d["collection_id"] in wanted
                or self.collections[d["collection_id"]].name in wanted
            )
        ]
        return JSONResponse({"object_id": obj.object_id, "total_documents": len(docs), "documents": docs})

    async def _execute(self, request: Request) -> Response:
        ns = self._namespace(request)
        params = parse(ExecuteRetriever, await body_of(request))
        self._settle()
        targets: list[Collection] = []
        for ident in params.collection_identifiers or []:
            found = self._collection(ident, ns)
            if found is None:
                return not_found("Collection", ident)
            targets.append(found)
        logic = None
        if params.filters is not None:
            logic = parse(retrieval.LogicalOperator, params.filters, ["body", "filters"])
            problems = retrieval.filter_problems(logic, ["body", "filters"])
            if problems:
                return invalid(problems)
        pool = [
            d
            for d in self.documents.values()
            if self._visible(d) and self.collections[d["collection_id"]].namespace_id == ns.namespace_id
        ]
        if logic is not None:
            pool = [d for d in pool if retrieval.matches(logic, d)]
        statistics: dict[str, Any] = {}
        scores: dict[str, float] | None = None
        for s_index, stage in enumerate(params.stages):
            if stage.config.get("stage_id") != "feature_search":
                return refused(
                    ["body", "stages", s_index, "config", "stage_id"],
                    f"unknown stage_id {stage.config.get('stage_id')!r}",
                    "value_error",
                )
            stage_params = parse(
                FeatureSearchParameters,
                stage.config.get("parameters") or {},
                ["body", "stages", s_index, "config", "parameters"],
            )
            rankings = []
            for q_index, search in enumerate(stage_params.searches):
                where: list[str | int] = [
                    "body",
                    "stages",
                    s_index,
                    "config",
                    "parameters",
                    "searches",
                    q_index,
                ]
                names = search.collection_identifiers or stage_params.collection_identifiers
                scope = [self._collection(n, ns) for n in names] if names else targets
                if not scope or any(c is None for c in scope):
                    return refused(
                        [*where, "collection_identifiers"], "unknown or missing collections", "value_error"
                    )
                if any(search.feature_uri not in c.feature_uris for c in scope if c is not None):
                    return refused(
                        [*where, "feature_uri"],
                        f"{search.feature_uri!r} is not a vector index of the collection",
                        "value_error",
                    )
                text = search.query.value if search.query.value is not None else search.query.text
                if not text:
                    return refused([*where, "query", "value"], "a text query is required", "missing")
                ids = {c.collection_id for c in scope if c is not None}
                ranked = []
                for doc in pool:
                    if doc["collection_id"] not in ids or (
                        scores is not None and doc["document_id"] not in scores
                    ):
                        continue
                    points = retrieval.score(doc, text, lexical=search.lexical)
                    if points is not None and (search.min_score is None or points >= search.min_score):
                        ranked.append((doc["document_id"], points))
                ranked.sort(key=lambda r: (-r[1], r[0]))
                rankings.append(ranked[: search.top_k])
            fused = retrieval.fuse(rankings) if rankings else {}
            best = sorted(fused.items(), key=lambda r: (-r[1], r[0]))[: stage_params.final_top_k]
            statistics[stage.stage_name] = {
                "input_count": len(pool) if scores is None else len(scores),
                "output_count": len(best),
            }
            scores = dict(best)
        ordered = sorted((scores or {}).items(), key=lambda r: (-r[1], r[0]))
        paging = params.pagination or OffsetPagination(page_size=params.limit or 10)
        start = (paging.page_number - 1) * paging.page_size
        page = ordered[start : start + paging.page_size]
        origin = public_origin(self.base_url, request)
        return JSONResponse(
            {
                "execution_id": new_id("exec"),
                "status": "completed",
                "documents": [self._public(self.documents[i], origin, score=s) for i, s in page],
                "pagination": {
                    "method": "offset",
                    "page_number": paging.page_number,
                    "page_size": paging.page_size,
                    "returned": len(page),
                    "total": len(ordered),
                    "has_next": start + paging.page_size < len(ordered),
                },
                "stage_statistics": {"stages": statistics},
                "budget": {"credits_used": len(params.stages)},
            }
        )

    async def _thumbnail(self, request: Request) -> Response:
        name = request.path_params["name"]
        return Response(png_bytes(32, 18, color_for(name)), media_type="image/png")


def _int_param(request: Request, name: str, default: int, low: int, high: int | None) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise Refusal(refused(["query", name], "Input should be a valid integer", "int_parsing")) from None
    if value < low or (high is not None and value > high):
        raise Refusal(refused(["query", name], f"Input should be between {low} and {high}", "value_error"))
    return value


def _s3_error(status: int, code: str, message: str) -> Response:
    xml = f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code><Message>{message}</Message></Error>'
    return Response(xml, status_code=status, media_type="application/xml")


async def _http_error(request: Request, exc: Exception) -> Response:
    if not isinstance(exc, HTTPException):  # pragma: no cover - registered for HTTPException only
        raise exc
    kind = {404: "NotFoundError", 405: "MethodNotAllowedError"}.get(exc.status_code, "HTTPError")
    return error(exc.status_code, str(exc.detail), kind)


async def _refusal(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, Refusal)
    return exc.response


def _clear(*stores: dict[str, Any]) -> None:
    for store in stores:
        store.clear()


# Namespaced calls need X-Namespace; these do not (namespace create/read, tasks by id, storage).
_UNNAMESPACED = ("/v1/namespaces", "/v1/tasks/", "/_storage/")


class _Gate:
    """Bearer key (except on presigned storage URLs), then the emulated rate limit; records X-Namespace."""

    def __init__(self, app: ASGIApp, emulator: MixpeekV1Emulator) -> None:
        self.app = app
        self.emulator = emulator

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        path = scope["path"]
        self.emulator.namespace_headers.append((scope["method"], path, headers.get("x-namespace")))
        refusal: Response | None = None
        if not path.startswith("/_storage/") and not self.emulator.authenticate(headers):
            refusal = error(401, "Invalid or missing API key", "AuthenticationError")
        else:
            refusal = self.emulator.throttled(path)
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        await self.app(scope, receive, send)


__all__ = ["NO_AUDIO_MARK", "TASK_TTL_S", "MixpeekV1Emulator"]
