"""How the v1 index driver reads Mixpeek's task and batch words into a job's state, table-tested against a
stand-in client (the emulator cannot produce every combination the contract allows)."""

from __future__ import annotations

from typing import Any

import pytest

from mediamux.jobs.mixpeek import IndexArgs
from mediamux.jobs.mixpeek_v1 import MixpeekV1IndexDriver
from mediamux.providers.errors import NotFound
from mediamux.providers.mixpeek_v1 import BatchInfo, CollectionRef, Document, ObjectDocuments, TaskInfo

ARGS = IndexArgs(collection_id="quickstart", url="https://media.example.com/a.mp4")
BATCH_IDS = {"batch_id": "btch_1", "bucket_id": "bkt_1"}


class StandIn:
    """Answers like MixpeekV1Client for the calls a poll makes."""

    def __init__(self, task: dict[str, Any] | None, batch: dict[str, Any], listed: bool = True) -> None:
        self.task, self.batch, self.listed = task, batch, listed
        self.calls: list[str] = []

    def scrub(self, text: str, limit: int = 300) -> str:
        return text

    async def get_task(self, task_id: str, operation: str = "") -> TaskInfo:
        self.calls.append("get_task")
        if self.task is None:
            raise NotFound("gone", provider="mixpeek", operation=operation)
        return TaskInfo.model_validate(self.task)

    async def get_batch(self, bucket_id: str, batch_id: str, operation: str = "") -> BatchInfo:
        self.calls.append("get_batch")
        return BatchInfo.model_validate({**BATCH_IDS, "object_ids": ["obj_1"], **self.batch})

    async def collection(self, name: str, *, operation: str, create: Any = None) -> CollectionRef:
        return CollectionRef("col_1", name, "bkt_1", (), None, True)

    async def find_batch_of_task(self, bucket_id: str, task_id: str, operation: str) -> BatchInfo | None:
        self.calls.append("find_batch_of_task")
        return BatchInfo.model_validate({**BATCH_IDS, "object_ids": ["obj_1"]}) if self.listed else None

    async def object_documents(self, object_id: str, operation: str = "") -> ObjectDocuments:
        docs = [Document(document_id="d1", start_time=0, end_time=10, description="a dog")]
        return ObjectDocuments(object_id, docs, 1)


def driver(client: StandIn) -> MixpeekV1IndexDriver:
    return MixpeekV1IndexDriver(client, "index_url", allowed_dirs=[])  # type: ignore[arg-type]


def task(status: str, **extra: Any) -> dict[str, Any]:
    return {"task_id": "tsk_1", "status": status, "additional_data": dict(BATCH_IDS), **extra}


RESOLVED = {"documents_resolvable": True, "cost": {"credits_consumed": 12, "cost_usd": 0.012}}


@pytest.mark.parametrize(
    ("task_answer", "batch", "status", "provider_status"),
    [
        (task("PENDING"), {}, "queued", "PENDING"),
        (task("QUEUED"), {}, "queued", "QUEUED"),
        (task("IN_PROGRESS"), {}, "running", "IN_PROGRESS"),
        (task("PROCESSING"), {}, "running", "PROCESSING"),
        (task("INTERRUPTED"), {}, "running", "INTERRUPTED"),
        (task("UNKNOWN"), {}, "UNKNOWN", "UNKNOWN"),
        (task("COMPLETED"), {"status": "IN_PROGRESS"}, "running", "IN_PROGRESS"),
        (task("COMPLETED"), {"status": "COMPLETED"}, "running", "FINALIZING"),
        (task("COMPLETED"), {"status": "COMPLETED", **RESOLVED}, "completed", "COMPLETED"),
        (
            task("COMPLETED_WITH_ERRORS"),
            {"status": "COMPLETED", **RESOLVED},
            "failed",
            "COMPLETED_WITH_ERRORS",
        ),
        (task("FAILED", error="bad codec"), {"status": "FAILED"}, "failed", "FAILED"),
        (task("CANCELED"), {"status": "CANCELED"}, "cancelled", "CANCELED"),
        (None, {"status": "COMPLETED", **RESOLVED}, "completed", "COMPLETED"),
        (None, {"status": "PENDING"}, "queued", "PENDING"),
    ],
)
async def test_task_and_batch_words_become_the_jobs_state(
    task_answer: dict[str, Any] | None, batch: dict[str, Any], status: str, provider_status: str
) -> None:
    outcome = await driver(StandIn(task_answer, batch)).poll("tsk_1", ARGS, {})

    assert (outcome.status, outcome.provider_status) == (status, provider_status)
    assert outcome.result is not None and outcome.result["task_id"] == "tsk_1"


async def test_a_finished_batch_reports_its_charge_but_zero_is_not_a_charge() -> None:
    charged = await driver(StandIn(task("COMPLETED"), {"status": "COMPLETED", **RESOLVED})).poll(
        "tsk_1", ARGS, {}
    )
    unrecorded = {
        "status": "COMPLETED",
        "documents_resolvable": True,
        "cost": {"credits_consumed": 0, "cost_usd": 0},
    }
    free = await driver(StandIn(task("COMPLETED"), unrecorded)).poll("tsk_1", ARGS, {})

    assert (charged.cost.usd, charged.cost.credits, charged.cost.source) == (0.012, 12.0, "body")
    assert free.cost.is_empty


async def test_a_batch_whose_documents_may_never_resolve_completes_with_a_warning() -> None:
    batch = {
        "status": "COMPLETED",
        "documents_resolvable": False,
        "documents_resolvable_error": "confirm timed out",
    }

    outcome = await driver(StandIn(task("COMPLETED"), batch)).poll("tsk_1", ARGS, {})

    assert outcome.status == "completed" and outcome.result is not None
    assert (
        "could not confirm the documents are searchable: confirm timed out"
        in outcome.result["documents_error"]
    )


async def test_partial_objects_make_a_completed_batch_a_partial_result() -> None:
    partial = [{"object_id": "obj_1", "error": "OCR failed", "missing_feature": "ocr"}]
    batch = {"status": "COMPLETED", **RESOLVED, "partial_objects": partial}

    outcome = await driver(StandIn(task("COMPLETED"), batch)).poll("tsk_1", ARGS, {})

    assert (outcome.status, outcome.provider_status) == ("failed", "COMPLETED_WITH_ERRORS")
    assert outcome.result is not None and outcome.result["problems"] == [
        "object obj_1 partly indexed: OCR failed (no ocr documents)"
    ]
    assert outcome.result["documents"]["segments"] == 1 and outcome.error is not None


async def test_a_finished_task_that_names_no_batch_is_found_through_the_bucket() -> None:
    client = StandIn({"task_id": "tsk_1", "status": "COMPLETED"}, {"status": "COMPLETED", **RESOLVED})

    outcome = await driver(client).poll("tsk_1", ARGS, {})

    assert outcome.status == "completed" and client.calls == ["get_task", "find_batch_of_task", "get_batch"]


async def test_an_expired_task_without_a_batch_anywhere_is_not_found() -> None:
    client = StandIn(None, {}, listed=False)

    with pytest.raises(NotFound):
        await driver(client).poll("tsk_1", ARGS, {})
