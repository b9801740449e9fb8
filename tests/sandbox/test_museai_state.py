"""The muse.ai emulator keeps its library, AI jobs, faces, keys and credits across a restart.

Each "restart" is a new emulator on the same state folder, both hosts served on new loopback ports, with the
fake clock passed as both its ``now`` and its wall clock (advancing it between two emulators is downtime).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest

from mediamux.sandbox.loopback import serve_on_loopback
from mediamux.sandbox.media import mp4_bytes, png_bytes, wav_sequence_bytes
from mediamux.sandbox.museai import MuseaiEmulator
from tests.sandbox.conftest import FakeNow, assert_private

# They serve the emulator on a real loopback socket (restarts on a new port), so not unit tests.
pytestmark = pytest.mark.loopback

KEY = "sandbox-museai-key"
JOB_SECONDS = 3.0
SPEECH_WAV = wav_sequence_bytes([(1.0, 440.0), (0.5, None), (1.0, 250.0), (0.5, None)])
VTT = "WEBVTT\n\n00:00.000 --> 00:01.000\nhello\n"


@dataclass
class Hosts:
    emulator: MuseaiEmulator
    api: httpx2.AsyncClient
    jobs: httpx2.AsyncClient


def start(now: FakeNow, state: Path, **options: Any) -> MuseaiEmulator:
    return MuseaiEmulator(now=now, wall_clock=now, state_dir=state, job_seconds=JOB_SECONDS, **options)


@asynccontextmanager
async def served(emulator: MuseaiEmulator, key: str = KEY) -> AsyncIterator[Hosts]:
    async with serve_on_loopback(emulator.app) as url, serve_on_loopback(emulator.jobs_app) as jobs_url:
        emulator.base_url, emulator.jobs_base_url = url, jobs_url
        headers = {"Key": key}
        async with (
            httpx2.AsyncClient(base_url=url, headers=headers) as api,
            httpx2.AsyncClient(base_url=jobs_url, headers=headers) as jobs,
        ):
            yield Hosts(emulator, api, jobs)
    emulator.close()


def ok(response: httpx2.Response) -> Any:
    assert response.status_code == 200, response.text
    return response.json()


async def test_the_library_survives_a_restart(tmp_path: Path, now: FakeNow) -> None:
    with anyio.fail_after(30):
        async with served(start(now, tmp_path)) as first:
            scid = ok(await first.api.post("/api/files/collections", json={"name": "Talks"}))["scid"]
            video = ok(
                await first.api.post(
                    "/api/files/upload",
                    files={"file": ("talk_one.wav", SPEECH_WAV)},
                    data={"collection": scid, "visibility": "unlisted"},
                )
            )
            ok(await first.api.post(f"/api/files/set/{video['fid']}", json={"description": "first talk"}))
            subid = ok(
                await first.api.post(
                    f"/api/files/subtitles/{video['svid']}",
                    files={"subtitles": ("English.vtt", VTT.encode())},
                )
            )["id"]
            cover = png_bytes(32, 18, (1, 2, 3))
            ok(await first.api.post(f"/api/files/set/{video['fid']}/cover", files={"file": ("c.png", cover)}))
            await first.api.get(video["url"])  # one view
            gone = ok(
                await first.api.post("/api/files/upload", files={"file": ("gone.wav", SPEECH_WAV + b"x")})
            )
            ok(await first.api.delete(f"/api/files/delete/{gone['fid']}"))
            before = ok(await first.api.get(f"/api/files/videos/{video['svid']}"))
            search_before = ok(await first.api.get("/api/search", params={"q": "s:echo"}))

        now.advance(600)
        async with served(start(now, tmp_path)) as second:
            base = second.emulator.base_url
            listed = ok(await second.api.get("/api/files/videos"))
            after = ok(await second.api.get(f"/api/files/videos/{video['svid']}"))
            data = await second.api.get(f"{base}/w/{video['fid']}/data")
            thumbnail = await second.api.get(f"{base}/w/{video['fid']}/thumbnails/thumbnail.jpg")
            subtitles = ok(await second.api.get(f"/api/files/subtitles/{video['svid']}"))
            vtt = await second.api.get(f"/api/files/subtitles/{video['svid']}/{subid}")
            collection = ok(await second.api.get(f"/api/files/collections/{scid}"))
            search_after = ok(await second.api.get("/api/search", params={"q": "s:echo"}))
            keyless = await second.api.get(f"/api/files/videos/{video['svid']}", headers={"Key": ""})

    assert [v["svid"] for v in listed] == [video["svid"]]
    assert {**after, "url": None, "views": None} == {**before, "url": None, "views": None}
    assert after["url"] == f"{base}/w/{video['fid']}/data"
    assert (
        after["views"] == 1
        and after["description"] == "first talk"
        and after["tcreated"] == video["tcreated"]
    )
    assert data.status_code == 200 and data.content == SPEECH_WAV
    assert thumbnail.content == cover
    assert subtitles == {subid: "English"} and vtt.text == VTT
    assert [v["svid"] for v in collection["videos"]] == [video["svid"]]
    assert search_after == search_before == [[video["svid"], [0.0]]]
    assert keyless.status_code == 200  # still unlisted


async def test_keys_and_credits_survive_a_restart(tmp_path: Path, now: FakeNow) -> None:
    with anyio.fail_after(30):
        async with served(start(now, tmp_path, credits=3)) as first:
            login = ok(
                await first.api.post(
                    "/api/auth/login", json={"email": "demo@mediamux.local", "passwd": "sandbox"}
                )
            )
            ok(await first.api.post("/api/files/upload", files={"file": ("a.wav", SPEECH_WAV)}))
            ok(await first.jobs.post("/speech", files={"file": ("a.wav", SPEECH_WAV)}))
        # The new process is configured for a new account of 3 credits; the account it finds has 1 left.
        async with served(start(now, tmp_path, credits=3), key=login["key"]) as second:
            ok(await second.jobs.post("/speech", files={"file": ("a.wav", SPEECH_WAV)}))
            refused = await second.jobs.post("/speech", files={"file": ("a.wav", SPEECH_WAV)})

    assert refused.status_code == 402 and refused.json() == {"error": "not_enough_credits"}


async def test_an_ai_job_submitted_before_a_restart_finishes_after_it(tmp_path: Path, now: FakeNow) -> None:
    with anyio.fail_after(30):
        async with served(start(now, tmp_path)) as first:
            job = ok(await first.jobs.post("/speech", files={"file": ("talk.wav", SPEECH_WAV)}))["id"]
        now.advance(1)
        async with served(start(now, tmp_path)) as second:
            pending = ok(await second.jobs.get(f"/speech/{job}"))
            now.advance(JOB_SECONDS)
            done = ok(await second.jobs.get(f"/speech/{job}"))

    assert pending == {"status": "pending"}
    assert done == {"status": "done", "transcript": "echo charlie"}


async def test_an_ai_result_is_gone_an_hour_after_completion_even_across_a_restart(
    tmp_path: Path, now: FakeNow
) -> None:
    with anyio.fail_after(30):
        async with served(start(now, tmp_path)) as first:
            older = ok(await first.jobs.post("/speech", files={"file": ("older.wav", SPEECH_WAV)}))["id"]
            now.advance(600)
            newer = ok(await first.jobs.post("/speech", files={"file": ("newer.wav", SPEECH_WAV)}))["id"]
        # Down until the older result is exactly an hour old; the newer one has ten minutes left.
        now.advance(JOB_SECONDS + 3600 - 600)
        async with served(start(now, tmp_path)) as second:
            old = await second.jobs.get(f"/speech/{older}")
            recent = await second.jobs.get(f"/speech/{newer}")

    assert old.status_code == 404 and old.json() == {"error": "not_found"}
    assert ok(recent)["status"] == "done"
    assert [p.stem for p in (tmp_path / "jobs").glob("*.json")] == [newer]


async def test_the_faces_database_and_its_labels_survive_a_restart(tmp_path: Path, now: FakeNow) -> None:
    video = mp4_bytes("crowd", duration_s=10.0)
    with anyio.fail_after(30):
        async with served(start(now, tmp_path)) as first:
            job = ok(await first.jobs.post("/faces", files={"file": ("crowd.mp4", video)}))["id"]
            now.advance(JOB_SECONDS)
            clusters = ok(await first.jobs.get(f"/faces/{job}"))["faces"]
            cluster = next(iter(clusters))
            ok(await first.jobs.post("/faces/modify", json={cluster: {"label": "Jenny"}}))
            before = ok(await first.jobs.get("/faces/db"))
        async with served(start(now, tmp_path)) as second:
            after = ok(await second.jobs.get("/faces/db"))
            again = ok(await second.jobs.get(f"/faces/{job}"))

    assert after == before
    assert after["detected"][cluster]["label"] == "Jenny"
    assert again["faces"][cluster]["label"] == "Jenny"


async def test_a_cut_still_ingesting_at_a_restart_becomes_ready_on_time(tmp_path: Path, now: FakeNow) -> None:
    with anyio.fail_after(30):
        async with served(start(now, tmp_path)) as first:
            source = ok(await first.api.post("/api/files/upload", files={"file": ("a.wav", SPEECH_WAV)}))
            cut = ok(
                await first.api.post(
                    "/api/files/cut",
                    files={"svid": (None, source["svid"]), "start": (None, "0"), "end": (None, "1")},
                )
            )
        async with served(start(now, tmp_path)) as second:
            ingesting = ok(await second.api.get(f"/api/files/videos/{cut['svid']}"))["ingesting"]
            now.advance(JOB_SECONDS)
            ready = ok(await second.api.get(f"/api/files/videos/{cut['svid']}"))["ingesting"]

    assert (cut["ingesting"], ingesting, ready) == (True, True, False)


async def test_state_files_are_private(tmp_path: Path, now: FakeNow) -> None:
    state = tmp_path / "sandbox" / "museai"
    with anyio.fail_after(30):
        async with served(start(now, state)) as first:
            video = ok(await first.api.post("/api/files/upload", files={"file": ("a.wav", SPEECH_WAV)}))
            ok(
                await first.api.post(
                    f"/api/files/set/{video['fid']}/cover", files={"file": ("c.png", png_bytes())}
                )
            )
            cut_form = {"svid": (None, video["svid"]), "start": (None, "0"), "end": (None, "1")}
            ok(await first.api.post("/api/files/cut", files=cut_form))
            ok(await first.jobs.post("/speech", files={"file": ("a.wav", SPEECH_WAV)}))

    paths = list(state.rglob("*"))
    assert {"data", "cover"} <= {p.name for p in paths}
    assert_private(state)


@pytest.mark.parametrize("lost", ["record", "blob"])
async def test_a_video_half_written_by_a_killed_process_is_dropped_whole(
    tmp_path: Path, now: FakeNow, lost: str
) -> None:
    with anyio.fail_after(30):
        async with served(start(now, tmp_path)) as first:
            video = ok(await first.api.post("/api/files/upload", files={"file": ("a.wav", SPEECH_WAV)}))
        if lost == "record":
            (tmp_path / "videos" / f"{video['svid']}.json").unlink()
        else:
            (tmp_path / "files" / "videos" / video["svid"] / "data").unlink()
        async with served(start(now, tmp_path)) as second:
            listed = ok(await second.api.get("/api/files/videos"))

    assert listed == []
    assert not (tmp_path / "files" / "videos" / video["svid"]).exists()
