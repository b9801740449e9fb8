"""Mixpeek client for the unversioned "v0" API of the quickstart: index, tasks, asset features, search.

Contract: ``shared/providers/mixpeek-quickstart.txt`` and NOTES §3. That document is a snapshot of
an API that changed weekly in late 2024, so the readers here accept every documented generation:

* ``POST /index/url`` answers ``{message, task_id}`` or an asset object (the SDK's union);
* ``GET /tasks/{id}`` names the asset ``asset_id`` (SDK) or ``file_id`` (older docs);
* ``GET /assets/{id}/features`` answers ``{video_segments, pagination}`` (2024-11-01) or
  ``{asset, features: {video, image, text, audio}}`` (2024-11-07 on); both become one
  :class:`AssetFeatures` with a flat, modality-tagged list of segments;
* ``POST /features/search/text`` is untyped upstream; ``{results, pagination}`` (the documented
  sibling endpoint's shape) and a bare list are both read.

Requests are the strict side: settings and filters are typed models that refuse unknown fields and
out-of-range values (``interval_sec`` ≥ 5 and < 120), so a typo never silently becomes a provider
default on an indexing run. Embedding vectors are never kept: they are large and mean nothing to a
reader.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    model_validator,
)

from mediamux.files import multipart_file_upload
from mediamux.providers._util import Tolerant, number, path_segment
from mediamux.providers.errors import InvalidRequest
from mediamux.providers.status import normalize_status
from mediamux.providers.transport import Retry, Transport

Progress = Callable[[int, int], Awaitable[None]]

# The id pattern the tools advertise, pinned by the tool-surface snapshot. The client itself holds
# ids to the stricter shared rule (providers._util.path_segment): Mixpeek's ids are UUIDs.
ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,199}$")
KEY_PATTERN = r"^[A-Za-z_][A-Za-z0-9_-]*(\.[A-Za-z0-9_-]+)*$"

Operator = Literal["eq", "ne", "gt", "lt", "gte", "lte", "in", "nin", "is_null", "text", "exists"]
SearchModel = Literal["vuse-generic-v1", "multimodal-v1", "image-embed-v1"]
SearchType = Literal["semantic", "fulltext"]
Scalar = str | int | float | bool

Prompt = Annotated[str, Field(min_length=1, max_length=4000)]
DotKey = Annotated[str, Field(min_length=1, max_length=200, pattern=KEY_PATTERN)]


def check_url(url: str, operation: str = "index_url") -> str:
    """Mixpeek fetches the URL itself and documents only http(s): anything else is refused here."""
    url = url.strip()
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname or any(c.isspace() for c in url):
        raise InvalidRequest(
            f"Mixpeek {operation}: {url[:200]!r} is not an http(s) URL; give a public http:// or https:// link "
            "to the media (or use mixpeek_index_file for a local file)",
            provider="mixpeek",
            operation=operation,
        )
    return url


def _seg(value: str, what: str, operation: str) -> str:
    return path_segment(value, what, title="Mixpeek", provider="mixpeek", operation=operation)


# -- request models ----------------------------------------------------------------------------


class _Strict(BaseModel):
    # Requests refuse unknown fields: a misspelt setting must fail here, not be dropped upstream.
    model_config = ConfigDict(extra="forbid")


class JsonOutput(_Strict):
    prompt: Prompt | None = None
    response_shape: dict[str, Any] | None = Field(
        None, description='Shape of the JSON to extract per segment, e.g. {"emotions": ["str"]}'
    )


# Each block names the one model the documents list for it: an unknown model id fails here, before
# an indexing run, rather than upstream after the download.
class _Prompted(_Strict):
    prompt: Prompt | None = None
    json_output: JsonOutput | None = None


class VideoRead(_Prompted):
    """On-screen text (OCR)."""

    model_id: Literal["video-descriptor-v1"] | None = None


class ImageRead(_Prompted):
    """Text in the image (OCR)."""

    model_id: Literal["image-descriptor-v1"] | None = None


class Embed(_Strict):
    model_id: Literal["multimodal-v1"] | None = None


class Transcribe(_Prompted):
    model_id: Literal["polyglot-v1"] | None = None


class _Describe(_Prompted):
    max_length: int | None = Field(None, ge=1, le=100_000, description="Longest description, in characters")


class VideoDescribe(_Describe):
    model_id: Literal["video-descriptor-v1"] | None = None


class ImageDescribe(_Describe):
    model_id: Literal["image-descriptor-v1"] | None = None


class FaceDetect(_Strict):
    model_id: Literal["face-detector-v1"] | None = None
    confidence_threshold: float | None = Field(None, ge=0, le=1)


class LogoDetect(_Strict):
    model_id: Literal["logo-detector-v1"] | None = None
    confidence_threshold: float | None = Field(None, ge=0, le=1)


class Detect(_Strict):
    faces: FaceDetect | None = None
    logos: LogoDetect | None = None


class VideoSetting(_Strict):
    """Feature extraction for a video: one segment every ``interval_sec`` seconds, with the extractors
    named here (an omitted block is not run)."""

    interval_sec: int | None = Field(
        None, ge=5, lt=120, description="Segment length in seconds: at least 5 and under 120"
    )
    read: VideoRead | None = None
    embed: Embed | None = None
    transcribe: Transcribe | None = None
    describe: VideoDescribe | None = None
    detect: Detect | None = None
    json_output: JsonOutput | None = None


class ImageSettings(_Strict):
    """Feature extraction for an image: the video blocks minus interval_sec and transcribe."""

    read: ImageRead | None = None
    embed: Embed | None = None
    describe: ImageDescribe | None = None
    detect: Detect | None = None
    json_output: JsonOutput | None = None


class Condition(_Strict):
    """One test on an indexed field, e.g. ``{"key": "metadata.hello", "operator": "eq", "value": "world"}``."""

    key: DotKey = Field(description="Field in dot notation, e.g. metadata.hello")
    operator: Operator
    value: Scalar | list[Scalar] | None = Field(
        None,
        description="in/nin: a list; gt/lt/gte/lte: a number or date string; text: words to match; "
        "exists/is_null: true or false (true when omitted); eq/ne: any value",
    )

    @model_validator(mode="after")
    def _value_fits_operator(self) -> Condition:
        op, value = self.operator, self.value
        if op in ("in", "nin"):
            if not isinstance(value, list) or not value:
                raise ValueError(f"operator {op!r} needs a non-empty list value")
        elif op in ("gt", "lt", "gte", "lte"):
            if isinstance(value, (bool, list)) or value is None:
                raise ValueError(f"operator {op!r} needs a number or a date string")
        elif op == "text":
            if not isinstance(value, str) or not value.strip():
                raise ValueError("operator 'text' needs a non-empty string")
        elif op in ("exists", "is_null"):
            if value is None:
                self.value = True
            elif not isinstance(value, bool):
                raise ValueError(f"operator {op!r} takes true or false")
        return self


class Filters(_Strict):
    """AND / OR / NOR groups of conditions or nested groups (keys in upper case, as the API spells them)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    and_: list[FilterItem] | None = Field(None, alias="AND", max_length=100)
    or_: list[FilterItem] | None = Field(None, alias="OR", max_length=100)
    nor: list[FilterItem] | None = Field(None, alias="NOR", max_length=100)
    case_sensitive: bool | None = None

    @model_validator(mode="after")
    def _not_empty(self) -> Filters:
        if not (self.and_ or self.or_ or self.nor):
            raise ValueError("a filter group needs at least one condition under AND, OR or NOR")
        return self

    def to_api(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True, exclude_none=True)


def _filter_kind(item: Any) -> str:
    # A condition has a key; anything else is a nested group. Deciding up front keeps a bad operator's
    # error message about the condition, instead of a second complaint that it is not a group either.
    if isinstance(item, dict):
        return "condition" if "key" in item or "operator" in item else "group"
    return "condition" if isinstance(item, Condition) else "group"


FilterItem = Annotated[
    Annotated[Condition, Tag("condition")] | Annotated[Filters, Tag("group")],
    Discriminator(_filter_kind),
]
Filters.model_rebuild()


class Sort(_Strict):
    field: DotKey
    direction: Literal["asc", "desc"] = "desc"


class GroupBy(_Strict):
    field: DotKey = Field(description="Field to group by (it must be indexed separately, e.g. asset_id)")
    max_features: int | None = Field(None, ge=1, le=1000, description="Features kept per group")
    sort: Sort | None = None


# -- response models ---------------------------------------------------------------------------


class IndexAccepted(Tolerant):
    """``/index/url`` or ``/index/upload`` accepted the work: ``{message, task_id}``, or the SDK's other
    union member, an asset object (what ``prevent_duplicate`` may answer with). The client accepts it
    when there is a task to poll or the asset is already DONE."""

    task_id: str | None = None
    asset_id: str | None = Field(None, validation_alias=AliasChoices("asset_id", "file_id"))
    status: str | None = None
    message: str | None = None


class Task(Tolerant):
    task_id: str | None = None
    status: str = "unknown"
    # Older docs call the result ``file_id``; the SDK calls it ``asset_id``.
    asset_id: str | None = Field(None, validation_alias=AliasChoices("asset_id", "file_id"))
    error: Any = None
    message: str | None = None
    reason: Any = None

    @property
    def error_message(self) -> str | None:
        """The failure reason from whichever field carried it (undocumented for v0; NOTES GUESS)."""
        for value in (self.error, self.reason, self.message):
            if value in (None, "", {}, []):
                continue
            if isinstance(value, dict):
                return str(value.get("message") or value.get("detail") or value.get("error") or value)
            return str(value)
        return None


class Pagination(Tolerant):
    total: int | None = None
    page: int | None = None
    page_size: int | None = None
    total_pages: int | None = None
    next_page: str | None = None
    previous_page: str | None = None


class AssetInfo(Tolerant):
    asset_id: str | None = Field(None, validation_alias=AliasChoices("asset_id", "file_id"))
    collection_id: str | None = None
    status: str | None = None
    url: str | None = None
    modality: str | None = None
    metadata: dict[str, Any] | None = None
    error: Any = None
    created_at: str | None = None
    updated_at: str | None = None


class Feature(BaseModel):
    """One extracted feature (a video segment, an image, a text, an audio clip), in either documented shape.

    Only readable fields are kept: ``vectors`` (thousands of floats per segment) never reach a result."""

    model_config = ConfigDict(extra="ignore")

    modality: str | None = Field(None, description="video, image, text or audio")
    feature_id: str | None = None
    start_time: float | None = Field(None, description="Seconds")
    end_time: float | None = Field(None, description="Seconds")
    interval_sec: float | None = None
    description: str | None = None
    transcription: str | None = None
    text: str | None = Field(None, description="Text read on screen")
    json_output: Any = None
    detect: Any = None
    metadata: dict[str, Any] | None = None
    created_at: str | None = None


class AssetFeatures(BaseModel):
    """The features of one asset, one readable shape whichever the provider used."""

    asset_id: str
    asset: AssetInfo | None = Field(None, description="The asset record, when the provider included it")
    features: list[Feature] = Field(default_factory=list, description="Segments in time order per modality")
    pagination: Pagination | None = None
    source_shape: Literal["video_segments", "grouped", "list"] = Field(
        description="Which documented response shape the provider used"
    )


class SearchHit(BaseModel):
    model_config = ConfigDict(extra="ignore")

    score: float | None = None
    asset_id: str | None = Field(None, validation_alias=AliasChoices("asset_id", "file_id"))
    feature_id: str | None = None
    collection_id: str | None = None
    modality: str | None = None
    start_time: float | None = None
    end_time: float | None = None
    url: str | None = None
    caption: str | None = None
    description: str | None = None
    transcription: str | None = None
    text: str | None = None
    metadata: dict[str, Any] | None = None
    created_at: str | None = None


class SearchGroup(BaseModel):
    group: Any = Field(None, description="The group_by field's value shared by these features")
    score: float | None = Field(None, description="Best score in the group")
    features: list[SearchHit] = Field(default_factory=list)


class SearchResults(BaseModel):
    results: list[SearchHit] = Field(default_factory=list, description="Best first")
    groups: list[SearchGroup] | None = Field(None, description="With group_by: one entry per group")
    pagination: Pagination | None = None


def parse_features(asset_id: str, data: Any) -> AssetFeatures:
    """Either documented ``/assets/{id}/features`` shape → :class:`AssetFeatures`.

    Raises:
        ValueError: the body matches neither shape.
    """
    if isinstance(data, list):
        return AssetFeatures(asset_id=asset_id, features=_features(data, None), source_shape="list")
    if not isinstance(data, dict):
        raise ValueError("expected an object")
    pagination = (
        Pagination.model_validate(data["pagination"]) if isinstance(data.get("pagination"), dict) else None
    )
    if isinstance(data.get("features"), dict) or isinstance(data.get("asset"), dict):
        asset = AssetInfo.model_validate(data["asset"]) if isinstance(data.get("asset"), dict) else None
        grouped = data.get("features")
        features: list[Feature] = []
        if not isinstance(grouped, dict):
            grouped = {}
        for modality, items in grouped.items():
            features += _features(items, str(modality))
        return AssetFeatures(
            asset_id=(asset.asset_id if asset and asset.asset_id else asset_id),
            asset=asset,
            features=features,
            pagination=pagination,
            source_shape="grouped",
        )
    # The document's key is video_segments; the same page may carry other "<modality>_segments" lists.
    segment_keys = [k for k in data if isinstance(k, str) and k.endswith("_segments")]
    if segment_keys:
        features = []
        for key in segment_keys:
            features += _features(data[key], key.removesuffix("_segments"))
        return AssetFeatures(
            asset_id=asset_id, features=features, pagination=pagination, source_shape="video_segments"
        )
    raise ValueError("neither video_segments nor asset features in the answer")


def _features(items: Any, modality: str | None) -> list[Feature]:
    if not isinstance(items, list):
        return []
    found = []
    for item in items:
        if not isinstance(item, dict):
            continue
        try:
            feature = Feature.model_validate(item)
        except ValidationError:
            continue  # one unreadable segment must not hide the others
        if feature.modality is None:
            feature.modality = modality
        found.append(feature)
    return found


def parse_search(data: Any) -> SearchResults:
    items: Any = data
    pagination = None
    if isinstance(data, dict):
        items = data.get("results")
        if not isinstance(items, list):
            raise ValueError("no results list in the answer")
        if isinstance(data.get("pagination"), dict):
            pagination = Pagination.model_validate(data["pagination"])
    if not isinstance(items, list):
        raise ValueError("expected a list of results")
    hits: list[SearchHit] = []
    groups: list[SearchGroup] = []
    for item in items:
        if not isinstance(item, dict):
            continue
        if "group" in item and isinstance(item.get("features"), list):
            # group_by answers are undocumented for v0; {group, score, features} is the natural reading.
            groups.append(
                SearchGroup(
                    group=item["group"], score=number(item.get("score")), features=_hits(item["features"])
                )
            )
        else:
            hits += _hits([item])
    return SearchResults(results=hits, groups=groups or None, pagination=pagination)


def _hits(items: list[Any]) -> list[SearchHit]:
    hits = []
    for item in items:
        if isinstance(item, dict):
            try:
                hits.append(SearchHit.model_validate(item))
            except ValidationError:
                continue  # one unreadable hit must not hide the others
    return hits


# -- client ------------------------------------------------------------------------------------


class MixpeekClient:
    provider = "mixpeek"

    def __init__(self, transport: Transport) -> None:
        self.t = transport

    @property
    def origin(self) -> str:
        """Where this provider serves from: its own output URLs are trusted for downloads."""
        return self.t.origin

    def scrub(self, text: str, limit: int = 300) -> str:
        """Provider text made safe to relay: no key in any form, cut to ``limit`` characters."""
        return self.t.scrub(text, limit)

    async def index_url(
        self,
        url: str,
        collection_id: str,
        *,
        metadata: dict[str, Any] | None = None,
        video_settings: Sequence[VideoSetting] | None = None,
        image_settings: ImageSettings | None = None,
        prevent_duplicate: bool | None = None,
    ) -> IndexAccepted:
        body: dict[str, Any] = {
            "url": check_url(url),
            "collection_id": _collection(collection_id, "index_url"),
        }
        body.update(_index_options(metadata, video_settings, image_settings, prevent_duplicate))
        response = await self.t.request(
            "POST", "index/url", operation="index_url", retry=Retry.IF_NOT_SENT, json_body=body
        )
        return self._accepted(self.t.parse_json(response, "index_url"), "index_url")

    async def index_file(
        self,
        path: Path,
        allowed: Sequence[Path],
        collection_id: str,
        *,
        metadata: dict[str, Any] | None = None,
        video_settings: Sequence[VideoSetting] | None = None,
        image_settings: ImageSettings | None = None,
        prevent_duplicate: bool | None = None,
        on_progress: Progress | None = None,
    ) -> IndexAccepted:
        # Multipart form fields are strings: objects travel JSON-encoded (NOTES §3.3).
        fields = {"collection_id": _collection(collection_id, "index_file")}
        for name, value in _index_options(
            metadata, video_settings, image_settings, prevent_duplicate
        ).items():
            fields[name] = json.dumps(value, separators=(",", ":"))

        def body() -> tuple[dict[str, str], Any]:
            upload = multipart_file_upload(
                path, allowed, field="asset", extra_fields=fields, on_progress=on_progress
            )
            return upload.headers, upload.stream

        response = await self.t.request(
            "POST", "index/upload", operation="index_file", retry=Retry.IF_NOT_SENT, body=body
        )
        return self._accepted(self.t.parse_json(response, "index_file"), "index_file")

    def _accepted(self, data: Any, operation: str) -> IndexAccepted:
        accepted = IndexAccepted.model_validate(data) if isinstance(data, dict) else None
        finished_asset = (
            accepted is not None and accepted.asset_id and normalize_status(accepted.status) == "completed"
        )
        if accepted is None or not (accepted.task_id or finished_asset):
            # The work may be under way upstream: say so, so nobody re-sends it blindly.
            error = self.t.malformed(operation, "no task_id in the answer")
            error.maybe_sent = True
            raise error
        for what in ("task_id", "asset_id"):
            value = getattr(accepted, what)
            if value is not None:
                self.t.checked_id(value, what, operation)
        return accepted

    async def get_task(self, task_id: str) -> Task:
        data = await self.t.get_json(f"tasks/{_seg(task_id, 'task id', 'get_task')}", operation="get_task")
        if not isinstance(data, dict):
            raise self.t.malformed("get_task", "expected an object")
        try:
            return Task.model_validate(data)
        except ValidationError as exc:
            raise self.t.malformed("get_task", f"{exc.error_count()} invalid field(s)") from None

    async def cancel_task(self, task_id: str) -> dict[str, Any]:
        """Kill a task. The answer is untyped upstream; whatever object came back is returned."""
        response = await self.t.request(
            "DELETE",
            f"tasks/{_seg(task_id, 'task id', 'cancel_task')}",
            operation="cancel_task",
            retry=Retry.ALWAYS,  # killing a task twice is the same as killing it once
        )
        if not response.content.strip():
            return {}
        data = self.t.parse_json(response, "cancel_task")
        return data if isinstance(data, dict) else {"answer": data}

    async def get_asset_features(self, asset_id: str, page: int = 1, page_size: int = 10) -> AssetFeatures:
        data = await self.t.get_json(
            f"assets/{_seg(asset_id, 'asset id', 'get_asset_features')}/features",
            operation="get_asset_features",
            params={"page": page, "page_size": page_size},
        )
        try:
            return parse_features(asset_id, data)
        except (ValueError, ValidationError) as exc:
            raise self.t.malformed("get_asset_features", str(exc)[:200]) from None

    async def search(
        self,
        query: str,
        collection_ids: Sequence[str],
        *,
        filters: Filters | None = None,
        model_id: SearchModel | None = None,
        search_type: SearchType | None = None,
        group_by: GroupBy | None = None,
        sort: Sort | None = None,
        select: Sequence[str] | None = None,
        page_size: int | None = None,
        offset_position: int | None = None,
    ) -> SearchResults:
        if not collection_ids:
            raise InvalidRequest(
                "Mixpeek search: collection_ids needs at least one collection",
                provider="mixpeek",
                operation="search",
            )
        if group_by is not None and offset_position is not None:
            raise InvalidRequest(
                "Mixpeek search: offset_position does not work with group_by (per the API); drop one of them",
                provider="mixpeek",
                operation="search",
            )
        body: dict[str, Any] = {
            "query": query,
            "collection_ids": [_collection(c, "search") for c in collection_ids],
        }
        optional: dict[str, Any] = {
            "filters": filters.to_api() if filters else None,
            "model_id": model_id,
            "search_type": search_type,
            "group_by": group_by.model_dump(exclude_none=True) if group_by else None,
            "sort": sort.model_dump() if sort else None,
            "select": list(select) if select else None,
        }
        body.update({k: v for k, v in optional.items() if v is not None})
        # Paging is in the query string for this endpoint, not the body (NOTES §3.4).
        params = {"page_size": page_size, "offset_position": offset_position}
        response = await self.t.request(
            "POST",
            "features/search/text",
            operation="search",
            retry=Retry.ALWAYS,  # a search changes nothing upstream
            json_body=body,
            params={k: v for k, v in params.items() if v is not None} or None,
        )
        try:
            return parse_search(self.t.parse_json(response, "search"))
        except (ValueError, ValidationError) as exc:
            raise self.t.malformed("search", str(exc)[:200]) from None


def _collection(value: str, operation: str) -> str:
    value = str(value).strip()
    if not value or len(value) > 200 or any(ord(c) < 32 for c in value):
        raise InvalidRequest(
            f"Mixpeek {operation}: {value[:100]!r} is not a valid collection id",
            provider="mixpeek",
            operation=operation,
        )
    return value


def _index_options(
    metadata: dict[str, Any] | None,
    video_settings: Sequence[VideoSetting] | None,
    image_settings: ImageSettings | None,
    prevent_duplicate: bool | None,
) -> dict[str, Any]:
    """The optional index fields the caller set; unset ones are not sent, so Mixpeek's defaults apply."""
    options: dict[str, Any] = {}
    if metadata is not None:
        options["metadata"] = metadata
    if video_settings:
        options["video_settings"] = [s.model_dump(exclude_none=True) for s in video_settings]
    if image_settings is not None:
        options["image_settings"] = image_settings.model_dump(exclude_none=True)
    if prevent_duplicate is not None:
        options["prevent_duplicate"] = prevent_duplicate
    return options


__all__ = [
    "AssetFeatures",
    "AssetInfo",
    "Condition",
    "Feature",
    "Filters",
    "GroupBy",
    "ImageSettings",
    "IndexAccepted",
    "MixpeekClient",
    "Operator",
    "Pagination",
    "SearchGroup",
    "SearchHit",
    "SearchResults",
    "Sort",
    "Task",
    "VideoSetting",
    "check_url",
    "parse_features",
    "parse_search",
]
