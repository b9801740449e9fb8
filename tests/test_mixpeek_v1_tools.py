"""Every Mixpeek tool against the live v1 API's emulator (the default generation), through the real server
and the in-memory MCP client. The emulator was written from the v1 contract, independently of the client.

Each tool is exercised in both protocol eras by at least one test (marked ``both_eras``: the ones about
progress, cancellation and resources among them); the rest talk in one era.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client
from mcp_types import TextResourceContents

from mediamux.clock import FakeClock
from mediamux.sandbox import Sandbox
from mediamux.server.app import MediamuxServer
from tests.test_muapi_tools import call, text
from tests.tokens import count

DEMO = "https://mixpeek-public-demo.s3.us-east-2.amazonaws.com/starter/aussie_agility.mp4"
CITY = "https://media.example.com/videos/city_night_walk.mp4"
DAY = 24 * 3600
UNNAMESPACED = ("/v1/namespaces", "/v1/tasks/", "/_storage/")

pytestmark = pytest.mark.providers("mixpeek")


def index_args(url: str = DEMO, **extra: Any) -> dict[str, Any]:
    return {"url": url, "collection_id": "quickstart", "wait_s": 60, **extra}


async def indexed(client: Client, url: str = DEMO, **extra: Any) -> dict[str, Any]:
    result = await call(client, "mixpeek_index_url", index_args(url, **extra))
    assert not result.is_error, text(result)
    data: dict[str, Any] = result.structured_content
    assert data["status"] == "completed", data
    return data


def links(result: Any) -> set[str]:
    return {str(b.uri) for b in result.content if getattr(b, "type", "") == "resource_link"}


# -- indexing ------------------------------------------------------------------------------------------


@pytest.mark.both_eras
async def test_index_url_sets_up_the_collection_and_waits_until_the_documents_are_searchable(
    client: Client, sandbox: Sandbox
) -> None:
    emu = sandbox.mixpeek
    emu.resolve_seconds = 30  # long enough for a poll to see the batch finalizing
    seen: list[str] = []

    async def progress(value: float, total: float | None, message: str | None) -> None:
        seen.append(message or "")

    result = await call(
        client, "mixpeek_index_url", index_args(metadata={"hello": "world"}), progress_callback=progress
    )

    assert not result.is_error, text(result)
    data = result.structured_content
    assert (data["provider"], data["operation"], data["status"]) == ("mixpeek", "index_url", "completed")
    assert data["provider_status"] == "COMPLETED"
    found = data["result"]
    task = emu.tasks[data["provider_job_id"]]
    assert (found["task_id"], found["batch_id"], found["bucket_id"]) == (
        task.task_id,
        task.batch_id,
        task.bucket_id,
    )
    obj = emu.objects[found["asset_id"]]
    assert obj.fields == {"metadata": {"hello": "world"}} and obj.source == DEMO
    assert emu.batches[task.batch_id].resolvable(emu.now())
    summary = found["documents"]
    assert summary["segments"] == math.ceil(obj.duration_s / 10) and summary["complete"] is True
    first = summary["first_segments"][0]
    assert (first["start_time"], first["end_time"]) == (0.0, 10.0)
    assert "aussie agility" in first["description"] and first["transcription"].startswith("0:00")
    assert first["ocr_text"].startswith("AUSSIE AGILITY")
    # The batch's reported charge: 10 credits per started minute at $0.001.
    credits = math.ceil(obj.duration_s / 60 * 10)
    assert data["cost"]["credits"] == credits and data["cost"]["usd"] == pytest.approx(credits * 0.001)
    assert any("FINALIZING" in m for m in seen)
    assert f"mixpeek://assets/{obj.object_id}" in links(result)
    # Set up once: the namespace, a bucket and a collection named after collection_id, all extractors on.
    assert dict(emu.created) == {
        "namespace": 1,
        "bucket": 1,
        "collection": 1,
        "object": 1,
        "batch": 1,
        "task": 1,
    }
    (ns,) = emu.namespaces.values()
    (collection,) = emu.collections.values()
    assert ns.name == "mediamux" and collection.name == "quickstart"
    params = collection.params
    assert (params.run_transcription, params.run_video_description, params.run_ocr) == (True, True, True)
    assert params.run_multimodal_embedding and params.time_split_interval == 10
    assert [p.source_path for p in collection.passthrough] == ["metadata"]


async def test_every_namespaced_call_carries_x_namespace_and_task_calls_do_not(
    make_server: Callable[..., MediamuxServer], sandbox: Sandbox
) -> None:
    async with Client(make_server(MIXPEEK_NAMESPACE="team-videos")) as client:
        await indexed(client)

    emu = sandbox.mixpeek
    assert [ns.name for ns in emu.namespaces.values()] == ["team-videos"]
    for method, path, header in emu.namespace_headers:
        expected = None if path.startswith(UNNAMESPACED) else "team-videos"
        assert header == expected, (method, path)


@pytest.mark.both_eras
async def test_index_file_uploads_through_a_presigned_url_with_the_chosen_features(
    client: Client, sandbox: Sandbox, files_dir: Path
) -> None:
    (files_dir / "yoga_class.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 800)
    progress: list[tuple[float, float | None]] = []

    async def on_progress(value: float, total: float | None, message: str | None) -> None:
        progress.append((value, total))

    result = await call(
        client,
        "mixpeek_index_file",
        {
            "path": "yoga_class.mp4",
            "collection_id": "uploads",
            "metadata": {"teacher": "ana", "level": 2},
            "features": ["transcription", "description"],
            "segment_s": 15,
            "wait_s": 60,
        },
        progress_callback=on_progress,
    )

    assert not result.is_error, text(result)
    data = result.structured_content
    assert data["operation"] == "index_file" and data["status"] == "completed"
    emu = sandbox.mixpeek
    obj = emu.objects[data["result"]["asset_id"]]
    assert obj.fields == {"metadata": {"teacher": "ana", "level": 2}} and obj.source == "yoga_class.mp4"
    params = next(iter(emu.collections.values())).params
    assert (params.run_transcription, params.run_video_description, params.run_ocr) == (True, True, False)
    assert params.time_split_interval == 15 and not params.run_multimodal_embedding
    assert data["result"]["documents"]["segments"] == math.ceil(obj.duration_s / 15)
    assert data["result"]["documents"]["first_segments"][0]["ocr_text"] is None
    puts = [p for m, p in emu.requests if m == "PUT"]
    assert len(puts) == 1 and puts[0].startswith("/_storage/uploads/")
    assert any(total is not None and value == total for value, total in progress)


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"url": "ftp://files.example.com/clip.mp4"}, "http(s) URL"),
        ({"url": "https:///no-host.mp4"}, "http(s) URL"),
        ({"collection_id": "qs"}, "collection_id"),
        ({"collection_id": "my videos"}, "collection_id"),
        ({"segment_s": 4}, "segment_s"),
        ({"segment_s": 120}, "segment_s"),
        ({"features": ["transcription", "faces"]}, "features"),
        ({"features": []}, "features"),
        ({"metadata": {"blob": "x" * 70_000}}, "metadata is larger"),
    ],
)
async def test_bad_index_arguments_are_refused_before_any_upstream_call(
    client: Client, sandbox: Sandbox, change: dict[str, Any], fragment: str
) -> None:
    result = await call(client, "mixpeek_index_url", {**index_args(), **change})

    assert result.is_error
    assert fragment in text(result)
    assert sandbox.mixpeek.requests == []


async def test_an_empty_file_is_refused_before_any_call(
    client: Client, sandbox: Sandbox, files_dir: Path
) -> None:
    (files_dir / "blank.mp4").write_bytes(b"")

    result = await call(client, "mixpeek_index_file", {"path": "blank.mp4", "collection_id": "clips"})

    assert result.is_error and "blank.mp4 is empty" in text(result)
    assert sandbox.mixpeek.requests == []


async def test_index_file_outside_the_allowed_folders_is_refused_before_any_call(
    client: Client, sandbox: Sandbox, tmp_path: Path
) -> None:
    (tmp_path / "secret.mp4").write_bytes(b"x")

    result = await call(client, "mixpeek_index_file", {"path": "../secret.mp4", "collection_id": "clips"})

    assert result.is_error and "MEDIAMUX_ALLOWED_DIRS" in text(result)
    assert sandbox.mixpeek.requests == []


async def test_concurrent_first_uses_create_the_namespace_bucket_and_collection_once(
    client: Client, sandbox: Sandbox
) -> None:
    urls = [f"https://media.example.com/clips/take_{i}.mp4" for i in range(4)]
    results: list[Any] = []

    async def index(url: str) -> None:
        results.append(await call(client, "mixpeek_index_url", index_args(url)))

    async with anyio.create_task_group() as tg:
        for url in urls:
            tg.start_soon(index, url)

    assert all(not r.is_error and r.structured_content["status"] == "completed" for r in results)
    created = sandbox.mixpeek.created
    assert (created["namespace"], created["bucket"], created["collection"]) == (1, 1, 1)
    assert created["object"] == created["batch"] == 4


async def test_two_servers_setting_up_the_same_collection_at_once_end_with_one(
    make_server: Callable[..., MediamuxServer], sandbox: Sandbox
) -> None:
    """Replicas share no memory: the provider's unique names decide, and the loser uses the winner's."""
    done: list[dict[str, Any]] = []

    async def replica(url: str) -> None:
        async with Client(make_server()) as client:
            done.append(await indexed(client, url))

    async with anyio.create_task_group() as tg:
        tg.start_soon(replica, DEMO)
        tg.start_soon(replica, CITY)

    created = sandbox.mixpeek.created
    assert (created["namespace"], created["bucket"], created["collection"]) == (1, 1, 1)
    assert {d["result"]["bucket_id"] for d in done} == {next(iter(sandbox.mixpeek.buckets))}


async def test_an_existing_collection_keeps_its_features_and_a_different_ask_is_refused(
    client: Client, sandbox: Sandbox
) -> None:
    await indexed(client, features=["ocr", "embedding"], segment_s=20)
    objects = len(sandbox.mixpeek.objects)

    refused = await call(client, "mixpeek_index_url", index_args(CITY, features=["transcription"]))
    default = await indexed(client, CITY)  # features left out: the collection's own

    assert refused.is_error and refused.meta["mediamux/error"]["class"] == "invalid_input"
    assert "extracts ocr, embedding every 20 s" in text(refused)
    assert len(sandbox.mixpeek.objects) == objects + 1  # only the second call made an object
    assert default["result"]["documents"]["first_segments"][0]["transcription"] is None


async def test_a_completed_batch_is_finalizing_until_its_documents_resolve(
    client: Client, sandbox: Sandbox
) -> None:
    sandbox.mixpeek.resolve_seconds = 100

    early = (await call(client, "mixpeek_index_url", index_args(wait_s=20))).structured_content
    later = (await call(client, "jobs_wait", {"job_id": early["job_id"], "wait_s": 300})).structured_content

    assert (early["status"], early["provider_status"]) == ("running", "FINALIZING")
    assert "jobs_wait" in early["note"] and "unrecognised" not in early["note"]
    assert early["result"]["asset_id"] and early["result"]["documents"] is None
    assert (later["status"], later["provider_status"]) == ("completed", "COMPLETED")
    assert later["result"]["documents"]["segments"] > 0


async def test_a_task_past_its_retention_is_followed_through_its_batch(
    client: Client, sandbox: Sandbox, clock: FakeClock
) -> None:
    started = (await call(client, "mixpeek_index_url", index_args(wait_s=0))).structured_content
    clock.advance(DAY + 3600)

    task = await call(client, "mixpeek_get_task", {"task_id": started["provider_job_id"]})
    done = (await call(client, "jobs_wait", {"job_id": started["job_id"], "wait_s": 30})).structured_content

    assert started["status"] == "queued"
    assert not task.is_error, text(task)
    view = task.structured_content
    assert (view["status"], view["provider_status"], view["documents_ready"]) == (
        "completed",
        "COMPLETED",
        True,
    )
    assert "expired" in view["note"] and view["job_id"] == started["job_id"]
    assert (done["status"], done["provider_status"]) == ("completed", "COMPLETED")
    assert done["result"]["documents"]["segments"] > 0
    polls = [p for m, p in sandbox.mixpeek.requests if p == f"/v1/tasks/{started['provider_job_id']}"]
    assert polls, "the task was asked for first"


async def test_a_restarted_server_finds_an_expired_tasks_batch_in_the_bucket(
    make_server: Callable[..., MediamuxServer], sandbox: Sandbox, clock: FakeClock
) -> None:
    async with Client(make_server()) as first:
        started = (await call(first, "mixpeek_index_url", index_args(wait_s=0))).structured_content
    clock.advance(DAY + 3600)

    async with Client(make_server()) as second:
        done = (
            await call(second, "jobs_wait", {"job_id": started["job_id"], "wait_s": 30})
        ).structured_content

    assert (done["status"], done["provider_status"]) == ("completed", "COMPLETED")
    assert done["result"]["batch_id"] == sandbox.mixpeek.tasks[started["provider_job_id"]].batch_id
    assert any(p.endswith("/batches/list") for _, p in sandbox.mixpeek.requests)


async def test_completed_with_errors_is_a_failed_job_that_keeps_its_partial_result(
    client: Client, sandbox: Sandbox
) -> None:
    result = await call(
        client, "mixpeek_index_url", index_args("https://media.example.com/no_audio_timelapse.mp4")
    )

    assert result.is_error
    data = result.structured_content
    assert (data["status"], data["provider_status"]) == ("failed", "COMPLETED_WITH_ERRORS")
    assert data["error"]["class"] == "provider_error"
    assert "only in part" in data["error"]["message"] and "no audio track" in data["error"]["message"]
    partial = data["result"]
    assert partial["problems"] and "transcription" in partial["problems"][0]
    assert partial["documents"]["segments"] > 0
    assert all(s["transcription"] is None for s in partial["documents"]["first_segments"])
    found = (
        await call(client, "mixpeek_search", {"query": "timelapse", "collection_ids": ["quickstart"]})
    ).structured_content
    assert {h["asset_id"] for h in found["results"]} == {partial["asset_id"]}


async def test_an_unreachable_url_ends_failed_with_the_providers_reason(client: Client) -> None:
    result = await call(client, "mixpeek_index_url", index_args("https://media.invalid/clip.mp4"))

    assert result.is_error
    data = result.structured_content
    assert (data["status"], data["provider_status"]) == ("failed", "FAILED")
    assert data["error"]["message"].startswith("Mixpeek indexing failed: Failed to download")
    assert "could not resolve host media.invalid" in data["error"]["message"]
    assert data["cost"]["usd"] is None  # nothing was charged, so nothing is claimed


# -- tasks ---------------------------------------------------------------------------------------------


@pytest.mark.both_eras
async def test_get_task_reports_the_raw_and_normalised_status_and_links_our_job(client: Client) -> None:
    started = (await call(client, "mixpeek_index_url", index_args(wait_s=0))).structured_content

    early = (
        await call(client, "mixpeek_get_task", {"task_id": started["provider_job_id"]})
    ).structured_content
    await call(client, "jobs_wait", {"job_id": started["job_id"], "wait_s": 60})
    late = await call(client, "mixpeek_get_task", {"task_id": started["provider_job_id"]})

    assert (early["status"], early["provider_status"]) == ("queued", "PENDING")
    assert early["job_id"] == started["job_id"] and early["batch_id"] == started["result"]["batch_id"]
    view = late.structured_content
    assert (view["status"], view["provider_status"], view["documents_ready"]) == (
        "completed",
        "COMPLETED",
        True,
    )
    assert view["asset_id"] == started["result"]["asset_id"]
    assert f"mixpeek://assets/{view['asset_id']}" in links(late)


async def test_get_task_of_an_unknown_task_is_not_found_and_says_how_long_tasks_are_kept(
    client: Client,
) -> None:
    result = await call(client, "mixpeek_get_task", {"task_id": "tsk_nope"})

    assert result.is_error and result.meta["mediamux/error"]["class"] == "not_found"
    assert "24 h" in text(result)


@pytest.mark.both_eras
async def test_cancel_task_kills_a_running_task_and_the_job_ends_cancelled(client: Client) -> None:
    started = (await call(client, "mixpeek_index_url", index_args(wait_s=0))).structured_content

    cancelled = await call(client, "mixpeek_cancel_task", {"task_id": started["provider_job_id"]})
    resumed = (
        await call(client, "jobs_wait", {"job_id": started["job_id"], "wait_s": 30})
    ).structured_content
    again = await call(client, "mixpeek_cancel_task", {"task_id": started["provider_job_id"]})

    assert not cancelled.is_error, text(cancelled)
    view = cancelled.structured_content
    assert (view["message"], view["status"], view["provider_status"]) == (
        "Task killed",
        "cancelled",
        "CANCELED",
    )
    assert view["job_id"] == started["job_id"]
    assert (
        resumed["status"] == "cancelled"
        and resumed["error"]["message"] == "Mixpeek cancelled the indexing task"
    )
    assert again.structured_content["message"] == "Task already finished"


# -- segments ------------------------------------------------------------------------------------------


@pytest.mark.both_eras
async def test_asset_features_page_through_the_objects_documents_in_time_order(
    client: Client, sandbox: Sandbox
) -> None:
    done = await indexed(client)
    asset_id = done["result"]["asset_id"]
    total = done["result"]["documents"]["segments"]

    page = await call(client, "mixpeek_get_asset_features", {"asset_id": asset_id, "page": 2, "page_size": 5})

    assert not page.is_error, text(page)
    found = page.structured_content
    assert (found["total"], found["page"], found["page_size"]) == (total, 2, 5)
    assert found["total_pages"] == math.ceil(total / 5)
    assert total > 5, "the demo video is long enough for a second page of five"
    assert [s["start_time"] for s in found["segments"]] == [10.0 * k for k in range(5, min(10, total))]
    assert all(s["document_id"] and s["metadata"] is None and s["thumbnail_url"] for s in found["segments"])
    assert "vectors" not in json.dumps(found)


async def test_features_of_an_unknown_object_are_not_found(client: Client) -> None:
    result = await call(client, "mixpeek_get_asset_features", {"asset_id": "obj_nope"})

    assert result.is_error and result.meta["mediamux/error"]["class"] == "not_found"


@pytest.mark.both_eras
async def test_the_asset_resource_serves_the_segments(client: Client) -> None:
    done = await indexed(client)
    asset_id = done["result"]["asset_id"]

    uri: str | None = f"mixpeek://assets/{asset_id}"
    segments = []
    while uri is not None:
        with anyio.fail_after(10):
            read = await client.read_resource(uri)
        content = read.contents[0]
        assert isinstance(content, TextResourceContents) and len(content.text) <= 2000
        data = json.loads(content.text)
        assert data["asset_id"] == asset_id
        segments.extend(data["segments"])
        uri = data.get("next")

    assert len(segments) == done["result"]["documents"]["segments"]
    assert len({s["document_id"] for s in segments}) == len(segments)


# -- search --------------------------------------------------------------------------------------------


@pytest.fixture
async def two_videos(client: Client) -> dict[str, str]:
    a = await indexed(client, metadata={"hello": "world", "views": 10, "tags": ["dog", "sport"]})
    b = await indexed(client, CITY, metadata={"hello": "moon", "views": 250, "note": "late night"})
    return {a["result"]["asset_id"]: "agility", b["result"]["asset_id"]: "city"}


async def search(client: Client, query: str = "dog jumping", **extra: Any) -> Any:
    return await call(client, "mixpeek_search", {"query": query, "collection_ids": ["quickstart"], **extra})


async def found(client: Client, videos: dict[str, str], **extra: Any) -> set[str]:
    result = await search(client, page_size=100, **extra)
    assert not result.is_error, text(result)
    return {videos[h["asset_id"]] for h in result.structured_content["results"]}


@pytest.mark.both_eras
async def test_fulltext_matches_words_while_semantic_ranks_every_segment(
    client: Client, two_videos: dict[str, str]
) -> None:
    fulltext = (await search(client, "agility", search_type="fulltext", page_size=100)).structured_content
    semantic = (await search(client, "agility", page_size=100)).structured_content

    assert {two_videos[h["asset_id"]] for h in fulltext["results"]} == {"agility"}
    assert {two_videos[h["asset_id"]] for h in semantic["results"]} == {"agility", "city"}
    scores = [h["score"] for h in semantic["results"]]
    assert (
        scores == sorted(scores, reverse=True) and two_videos[semantic["results"][0]["asset_id"]] == "agility"
    )
    assert semantic["total"] == len(semantic["results"])
    assert (await search(client, "agility", page_size=100)).structured_content["results"] == semantic[
        "results"
    ]


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ({"AND": [{"field": "metadata.hello", "operator": "eq", "value": "world"}]}, {"agility"}),
        ({"AND": [{"key": "metadata.hello", "operator": "eq", "value": "world"}]}, {"agility"}),
        ({"NOT": [{"field": "metadata.hello", "operator": "eq", "value": "world"}]}, {"city"}),
        ({"NOR": [{"key": "metadata.hello", "operator": "eq", "value": "world"}]}, {"city"}),
        ({"field": "metadata.views", "operator": "gt", "value": 100}, {"city"}),
        ({"AND": [{"field": "metadata.tags", "operator": "contains", "value": "dog"}]}, {"agility"}),
        ({"AND": [{"field": "metadata.note", "operator": "is_null"}]}, {"agility"}),
        ({"AND": [{"field": "description", "operator": "text", "value": "city night"}]}, {"city"}),
        (
            {
                "OR": [
                    {"key": "metadata.hello", "operator": "eq", "value": "world"},
                    {"AND": [{"field": "metadata.views", "operator": "gt", "value": 100}]},
                ]
            },
            {"agility", "city"},
        ),
    ],
)
async def test_filters_in_either_generations_spelling_select_videos_by_metadata(
    client: Client, two_videos: dict[str, str], filters: dict[str, Any], expected: set[str]
) -> None:
    assert await found(client, two_videos, filters=filters) == expected


@pytest.mark.parametrize(
    ("filters", "fragment"),
    [
        ({"AND": [{"field": "metadata.hello", "operator": "like", "value": "w"}]}, "not an operator"),
        ({"AND": [{"field": "metadata.hello", "operator": "in", "value": "world"}]}, "non-empty list"),
        ({"AND": [{"field": "metadata..hello", "operator": "eq", "value": 1}]}, "field path"),
        ({"and": [{"field": "metadata.hello", "operator": "eq", "value": 1}]}, "unknown key 'and'"),
        ({"AND": [{"field": "x", "operator": "regex", "value": "("}]}, "regular expression"),
        ({"NOT": [], "NOR": []}, "mean the same"),
    ],
)
async def test_malformed_filters_are_refused_before_any_upstream_call(
    client: Client, sandbox: Sandbox, filters: dict[str, Any], fragment: str
) -> None:
    result = await search(client, filters=filters)

    assert result.is_error and result.meta["mediamux/error"]["class"] == "invalid_input"
    assert fragment in text(result)
    assert sandbox.mixpeek.requests == []


async def test_search_reads_the_feature_uri_from_the_collection(client: Client, sandbox: Sandbox) -> None:
    sandbox.mixpeek.embedding_output = "gemini_embedding_2_768"
    await indexed(client)

    result = await search(client, "agility")

    assert not result.is_error, text(result)
    assert result.structured_content["results"]


async def test_search_pages_and_names_collections_that_do_not_exist(
    client: Client, two_videos: dict[str, str]
) -> None:
    everything = (await search(client, page_size=100)).structured_content["results"]
    second = (
        await search(client, page=2, page_size=3, collection_ids=["quickstart", "elsewhere"])
    ).structured_content
    nowhere = await call(client, "mixpeek_search", {"query": "dog", "collection_ids": ["elsewhere"]})

    assert [h["document_id"] for h in second["results"]] == [h["document_id"] for h in everything[3:6]]
    assert (second["page"], second["page_size"], second["missing_collections"]) == (2, 3, ["elsewhere"])
    assert not nowhere.is_error and nowhere.structured_content["results"] == []
    assert nowhere.structured_content["missing_collections"] == ["elsewhere"]


async def test_a_collection_without_embeddings_is_reported_not_searched(client: Client) -> None:
    await indexed(client, features=["transcription", "description"])

    result = (await search(client, "agility")).structured_content

    assert result["results"] == [] and "not searched: quickstart" in result["note"]


# -- errors --------------------------------------------------------------------------------------------


async def test_a_429_with_the_wait_only_in_the_body_is_waited_out_and_retried(
    client: Client, sandbox: Sandbox, clock: FakeClock, two_videos: dict[str, str]
) -> None:
    sandbox.mixpeek.throttle("/v1/retrievers/execute", times=1, retry_after_s=7)

    result = await search(client)

    assert not result.is_error, text(result)
    assert 7.0 in clock.sleeps


async def test_a_429_asking_for_a_long_wait_becomes_a_rate_limited_error_with_the_wait(
    client: Client, sandbox: Sandbox, two_videos: dict[str, str]
) -> None:
    sandbox.mixpeek.throttle("/v1/retrievers/execute", times=5, retry_after_s=120)

    result = await search(client)

    assert result.is_error
    meta = result.meta["mediamux/error"]
    assert (meta["class"], meta["retry_after_s"]) == ("rate_limited", 120.0)
    assert "Mixpeek search: rate limited (429)" in text(result) and "retry after 120 s" in text(result)


async def test_a_422_names_the_field_mixpeek_refused(
    client: Client, sandbox: Sandbox, two_videos: dict[str, str]
) -> None:
    refused_field = ["body", "stages", 0, "config", "parameters", "searches", 0, "top_k"]
    body = {
        "success": False,
        "status": 422,
        "error": {
            "message": "Request validation failed",
            "type": "ValidationError",
            "details": {"validation_errors": [{"loc": refused_field, "msg": "Input should be at most 5000"}]},
        },
    }
    sandbox.mixpeek.faults.add(path=r"^/v1/retrievers/execute$", kind="status", status=422, body=body)

    result = await search(client)

    assert result.is_error and result.meta["mediamux/error"]["class"] == "invalid_input"
    assert "stages.0.config.parameters.searches.0.top_k: Input should be at most 5000" in text(result)


async def test_a_rejected_key_is_an_auth_error_that_names_the_variable(
    client: Client, sandbox: Sandbox
) -> None:
    sandbox.mixpeek.master_key = "rotated-key"

    result = await search(client)

    assert result.is_error and result.meta["mediamux/error"]["class"] == "auth"
    assert "MIXPEEK_API_KEY" in text(result) and "sandbox-mixpeek-key" not in text(result)


async def test_without_a_key_the_tools_name_the_variable_to_set(
    make_server: Callable[..., MediamuxServer],
) -> None:
    async with Client(make_server(use_sandbox=False, MEDIAMUX_TOOLSETS="mixpeek,jobs")) as client:
        result = await search(client)

    assert result.is_error and result.meta["mediamux/error"]["class"] == "auth"
    assert "MIXPEEK_API_KEY" in text(result)


# -- what models see -----------------------------------------------------------------------------------

MIXPEEK_TOOLS = {
    "mixpeek_index_url",
    "mixpeek_index_file",
    "mixpeek_get_task",
    "mixpeek_cancel_task",
    "mixpeek_get_asset_features",
    "mixpeek_search",
}
TOKEN_BUDGET = 400


async def _visible_definitions(server: MediamuxServer) -> dict[str, str]:
    async with Client(server) as client:
        with anyio.fail_after(20):
            tools = (await client.list_tools()).tools
    shown = {}
    for tool in tools:
        if tool.name in MIXPEEK_TOOLS:
            data = tool.model_dump(mode="json", by_alias=True, exclude_unset=True)
            visible = {k: data[k] for k in ("name", "description", "inputSchema") if k in data}
            shown[tool.name] = json.dumps(visible, separators=(",", ":"), ensure_ascii=False)
    return shown


async def test_each_mixpeek_tool_definition_fits_the_token_budget(
    make_server: Callable[..., MediamuxServer],
) -> None:
    shown = await _visible_definitions(make_server(MEDIAMUX_TOOLSETS="mixpeek"))

    assert set(shown) == MIXPEEK_TOOLS
    over = {name: count(text) for name, text in shown.items() if count(text) > TOKEN_BUDGET}
    assert over == {}


async def test_the_mixpeek_tools_are_the_same_whichever_api_generation_is_configured(
    make_server: Callable[..., MediamuxServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    v1 = await _visible_definitions(make_server(MEDIAMUX_TOOLSETS="mixpeek"))
    monkeypatch.setenv("MIXPEEK_API_VERSION", "v0")
    v0 = await _visible_definitions(make_server(MEDIAMUX_TOOLSETS="mixpeek"))

    assert v0 == v1


@pytest.mark.parametrize(
    ("env", "fragment"),
    [
        ({"MIXPEEK_API_VERSION": "v2"}, "MIXPEEK_API_VERSION"),
        ({"MIXPEEK_NAMESPACE": "my videos"}, "MIXPEEK_NAMESPACE"),
        ({"MIXPEEK_NAMESPACE": "ab"}, "MIXPEEK_NAMESPACE"),
    ],
)
def test_a_bad_mixpeek_setting_is_a_start_up_error_naming_the_variable(
    make_settings: Callable[..., Any], env: dict[str, str], fragment: str
) -> None:
    with pytest.raises(ValueError, match=fragment):
        make_settings(**env)


# -- webhooks --------------------------------------------------------------------------------------------


async def test_a_mixpeek_webhook_finishes_indexing_as_soon_as_its_documents_can_be_searched(
    make_server: Callable[..., MediamuxServer], sandbox: Sandbox, clock: FakeClock
) -> None:
    import httpx2
    from starlette.applications import Starlette

    from mediamux.server.hooks import HookReceiver
    from tests.support import eventually

    server = make_server()
    server.hook_base = "http://mediamux.test/hooks"  # what MEDIAMUX_PUBLIC_URL sets over HTTP
    emu = sandbox.mixpeek
    emu.stage_seconds, emu.resolve_seconds = 5.0, 1.0  # COMPLETED at 15 s, searchable at 16 s
    returned: list[tuple[Any, float]] = []
    route = Starlette(routes=[HookReceiver(server).route()])
    async with httpx2.AsyncClient(transport=httpx2.ASGITransport(app=route)) as delivery:
        emu.webhook_client = delivery  # the emulator's POSTs reach the server's webhook route
        async with Client(server, mode="legacy") as client, anyio.create_task_group() as tg:

            async def index() -> None:
                result = await call(client, "mixpeek_index_url", index_args(wait_s=120))
                returned.append((result, clock.monotonic()))

            tg.start_soon(index)
            await eventually(
                lambda: any(b.status_at(clock.monotonic()) == "COMPLETED" for b in emu.batches.values()),
                clock=clock,
            )
            assert await emu.deliver_due_webhooks() == 1

    [(result, at)] = returned
    assert not result.is_error, text(result)
    data = result.structured_content
    [batch] = emu.batches.values()
    assert data["status"] == "completed" and batch.webhook_url.startswith("http://mediamux.test/hooks/job_")
    searchable = batch.submitted + 3 * 5.0 + 1.0
    # Seen within a second or so of becoming searchable; its fallback polls (no history: 2, 6, 14, 22 s)
    # would have seen it at about 22 s.
    assert searchable <= at <= searchable + 1.5
    assert emu.polls[data["provider_job_id"]] <= 6
