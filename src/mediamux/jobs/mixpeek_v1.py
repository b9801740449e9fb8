"""Mixpeek v1 indexing on the job engine.

``prepare`` does the free work, which a failure or a cancelled call abandons without paying anything:
find or create the collection (and namespace and bucket), create the object (the URL, or the uploaded
file) and a DRAFT batch of it. ``submit`` submits the batch, which starts the paid extraction, and the
task it answers is the job's provider id. ``poll`` follows the task; once the task has left the service's
fast store (about 24 h) it follows the batch record instead. The job is done when the batch says
``documents_resolvable`` (its documents can be searched), not merely COMPLETED; until then the provider
status reads FINALIZING. A batch that COMPLETED_WITH_ERRORS is reported as failed with its partial result
kept: the documents that were written are searchable, and the error says what is missing.

The batch record reports what the work cost (credits at $0.001); that becomes the job's cost once it is
more than zero, since zero also means "not recorded yet".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel

from mediamux.jobs.engine import WEBHOOK_URL_OPTION, DriverBase, Outcome, ProgressFn
from mediamux.jobs.mixpeek import (
    DEFAULT_SEGMENT_S,
    IndexArgs,
    IndexedAsset,
    IndexOperation,
    Segment,
    summarize_segments,
)
from mediamux.jobs.models import JobError
from mediamux.providers.cost import Cost
from mediamux.providers.errors import InvalidRequest, NotFound, ProviderError
from mediamux.providers.mixpeek_v1 import BatchInfo, CollectionRef, Extraction, MixpeekV1Client, TaskInfo
from mediamux.providers.status import normalize_status

FINALIZING = "FINALIZING"
DONE = frozenset({"COMPLETED", "COMPLETED_WITH_ERRORS"})
RUNNING = frozenset({"PENDING", "QUEUED", "IN_PROGRESS", "PROCESSING", "DRAFT", "INTERRUPTED"})


def extraction_of(args: IndexArgs) -> Extraction:
    wanted = args.wanted()
    return Extraction(
        transcription="transcription" in wanted,
        description="description" in wanted,
        ocr="ocr" in wanted,
        embedding="embedding" in wanted,
        segment_s=args.segment_s or DEFAULT_SEGMENT_S,
    )


@dataclass(frozen=True)
class Staged:
    """What ``prepare`` made: the submission needs only the batch."""

    args: IndexArgs
    bucket_id: str
    batch_id: str
    object_id: str


@dataclass(frozen=True)
class _Where:
    bucket_id: str
    batch_id: str
    object_id: str | None


class MixpeekV1IndexDriver(DriverBase):
    provider = "mixpeek"
    mode: Literal["poll", "background"] = "poll"
    args_model: type[BaseModel] = IndexArgs
    title = "Mixpeek"
    can_cancel = True  # DELETE /v1/tasks/{id} stops the batch

    async def cancel(self, provider_job_id: str, args: IndexArgs) -> None:
        await self.client.cancel_task(provider_job_id)

    def __init__(
        self, client: MixpeekV1Client, operation: IndexOperation, *, allowed_dirs: Sequence[Path]
    ) -> None:
        self.client = client
        self.operation: str = operation
        self.allowed_dirs = list(allowed_dirs)
        # Where each task's batch is, learned at submission and from task reads: after a task expires
        # its batch is read directly. A restarted server finds it again through the bucket's batches.
        self._where: dict[str, _Where] = {}

    async def prepare(self, args: IndexArgs, options: dict[str, Any], progress: ProgressFn) -> Staged:
        op = self.operation
        wanted = extraction_of(args)
        await progress(0, None, f"Mixpeek: preparing collection {args.collection_id}")
        ref = await self.client.collection(args.collection_id, operation=op, create=wanted)
        assert ref is not None
        self._check_extraction(ref, args, wanted)
        if args.metadata and not ref.passes_metadata:
            raise InvalidRequest(
                f"Mixpeek {op}: collection {ref.name} does not keep metadata with its documents (it was not "
                "made by mediamux); index without metadata or into another collection_id",
                provider="mixpeek",
                operation=op,
            )
        prop = await self.client.video_property(ref, op)
        assert ref.bucket_id is not None  # video_property refuses a collection without one
        try:
            if args.url is not None:
                object_id = await self.client.create_url_object(
                    ref.bucket_id, args.url, prop=prop, metadata=args.metadata, operation=op
                )
            else:
                assert args.path is not None
                path = Path(args.path)

                async def on_bytes(sent: int, total: int) -> None:
                    await progress(sent, total, f"Mixpeek: uploading {path.name} ({sent}/{total} bytes)")

                object_id = await self.client.upload_file_object(
                    ref.bucket_id,
                    path,
                    self.allowed_dirs,
                    prop=prop,
                    metadata=args.metadata,
                    operation=op,
                    on_progress=on_bytes,
                )
            batch = await self.client.create_batch(ref.bucket_id, object_id, operation=op)
        except NotFound:
            # The collection or its bucket went away upstream: the next call sets them up again.
            self.client.forget(args.collection_id)
            raise
        assert batch.batch_id is not None
        return Staged(args, ref.bucket_id, batch.batch_id, object_id)

    def _check_extraction(self, ref: CollectionRef, args: IndexArgs, wanted: Extraction) -> None:
        """A collection extracts what it was created with; asking for something else must not pass silently."""
        have = ref.extraction
        if have is None:
            return
        features_differ = args.features is not None and _flags(wanted) != _flags(have)
        segments_differ = args.segment_s is not None and args.segment_s != have.segment_s
        if features_differ or segments_differ:
            raise InvalidRequest(
                f"Mixpeek {self.operation}: collection {ref.name} extracts {have.describe()}, set when it was "
                f"created; this call asks for {wanted.describe()}. Leave features and segment_s out to use the "
                "collection's, or index into a new collection_id",
                provider="mixpeek",
                operation=self.operation,
            )

    def takes_webhook(self, args: IndexArgs) -> bool:
        return True  # the batch submission takes a webhook_url, POSTed to when the batch finishes

    async def submit(self, staged: Staged, options: dict[str, Any], progress: ProgressFn) -> Outcome:
        try:
            task = await self.client.submit_batch(
                staged.bucket_id,
                staged.batch_id,
                operation=self.operation,
                webhook_url=options.get(WEBHOOK_URL_OPTION),
            )
        except ProviderError as exc:
            if not exc.maybe_sent:
                raise
            # The answer was lost; the batch says whether the submission happened (and its task).
            batch = await self._batch_quietly(staged.bucket_id, staged.batch_id)
            if batch is None or not batch.task_id:
                raise
            task = TaskInfo(task_id=batch.task_id, status=batch.status)
        assert task.task_id is not None
        where = _Where(staged.bucket_id, staged.batch_id, staged.object_id)
        self._where[task.task_id] = where
        status = normalize_status(task.status) if task.status else "queued"
        return Outcome(
            status=status if status in ("queued", "running") else "queued",
            provider_status=task.status,
            provider_job_id=task.task_id,
            # Known now and shown while the job runs: which object, batch and collection it is.
            result=self._result(staged.args, task.task_id, where).model_dump(mode="json"),
        )

    async def _batch_quietly(self, bucket_id: str, batch_id: str) -> BatchInfo | None:
        try:
            return await self.client.get_batch(bucket_id, batch_id, self.operation)
        except ProviderError:
            return None

    @staticmethod
    def _result(args: IndexArgs, task_id: str, where: _Where) -> IndexedAsset:
        return IndexedAsset(
            asset_id=where.object_id,
            task_id=task_id,
            batch_id=where.batch_id,
            bucket_id=where.bucket_id,
            collection_id=args.collection_id,
        )

    async def poll(self, provider_job_id: str, args: IndexArgs, options: dict[str, Any]) -> Outcome:
        where = self._where.get(provider_job_id)
        try:
            task: TaskInfo | None = await self.client.get_task(provider_job_id, self.operation)
        except NotFound:
            task = None
            where = where or await self._find(provider_job_id, args)
            if where is None:
                raise  # neither the task nor its batch: the engine reports the job expired
        assert task is not None or where is not None
        word = (task.status if task is not None else "").upper()
        if where is None and task is not None:
            if task.bucket_id and task.batch_id:
                where = self._where[provider_job_id] = _Where(task.bucket_id, task.batch_id, None)
            elif word in DONE:
                # A finished task that does not name its batch: only the batch says when it is searchable.
                where = await self._find(provider_job_id, args)
        batch: BatchInfo | None = None
        if where is not None and (task is None or word in DONE):
            batch = await self.client.get_batch(where.bucket_id, where.batch_id, self.operation)
            if where.object_id is None and batch.object_ids:
                where = self._where[provider_job_id] = _Where(
                    where.bucket_id, where.batch_id, batch.object_ids[0]
                )
        return await self._outcome(provider_job_id, args, task, batch, where)

    async def _find(self, task_id: str, args: IndexArgs) -> _Where | None:
        ref = await self.client.collection(args.collection_id, operation=self.operation)
        if ref is None or ref.bucket_id is None:
            return None
        batch = await self.client.find_batch_of_task(ref.bucket_id, task_id, self.operation)
        if batch is None or batch.batch_id is None:
            return None
        object_id = batch.object_ids[0] if batch.object_ids else None
        where = self._where[task_id] = _Where(ref.bucket_id, batch.batch_id, object_id)
        return where

    async def _outcome(
        self,
        task_id: str,
        args: IndexArgs,
        task: TaskInfo | None,
        batch: BatchInfo | None,
        where: _Where | None,
    ) -> Outcome:
        task_word = (task.status if task is not None else "").upper()
        batch_word = (batch.status if batch is not None else "").upper()
        # The batch speaks for the whole job once it has been read (a task finishes its own tier only).
        word = batch_word if batch is not None else task_word
        result = self._result(args, task_id, where) if where is not None else IndexedAsset(task_id=task_id)
        ids = result.model_dump(mode="json")
        if word in RUNNING or not word:
            return Outcome(
                status=normalize_status(word or task_word), provider_status=word or task_word, result=ids
            )
        if word == "FAILED":
            reason = (batch.failure if batch is not None else None) or (task.error_message if task else None)
            message = f"Mixpeek indexing failed: {self.client.scrub(reason or 'no reason given')}"
            return Outcome(
                status="failed",
                provider_status=word,
                result=ids,
                error=JobError(error_class="provider_error", message=message),
            )
        if word in ("CANCELED", "CANCELLED"):
            message = "Mixpeek cancelled the indexing task"
            return Outcome(
                status="cancelled",
                provider_status=word,
                result=ids,
                error=JobError(error_class="provider_error", message=message),
            )
        if word not in DONE:
            return Outcome(status=normalize_status(word), provider_status=word, result=ids)
        if batch is None:
            # Its batch could not be found: finished by the task's word, searchability unconfirmed.
            result.documents_error = (
                "Mixpeek did not say which batch this task ran, so searchability is unconfirmed"
            )
            return Outcome(status="completed", provider_status=word, result=result.model_dump(mode="json"))
        if not batch.documents_resolvable and not batch.documents_resolvable_error:
            return Outcome(status="running", provider_status=FINALIZING, result=ids)
        cost = _cost(batch)
        if batch.documents_resolvable_error:
            result.documents_error = (
                "Mixpeek could not confirm the documents are searchable: "
                + self.client.scrub(batch.documents_resolvable_error)
            )
        partial = (
            word == "COMPLETED_WITH_ERRORS" or task_word == "COMPLETED_WITH_ERRORS" or bool(batch.problems())
        )
        if not partial:
            return Outcome(
                status="completed", provider_status=word, result=result.model_dump(mode="json"), cost=cost
            )
        # Partly indexed: failed, with what was written summarised now (failed jobs are not finalized).
        problems = [self.client.scrub(p) for p in batch.problems()] or [
            "Mixpeek reported errors without details"
        ]
        result.problems = problems
        await self._summarize(result)
        written = result.documents.segments if result.documents is not None else batch.documents_written
        message = (
            f"Mixpeek indexed the video only in part: {'; '.join(problems[:3])}. "
            f"{written if written is not None else 'Some'} segment(s) were written and can be searched; "
            "they are in result"
        )
        return Outcome(
            status="failed",
            provider_status="COMPLETED_WITH_ERRORS",
            result=result.model_dump(mode="json"),
            error=JobError(error_class="provider_error", message=message),
            cost=cost,
        )

    async def _summarize(self, result: IndexedAsset) -> None:
        if not result.asset_id:
            result.documents_error = (
                result.documents_error or "Mixpeek reported the batch done without its object"
            )
            return
        try:
            found = await self.client.object_documents(result.asset_id, self.operation)
        except ProviderError as exc:
            # The indexing itself is over; a failed read must not change how it ended.
            result.documents_error = exc.message
            return
        segments = [Segment.of(d) for d in found.documents]
        result.documents = summarize_segments(segments, found.total)

    async def finalize(
        self, outcome: Outcome, args: IndexArgs, options: dict[str, Any], progress: ProgressFn
    ) -> Outcome:
        result = IndexedAsset.model_validate(outcome.result or {})
        await progress(0, None, "Mixpeek: reading the video's segments")
        await self._summarize(result)
        return Outcome(status="completed", result=result.model_dump(mode="json"))


def _flags(extraction: Extraction) -> tuple[bool, ...]:
    return (extraction.transcription, extraction.description, extraction.ocr, extraction.embedding)


def _cost(batch: BatchInfo) -> Cost:
    credits, usd = batch.credits, batch.cost_usd
    if not credits and not usd:
        return Cost()
    return Cost(usd=usd, credits=credits, source="body")


__all__ = ["FINALIZING", "MixpeekV1IndexDriver", "Staged", "extraction_of"]
