"""Every Mixpeek tool against the older v0 (quickstart) API, which ``MIXPEEK_API_VERSION=v0`` selects:
through the real server and the in-memory MCP client, against the v0 emulator (written from the
documents, independently of the client). The same tools against the default v1 API are in
``test_mixpeek_v1_tools.py``; the v0 client's readers are unit-tested in ``tests/unit/providers``.

Tool behaviour is checked in one protocol era; progress, cancellation and resources are marked ``both_eras``.
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
from mediamux.jobs.mixpeek import IndexArgs, v0_settings
from mediamux.sandbox import Sandbox
from mediamux.server.app import MediamuxServer
from tests.support import eventually
from tests.test_muapi_tools import call, text

pytestmark = pytest.mark.providers("mixpeek")

DEMO = "https://mixpeek-public-demo.s3.us-east-2.amazonaws.com/starter/aussie_agility.mp4"
CITY = "https://media.example.com/videos/city_night_walk.mp4"


@pytest.fixture(autouse=True)
def v0_api(monkeypatch: pytest.MonkeyPatch) -> None:
    """The server and the sandbox both read the generation from the environment."""
    monkeypatch.setenv("MIXPEEK_API_VERSION", "v0")


def index_args(url: str = DEMO, **extra: Any) -> dict[str, Any]:
    return {"url": url, "collection_id": "quickstart", "wait_s": 60, **extra}


async def indexed(client: Client, url: str = DEMO, **extra: Any) -> dict[str, Any]:
    result = await call(client, "mixpeek_index_url", index_args(url, **extra))
    assert not result.is_error, text(result)
    data: dict[str, Any] = result.structured_content
    assert data["status"] == "completed"
    return data


def duration_of(sandbox: Sandbox, asset_id: str) -> float:
    return float(sandbox.mixpeek.assets[asset_id].sources[0].duration)


# -- indexing ----------------------------------------------------------------------------------


@pytest.mark.both_eras
async def test_index_url_waits_for_the_task_and_returns_the_asset_with_a_segment_summary(
    client: Client, sandbox: Sandbox
) -> None:
    seen: list[str] = []

    async def progress(value: float, total: float | None, message: str | None) -> None:
        seen.append(message or "")

    result = await call(
        client, "mixpeek_index_url", index_args(metadata={"hello": "world"}), progress_callback=progress
    )

    assert not result.is_error, text(result)
    data = result.structured_content
    assert (data["provider"], data["operation"], data["status"]) == ("mixpeek", "index_url", "completed")
    assert data["provider_status"] == "DONE"
    task = sandbox.mixpeek.tasks[data["provider_job_id"]]
    asset_id = data["result"]["asset_id"]
    assert asset_id == task.asset_id and data["result"]["task_id"] == task.task_id
    # The v0 API reports no charge: unknown, never a made-up zero, and said so.
    assert all(value is None for key, value in data["cost"].items() if key != "note")
    assert data["cost"]["note"] == "not reported by Mixpeek"
    assert "cost not reported" in text(result)
    # The named features became the quickstart's settings block: every extractor, 10 s segments.
    (setting,) = sandbox.mixpeek.assets[asset_id].sources[0].video_settings
    assert setting.interval_sec == 10
    assert all(getattr(setting, block) is not None for block in ("read", "embed", "transcribe", "describe"))
    summary = data["result"]["documents"]
    duration = duration_of(sandbox, asset_id)
    assert summary["segments"] == math.ceil(duration / 10)
    assert summary["duration_s"] == pytest.approx(duration)
    assert summary["complete"] is True
    first = summary["first_segments"]
    assert len(first) == 3 and first[0]["start_time"] == 0.0 and first[0]["end_time"] == 10.0
    assert "aussie agility" in first[0]["description"] and first[0]["ocr_text"].startswith("AUSSIE AGILITY")
    assert first[0]["transcription"].startswith("0:00")
    assert all(len(s["description"]) <= 200 for s in first)
    assert sandbox.mixpeek.assets[asset_id].metadata == {"hello": "world"}
    assert any("DOWNLOADING" in m or "PROCESSING" in m for m in seen)
    links = {str(b.uri) for b in result.content if getattr(b, "type", "") == "resource_link"}
    assert f"mixpeek://assets/{asset_id}" in links and f"mediamux://jobs/{data['job_id']}" in links


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("https://media.invalid/clip.mp4", "could not resolve host media.invalid"),
        ("https://cdn.example.com/404/clip.mp4", "404"),
    ],
)
async def test_an_unreachable_url_ends_failed_with_the_providers_reason(
    client: Client, sandbox: Sandbox, url: str, reason: str
) -> None:
    result = await call(client, "mixpeek_index_url", index_args(url))

    assert result.is_error
    data = result.structured_content
    assert data["status"] == "failed" and data["provider_status"] == "FAILED"
    assert data["error"]["class"] == "provider_error"
    assert data["error"]["message"].startswith("Mixpeek indexing failed: ")
    assert reason in data["error"]["message"]
    assert result.meta["mediamux/error"]["class"] == "provider_error"
    assert data["result"] is None


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"segment_s": 4}, "segment_s"),
        ({"segment_s": 120}, "segment_s"),
        ({"features": ["transcription", "faces"]}, "features"),
        ({"collection_id": "c"}, "collection_id"),
        ({"url": "ftp://files.example.com/clip.mp4"}, "http(s) URL"),
        ({"url": "file:///etc/passwd"}, "http(s) URL"),
        ({"url": "https:///no-host.mp4"}, "http(s) URL"),
    ],
)
async def test_bad_index_arguments_are_refused_before_any_upstream_call(
    client: Client, sandbox: Sandbox, change: dict[str, Any], fragment: str
) -> None:
    result = await call(client, "mixpeek_index_url", {**index_args(), **change})

    assert result.is_error
    assert fragment in text(result)
    assert sandbox.mixpeek.requests == []


@pytest.mark.both_eras
async def test_index_file_streams_the_upload_with_json_encoded_fields_and_indexes_it(
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
            "features": ["description", "transcription"],
            "segment_s": 15,
            "wait_s": 60,
        },
        progress_callback=on_progress,
    )

    assert not result.is_error, text(result)
    data = result.structured_content
    assert data["operation"] == "index_file" and data["status"] == "completed"
    asset = sandbox.mixpeek.assets[data["result"]["asset_id"]]
    # The multipart form carried metadata and settings as JSON strings, which the provider decoded.
    assert asset.metadata == {"teacher": "ana", "level": 2}
    assert asset.url == "yoga_class.mp4" and asset.collection_id == "uploads"
    (setting,) = asset.sources[0].video_settings
    assert (setting.interval_sec, setting.read, setting.embed) == (15, None, None)
    assert data["result"]["documents"]["segments"] == math.ceil(asset.sources[0].duration / 15)
    assert [p for m, p in sandbox.mixpeek.requests if m == "POST"] == ["/index/upload"]
    assert any(total is not None and value == total for value, total in progress)


async def test_index_file_outside_the_allowed_folders_is_refused_before_any_call(
    client: Client, sandbox: Sandbox, tmp_path: Path
) -> None:
    (tmp_path / "secret.mp4").write_bytes(b"x")

    result = await call(client, "mixpeek_index_file", {"path": "../secret.mp4", "collection_id": "clips"})

    assert result.is_error and "MEDIAMUX_ALLOWED_DIRS" in text(result)
    assert sandbox.mixpeek.requests == []


async def test_an_identical_index_call_returns_the_same_job_and_new_job_indexes_again(
    client: Client, sandbox: Sandbox
) -> None:
    first = await indexed(client)
    again = await indexed(client)
    assert again["job_id"] == first["job_id"] and again["deduplicated"] is True
    assert sandbox.mixpeek.tasks_created == 1

    fresh = await indexed(client, new_job=True)
    assert fresh["job_id"] != first["job_id"] and fresh["deduplicated"] is False
    assert fresh["result"]["asset_id"] != first["result"]["asset_id"]
    assert sandbox.mixpeek.tasks_created == 2


async def test_a_features_read_that_fails_after_indexing_keeps_the_job_completed(
    client: Client, sandbox: Sandbox
) -> None:
    sandbox.mixpeek.faults.add(method="GET", path=r"/features$", kind="status", status=500, times=-1)

    result = await call(client, "mixpeek_index_url", index_args())

    assert not result.is_error, text(result)
    data = result.structured_content
    assert data["status"] == "completed" and data["result"]["asset_id"]
    assert data["result"]["documents"] is None
    assert "Mixpeek get_asset_features" in data["result"]["documents_error"]


# -- tasks -------------------------------------------------------------------------------------


async def test_get_task_reports_the_raw_and_normalised_status_and_links_our_job(
    client: Client, sandbox: Sandbox
) -> None:
    started = (await call(client, "mixpeek_index_url", index_args(wait_s=0))).structured_content
    assert started["status"] in ("queued", "running") and "jobs_wait" in started["note"]

    early = await call(client, "mixpeek_get_task", {"task_id": started["provider_job_id"]})
    assert not early.is_error, text(early)
    assert early.structured_content["provider_status"] in ("INITIALIZING", "DOWNLOADING", "PROCESSING")
    assert early.structured_content["job_id"] == started["job_id"]

    finished = await call(client, "jobs_wait", {"job_id": started["job_id"], "wait_s": 60})
    assert finished.structured_content["status"] == "completed"
    late = (
        await call(client, "mixpeek_get_task", {"task_id": started["provider_job_id"]})
    ).structured_content
    assert (late["status"], late["provider_status"]) == ("completed", "DONE")
    assert late["asset_id"] == finished.structured_content["result"]["asset_id"]


async def test_get_task_of_an_unknown_task_is_not_found(client: Client) -> None:
    result = await call(client, "mixpeek_get_task", {"task_id": "0b0e6c1e-nope"})

    assert result.is_error and result.meta["mediamux/error"]["class"] == "not_found"
    assert "Task not found" in text(result)


async def test_cancel_task_kills_a_running_task_and_the_job_ends_with_the_reason(
    client: Client, sandbox: Sandbox
) -> None:
    started = (await call(client, "mixpeek_index_url", index_args(wait_s=0))).structured_content

    cancelled = await call(client, "mixpeek_cancel_task", {"task_id": started["provider_job_id"]})

    assert not cancelled.is_error, text(cancelled)
    view = cancelled.structured_content
    assert view["message"] == "Task killed"
    assert view["provider_status"] == "FAILED" and view["error"] == "Task was cancelled"
    assert view["job_id"] == started["job_id"]
    resumed = await call(client, "jobs_wait", {"job_id": started["job_id"], "wait_s": 30})
    assert resumed.structured_content["status"] == "failed"
    assert "Task was cancelled" in resumed.structured_content["error"]["message"]
    again = await call(client, "mixpeek_cancel_task", {"task_id": started["provider_job_id"]})
    assert not again.is_error and again.structured_content["message"] == "Task already finished"


@pytest.mark.both_eras
async def test_cancelling_the_call_stops_polling_at_once_and_the_task_stays_resumable(
    client: Client, sandbox: Sandbox, clock: FakeClock
) -> None:
    sandbox.mixpeek.stage_seconds = 100_000  # a task that stays INITIALIZING for the whole test

    with anyio.fail_after(20):
        async with anyio.create_task_group() as tg:
            tg.start_soon(client.call_tool, "mixpeek_index_url", index_args(wait_s=600))
            await eventually(lambda: sum(sandbox.mixpeek.polls.values()) >= 2, clock=clock)
            tg.cancel_scope.cancel()
        polls_at_cancel = sum(sandbox.mixpeek.polls.values())
        for _ in range(5):
            await clock.sleep(30)  # fake time passes; a live poll loop would poll again

    assert sum(sandbox.mixpeek.polls.values()) == polls_at_cancel
    listed = (await call(client, "jobs_list", {"status": "active", "provider": "mixpeek"})).structured_content
    assert len(listed["jobs"]) == 1 and listed["jobs"][0]["provider_job_id"]
    resumed = await call(client, "jobs_wait", {"job_id": listed["jobs"][0]["job_id"], "wait_s": 5})
    assert resumed.structured_content["status"] == "queued"
    assert resumed.structured_content["provider_status"] == "INITIALIZING"
    assert sandbox.mixpeek.tasks_created == 1


# -- features ----------------------------------------------------------------------------------


async def test_asset_features_are_read_in_both_documented_shapes_as_one_model(
    client: Client, sandbox: Sandbox
) -> None:
    done = await indexed(client)
    asset_id = done["result"]["asset_id"]
    total = done["result"]["documents"]["segments"]

    sandbox.mixpeek.features_shape = "segments"
    paged = await call(
        client, "mixpeek_get_asset_features", {"asset_id": asset_id, "page": 2, "page_size": 5}
    )
    assert not paged.is_error, text(paged)
    segments = paged.structured_content
    assert (segments["page"], segments["page_size"], segments["total"]) == (2, 5, total)
    assert segments["segments"], "the demo video is long enough for a second page of five"
    assert [f["start_time"] for f in segments["segments"]] == [50.0, 60.0, 70.0, 80.0, 90.0][
        : len(segments["segments"])
    ]
    assert all(f["ocr_text"] and f["document_id"] for f in segments["segments"])
    assert "vectors" not in json.dumps(segments)

    sandbox.mixpeek.features_shape = "grouped"
    grouped = (
        await call(client, "mixpeek_get_asset_features", {"asset_id": asset_id, "page": 2, "page_size": 5})
    ).structured_content
    # Unpaged upstream, paged here: the same segments, whichever shape carried them.
    assert (grouped["page"], grouped["total"], grouped["total_pages"]) == (2, total, segments["total_pages"])
    assert grouped["segments"] == segments["segments"]


async def test_an_image_asset_reads_as_one_segment_without_times(client: Client, sandbox: Sandbox) -> None:
    done = await indexed(
        client, "https://images.example.com/red_bicycle.png", features=["description", "ocr"]
    )

    segments = (
        await call(client, "mixpeek_get_asset_features", {"asset_id": done["result"]["asset_id"]})
    ).structured_content["segments"]

    assert len(segments) == 1 and segments[0]["start_time"] is None
    assert "red bicycle" in segments[0]["description"] and segments[0]["ocr_text"]
    assert done["result"]["documents"]["segments"] == 1


async def test_features_of_an_unknown_asset_are_not_found(client: Client) -> None:
    result = await call(client, "mixpeek_get_asset_features", {"asset_id": "no-such-asset"})

    assert result.is_error and result.meta["mediamux/error"]["class"] == "not_found"


@pytest.mark.both_eras
async def test_the_asset_resource_serves_the_normalised_features(client: Client, sandbox: Sandbox) -> None:
    done = await indexed(client)
    asset_id = done["result"]["asset_id"]

    uri: str | None = f"mixpeek://assets/{asset_id}"
    segments = []
    while uri is not None:
        with anyio.fail_after(10):
            read = await client.read_resource(uri)
        content = read.contents[0]
        assert isinstance(content, TextResourceContents)
        assert content.mime_type == "application/json" and len(content.text) <= 2000
        data = json.loads(content.text)
        assert data["asset_id"] == asset_id
        segments.extend(data["segments"])
        uri = data.get("next")

    assert len(segments) == data["total"] == done["result"]["documents"]["segments"]
    assert len({(s["start_time"], s.get("document_id")) for s in segments}) == len(segments)


# -- search ------------------------------------------------------------------------------------


@pytest.fixture
async def two_videos(client: Client) -> dict[str, str]:
    """An agility video and a city video, with metadata that tells them apart for every operator."""
    a = await indexed(client, metadata={"hello": "world", "views": 10, "tags": ["dog", "sport"]})
    b = await indexed(client, CITY, metadata={"hello": "moon", "views": 250, "note": "late"})
    return {"agility": a["result"]["asset_id"], "city": b["result"]["asset_id"]}


async def search(client: Client, query: str = "dog jumping", **extra: Any) -> Any:
    return await call(client, "mixpeek_search", {"query": query, "collection_ids": ["quickstart"], **extra})


async def found(client: Client, filters: dict[str, Any], videos: dict[str, str]) -> set[str]:
    result = await search(client, filters=filters, page_size=100)
    assert not result.is_error, text(result)
    names = {v: k for k, v in videos.items()}
    return {names[hit["asset_id"]] for hit in result.structured_content["results"]}


async def test_fulltext_matches_words_while_semantic_ranks_every_segment(
    client: Client, two_videos: dict[str, str]
) -> None:
    fulltext = (await search(client, "agility", search_type="fulltext", page_size=100)).structured_content
    semantic = (await search(client, "agility", page_size=100)).structured_content

    assert fulltext["search_type"] == "fulltext" and fulltext["results"]
    assert {h["asset_id"] for h in fulltext["results"]} == {two_videos["agility"]}
    assert all("agility" in h["description"] for h in fulltext["results"])
    assert {h["asset_id"] for h in semantic["results"]} == set(two_videos.values())
    scores = [h["score"] for h in semantic["results"]]
    assert scores == sorted(scores, reverse=True)
    assert semantic["results"][0]["asset_id"] == two_videos["agility"]
    assert semantic["total"] == len(semantic["results"])
    again = (await search(client, "agility", page_size=100)).structured_content
    assert again["results"] == semantic["results"]  # deterministic


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ({"AND": [{"key": "metadata.hello", "operator": "eq", "value": "world"}]}, {"agility"}),
        ({"AND": [{"key": "metadata.hello", "operator": "ne", "value": "world"}]}, {"city"}),
        ({"AND": [{"key": "metadata.views", "operator": "gt", "value": 100}]}, {"city"}),
        ({"AND": [{"key": "metadata.views", "operator": "lt", "value": 100}]}, {"agility"}),
        ({"AND": [{"key": "metadata.views", "operator": "gte", "value": 250}]}, {"city"}),
        ({"AND": [{"key": "metadata.views", "operator": "lte", "value": 10}]}, {"agility"}),
        ({"AND": [{"key": "metadata.hello", "operator": "in", "value": ["world", "mars"]}]}, {"agility"}),
        ({"AND": [{"key": "metadata.hello", "operator": "nin", "value": ["world"]}]}, {"city"}),
        ({"AND": [{"key": "metadata.note", "operator": "is_null"}]}, {"agility"}),
        ({"AND": [{"key": "metadata.note", "operator": "exists", "value": True}]}, {"city"}),
        ({"AND": [{"key": "metadata.note", "operator": "exists", "value": False}]}, {"agility"}),
        ({"AND": [{"key": "description", "operator": "text", "value": "city night"}]}, {"city"}),
        ({"AND": [{"key": "metadata.tags", "operator": "eq", "value": "dog"}]}, {"agility"}),
        ({"AND": [{"key": "metadata.hello", "operator": "eq", "value": "WORLD"}]}, {"agility"}),
        (
            {"AND": [{"key": "metadata.hello", "operator": "eq", "value": "WORLD"}], "case_sensitive": True},
            set(),
        ),
        (
            {
                "OR": [
                    {"key": "metadata.hello", "operator": "eq", "value": "world"},
                    {"AND": [{"key": "metadata.views", "operator": "gt", "value": 100}]},
                ]
            },
            {"agility", "city"},
        ),
        ({"NOR": [{"key": "metadata.hello", "operator": "eq", "value": "world"}]}, {"city"}),
        # v1's spelling, translated for v0: "field" for "key", NOT for NOR.
        ({"NOT": [{"field": "metadata.hello", "operator": "eq", "value": "world"}]}, {"city"}),
        ({"field": "metadata.views", "operator": "gt", "value": 100}, {"city"}),
    ],
)
async def test_filters_select_assets_by_metadata_with_every_operator(
    client: Client, two_videos: dict[str, str], filters: dict[str, Any], expected: set[str]
) -> None:
    assert await found(client, filters, two_videos) == expected


@pytest.mark.parametrize(
    ("filters", "fragment"),
    [
        ({"AND": [{"key": "metadata.hello", "operator": "like", "value": "w"}]}, "operator"),
        ({"AND": [{"key": "metadata.hello", "operator": "in", "value": "world"}]}, "non-empty list"),
        ({"AND": [{"key": "metadata.views", "operator": "gt", "value": True}]}, "number or a date"),
        ({"AND": [{"key": "metadata.note", "operator": "exists", "value": "yes"}]}, "true or false"),
        ({"AND": [{"key": "metadata..hello", "operator": "eq", "value": 1}]}, "key"),
        ({"and": [{"key": "metadata.hello", "operator": "eq", "value": 1}]}, "and"),
        ({"AND": []}, "at least one condition"),
        (
            {"AND": [{"key": "metadata.hello", "operator": "contains", "value": "w"}]},
            "the v0 API has no 'contains'",
        ),
    ],
)
async def test_malformed_filters_are_refused_before_any_upstream_call(
    client: Client, sandbox: Sandbox, filters: dict[str, Any], fragment: str
) -> None:
    result = await search(client, filters=filters)

    assert result.is_error
    assert fragment in text(result)
    assert sandbox.mixpeek.requests == []


async def test_search_pages_with_the_query_parameters_v0_takes(
    client: Client, sandbox: Sandbox, two_videos: dict[str, str]
) -> None:
    everything = (await search(client, page_size=100)).structured_content["results"]
    page2 = (await search(client, page=2, page_size=3)).structured_content

    assert [h["document_id"] for h in page2["results"]] == [h["document_id"] for h in everything[3:6]]
    assert (page2["page"], page2["page_size"], page2["total"]) == (2, 3, len(everything))


async def test_search_of_an_unknown_collection_finds_nothing(
    client: Client, two_videos: dict[str, str]
) -> None:
    result = await call(client, "mixpeek_search", {"query": "dog", "collection_ids": ["elsewhere"]})

    assert not result.is_error and result.structured_content["results"] == []


# -- configuration and auth --------------------------------------------------------------------


async def test_without_a_key_the_tools_name_the_variable_to_set(
    make_server: Callable[..., MediamuxServer],
) -> None:
    async with Client(make_server(use_sandbox=False, MEDIAMUX_TOOLSETS="mixpeek,jobs")) as client:
        result = await search(client)

    assert result.is_error and result.meta["mediamux/error"]["class"] == "auth"
    assert "MIXPEEK_API_KEY" in text(result)


async def test_a_rejected_key_is_an_auth_error_that_names_the_variable(
    client: Client, sandbox: Sandbox
) -> None:
    sandbox.mixpeek.master_key = "rotated-key"

    result = await search(client)

    assert result.is_error and result.meta["mediamux/error"]["class"] == "auth"
    assert "Mixpeek search: authentication failed (401)" in text(result)
    assert "MIXPEEK_API_KEY" in text(result)
    assert "sandbox-mixpeek-key" not in text(result)


def test_named_features_become_the_quickstart_settings_blocks() -> None:
    (video,), image = v0_settings(
        IndexArgs(collection_id="c", features=["ocr", "transcription"], segment_s=30)
    )

    assert video.model_dump(exclude_none=True) == {"interval_sec": 30, "read": {}, "transcribe": {}}
    assert image.model_dump(exclude_none=True) == {"read": {}}
