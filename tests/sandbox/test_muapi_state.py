"""The MuAPI emulator keeps what the real service keeps across a restart, and makes images of the asked size.

Each "restart" is a new emulator on the same state folder, served on a new loopback port, with the fake
clock passed as both its ``now`` and its wall clock (advancing it between the two emulators is downtime).
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest

from mediamux.sandbox.loopback import serve_on_loopback
from mediamux.sandbox.muapi import MuapiEmulator
from tests.sandbox.conftest import FakeNow, assert_private

# They serve the emulator on a real loopback socket (restarts on a new port), so not unit tests.
pytestmark = pytest.mark.loopback

MASTER = "sandbox-muapi-key"
VIDEO = "kling-v2.1-master-t2v"  # 1.40 USD per video, 10 s by default


def start(now: FakeNow, state: Path | None, **options: Any) -> MuapiEmulator:
    return MuapiEmulator(now=now, wall_clock=now, state_dir=state, **options)


@asynccontextmanager
async def served(emulator: MuapiEmulator) -> AsyncIterator[httpx2.AsyncClient]:
    async with serve_on_loopback(emulator.app) as url:
        emulator.base_url = url
        async with httpx2.AsyncClient(base_url=url, headers={"x-api-key": MASTER}) as client:
            yield client


async def ok(response: Any) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()
    return data


async def submit_then_stop(now: FakeNow, state: Path, slug: str, **body: Any) -> dict[str, Any]:
    """The first life of a sandbox: one submission over loopback, then the emulator stops."""
    emulator = start(now, state)
    async with served(emulator) as client:
        job = await ok(await client.post(f"/api/v1/{slug}", json=body))
    emulator.close()
    return job


async def balance(client: httpx2.AsyncClient) -> float:
    return float((await ok(await client.get("/api/v1/account/balance")))["balance"])


def png_size(data: bytes) -> tuple[int, int]:
    """Width and height from a PNG's IHDR, after checking the chunk CRCs and that IDAT holds every row."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, header, idat = 8, None, b""
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        payload = data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        assert crc == zlib.crc32(kind + payload) & 0xFFFFFFFF, kind
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", payload)
        elif kind == b"IDAT":
            idat += payload
        pos += 12 + length
    assert header is not None
    width, height, depth, colour, *_ = header
    assert (depth, colour) == (8, 2)
    assert len(zlib.decompress(idat)) == height * (1 + 3 * width)
    return width, height


# --- restart ---------------------------------------------------------------------------------------------


async def test_a_video_job_submitted_before_a_restart_completes_after_it_and_is_charged_once(
    tmp_path: Path, now: FakeNow
) -> None:
    with anyio.fail_after(20):
        first = start(now, tmp_path)
        async with served(first) as client:
            job = await ok(await client.post(f"/api/v1/{VIDEO}", json={"prompt": "a slow pan over hills"}))
            charged = await balance(client)
        first.close()
        assert charged == pytest.approx(25.0 - 1.40)

        now.advance(3)
        second = start(now, tmp_path)
        async with served(second) as client:
            during = await ok(await client.get(f"/api/v1/predictions/{job['request_id']}/result"))
            now.advance(7)
            done = await ok(await client.get(f"/api/v1/predictions/{job['request_id']}/result"))
            video = await client.get(done["outputs"][0])
            after = await balance(client)

    assert during["status"] == "processing"
    assert done["status"] == "completed"
    assert done["cost"] == job["cost"]
    assert done["outputs"][0].startswith(f"{second.base_url}/cdn/outputs/")
    assert video.status_code == 200 and video.content[4:8] == b"ftyp"
    assert after == pytest.approx(charged)


async def test_a_job_that_finished_while_the_sandbox_was_down_is_completed_at_the_first_look(
    tmp_path: Path, now: FakeNow
) -> None:
    with anyio.fail_after(20):
        job = await submit_then_stop(now, tmp_path, "flux-dev-image", prompt="x")
        now.advance(3600)
        async with served(start(now, tmp_path)) as client:
            done = await ok(await client.get(f"/api/v1/predictions/{job['request_id']}/result"))

    assert done["status"] == "completed"
    assert done["executionTime"] == 4000


async def test_a_failed_job_is_refunded_once_however_many_restarts_follow(
    tmp_path: Path, now: FakeNow
) -> None:
    with anyio.fail_after(20):
        job = await submit_then_stop(now, tmp_path, VIDEO, prompt="[fail] boom")
        now.advance(60)
        balances = []
        for _ in range(2):
            emulator = start(now, tmp_path)
            async with served(emulator) as client:
                polled = await ok(await client.get(f"/api/v1/predictions/{job['request_id']}/result"))
                balances.append(await balance(client))
            emulator.close()

    assert polled["status"] == "failed"
    assert polled["cost"]["refunded"] is True
    assert balances == [25.0, 25.0]


async def test_wallet_keys_and_uploads_survive_a_restart(tmp_path: Path, now: FakeNow) -> None:
    payload = bytes(range(256)) * 100
    with anyio.fail_after(20):
        first = start(now, tmp_path)
        first.balance_usd = 7.5
        async with served(first) as client:
            created = await ok(await client.post("/api/v1/keys", json={"name": "ci", "is_test": True}))
            hosted = (
                await ok(
                    await client.post(
                        "/api/v1/upload_file", files={"file": ("still.png", payload, "image/png")}
                    )
                )
            )["url"]
            grant = await ok(await client.get("/api/v1/get_upload_url", params={"filename": "clip.mp4"}))
        first.close()

        second = start(now, tmp_path)
        async with served(second) as client:
            keys = await client.get("/api/v1/keys")
            test_key = await client.get("/api/v1/account/balance", headers={"x-api-key": created["api_key"]})
            moved = hosted.replace(first.base_url, second.base_url)
            fetched = await client.get(moved)
            # A presigned grant from before the restart is still honoured within its hour.
            posted = await client.post(
                f"{second.base_url}/cdn/presigned",
                data=grant["fields"],
                files={"file": ("clip.mp4", b"MOVIE")},
            )
            served_object = await client.get(f"{second.base_url}/cdn/{grant['fields']['key']}")
            wallet = await balance(client)

    assert wallet == 7.5
    assert [k["name"] for k in keys.json()] == ["master", "ci"]
    assert test_key.status_code == 200
    assert fetched.status_code == 200 and fetched.content == payload
    assert posted.status_code == 204 and served_object.content == b"MOVIE"


async def test_a_deleted_key_stays_deleted_but_the_sandbox_key_is_always_there(
    tmp_path: Path, now: FakeNow
) -> None:
    with anyio.fail_after(20):
        first = start(now, tmp_path)
        async with served(first) as client:
            created = await ok(await client.post("/api/v1/keys", json={"name": "gone"}))
            await ok(await client.delete(f"/api/v1/keys/{created['id']}"))
            await ok(await client.delete("/api/v1/keys/1"))  # the master key itself
        first.close()
        async with served(start(now, tmp_path)) as client:
            listed = await client.get("/api/v1/keys")
            gone = await client.get("/api/v1/keys", headers={"x-api-key": created["api_key"]})

    assert listed.status_code == 200
    assert [k["name"] for k in listed.json()] == ["master"]
    assert gone.status_code == 401


async def test_a_webhook_delivered_before_a_restart_is_not_delivered_again(
    tmp_path: Path, now: FakeNow
) -> None:
    first = start(now, tmp_path)
    first.base_url = "http://muapi.test"
    async with httpx2.AsyncClient(
        transport=httpx2.ASGITransport(app=first.app), base_url=first.base_url, headers={"x-api-key": MASTER}
    ) as client:
        await ok(
            await client.post(
                "/api/v1/flux-dev-image", json={"prompt": "x", "webhook_url": "http://127.0.0.1:9/h"}
            )
        )
    now.advance(10)
    with anyio.fail_after(10):
        assert await first.deliver_due_webhooks() == 1
    first.close()

    with anyio.fail_after(10):
        assert await start(now, tmp_path).deliver_due_webhooks() == 0


async def test_state_files_are_private(tmp_path: Path, now: FakeNow) -> None:
    state = tmp_path / "sandbox" / "muapi"
    with anyio.fail_after(20):
        emulator = start(now, state)
        async with served(emulator) as client:
            await ok(await client.post("/api/v1/flux-dev-image", json={"prompt": "x"}))
            await ok(await client.post("/api/v1/upload_file", files={"file": ("a.png", b"x")}))
        emulator.close()

    paths = list(state.rglob("*"))
    assert any(p.suffix == ".json" for p in paths) and any(p.name == "a.png" for p in paths)
    assert_private(state)


async def test_a_torn_write_from_a_killed_process_leaves_the_previous_record(
    tmp_path: Path, now: FakeNow
) -> None:
    with anyio.fail_after(20):
        job = await submit_then_stop(now, tmp_path, "flux-dev-image", prompt="x")
        [record] = (tmp_path / "jobs").glob("*.json")
        (tmp_path / "jobs" / f".{record.name}.dead.tmp").write_text('{"id": "half')
        now.advance(10)
        async with served(start(now, tmp_path)) as client:
            done = await ok(await client.get(f"/api/v1/predictions/{job['request_id']}/result"))

    assert done["status"] == "completed"
    assert not list((tmp_path / "jobs").glob("*.tmp"))


async def test_without_a_state_folder_a_new_emulator_starts_empty(now: FakeNow) -> None:
    with anyio.fail_after(20):
        first = start(now, None)
        async with served(first) as client:
            job = await ok(await client.post("/api/v1/flux-dev-image", json={"prompt": "x"}))
        first.close()
        async with served(start(now, None)) as client:
            missing = await client.get(f"/api/v1/predictions/{job['request_id']}/result")
            wallet = await balance(client)

    assert missing.status_code == 404
    assert wallet == 25.0


# --- image size ------------------------------------------------------------------------------------------


async def image(client: httpx2.AsyncClient, now: FakeNow, slug: str, **inputs: Any) -> tuple[int, int]:
    job = await ok(await client.post(f"/api/v1/{slug}", json={"prompt": "size check", **inputs}))
    now.advance(60)
    done = await ok(await client.get(f"/api/v1/predictions/{job['request_id']}/result"))
    fetched = await client.get(done["outputs"][0])
    assert fetched.status_code == 200 and fetched.headers["content-type"] == "image/png"
    return png_size(fetched.content)


@pytest.mark.parametrize(
    ("slug", "inputs", "expected"),
    [
        ("flux-dev-image", {"width": 1024, "height": 1024}, (1024, 1024)),
        ("flux-dev-image", {"width": 768, "height": 512}, (768, 512)),
        ("flux-dev-image", {}, (1024, 1024)),
        ("flux-dev-image", {"size": "1024*768"}, (1024, 768)),
        ("flux-dev-image", {"size": "512x640"}, (512, 640)),
        ("nano-banana", {}, (1024, 1024)),
        ("nano-banana", {"aspect_ratio": "16:9"}, (1024, 576)),
        ("nano-banana", {"aspect_ratio": "9:16"}, (576, 1024)),
        ("qwen-image-edit", {"image_url": "https://x.test/a.png", "aspect_ratio": "4:3"}, (1024, 768)),
        ("nano-banana", {"image_size": "landscape_4_3"}, (1024, 768)),
        ("nano-banana", {"image_size": "square"}, (512, 512)),
        ("nano-banana", {"image_size": {"width": 300, "height": 200}}, (300, 200)),
    ],
)
async def test_generated_images_have_the_requested_size(
    now: FakeNow, slug: str, inputs: dict[str, Any], expected: tuple[int, int]
) -> None:
    with anyio.fail_after(20):
        async with served(start(now, None)) as client:
            assert await image(client, now, slug, **inputs) == expected


async def test_image_sizes_beyond_the_cap_are_scaled_down_keeping_their_shape(now: FakeNow) -> None:
    with anyio.fail_after(20):
        async with served(start(now, None)) as client:
            assert await image(client, now, "flux-dev-image", size="8192*4096") == (2048, 1024)
            assert await image(client, now, "nano-banana", image_size={"width": 1, "height": 9000}) == (
                1,
                2048,
            )
