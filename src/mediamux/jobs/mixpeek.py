"""Mixpeek indexing on the job engine: what both API generations share, and the v0 driver.

The index tools take the same arguments whichever API generation is configured (``IndexArgs``: a video,
a collection, metadata and a handful of named features) and answer the same result (``IndexedAsset``
with a short summary of the segments found). Each generation's driver maps them: this module's for the
v0 quickstart API, :mod:`mediamux.jobs.mixpeek_v1` for the live v1 API.

v0 indexing is asynchronous upstream (INITIALIZING → DOWNLOADING → PROCESSING → DONE | FAILED). When the
task is DONE the first page of the asset's features is read once and condensed, so the tool answers with
the asset id and what was found in it without flooding the conversation; ``mixpeek_get_asset_features``
and ``mixpeek://assets/{id}`` have every segment.

The v0 API reports no charge per request: the cost block stays empty (unknown), never a made-up 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final, Literal, Self

from pydantic import BaseModel, Field

from mediamux.jobs.engine import DriverBase, Outcome, ProgressFn
from mediamux.jobs.models import JobError
from mediamux.providers.errors import ProviderError
from mediamux.providers.mixpeek import (
    AssetFeatures,
    Embed,
    ImageDescribe,
    ImageRead,
    ImageSettings,
    IndexAccepted,
    MixpeekClient,
    Transcribe,
    VideoDescribe,
    VideoRead,
    VideoSetting,
)
from mediamux.providers.status import normalize_status

IndexOperation = Literal["index_url", "index_file"]
Feature = Literal["transcription", "description", "ocr", "embedding"]
ALL_FEATURES: Final[tuple[Feature, ...]] = ("transcription", "description", "ocr", "embedding")
DEFAULT_SEGMENT_S = 10

SUMMARY_PAGE_SIZE = 50
SNIPPETS = 3
SNIPPET_CHARS = 200


class Segment(BaseModel):
    """One stretch of a video (or a whole image) and what was extracted from it."""

    start_time: float | None = Field(None, description="Seconds")
    end_time: float | None = Field(None, description="Seconds")
    transcription: str | None = None
    description: str | None = None
    ocr_text: str | None = Field(None, description="Text read on screen")

    @classmethod
    def of(cls, item: Any, **fields: Any) -> Self:
        """The shared fields of a v0 feature or a v1 document (v0 calls the on-screen text ``text``),
        then ``fields``."""
        common = {
            "start_time": item.start_time,
            "end_time": item.end_time,
            "transcription": item.transcription,
            "description": item.description,
            "ocr_text": getattr(item, "ocr_text", None) or getattr(item, "text", None),
        }
        return cls(**{**common, **fields})


class DocumentsSummary(BaseModel):
    segments: int = Field(description="Segments Mixpeek reports for the video")
    duration_s: float | None = Field(None, description="End of the last segment read, in seconds")
    complete: bool = Field(description="False when there are more segments than this summary read")
    first_segments: list[Segment] = Field(
        default_factory=list, description=f"The first {SNIPPETS} segments, texts cut at {SNIPPET_CHARS} chars"
    )


class IndexedAsset(BaseModel):
    asset_id: str | None = Field(
        None, description="The indexed object (asset on the v0 API): for mixpeek_get_asset_features"
    )
    task_id: str | None = None
    batch_id: str | None = None
    bucket_id: str | None = None
    collection_id: str | None = None
    documents: DocumentsSummary | None = None
    documents_error: str | None = Field(
        None, description="Why the segments could not be read; the video itself is indexed"
    )
    problems: list[str] | None = Field(
        None, description="What failed when the video was indexed only in part (the job is then failed)"
    )


class IndexArgs(BaseModel):
    collection_id: str
    url: str | None = Field(None, description="index_url: the media URL")
    path: str | None = Field(None, description="index_file: the local file, confined to the allowed folders")
    file: str | None = Field(
        None, description="index_file: a stamp of the file, so an edited file is a new request"
    )
    metadata: dict[str, Any] | None = None
    features: list[Feature] | None = None
    segment_s: int | None = None

    def wanted(self) -> set[str]:
        return set(self.features if self.features is not None else ALL_FEATURES)


def _cut(text: str | None) -> str | None:
    if not text:
        return None
    text = " ".join(text.split())
    return text if len(text) <= SNIPPET_CHARS else text[: SNIPPET_CHARS - 1] + "…"


def summarize_segments(segments: Sequence[Segment], total: int | None) -> DocumentsSummary:
    """A short account of what was found: how many segments, how long, and the first few, cut short."""
    ends = [s.end_time for s in segments if s.end_time is not None]
    read = len(segments)
    return DocumentsSummary(
        segments=max(total or 0, read),
        duration_s=max(ends) if ends else None,
        complete=total is None or total <= read,
        first_segments=[
            Segment.of(
                s,
                transcription=_cut(s.transcription),
                description=_cut(s.description),
                ocr_text=_cut(s.ocr_text),
            )
            for s in segments[:SNIPPETS]
        ],
    )


def summarize(features: AssetFeatures) -> DocumentsSummary:
    total = features.pagination.total if features.pagination else None
    return summarize_segments([Segment.of(f) for f in features.features], total)


def v0_settings(args: IndexArgs) -> tuple[list[VideoSetting], ImageSettings]:
    """The named features as the quickstart's settings blocks; Mixpeek picks the block that fits the media."""
    wanted = args.wanted()

    def pick(name: str, block: Any) -> Any:
        return block if name in wanted else None

    video = VideoSetting(
        interval_sec=args.segment_s or DEFAULT_SEGMENT_S,
        read=pick("ocr", VideoRead()),
        embed=pick("embedding", Embed()),
        transcribe=pick("transcription", Transcribe()),
        describe=pick("description", VideoDescribe()),
    )
    image = ImageSettings(
        read=pick("ocr", ImageRead()),
        embed=pick("embedding", Embed()),
        describe=pick("description", ImageDescribe()),
    )
    return [video], image


class MixpeekIndexDriver(DriverBase):
    provider = "mixpeek"
    mode: Literal["poll", "background"] = "poll"
    args_model: type[BaseModel] = IndexArgs
    title = "Mixpeek"

    def __init__(
        self, client: MixpeekClient, operation: IndexOperation, *, allowed_dirs: Sequence[Path]
    ) -> None:
        self.client = client
        self.operation: str = operation  # the engine's protocol reads it as a plain str
        self.allowed_dirs = list(allowed_dirs)

    # Mixpeek bills plan credits and publishes no price per indexing run: no estimate.
    can_cancel = True

    async def cancel(self, provider_job_id: str, args: IndexArgs) -> None:
        await self.client.cancel_task(provider_job_id)

    async def submit(self, args: IndexArgs, options: dict[str, Any], progress: ProgressFn) -> Outcome:
        video_settings, image_settings = v0_settings(args)
        settings: dict[str, Any] = {
            "metadata": args.metadata,
            "video_settings": video_settings,
            "image_settings": image_settings,
        }
        if self.operation == "index_url":
            assert args.url is not None
            accepted = await self.client.index_url(args.url, args.collection_id, **settings)
        else:
            assert args.path is not None
            path = Path(args.path)

            async def on_bytes(sent: int, total: int) -> None:
                await progress(sent, total, f"Mixpeek: uploading {path.name} ({sent}/{total} bytes)")

            accepted = await self.client.index_file(
                path, self.allowed_dirs, args.collection_id, on_progress=on_bytes, **settings
            )
        return self._submitted(accepted, args)

    def _submitted(self, accepted: IndexAccepted, args: IndexArgs) -> Outcome:
        if not accepted.task_id:
            # The SDK's other answer: the finished asset that already exists, nothing to poll.
            return Outcome(
                status="completed",
                provider_status=accepted.status,
                result=IndexedAsset(asset_id=accepted.asset_id, collection_id=args.collection_id).model_dump(
                    mode="json"
                ),
            )
        status = normalize_status(accepted.status) if accepted.status else "queued"
        outcome = Outcome(status=status, provider_status=accepted.status, provider_job_id=accepted.task_id)
        if status == "completed":
            outcome.result = IndexedAsset(
                task_id=accepted.task_id, asset_id=accepted.asset_id, collection_id=args.collection_id
            ).model_dump(mode="json")
        return outcome

    async def poll(self, provider_job_id: str, args: IndexArgs, options: dict[str, Any]) -> Outcome:
        task = await self.client.get_task(provider_job_id)
        status = normalize_status(task.status)
        outcome = Outcome(status=status, provider_status=task.status)
        if status == "completed":
            outcome.result = IndexedAsset(
                task_id=provider_job_id, asset_id=task.asset_id, collection_id=args.collection_id
            ).model_dump(mode="json")
        elif status == "failed":
            reason = self.client.scrub(task.error_message or "no reason given")
            outcome.error = JobError(
                error_class="provider_error", message=f"Mixpeek indexing failed: {reason}"
            )
        elif status == "cancelled":
            outcome.error = JobError(
                error_class="provider_error", message="Mixpeek cancelled the indexing task"
            )
        return outcome

    async def finalize(
        self, outcome: Outcome, args: IndexArgs, options: dict[str, Any], progress: ProgressFn
    ) -> Outcome:
        result = IndexedAsset.model_validate(outcome.result or {})
        if not result.asset_id:
            result.documents_error = "Mixpeek reported the task done without an asset id"
            return Outcome(status="completed", result=result.model_dump(mode="json"))
        await progress(0, None, "Mixpeek: reading the asset's features")
        try:
            features = await self.client.get_asset_features(
                result.asset_id, page=1, page_size=SUMMARY_PAGE_SIZE
            )
        except ProviderError as exc:
            # The indexing itself succeeded; a failed read must not turn it into a failure.
            result.documents_error = exc.message
        else:
            result.documents = summarize(features)
        return Outcome(status="completed", result=result.model_dump(mode="json"))
