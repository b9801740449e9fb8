"""Behaviour of the MuAPI emulator, checked against the provider documents.

Time is injected (`FakeNow`), so job lifecycles run without sleeping; every wait is bounded.
"""

from __future__ import annotations

import json
import re
import struct
import zlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx2
import pytest

from mediamux.sandbox.faults import Message, Receive, Scope, Send
from mediamux.sandbox.loopback import serve_on_loopback
from mediamux.sandbox.media import color_for
from mediamux.sandbox.muapi import CATALOG, MuapiEmulator
from tests.sandbox.conftest import FakeNow

MASTER = "sandbox-muapi-key"
ORIGIN = "http://muapi.test"


@pytest.fixture
def emulator(now: FakeNow) -> MuapiEmulator:
    return MuapiEmulator(now=now)


@pytest.fixture
async def client(emulator: MuapiEmulator) -> AsyncIterator[httpx2.AsyncClient]:
    transport = httpx2.ASGITransport(app=emulator.app)
    async with httpx2.AsyncClient(transport=transport, base_url=ORIGIN, headers={"x-api-key": MASTER}) as c:
        yield c


@asynccontextmanager
async def live_client(emulator: MuapiEmulator) -> AsyncIterator[httpx2.AsyncClient]:
    """The emulator over real HTTP on loopback, with a client bound to it."""
    async with serve_on_loopback(emulator.app) as url:
        emulator.base_url = url
        async with httpx2.AsyncClient(base_url=url, headers={"x-api-key": MASTER}) as c:
            yield c


async def submit(client: httpx2.AsyncClient, slug: str, **body: Any) -> dict[str, Any]:
    response = await client.post(f"/api/v1/{slug}", json=body)
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()
    return data


async def poll(client: httpx2.AsyncClient, request_id: str) -> dict[str, Any]:
    response = await client.get(f"/api/v1/predictions/{request_id}/result")
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()
    return data


class Recorder:
    """A tiny ASGI app that records JSON POSTs (a webhook receiver)."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.received = anyio.Event()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                else:
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        raw = b""
        more = True
        while more:
            chunk: Message = await receive()
            raw += chunk.get("body", b"")
            more = bool(chunk.get("more_body"))
        self.bodies.append(json.loads(raw))
        self.received.set()
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})


def png_info(data: bytes) -> tuple[int, int, tuple[int, int, int]]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    _length, kind = struct.unpack(">I4s", data[8:16])
    assert kind == b"IHDR"
    width, height, depth, colour_type = struct.unpack(">IIBB", data[16:26])
    assert (depth, colour_type) == (8, 2)
    idat_at = data.index(b"IDAT")
    idat_len = struct.unpack(">I", data[idat_at - 4 : idat_at])[0]
    pixels = zlib.decompress(data[idat_at + 4 : idat_at + 4 + idat_len])
    assert len(pixels) == height * (1 + 3 * width)
    return width, height, (pixels[1], pixels[2], pixels[3])


# --- authentication -------------------------------------------------------------------------------------


async def test_request_without_api_key_is_rejected_with_401_and_still_carries_cost_headers(
    client: httpx2.AsyncClient,
) -> None:
    response = await client.get("/api/v1/account/balance", headers={"x-api-key": ""})
    assert response.status_code == 401
    assert response.json() == {"detail": "Invalid or missing API key"}
    assert response.headers["x-muapi-cost-usd"] == "0.000000"
    assert response.headers["x-account-balance"] == "25.0000"


async def test_unknown_api_key_is_rejected_with_401(client: httpx2.AsyncClient) -> None:
    response = await client.post(
        "/api/v1/flux-dev-image", json={"prompt": "x"}, headers={"x-api-key": "nope"}
    )
    assert response.status_code == 401


async def test_bearer_token_is_accepted_as_an_alternative_to_x_api_key(emulator: MuapiEmulator) -> None:
    transport = httpx2.ASGITransport(app=emulator.app)
    async with httpx2.AsyncClient(transport=transport, base_url=ORIGIN) as c:
        response = await c.get("/api/v1/account/balance", headers={"Authorization": f"Bearer {MASTER}"})
    assert response.status_code == 200


async def test_openapi_document_is_served_without_auth_and_lists_routes_and_models(
    emulator: MuapiEmulator,
) -> None:
    transport = httpx2.ASGITransport(app=emulator.app)
    async with httpx2.AsyncClient(transport=transport, base_url=ORIGIN) as c:
        response = await c.get("/openapi.json")
    assert response.status_code == 200
    doc = response.json()
    assert doc["openapi"].startswith("3.")
    assert "/api/v1/predictions/{request_id}/result" in doc["paths"]
    assert "/api/v1/mmaudio-v2/text-to-audio" in doc["paths"]
    assert doc["components"]["securitySchemes"]["ApiKey"]["name"] == "x-api-key"


# --- submission errors ----------------------------------------------------------------------------------


async def test_submission_with_empty_wallet_is_refused_with_402_and_creates_no_job(
    client: httpx2.AsyncClient, emulator: MuapiEmulator
) -> None:
    emulator.balance_usd = 0.01
    response = await client.post("/api/v1/flux-dev-image", json={"prompt": "cat"})
    assert response.status_code == 402
    assert response.json() == {"detail": "Insufficient balance. Please top up your account."}
    assert emulator.submissions == 0
    assert emulator.balance_usd == pytest.approx(0.01)
    assert response.headers["x-account-balance"] == "0.0100"


async def test_unknown_model_slug_returns_404_naming_the_slug(client: httpx2.AsyncClient) -> None:
    response = await client.post("/api/v1/no-such/model", json={"prompt": "cat"})
    assert response.status_code == 404
    assert response.json() == {"detail": "Model not found: no-such/model"}
    assert response.headers["x-muapi-cost-usd"] == "0.000000"


async def test_missing_required_input_returns_fastapi_style_422(client: httpx2.AsyncClient) -> None:
    response = await client.post("/api/v1/sync-lipsync", json={"video_url": "https://x/v.mp4"})
    assert response.status_code == 422
    [error] = response.json()["detail"]
    assert error["loc"] == ["body", "audio_url"]
    assert error["msg"] == "Field required"
    assert error["type"] == "missing"


async def test_wrong_types_enums_and_ranges_return_422_per_field(client: httpx2.AsyncClient) -> None:
    response = await client.post(
        "/api/v1/nano-banana", json={"prompt": 42, "num_images": 9, "aspect_ratio": "5:1"}
    )
    assert response.status_code == 422
    by_field = {e["loc"][1]: e["type"] for e in response.json()["detail"]}
    assert by_field == {
        "prompt": "string_type",
        "num_images": "less_than_equal",
        "aspect_ratio": "literal_error",
    }


async def test_invalid_json_and_empty_body_return_422(client: httpx2.AsyncClient) -> None:
    bad = await client.post(
        "/api/v1/flux-dev-image", content=b"{nope", headers={"content-type": "application/json"}
    )
    assert bad.status_code == 422
    assert bad.json()["detail"][0]["type"] == "json_invalid"
    empty = await client.post("/api/v1/flux-dev-image")
    assert empty.status_code == 422
    assert empty.json()["detail"][0]["loc"] == ["body"]


async def test_inputs_outside_the_schema_are_tolerated(client: httpx2.AsyncClient) -> None:
    # The CLI and the per-model docs disagree on flux-dev's inputs (width/height vs size).
    data = await submit(client, "flux-dev-image", prompt="cat", size="1024*1024", guidance_scale=3.5)
    assert data["status"] == "queued"


# --- cost -----------------------------------------------------------------------------------------------


async def test_submit_charges_the_wallet_and_reports_cost_in_body_and_headers(
    client: httpx2.AsyncClient, emulator: MuapiEmulator
) -> None:
    response = await client.post("/api/v1/flux-dev-image", json={"prompt": "cat", "num_images": 2})
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"request_id", "status", "cost"}
    assert body["status"] in {"queued", "processing"}
    assert body["cost"] == {
        "amount_usd": 0.05,
        "amount_credits": 50,
        "bonus_credits_used": 0,
        "refunded": False,
    }
    assert emulator.balance_usd == pytest.approx(24.95)
    assert response.headers["x-muapi-cost-usd"] == "0.050000"
    assert response.headers["x-muapi-cost-credits"] == "50"
    assert response.headers["x-account-balance"] == "24.9500"
    assert "x-muapi-cost-bonus-credits" not in response.headers
    assert "x-muapi-cost-refunded" not in response.headers
    assert emulator.submissions == 1


async def test_free_calls_report_zero_cost_headers_with_four_decimal_balance(
    client: httpx2.AsyncClient,
) -> None:
    for path in ("/api/v1/account/balance", "/api/v1/keys", "/api/v1/models"):
        response = await client.get(path)
        assert response.status_code == 200
        assert response.headers["x-muapi-cost-usd"] == "0.000000"
        assert response.headers["x-muapi-cost-credits"] == "0"
        assert re.fullmatch(r"\d+\.\d{4}", response.headers["x-account-balance"])
        assert "x-muapi-cost-refunded" not in response.headers


async def test_credits_are_a_tenth_of_a_cent_each_rounded_up(client: httpx2.AsyncClient) -> None:
    schnell = await submit(client, "flux-schnell-image", prompt="cat")
    assert schnell["cost"]["amount_usd"] == pytest.approx(0.003)
    assert schnell["cost"]["amount_credits"] == 3
    sfx = await submit(client, "mmaudio-v2/text-to-audio", prompt="rain", duration=2.5)
    assert sfx["cost"]["amount_usd"] == pytest.approx(0.0025)
    assert sfx["cost"]["amount_credits"] == 3


async def test_per_second_models_charge_by_requested_duration(client: httpx2.AsyncClient) -> None:
    short = await submit(client, "wan2.5-text-to-video", prompt="waves", duration=5)
    long = await submit(client, "wan2.5-text-to-video", prompt="waves", duration=10)
    assert short["cost"]["amount_usd"] == pytest.approx(0.5)
    assert long["cost"]["amount_usd"] == pytest.approx(1.0)


async def test_bonus_pool_pays_first_and_its_header_appears_only_when_used(
    client: httpx2.AsyncClient, emulator: MuapiEmulator
) -> None:
    emulator.bonus_credits = 40
    response = await client.post("/api/v1/suno-create-music", json={"prompt": "lofi"})
    cost = response.json()["cost"]
    assert cost["bonus_credits_used"] == 40
    assert cost["amount_usd"] == pytest.approx(0.06)
    assert response.headers["x-muapi-cost-bonus-credits"] == "40"
    assert emulator.bonus_credits == 0
    plain = await client.post("/api/v1/flux-dev-image", json={"prompt": "cat"})
    assert "x-muapi-cost-bonus-credits" not in plain.headers


# --- lifecycle ------------------------------------------------------------------------------------------


async def test_job_moves_from_queued_to_processing_to_completed_as_time_advances(
    client: httpx2.AsyncClient, now: FakeNow
) -> None:
    job = await submit(client, "flux-dev-image", prompt="a red fox")
    rid = job["request_id"]
    first = await poll(client, rid)
    assert first["status"] == "queued"
    assert first["outputs"] == []
    assert first["executionTime"] is None
    now.advance(1.0)
    assert (await poll(client, rid))["status"] == "processing"
    now.advance(3.0)
    done = await poll(client, rid)
    assert done["status"] == "completed"
    assert done["outputs"] == [f"{ORIGIN}/cdn/outputs/{rid}/0.png"]
    assert done["urls"] == {"get": f"{ORIGIN}/api/v1/predictions/{rid}/result"}
    assert done["has_nsfw_contents"] == [False]
    assert done["error"] is None
    assert done["executionTime"] == 4000
    assert done["timings"] == {"inference": 4000}
    assert done["cost"]["amount_usd"] == pytest.approx(0.025)
    assert re.match(r"\d{4}-\d\d-\d\dT", done["created_at"])


async def test_videos_take_longer_than_images_by_default(client: httpx2.AsyncClient, now: FakeNow) -> None:
    image = await submit(client, "nano-banana", prompt="x")
    video = await submit(client, "kling-v2.1-master-t2v", prompt="x")
    now.advance(5.0)
    assert (await poll(client, image["request_id"]))["status"] == "completed"
    assert (await poll(client, video["request_id"]))["status"] == "processing"
    now.advance(5.0)
    assert (await poll(client, video["request_id"]))["status"] == "completed"


async def test_job_seconds_overrides_durations(now: FakeNow) -> None:
    emulator = MuapiEmulator(now=now, job_seconds=0)
    async with httpx2.AsyncClient(
        transport=httpx2.ASGITransport(app=emulator.app), base_url=ORIGIN, headers={"x-api-key": MASTER}
    ) as c:
        job = await submit(c, "veo3-text-to-video", prompt="x")
    assert job["status"] == "completed"
    assert len(job["outputs"]) == 1


async def test_poll_counts_are_recorded_and_unknown_predictions_return_404(
    client: httpx2.AsyncClient, emulator: MuapiEmulator
) -> None:
    job = await submit(client, "flux-dev-image", prompt="x")
    await poll(client, job["request_id"])
    await poll(client, job["request_id"])
    missing = await client.get("/api/v1/predictions/does-not-exist/result")
    assert missing.status_code == 404
    assert missing.json() == {"detail": "Prediction not found"}
    assert emulator.polls[job["request_id"]] == 2


# --- triggers -------------------------------------------------------------------------------------------


async def test_fail_trigger_ends_failed_with_error_and_refunds_the_charge(
    client: httpx2.AsyncClient, emulator: MuapiEmulator, now: FakeNow
) -> None:
    job = await submit(client, "flux-dev-image", prompt="a cat [fail]")
    assert emulator.balance_usd == pytest.approx(24.975)
    now.advance(10)
    response = await client.get(f"/api/v1/predictions/{job['request_id']}/result")
    body = response.json()
    assert body["status"] == "failed"
    assert body["error"]
    assert body["outputs"] == []
    assert body["cost"]["refunded"] is True
    assert body["cost"]["amount_usd"] == pytest.approx(0.025)
    assert response.headers["x-muapi-cost-refunded"] == "true"
    assert emulator.balance_usd == pytest.approx(25.0)
    assert response.headers["x-account-balance"] == "25.0000"


async def test_refund_happens_even_if_the_failed_job_is_never_polled(
    client: httpx2.AsyncClient, emulator: MuapiEmulator, now: FakeNow
) -> None:
    await submit(client, "veo3-text-to-video", prompt="[fail]")
    now.advance(60)
    balance = (await client.get("/api/v1/account/balance")).json()["balance"]
    assert balance == pytest.approx(25.0)


async def test_cancel_trigger_ends_cancelled_without_refund(
    client: httpx2.AsyncClient, emulator: MuapiEmulator, now: FakeNow
) -> None:
    job = await submit(client, "flux-dev-image", prompt="[cancel] a cat")
    now.advance(10)
    body = await poll(client, job["request_id"])
    assert body["status"] == "cancelled"
    assert body["outputs"] == []
    assert body["cost"]["refunded"] is False
    assert emulator.balance_usd == pytest.approx(24.975)


async def test_stuck_trigger_stays_processing_forever(client: httpx2.AsyncClient, now: FakeNow) -> None:
    job = await submit(client, "flux-dev-image", prompt="[stuck]")
    now.advance(86_400)
    assert (await poll(client, job["request_id"]))["status"] == "processing"


async def test_weird_trigger_reports_an_undocumented_status_forever(
    client: httpx2.AsyncClient, now: FakeNow
) -> None:
    job = await submit(client, "flux-dev-image", prompt="[weird]")
    now.advance(86_400)
    body = await poll(client, job["request_id"])
    assert body["status"] == "warming_up"
    assert body["outputs"] == []


async def test_nsfw_trigger_completes_with_nsfw_flags_for_every_output(
    client: httpx2.AsyncClient, now: FakeNow
) -> None:
    job = await submit(client, "flux-dev-image", prompt="[nsfw]", num_images=2)
    now.advance(10)
    body = await poll(client, job["request_id"])
    assert body["status"] == "completed"
    assert body["has_nsfw_contents"] == [True, True]


async def test_triggers_are_found_in_string_inputs_other_than_prompt(
    client: httpx2.AsyncClient, now: FakeNow
) -> None:
    job = await submit(client, "video-effects", video_url="https://x/v.mp4", effect="[fail]")
    now.advance(60)
    assert (await poll(client, job["request_id"]))["status"] == "failed"


# --- output media ---------------------------------------------------------------------------------------


async def test_image_outputs_are_real_pngs_one_per_requested_image(
    client: httpx2.AsyncClient, now: FakeNow
) -> None:
    job = await submit(client, "flux-schnell-image", prompt="sunset", num_images=3)
    now.advance(10)
    outputs = (await poll(client, job["request_id"]))["outputs"]
    assert len(outputs) == 3
    first = await client.get(outputs[0])
    assert first.status_code == 200
    assert first.headers["content-type"] == "image/png"
    width, height, rgb = png_info(first.content)
    assert (width, height) == (1024, 1024)  # the catalog's default width and height
    assert rgb == color_for("sunset")
    other = await client.get(outputs[2])
    assert png_info(other.content)[2] != rgb


async def test_audio_output_is_a_real_wav_of_the_requested_duration(
    client: httpx2.AsyncClient, now: FakeNow
) -> None:
    job = await submit(client, "mmaudio-v2/text-to-audio", prompt="rain", duration=2)
    now.advance(10)
    [url] = (await poll(client, job["request_id"]))["outputs"]
    assert url.endswith(".wav")
    response = await client.get(url)
    assert response.headers["content-type"] == "audio/wav"
    data = response.content
    assert data[:4] == b"RIFF"
    assert data[8:12] == b"WAVE"
    channels, rate, _, _, bits = struct.unpack("<HIIHH", data[22:36])
    assert (channels, bits) == (1, 16)
    data_len = struct.unpack("<I", data[40:44])[0]
    assert data_len / (rate * 2) == pytest.approx(2.0)


async def test_long_audio_is_capped_to_a_few_seconds(client: httpx2.AsyncClient, now: FakeNow) -> None:
    job = await submit(client, "mmaudio-v2/text-to-audio", prompt="rain", duration=30)
    now.advance(10)
    [url] = (await poll(client, job["request_id"]))["outputs"]
    assert len((await client.get(url)).content) < 200_000


async def test_video_output_is_served_as_mp4_with_an_ftyp_box(
    client: httpx2.AsyncClient, now: FakeNow
) -> None:
    job = await submit(client, "kling-v2.1-standard-i2v", prompt="zoom", image_url="https://x/a.png")
    now.advance(60)
    [url] = (await poll(client, job["request_id"]))["outputs"]
    response = await client.get(url)
    assert response.headers["content-type"] == "video/mp4"
    assert response.content[4:8] == b"ftyp"
    assert b"moov" in response.content
    assert b"mdat" in response.content


async def test_output_urls_are_404_until_the_job_completes(client: httpx2.AsyncClient, now: FakeNow) -> None:
    job = await submit(client, "flux-dev-image", prompt="x")
    url = f"{ORIGIN}/cdn/outputs/{job['request_id']}/0.png"
    assert (await client.get(url)).status_code == 404
    now.advance(10)
    assert (await client.get(url)).status_code == 200
    assert (await client.get(f"{ORIGIN}/cdn/outputs/{job['request_id']}/1.png")).status_code == 404


async def test_outputs_use_the_configured_base_url(
    client: httpx2.AsyncClient, emulator: MuapiEmulator
) -> None:
    emulator.base_url = "http://127.0.0.1:9999"
    emulator.job_seconds = 0
    job = await submit(client, "flux-dev-image", prompt="x")
    assert job["outputs"][0].startswith("http://127.0.0.1:9999/cdn/outputs/")


# --- sandbox keys ---------------------------------------------------------------------------------------


async def test_sandbox_key_jobs_are_free_complete_immediately_and_return_example_media(
    client: httpx2.AsyncClient, emulator: MuapiEmulator
) -> None:
    created = (await client.post("/api/v1/keys", json={"name": "ci", "is_test": True})).json()
    assert created["is_test"] is True
    headers = {"x-api-key": created["api_key"]}
    response = await client.post("/api/v1/veo3-text-to-video", json={"prompt": "[fail] x"}, headers=headers)
    body = response.json()
    assert body["status"] == "completed"
    assert body["cost"] == {"amount_usd": 0, "amount_credits": 0, "bonus_credits_used": 0, "refunded": False}
    assert body["outputs"] == [f"{ORIGIN}/cdn/examples/veo3-text-to-video.mp4"]
    assert response.headers["x-muapi-cost-usd"] == "0.000000"
    assert emulator.balance_usd == 25.0
    assert emulator.submissions == 1
    example = await client.get(body["outputs"][0])
    assert example.headers["content-type"] == "video/mp4"
    polled = await poll(client, body["request_id"])
    assert polled["status"] == "completed"


async def test_sandbox_key_works_with_an_empty_wallet(
    client: httpx2.AsyncClient, emulator: MuapiEmulator
) -> None:
    key = (await client.post("/api/v1/keys", json={"name": "ci", "is_test": True})).json()["api_key"]
    emulator.balance_usd = 0
    response = await client.post(
        "/api/v1/mmaudio-v2/text-to-audio", json={"prompt": "x"}, headers={"x-api-key": key}
    )
    assert response.status_code == 200
    assert response.json()["outputs"] == [f"{ORIGIN}/cdn/examples/mmaudio-v2/text-to-audio.wav"]
    assert (await client.get(response.json()["outputs"][0])).content[:4] == b"RIFF"


# --- uploads --------------------------------------------------------------------------------------------


@pytest.mark.loopback
async def test_upload_round_trip_over_loopback_serves_identical_bytes(emulator: MuapiEmulator) -> None:
    payload = bytes(range(256)) * 8000  # ~2 MB: larger than Starlette's in-memory spool threshold
    with anyio.fail_after(10):
        async with live_client(emulator) as c:
            url = emulator.base_url
            response = await c.post(
                "/api/v1/upload_file", files={"file": ("my photo (1).jpg", payload, "image/jpeg")}
            )
            assert response.status_code == 200, response.text
            hosted = response.json()["url"]
            assert hosted.startswith(f"{url}/cdn/uploads/")
            assert hosted.endswith("/my_photo_1_.jpg")
            fetched = await c.get(hosted)
    assert fetched.status_code == 200
    assert fetched.headers["content-type"] == "image/jpeg"
    assert fetched.content == payload
    assert response.headers["x-muapi-cost-usd"] == "0.000000"


async def test_upload_without_file_field_is_422(client: httpx2.AsyncClient) -> None:
    response = await client.post("/api/v1/upload_file", data={"other": "x"}, files={"image": ("a.png", b"x")})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "file"]


async def test_upload_with_empty_wallet_is_402(client: httpx2.AsyncClient, emulator: MuapiEmulator) -> None:
    emulator.balance_usd = 0
    response = await client.post("/api/v1/upload_file", files={"file": ("a.png", b"x")})
    assert response.status_code == 402


async def test_upload_over_the_size_limit_is_413(client: httpx2.AsyncClient, emulator: MuapiEmulator) -> None:
    emulator.upload_limits = {"video": 2000, "other": 1000}
    too_big = await client.post("/api/v1/upload_file", files={"file": ("a.png", b"x" * 1500)})
    assert too_big.status_code == 413
    video_ok = await client.post("/api/v1/upload_file", files={"file": ("a.mp4", b"x" * 1500)})
    assert video_ok.status_code == 200


async def test_presigned_upload_flow_stores_and_serves_the_object(client: httpx2.AsyncClient) -> None:
    grant = await client.get("/api/v1/get_upload_url", params={"filename": "clip.mp4"})
    assert grant.status_code == 200
    body = grant.json()
    assert body["url"] == f"{ORIGIN}/cdn/presigned"
    key = body["fields"]["key"]
    assert re.fullmatch(r"data/\d+/\d+/clip\.mp4", key)
    stored = await client.post(body["url"], data=body["fields"], files={"file": ("clip.mp4", b"MOVIE")})
    assert stored.status_code == 204
    served = await client.get(f"{ORIGIN}/cdn/{key}")
    assert served.content == b"MOVIE"
    assert served.headers["content-type"] == "video/mp4"


async def test_presigned_post_with_tampered_policy_or_after_expiry_is_rejected(
    client: httpx2.AsyncClient, now: FakeNow
) -> None:
    fields = (await client.get("/api/v1/get_upload_url", params={"filename": "a.png"})).json()["fields"]
    tampered = {**fields, "key": "data/1/1/evil.png"}
    assert (
        await client.post("/cdn/presigned", data=tampered, files={"file": ("a", b"x")})
    ).status_code == 403
    now.advance(3601)
    assert (await client.post("/cdn/presigned", data=fields, files={"file": ("a", b"x")})).status_code == 403
    assert (await client.get("/api/v1/get_upload_url")).status_code == 422


# --- account --------------------------------------------------------------------------------------------


async def test_balance_reports_wallet_currency_and_email(client: httpx2.AsyncClient) -> None:
    body = (await client.get("/api/v1/account/balance")).json()
    assert body == {"balance": 25.0, "currency": "usd", "email": "sandbox@mediamux.local"}


async def test_topup_returns_a_checkout_url_without_crediting_the_wallet(
    client: httpx2.AsyncClient, emulator: MuapiEmulator
) -> None:
    response = await client.post("/api/v1/account/topup", json={"amount": 20, "currency": "usd"})
    assert response.status_code == 200
    body = response.json()
    assert body["checkout_url"].startswith("https://checkout.stripe.com/c/pay/cs_test_sandbox_")
    assert (body["amount"], body["currency"]) == (20, "usd")
    assert emulator.balance_usd == 25.0


@pytest.mark.parametrize("body", [{"amount": 0}, {"amount": 1.5}, {"amount": "10"}, {"amount": True}, {}])
async def test_topup_rejects_amounts_that_are_not_integers_of_at_least_one(
    client: httpx2.AsyncClient, body: dict[str, Any]
) -> None:
    response = await client.post("/api/v1/account/topup", json=body)
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "amount"]


# --- keys -----------------------------------------------------------------------------------------------


async def test_keys_can_be_created_listed_and_deleted_and_deleted_keys_stop_working(
    client: httpx2.AsyncClient,
) -> None:
    created = (await client.post("/api/v1/keys", json={"name": "my-app"})).json()
    assert set(created) == {"id", "name", "api_key", "is_test"}
    assert created["name"] == "my-app"
    own = {"x-api-key": created["api_key"]}
    assert (await client.get("/api/v1/account/balance", headers=own)).status_code == 200
    listed = (await client.get("/api/v1/keys")).json()
    assert [k["id"] for k in listed] == [1, created["id"]]
    assert listed[1]["last_used_at"] is not None
    deleted = await client.delete(f"/api/v1/keys/{created['id']}")
    assert deleted.json() == {"message": "Key deleted"}
    assert (await client.get("/api/v1/account/balance", headers=own)).status_code == 401
    assert [k["id"] for k in (await client.get("/api/v1/keys")).json()] == [1]


async def test_key_list_never_exposes_raw_keys(client: httpx2.AsyncClient) -> None:
    secret = (await client.post("/api/v1/keys", json={"name": "x"})).json()["api_key"]
    listed = await client.get("/api/v1/keys")
    assert secret not in listed.text
    assert MASTER not in listed.text
    assert set(listed.json()[0]) == {"id", "name", "is_active", "created_at", "last_used_at"}


async def test_deleting_an_unknown_key_returns_404_and_a_bad_id_422(client: httpx2.AsyncClient) -> None:
    assert (await client.delete("/api/v1/keys/999")).status_code == 404
    assert (await client.delete("/api/v1/keys/abc")).status_code == 422


# --- models ---------------------------------------------------------------------------------------------


async def test_model_list_covers_every_category_and_filters_by_category_and_family(
    client: httpx2.AsyncClient,
) -> None:
    models = (await client.get("/api/v1/models")).json()
    assert len(models) >= 30
    assert {m["category"] for m in models} >= {
        "Text to Image",
        "Image to Image",
        "Text to Video",
        "Image to Video",
        "Text to Audio",
        "Video to Video",
    }
    assert all(m["name"] == m["endpoint"] for m in models)
    units = {m["cost"]["unit"] for m in models}
    assert units == {"per_image", "per_video", "per_second", "per_request"}
    videos = (await client.get("/api/v1/models", params={"category": "Text to Video"})).json()
    assert videos
    assert all(m["category"] == "Text to Video" for m in videos)
    slugged = (await client.get("/api/v1/models", params={"category": "text-to-video"})).json()
    assert slugged == videos
    flux = (await client.get("/api/v1/models", params={"family": "flux"})).json()
    assert {m["name"] for m in flux} >= {"flux-dev-image", "flux-schnell-image"}


async def test_model_detail_includes_input_schema_and_example_output(client: httpx2.AsyncClient) -> None:
    response = await client.get("/api/v1/models/mmaudio-v2/text-to-audio")
    assert response.status_code == 200
    body = response.json()
    assert body["endpoint"] == "mmaudio-v2/text-to-audio"
    assert body["input_schema"]["required"] == ["prompt"]
    assert body["input_schema"]["properties"]["duration"]["default"] == 10
    assert body["example_output"] == f"{ORIGIN}/cdn/examples/mmaudio-v2/text-to-audio.wav"
    edit = (await client.get("/api/v1/models/nano-banana-edit")).json()
    assert "images_list" in edit["input_schema"]["required"]
    assert (await client.get("/api/v1/models/nope")).status_code == 404


async def test_estimate_cost_scales_with_images_and_duration(client: httpx2.AsyncClient) -> None:
    one = await client.post("/api/v1/models/flux-dev-image/estimate-cost", json={"prompt": "x"})
    assert one.json() == {"estimated_cost_usd": 0.025, "estimated_credits": 25}
    four = await client.post(
        "/api/v1/models/flux-dev-image/estimate-cost", json={"prompt": "x", "num_images": 4}
    )
    assert four.json()["estimated_cost_usd"] == pytest.approx(0.1)
    sora = await client.post(
        "/api/v1/models/openai-sora-2-text-to-video/estimate-cost", json={"duration": 12}
    )
    assert sora.json()["estimated_cost_usd"] == pytest.approx(1.2)
    assert (await client.post("/api/v1/models/nope/estimate-cost", json={})).status_code == 404


def test_catalog_has_documented_prices_for_popular_models() -> None:
    assert CATALOG["flux-schnell-image"].price_usd == pytest.approx(0.003)
    assert CATALOG["nano-banana"].price_usd == pytest.approx(0.039)
    assert CATALOG["veo3-text-to-video"].price_usd == pytest.approx(3.20)
    assert CATALOG["kling-v2.1-master-t2v"].price_usd == pytest.approx(1.40)
    assert CATALOG["suno-create-music"].price_usd == pytest.approx(0.10)
    assert CATALOG["sync-lipsync"].required == ("video_url", "audio_url")


# --- webhooks -------------------------------------------------------------------------------------------


@pytest.mark.loopback
async def test_webhook_from_body_is_posted_once_when_the_job_completes(
    client: httpx2.AsyncClient, emulator: MuapiEmulator, now: FakeNow
) -> None:
    receiver = Recorder()
    with anyio.fail_after(10):
        async with serve_on_loopback(receiver) as hook_url:
            job = await submit(client, "flux-dev-image", prompt="x", webhook_url=f"{hook_url}/hook")
            assert await emulator.deliver_due_webhooks() == 0
            now.advance(10)
            assert await emulator.deliver_due_webhooks() == 1
            assert await emulator.deliver_due_webhooks() == 0
    [payload] = receiver.bodies
    assert payload == emulator.webhooks_sent[0]
    assert payload["id"] == job["request_id"]
    assert payload["status"] == "completed"
    assert payload["outputs"] == [f"{ORIGIN}/cdn/outputs/{job['request_id']}/0.png"]
    assert payload["urls"]["get"].endswith(f"/predictions/{job['request_id']}/result")
    assert payload["has_nsfw_contents"] == [False]
    assert "error" not in payload
    assert {"created_at", "executionTime", "timings"} <= set(payload)


@pytest.mark.loopback
async def test_webhook_from_query_param_receives_the_failure_with_its_error(
    client: httpx2.AsyncClient, emulator: MuapiEmulator, now: FakeNow
) -> None:
    receiver = Recorder()
    with anyio.fail_after(10):
        async with serve_on_loopback(receiver) as hook_url:
            response = await client.post(
                "/api/v1/flux-dev-image", params={"webhook": f"{hook_url}/h"}, json={"prompt": "[fail]"}
            )
            assert response.status_code == 200
            now.advance(10)
            assert await emulator.deliver_due_webhooks() == 1
    [payload] = receiver.bodies
    assert payload["status"] == "failed"
    assert payload["error"]


async def test_webhook_delivery_errors_are_swallowed(
    client: httpx2.AsyncClient, emulator: MuapiEmulator, now: FakeNow
) -> None:
    await submit(client, "flux-dev-image", prompt="x", webhook_url="http://127.0.0.1:9/unreachable")
    now.advance(10)
    with anyio.fail_after(10):
        assert await emulator.deliver_due_webhooks() == 1
    assert len(emulator.webhooks_sent) == 1


async def test_webhooks_of_jobs_finishing_together_are_posted_at_once(now: FakeNow) -> None:
    in_flight, everyone = 0, anyio.Event()

    async def receiver(scope: Scope, receive: Receive, send: Send) -> None:
        nonlocal in_flight
        more = True
        while more:
            more = bool((await receive()).get("more_body"))
        in_flight += 1
        if in_flight == 3:
            everyone.set()
        await everyone.wait()  # answers nobody until all three are here: a one-by-one sender never finishes
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async with httpx2.AsyncClient(transport=httpx2.ASGITransport(app=receiver)) as hooks:
        emulator = MuapiEmulator(now=now, webhook_client=hooks)
        transport = httpx2.ASGITransport(app=emulator.app)
        async with httpx2.AsyncClient(
            transport=transport, base_url=ORIGIN, headers={"x-api-key": MASTER}
        ) as c:
            for n in range(3):
                await submit(c, "flux-dev-image", prompt=f"x{n}", webhook_url=f"http://hooks.test/{n}")
        now.advance(10)
        with anyio.fail_after(5):
            assert await emulator.deliver_due_webhooks() == 3


async def test_the_webhook_loop_looks_again_when_the_next_job_is_due_not_a_sweep_later(
    client: httpx2.AsyncClient, emulator: MuapiEmulator, now: FakeNow
) -> None:
    idle = emulator._next_webhook_in()
    await submit(client, "flux-dev-image", prompt="x", webhook_url="http://hooks.test/h")  # 4 s
    now.advance(3.9)
    soon = emulator._next_webhook_in()
    now.advance(0.2)
    due = emulator._next_webhook_in()

    assert idle == 0.5 and soon == pytest.approx(0.1) and due == 0.005


@pytest.mark.loopback
async def test_lifespan_background_loop_delivers_webhooks_without_manual_calls(now: FakeNow) -> None:
    emulator = MuapiEmulator(now=now, job_seconds=0)
    receiver = Recorder()
    with anyio.fail_after(10):
        async with serve_on_loopback(receiver) as hook_url, serve_on_loopback(emulator.app) as api_url:
            emulator.base_url = api_url
            async with httpx2.AsyncClient(base_url=api_url, headers={"x-api-key": MASTER}) as c:
                await submit(c, "flux-dev-image", prompt="x", webhook_url=f"{hook_url}/h")
            await receiver.received.wait()
    assert receiver.bodies[0]["outputs"][0].startswith(f"{api_url}/cdn/outputs/")


# --- faults ---------------------------------------------------------------------------------------------


async def test_status_fault_returns_its_status_and_retry_after_then_recovers(
    client: httpx2.AsyncClient, emulator: MuapiEmulator
) -> None:
    emulator.faults.add(method="GET", path=r"/account/balance$", kind="status", status=429, retry_after="7")
    limited = await client.get("/api/v1/account/balance")
    assert limited.status_code == 429
    assert limited.headers["retry-after"] == "7"
    assert "detail" in limited.json()
    assert (await client.get("/api/v1/account/balance")).status_code == 200


async def test_fault_matching_respects_method_path_regex_times_and_clear(
    client: httpx2.AsyncClient, emulator: MuapiEmulator
) -> None:
    fault = emulator.faults.add(
        method="POST", path=r"^/api/v1/keys$", kind="status", status=500, times=-1, body="x"
    )
    assert (await client.get("/api/v1/keys")).status_code == 200
    for _ in range(3):
        response = await client.post("/api/v1/keys", json={})
        assert response.status_code == 500
        assert response.text == "x"
    assert fault.hits == 3
    emulator.faults.clear()
    assert (await client.post("/api/v1/keys", json={})).status_code == 200


async def test_requests_log_records_every_request_including_faulted_ones(
    client: httpx2.AsyncClient, emulator: MuapiEmulator
) -> None:
    emulator.faults.add(path="balance", kind="status")
    await client.get("/api/v1/account/balance")
    await client.get("/api/v1/account/balance")
    assert emulator.requests == [("GET", "/api/v1/account/balance")] * 2


async def test_after_handler_status_fault_creates_the_job_but_loses_the_answer(
    client: httpx2.AsyncClient, emulator: MuapiEmulator
) -> None:
    emulator.faults.add(method="POST", path="flux-dev-image", kind="status", status=503, after_handler=True)
    response = await client.post("/api/v1/flux-dev-image", json={"prompt": "x"})
    assert response.status_code == 503
    assert "x-muapi-cost-usd" not in response.headers
    assert emulator.submissions == 1
    assert emulator.balance_usd == pytest.approx(24.975)


async def test_drop_fault_surfaces_as_remote_protocol_error_over_asgi_transport(
    client: httpx2.AsyncClient, emulator: MuapiEmulator
) -> None:
    emulator.faults.add(path="flux", kind="drop")
    with pytest.raises(httpx2.RemoteProtocolError):
        await client.post("/api/v1/flux-dev-image", json={"prompt": "x"})
    assert emulator.submissions == 0


@pytest.mark.loopback
async def test_drop_fault_breaks_the_connection_mid_response_over_loopback(emulator: MuapiEmulator) -> None:
    emulator.faults.add(method="POST", path="flux", kind="drop", after_handler=True)
    with anyio.fail_after(10):
        async with live_client(emulator) as c:
            with pytest.raises((httpx2.RemoteProtocolError, httpx2.ReadError)):
                await c.post("/api/v1/flux-dev-image", json={"prompt": "x"})
            # The server is still healthy for the next request.
            assert (await c.get("/api/v1/account/balance")).status_code == 200
    assert emulator.submissions == 1


async def test_delay_fault_answers_normally_after_the_delay(
    client: httpx2.AsyncClient, emulator: MuapiEmulator
) -> None:
    emulator.faults.add(path="balance", kind="delay", delay_s=0.01)
    with anyio.fail_after(5):
        response = await client.get("/api/v1/account/balance")
    assert response.status_code == 200


@pytest.mark.loopback
async def test_hang_fault_holds_the_request_until_released(emulator: MuapiEmulator) -> None:
    emulator.faults.add(method="POST", path="flux", kind="hang")
    results: list[httpx2.Response] = []
    with anyio.fail_after(10):
        async with live_client(emulator) as c, anyio.create_task_group() as tg:

            async def call() -> None:
                results.append(await c.post("/api/v1/flux-dev-image", json={"prompt": "x"}))

            tg.start_soon(call)
            while emulator.faults.parked == 0:
                await anyio.sleep(0.01)
            assert results == []
            assert emulator.submissions == 0
            emulator.faults.release.set()
    assert results[0].status_code == 200
    assert emulator.submissions == 1


@pytest.mark.loopback
async def test_hung_request_is_abandoned_when_the_client_disconnects(emulator: MuapiEmulator) -> None:
    emulator.faults.add(method="POST", path="flux", kind="hang")
    with anyio.fail_after(10):
        async with live_client(emulator) as c:
            async with anyio.create_task_group() as tg:
                tg.start_soon(c.post, "/api/v1/flux-dev-image")
                while emulator.faults.parked == 0:
                    await anyio.sleep(0.01)
                # Abandoning the request closes its connection; the server must notice and stop waiting.
                tg.cancel_scope.cancel()
            while emulator.faults.parked:
                await anyio.sleep(0.01)
            emulator.faults.release.set()
    assert emulator.submissions == 0


async def test_after_handler_hang_creates_the_job_then_holds_the_answer(
    client: httpx2.AsyncClient, emulator: MuapiEmulator
) -> None:
    emulator.faults.add(method="POST", path="flux", kind="hang", after_handler=True)
    results: list[httpx2.Response] = []

    async def call() -> None:
        results.append(await client.post("/api/v1/flux-dev-image", json={"prompt": "x"}))

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(call)
            while emulator.faults.parked == 0:
                await anyio.sleep(0.01)
            assert emulator.submissions == 1
            assert results == []
            emulator.faults.release.set()
    assert results[0].status_code == 200


# --- loopback -------------------------------------------------------------------------------------------


@pytest.mark.loopback
async def test_serve_on_loopback_yields_a_working_url_and_stops_on_exit(emulator: MuapiEmulator) -> None:
    with anyio.fail_after(10):
        async with serve_on_loopback(emulator.app) as url:
            assert re.fullmatch(r"http://127\.0\.0\.1:\d+", url)
            async with httpx2.AsyncClient() as c:
                assert (await c.get(f"{url}/openapi.json")).status_code == 200
        async with httpx2.AsyncClient() as c:
            with pytest.raises(httpx2.ConnectError):
                await c.get(f"{url}/openapi.json")


@pytest.mark.loopback
async def test_serve_on_loopback_shuts_down_promptly_with_a_request_still_hanging(
    emulator: MuapiEmulator,
) -> None:
    emulator.faults.add(path="balance", kind="hang")
    outcome: list[object] = []
    with anyio.fail_after(8):
        async with anyio.create_task_group() as tg, serve_on_loopback(emulator.app) as url:
            client = httpx2.AsyncClient(base_url=url, headers={"x-api-key": MASTER})

            async def call() -> None:
                # uvicorn cancels the parked request when its grace period ends: the client sees a 500
                # or a broken connection, but never waits for ever.
                try:
                    outcome.append((await client.get("/api/v1/account/balance")).status_code)
                except httpx2.TransportError as exc:
                    outcome.append(type(exc))
                finally:
                    await client.aclose()

            tg.start_soon(call)
            while emulator.faults.parked == 0:
                await anyio.sleep(0.01)
            started = anyio.current_time()
        assert anyio.current_time() - started < 5
    assert outcome
    assert outcome[0] == 500 or isinstance(outcome[0], type)
