"""Behaviour of the muse.ai emulator (both hosts), checked against the provider documents.

Time is injected (`FakeNow`), so ingesting cuts and AI jobs finish without sleeping; every wait is bounded.
"""

from __future__ import annotations

import hashlib
import itertools
import re
import struct
import zlib
from collections.abc import AsyncIterator
from typing import Any

import anyio
import httpx2
import pytest

from mediamux.sandbox.loopback import serve_on_loopback
from mediamux.sandbox.media import (
    PNG_SIGNATURE,
    color_for,
    mp4_bytes,
    mp4_duration,
    png_bytes,
    png_decode,
    png_stripes_bytes,
    wav_from_samples,
    wav_header,
    wav_samples,
    wav_sequence_bytes,
)
from mediamux.sandbox.museai import (
    COLOR_NAMES,
    JOB_KINDS,
    SPEECH_WORDS,
    MuseaiEmulator,
    classify_color,
    pitch_word,
)
from tests.sandbox.conftest import FakeNow

KEY = "sandbox-museai-key"
ORIGIN = "http://muse.test"
JOBS_ORIGIN = "http://jobs.test"
JOB_SECONDS = 3.0

# "echo" for 1 s, half a second of silence, "charlie" for 1 s, half a second of silence.
SPEECH_WAV = wav_sequence_bytes([(1.0, 440.0), (0.5, None), (1.0, 250.0), (0.5, None)])
TONE_THEN_SILENCE = wav_sequence_bytes([(1.0, 440.0), (1.0, None)])


@pytest.fixture
def emulator(now: FakeNow) -> Any:
    emu = MuseaiEmulator(now=now, job_seconds=JOB_SECONDS)
    emu.base_url = ORIGIN
    emu.jobs_base_url = JOBS_ORIGIN
    yield emu
    emu.close()


def _client(app: Any, origin: str, key: str | None = KEY) -> httpx2.AsyncClient:
    headers = {"Key": key} if key is not None else {}
    return httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app), base_url=origin, headers=headers)


@pytest.fixture
async def api(emulator: MuseaiEmulator) -> AsyncIterator[httpx2.AsyncClient]:
    async with _client(emulator.app, ORIGIN) as c:
        yield c


@pytest.fixture
async def anon(emulator: MuseaiEmulator) -> AsyncIterator[httpx2.AsyncClient]:
    async with _client(emulator.app, ORIGIN, key=None) as c:
        yield c


@pytest.fixture
async def jobs(emulator: MuseaiEmulator) -> AsyncIterator[httpx2.AsyncClient]:
    async with _client(emulator.jobs_app, JOBS_ORIGIN) as c:
        yield c


async def upload(api: httpx2.AsyncClient, name: str, data: bytes, **fields: str) -> dict[str, Any]:
    response = await api.post("/api/files/upload", files={"file": (name, data)}, data=fields)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def set_video(api: httpx2.AsyncClient, fid: str, **body: Any) -> None:
    response = await api.post(f"/api/files/set/{fid}", json=body)
    assert response.status_code == 200, response.text
    assert response.json() == {"status": "success"}


async def search(client: httpx2.AsyncClient, q: str, path: str = "/api/search") -> Any:
    response = await client.get(path, params={"q": q})
    assert response.status_code == 200, response.text
    return response.json()


async def submit(jobs: httpx2.AsyncClient, kind: str, name: str, data: bytes, **fields: str) -> str:
    response = await jobs.post(f"/{kind}", files={"file": (name, data)}, data=fields)
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"id"}
    assert re.fullmatch(r"[0-9a-f]{64}", body["id"])
    return str(body["id"])


async def run_job(
    jobs: httpx2.AsyncClient, now: FakeNow, kind: str, name: str, data: bytes, **fields: str
) -> dict[str, Any]:
    job_id = await submit(jobs, kind, name, data, **fields)
    now.advance(JOB_SECONDS)
    response = await jobs.get(f"/{kind}/{job_id}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    assert body["status"] == "done", body
    return body


def assert_box(box: dict[str, Any]) -> None:
    assert set(box) == {"x", "y", "w", "h", "q"}
    assert box["x"] >= 0 and box["x"] + box["w"] <= 1.0001
    assert box["y"] >= 0 and box["y"] + box["h"] <= 1.0001
    assert box["q"] in (0.5, 1.0)


# --- authentication -------------------------------------------------------------------------------------


async def test_missing_key_is_401_unauthorized_on_both_hosts(emulator: MuseaiEmulator) -> None:
    async with (
        _client(emulator.app, ORIGIN, key=None) as a,
        _client(emulator.jobs_app, JOBS_ORIGIN, None) as j,
    ):
        for response in (
            await a.get("/api/files/videos"),
            await a.post("/api/files/upload", files={"file": ("a.mp4", b"x")}),
            await j.post("/speech", files={"file": ("a.wav", SPEECH_WAV)}),
            await j.get("/faces/db"),
        ):
            assert response.status_code == 401
            assert response.json() == {"error": "unauthorized"}
    assert emulator.uploads == 0
    assert emulator.jobs_created == 0


async def test_wrong_key_is_401_invalid_key_even_on_keyless_endpoints(emulator: MuseaiEmulator) -> None:
    async with (
        _client(emulator.app, ORIGIN, "nope") as a,
        _client(emulator.jobs_app, JOBS_ORIGIN, "nope") as j,
    ):
        assert (await a.get("/api/files/videos")).json() == {"error": "invalid_key"}
        assert (await a.get("/api/search/video/abcdefg", params={"q": "x"})).status_code == 401
        assert (await j.get("/faces/db")).status_code == 401


async def test_login_with_password_returns_a_new_key_that_works_on_both_hosts(
    emulator: MuseaiEmulator, anon: httpx2.AsyncClient
) -> None:
    response = await anon.post("/api/auth/login", json={"email": "Demo@mediamux.local", "passwd": "sandbox"})
    assert response.status_code == 200
    key = response.json()["key"]
    assert re.fullmatch(r"[0-9A-Za-z]{32}", key)
    async with _client(emulator.jobs_app, JOBS_ORIGIN, key) as j:
        assert (await j.get("/faces/db")).status_code == 200
    bad = await anon.post("/api/auth/login", json={"email": "demo@mediamux.local", "passwd": "wrong"})
    assert (bad.status_code, bad.json()) == (401, {"error": "invalid_credentials"})
    missing = await anon.post("/api/auth/login", json={"email": "demo@mediamux.local"})
    assert (missing.status_code, missing.json()) == (400, {"error": "passwd_not_provided"})


async def test_keys_endpoint_creates_an_additional_key(
    emulator: MuseaiEmulator, api: httpx2.AsyncClient
) -> None:
    response = await api.post("/api/auth/keys")
    key = response.json()["key"]
    assert key != KEY
    async with _client(emulator.app, ORIGIN, key) as other:
        assert (await other.get("/api/files/videos")).status_code == 200


async def test_unknown_routes_are_404_and_wrong_methods_405(api: httpx2.AsyncClient) -> None:
    assert (await api.get("/api/files/nothing")).json() == {"error": "not_found"}
    response = await api.get("/api/files/upload")
    assert (response.status_code, response.json()) == (405, {"error": "method_not_allowed"})


# --- credits --------------------------------------------------------------------------------------------


async def test_uploads_and_jobs_cost_a_credit_and_402_when_they_run_out(now: FakeNow) -> None:
    emulator = MuseaiEmulator(now=now, credits=2)
    try:
        async with _client(emulator.app, ORIGIN) as a, _client(emulator.jobs_app, JOBS_ORIGIN) as j:
            await upload(a, "a.wav", SPEECH_WAV)
            await submit(j, "speech", "a.wav", SPEECH_WAV)
            assert emulator.credits == 0
            refused = await a.post("/api/files/upload", files={"file": ("b.wav", SPEECH_WAV)})
            assert (refused.status_code, refused.json()) == (402, {"error": "not_enough_credits"})
            refused = await j.post("/colors", files={"file": ("a.png", png_bytes())})
            assert (refused.status_code, refused.json()) == (402, {"error": "not_enough_credits"})
            # Validation comes first: a request without a file is still a 400.
            assert (await j.post("/colors")).status_code == 400
        assert (emulator.uploads, emulator.jobs_created) == (1, 1)
    finally:
        emulator.close()


# --- upload, get, list, set, delete ---------------------------------------------------------------------


async def test_upload_returns_the_documented_video_object_with_fid_the_sha256(
    api: httpx2.AsyncClient, emulator: MuseaiEmulator
) -> None:
    video = await upload(api, "Moon_Landing.wav", SPEECH_WAV)
    assert set(video) == {
        "fid",
        "svid",
        "filename",
        "title",
        "description",
        "url",
        "duration",
        "width",
        "height",
        "size",
        "tcreated",
        "visibility",
        "ingesting",
    }
    assert video["fid"] == hashlib.sha256(SPEECH_WAV).hexdigest()
    assert re.fullmatch(r"[0-9A-Za-z]{7}", video["svid"])
    assert video["filename"] == "Moon_Landing.wav"
    assert video["title"] == "Moon Landing"
    assert video["description"] == ""
    assert video["url"] == f"{ORIGIN}/w/{video['fid']}/data"
    assert video["duration"] == 3.0  # from the WAV header
    assert (video["width"], video["height"]) == (0, 0)
    assert video["size"] == len(SPEECH_WAV)
    assert isinstance(video["tcreated"], int)
    assert video["visibility"] == "private"
    assert video["ingesting"] is False
    assert emulator.uploads == 1
    data = await api.get(video["url"].removeprefix(ORIGIN))
    assert data.content == SPEECH_WAV


async def test_upload_durations_and_sizes_come_from_the_file(api: httpx2.AsyncClient) -> None:
    mp4 = await upload(api, "clip.mp4", mp4_bytes("seed", duration_s=7.5))
    assert (mp4["duration"], mp4["width"], mp4["height"]) == (7.5, 1280, 720)
    png = await upload(api, "still.png", png_bytes(40, 30))
    assert (png["duration"], png["width"], png["height"]) == (0.0, 40, 30)
    blob = await upload(api, "raw.bin", b"z" * 500_000)
    assert blob["duration"] == 4.0  # 1 Mbit/s


async def test_duplicate_upload_gets_a_new_svid_and_a_suffixed_fid(api: httpx2.AsyncClient) -> None:
    first = await upload(api, "a.wav", SPEECH_WAV)
    second = await upload(api, "a.wav", SPEECH_WAV)
    assert second["svid"] != first["svid"]
    assert second["fid"].startswith(first["fid"])
    assert re.fullmatch(r"[0-9a-f]{64}\d{1,4}", second["fid"])


async def test_upload_without_a_file_or_with_a_bad_visibility_is_400(api: httpx2.AsyncClient) -> None:
    response = await api.post("/api/files/upload", data={"visibility": "public"})
    assert (response.status_code, response.json()) == (400, {"error": "file_not_provided"})
    empty = await api.post("/api/files/upload", files={"file": ("a.mp4", b"")})
    assert empty.json() == {"error": "file_not_provided"}
    bad = await api.post("/api/files/upload", files={"file": ("a.mp4", b"x")}, data={"visibility": "secret"})
    assert (bad.status_code, bad.json()) == (400, {"error": "invalid_visibility"})


async def test_list_and_get_videos_add_the_list_fields(api: httpx2.AsyncClient) -> None:
    a = await upload(api, "a.wav", SPEECH_WAV, visibility="public")
    b = await upload(api, "b.mp4", mp4_bytes("b"))
    listed = (await api.get("/api/files/videos")).json()
    assert [v["svid"] for v in listed] == [a["svid"], b["svid"]]
    for entry in listed:
        assert {"mature", "own", "views", "twatched"} <= set(entry)
        assert entry["own"] is True
    got = (await api.get(f"/api/files/videos/{a['svid']}")).json()
    assert got == {**a, "mature": False, "own": True, "views": 0, "twatched": 0}
    missing = await api.get("/api/files/videos/zzzzzzz")
    assert (missing.status_code, missing.json()) == (404, {"error": "not_found"})


async def test_set_updates_title_description_visibility_and_domains(
    api: httpx2.AsyncClient, emulator: MuseaiEmulator
) -> None:
    video = await upload(api, "a.wav", SPEECH_WAV)
    await set_video(
        api,
        video["fid"],
        title="New Video Name",
        description="About it",
        visibility="public",
        domains=["a.com"],
    )
    got = (await api.get(f"/api/files/videos/{video['svid']}")).json()
    assert (got["title"], got["description"], got["visibility"]) == ("New Video Name", "About it", "public")
    assert emulator.videos[video["svid"]].domains == ["a.com"]
    for body, code in (
        ({"visibility": "everyone"}, "invalid_visibility"),
        ({"title": 3}, "invalid_title"),
        ({"domains": "a.com"}, "invalid_domains"),
    ):
        response = await api.post(f"/api/files/set/{video['fid']}", json=body)
        assert (response.status_code, response.json()) == (400, {"error": code})
    # The document's Python-literal example is not JSON.
    broken = await api.post(f"/api/files/set/{video['fid']}", content=b'{"title": "x", "mature": False}')
    assert broken.json() == {"error": "invalid_json"}
    assert (await api.post(f"/api/files/set/{'0' * 64}", json={"title": "x"})).status_code == 404


async def test_delete_removes_the_video_its_bytes_and_its_collection_entries(api: httpx2.AsyncClient) -> None:
    video = await upload(api, "a.wav", SPEECH_WAV)
    scid = (await api.post("/api/files/collections", json={"name": "C"})).json()["scid"]
    await api.post(f"/api/files/collections/{scid}/add", json={"svid": video["svid"]})
    response = await api.delete(f"/api/files/delete/{video['fid']}")
    assert response.json() == {"status": "success"}
    assert (await api.get(f"/api/files/videos/{video['svid']}")).status_code == 404
    assert (await api.get(f"/w/{video['fid']}/data")).status_code == 404
    assert (await api.get(f"/api/files/collections/{scid}")).json()["videos"] == []
    assert (await api.delete(f"/api/files/delete/{video['fid']}")).status_code == 404


async def test_data_url_counts_views(api: httpx2.AsyncClient) -> None:
    video = await upload(api, "a.mp4", mp4_bytes("x"))
    await api.get(f"/w/{video['fid']}/data")
    await api.get(f"/w/{video['fid']}/data")
    assert (await api.get(f"/api/files/videos/{video['svid']}")).json()["views"] == 2


# --- cut ------------------------------------------------------------------------------------------------


async def test_cut_ingests_for_job_seconds_then_becomes_ready(api: httpx2.AsyncClient, now: FakeNow) -> None:
    source = await upload(api, "The_Solar_System.wav", SPEECH_WAV, visibility="public")
    response = await api.post(
        "/api/files/cut", files={"svid": (None, source["svid"]), "start": (None, "0.5"), "end": (None, "2")}
    )
    assert response.status_code == 200, response.text
    cut = response.json()
    assert cut["svid"] != source["svid"]
    assert (cut["cut_svid"], cut["cut_start"], cut["cut_end"]) == (source["svid"], 0.5, 2.0)
    assert cut["duration"] == 1.5
    assert cut["ingesting"] is True
    assert (cut["title"], cut["filename"], cut["visibility"]) == (
        "The Solar System",
        source["filename"],
        "public",
    )
    assert (await api.get(f"/w/{cut['fid']}/data")).status_code == 404
    now.advance(JOB_SECONDS - 0.1)
    assert (await api.get(f"/api/files/videos/{cut['svid']}")).json()["ingesting"] is True
    now.advance(0.1)
    assert (await api.get(f"/api/files/videos/{cut['svid']}")).json()["ingesting"] is False
    data = (await api.get(f"/w/{cut['fid']}/data")).content
    assert cut["fid"] == hashlib.sha256(data).hexdigest()
    assert wav_header(data).duration_s == pytest.approx(1.5)
    # The cut's own audio: "echo" until 1.0 s of the source, i.e. 0.5 s into the cut, then silence.
    assert (await api.get(f"/api/files/i/speech/{cut['svid']}")).json() == [
        [0.0, 0.5, "echo"],
        [1.0, 1.5, "charlie"],
    ]


@pytest.mark.parametrize(("start", "end"), [("-1", "2"), ("2", "1"), ("1", "1"), ("0", "3.5"), ("a", "2")])
async def test_cut_out_of_range_or_malformed_is_400_invalid_cut(
    api: httpx2.AsyncClient, start: str, end: str
) -> None:
    source = await upload(api, "a.wav", SPEECH_WAV)
    response = await api.post(
        "/api/files/cut", files={"svid": (None, source["svid"]), "start": (None, start), "end": (None, end)}
    )
    assert (response.status_code, response.json()) == (400, {"error": "invalid_cut"})


async def test_cut_needs_its_fields_and_an_existing_video(api: httpx2.AsyncClient) -> None:
    missing = await api.post("/api/files/cut", files={"start": (None, "0"), "end": (None, "1")})
    assert missing.json() == {"error": "svid_not_provided"}
    unknown = await api.post(
        "/api/files/cut", files={"svid": (None, "zzzzzzz"), "start": (None, "0"), "end": (None, "1")}
    )
    assert (unknown.status_code, unknown.json()) == (404, {"error": "not_found"})


# --- cover ----------------------------------------------------------------------------------------------


async def test_cover_from_a_timed_frame_or_an_uploaded_image(api: httpx2.AsyncClient) -> None:
    video = await upload(api, "a.mp4", mp4_bytes("a", duration_s=5.0))
    thumb = f"/w/{video['fid']}/thumbnails/thumbnail.jpg"
    before = (await api.get(thumb)).content
    timed = await api.post(f"/api/files/set/{video['fid']}/cover", params={"t": "2.5"})
    assert timed.json() == {"status": "success"}
    frame = await api.get(thumb)
    assert frame.headers["content-type"] == "image/png"
    assert frame.content.startswith(PNG_SIGNATURE)
    assert frame.content != before
    image = png_bytes(20, 10, (1, 2, 3))
    uploaded = await api.post(f"/api/files/set/{video['fid']}/cover", files={"file": ("cover.png", image)})
    assert uploaded.json() == {"status": "success"}
    assert (await api.get(thumb)).content == image
    assert (await api.get(f"/w/{video['fid']}/thumbnails/00003.jpg")).status_code == 200
    assert (await api.get(f"/w/{video['fid']}/thumbnails/00009.jpg")).status_code == 404


async def test_cover_errors(api: httpx2.AsyncClient) -> None:
    video = await upload(api, "a.mp4", mp4_bytes("a", duration_s=5.0))
    path = f"/api/files/set/{video['fid']}/cover"
    assert (await api.post(path, params={"t": "9"})).json() == {"error": "invalid_time"}
    assert (await api.post(path)).json() == {"error": "file_not_provided"}
    not_image = await api.post(path, files={"file": ("cover.txt", b"hello")})
    assert (not_image.status_code, not_image.json()) == (400, {"error": "unsupported_file"})
    assert (await api.post(f"/api/files/set/{'1' * 64}/cover", params={"t": "1"})).status_code == 404


# --- subtitles ------------------------------------------------------------------------------------------

VTT = "WEBVTT\n\n00:00.000 --> 00:01.000\nこんにちは\n"


async def test_subtitles_upload_list_get_rename_delete(api: httpx2.AsyncClient) -> None:
    video = await upload(api, "a.wav", SPEECH_WAV)
    base = f"/api/files/subtitles/{video['svid']}"
    created = (await api.post(base, files={"subtitles": ("Japanese.vtt", VTT.encode())})).json()
    assert created["name"] == "Japanese"
    subid = created["id"]
    assert re.fullmatch(r"[0-9A-Za-z]{9}", subid)
    assert (await api.get(base)).json() == {subid: "Japanese"}
    text = await api.get(f"{base}/{subid}")
    assert text.headers["content-type"].startswith("text/vtt")
    assert text.text == VTT
    renamed = await api.post(f"{base}/{subid}/set", files={"name": (None, "Javanese")})
    assert renamed.json() == {"status": "success"}
    assert (await api.get(base)).json() == {subid: "Javanese"}
    assert (await api.post(f"{base}/{subid}/delete")).json() == {"status": "success"}
    assert (await api.get(base)).json() == {}
    assert (await api.get(f"{base}/{subid}")).status_code == 404


async def test_subtitles_errors(api: httpx2.AsyncClient) -> None:
    video = await upload(api, "a.wav", SPEECH_WAV)
    base = f"/api/files/subtitles/{video['svid']}"
    assert (await api.post(base)).json() == {"error": "subtitles_not_provided"}
    srt = await api.post(base, files={"subtitles": ("a.srt", b"1\n00:00:00,000 --> 00:00:01,000\nhi\n")})
    assert (srt.status_code, srt.json()) == (400, {"error": "invalid_subtitles"})
    sub = (await api.post(base, files={"subtitles": ("x.vtt", VTT.encode())})).json()["id"]
    assert (await api.post(f"{base}/{sub}/set")).json() == {"error": "name_not_provided"}
    assert (await api.get("/api/files/subtitles/zzzzzzz")).status_code == 404


# --- collections ----------------------------------------------------------------------------------------


async def test_collections_create_list_get_add_remove_delete(api: httpx2.AsyncClient) -> None:
    video = await upload(api, "a.wav", SPEECH_WAV)
    created = await api.post(
        "/api/files/collections", json={"name": "My Public Collection", "visibility": "public"}
    )
    scid = created.json()["scid"]
    assert re.fullmatch(r"[0-9A-Za-z]{7}", scid)
    added = await api.post(f"/api/files/collections/{scid}/add", json={"svid": video["svid"]})
    assert added.json() == {"status": "success"}
    listed = (await api.get("/api/files/collections")).json()
    assert listed == [
        {
            "name": "My Public Collection",
            "scid": scid,
            "tcreated": listed[0]["tcreated"],
            "visibility": "public",
            "videos": [{"svid": video["svid"], "duration": 3.0, "fid": video["fid"], "url": video["url"]}],
        }
    ]
    full = (await api.get("/api/files/collections", params={"metadata": "full"})).json()
    assert "tadded" in full[0]["videos"][0]
    detail = (await api.get(f"/api/files/collections/{scid}")).json()
    assert (detail["name"], detail["own"], detail["visibility"]) == ("My Public Collection", True, "public")
    entry = detail["videos"][0]
    assert set(entry) == {
        "svid",
        "description",
        "duration",
        "fid",
        "filename",
        "ingesting",
        "size",
        "tadded",
        "tcreated",
        "title",
        "url",
        "views",
        "visibility",
        "width",
        "height",
    }
    removed = await api.delete(f"/api/files/collections/{scid}/{video['svid']}")
    assert removed.json() == {"status": "success"}
    assert (await api.get(f"/api/files/collections/{scid}")).json()["videos"] == []
    assert (await api.delete(f"/api/files/collections/{scid}/{video['svid']}")).status_code == 404
    assert (await api.delete(f"/api/files/collections/{scid}")).json() == {"status": "success"}
    assert (await api.get(f"/api/files/collections/{scid}")).status_code == 404


async def test_collection_errors_and_upload_into_a_collection(api: httpx2.AsyncClient) -> None:
    assert (await api.post("/api/files/collections", json={})).json() == {"error": "name_not_provided"}
    bad = await api.post("/api/files/collections", json={"name": "x", "visibility": "open"})
    assert bad.json() == {"error": "invalid_visibility"}
    scid = (await api.post("/api/files/collections", json={"name": "x"})).json()["scid"]
    assert (await api.post(f"/api/files/collections/{scid}/add", json={})).json() == {
        "error": "svid_not_provided"
    }
    unknown = await api.post(f"/api/files/collections/{scid}/add", json={"svid": "zzzzzzz"})
    assert unknown.status_code == 404
    video = await upload(api, "a.wav", SPEECH_WAV, collection=scid)
    assert [v["svid"] for v in (await api.get(f"/api/files/collections/{scid}")).json()["videos"]] == [
        video["svid"]
    ]
    missing = await api.post(
        "/api/files/upload", files={"file": ("b.wav", b"x")}, data={"collection": "nope123"}
    )
    assert missing.status_code == 404


# --- visibility and keyless endpoints -------------------------------------------------------------------


async def test_private_videos_are_invisible_without_a_key_and_unlisted_ones_reachable_by_id(
    api: httpx2.AsyncClient, anon: httpx2.AsyncClient
) -> None:
    video = await upload(api, "a.wav", SPEECH_WAV)
    for path in (
        f"/api/files/videos/{video['svid']}",
        f"/api/files/info/{video['svid']}",
        f"/api/files/i/speech/{video['svid']}",
    ):
        assert (await anon.get(path)).status_code == 404, path
        assert (await api.get(path)).status_code == 200, path
    # Data URLs are CDN capability URLs: the 64-hex fid is the secret, no Key is involved.
    for path in (f"/w/{video['fid']}/data", f"/w/{video['fid']}/thumbnails/thumbnail.jpg"):
        assert (await anon.get(path)).status_code == 200, path
    await set_video(api, video["fid"], visibility="unlisted")
    got = await anon.get(f"/api/files/videos/{video['svid']}")
    assert got.status_code == 200
    assert got.json()["own"] is False
    assert (await anon.get(f"/w/{video['fid']}/data")).content == SPEECH_WAV
    info = (await anon.get(f"/api/files/info/{video['svid']}")).json()
    assert (info["url"], info["width"], info["height"]) == (video["url"], 0, 0)
    speech = (await anon.get(f"/api/files/i/speech/{video['svid']}")).json()
    assert speech == [[0.0, 1.0, "echo"], [1.5, 2.5, "charlie"]]


async def test_public_search_endpoints_only_see_public_items(
    api: httpx2.AsyncClient, anon: httpx2.AsyncClient, emulator: MuseaiEmulator
) -> None:
    public = await upload(api, "public_moon.wav", SPEECH_WAV, visibility="public")
    unlisted = await upload(api, "unlisted_moon.mp4", mp4_bytes("u"), visibility="unlisted")
    private = await upload(api, "private_moon.mp4", mp4_bytes("p"))
    channel = f"/api/search/channel/{emulator.channel_id}"
    assert await search(anon, "n:moon", channel) == [[public["svid"], [0.0]]]
    assert (await anon.get("/api/search/channel/zzzzzzz", params={"q": "moon"})).status_code == 404
    assert await search(anon, "n:moon", f"/api/search/video/{unlisted['svid']}") == [
        [unlisted["svid"], [0.0]]
    ]
    assert (await anon.get(f"/api/search/video/{private['svid']}", params={"q": "moon"})).status_code == 404
    scid = (await api.post("/api/files/collections", json={"name": "C", "visibility": "public"})).json()[
        "scid"
    ]
    for video in (public, unlisted, private):
        await api.post(f"/api/files/collections/{scid}/add", json={"svid": video["svid"]})
    found = await search(anon, "n:moon", f"/api/search/collection/{scid}")
    assert sorted(svid for svid, _times in found) == sorted([public["svid"], unlisted["svid"]])
    hidden = (await api.post("/api/files/collections", json={"name": "H"})).json()["scid"]
    assert (await anon.get(f"/api/search/collection/{hidden}", params={"q": "moon"})).status_code == 404
    # The owner's search sees everything.
    owned = await search(api, "n:moon")
    assert len(owned) == 3


# --- search ---------------------------------------------------------------------------------------------


async def test_search_finds_title_description_and_speech_with_their_times(api: httpx2.AsyncClient) -> None:
    video = await upload(api, "Moon_Landing.wav", SPEECH_WAV)
    await set_video(api, video["fid"], description="Apollo mission footage")
    svid = video["svid"]
    assert await search(api, "n:moon") == [[svid, [0.0]]]
    assert await search(api, "title:landing") == [[svid, [0.0]]]
    assert await search(api, "d:apollo") == [[svid, [0.0]]]
    assert await search(api, "s:charlie") == [[svid, [1.5]]]
    assert await search(api, "s:echo") == [[svid, [0.0]]]
    assert await search(api, "charlie n:moon") == [[svid, [0.0, 1.5]]]
    assert await search(api, "s:moon") == []
    assert await search(api, "n:apollo") == []
    assert await search(api, "o:car") == []
    assert await search(api, "z:silence") == [[svid, [1.0, 2.5]]]
    missing = await api.get("/api/search")
    assert (missing.status_code, missing.json()) == (400, {"error": "q_not_provided"})


async def test_speech_of_uploads_comes_from_a_transcript_sidecar_when_given(api: httpx2.AsyncClient) -> None:
    video = await upload(api, "speech.mp4", mp4_bytes("jfk", duration_s=5.0))
    await set_video(api, video["fid"], description="transcript: we choose to go to the moon in this decade")
    # Ten words over 5 s: half a second each.
    assert await search(api, "s:moon") == [[video["svid"], [3.0]]]
    assert await search(api, 's:"the moon"') == [[video["svid"], [2.5]]]
    assert await search(api, 's:"moon the"') == []
    speech = (await api.get(f"/api/files/i/speech/{video['svid']}")).json()
    assert speech[0] == [0.0, 0.5, "we"]
    assert len(speech) == 10


async def test_search_ranks_by_number_of_hits_and_skips_ingesting_videos(
    api: httpx2.AsyncClient, now: FakeNow
) -> None:
    one = await upload(api, "one.mp4", mp4_bytes("1", duration_s=4.0))
    two = await upload(api, "two.mp4", mp4_bytes("2", duration_s=4.0))
    await set_video(api, one["fid"], description="transcript: go home")
    await set_video(api, two["fid"], description="transcript: go go")
    assert await search(api, "s:go") == [[two["svid"], [0.0, 2.0]], [one["svid"], [0.0]]]
    cut = (
        await api.post(
            "/api/files/cut", files={"svid": (None, two["svid"]), "start": (None, "0"), "end": (None, "2")}
        )
    ).json()
    assert cut["svid"] not in [svid for svid, _ in await search(api, "s:go")]
    now.advance(JOB_SECONDS)
    assert cut["svid"] in [svid for svid, _ in await search(api, "s:go")]


async def test_sound_search_finds_music(api: httpx2.AsyncClient) -> None:
    video = await upload(api, "jingle.wav", wav_sequence_bytes([(0.5, None), (1.0, 1500.0)]))
    assert await search(api, "z:music") == [[video["svid"], [0.5]]]
    assert await search(api, "z:speech") == []


# --- AI jobs --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", JOB_KINDS)
async def test_every_ai_job_without_a_file_is_400_file_not_provided(
    jobs: httpx2.AsyncClient, kind: str
) -> None:
    response = await jobs.post(f"/{kind}", data={"phrase": "hello"})
    assert (response.status_code, response.json()) == (400, {"error": "file_not_provided"})


async def test_align_without_a_phrase_is_400(jobs: httpx2.AsyncClient) -> None:
    response = await jobs.post("/align", files={"file": ("a.wav", SPEECH_WAV)})
    assert (response.status_code, response.json()) == (400, {"error": "phrase_not_provided"})


async def test_job_is_pending_until_job_seconds_pass_then_done(
    jobs: httpx2.AsyncClient, now: FakeNow, emulator: MuseaiEmulator
) -> None:
    job_id = await submit(jobs, "speech", "input.wav", SPEECH_WAV)
    assert (await jobs.get(f"/speech/{job_id}")).json() == {"status": "pending"}
    now.advance(JOB_SECONDS - 0.01)
    assert (await jobs.get(f"/speech/{job_id}")).json() == {"status": "pending"}
    now.advance(0.01)
    assert (await jobs.get(f"/speech/{job_id}")).json() == {"status": "done", "transcript": "echo charlie"}
    assert emulator.polls[job_id] == 3
    assert emulator.jobs_created == 1


async def test_speech_words_are_predictable_from_the_tone_pitch() -> None:
    assert pitch_word(440.0) == "echo" == SPEECH_WORDS[4]
    assert pitch_word(250.0) == "charlie"


async def test_speech_job_uses_the_sidecar_transcript_of_an_uploaded_file(
    api: httpx2.AsyncClient, jobs: httpx2.AsyncClient, now: FakeNow
) -> None:
    data = mp4_bytes("moon", duration_s=5.0)
    video = await upload(api, "moon.mp4", data)
    await set_video(api, video["fid"], title="transcript: we choose to go to the moon")
    result = await run_job(jobs, now, "speech", "again.mp4", data)
    assert result["transcript"] == "we choose to go to the moon"


async def test_align_spreads_the_phrase_over_the_voiced_audio(jobs: httpx2.AsyncClient, now: FakeNow) -> None:
    result = await run_job(jobs, now, "align", "input.wav", SPEECH_WAV, phrase="All men are created equal.")
    words = result["words"]
    assert [w[2] for w in words] == ["All", "men", "are", "created", "equal"]
    assert words[0][0] == 0.0
    assert words[-1][1] == 2.5
    for (s1, e1, _), (s2, _e2, _) in itertools.pairwise(words):
        assert s1 < e1 == s2


async def test_sounds_segments_match_a_tone_then_silence(jobs: httpx2.AsyncClient, now: FakeNow) -> None:
    result = await run_job(jobs, now, "sounds", "input.wav", TONE_THEN_SILENCE)
    assert result == {
        "status": "done",
        "sounds": {
            "speech": [[0.0, 1.0]],
            "music": [],
            "silence": [[1.0, 2.0]],
            "laughter": [],
            "applause": [],
        },
    }


async def test_colors_come_from_the_real_pixels(jobs: httpx2.AsyncClient, now: FakeNow) -> None:
    seed_rgb = color_for("sunset")
    expected_name = classify_color(*seed_rgb)
    result = await run_job(jobs, now, "colors", "input.png", png_bytes(16, 16, seed_rgb))
    assert set(result["colors"]) == set(COLOR_NAMES)
    assert result["colors"][expected_name] == 1.0
    assert sum(result["colors"].values()) == 1.0
    blue = await run_job(jobs, now, "colors", "blue.png", png_bytes(8, 8, (30, 60, 220)))
    assert blue["colors"]["blue"] == 1.0
    stripes = png_stripes_bytes(40, 10, [(220, 30, 30), (255, 255, 255), (0, 0, 0), (30, 160, 40)])
    mixed = (await run_job(jobs, now, "colors", "mixed.png", stripes))["colors"]
    assert (mixed["red"], mixed["white"], mixed["black"], mixed["green"]) == (0.25, 0.25, 0.25, 0.25)


async def test_colors_reject_anything_but_a_supported_png(
    jobs: httpx2.AsyncClient, emulator: MuseaiEmulator
) -> None:
    for name, data in (("photo.jpg", b"\xff\xd8\xff\xe0" + b"0" * 100), ("a.wav", SPEECH_WAV)):
        response = await jobs.post("/colors", files={"file": (name, data)})
        assert (response.status_code, response.json()) == (400, {"error": "unsupported_file"})
    assert emulator.jobs_created == 0


async def test_faces_result_shape_and_faces_database(jobs: httpx2.AsyncClient, now: FakeNow) -> None:
    video = mp4_bytes("crowd", duration_s=10.0)
    result = await run_job(jobs, now, "faces", "input.mp4", video)
    clusters = result["faces"]
    assert clusters
    for cluster, entry in clusters.items():
        assert re.fullmatch(r"[0-9a-f]{32}", cluster)
        assert entry["label"] is None
        for face_id, face in entry["faces"].items():
            assert re.fullmatch(r"[0-9a-f]{64}", face_id)
            assert list(face) == ["s", "e", "x", "y", "w", "h", "q"]
            assert 0 <= face["s"] <= face["e"] <= 10.0
            assert_box({k: face[k] for k in "xywhq"})
    db = (await jobs.get("/faces/db")).json()
    assert set(db) == {"detected", "deleted", "ignored"}
    assert set(db["detected"]) == set(clusters)
    cluster = next(iter(clusters))
    face_id = next(iter(clusters[cluster]["faces"]))
    moment = db["detected"][cluster]["faces"][face_id]["moment"]
    assert moment == {"f": hashlib.sha256(video).hexdigest(), **clusters[cluster]["faces"][face_id]}
    # Label the cluster through one of its faces, then delete that face.
    modified = await jobs.post("/faces/modify", json={face_id: {"label": "Jenny", "delete": False}})
    assert modified.json() == {"status": "ok"}
    assert (await jobs.get("/faces/db")).json()["detected"][cluster]["label"] == "Jenny"
    again = await run_job(jobs, now, "faces", "again.mp4", video)
    assert again["faces"][cluster]["label"] == "Jenny"
    await jobs.post("/faces/modify", json={face_id: {"delete": True}})
    db = (await jobs.get("/faces/db")).json()
    assert db["deleted"][face_id]["moment"] == moment
    assert face_id not in db["detected"].get(cluster, {}).get("faces", {})
    await jobs.post("/faces/modify", json={face_id: {"purge": True}})
    assert face_id not in (await jobs.get("/faces/db")).json()["deleted"]
    unknown = await jobs.post("/faces/modify", json={"0" * 64: {"ignore": True}})
    assert (unknown.status_code, unknown.json()) == (404, {"error": "not_found"})
    python_literal = await jobs.post(
        "/faces/modify", content=b'{"%s": {"label": "Jenny", "delete": False}}' % face_id.encode()
    )
    assert python_literal.json() == {"error": "invalid_json"}


async def test_faces_ignore_moves_a_whole_cluster(jobs: httpx2.AsyncClient, now: FakeNow) -> None:
    result = await run_job(jobs, now, "faces", "input.mp4", mp4_bytes("two", duration_s=10.0))
    cluster = next(iter(result["faces"]))
    await jobs.post("/faces/modify", json={cluster: {"ignore": True}})
    db = (await jobs.get("/faces/db")).json()
    assert cluster not in db["detected"]
    assert set(db["ignored"]) >= set(result["faces"][cluster]["faces"])


async def test_objects_and_text_results_are_labelled_boxes(jobs: httpx2.AsyncClient, now: FakeNow) -> None:
    image = png_bytes(32, 32, (10, 200, 10))
    for kind in ("objects", "text"):
        result = await run_job(jobs, now, kind, "input.png", image)
        assert set(result) == {"status", kind}
        assert result[kind]
        for label, boxes in result[kind].items():
            assert isinstance(label, str) and label
            assert boxes
            for box in boxes:
                assert_box(box)
        # Deterministic: the same file gives the same answer.
        assert await run_job(jobs, now, kind, "copy.png", image) == result


async def test_fail_marker_in_the_file_name_ends_the_job_in_error(
    jobs: httpx2.AsyncClient, now: FakeNow
) -> None:
    job_id = await submit(jobs, "speech", "clip [fail].wav", SPEECH_WAV)
    now.advance(JOB_SECONDS)
    assert (await jobs.get(f"/speech/{job_id}")).json() == {"status": "error", "error": "job_failed"}


async def test_results_vanish_an_hour_after_completion(jobs: httpx2.AsyncClient, now: FakeNow) -> None:
    job_id = await submit(jobs, "sounds", "input.wav", TONE_THEN_SILENCE)
    now.advance(JOB_SECONDS + 3599)
    assert (await jobs.get(f"/sounds/{job_id}")).json()["status"] == "done"
    now.advance(1)
    gone = await jobs.get(f"/sounds/{job_id}")
    assert (gone.status_code, gone.json()) == (404, {"error": "not_found"})


async def test_unknown_jobs_and_job_types_are_404(jobs: httpx2.AsyncClient) -> None:
    job_id = await submit(jobs, "speech", "input.wav", SPEECH_WAV)
    assert (await jobs.get(f"/colors/{job_id}")).status_code == 404
    assert (await jobs.get(f"/speech/{'0' * 64}")).status_code == 404
    assert (await jobs.post("/scenes", files={"file": ("a.mp4", b"x")})).status_code == 404


async def test_jobs_host_also_routes_the_files_api(
    jobs: httpx2.AsyncClient, emulator: MuseaiEmulator
) -> None:
    response = await jobs.post("/api/files/upload", files={"file": ("a.wav", SPEECH_WAV)})
    assert response.status_code == 200
    assert response.json()["url"].startswith(f"{ORIGIN}/w/")
    assert ("POST", "jobs:/api/files/upload") in emulator.requests


# --- faults and the request log -------------------------------------------------------------------------


async def test_faults_apply_to_both_hosts_and_every_request_is_logged(
    api: httpx2.AsyncClient, jobs: httpx2.AsyncClient, emulator: MuseaiEmulator
) -> None:
    emulator.faults.add(method="GET", path=r"^/api/files/videos$", kind="status", status=429, retry_after="2")
    emulator.faults.add(method="POST", path=r"^/speech$", kind="status", status=503, after_handler=True)
    limited = await api.get("/api/files/videos")
    assert (limited.status_code, limited.headers["retry-after"]) == (429, "2")
    lost = await jobs.post("/speech", files={"file": ("a.wav", SPEECH_WAV)})
    assert lost.status_code == 503
    assert emulator.jobs_created == 1  # the handler ran; only the answer was lost
    assert (await api.get("/api/files/videos")).status_code == 200
    assert emulator.requests == [
        ("GET", "/api/files/videos"),
        ("POST", "jobs:/speech"),
        ("GET", "/api/files/videos"),
    ]


# --- real HTTP ------------------------------------------------------------------------------------------


@pytest.mark.loopback
async def test_multipart_upload_and_job_over_loopback(now: FakeNow) -> None:
    emulator = MuseaiEmulator(now=now, job_seconds=0.0)
    payload = bytes(range(256)) * 8000  # ~2 MB: larger than Starlette's in-memory spool threshold
    try:
        with anyio.fail_after(15):
            async with (
                serve_on_loopback(emulator.app) as url,
                serve_on_loopback(emulator.jobs_app) as jobs_url,
            ):
                emulator.base_url, emulator.jobs_base_url = url, jobs_url
                async with httpx2.AsyncClient(headers={"Key": KEY}) as c:
                    response = await c.post(
                        f"{url}/api/files/upload",
                        files={"file": ("big clip.mp4", payload, "video/mp4")},
                        data={"visibility": "public"},
                    )
                    assert response.status_code == 200, response.text
                    video = response.json()
                    assert video["fid"] == hashlib.sha256(payload).hexdigest()
                    assert video["url"] == f"{url}/w/{video['fid']}/data"
                    async with httpx2.AsyncClient() as keyless:
                        fetched = await keyless.get(video["url"])
                    assert fetched.content == payload
                    job = await c.post(f"{jobs_url}/sounds", files={"file": ("t.wav", TONE_THEN_SILENCE)})
                    done = await c.get(f"{jobs_url}/sounds/{job.json()['id']}")
                    assert done.json()["sounds"]["silence"] == [[1.0, 2.0]]
    finally:
        emulator.close()


def test_close_removes_stored_files(now: FakeNow) -> None:
    emulator = MuseaiEmulator(now=now)
    root = emulator._root
    assert root.exists()
    emulator.close()
    assert not root.exists()


# --- media helpers --------------------------------------------------------------------------------------


def _filtered_png(rows: list[bytes], width: int, filters: list[int]) -> bytes:
    """An RGB PNG whose scanlines use the given filter types (the reference encoder for png_decode)."""
    bpp = 3
    out = b""
    prev = bytes(width * bpp)
    for row, kind in zip(rows, filters, strict=True):
        enc = bytearray()
        for i, value in enumerate(row):
            a = row[i - bpp] if i >= bpp else 0
            b = prev[i]
            c = prev[i - bpp] if i >= bpp else 0
            if kind == 0:
                pred = 0
            elif kind == 1:
                pred = a
            elif kind == 2:
                pred = b
            elif kind == 3:
                pred = (a + b) >> 1
            else:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
            enc.append((value - pred) & 0xFF)
        out += bytes([kind]) + bytes(enc)
        prev = row

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return (
            struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))
        )

    ihdr = struct.pack(">IIBBBBB", width, len(rows), 8, 2, 0, 0, 0)
    return PNG_SIGNATURE + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(out)) + chunk(b"IEND", b"")


def test_png_decode_undoes_every_filter_type() -> None:
    width = 5
    rows = [bytes((x * 37 + y * 91 + c * 13) % 256 for x in range(width) for c in range(3)) for y in range(5)]
    image = png_decode(_filtered_png(rows, width, [0, 1, 2, 3, 4]))
    assert (image.width, image.height, image.channels) == (5, 5, 3)
    assert list(image.rows) == rows
    assert image.rgba(1, 2) == (*rows[2][3:6], 255)


def test_png_decode_rejects_unsupported_images() -> None:
    sixteen_bit = bytearray(png_bytes(2, 2))
    sixteen_bit[24] = 16  # bit depth
    with pytest.raises(ValueError, match="8-bit"):
        png_decode(bytes(sixteen_bit))
    with pytest.raises(ValueError, match="not a PNG"):
        png_decode(b"GIF89a")


def test_wav_helpers_round_trip_samples_and_durations() -> None:
    data = wav_from_samples([0, 1000, -1000, 32767], 8000)
    rate, samples = wav_samples(data)
    assert (rate, list(samples)) == (8000, [0, 1000, -1000, 32767])
    info = wav_header(SPEECH_WAV)
    assert (info.sample_rate, info.channels, info.bits_per_sample) == (16_000, 1, 16)
    assert info.duration_s == 3.0
    with pytest.raises(ValueError, match="not a RIFF/WAVE"):
        wav_header(b"RIFF\x00\x00\x00\x00AVI ")


def test_mp4_duration_reads_mvhd() -> None:
    assert mp4_duration(mp4_bytes("x", duration_s=12.25)) == 12.25
    assert mp4_duration(b"not an mp4") is None


def test_classify_color_covers_the_documented_names() -> None:
    samples = {
        (0, 0, 0): "black",
        (255, 255, 255): "white",
        (128, 128, 128): "grey",
        (220, 30, 30): "red",
        (255, 165, 0): "orange",
        (139, 69, 19): "brown",
        (255, 255, 0): "yellow",
        (0, 128, 0): "green",
        (30, 60, 220): "blue",
        (128, 0, 128): "purple",
        (255, 192, 203): "pink",
    }
    assert {classify_color(*rgb) for rgb in samples} == set(COLOR_NAMES)
    for rgb, name in samples.items():
        assert classify_color(*rgb) == name, rgb
