"""Behaviour of the Mixpeek v0 emulator, checked against the provider documents (quickstart, NOTES §3).

Time is injected (`FakeNow`), so task lifecycles run without sleeping; every wait is bounded.
"""

from __future__ import annotations

import json
import math
from collections.abc import AsyncIterator
from typing import Any

import anyio
import httpx2
import pytest

from mediamux.sandbox.loopback import serve_on_loopback
from mediamux.sandbox.mixpeek import MixpeekEmulator, fulltext_score, semantic_score, unreachable_reason
from tests.sandbox.conftest import FakeNow

KEY = "sandbox-mixpeek-key"
ORIGIN = "http://mixpeek.test"
DEMO_URL = "https://mixpeek-public-demo.s3.us-east-2.amazonaws.com/starter/aussie_agility.mp4"
QUICKSTART_SETTINGS = [
    {
        "interval_sec": 10,
        "read": {"model_id": "video-descriptor-v1"},
        "embed": {"model_id": "multimodal-v1"},
        "transcribe": {"model_id": "polyglot-v1"},
        "describe": {
            "model_id": "video-descriptor-v1",
            "prompt": "Create a holistic description of the video, include sounds and screenplay",
        },
        "json_output": {
            "response_shape": {"emotions": ["str"]},
            "prompt": "This is a list of emotion labels, each one should be a string representing the scene.",
        },
    }
]


@pytest.fixture
def emulator(now: FakeNow) -> Any:
    emu = MixpeekEmulator(now=now)
    yield emu
    emu.close()


@pytest.fixture
async def client(emulator: MixpeekEmulator) -> AsyncIterator[httpx2.AsyncClient]:
    transport = httpx2.ASGITransport(app=emulator.app)
    async with httpx2.AsyncClient(
        transport=transport, base_url=ORIGIN, headers={"Authorization": f"Bearer {KEY}"}
    ) as c:
        yield c


async def index(client: httpx2.AsyncClient, **body: Any) -> str:
    body.setdefault("collection_id", "quickstart")
    response = await client.post("/index/url", json=body)
    assert response.status_code == 200, response.text
    data = response.json()
    assert data["message"] == "URL content processing started"
    task_id: str = data["task_id"]
    return task_id


async def task(client: httpx2.AsyncClient, task_id: str, **headers: str) -> dict[str, Any]:
    response = await client.get(f"/tasks/{task_id}", headers=headers)
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()
    return data


async def indexed(client: httpx2.AsyncClient, now: FakeNow, **body: Any) -> str:
    """Index a URL and wait (on the fake clock) until DONE; returns the asset id."""
    task_id = await index(client, **body)
    now.advance(10)
    data = await task(client, task_id)
    assert data["status"] == "DONE"
    asset_id: str = data["asset_id"]
    return asset_id


async def search(
    client: httpx2.AsyncClient, query: str = "", *, params: str = "", **body: Any
) -> dict[str, Any]:
    body.setdefault("collection_ids", ["quickstart"])
    if query:
        body["query"] = query
    response = await client.post(f"/features/search/text{params}", json=body)
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()
    return data


# --- authentication -------------------------------------------------------------------------------------


@pytest.mark.parametrize("authorization", [None, "Bearer wrong", f"Token {KEY}", "Bearer "])
async def test_requests_without_a_valid_bearer_key_are_401(
    client: httpx2.AsyncClient, emulator: MixpeekEmulator, authorization: str | None
) -> None:
    headers = {"Authorization": authorization} if authorization is not None else {}
    transport = httpx2.ASGITransport(app=emulator.app)
    async with httpx2.AsyncClient(transport=transport, base_url=ORIGIN, headers=headers) as anonymous:
        response = await anonymous.post("/index/url", json={"url": DEMO_URL, "collection_id": "q"})
    assert response.status_code == 401
    assert response.json() == {"detail": "Invalid or missing API key"}
    assert emulator.tasks_created == 0


# --- indexing and the task lifecycle --------------------------------------------------------------------


async def test_task_advances_through_its_statuses_every_stage_seconds(
    client: httpx2.AsyncClient, emulator: MixpeekEmulator, now: FakeNow
) -> None:
    task_id = await index(
        client, url=DEMO_URL, metadata={"hello": "world"}, video_settings=QUICKSTART_SETTINGS
    )
    assert emulator.tasks_created == 1
    seen = []
    for _ in range(4):
        seen.append((await task(client, task_id))["status"])
        now.advance(2.0)
    assert seen == ["INITIALIZING", "DOWNLOADING", "PROCESSING", "DONE"]
    body = await task(client, task_id)
    assert set(body) == {"task_id", "status", "asset_id"}
    assert body["task_id"] == task_id
    assert emulator.polls[task_id] == 5


async def test_zero_stage_seconds_finish_immediately(now: FakeNow) -> None:
    emulator = MixpeekEmulator(now=now, stage_seconds=0)
    transport = httpx2.ASGITransport(app=emulator.app)
    async with httpx2.AsyncClient(
        transport=transport, base_url=ORIGIN, headers={"Authorization": f"Bearer {KEY}"}
    ) as c:
        task_id = await index(c, url=DEMO_URL)
        assert (await task(c, task_id))["status"] == "DONE"


@pytest.mark.parametrize(
    "url",
    [
        "https://media.example.invalid/clip.mp4",
        "http://localhost:8080/clip.mp4",
        "http://app.localhost/clip.mp4",
        "http://127.0.0.1:9000/clip.mp4",
        "http://10.1.2.3/clip.mp4",
        "http://192.168.0.7/clip.mp4",
        "http://[::1]/clip.mp4",
        "https://cdn.example.com/404/clip.mp4",
    ],
)
def test_unreachable_urls_are_recognised(url: str) -> None:
    assert unreachable_reason(url) is not None


def test_public_urls_are_reachable() -> None:
    assert unreachable_reason(DEMO_URL) is None
    assert unreachable_reason("https://8.8.8.8/video.mp4") is None


async def test_unreachable_url_fails_after_downloading_with_an_error(
    client: httpx2.AsyncClient, now: FakeNow
) -> None:
    task_id = await index(client, url="https://media.example.invalid/clip.mp4")
    statuses = []
    for _ in range(4):
        statuses.append((await task(client, task_id))["status"])
        now.advance(2.0)
    assert statuses == ["INITIALIZING", "DOWNLOADING", "FAILED", "FAILED"]
    body = await task(client, task_id)
    assert "could not resolve host" in body["error"]
    asset = (await client.get(f"/assets/{body['asset_id']}")).json()
    assert asset["status"] == "FAILED"
    assert asset["error"] == body["error"]
    features = (await client.get(f"/assets/{body['asset_id']}/features")).json()
    assert features["video_segments"] == []


async def test_unknown_task_is_404(client: httpx2.AsyncClient) -> None:
    response = await client.get("/tasks/nope")
    assert (response.status_code, response.json()) == (404, {"detail": "Task not found"})


async def test_deleting_a_running_task_fails_it_and_deleting_a_finished_one_is_a_no_op(
    client: httpx2.AsyncClient, now: FakeNow
) -> None:
    task_id = await index(client, url=DEMO_URL)
    response = await client.delete(f"/tasks/{task_id}")
    assert response.json() == {"message": "Task killed", "task_id": task_id}
    now.advance(100)
    body = await task(client, task_id)
    assert (body["status"], body["error"]) == ("FAILED", "Task was cancelled")
    other = await index(client, url=DEMO_URL)
    now.advance(100)
    response = await client.delete(f"/tasks/{other}")
    assert response.json() == {"message": "Task already finished", "task_id": other}
    assert (await task(client, other))["status"] == "DONE"
    assert (await client.delete("/tasks/nope")).status_code == 404


@pytest.mark.parametrize(("interval", "status"), [(4, 422), (5, 200), (119, 200), (120, 422), ("ten", 422)])
async def test_interval_sec_must_be_at_least_5_and_below_120(
    client: httpx2.AsyncClient, interval: Any, status: int
) -> None:
    response = await client.post(
        "/index/url",
        json={"url": DEMO_URL, "collection_id": "q", "video_settings": [{"interval_sec": interval}]},
    )
    assert response.status_code == status
    if status == 422:
        [error] = response.json()["detail"]
        assert error["loc"] == ["body", "video_settings", 0, "interval_sec"]


async def test_interval_error_messages_are_pydantic_style(client: httpx2.AsyncClient) -> None:
    response = await client.post(
        "/index/url", json={"url": DEMO_URL, "collection_id": "q", "video_settings": [{"interval_sec": 120}]}
    )
    [error] = response.json()["detail"]
    assert (error["type"], error["msg"]) == ("less_than", "Input should be less than 120")


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ({"collection_id": "q"}, ["body", "url"]),
        ({"url": DEMO_URL}, ["body", "collection_id"]),
        ({"url": "ftp://example.com/a.mp4", "collection_id": "q"}, ["body", "url"]),
        ({"url": DEMO_URL, "collection_id": "q", "metadata": "x"}, ["body", "metadata"]),
        (
            {
                "url": DEMO_URL,
                "collection_id": "q",
                "video_settings": [{"transcribe": {"model_id": "whisper"}}],
            },
            ["body", "video_settings", 0, "transcribe", "model_id"],
        ),
        (
            {"url": DEMO_URL, "collection_id": "q", "asset_update": {"asset_id": "a", "mode": "merge"}},
            ["body", "asset_update", "mode"],
        ),
    ],
)
async def test_index_request_validation_is_422_per_field(
    client: httpx2.AsyncClient, emulator: MixpeekEmulator, body: dict[str, Any], loc: list[Any]
) -> None:
    response = await client.post("/index/url", json=body)
    assert response.status_code == 422
    assert loc in [e["loc"] for e in response.json()["detail"]]
    assert emulator.tasks_created == 0


async def test_invalid_json_and_empty_body_are_422(client: httpx2.AsyncClient) -> None:
    response = await client.post("/index/url", content=b"{nope", headers={"content-type": "application/json"})
    assert response.status_code == 422
    assert response.json()["detail"][0]["type"] == "json_invalid"
    response = await client.post("/index/url", content=b"")
    assert response.json()["detail"][0]["type"] == "missing"


async def test_index_id_header_partitions_tasks_and_assets(client: httpx2.AsyncClient, now: FakeNow) -> None:
    response = await client.post(
        "/index/url", json={"url": DEMO_URL, "collection_id": "q"}, headers={"index-id": "org-a"}
    )
    task_id = response.json()["task_id"]
    assert (await client.get(f"/tasks/{task_id}")).status_code == 404
    body = await task(client, task_id, **{"index-id": "org-a"})
    now.advance(10)
    assert (await client.get(f"/assets/{body['asset_id']}")).status_code == 404
    asset = await client.get(f"/assets/{body['asset_id']}", headers={"index-id": "org-a"})
    assert asset.json()["status"] == "DONE"
    assert (await search(client, "dog", collection_ids=["q"]))["results"] == []


# --- uploads --------------------------------------------------------------------------------------------


async def test_upload_indexes_a_multipart_file_with_json_encoded_settings(
    client: httpx2.AsyncClient, emulator: MixpeekEmulator, now: FakeNow
) -> None:
    response = await client.post(
        "/index/upload",
        files={"asset": ("beach_party.mp4", b"\x00\x00\x00\x18ftypisom" + b"x" * 100, "video/mp4")},
        data={
            "collection_id": "uploads",
            "metadata": json.dumps({"source": "phone"}),
            "video_settings": json.dumps([{"interval_sec": 15, "describe": {}}]),
        },
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["message"] == "File content processing started"
    now.advance(10)
    done = await task(client, body["task_id"])
    asset = (await client.get(f"/assets/{done['asset_id']}")).json()
    assert (asset["url"], asset["modality"], asset["metadata"]) == (
        "beach_party.mp4",
        "video",
        {"source": "phone"},
    )
    segments = (await client.get(f"/assets/{done['asset_id']}/features?page_size=100")).json()[
        "video_segments"
    ]
    assert all(s["interval_sec"] == 15 for s in segments)
    assert all("beach party" in s["description"] for s in segments)
    assert all(s["transcription"] is None and s["text"] is None for s in segments)
    assert emulator.tasks_created == 1


async def test_upload_without_file_or_with_bad_json_fields_is_422(client: httpx2.AsyncClient) -> None:
    response = await client.post("/index/upload", data={"collection_id": "u"})
    assert response.status_code == 422
    assert ["body", "asset"] in [e["loc"] for e in response.json()["detail"]]
    response = await client.post(
        "/index/upload",
        files={"asset": ("a.mp4", b"x", "video/mp4")},
        data={"collection_id": "u", "metadata": "{bad"},
    )
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "metadata"]
    response = await client.post("/index/upload", files={"asset": ("a.mp4", b"x", "video/mp4")})
    assert ["body", "collection_id"] in [e["loc"] for e in response.json()["detail"]]


async def test_uploaded_image_becomes_a_single_image_feature(
    client: httpx2.AsyncClient, now: FakeNow
) -> None:
    response = await client.post(
        "/index/upload",
        files={"asset": ("red_car.png", b"\x89PNG....", "image/png")},
        data={"collection_id": "imgs"},
    )
    now.advance(10)
    done = await task(client, response.json()["task_id"])
    data = (await client.get(f"/assets/{done['asset_id']}/features")).json()
    [feature] = data["image_segments"]
    assert feature["modality"] == "image"
    assert feature["start_time"] is None
    assert "red car" in feature["description"]
    assert data["pagination"]["total"] == 1


# --- duplicates and updates -----------------------------------------------------------------------------


async def test_prevent_duplicate_answers_the_existing_asset_without_a_new_task(
    client: httpx2.AsyncClient, emulator: MixpeekEmulator, now: FakeNow
) -> None:
    asset_id = await indexed(client, now, url=DEMO_URL)
    response = await client.post(
        "/index/url", json={"url": DEMO_URL, "collection_id": "quickstart", "prevent_duplicate": True}
    )
    body = response.json()
    assert body["asset_id"] == asset_id
    assert body["status"] == "DONE"
    assert "task_id" in body
    assert emulator.tasks_created == 1
    await index(client, url=DEMO_URL)  # without the flag a duplicate is indexed again
    assert emulator.tasks_created == 2


async def test_asset_update_replaces_or_appends(client: httpx2.AsyncClient, now: FakeNow) -> None:
    asset_id = await indexed(client, now, url=DEMO_URL, metadata={"a": 1})
    before = (await client.get(f"/assets/{asset_id}/features?page_size=100")).json()["pagination"]["total"]
    other = "https://cdn.example.com/video/city_tour.mp4"
    await indexed(
        client, now, url=other, metadata={"b": 2}, asset_update={"asset_id": asset_id, "mode": "append"}
    )
    asset = (await client.get(f"/assets/{asset_id}")).json()
    assert asset["metadata"] == {"a": 1, "b": 2}
    appended = (await client.get(f"/assets/{asset_id}/features?page_size=100")).json()
    assert appended["pagination"]["total"] > before
    await indexed(
        client, now, url=other, metadata={"c": 3}, asset_update={"asset_id": asset_id, "mode": "replace"}
    )
    asset = (await client.get(f"/assets/{asset_id}")).json()
    assert (asset["metadata"], asset["url"]) == ({"c": 3}, other)
    replaced = (await client.get(f"/assets/{asset_id}/features?page_size=100")).json()["video_segments"]
    assert all("city tour" in s["description"] for s in replaced)
    response = await client.post(
        "/index/url",
        json={"url": other, "collection_id": "q", "asset_update": {"asset_id": "nope", "mode": "replace"}},
    )
    assert response.status_code == 404


# --- assets and features --------------------------------------------------------------------------------


async def test_asset_response_has_the_documented_fields(client: httpx2.AsyncClient, now: FakeNow) -> None:
    asset_id = await indexed(client, now, url=DEMO_URL, metadata={"hello": "world"})
    asset = (await client.get(f"/assets/{asset_id}")).json()
    assert set(asset) == {
        "asset_id",
        "collection_id",
        "created_at",
        "error",
        "metadata",
        "modality",
        "status",
        "task_id",
        "unique_hash",
        "updated_at",
        "url",
    }
    assert (asset["collection_id"], asset["url"], asset["modality"]) == ("quickstart", DEMO_URL, "video")
    assert (await client.get("/assets/nope")).status_code == 404
    assert (await client.get("/assets/nope/features")).json() == {"detail": "Asset not found"}


async def test_features_segments_shape_covers_the_duration_every_interval_with_pagination(
    client: httpx2.AsyncClient, emulator: MixpeekEmulator, now: FakeNow
) -> None:
    asset_id = await indexed(client, now, url=DEMO_URL, video_settings=QUICKSTART_SETTINGS)
    first = (await client.get(f"/assets/{asset_id}/features")).json()
    assert set(first) == {"video_segments", "pagination"}
    total = first["pagination"]["total"]
    duration = emulator.assets[asset_id].sources[0].duration
    assert 20 <= duration <= 300
    assert total == math.ceil(duration / 10)
    assert first["pagination"]["page_size"] == 10
    assert first["pagination"]["total_pages"] == math.ceil(total / 10)
    assert first["pagination"]["previous_page"] is None
    segments = list(first["video_segments"])
    next_page = first["pagination"]["next_page"]
    while next_page:
        page = (await client.get(next_page)).json()
        segments += page["video_segments"]
        assert page["pagination"]["previous_page"]
        next_page = page["pagination"]["next_page"]
    assert len(segments) == total
    assert [s["start_time"] for s in segments] == [10.0 * k for k in range(total)]
    assert segments[-1]["end_time"] == duration
    for segment in segments:
        assert segment["interval_sec"] == 10
        assert segment["transcription"].startswith(f"{int(segment['start_time']) // 60}:")
        assert "aussie agility" in segment["description"]
        assert segment["text"].startswith("AUSSIE AGILITY\n")
        assert set(segment["json_output"]) == {"emotions"}
        assert all(isinstance(e, str) for e in segment["json_output"]["emotions"])
    again = (await client.get(f"/assets/{asset_id}/features?page=1&page_size=100")).json()["video_segments"]
    assert again == segments


async def test_features_grouped_shape_wraps_asset_and_features_by_modality(
    client: httpx2.AsyncClient, emulator: MixpeekEmulator, now: FakeNow
) -> None:
    asset_id = await indexed(client, now, url=DEMO_URL)
    emulator.features_shape = "grouped"
    data = (await client.get(f"/assets/{asset_id}/features")).json()
    assert set(data) == {"asset", "features"}
    assert data["asset"]["asset_id"] == asset_id
    assert data["asset"]["status"] == "DONE"
    assert set(data["features"]) == {"video", "image", "text", "audio"}
    video = data["features"]["video"]
    assert video
    assert all(f["modality"] == "video" and f["asset_id"] == asset_id for f in video)
    assert data["features"]["image"] == []


async def test_features_are_empty_until_the_task_is_done(
    client: httpx2.AsyncClient, emulator: MixpeekEmulator, now: FakeNow
) -> None:
    task_id = await index(client, url=DEMO_URL)
    asset_id = (await task(client, task_id))["asset_id"]
    assert (await client.get(f"/assets/{asset_id}/features")).json()["video_segments"] == []
    emulator.features_shape = "grouped"
    grouped = (await client.get(f"/assets/{asset_id}/features")).json()
    assert grouped["asset"]["status"] == "INITIALIZING"
    assert grouped["features"]["video"] == []


async def test_features_pagination_parameters_are_validated(client: httpx2.AsyncClient, now: FakeNow) -> None:
    asset_id = await indexed(client, now, url=DEMO_URL)
    for query, loc in (("page=0", "page"), ("page_size=101", "page_size"), ("page=x", "page")):
        response = await client.get(f"/assets/{asset_id}/features?{query}")
        assert response.status_code == 422
        assert response.json()["detail"][0]["loc"] == ["query", loc]
    past = (await client.get(f"/assets/{asset_id}/features?page=99")).json()
    assert past["video_segments"] == []
    assert past["pagination"]["next_page"] is None


async def test_default_settings_produce_every_text_feature_and_no_json_output(
    client: httpx2.AsyncClient, now: FakeNow
) -> None:
    asset_id = await indexed(client, now, url=DEMO_URL)
    segment = (await client.get(f"/assets/{asset_id}/features")).json()["video_segments"][0]
    assert segment["interval_sec"] == 10
    assert segment["transcription"] and segment["description"] and segment["text"]
    assert segment["json_output"] is None


async def test_features_are_deterministic_for_the_same_url(now: FakeNow) -> None:
    snapshots = []
    for _ in range(2):
        emulator = MixpeekEmulator(now=now)
        transport = httpx2.ASGITransport(app=emulator.app)
        async with httpx2.AsyncClient(
            transport=transport, base_url=ORIGIN, headers={"Authorization": f"Bearer {KEY}"}
        ) as c:
            asset_id = await indexed(c, now, url=DEMO_URL, video_settings=QUICKSTART_SETTINGS)
            segments = (await c.get(f"/assets/{asset_id}/features?page_size=100")).json()["video_segments"]
        snapshots.append(
            [
                {k: s[k] for k in ("start_time", "transcription", "description", "text", "json_output")}
                for s in segments
            ]
        )
    assert snapshots[0] == snapshots[1]


async def test_multiple_video_settings_each_produce_their_own_segments(
    client: httpx2.AsyncClient, emulator: MixpeekEmulator, now: FakeNow
) -> None:
    asset_id = await indexed(
        client,
        now,
        url=DEMO_URL,
        video_settings=[{"interval_sec": 30, "describe": {}}, {"interval_sec": 60, "read": {}}],
    )
    segments = (await client.get(f"/assets/{asset_id}/features?page_size=100")).json()["video_segments"]
    duration = emulator.assets[asset_id].sources[0].duration
    assert len(segments) == math.ceil(duration / 30) + math.ceil(duration / 60)
    assert {s["interval_sec"] for s in segments} == {30, 60}


async def test_detect_settings_add_deterministic_detections(client: httpx2.AsyncClient, now: FakeNow) -> None:
    asset_id = await indexed(
        client,
        now,
        url=DEMO_URL,
        video_settings=[{"detect": {"faces": {"model_id": "face-detector-v1", "confidence_threshold": 0.5}}}],
    )
    segment = (await client.get(f"/assets/{asset_id}/features")).json()["video_segments"][0]
    assert set(segment["detect"]) == {"faces"}


# --- search ---------------------------------------------------------------------------------------------

CORPUS = {
    "https://cdn.example.com/v/dog_jumping_contest.mp4": {
        "hello": "world",
        "n": 1,
        "tags": ["a", "b"],
        "note": None,
    },
    "https://cdn.example.com/v/city_night_walk.mp4": {"hello": "World", "n": 5, "tags": ["c"]},
    "https://cdn.example.com/v/yoga_morning.mp4": {"n": 10, "title": "Quick brown fox"},
}


@pytest.fixture
async def corpus(client: httpx2.AsyncClient, now: FakeNow) -> dict[str, str]:
    """Three DONE assets in "quickstart" (name → asset id) and one in another collection."""
    ids = {}
    for url, metadata in CORPUS.items():
        name = url.rsplit("/", 1)[-1].split(".")[0]
        ids[name] = await index(client, url=url, metadata=metadata, video_settings=[{"interval_sec": 30}])
    await index(client, url="https://cdn.example.com/v/dog_show.mp4", collection_id="elsewhere")
    now.advance(10)
    return {name: (await task(client, task_id))["asset_id"] for name, task_id in ids.items()}


def asset_names(results: list[dict[str, Any]], corpus: dict[str, str]) -> set[str]:
    by_id = {v: k for k, v in corpus.items()}
    return {by_id[r["asset_id"]] for r in results}


FILTER_CASES = [
    (
        {"AND": [{"key": "metadata.hello", "operator": "eq", "value": "world"}]},
        {"dog_jumping_contest", "city_night_walk"},
    ),
    (
        {"AND": [{"key": "metadata.hello", "operator": "eq", "value": "world"}], "case_sensitive": True},
        {"dog_jumping_contest"},
    ),
    ({"AND": [{"key": "metadata.hello", "operator": "ne", "value": "world"}]}, {"yoga_morning"}),
    ({"AND": [{"key": "metadata.n", "operator": "gt", "value": 1}]}, {"city_night_walk", "yoga_morning"}),
    ({"AND": [{"key": "metadata.n", "operator": "gte", "value": 5}]}, {"city_night_walk", "yoga_morning"}),
    ({"AND": [{"key": "metadata.n", "operator": "lt", "value": 5}]}, {"dog_jumping_contest"}),
    (
        {"AND": [{"key": "metadata.n", "operator": "lte", "value": 5}]},
        {"dog_jumping_contest", "city_night_walk"},
    ),
    (
        {"AND": [{"key": "metadata.n", "operator": "in", "value": [1, 10]}]},
        {"dog_jumping_contest", "yoga_morning"},
    ),
    ({"AND": [{"key": "metadata.tags", "operator": "in", "value": ["b", "z"]}]}, {"dog_jumping_contest"}),
    ({"AND": [{"key": "metadata.n", "operator": "nin", "value": [1, 10]}]}, {"city_night_walk"}),
    (
        {"AND": [{"key": "metadata.note", "operator": "is_null", "value": True}]},
        {"dog_jumping_contest", "city_night_walk", "yoga_morning"},
    ),
    (
        {"AND": [{"key": "metadata.hello", "operator": "is_null", "value": False}]},
        {"dog_jumping_contest", "city_night_walk"},
    ),
    ({"AND": [{"key": "metadata.note", "operator": "exists", "value": True}]}, {"dog_jumping_contest"}),
    (
        {"AND": [{"key": "metadata.title", "operator": "exists", "value": False}]},
        {"dog_jumping_contest", "city_night_walk"},
    ),
    ({"AND": [{"key": "metadata.title", "operator": "text", "value": "brown QUICK"}]}, {"yoga_morning"}),
    ({"AND": [{"key": "metadata.title", "operator": "text", "value": "brow"}]}, set()),
    ({"AND": [{"key": "metadata.n", "operator": "gt", "value": "1"}]}, set()),
    (
        {
            "OR": [
                {"key": "metadata.n", "operator": "eq", "value": 1},
                {"key": "metadata.n", "operator": "eq", "value": 10},
            ]
        },
        {"dog_jumping_contest", "yoga_morning"},
    ),
    ({"NOR": [{"key": "metadata.n", "operator": "eq", "value": 1}]}, {"city_night_walk", "yoga_morning"}),
    (
        {
            "AND": [
                {"key": "metadata.n", "operator": "gte", "value": 1},
                {
                    "OR": [
                        {"key": "metadata.tags", "operator": "eq", "value": "c"},
                        {"key": "metadata.title", "operator": "exists"},
                    ]
                },
            ]
        },
        {"city_night_walk", "yoga_morning"},
    ),
    (
        {
            "AND": [
                {"key": "collection_id", "operator": "eq", "value": "quickstart"},
                {"key": "start_time", "operator": "gte", "value": 30},
            ]
        },
        {"dog_jumping_contest", "city_night_walk", "yoga_morning"},
    ),
]


@pytest.mark.parametrize(("filters", "expected"), FILTER_CASES)
async def test_filters_apply_every_operator_to_asset_metadata(
    client: httpx2.AsyncClient, corpus: dict[str, str], filters: dict[str, Any], expected: set[str]
) -> None:
    data = await search(client, params="?page_size=100", filters=filters)
    assert asset_names(data["results"], corpus) == expected


async def test_filter_on_segment_fields_keeps_only_matching_features(
    client: httpx2.AsyncClient, corpus: dict[str, str]
) -> None:
    data = await search(
        client,
        params="?page_size=100",
        filters={"AND": [{"key": "start_time", "operator": "gte", "value": 30}]},
    )
    assert data["results"]
    assert all(r["start_time"] >= 30 for r in data["results"])


async def test_unknown_filter_operator_or_missing_collection_ids_is_422(client: httpx2.AsyncClient) -> None:
    response = await client.post(
        "/features/search/text",
        json={"collection_ids": ["q"], "filters": {"AND": [{"key": "a", "operator": "like", "value": 1}]}},
    )
    assert response.status_code == 422
    response = await client.post("/features/search/text", json={"query": "dog"})
    assert ["body", "collection_ids"] in [e["loc"] for e in response.json()["detail"]]
    response = await client.post(
        "/features/search/text", json={"collection_ids": ["q"], "search_type": "fuzzy"}
    )
    assert response.status_code == 422


async def test_fulltext_returns_only_term_matches_over_transcription_description_and_text(
    client: httpx2.AsyncClient, corpus: dict[str, str]
) -> None:
    data = await search(client, "contest", params="?page_size=100", search_type="fulltext")
    assert asset_names(data["results"], corpus) == {"dog_jumping_contest"}
    assert all(r["score"] > 0 for r in data["results"])
    ocr_only = await search(client, "NIGHT", params="?page_size=100", search_type="fulltext")
    assert "city_night_walk" in asset_names(ocr_only["results"], corpus)
    none = await search(client, "zebra", search_type="fulltext")
    assert none["results"] == []
    assert none["pagination"]["total"] == 0


async def test_semantic_search_ranks_every_feature_deterministically(
    client: httpx2.AsyncClient, corpus: dict[str, str]
) -> None:
    first = await search(
        client, "dog jumping", params="?page_size=100", model_id="multimodal-v1", search_type="semantic"
    )
    second = await search(client, "dog jumping", params="?page_size=100", search_type="semantic")
    assert first == second
    scores = [r["score"] for r in first["results"]]
    assert scores == sorted(scores, reverse=True)
    assert asset_names(first["results"], corpus) == set(corpus)
    assert asset_names(first["results"][:1], corpus) == {"dog_jumping_contest"}
    fulltext = await search(client, "dog jumping", params="?page_size=100", search_type="fulltext")
    assert len(fulltext["results"]) < len(first["results"])


def test_semantic_score_relates_word_forms_that_full_text_misses() -> None:
    assert fulltext_score("jump", "the dog is jumping") == 0
    assert semantic_score("jump", "the dog is jumping") > 0
    assert semantic_score("dog", "dog") == pytest.approx(1.0)
    assert semantic_score("dog jumping", "a cat sleeping") < semantic_score(
        "dog jumping", "a dog jumping high"
    )
    assert fulltext_score("dog dog", "dog") == pytest.approx(0.5)


async def test_search_without_query_lists_filtered_features_with_zero_scores(
    client: httpx2.AsyncClient, corpus: dict[str, str]
) -> None:
    data = await search(client, params="?page_size=100")
    assert {r["score"] for r in data["results"]} == {0.0}
    assert asset_names(data["results"], corpus) == set(corpus)
    assert all(r["collection_id"] == "quickstart" for r in data["results"])


async def test_search_results_carry_feature_asset_fields_metadata_and_score(
    client: httpx2.AsyncClient, corpus: dict[str, str]
) -> None:
    [result] = (await search(client, "dog", params="?page_size=1"))["results"]
    for key in (
        "feature_id",
        "asset_id",
        "collection_id",
        "url",
        "metadata",
        "start_time",
        "end_time",
        "transcription",
        "description",
        "text",
        "score",
    ):
        assert key in result


async def test_search_pagination_uses_offset_position_and_page_size(
    client: httpx2.AsyncClient, corpus: dict[str, str]
) -> None:
    everything = (await search(client, "dog", params="?page_size=100"))["results"]
    page = await search(client, "dog", params="?offset_position=3&page_size=3")
    assert page["results"] == everything[3:6]
    pagination = page["pagination"]
    assert (pagination["total"], pagination["page"], pagination["page_size"]) == (len(everything), 2, 3)
    assert pagination["total_pages"] == math.ceil(len(everything) / 3)
    assert pagination["next_page"].endswith("/features/search/text?offset_position=6&page_size=3")
    assert pagination["previous_page"].endswith("?offset_position=0&page_size=3")
    default = await search(client, "dog")
    assert len(default["results"]) == min(10, len(everything))
    for query in ("?offset_position=-1", "?page_size=0", "?page_size=abc"):
        response = await client.post(f"/features/search/text{query}", json={"collection_ids": ["quickstart"]})
        assert response.status_code == 422


async def test_sort_select_and_group_by(client: httpx2.AsyncClient, corpus: dict[str, str]) -> None:
    ordered = await search(
        client, "dog", params="?page_size=100", sort={"field": "start_time", "direction": "asc"}
    )
    starts = [r["start_time"] for r in ordered["results"]]
    assert starts == sorted(starts)
    by_n = await search(client, params="?page_size=100", sort={"field": "metadata.n", "direction": "desc"})
    assert by_n["results"][0]["metadata"]["n"] == 10
    selected = await search(client, "dog", params="?page_size=2", select=["asset_id", "metadata.hello"])
    for item in selected["results"]:
        assert set(item) <= {"asset_id", "metadata", "score"}
        assert "asset_id" in item
    grouped = await search(client, "dog", group_by={"field": "asset_id", "max_features": 2})
    groups = grouped["results"]
    assert {g["group"] for g in groups} == set(corpus.values())
    assert all(len(g["features"]) <= 2 for g in groups)
    assert all(g["score"] == max(f["score"] for f in g["features"]) for g in groups)
    assert grouped["pagination"]["total"] == 3


async def test_search_ignores_assets_that_are_not_done(
    client: httpx2.AsyncClient, corpus: dict[str, str], now: FakeNow
) -> None:
    before = (await search(client, params="?page_size=100"))["pagination"]["total"]
    await index(client, url="https://cdn.example.com/v/late.mp4")
    assert (await search(client, params="?page_size=100"))["pagination"]["total"] == before
    now.advance(10)
    assert (await search(client, params="?page_size=100"))["pagination"]["total"] > before


# --- faults, loopback -----------------------------------------------------------------------------------


async def test_faults_and_request_log(client: httpx2.AsyncClient, emulator: MixpeekEmulator) -> None:
    emulator.faults.add(method="GET", path="^/tasks/", kind="status", status=503)
    response = await client.get("/tasks/abc")
    assert response.status_code == 503
    assert emulator.requests == [("GET", "/tasks/abc")]
    assert emulator.polls == {}


@pytest.mark.loopback
async def test_index_poll_and_fetch_features_over_loopback(emulator: MixpeekEmulator, now: FakeNow) -> None:
    with anyio.fail_after(10):
        async with serve_on_loopback(emulator.app) as url:
            emulator.base_url = url
            async with httpx2.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {KEY}"}) as c:
                task_id = await index(c, url=DEMO_URL, video_settings=QUICKSTART_SETTINGS)
                assert (await task(c, task_id))["status"] == "INITIALIZING"
                now.advance(6)
                done = await task(c, task_id)
                assert done["status"] == "DONE"
                page = (await c.get(f"/assets/{done['asset_id']}/features")).json()
                assert page["video_segments"]
                if page["pagination"]["next_page"]:
                    assert page["pagination"]["next_page"].startswith(url)
                    assert (await c.get(page["pagination"]["next_page"])).status_code == 200
