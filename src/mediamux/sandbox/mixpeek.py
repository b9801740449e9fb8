"""A stateful emulator of the Mixpeek v0 API (https://api.mixpeek.com, late-2024 snapshot), as an ASGI app.

Written from the provider documents (`mixpeek-quickstart.txt` and NOTES §3.2–3.5), not from any client code.

Endpoints
---------
``POST /index/url`` (JSON) and ``POST /index/upload`` (multipart) start a task and create its asset;
``GET /tasks/{task_id}`` polls it; ``DELETE /tasks/{task_id}`` kills it; ``GET /assets/{asset_id}`` and
``GET /assets/{asset_id}/features`` read the result; ``POST /features/search/text`` searches. Every call
needs ``Authorization: Bearer <key>``. Validation errors are FastAPI/pydantic-style 422 bodies.

Lifecycle
---------
Time comes from the injected ``now()``: a task is INITIALIZING for ``stage_seconds``, then DOWNLOADING,
then PROCESSING, then DONE (``stage_seconds`` ≤ 0: DONE at once). A URL the service could not reach fails
at the end of DOWNLOADING (FAILED, with ``error``). "Unreachable" is decided without any network access:
a host that is ``*.invalid``, ``localhost``/``*.localhost`` or a non-public IP literal (private, loopback,
link-local, reserved…), or a URL path containing ``404``. Note that this includes the other sandbox
emulators' loopback URLs, just as the real service could not fetch them.

Features
--------
Each video asset has a deterministic duration of 20–300 s derived from its URL (or upload content) hash and
one feature segment every ``interval_sec`` per ``video_settings`` entry (the last one is cut at the end).
Segments carry ``transcription`` ("m:ss …" lines), ``description`` (always containing the words of the
URL's last path segment, e.g. ``aussie agility`` for ``aussie_agility.mp4``) and ``text`` (OCR: those
words in capitals), plus ``json_output`` shaped after ``json_output.response_shape`` — only for the
extractors a setting asks for (others are null). An image asset has one feature without times.

``features_shape`` selects the ``GET /assets/{id}/features`` answer:
``"segments"`` (default, the provider document of 2024-11-01): ``{"video_segments": [...], "pagination":
{...}}`` paged by ``?page=&page_size=`` (defaults 1 and 10); ``"grouped"`` (SDK 2024-11-07):
``{"asset": AssetResponse, "features": {"video": [...], "image": [...], "text": [], "audio": []}}``, unpaged.

Search
------
Only DONE assets of the given ``collection_ids`` (and of the caller's ``index-id``) are searched, one
result per feature. ``filters`` (``AND``/``OR``/``NOR``, nestable) apply to a document made of the feature
plus its asset's ``asset_id``, ``collection_id``, ``url``, ``modality`` and ``metadata`` (so keys look like
``metadata.hello``). ``search_type: "fulltext"`` scores term matches over transcription, description and
text (only matching features are returned); ``"semantic"`` (default) ranks every feature by the cosine
similarity of hashed bag-of-words + character-trigram vectors. Both are deterministic.

Choices where the documents are silent (GUESSES)
-----------------------------------------------
- Auth failures: 401 ``{"detail": "Invalid or missing API key"}``. Other errors: ``{"detail": str}``.
- ``index-id`` partitions data: tasks, assets and search only see what was created with the same header
  value (no header = its own partition).
- ``video_settings`` omitted → one setting; a setting without ``interval_sec`` uses 10; a setting that names
  none of read/embed/transcribe/describe/detect/json_output gets the quickstart's read, embed, transcribe
  and describe. ``model_id`` values must be the documented ones (422 otherwise).
- Modality: image if the URL/file name has an image extension (png jpg jpeg gif svg webp tiff bmp) or an
  ``image/*`` upload type, or if only ``image_settings`` is given; otherwise video.
- ``url`` must be http(s) with a host (422 otherwise). Uploads go through the same stages and never FAIL;
  the asset's ``url`` is the uploaded file name (like ``"video.mp4"`` in the SDK example).
- ``prevent_duplicate: true`` with an existing non-FAILED asset of the same URL/content in the same
  collection answers that asset's AssetResponse (the SDK's response union) and creates no task.
- ``asset_update {asset_id, mode}`` re-indexes an existing asset (404 if unknown): ``replace`` swaps its
  sources and metadata, ``append`` adds the new source's features and merges metadata.
- Task body: ``{"task_id", "status", "asset_id"}`` plus ``"error"`` when FAILED. ``DELETE /tasks/{id}``
  turns a running task FAILED with ``error: "Task was cancelled"`` and answers ``{"message": "Task
  killed", "task_id"}``; on a finished task it answers ``{"message": "Task already finished", ...}``.
- Features of an asset that is not DONE: an empty list (asset status visible in the grouped shape and in
  ``GET /assets/{id}``). ``next_page``/``previous_page`` point at ``/assets/{id}/features?page=…`` (the
  provider document's example omits ``/features``; that path serves the AssetResponse here).
  ``page`` ≥ 1, ``page_size`` 1–100 (422 otherwise); a page past the end is empty.
- Search response: ``{"results": [feature + asset fields + "metadata" + "score"], "pagination": {total,
  page, page_size, total_pages, next_page, previous_page}}`` where the page links carry
  ``?offset_position=&page_size=`` (defaults 0 and 10; ``page_size`` 1–100). Without a ``query`` every
  feature passing the filters is returned with score 0.
- Filters: ``case_sensitive`` defaults to false and applies to eq/ne/in/nin/text; Mongo semantics for
  missing fields (``ne``/``nin`` match them, comparisons don't); ``eq``/``in`` on a list field match any
  element; ``is_null``/``exists`` take ``value`` true (default) or false; ``text`` needs every word of
  ``value`` in the field; ``gt``/``lt``/``gte``/``lte`` compare numbers with numbers, strings with strings.
- ``sort {field, direction}`` (default desc) orders results by a dot path (missing last), ties by score.
  ``select`` keeps only the listed dot paths, plus ``score``. ``group_by {field, max_features (10),
  sort}`` answers ``{"results": [{"group": value, "score": best, "features": [...]}], "pagination"}``
  paged by ``page_size``; ``offset_position`` is ignored with ``group_by`` ("does not work with group_by").
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import math
import re
import time
import uuid
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, TypeVar
from urllib.parse import unquote, urlencode, urlsplit

from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field
from pydantic import ValidationError as PydanticValidationError
from starlette.applications import Starlette
from starlette.datastructures import Headers, UploadFile
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from mediamux.sandbox.common import Refusal, base_name, public_origin
from mediamux.sandbox.fastapi_errors import detail, http_error, json_body, unprocessable
from mediamux.sandbox.faults import ASGIApp, FaultMiddleware, FaultPlan, Receive, RequestLog, Scope, Send
from mediamux.sandbox.media import seed_digest

TaskStatus = Literal["INITIALIZING", "DOWNLOADING", "PROCESSING", "DONE", "FAILED"]
Modality = Literal["video", "image"]
FeaturesShape = Literal["segments", "grouped"]

STAGES: tuple[TaskStatus, ...] = ("INITIALIZING", "DOWNLOADING", "PROCESSING")
DEFAULT_INTERVAL_SEC = 10
DEFAULT_PAGE_SIZE = 10
MAX_PAGE_SIZE = 100
IMAGE_EXTENSIONS = frozenset({"png", "jpg", "jpeg", "gif", "svg", "webp", "tiff", "tif", "bmp"})
VECTOR_DIM = 1024
_MISSING: Any = object()

# ---------------------------------------------------------------------------------------------------------
# Request schemas (NOTES §3.4). Unknown fields are tolerated; documented ones are type- and range-checked.
# ---------------------------------------------------------------------------------------------------------


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="allow")


class JsonOutputSetting(_Lenient):
    prompt: str | None = None
    response_shape: dict[str, Any] | None = None


class VideoReadSetting(_Lenient):
    model_id: Literal["video-descriptor-v1"] | None = None
    prompt: str | None = None
    json_output: JsonOutputSetting | None = None


class ImageReadSetting(_Lenient):
    model_id: Literal["image-descriptor-v1"] | None = None
    prompt: str | None = None
    json_output: JsonOutputSetting | None = None


class EmbedSetting(_Lenient):
    model_id: Literal["multimodal-v1"] | None = None


class TranscribeSetting(_Lenient):
    model_id: Literal["polyglot-v1"] | None = None
    prompt: str | None = None
    json_output: JsonOutputSetting | None = None


class VideoDescribeSetting(_Lenient):
    model_id: Literal["video-descriptor-v1"] | None = None
    prompt: str | None = None
    max_length: int | None = Field(default=None, ge=1)
    json_output: JsonOutputSetting | None = None


class ImageDescribeSetting(VideoDescribeSetting):
    model_id: Literal["image-descriptor-v1"] | None = None  # type: ignore[assignment]


class FaceDetectSetting(_Lenient):
    model_id: Literal["face-detector-v1"] | None = None
    confidence_threshold: float | None = Field(default=None, ge=0, le=1)


class LogoDetectSetting(_Lenient):
    model_id: Literal["logo-detector-v1"] | None = None
    confidence_threshold: float | None = Field(default=None, ge=0, le=1)


class DetectSetting(_Lenient):
    faces: FaceDetectSetting | None = None
    logos: LogoDetectSetting | None = None


class VideoSetting(_Lenient):
    interval_sec: int | None = Field(default=None, ge=5, lt=120)
    read: VideoReadSetting | None = None
    embed: EmbedSetting | None = None
    transcribe: TranscribeSetting | None = None
    describe: VideoDescribeSetting | None = None
    detect: DetectSetting | None = None
    json_output: JsonOutputSetting | None = None


class ImageSettings(_Lenient):
    read: ImageReadSetting | None = None
    embed: EmbedSetting | None = None
    describe: ImageDescribeSetting | None = None
    detect: DetectSetting | None = None
    json_output: JsonOutputSetting | None = None


class AssetUpdate(_Lenient):
    asset_id: str
    mode: Literal["replace", "append"]


class IndexSettings(_Lenient):
    metadata: dict[str, Any] | None = None
    video_settings: list[VideoSetting] | None = None
    image_settings: ImageSettings | None = None
    prevent_duplicate: bool | None = None
    should_save: bool | None = None
    asset_update: AssetUpdate | None = None


class IndexUrlRequest(IndexSettings):
    url: AnyHttpUrl
    collection_id: str


class IndexUploadRequest(IndexSettings):
    collection_id: str


FilterOperator = Literal["eq", "ne", "gt", "lt", "gte", "lte", "in", "nin", "is_null", "text", "exists"]


class FilterCondition(BaseModel):
    model_config = ConfigDict(extra="forbid")
    key: str
    operator: FilterOperator = "eq"
    value: Any = None


class LogicalOperator(BaseModel):
    model_config = ConfigDict(extra="forbid")
    AND: list[FilterCondition | LogicalOperator] | None = None
    OR: list[FilterCondition | LogicalOperator] | None = None
    NOR: list[FilterCondition | LogicalOperator] | None = None
    case_sensitive: bool | None = None


class SortOption(_Lenient):
    field: str
    direction: Literal["asc", "desc"] = "desc"


class GroupBy(_Lenient):
    field: str
    max_features: int | None = Field(default=None, ge=1)
    sort: SortOption | None = None


class SearchTextRequest(_Lenient):
    collection_ids: list[str]
    query: str | None = None
    model_id: Literal["vuse-generic-v1", "multimodal-v1", "image-embed-v1"] | None = None
    search_type: Literal["semantic", "fulltext"] = "semantic"
    filters: LogicalOperator | None = None
    group_by: GroupBy | None = None
    select: list[str] | None = None
    sort: SortOption | None = None


LogicalOperator.model_rebuild()

_M = TypeVar("_M", bound=BaseModel)

# ---------------------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------------------


def _validation_errors(exc: PydanticValidationError, prefix: list[str | int]) -> list[dict[str, Any]]:
    errors: list[dict[str, Any]] = json.loads(exc.json(include_url=False))
    for error in errors:
        error["loc"] = [*prefix, *error["loc"]]
    return errors


def _parse(model: type[_M], data: Any, prefix: list[str | int]) -> _M:
    try:
        return model.model_validate(data)
    except PydanticValidationError as exc:
        raise Refusal(unprocessable(_validation_errors(exc, prefix))) from exc


def _query_int(request: Request, name: str, default: int, low: int, high: int | None) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        msg = "Input should be a valid integer, unable to parse string as an integer"
        raise Refusal(
            unprocessable([{"type": "int_parsing", "loc": ["query", name], "msg": msg, "input": raw}])
        ) from None
    if value < low:
        error = {
            "type": "greater_than_equal",
            "loc": ["query", name],
            "msg": f"Input should be greater than or equal to {low}",
            "input": raw,
            "ctx": {"ge": low},
        }
        raise Refusal(unprocessable([error]))
    if high is not None and value > high:
        error = {
            "type": "less_than_equal",
            "loc": ["query", name],
            "msg": f"Input should be less than or equal to {high}",
            "input": raw,
            "ctx": {"le": high},
        }
        raise Refusal(unprocessable([error]))
    return value


# ---------------------------------------------------------------------------------------------------------
# Deterministic content
# ---------------------------------------------------------------------------------------------------------

SCENE_WORDS = (
    "dog", "cat", "jumping", "running", "beach", "city", "street", "sunset", "people", "talking",
    "music", "car", "forest", "ocean", "kitchen", "cooking", "yoga", "stretching", "laughing", "dancing",
    "mountain", "snow", "rain", "office", "laptop", "children", "playing", "ball", "bicycle", "crowd",
    "stage", "guitar", "coffee", "garden", "flowers", "river", "bridge", "night", "lights", "training",
)  # fmt: skip
PHRASES = (
    "Look at the {w} over there",
    "This is how the {w} works",
    "We spent the whole day with the {w}",
    "Nobody expected the {w} to do that",
    "Let's talk about the {w} for a second",
    "Here comes the {w} again",
    "I love how the {w} moves",
    "That was the best {w} so far",
)
EMOTIONS = ("happy", "calm", "excited", "neutral", "sad", "surprised", "tense", "joyful")


def unreachable_reason(url: str) -> str | None:
    """Why the (offline) service could not download `url`, or None if it could."""
    parts = urlsplit(url)
    host = (parts.hostname or "").lower().rstrip(".")
    if not host:
        return "the URL has no host"
    if host == "invalid" or host.endswith(".invalid"):
        return f"could not resolve host {host}"
    if host == "localhost" or host.endswith(".localhost"):
        return f"connection refused by {host}"
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        ip = None
    if ip is not None and not ip.is_global:
        return f"{host} is not a publicly routable address"
    if "404" in parts.path:
        return "HTTP 404 Not Found"
    return None


def title_words(name: str) -> list[str]:
    """Words of the last path segment without its extension: 'aussie_agility.mp4' → ['aussie', 'agility']."""
    last = unquote(name.rstrip("/").rsplit("/", 1)[-1])
    stem = last.rsplit(".", 1)[0] if "." in last else last
    words = [w.lower() for w in re.findall(r"[A-Za-z0-9]+", stem)]
    return words or ["untitled"]


def _extension(name: str) -> str:
    last = urlsplit(name).path.rsplit("/", 1)[-1] if "://" in name else name.rsplit("/", 1)[-1]
    return last.rsplit(".", 1)[-1].lower() if "." in last else ""


def _pick(digest: bytes, i: int, options: tuple[str, ...]) -> str:
    return options[digest[i % len(digest)] % len(options)]


def _json_value(shape: Any, seed: str, key: str = "") -> Any:
    digest = seed_digest(f"{seed}|{key}")
    if isinstance(shape, dict):
        return {k: _json_value(v, seed, f"{key}.{k}") for k, v in shape.items()}
    if isinstance(shape, list):
        item = shape[0] if shape else "str"
        return [_json_value(item, seed, f"{key}[{i}]") for i in range(1 + digest[0] % 2)]
    kind = str(shape).lower()
    if kind in ("int", "integer"):
        return digest[1] % 10
    if kind in ("float", "number"):
        return round(digest[1] / 255, 3)
    if kind in ("bool", "boolean"):
        return bool(digest[1] % 2)
    if "emotion" in key.lower():
        return _pick(digest, 2, EMOTIONS)
    return _pick(digest, 2, SCENE_WORDS)


def _timestamp(seconds: float) -> str:
    whole = int(seconds)
    return f"{whole // 60}:{whole % 60:02d}"


def _tokens(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


def _bucket(feature: str) -> int:
    return int.from_bytes(hashlib.blake2b(feature.encode(), digest_size=4).digest(), "big") % VECTOR_DIM


def embed_text(text: str) -> dict[int, float]:
    """A sparse, L2-normalised hashed bag of words plus character trigrams."""
    vector: dict[int, float] = {}
    for token in _tokens(text):
        vector[_bucket(f"w:{token}")] = vector.get(_bucket(f"w:{token}"), 0.0) + 1.0
        padded = f"#{token}#"
        for i in range(len(padded) - 2):
            b = _bucket(f"t:{padded[i : i + 3]}")
            vector[b] = vector.get(b, 0.0) + 0.3
    norm = math.sqrt(sum(v * v for v in vector.values()))
    return {k: v / norm for k, v in vector.items()} if norm else {}


def semantic_score(query: str, text: str) -> float:
    q = embed_text(query)
    d = embed_text(text)
    return round(sum(v * d.get(k, 0.0) for k, v in q.items()), 6)


def fulltext_score(query: str, text: str) -> float:
    terms = _tokens(query)
    if not terms:
        return 0.0
    counts: dict[str, int] = {}
    for token in _tokens(text):
        counts[token] = counts.get(token, 0) + 1
    return round(sum(counts.get(t, 0) / (counts.get(t, 0) + 1) for t in terms) / len(terms), 6)


# ---------------------------------------------------------------------------------------------------------
# State
# ---------------------------------------------------------------------------------------------------------


def _iso(dt: datetime) -> str:
    return dt.isoformat(timespec="microseconds").replace("+00:00", "Z")


@dataclass
class Source:
    """One indexed input of an asset (several after `asset_update` in append mode)."""

    name: str
    seed: str
    modality: Modality
    duration: float
    video_settings: list[VideoSetting]
    image_settings: ImageSettings | None
    failure: str | None


@dataclass
class Task:
    task_id: str
    asset_id: str
    index_id: str
    created: float
    failure: str | None
    stage_seconds: float
    cancelled: bool = False
    final: TaskStatus | None = None

    def status_at(self, t: float) -> TaskStatus:
        if self.final is not None:
            return self.final
        if self.cancelled:
            return "FAILED"
        stage = len(STAGES) if self.stage_seconds <= 0 else int((t - self.created) // self.stage_seconds)
        if self.failure is not None and stage >= 2:
            return "FAILED"
        return STAGES[stage] if stage < len(STAGES) else "DONE"

    def error(self, status: TaskStatus) -> str | None:
        if status != "FAILED":
            return None
        if self.cancelled:
            return "Task was cancelled"
        return self.failure


@dataclass
class Asset:
    asset_id: str
    collection_id: str
    index_id: str
    url: str
    metadata: dict[str, Any]
    modality: Modality
    unique_hash: str
    created_at: str
    task_id: str
    sources: list[Source] = field(default_factory=list)
    updated_at: str = ""


class MixpeekEmulator:
    def __init__(
        self,
        *,
        now: Callable[[], float] = time.monotonic,
        master_key: str = "sandbox-mixpeek-key",
        stage_seconds: float = 2.0,
    ) -> None:
        self.now = now
        self.master_key = master_key
        self.stage_seconds = stage_seconds
        self.features_shape: FeaturesShape = "segments"
        self.base_url: str = ""
        self.tasks_created = 0
        self.polls: dict[str, int] = {}
        self.requests: list[tuple[str, str]] = []
        self.faults = FaultPlan()
        self._tasks: dict[str, Task] = {}
        self._assets: dict[str, Asset] = {}
        self._finalizer = weakref.finalize(self, _clear_all, self._tasks, self._assets)
        self.app: Starlette = self._build_app()

    # -- public helpers ----------------------------------------------------------------------------------

    @property
    def tasks(self) -> dict[str, Task]:
        return self._tasks

    @property
    def assets(self) -> dict[str, Asset]:
        return self._assets

    def task_status(self, task_id: str) -> TaskStatus:
        return self._tasks[task_id].status_at(self.now())

    def close(self) -> None:
        """Forget every task and asset (the emulator keeps no files and runs no background tasks)."""
        self._finalizer()

    # -- app ---------------------------------------------------------------------------------------------

    def _build_app(self) -> Starlette:
        routes = [
            Route("/index/url", self._index_url, methods=["POST"]),
            Route("/index/upload", self._index_upload, methods=["POST"]),
            Route("/tasks/{task_id}", self._get_task, methods=["GET"]),
            Route("/tasks/{task_id}", self._kill_task, methods=["DELETE"]),
            Route("/assets/{asset_id}", self._get_asset, methods=["GET"]),
            Route("/assets/{asset_id}/features", self._get_features, methods=["GET"]),
            Route("/features/search/text", self._search_text, methods=["POST"]),
        ]
        return Starlette(
            routes=routes,
            middleware=[
                Middleware(RequestLog, log=self.requests),
                Middleware(FaultMiddleware, plan=self.faults),
                Middleware(_BearerGate, emulator=self),
            ],
            exception_handlers={HTTPException: http_error},
        )

    def authenticate(self, headers: Headers) -> bool:
        scheme, _, value = headers.get("authorization", "").partition(" ")
        token = value.strip()
        return (
            scheme.lower() == "bearer"
            and bool(token)
            and hmac.compare_digest(token.encode(), self.master_key.encode())
        )

    @staticmethod
    def _index_id(request: Request) -> str:
        return request.headers.get("index-id", "")

    def _task_state(self, task: Task) -> TaskStatus:
        status = task.status_at(self.now())
        if status in ("DONE", "FAILED") and task.final is None:
            task.final = status
            asset = self._assets.get(task.asset_id)
            if asset is not None and asset.task_id == task.task_id:
                asset.updated_at = _iso(datetime.now(UTC))
        return status

    def _asset_status(self, asset: Asset) -> TaskStatus:
        task = self._tasks.get(asset.task_id)
        return self._task_state(task) if task is not None else "DONE"

    # -- indexing ----------------------------------------------------------------------------------------

    def _start(
        self,
        request: Request,
        params: IndexSettings,
        *,
        collection_id: str,
        name: str,
        unique_hash: str,
        content_type: str | None,
        failure: str | None,
        message: str,
    ) -> Response:
        index_id = self._index_id(request)
        if params.prevent_duplicate:
            for existing in self._assets.values():
                if (
                    existing.index_id == index_id
                    and existing.collection_id == collection_id
                    and existing.unique_hash == unique_hash
                    and self._asset_status(existing) != "FAILED"
                ):
                    return JSONResponse(self._asset_json(existing))
        target: Asset | None = None
        if params.asset_update is not None:
            target = self._assets.get(params.asset_update.asset_id)
            if target is None or target.index_id != index_id:
                return detail(404, "Asset not found")
        modality = _modality(name, content_type, params)
        video_settings = [_with_default_extractors(v) for v in params.video_settings or [VideoSetting()]]
        source = Source(
            name=name,
            seed=unique_hash,
            modality=modality,
            duration=0.0
            if modality == "image"
            else float(20 + int.from_bytes(bytes.fromhex(unique_hash[:8]), "big") % 281),
            video_settings=video_settings,
            image_settings=params.image_settings or ImageSettings.model_validate(_default_image_setting()),
            failure=failure,
        )
        task = Task(
            task_id=str(uuid.uuid4()),
            asset_id=target.asset_id if target is not None else str(uuid.uuid4()),
            index_id=index_id,
            created=self.now(),
            failure=f"Failed to download {name}: {failure}" if failure else None,
            stage_seconds=self.stage_seconds,
        )
        stamp = _iso(datetime.now(UTC))
        if target is None:
            target = Asset(
                asset_id=task.asset_id,
                collection_id=collection_id,
                index_id=index_id,
                url=name,
                metadata=dict(params.metadata or {}),
                modality=modality,
                unique_hash=unique_hash,
                created_at=stamp,
                task_id=task.task_id,
                sources=[source],
                updated_at=stamp,
            )
            self._assets[target.asset_id] = target
        else:
            assert params.asset_update is not None
            previous = self._tasks.get(target.task_id)
            if previous is not None:
                self._task_state(previous)
            if params.asset_update.mode == "replace":
                target.sources = [source]
                target.metadata = dict(params.metadata or {})
            else:
                target.sources.append(source)
                target.metadata.update(params.metadata or {})
            target.url, target.modality, target.unique_hash = name, modality, unique_hash
            target.task_id, target.updated_at = task.task_id, stamp
        self._tasks[task.task_id] = task
        self.tasks_created += 1
        self._task_state(task)
        return JSONResponse({"message": message, "task_id": task.task_id})

    async def _index_url(self, request: Request) -> Response:
        try:
            body = await json_body(request)
            params = _parse(IndexUrlRequest, body, ["body"])
        except Refusal as problem:
            return problem.response
        url = str(body["url"])
        return self._start(
            request,
            params,
            collection_id=params.collection_id,
            name=url,
            unique_hash=hashlib.sha256(url.encode()).hexdigest(),
            content_type=None,
            failure=unreachable_reason(url),
            message="URL content processing started",
        )

    async def _index_upload(self, request: Request) -> Response:
        async with request.form(max_files=1) as form:
            upload = form.get("asset")
            fields: dict[str, Any] = {}
            errors: list[dict[str, Any]] = []
            for name in ("metadata", "video_settings", "image_settings", "asset_update"):
                raw = form.get(name)
                if isinstance(raw, str) and raw.strip():
                    try:
                        fields[name] = json.loads(raw)
                    except json.JSONDecodeError as exc:
                        errors.append(
                            {
                                "type": "json_invalid",
                                "loc": ["body", name],
                                "msg": "Invalid JSON",
                                "input": raw,
                                "ctx": {"error": str(exc)},
                            }
                        )
            for name in ("collection_id", "prevent_duplicate", "should_save"):
                raw = form.get(name)
                if isinstance(raw, str):
                    fields[name] = raw
            if not isinstance(upload, UploadFile):
                errors.append(
                    {"type": "missing", "loc": ["body", "asset"], "msg": "Field required", "input": None}
                )
            params: IndexUploadRequest | None = None
            try:
                params = _parse(IndexUploadRequest, fields, ["body"])
            except Refusal as problem:
                errors.extend(json.loads(bytes(problem.response.body))["detail"])
            if errors or params is None or not isinstance(upload, UploadFile):
                return unprocessable(errors)
            digest = hashlib.sha256()
            while chunk := await upload.read(256 * 1024):
                digest.update(chunk)
            name = upload.filename or "upload.bin"
            content_type = upload.content_type
        return self._start(
            request,
            params,
            collection_id=params.collection_id,
            name=base_name(name),
            unique_hash=digest.hexdigest(),
            content_type=content_type,
            failure=None,
            message="File content processing started",
        )

    # -- tasks -------------------------------------------------------------------------------------------

    def _find_task(self, request: Request) -> Task | None:
        task = self._tasks.get(request.path_params["task_id"])
        if task is None or task.index_id != self._index_id(request):
            return None
        return task

    async def _get_task(self, request: Request) -> Response:
        task_id = request.path_params["task_id"]
        self.polls[task_id] = self.polls.get(task_id, 0) + 1
        task = self._find_task(request)
        if task is None:
            return detail(404, "Task not found")
        status = self._task_state(task)
        body: dict[str, Any] = {"task_id": task.task_id, "status": status, "asset_id": task.asset_id}
        error = task.error(status)
        if error is not None:
            body["error"] = error
        return JSONResponse(body)

    async def _kill_task(self, request: Request) -> Response:
        task = self._find_task(request)
        if task is None:
            return detail(404, "Task not found")
        if self._task_state(task) in ("DONE", "FAILED"):
            return JSONResponse({"message": "Task already finished", "task_id": task.task_id})
        task.cancelled = True
        self._task_state(task)
        return JSONResponse({"message": "Task killed", "task_id": task.task_id})

    # -- assets ------------------------------------------------------------------------------------------

    def _find_asset(self, request: Request) -> Asset | None:
        asset = self._assets.get(request.path_params["asset_id"])
        if asset is None or asset.index_id != self._index_id(request):
            return None
        return asset

    def _asset_json(self, asset: Asset) -> dict[str, Any]:
        status = self._asset_status(asset)
        task = self._tasks.get(asset.task_id)
        return {
            "asset_id": asset.asset_id,
            "collection_id": asset.collection_id,
            "created_at": asset.created_at,
            "error": task.error(status) if task is not None else None,
            "metadata": asset.metadata,
            "modality": asset.modality,
            "status": status,
            "task_id": asset.task_id,
            "unique_hash": asset.unique_hash,
            "updated_at": asset.updated_at,
            "url": asset.url,
        }

    def features_of(self, asset: Asset) -> list[dict[str, Any]]:
        """Every feature of a DONE asset, in order (empty while it is processing or after a failure)."""
        if self._asset_status(asset) != "DONE":
            return []
        features: list[dict[str, Any]] = []
        for s_index, source in enumerate(asset.sources):
            features.extend(_source_features(asset, s_index, source))
        return features

    async def _get_asset(self, request: Request) -> Response:
        asset = self._find_asset(request)
        if asset is None:
            return detail(404, "Asset not found")
        return JSONResponse(self._asset_json(asset))

    async def _get_features(self, request: Request) -> Response:
        asset = self._find_asset(request)
        if asset is None:
            return detail(404, "Asset not found")
        features = self.features_of(asset)
        if self.features_shape == "grouped":
            grouped: dict[str, list[dict[str, Any]]] = {"video": [], "image": [], "text": [], "audio": []}
            for feature in features:
                grouped[feature["modality"]].append(feature)
            return JSONResponse({"asset": self._asset_json(asset), "features": grouped})
        try:
            page = _query_int(request, "page", 1, 1, None)
            page_size = _query_int(request, "page_size", DEFAULT_PAGE_SIZE, 1, MAX_PAGE_SIZE)
        except Refusal as problem:
            return problem.response
        total = len(features)
        total_pages = math.ceil(total / page_size)
        base = f"{public_origin(self.base_url, request)}/assets/{asset.asset_id}/features"

        def link(n: int) -> str:
            return f"{base}?{urlencode({'page': n, 'page_size': page_size})}"

        key = "image_segments" if asset.modality == "image" else "video_segments"
        return JSONResponse(
            {
                key: features[(page - 1) * page_size : page * page_size],
                "pagination": {
                    "total": total,
                    "page": page,
                    "page_size": page_size,
                    "total_pages": total_pages,
                    "next_page": link(page + 1) if page < total_pages else None,
                    "previous_page": link(page - 1) if 1 < page <= total_pages + 1 else None,
                },
            }
        )

    # -- search ------------------------------------------------------------------------------------------

    async def _search_text(self, request: Request) -> Response:
        try:
            body = await json_body(request)
            params = _parse(SearchTextRequest, body, ["body"])
            offset = _query_int(request, "offset_position", 0, 0, None)
            page_size = _query_int(request, "page_size", DEFAULT_PAGE_SIZE, 1, MAX_PAGE_SIZE)
        except Refusal as problem:
            return problem.response
        index_id = self._index_id(request)
        wanted = set(params.collection_ids)
        query = (params.query or "").strip()
        scored: list[dict[str, Any]] = []
        for asset in self._assets.values():
            if asset.index_id != index_id or asset.collection_id not in wanted:
                continue
            for feature in self.features_of(asset):
                doc = {
                    **feature,
                    "collection_id": asset.collection_id,
                    "url": asset.url,
                    "metadata": asset.metadata,
                }
                if params.filters is not None and not matches(params.filters, doc):
                    continue
                haystack = " ".join(str(doc.get(k) or "") for k in ("transcription", "description", "text"))
                if not query:
                    score = 0.0
                elif params.search_type == "fulltext":
                    score = fulltext_score(query, haystack)
                    if score <= 0:
                        continue
                else:
                    score = semantic_score(query, haystack)
                scored.append({**doc, "score": score})
        scored.sort(key=lambda d: (-d["score"], d["asset_id"], d.get("start_time") or 0.0, d["feature_id"]))
        if params.sort is not None:
            scored = _sorted_by(scored, params.sort)
        origin = f"{public_origin(self.base_url, request)}/features/search/text"
        if params.group_by is not None:
            return JSONResponse(_grouped_results(scored, params, page_size, origin))
        total = len(scored)
        page_items = scored[offset : offset + page_size]
        if params.select:
            page_items = [_project(item, params.select) for item in page_items]

        def link(at: int) -> str:
            return f"{origin}?{urlencode({'offset_position': at, 'page_size': page_size})}"

        return JSONResponse(
            {
                "results": page_items,
                "pagination": {
                    "total": total,
                    "page": offset // page_size + 1,
                    "page_size": page_size,
                    "total_pages": math.ceil(total / page_size),
                    "next_page": link(offset + page_size) if offset + page_size < total else None,
                    "previous_page": link(max(0, offset - page_size)) if offset > 0 else None,
                },
            }
        )


def _clear_all(*stores: dict[str, Any]) -> None:
    for store in stores:
        store.clear()


_EXTRACTORS = ("read", "embed", "transcribe", "describe", "detect", "json_output")


def _with_default_extractors(setting: VideoSetting) -> VideoSetting:
    """A setting that names no extractor gets the quickstart's read/embed/transcribe/describe."""
    if any(getattr(setting, name) is not None for name in _EXTRACTORS):
        return setting
    return setting.model_copy(
        update={
            "read": VideoReadSetting(model_id="video-descriptor-v1"),
            "embed": EmbedSetting(model_id="multimodal-v1"),
            "transcribe": TranscribeSetting(model_id="polyglot-v1"),
            "describe": VideoDescribeSetting(model_id="video-descriptor-v1"),
        }
    )


def _default_image_setting() -> dict[str, Any]:
    return {
        "read": {"model_id": "image-descriptor-v1"},
        "embed": {"model_id": "multimodal-v1"},
        "describe": {"model_id": "image-descriptor-v1"},
    }


def _modality(name: str, content_type: str | None, params: IndexSettings) -> Modality:
    if (content_type or "").startswith("image/") or _extension(name) in IMAGE_EXTENSIONS:
        return "image"
    if (content_type or "").startswith("video/"):
        return "video"
    if params.image_settings is not None and params.video_settings is None:
        return "image"
    return "video"


def _detect(setting: DetectSetting | None, seed: str) -> dict[str, Any] | None:
    if setting is None:
        return None
    digest = seed_digest(f"{seed}|detect")
    result: dict[str, Any] = {}
    if setting.faces is not None:
        result["faces"] = [
            {"face_id": f"face_{digest[i]:02x}", "confidence": round(0.7 + digest[i + 1] / 255 * 0.3, 3)}
            for i in range(digest[0] % 3)
        ]
    if setting.logos is not None:
        result["logos"] = [
            {"label": _pick(digest, 5 + i, ("acme", "globex", "initech")), "confidence": 0.9}
            for i in range(digest[4] % 2)
        ]
    return result


def _content(
    title: list[str],
    seed: str,
    start: float,
    end: float | None,
    *,
    read: bool,
    transcribe: bool,
    describe: bool,
) -> dict[str, Any]:
    digest = seed_digest(seed)
    words: list[str] = []
    for byte in digest:
        word = SCENE_WORDS[byte % len(SCENE_WORDS)]
        if word not in words:
            words.append(word)
        if len(words) == 5:
            break
    name = " ".join(title)
    description = f"Scene from {name}: {words[0]} and {words[1]} near the {words[2]}, with {words[3]} in the background."
    transcription = None
    if transcribe:
        middle = start + ((end if end is not None else start + 10) - start) / 2
        transcription = (
            f"{_timestamp(start)} {_pick(digest, 6, PHRASES).format(w=words[1])}. "
            f"{_timestamp(middle)} {_pick(digest, 7, PHRASES).format(w=words[4])}. \n"
        )
    return {
        "transcription": transcription,
        "text": f"{name.upper()}\n{words[4].upper()}\n" if read else None,
        "description": description if describe else None,
    }


def _source_features(asset: Asset, s_index: int, source: Source) -> Iterable[dict[str, Any]]:
    if source.modality == "image":
        settings = source.image_settings or ImageSettings()
        seed = f"{source.seed}|image"
        json_output = settings.json_output.response_shape if settings.json_output else None
        yield {
            "feature_id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{asset.asset_id}/{s_index}/image")),
            "asset_id": asset.asset_id,
            "modality": "image",
            "start_time": None,
            "end_time": None,
            "interval_sec": None,
            **_content(
                title_words(source.name),
                seed,
                0.0,
                None,
                read=settings.read is not None,
                transcribe=False,
                describe=settings.describe is not None,
            ),
            "json_output": _json_value(json_output, seed) if json_output is not None else None,
            "detect": _detect(settings.detect, seed),
            "created_at": asset.updated_at,
        }
        return
    for v_index, setting in enumerate(source.video_settings):
        interval = setting.interval_sec or DEFAULT_INTERVAL_SEC
        count = max(1, math.ceil(source.duration / interval))
        shape = setting.json_output.response_shape if setting.json_output else None
        for k in range(count):
            start = float(k * interval)
            end = float(min((k + 1) * interval, source.duration))
            seed = f"{source.seed}|{v_index}|{k}"
            yield {
                "feature_id": str(
                    uuid.uuid5(uuid.NAMESPACE_URL, f"{asset.asset_id}/{s_index}/{v_index}/{k}")
                ),
                "asset_id": asset.asset_id,
                "modality": "video",
                "start_time": start,
                "end_time": end,
                "interval_sec": interval,
                **_content(
                    title_words(source.name),
                    seed,
                    start,
                    end,
                    read=setting.read is not None,
                    transcribe=setting.transcribe is not None,
                    describe=setting.describe is not None,
                ),
                "json_output": _json_value(shape, seed) if shape is not None else None,
                "detect": _detect(setting.detect, seed),
                "created_at": asset.updated_at,
            }


# ---------------------------------------------------------------------------------------------------------
# Filters, sorting, projection, grouping
# ---------------------------------------------------------------------------------------------------------


def lookup(doc: Any, key: str) -> Any:
    """Resolve a dot path; `_MISSING` if any step is absent."""
    current = doc
    for part in key.split("."):
        if isinstance(current, dict) and part in current:
            current = current[part]
        elif isinstance(current, list) and part.isdigit() and int(part) < len(current):
            current = current[int(part)]
        else:
            return _MISSING
    return current


def _fold(value: Any, case_sensitive: bool) -> Any:
    return value.lower() if isinstance(value, str) and not case_sensitive else value


def _equal(field_value: Any, value: Any, case_sensitive: bool) -> bool:
    if field_value is _MISSING:
        return False
    if isinstance(field_value, list) and not isinstance(value, list):
        return any(_equal(item, value, case_sensitive) for item in field_value)
    return bool(_fold(field_value, case_sensitive) == _fold(value, case_sensitive))


def _compare(field_value: Any, value: Any, op: str) -> bool:
    numbers = all(isinstance(v, int | float) and not isinstance(v, bool) for v in (field_value, value))
    strings = isinstance(field_value, str) and isinstance(value, str)
    if not (numbers or strings):
        return False
    if op == "gt":
        return bool(field_value > value)
    if op == "gte":
        return bool(field_value >= value)
    if op == "lt":
        return bool(field_value < value)
    return bool(field_value <= value)


def condition_matches(cond: FilterCondition, doc: dict[str, Any], case_sensitive: bool) -> bool:
    field_value = lookup(doc, cond.key)
    op, value = cond.operator, cond.value
    if op == "eq":
        return _equal(field_value, value, case_sensitive)
    if op == "ne":
        return not _equal(field_value, value, case_sensitive)
    if op in ("gt", "gte", "lt", "lte"):
        return field_value is not _MISSING and _compare(field_value, value, op)
    if op in ("in", "nin"):
        options = value if isinstance(value, list) else [value]
        found = any(_equal(field_value, option, case_sensitive) for option in options)
        return found if op == "in" else not found
    if op == "is_null":
        wanted = True if value is None else bool(value)
        return (field_value is _MISSING or field_value is None) == wanted
    if op == "exists":
        wanted = True if value is None else bool(value)
        return (field_value is not _MISSING) == wanted
    # text: every word of the value occurs in the field
    if not isinstance(field_value, str) or not isinstance(value, str):
        return False
    haystack = field_value if case_sensitive else field_value.lower()
    needles = value.split() if case_sensitive else value.lower().split()
    words = set(re.findall(r"\w+", haystack))
    return all(n in words for n in needles)


def matches(logic: LogicalOperator, doc: dict[str, Any], inherited_case: bool = False) -> bool:
    case_sensitive = inherited_case if logic.case_sensitive is None else logic.case_sensitive

    def check(item: FilterCondition | LogicalOperator) -> bool:
        if isinstance(item, LogicalOperator):
            return matches(item, doc, case_sensitive)
        return condition_matches(item, doc, case_sensitive)

    if logic.AND is not None and not all(check(i) for i in logic.AND):
        return False
    if logic.OR and not any(check(i) for i in logic.OR):
        return False
    return not (logic.NOR and any(check(i) for i in logic.NOR))


def _sorted_by(items: list[dict[str, Any]], sort: SortOption) -> list[dict[str, Any]]:
    present = [i for i in items if lookup(i, sort.field) not in (_MISSING, None)]
    absent = [i for i in items if lookup(i, sort.field) in (_MISSING, None)]

    def key(item: dict[str, Any]) -> tuple[int, Any]:
        value = lookup(item, sort.field)
        return (
            (0, value) if isinstance(value, int | float) and not isinstance(value, bool) else (1, str(value))
        )

    # Stable sort keeps the score order for ties.
    present.sort(key=key, reverse=sort.direction == "desc")
    return present + absent


def _project(item: dict[str, Any], paths: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for path in paths:
        value = lookup(item, path)
        if value is _MISSING:
            continue
        parts = path.split(".")
        target = out
        for part in parts[:-1]:
            target = target.setdefault(part, {})
        target[parts[-1]] = value
    out["score"] = item["score"]
    return out


def _grouped_results(
    scored: list[dict[str, Any]], params: SearchTextRequest, page_size: int, origin: str
) -> dict[str, Any]:
    assert params.group_by is not None
    group_by = params.group_by
    groups: dict[str, list[dict[str, Any]]] = {}
    values: dict[str, Any] = {}
    for item in scored:
        value = lookup(item, group_by.field)
        value = None if value is _MISSING else value
        key = json.dumps(value, sort_keys=True, default=str)
        groups.setdefault(key, []).append(item)
        values[key] = value
    limit = group_by.max_features or 10
    results = []
    for key, items in groups.items():
        if group_by.sort is not None:
            items = _sorted_by(items, group_by.sort)
        shown = items[:limit]
        if params.select:
            shown = [_project(i, params.select) for i in shown]
        results.append({"group": values[key], "score": max(i["score"] for i in items), "features": shown})
    total = len(results)
    return {
        "results": results[:page_size],
        "pagination": {
            "total": total,
            "page": 1,
            "page_size": page_size,
            "total_pages": math.ceil(total / page_size),
            "next_page": None,
            "previous_page": None,
        },
    }


# ---------------------------------------------------------------------------------------------------------
# Middleware
# ---------------------------------------------------------------------------------------------------------


class _BearerGate:
    def __init__(self, app: ASGIApp, emulator: MixpeekEmulator) -> None:
        self.app = app
        self.emulator = emulator

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not self.emulator.authenticate(Headers(scope=scope)):
            await detail(401, "Invalid or missing API key")(scope, receive, send)
            return
        await self.app(scope, receive, send)


__all__ = [
    "Asset",
    "FilterCondition",
    "LogicalOperator",
    "MixpeekEmulator",
    "Task",
    "embed_text",
    "fulltext_score",
    "matches",
    "semantic_score",
    "title_words",
    "unreachable_reason",
]
