"""Mixpeek indexing on the job engine: submit a URL or a file, poll the task, summarise the asset.

Indexing is asynchronous upstream (INITIALIZING → DOWNLOADING → PROCESSING → DONE | FAILED), so it
runs through the engine like every other long job: journal, duplicate guard, progress, wait budget.
When the task is DONE the first page of the asset's features is read once and condensed, so the
tool answers with the asset id and what was found in it without flooding the conversation;
``mixpeek_get_asset_features`` and ``mixpeek://assets/{id}`` have every segment.

Mixpeek reports no charge per request: the cost block stays empty (unknown), never a made-up 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from mediamux.jobs.engine import DriverBase, Outcome, ProgressFn
from mediamux.jobs.models import JobError
from mediamux.providers.errors import ProviderError
from mediamux.providers.mixpeek import (
    AssetFeatures,
    ImageSettings,
    IndexAccepted,
    MixpeekClient,
    VideoSetting,
)
from mediamux.providers.status import normalize_status

IndexOperation = Literal["index_url", "index_file"]

SUMMARY_PAGE_SIZE = 50
SNIPPETS = 3
SNIPPET_CHARS = 200


class SegmentSnippet(BaseModel):
    modality: str | None = None
    start_time: float | None = None
    end_time: float | None = None
    description: str | None = None
    transcription: str | None = None
    text: str | None = Field(None, description="Text read on screen")


class FeaturesSummary(BaseModel):
    segments: int = Field(description="Feature segments Mixpeek reports for the asset")
    by_modality: dict[str, int] = Field(default_factory=dict, description="Segments read, per modality")
    duration_s: float | None = Field(None, description="End of the last segment read, in seconds")
    complete: bool = Field(description="False when the asset has more segments than this summary read")
    first_segments: list[SegmentSnippet] = Field(
        default_factory=list, description=f"The first {SNIPPETS} segments, texts cut at {SNIPPET_CHARS} chars"
    )


class IndexedAsset(BaseModel):
    task_id: str | None = None
    asset_id: str | None = Field(
        None, description="Pass to mixpeek_get_asset_features or mixpeek://assets/{id}"
    )
    features_summary: FeaturesSummary | None = None
    features_error: str | None = Field(
        None, description="Why the features could not be read; the asset itself is indexed"
    )


def _cut(text: str | None) -> str | None:
    if not text:
        return None
    text = " ".join(text.split())
    return text if len(text) <= SNIPPET_CHARS else text[: SNIPPET_CHARS - 1] + "…"


def summarize(features: AssetFeatures) -> FeaturesSummary:
    by_modality: dict[str, int] = {}
    for f in features.features:
        by_modality[f.modality or "unknown"] = by_modality.get(f.modality or "unknown", 0) + 1
    ends = [f.end_time for f in features.features if f.end_time is not None]
    total = (
        features.pagination.total if features.pagination and features.pagination.total is not None else None
    )
    read = len(features.features)
    return FeaturesSummary(
        segments=max(total or 0, read),
        by_modality=by_modality,
        duration_s=max(ends) if ends else None,
        complete=total is None or total <= read,
        first_segments=[
            SegmentSnippet(
                modality=f.modality,
                start_time=f.start_time,
                end_time=f.end_time,
                description=_cut(f.description),
                transcription=_cut(f.transcription),
                text=_cut(f.text),
            )
            for f in features.features[:SNIPPETS]
        ],
    )


class IndexArgs(BaseModel):
    collection_id: str
    url: str | None = Field(None, description="index_url: the media URL")
    path: str | None = Field(None, description="index_file: the local file, confined to the allowed folders")
    file: str | None = Field(
        None, description="index_file: a stamp of the file, so an edited file is a new request"
    )
    metadata: dict[str, Any] | None = None
    video_settings: list[VideoSetting] | None = None
    image_settings: ImageSettings | None = None
    prevent_duplicate: bool | None = None


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
        settings: dict[str, Any] = {
            "metadata": args.metadata,
            "video_settings": args.video_settings or [],
            "image_settings": args.image_settings,
            "prevent_duplicate": args.prevent_duplicate,
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
        return self._submitted(accepted)

    def _submitted(self, accepted: IndexAccepted) -> Outcome:
        if not accepted.task_id:
            # prevent_duplicate answered with the finished asset that already exists: nothing to poll.
            return Outcome(
                status="completed",
                provider_status=accepted.status,
                result=IndexedAsset(asset_id=accepted.asset_id).model_dump(mode="json"),
            )
        status = normalize_status(accepted.status) if accepted.status else "queued"
        outcome = Outcome(status=status, provider_status=accepted.status, provider_job_id=accepted.task_id)
        if status == "completed":
            outcome.result = IndexedAsset(task_id=accepted.task_id, asset_id=accepted.asset_id).model_dump(
                mode="json"
            )
        return outcome

    async def poll(self, provider_job_id: str, args: IndexArgs, options: dict[str, Any]) -> Outcome:
        task = await self.client.get_task(provider_job_id)
        status = normalize_status(task.status)
        outcome = Outcome(status=status, provider_status=task.status)
        if status == "completed":
            outcome.result = IndexedAsset(task_id=provider_job_id, asset_id=task.asset_id).model_dump(
                mode="json"
            )
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
            result.features_error = "Mixpeek reported the task done without an asset id"
            return Outcome(status="completed", result=result.model_dump(mode="json"))
        await progress(0, None, "Mixpeek: reading the asset's features")
        try:
            features = await self.client.get_asset_features(
                result.asset_id, page=1, page_size=SUMMARY_PAGE_SIZE
            )
        except ProviderError as exc:
            # The indexing itself succeeded; a failed read must not turn it into a failure.
            result.features_error = exc.message
        else:
            result.features_summary = summarize(features)
        return Outcome(status="completed", result=result.model_dump(mode="json"))
