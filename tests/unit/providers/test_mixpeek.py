"""Mixpeek (v0) client: index answers, tasks, both asset-features shapes, search, strict requests, errors.

Shapes are quoted from ``shared/providers/mixpeek-quickstart.txt`` (S3) and NOTES §3: the document's
``video_segments`` page and the SDK's grouped ``{asset, features}``; ``file_id`` (older docs) and
``asset_id`` (SDK); the untyped search answer read as ``{results, pagination}`` or a bare list.
Requests are the strict side: unknown setting fields and out-of-range values fail before sending.
The last test is a round trip against the emulator's ASGI app.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx2
import pytest
from pydantic import ValidationError

from mediamux.jobs.mixpeek import summarize
from mediamux.providers.errors import AuthFailed, InvalidRequest, NotFound, ProviderResponseError, RateLimited
from mediamux.providers.mixpeek import (
    Condition,
    Filters,
    GroupBy,
    MixpeekClient,
    Task,
    VideoSetting,
    normalize_status,
    parse_features,
    parse_search,
)
from mediamux.sandbox.mixpeek import MixpeekEmulator
from tests.sandbox.conftest import FakeNow
from tests.unit.conftest import KEY, Wire, always, answer

BASE = "https://api.mixpeek.com"
DEMO = "https://mixpeek-public-demo.s3.us-east-2.amazonaws.com/starter/aussie_agility.mp4"
TASK_ID = "0b0e6c1e-7d8f-4a53-9e0e-5a4f4c1f7e21"


def mixpeek(
    wire: Callable[..., Wire], handler: Callable[[httpx2.Request], httpx2.Response]
) -> tuple[MixpeekClient, Wire]:
    w = wire("mixpeek", BASE, handler)
    return MixpeekClient(w.transport), w


# -- indexing ------------------------------------------------------------------------------------


async def test_index_url_sends_the_documented_body_and_reads_the_task_answer(
    wire: Callable[..., Wire],
) -> None:
    body = {"message": "URL content processing started", "task_id": TASK_ID}
    client, w = mixpeek(wire, always(answer(200, body)))

    accepted = await client.index_url(
        DEMO,
        "quickstart",
        metadata={"hello": "world"},
        video_settings=[
            VideoSetting.model_validate({"interval_sec": 10, "embed": {"model_id": "multimodal-v1"}})
        ],
    )

    assert accepted.task_id == TASK_ID and accepted.message == "URL content processing started"
    [sent] = w.sent
    assert (sent.method, str(sent.url)) == ("POST", f"{BASE}/index/url")
    assert sent.headers["Authorization"] == f"Bearer {KEY}"
    assert sent.json() == {
        "url": DEMO,
        "collection_id": "quickstart",
        "metadata": {"hello": "world"},
        "video_settings": [{"interval_sec": 10, "embed": {"model_id": "multimodal-v1"}}],
    }


async def test_an_index_answered_with_a_finished_asset_is_accepted(wire: Callable[..., Wire]) -> None:
    # The SDK's other union member: what prevent_duplicate may answer with (older docs say file_id).
    client, _ = mixpeek(wire, always(answer(200, {"file_id": "c2ea4838", "status": "DONE"})))

    accepted = await client.index_url(DEMO, "quickstart", prevent_duplicate=True)

    assert (accepted.task_id, accepted.asset_id) == (None, "c2ea4838")


@pytest.mark.parametrize(
    "body",
    [{"message": "accepted"}, {"asset_id": "a1", "status": "PROCESSING"}, ["task"]],
    ids=["no-task", "unfinished-asset", "not-an-object"],
)
async def test_an_index_answer_with_nothing_to_follow_may_have_been_charged(
    wire: Callable[..., Wire], body: Any
) -> None:
    client, w = mixpeek(wire, always(answer(200, body)))

    with pytest.raises(ProviderResponseError, match="no task_id") as caught:
        await client.index_url(DEMO, "quickstart")

    assert caught.value.maybe_sent is True and len(w.sent) == 1


@pytest.mark.parametrize(
    "url", ["ftp://files.example.com/a.mp4", "file:///etc/passwd", "https:///x.mp4", "https://a b"]
)
async def test_index_url_refuses_anything_but_an_http_url_before_sending(
    wire: Callable[..., Wire], url: str
) -> None:
    client, w = mixpeek(wire, always(answer(200, {"task_id": TASK_ID})))

    with pytest.raises(InvalidRequest, match="not an http"):
        await client.index_url(url, "quickstart")

    assert w.sent == []


async def test_index_file_sends_its_options_as_json_encoded_form_fields(
    wire: Callable[..., Wire], tmp_path: Path
) -> None:
    (tmp_path / "clip.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(64))
    client, w = mixpeek(wire, always(answer(200, {"message": "ok", "task_id": TASK_ID})))

    await client.index_file(
        tmp_path / "clip.mp4",
        [tmp_path],
        "uploads",
        metadata={"teacher": "ana", "level": 2},
        prevent_duplicate=False,
    )

    body = w.sent[0].body
    assert w.sent[0].path == "/index/upload"
    assert b'name="asset"; filename="clip.mp4"' in body
    assert b'name="collection_id"\r\n\r\nuploads\r\n' in body
    assert b'name="metadata"\r\n\r\n{"teacher":"ana","level":2}\r\n' in body
    assert b'name="prevent_duplicate"\r\n\r\nfalse\r\n' in body


@pytest.mark.parametrize(
    ("setting", "field"),
    [
        ({"interval_sec": 4}, "interval_sec"),
        ({"interval_sec": 120}, "interval_sec"),
        ({"interval": 10}, "interval"),
        ({"transcribe": {"model_id": "whisper-v9"}}, "model_id"),
        ({"describe": {"max_length": 0}}, "max_length"),
        ({"detect": {"faces": {"confidence_threshold": 1.5}}}, "confidence_threshold"),
    ],
)
def test_video_settings_refuse_unknown_fields_and_out_of_range_values(
    setting: dict[str, Any], field: str
) -> None:
    with pytest.raises(ValidationError, match=field):
        VideoSetting.model_validate(setting)


# -- tasks ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "ours"),
    [
        ("INITIALIZING", "queued"),
        ("DOWNLOADING", "running"),
        ("PROCESSING", "running"),
        ("DONE", "completed"),
        ("FAILED", "failed"),
        ("CANCELED", "cancelled"),
        ("done", "completed"),
        ("WARMING", "WARMING"),
        (None, "unknown"),
    ],
)
def test_task_status_words_map_onto_ours(raw: str | None, ours: str) -> None:
    assert normalize_status(raw) == ours


async def test_a_task_names_its_asset_as_asset_id_or_the_older_file_id(wire: Callable[..., Wire]) -> None:
    answers = iter(
        [
            {"task_id": TASK_ID, "status": "PROCESSING", "asset_id": None},
            {"task_id": TASK_ID, "status": "DONE", "file_id": "f1"},
        ]
    )
    client, w = mixpeek(wire, lambda request: answer(200, next(answers)))

    running = await client.get_task(TASK_ID)
    done = await client.get_task(TASK_ID)

    assert (running.status, running.asset_id) == ("PROCESSING", None)
    assert (done.status, done.asset_id) == ("DONE", "f1")
    assert str(w.sent[0].url) == f"{BASE}/tasks/{TASK_ID}"


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ({"error": {"message": "bad codec"}}, "bad codec"),
        (
            {"error": "", "reason": "could not resolve host media.invalid"},
            "could not resolve host media.invalid",
        ),
        ({"message": "Task was cancelled"}, "Task was cancelled"),
        ({}, None),
    ],
)
def test_a_failed_task_reports_its_reason_from_whichever_field_carried_it(
    body: dict[str, Any], reason: str | None
) -> None:
    assert Task.model_validate({"task_id": "t", "status": "FAILED", **body}).error_message == reason


@pytest.mark.parametrize(
    ("body", "expected"),
    [(b"", {}), (b'{"message": "Task killed"}', {"message": "Task killed"}), (b'"ok"', {"answer": "ok"})],
)
async def test_cancel_task_returns_whatever_untyped_answer_came_back(
    wire: Callable[..., Wire], body: bytes, expected: dict[str, Any]
) -> None:
    client, w = mixpeek(wire, always(answer(200, body)))

    assert await client.cancel_task(TASK_ID) == expected
    assert w.sent[0].method == "DELETE"


@pytest.mark.parametrize("task_id", ["../assets", "a/b", "", "x" * 201])
async def test_an_id_that_would_change_the_path_is_refused_before_any_request(
    wire: Callable[..., Wire], task_id: str
) -> None:
    client, w = mixpeek(wire, always(answer(200, {})))

    with pytest.raises(InvalidRequest, match="not a valid task id"):
        await client.get_task(task_id)

    assert w.sent == []


# -- asset features: the tolerant readers ------------------------------------------------------------


def test_the_quickstart_example_and_the_sdk_grouped_example_read_as_the_same_model() -> None:
    quickstart = {
        "video_segments": [
            {
                "start_time": 10.0,
                "end_time": 20.0,
                "interval_sec": 10,
                "transcription": "0:10 Can't lose weight. She might have high cortisol levels.",
                "text": "CORTISOL DETOX\nSomatic Yoga challenge\n",
                "description": "The video starts with a still image ...",
                "json_output": {"emotions": ["neutral"]},
            }
        ],
        "pagination": {
            "total": 12,
            "page": 1,
            "page_size": 10,
            "total_pages": 2,
            "next_page": "https://api.mixpeek.com/assets/198dacbb?page=2&page_size=10",
            "previous_page": None,
        },
    }
    sdk = {
        "asset": {
            "asset_id": "c2ea4838",
            "collection_id": "quickstart",
            "status": "DONE",
            "url": "video.mp4",
            "modality": "video",
        },
        "features": {
            "video": [
                {
                    "start_time": 0.0,
                    "end_time": 5.0,
                    "interval_sec": 60,
                    "modality": "video",
                    "created_at": "2024-11-08T16:56:01.330858Z",
                    "vectors": {"multimodal-v1": [0.1] * 1024},
                }
            ],
            "image": [],
            "text": [],
            "audio": [],
        },
    }

    a = parse_features("198dacbb", quickstart)
    b = parse_features("c2ea4838", sdk)

    assert (a.source_shape, b.source_shape) == ("video_segments", "grouped")
    assert a.features[0].modality == "video" and a.features[0].json_output == {"emotions": ["neutral"]}
    assert a.pagination is not None and a.pagination.total_pages == 2
    assert b.asset is not None and b.asset.status == "DONE" and b.features[0].interval_sec == 60
    assert "vectors" not in b.model_dump_json()
    summary = summarize(a)
    assert (summary.segments, summary.complete, summary.duration_s) == (12, False, 20.0)
    with pytest.raises(ValueError, match="neither video_segments"):
        parse_features("x", {"something": "else"})


def test_task_status_and_search_readers_accept_every_documented_variant() -> None:
    assert Task.model_validate({"task_id": "t", "status": "DONE", "file_id": "f1"}).asset_id == "f1"
    failed = Task.model_validate({"task_id": "t", "status": "FAILED", "error": {"message": "bad codec"}})
    assert failed.error_message == "bad codec"
    assert [normalize_status(s) for s in ("INITIALIZING", "downloading", "CANCELED", "WARMING")] == [
        "queued",
        "running",
        "cancelled",
        "WARMING",
    ]
    legacy = parse_search([{"file_id": "f", "score": 0.5, "caption": "a dog", "vectors": [1.0]}])
    assert legacy.results[0].asset_id == "f" and legacy.results[0].caption == "a dog"
    grouped = parse_search({"results": [{"group": "a", "score": 1, "features": [{"asset_id": "a"}]}]})
    assert grouped.groups is not None and grouped.groups[0].features[0].asset_id == "a"
    assert grouped.results == []


def test_a_bare_list_of_features_and_other_segment_kinds_are_read_too() -> None:
    bare = parse_features("a1", [{"modality": "image", "description": "a red bicycle"}, "junk"])
    mixed = parse_features(
        "a2",
        {"video_segments": [{"start_time": 0}], "audio_segments": [{"start_time": 0, "transcription": "hi"}]},
    )

    assert bare.source_shape == "list" and [f.description for f in bare.features] == ["a red bicycle"]
    assert [(f.modality, f.transcription) for f in mixed.features] == [("video", None), ("audio", "hi")]


def test_one_unreadable_segment_does_not_hide_the_others() -> None:
    page = parse_features(
        "a1",
        {
            "video_segments": [
                {"start_time": "not a time"},
                {"start_time": 10, "end_time": 20, "description": "ok"},
            ]
        },
    )

    assert [(f.start_time, f.description) for f in page.features] == [(10.0, "ok")]


async def test_features_are_read_with_the_page_in_the_query_and_bad_answers_reported(
    wire: Callable[..., Wire],
) -> None:
    answers = iter([{"video_segments": [{"start_time": 0, "end_time": 10}]}, {"nothing": "useful"}])
    client, w = mixpeek(wire, lambda request: answer(200, next(answers)))

    page = await client.get_asset_features("198dacbb", page=2, page_size=5)
    with pytest.raises(ProviderResponseError, match="neither video_segments"):
        await client.get_asset_features("198dacbb")

    assert page.asset_id == "198dacbb" and len(page.features) == 1
    assert w.sent[0].path == "/assets/198dacbb/features"
    assert dict(w.sent[0].url.params) == {"page": "2", "page_size": "5"}


# -- search --------------------------------------------------------------------------------------


async def test_search_sends_paging_in_the_query_and_everything_else_in_the_body(
    wire: Callable[..., Wire],
) -> None:
    body = {
        "results": [
            {"asset_id": "a1", "score": 0.9, "start_time": 0, "description": "a dog jumping", "vectors": [1]}
        ],
        "pagination": {"total": 1, "page": 1, "page_size": 10},
    }
    client, w = mixpeek(wire, always(answer(200, body)))
    filters = Filters.model_validate({"AND": [{"key": "metadata.hello", "operator": "eq", "value": "world"}]})

    found = await client.search(
        "dog jumping",
        ["quickstart"],
        filters=filters,
        model_id="multimodal-v1",
        search_type="semantic",
        page_size=10,
    )

    assert [(h.asset_id, h.score) for h in found.results] == [("a1", 0.9)]
    assert found.pagination is not None and found.pagination.total == 1
    sent = w.sent[0]
    assert sent.path == "/features/search/text" and dict(sent.url.params) == {"page_size": "10"}
    assert sent.json() == {
        "query": "dog jumping",
        "collection_ids": ["quickstart"],
        "filters": {"AND": [{"key": "metadata.hello", "operator": "eq", "value": "world"}]},
        "model_id": "multimodal-v1",
        "search_type": "semantic",
    }


async def test_a_search_answer_without_results_is_a_response_error(wire: Callable[..., Wire]) -> None:
    client, _ = mixpeek(wire, always(answer(200, {"hits": []})))

    with pytest.raises(ProviderResponseError, match="no results list"):
        await client.search("dog", ["quickstart"])


async def test_search_refuses_offset_with_group_by_and_an_empty_collection_list_before_sending(
    wire: Callable[..., Wire],
) -> None:
    client, w = mixpeek(wire, always(answer(200, {"results": []})))

    with pytest.raises(InvalidRequest, match="offset_position does not work with group_by"):
        await client.search("dog", ["quickstart"], group_by=GroupBy(field="asset_id"), offset_position=10)
    with pytest.raises(InvalidRequest, match="at least one collection"):
        await client.search("dog", [])

    assert w.sent == []


@pytest.mark.parametrize(
    ("condition", "message"),
    [
        ({"key": "metadata.hello", "operator": "in", "value": "world"}, "non-empty list"),
        ({"key": "metadata.views", "operator": "gt", "value": True}, "number or a date"),
        ({"key": "description", "operator": "text", "value": " "}, "non-empty string"),
        ({"key": "metadata.note", "operator": "exists", "value": "yes"}, "true or false"),
        ({"key": "metadata..hello", "operator": "eq", "value": 1}, "key"),
        ({"key": "metadata.hello", "operator": "like", "value": "w"}, "operator"),
    ],
)
def test_filter_conditions_refuse_values_their_operator_cannot_take(
    condition: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        Condition.model_validate(condition)


def test_filters_nest_groups_and_default_exists_to_true() -> None:
    filters = Filters.model_validate(
        {
            "OR": [
                {"key": "metadata.note", "operator": "exists"},
                {"NOR": [{"key": "a", "operator": "eq", "value": 1}]},
            ]
        }
    )

    assert filters.to_api() == {
        "OR": [
            {"key": "metadata.note", "operator": "exists", "value": True},
            {"NOR": [{"key": "a", "operator": "eq", "value": 1}]},
        ]
    }
    with pytest.raises(ValidationError, match="at least one condition"):
        Filters.model_validate({"AND": []})


# -- errors --------------------------------------------------------------------------------------


async def test_a_rejected_key_names_the_variable_and_an_unknown_task_is_not_found(
    wire: Callable[..., Wire],
) -> None:
    answers = iter([answer(401, {"detail": "Invalid API key"}), answer(404, {"detail": "Task not found"})])
    client, _ = mixpeek(wire, lambda request: next(answers))

    with pytest.raises(AuthFailed) as auth:
        await client.get_task(TASK_ID)
    with pytest.raises(NotFound, match="Task not found"):
        await client.get_task(TASK_ID)

    assert "Mixpeek get_task: authentication failed (401): Invalid API key" in str(auth.value)
    assert "check MIXPEEK_API_KEY" in str(auth.value)


async def test_too_many_requests_on_a_read_is_retried_after_the_hinted_delay(
    wire: Callable[..., Wire],
) -> None:
    answers = iter(
        [
            answer(429, {"detail": "You're requesting too many APIs! Slow down!"}, Retry_After="6"),
            answer(200, {"status": "DONE"}),
        ]
    )
    client, w = mixpeek(wire, lambda request: next(answers))

    task = await client.get_task(TASK_ID)

    assert task.status == "DONE" and w.clock.sleeps == [6.0] and len(w.sent) == 2


async def test_too_many_requests_on_an_index_is_not_retried(wire: Callable[..., Wire]) -> None:
    client, w = mixpeek(wire, always(answer(429, {"detail": "Slow down!"}, Retry_After="6")))

    with pytest.raises(RateLimited):
        await client.index_url(DEMO, "quickstart")

    assert len(w.sent) == 1 and w.clock.sleeps == []


# -- against the emulator ------------------------------------------------------------------------


async def test_index_poll_features_and_search_round_trip_against_the_emulator_in_process(
    wire: Callable[..., Wire],
) -> None:
    now = FakeNow()
    emulator = MixpeekEmulator(now=now, master_key=KEY, stage_seconds=2.0)
    client = MixpeekClient(wire("mixpeek", "http://mixpeek.test", app=emulator.app).transport)

    accepted = await client.index_url(DEMO, "quickstart", metadata={"hello": "world"})
    assert accepted.task_id is not None
    first = await client.get_task(accepted.task_id)
    now.advance(60)
    done = await client.get_task(accepted.task_id)
    assert done.asset_id is not None
    features = await client.get_asset_features(done.asset_id)
    found = await client.search("agility", ["quickstart"], search_type="fulltext", page_size=100)

    assert normalize_status(first.status) in ("queued", "running")
    assert done.status == "DONE" and features.features
    assert features.source_shape == "video_segments" and features.asset_id == done.asset_id
    assert found.results and {h.asset_id for h in found.results} == {done.asset_id}
    assert json.dumps(emulator.assets[done.asset_id].metadata) == '{"hello": "world"}'
