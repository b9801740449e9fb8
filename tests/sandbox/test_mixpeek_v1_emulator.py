"""Behaviour of the Mixpeek v1 emulator, checked against the v1 contract (mixpeek-v1.md, the SDK models).

Time is injected (`FakeNow`), so batches and tasks move without sleeping; every wait is bounded.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import AsyncIterator
from typing import Any

import httpx2
import pytest

from mediamux.sandbox.mixpeek_v1 import MixpeekV1Emulator
from tests.sandbox.conftest import FakeNow

KEY = "sandbox-mixpeek-key"
ORIGIN = "http://mixpeek.test"
NS = "team-videos"
DEMO_URL = "https://mixpeek-public-demo.s3.us-east-2.amazonaws.com/starter/aussie_agility.mp4"
CITY_URL = "https://media.example.com/videos/city_night_walk.mp4"
SCHEMA = {"properties": {"video": {"type": "video"}, "metadata": {"type": "object"}}}
ALL_ON = {
    "split_method": "time",
    "time_split_interval": 10,
    "run_transcription": True,
    "run_video_description": True,
    "run_ocr": True,
    "run_multimodal_embedding": True,
}


@pytest.fixture
def emulator(now: FakeNow) -> Any:
    emu = MixpeekV1Emulator(now=now, stage_seconds=2.0, resolve_seconds=1.0)
    emu.base_url = ORIGIN
    yield emu
    emu.close()


@pytest.fixture
async def client(emulator: MixpeekV1Emulator) -> AsyncIterator[httpx2.AsyncClient]:
    transport = httpx2.ASGITransport(app=emulator.app)
    headers = {"Authorization": f"Bearer {KEY}", "X-Namespace": NS}
    async with httpx2.AsyncClient(transport=transport, base_url=ORIGIN, headers=headers) as c:
        created = await c.post("/v1/namespaces", json={"namespace_name": NS})
        assert created.status_code == 200, created.text
        yield c


async def collection(
    client: httpx2.AsyncClient, name: str = "quickstart", parameters: dict[str, Any] | None = None
) -> dict[str, Any]:
    bucket = await client.post("/v1/buckets", json={"bucket_name": name, "bucket_schema": SCHEMA})
    assert bucket.status_code == 200, bucket.text
    body = {
        "collection_name": name,
        "source": {"type": "bucket", "bucket_ids": [bucket.json()["bucket_id"]]},
        "feature_extractor": {
            "feature_extractor_name": "multimodal_extractor",
            "version": "v1",
            "input_mappings": {"video": "video"},
            "parameters": ALL_ON if parameters is None else parameters,
            "field_passthrough": [{"source_path": "metadata"}],
        },
    }
    made = await client.post("/v1/collections", json=body)
    assert made.status_code == 200, made.text
    return {**made.json(), "bucket_id": bucket.json()["bucket_id"]}


async def indexed(
    client: httpx2.AsyncClient,
    col: dict[str, Any],
    url: str = DEMO_URL,
    metadata: dict[str, Any] | None = None,
    webhook_url: str | None = None,
) -> dict[str, Any]:
    """Object, batch, submit: answers the ids (the batch is not finished yet)."""
    bucket = col["bucket_id"]
    body: dict[str, Any] = {"blobs": [{"property": "video", "type": "video", "data": url}]}
    if metadata is not None:
        body["metadata"] = metadata
    obj = await client.post(f"/v1/buckets/{bucket}/objects", json=body)
    assert obj.status_code == 200, obj.text
    batch = await client.post(f"/v1/buckets/{bucket}/batches", json={"object_ids": [obj.json()["object_id"]]})
    assert batch.status_code == 200 and batch.json()["status"] == "DRAFT", batch.text
    task = await client.post(
        f"/v1/buckets/{bucket}/batches/{batch.json()['batch_id']}/submit",
        json={"webhook_url": webhook_url} if webhook_url else {},
    )
    assert task.status_code == 200, task.text
    return {
        "bucket": bucket,
        "object_id": obj.json()["object_id"],
        "batch_id": batch.json()["batch_id"],
        "task_id": task.json()["task_id"],
    }


async def finished(
    client: httpx2.AsyncClient, now: FakeNow, col: dict[str, Any], **kw: Any
) -> dict[str, Any]:
    ids = await indexed(client, col, **kw)
    now.advance(10)
    return ids


def duration_of(url: str) -> float:
    return float(20 + int.from_bytes(hashlib.sha256(url.encode()).digest()[:4], "big") % 281)


# -- the v1 error body, auth and namespaces ------------------------------------------------------------


async def test_errors_use_the_v1_body_and_a_missing_key_is_401(emulator: MixpeekV1Emulator) -> None:
    transport = httpx2.ASGITransport(app=emulator.app)
    async with httpx2.AsyncClient(transport=transport, base_url=ORIGIN) as bare:
        answer = await bare.get("/v1/namespaces/anything")

    assert answer.status_code == 401
    body = answer.json()
    assert body["success"] is False and body["status"] == 401
    assert body["error"]["type"] == "AuthenticationError" and body["error"]["message"]


async def test_namespaced_calls_need_a_known_x_namespace(client: httpx2.AsyncClient) -> None:
    missing = await client.get("/v1/buckets", headers={"X-Namespace": ""})
    unknown = await client.get("/v1/buckets", headers={"X-Namespace": "elsewhere"})
    again = await client.post("/v1/namespaces", json={"namespace_name": NS})
    by_id = await client.get(
        f"/v1/namespaces/{(await client.get(f'/v1/namespaces/{NS}')).json()['namespace_id']}"
    )

    assert missing.status_code == 400 and missing.json()["error"]["code"] == "namespace_required"
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "namespace_not_found"
    assert again.status_code == 409 and again.json()["error"]["code"] == "namespace_name_taken"
    assert by_id.status_code == 200 and by_id.json()["namespace_name"] == NS


async def test_undeclared_body_keys_are_refused_with_the_field_named(client: httpx2.AsyncClient) -> None:
    answer = await client.post(
        "/v1/buckets", json={"bucket_name": "b1", "bucket_schema": SCHEMA, "schema": SCHEMA}
    )

    assert answer.status_code == 422
    problems = answer.json()["error"]["details"]["validation_errors"]
    assert problems == [
        {"loc": ["body", "schema"], "msg": "Extra inputs are not permitted", "type": "extra_forbidden"}
    ]
    assert "body.schema" in answer.json()["error"]["message"]


async def test_throttling_answers_429_with_the_wait_in_the_body_and_optionally_the_header(
    client: httpx2.AsyncClient, emulator: MixpeekV1Emulator
) -> None:
    emulator.throttle("/v1/buckets", times=1, retry_after_s=7)
    emulator.throttle("/v1/collections", times=1, retry_after_s=3, header=True)

    body_only = await client.get("/v1/buckets")
    with_header = await client.get("/v1/collections/x")
    then = await client.get("/v1/buckets")

    assert body_only.status_code == 429 and "retry-after" not in body_only.headers
    assert body_only.json()["error"]["details"]["retry_after_seconds"] == 7
    assert with_header.status_code == 429 and with_header.headers["retry-after"] == "3"
    assert then.status_code == 200


# -- buckets, collections, objects ---------------------------------------------------------------------


async def test_a_collection_exposes_its_feature_uri_and_is_found_by_name_or_id(
    client: httpx2.AsyncClient, emulator: MixpeekV1Emulator
) -> None:
    emulator.embedding_output = "gemini_embedding_2"
    col = await collection(client)

    by_name = (await client.get("/v1/collections/quickstart")).json()
    by_id = (await client.get(f"/v1/collections/{col['collection_id']}")).json()
    duplicate = await client.post(
        "/v1/collections", json={**_collection_body(col), "collection_name": "quickstart"}
    )

    assert by_name == by_id
    assert [ix["feature_uri"] for ix in by_name["vector_indexes"]] == [
        "mixpeek://multimodal_extractor@v1/gemini_embedding_2"
    ]
    assert by_name["source"]["bucket_ids"] == [col["bucket_id"]]
    assert by_name["feature_extractor"]["parameters"]["run_ocr"] is True
    assert duplicate.status_code == 409 and duplicate.json()["error"]["code"] == "collection_name_taken"


def _collection_body(col: dict[str, Any]) -> dict[str, Any]:
    return {k: col[k] for k in ("collection_name", "source", "feature_extractor")}


async def test_a_collection_without_the_embedding_has_no_vector_index(client: httpx2.AsyncClient) -> None:
    col = await collection(client, parameters={**ALL_ON, "run_multimodal_embedding": False})

    assert col["vector_indexes"] == []


async def test_objects_are_checked_against_the_bucket_schema(client: httpx2.AsyncClient) -> None:
    col = await collection(client)
    path = f"/v1/buckets/{col['bucket_id']}/objects"
    blob = {"property": "video", "type": "video", "data": DEMO_URL}

    undeclared = await client.post(path, json={"blobs": [blob], "title": "x"})
    wrong_type = await client.post(path, json={"blobs": [{**blob, "type": "image"}]})
    not_url = await client.post(path, json={"blobs": [{**blob, "data": "ftp://x/y.mp4"}]})
    first = await client.post(path, json={"blobs": [blob], "idempotency_key": "k1", "metadata": {"a": 1}})
    again = await client.post(path, json={"blobs": [blob], "idempotency_key": "k1"})

    assert undeclared.status_code == 422
    assert undeclared.json()["error"]["details"]["validation_errors"][0]["loc"] == ["body", "title"]
    assert wrong_type.status_code == 422 and not_url.status_code == 422
    assert (
        first.status_code == 200
        and first.json()["status"] == "PENDING"
        and first.json()["metadata"] == {"a": 1}
    )
    assert again.json()["object_id"] == first.json()["object_id"]


# -- batches, tasks and the clock ----------------------------------------------------------------------


async def test_a_submitted_batch_moves_through_its_statuses_and_is_finalizing_before_resolvable(
    client: httpx2.AsyncClient, now: FakeNow
) -> None:
    col = await collection(client)
    ids = await indexed(client, col)
    batch_path = f"/v1/buckets/{ids['bucket']}/batches/{ids['batch_id']}"
    seen = []
    for _ in range(5):
        task = (await client.get(f"/v1/tasks/{ids['task_id']}")).json()
        batch = (await client.get(batch_path)).json()
        seen.append((task["status"], batch["status"], batch["lifecycle"], batch["documents_resolvable"]))
        now.advance(2)

    assert seen == [
        ("PENDING", "PENDING", "queued", False),
        ("IN_PROGRESS", "IN_PROGRESS", "extracting", False),
        ("PROCESSING", "IN_PROGRESS", "extracting", False),
        ("COMPLETED", "COMPLETED", "indexed", False),
        ("COMPLETED", "COMPLETED", "indexed", True),
    ]
    assert task["additional_data"]["batch_id"] == ids["batch_id"]
    assert task["additional_data"]["bucket_id"] == ids["bucket"]
    credits = math.ceil(duration_of(DEMO_URL) / 60 * 10)
    assert batch["cost"] == {
        "credits_consumed": credits,
        "cost_usd": round(credits * 0.001, 6),
        "credit_rate_usd": 0.001,
    }
    assert (await client.get(f"/v1/batches/{ids['batch_id']}")).json()["status"] == "COMPLETED"


class Hooks:
    """Where the emulator's webhooks go in these tests: an ASGI receiver behind an in-process client."""

    def __init__(self) -> None:
        self.posts: list[tuple[str, dict[str, Any]]] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        body, more = b"", True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        self.posts.append((scope["path"], json.loads(body)))
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})


@pytest.fixture
async def hooks(emulator: MixpeekV1Emulator) -> AsyncIterator[Hooks]:
    receiver = Hooks()
    async with httpx2.AsyncClient(transport=httpx2.ASGITransport(app=receiver)) as http:
        emulator.webhook_client = http
        yield receiver


async def test_a_batch_submitted_with_a_webhook_url_is_announced_once_when_it_finishes(
    client: httpx2.AsyncClient, emulator: MixpeekV1Emulator, hooks: Hooks, now: FakeNow
) -> None:
    col = await collection(client)
    ids = await indexed(client, col, webhook_url="http://hooks.test/h/1")

    before = await emulator.deliver_due_webhooks()
    now.advance(5.9)  # three 2 s stages: not finished yet
    still = await emulator.deliver_due_webhooks()
    now.advance(0.2)
    sent = await emulator.deliver_due_webhooks()
    again = await emulator.deliver_due_webhooks()

    assert (before, still, sent, again) == (0, 0, 1, 0)
    [(path, payload)] = hooks.posts
    assert path == "/h/1" and payload == emulator.webhooks_sent[0]
    assert set(payload) == {
        "batch_id",
        "status",
        "failure_reason",
        "documents_written",
        "progress",
        "completed_at",
    }
    assert payload["batch_id"] == ids["batch_id"] and payload["status"] == "COMPLETED"
    assert payload["documents_written"] and payload["failure_reason"] is None
    # Sent as it finished, before its documents can be searched (that comes resolve_seconds later).
    batch = (await client.get(f"/v1/buckets/{ids['bucket']}/batches/{ids['batch_id']}")).json()
    assert batch["documents_resolvable"] is False


async def test_a_failed_batch_is_announced_with_its_reason_and_one_without_a_webhook_url_is_not(
    client: httpx2.AsyncClient, emulator: MixpeekV1Emulator, hooks: Hooks, now: FakeNow
) -> None:
    col = await collection(client)
    await indexed(client, col, url="https://media.invalid/clip.mp4", webhook_url="http://hooks.test/failed")
    await indexed(client, col, url=CITY_URL)

    now.advance(10)
    assert await emulator.deliver_due_webhooks() == 1

    [(path, payload)] = hooks.posts
    assert path == "/failed" and payload["status"] == "FAILED"
    assert "media.invalid" in payload["failure_reason"]


async def test_documents_are_one_per_segment_and_listed_only_once_resolvable(
    client: httpx2.AsyncClient, now: FakeNow
) -> None:
    col = await collection(client, parameters={**ALL_ON, "time_split_interval": 15, "run_ocr": False})
    ids = await indexed(client, col, metadata={"hello": "world"})
    now.advance(6.5)  # COMPLETED, not yet resolvable

    early = (await client.get(f"/v1/objects/{ids['object_id']}/documents")).json()
    now.advance(1)
    docs = (await client.get(f"/v1/objects/{ids['object_id']}/documents")).json()

    assert early["total_documents"] == 0 and early["documents"] == []
    duration = duration_of(DEMO_URL)
    assert docs["total_documents"] == math.ceil(duration / 15)
    first = min(docs["documents"], key=lambda d: d["start_time"])
    assert (first["start_time"], first["end_time"]) == (0.0, 15.0)
    assert first["transcription"].startswith("0:00") and "aussie agility" in first["description"]
    assert first["ocr_text"] is None  # OCR was off for this collection
    assert first["metadata"] == {"hello": "world"}
    assert first["_internal"]["lineage"]["root_object_id"] == ids["object_id"]
    assert max(d["end_time"] for d in docs["documents"]) == duration
    thumb = await client.get(first["thumbnail_url"].removeprefix(ORIGIN))
    assert thumb.status_code == 200 and thumb.content.startswith(b"\x89PNG")


async def test_an_unreachable_url_fails_the_batch_with_its_reason(
    client: httpx2.AsyncClient, now: FakeNow
) -> None:
    col = await collection(client)
    ids = await finished(client, now, col, url="https://media.invalid/clip.mp4")

    task = (await client.get(f"/v1/tasks/{ids['task_id']}")).json()
    batch = (await client.get(f"/v1/buckets/{ids['bucket']}/batches/{ids['batch_id']}")).json()

    assert task["status"] == "FAILED" and "could not resolve host media.invalid" in task["error"]
    assert batch["status"] == "FAILED" and batch["lifecycle"] == "failed"
    assert (
        "media.invalid" in batch["failure_reason"]
        and batch["failed_objects"][0]["object_id"] == ids["object_id"]
    )


async def test_a_video_without_audio_completes_with_errors_and_documents_lacking_transcription(
    client: httpx2.AsyncClient, now: FakeNow
) -> None:
    col = await collection(client)
    ids = await finished(client, now, col, url="https://media.example.com/no_audio_timelapse.mp4")

    task = (await client.get(f"/v1/tasks/{ids['task_id']}")).json()
    batch = (await client.get(f"/v1/buckets/{ids['bucket']}/batches/{ids['batch_id']}")).json()
    docs = (await client.get(f"/v1/objects/{ids['object_id']}/documents")).json()["documents"]

    assert task["status"] == batch["status"] == "COMPLETED_WITH_ERRORS"
    assert batch["documents_resolvable"] is True
    assert batch["partial_objects"] == [
        {
            "object_id": ids["object_id"],
            "error": "transcription failed: the video has no audio track",
            "missing_feature": "transcription",
        }
    ]
    assert docs and all(d["transcription"] is None and d["description"] for d in docs)


async def test_a_task_expires_a_day_after_it_finished_while_its_batch_stays(
    client: httpx2.AsyncClient, now: FakeNow
) -> None:
    col = await collection(client)
    ids = await finished(client, now, col)
    now.advance(23 * 3600)
    still = await client.get(f"/v1/tasks/{ids['task_id']}")
    now.advance(2 * 3600)

    gone = await client.get(f"/v1/tasks/{ids['task_id']}")
    batch = await client.get(f"/v1/buckets/{ids['bucket']}/batches/{ids['batch_id']}")
    listed = (await client.post(f"/v1/buckets/{ids['bucket']}/batches/list", json={"limit": 10})).json()

    assert still.status_code == 200
    assert gone.status_code == 404 and gone.json()["error"]["type"] == "NotFoundError"
    assert batch.status_code == 200 and batch.json()["task_id"] == ids["task_id"]
    assert [b["batch_id"] for b in listed["results"]] == [ids["batch_id"]]


async def test_killing_a_task_cancels_its_batch_and_a_finished_one_is_left_alone(
    client: httpx2.AsyncClient, now: FakeNow
) -> None:
    col = await collection(client)
    ids = await indexed(client, col)

    killed = await client.delete(f"/v1/tasks/{ids['task_id']}")
    now.advance(20)
    task = (await client.get(f"/v1/tasks/{ids['task_id']}")).json()
    docs = (await client.get(f"/v1/objects/{ids['object_id']}/documents")).json()
    again = await client.delete(f"/v1/tasks/{ids['task_id']}")

    assert killed.json() == {"message": "Task killed", "success": True}
    assert task["status"] == "CANCELED" and docs["total_documents"] == 0
    assert again.json() == {"message": "Task already finished", "success": False}


# -- uploads -------------------------------------------------------------------------------------------


async def test_a_presigned_upload_is_put_confirmed_and_becomes_an_object(
    client: httpx2.AsyncClient, emulator: MixpeekV1Emulator, now: FakeNow
) -> None:
    col = await collection(client)
    data = b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 40
    made = await client.post(
        f"/v1/buckets/{col['bucket_id']}/uploads",
        json={
            "filename": "yoga_class.mp4",
            "content_type": "video/mp4",
            "file_size_bytes": len(data),
            "blob_property": "video",
            "object_metadata": {"metadata": {"teacher": "ana"}},
        },
    )
    assert made.status_code == 200, made.text
    upload = made.json()
    url = upload["presigned_url"].removeprefix(ORIGIN)
    bare = httpx2.AsyncClient(transport=httpx2.ASGITransport(app=emulator.app), base_url=ORIGIN)

    async with bare:
        wrong_type = await bare.put(url, content=data, headers={"Content-Type": "video/webm"})
        forged = await bare.put(
            url.replace("Signature=", "Signature=00"), content=data, headers={"Content-Type": "video/mp4"}
        )
        early = await client.post(
            f"/v1/buckets/{col['bucket_id']}/uploads/{upload['upload_id']}/confirm", json={}
        )
        stored = await bare.put(url, content=data, headers={"Content-Type": "video/mp4"})
    bad_etag = await client.post(
        f"/v1/buckets/{col['bucket_id']}/uploads/{upload['upload_id']}/confirm", json={"etag": '"0000"'}
    )
    confirmed = await client.post(
        f"/v1/buckets/{col['bucket_id']}/uploads/{upload['upload_id']}/confirm",
        json={"etag": stored.headers["etag"], "file_size_bytes": len(data)},
    )

    assert wrong_type.status_code == 403 and b"SignatureDoesNotMatch" in wrong_type.content
    assert forged.status_code == 403
    assert early.status_code == 400 and early.json()["error"]["code"] == "upload_not_found_in_storage"
    assert stored.status_code == 200 and stored.headers["etag"] == f'"{hashlib.md5(data).hexdigest()}"'  # noqa: S324
    assert bad_etag.status_code == 400 and bad_etag.json()["error"]["code"] == "etag_mismatch"
    assert confirmed.status_code == 200 and confirmed.json()["status"] == "COMPLETED"
    obj = emulator.objects[confirmed.json()["object_id"]]
    assert obj.fields == {"metadata": {"teacher": "ana"}} and obj.source == "yoga_class.mp4"


# -- retrieval -----------------------------------------------------------------------------------------


async def execute(client: httpx2.AsyncClient, query: str, **extra: Any) -> httpx2.Response:
    uri = extra.pop("uri", "mixpeek://multimodal_extractor@v1/multimodal_embedding")
    search = {"feature_uri": uri, "query": {"input_mode": "text", "value": query}, "top_k": 100}
    search.update(extra.pop("search", {}))
    body = {
        "collection_identifiers": extra.pop("collections", ["quickstart"]),
        "stages": [
            {
                "stage_name": "search",
                "stage_type": "filter",
                "config": {
                    "stage_id": "feature_search",
                    "parameters": {"searches": [search], "final_top_k": 100},
                },
            }
        ],
        **extra,
    }
    return await client.post("/v1/retrievers/execute", json=body)


@pytest.fixture
async def two_videos(client: httpx2.AsyncClient, now: FakeNow) -> dict[str, str]:
    col = await collection(client)
    a = await indexed(client, col, metadata={"hello": "world", "views": 10, "tags": ["dog", "sport"]})
    b = await indexed(
        client, col, url=CITY_URL, metadata={"hello": "moon", "views": 250, "note": "late night"}
    )
    now.advance(10)
    return {a["object_id"]: "agility", b["object_id"]: "city"}


def names(answer: httpx2.Response, videos: dict[str, str]) -> set[str]:
    assert answer.status_code == 200, answer.text
    return {videos[d["_internal"]["lineage"]["root_object_id"]] for d in answer.json()["documents"]}


async def test_feature_search_ranks_every_segment_and_lexical_keeps_only_word_matches(
    client: httpx2.AsyncClient, two_videos: dict[str, str]
) -> None:
    dense = await execute(
        client, "agility", pagination={"method": "offset", "page_size": 100, "page_number": 1}
    )
    lexical = await execute(
        client,
        "agility",
        search={"lexical": True},
        pagination={"method": "offset", "page_size": 100, "page_number": 1},
    )

    assert names(dense, two_videos) == {"agility", "city"}
    scores = [d["score"] for d in dense.json()["documents"]]
    assert scores == sorted(scores, reverse=True)
    assert two_videos[dense.json()["documents"][0]["_internal"]["lineage"]["root_object_id"]] == "agility"
    assert names(lexical, two_videos) == {"agility"}
    assert dense.json()["pagination"]["total"] == len(dense.json()["documents"])


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ({"AND": [{"field": "metadata.hello", "operator": "eq", "value": "world"}]}, {"agility"}),
        ({"NOT": [{"field": "metadata.hello", "operator": "eq", "value": "world"}]}, {"city"}),
        ({"AND": [{"field": "metadata.views", "operator": "gte", "value": 250}]}, {"city"}),
        ({"AND": [{"field": "metadata.tags", "operator": "contains", "value": "dog"}]}, {"agility"}),
        ({"AND": [{"field": "metadata.note", "operator": "starts_with", "value": "LATE"}]}, {"city"}),
        ({"AND": [{"field": "metadata.note", "operator": "ends_with", "value": "night"}]}, {"city"}),
        ({"AND": [{"field": "metadata.hello", "operator": "regex", "value": "^w.r"}]}, {"agility"}),
        ({"AND": [{"field": "description", "operator": "phrase", "value": "city night walk"}]}, {"city"}),
        ({"AND": [{"field": "description", "operator": "words", "value": "agility zebra"}]}, {"agility"}),
        ({"AND": [{"field": "metadata.note", "operator": "exists", "value": False}]}, {"agility"}),
        (
            {
                "AND": [{"field": "metadata.hello", "operator": "eq", "value": "WORLD"}],
                "case_sensitive": True,
            },
            set(),
        ),
        (
            {
                "OR": [
                    {"field": "metadata.hello", "operator": "eq", "value": "world"},
                    {"AND": [{"field": "metadata.views", "operator": "gt", "value": 100}]},
                ]
            },
            {"agility", "city"},
        ),
    ],
)
async def test_execute_time_filters_apply_with_the_v1_operators(
    client: httpx2.AsyncClient, two_videos: dict[str, str], filters: dict[str, Any], expected: set[str]
) -> None:
    answer = await execute(
        client, "video", filters=filters, pagination={"method": "offset", "page_size": 100, "page_number": 1}
    )

    assert names(answer, two_videos) == expected


async def test_retrieval_refuses_what_it_cannot_run(
    client: httpx2.AsyncClient, two_videos: dict[str, str]
) -> None:
    wrong_uri = await execute(client, "dog", uri="mixpeek://text_extractor@v1/embedding")
    unknown = await execute(client, "dog", collections=["elsewhere"])
    geo = await execute(
        client, "dog", filters={"AND": [{"field": "where", "operator": "geo_radius", "value": {}}]}
    )
    v0_style = await execute(
        client, "dog", filters={"NOR": [{"key": "metadata.hello", "operator": "eq", "value": "x"}]}
    )

    assert wrong_uri.status_code == 422 and "feature_uri" in wrong_uri.json()["error"]["message"]
    assert unknown.status_code == 404
    assert geo.status_code == 422
    assert v0_style.status_code == 422  # v1 has NOT and "field"; the v0 spelling is the client's to translate


async def test_retrieval_pages_by_offset(client: httpx2.AsyncClient, two_videos: dict[str, str]) -> None:
    everything = (
        await execute(client, "dog", pagination={"method": "offset", "page_size": 100, "page_number": 1})
    ).json()
    second = (
        await execute(client, "dog", pagination={"method": "offset", "page_size": 3, "page_number": 2})
    ).json()

    assert [d["document_id"] for d in second["documents"]] == [
        d["document_id"] for d in everything["documents"][3:6]
    ]
    assert second["pagination"] == {
        "method": "offset",
        "page_number": 2,
        "page_size": 3,
        "returned": 3,
        "total": len(everything["documents"]),
        "has_next": True,
    }
