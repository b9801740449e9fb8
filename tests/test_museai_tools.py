"""Every muse.ai tool and resource through the real server and the in-memory MCP client.

Tool behaviour is checked in one protocol era; progress, cancellation, resources and change
notifications are marked ``both_eras``.

The emulator (``mediamux.sandbox.museai``) derives its answers from the real bytes it is sent: a 440 Hz
tone "says" echo, colours come from a PNG's pixels, silence from a WAV's energy. So the files below are
generated with chosen content, and the expected results follow from that content.
"""

from __future__ import annotations

import itertools
import json
import stat
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
from anyio.abc import TaskGroup, TaskStatus
from mcp import Client, MCPError
from mcp.client.subscriptions import ResourcesListChanged, ResourceUpdated
from mcp.shared.exceptions import MCPDeprecationWarning
from mcp_types import ResourceListChangedNotification, ResourceUpdatedNotification, TextResourceContents

from mediamux.clock import FakeClock
from mediamux.providers.errors import NotFound
from mediamux.providers.museai import MuseaiClient
from mediamux.sandbox import Sandbox
from mediamux.sandbox.media import mp4_bytes, png_bytes, png_stripes_bytes, wav_sequence_bytes
from mediamux.server.app import MediamuxServer
from tests.support import eventually

pytestmark = pytest.mark.providers("museai")

# "echo" (440 Hz) for 1 s, half a second of silence, "charlie" (250 Hz) for 1 s, half a second of silence.
SPEECH_WAV = wav_sequence_bytes([(1.0, 440.0), (0.5, None), (1.0, 250.0), (0.5, None)])
TONE_THEN_SILENCE = wav_sequence_bytes([(1.0, 440.0), (1.0, None)])
# Six spoken words over 5.4 s: too long for one cue, so the subtitles need several.
SIX_WORDS = ("bravo", "charlie", "delta", "echo", "foxtrot", "golf")
SIX_WORDS_WAV = wav_sequence_bytes(
    [part for f in (150, 250, 350, 450, 550, 650) for part in ((0.6, f), (0.3, None))]
)
RED, BLUE = (220, 20, 20), (20, 40, 220)
VTT = "WEBVTT\n\n1\n00:00:00.000 --> 00:00:01.000\nhello there\n"


@pytest.fixture
async def served(
    make_server: Callable[..., MediamuxServer], era: str
) -> AsyncIterator[tuple[MediamuxServer, Client]]:
    """The server object too, for tests that talk to the provider client directly."""
    server = make_server()
    async with Client(server, mode=era) as c:
        yield server, c


# -- helpers -------------------------------------------------------------------------------------


async def call(client: Client, name: str, args: dict[str, Any] | None = None, **kw: Any) -> Any:
    with anyio.fail_after(30):
        return await client.call_tool(name, args or {}, **kw)


async def ok(client: Client, name: str, args: dict[str, Any] | None = None, **kw: Any) -> dict[str, Any]:
    result = await call(client, name, args, **kw)
    assert not result.is_error, text(result)
    return dict(result.structured_content)


def text(result: Any) -> str:
    return "\n".join(getattr(b, "text", "") for b in result.content)


def error_class(result: Any) -> str:
    return str(result.meta["mediamux/error"]["class"])


def put(files_dir: Path, name: str, data: bytes | str) -> str:
    path = files_dir / name
    if isinstance(data, str):
        path.write_text(data, encoding="utf-8")
    else:
        path.write_bytes(data)
    return name


async def upload(
    client: Client, files_dir: Path, name: str = "talk.wav", data: bytes = SPEECH_WAV, **args: Any
) -> dict[str, Any]:
    return await ok(client, "museai_upload_video", {"path": put(files_dir, name, data), **args})


async def read_json(client: Client, uri: str) -> Any:
    with anyio.fail_after(10):
        read = await client.read_resource(uri)
    content = read.contents[0]
    assert isinstance(content, TextResourceContents) and content.mime_type == "application/json"
    return json.loads(content.text)


def posts(sandbox: Sandbox) -> list[str]:
    return [path for method, path in sandbox.museai.requests if method == "POST"]


# -- videos --------------------------------------------------------------------------------------


@pytest.mark.both_eras
async def test_upload_streams_the_file_sets_the_title_and_sends_visibility_only_when_given(
    client: Client, sandbox: Sandbox, files_dir: Path
) -> None:
    # If the tool sent a visibility of its own, this emulator-side default would not show through.
    sandbox.museai.default_visibility = "unlisted"
    progress: list[tuple[float, float | None]] = []

    async def on_progress(value: float, total: float | None, message: str | None) -> None:
        progress.append((value, total))

    titled = await ok(
        client,
        "museai_upload_video",
        {"path": put(files_dir, "launch_talk.wav", SPEECH_WAV), "title": "Launch talk"},
        progress_callback=on_progress,
    )

    assert titled["title"] == "Launch talk"
    assert sandbox.museai.videos[titled["svid"]].title == "Launch talk"
    assert titled["visibility"] == "unlisted"  # muse.ai's own default: no visibility field was sent
    assert titled["ingesting"] is False and titled["duration"] == pytest.approx(3.0)
    assert posts(sandbox) == ["/api/files/upload", f"/api/files/set/{titled['fid']}"]
    # Byte progress over the multipart body (the file plus its part headers), ending at its total.
    assert progress and progress[-1][0] == progress[-1][1]
    assert len(SPEECH_WAV) < (progress[-1][1] or 0) < len(SPEECH_WAV) + 1024

    public = await upload(client, files_dir, "clip.wav", TONE_THEN_SILENCE, visibility="public")

    assert public["visibility"] == "public"
    assert public["title"] == "clip"  # the emulator's title from the file name; no title update sent
    assert posts(sandbox)[2:] == ["/api/files/upload"]
    assert sandbox.museai.uploads == 2


async def test_videos_can_be_listed_read_updated_and_deleted(
    client: Client, sandbox: Sandbox, files_dir: Path
) -> None:
    video = await upload(client, files_dir)
    other = await upload(client, files_dir, "other.wav", TONE_THEN_SILENCE)

    listed = await ok(client, "museai_list_videos")
    assert {v["svid"] for v in listed["videos"]} == {video["svid"], other["svid"]}

    got = await ok(client, "museai_get_video", {"svid": video["svid"]})
    assert got["fid"] == video["fid"] and got["title"] == "talk" and got["url"].endswith("/data")

    changed = await ok(
        client,
        "museai_update_video",
        {"fid": video["fid"], "description": "The launch", "domains": ["example.com"]},
    )
    assert changed["changed"] == {"description": "The launch", "domains": ["example.com"]}
    stored = sandbox.museai.videos[video["svid"]]
    assert stored.description == "The launch" and stored.domains == ["example.com"]
    assert stored.title == "talk" and stored.visibility == "private"  # untouched fields are not sent

    deleted = await ok(client, "museai_delete_video", {"fid": other["fid"]})
    assert deleted == {"deleted": other["fid"]}
    gone = await call(client, "museai_get_video", {"svid": other["svid"]})
    assert gone.is_error and error_class(gone) == "not_found"
    assert [v["svid"] for v in (await ok(client, "museai_list_videos"))["videos"]] == [video["svid"]]


async def test_update_with_nothing_to_change_is_refused_before_any_call(
    client: Client, sandbox: Sandbox, files_dir: Path
) -> None:
    video = await upload(client, files_dir)
    before = list(sandbox.museai.requests)

    result = await call(client, "museai_update_video", {"fid": video["fid"]})

    assert result.is_error and error_class(result) == "invalid_input"
    assert "nothing to change" in text(result)
    assert sandbox.museai.requests == before


async def test_cut_clip_ingests_and_wait_ready_returns_it_ready(
    client: Client, sandbox: Sandbox, files_dir: Path
) -> None:
    source = await upload(client, files_dir)

    clip = await ok(
        client, "museai_cut_clip", {"svid": source["svid"], "start": 1.5, "end": 2.5, "wait_ready": True}
    )

    assert clip["ingesting"] is False
    assert clip["svid"] != source["svid"] and clip["cut_svid"] == source["svid"]
    assert clip["duration"] == pytest.approx(1.0)
    assert posts(sandbox)[-1] == "/api/files/cut"
    # The clip really is the cut audio: its only word is the second tone's.
    found = await ok(client, "museai_search", {"query": "s:charlie"})
    assert {h["svid"] for h in found["hits"]} == {source["svid"], clip["svid"]}


async def test_cut_clip_with_bad_times_fails_clearly_and_sends_no_cut(
    client: Client, sandbox: Sandbox, files_dir: Path
) -> None:
    source = await upload(client, files_dir)
    before = list(sandbox.museai.requests)

    backwards = await call(client, "museai_cut_clip", {"svid": source["svid"], "start": 2, "end": 1})
    assert backwards.is_error and error_class(backwards) == "invalid_input"
    assert "must be after start" in text(backwards)
    assert sandbox.museai.requests == before  # refused without any call at all

    past_end = await call(client, "museai_cut_clip", {"svid": source["svid"], "start": 1, "end": 9})
    assert past_end.is_error and error_class(past_end) == "invalid_input"
    assert "past the end" in text(past_end) and "3 s" in text(past_end)
    assert ("POST", "/api/files/cut") not in sandbox.museai.requests
    assert len(sandbox.museai.videos) == 1


async def test_cover_is_set_from_a_frame_time_or_a_local_image_and_exactly_one_is_required(
    client: Client, sandbox: Sandbox, files_dir: Path
) -> None:
    video = await upload(client, files_dir)
    put(files_dir, "cover.png", png_bytes(32, 18, RED))

    by_time = await ok(client, "museai_set_cover", {"fid": video["fid"], "time": 1.5})
    assert by_time["source"] == "frame at 1.5 s"
    assert sandbox.museai.videos[video["svid"]].cover_t == 1.5

    by_image = await ok(client, "museai_set_cover", {"fid": video["fid"], "image_path": "cover.png"})
    assert by_image["source"] == "cover.png"
    stored = sandbox.museai.videos[video["svid"]]
    assert stored.cover_path is not None and stored.cover_path.read_bytes() == png_bytes(32, 18, RED)

    before = list(sandbox.museai.requests)
    both = await call(client, "museai_set_cover", {"fid": video["fid"], "time": 1, "image_path": "cover.png"})
    neither = await call(client, "museai_set_cover", {"fid": video["fid"]})
    for result in (both, neither):
        assert result.is_error and error_class(result) == "invalid_input"
        assert "time, image_path: give exactly one of them" in text(result)
    assert sandbox.museai.requests == before


# -- subtitles -----------------------------------------------------------------------------------


async def test_subtitles_upload_list_read_rename_and_delete(
    client: Client, sandbox: Sandbox, files_dir: Path
) -> None:
    video = await upload(client, files_dir)
    svid = video["svid"]

    added = await ok(
        client,
        "museai_upload_subtitles",
        {"svid": svid, "path": put(files_dir, "en.vtt", VTT), "name": "English"},
    )
    sub_id = added["subtitle_id"]
    assert added == {"svid": svid, "subtitle_id": sub_id, "name": "English"}

    listed = await ok(client, "museai_list_subtitles", {"svid": svid})
    assert listed["tracks"] == [{"svid": svid, "subtitle_id": sub_id, "name": "English"}]

    got = await ok(client, "museai_get_subtitles", {"svid": svid, "subtitle_id": sub_id})
    assert got["vtt"] == VTT

    renamed = await ok(
        client, "museai_rename_subtitles", {"svid": svid, "subtitle_id": sub_id, "name": "British"}
    )
    assert renamed["name"] == "British"
    assert sandbox.museai.videos[svid].subtitles[sub_id].name == "British"

    await ok(client, "museai_delete_subtitles", {"svid": svid, "subtitle_id": sub_id})
    assert (await ok(client, "museai_list_subtitles", {"svid": svid}))["tracks"] == []
    again = await call(client, "museai_get_subtitles", {"svid": svid, "subtitle_id": sub_id})
    assert again.is_error and error_class(again) == "not_found"


# -- collections ---------------------------------------------------------------------------------


async def test_collections_create_list_get_add_remove_and_delete(
    client: Client, sandbox: Sandbox, files_dir: Path
) -> None:
    created = await ok(client, "museai_create_collection", {"name": "Talks", "visibility": "unlisted"})
    scid = created["scid"]
    assert created == {"scid": scid, "name": "Talks", "visibility": "unlisted"}
    # An upload straight into the collection, and one added afterwards.
    first = await upload(client, files_dir, collection=scid)
    second = await upload(client, files_dir, "second.wav", TONE_THEN_SILENCE)

    added = await ok(client, "museai_add_to_collection", {"scid": scid, "svid": second["svid"]})
    assert added == {"scid": scid, "svid": second["svid"], "member": True}

    listed = await ok(client, "museai_list_collections")
    assert [(c["scid"], c["name"], c["visibility"]) for c in listed["collections"]] == [
        (scid, "Talks", "unlisted")
    ]
    got = await ok(client, "museai_get_collection", {"scid": scid})
    assert got["name"] == "Talks"
    assert [v["svid"] for v in got["videos"]] == [first["svid"], second["svid"]]

    removed = await ok(client, "museai_remove_from_collection", {"scid": scid, "svid": first["svid"]})
    assert removed["member"] is False
    got = await ok(client, "museai_get_collection", {"scid": scid})
    assert [v["svid"] for v in got["videos"]] == [second["svid"]]
    assert first["svid"] in sandbox.museai.videos  # the video itself stays

    await ok(client, "museai_delete_collection", {"scid": scid})
    assert (await ok(client, "museai_list_collections"))["collections"] == []
    gone = await call(client, "museai_get_collection", {"scid": scid})
    assert gone.is_error and error_class(gone) == "not_found"


# -- search --------------------------------------------------------------------------------------


async def test_search_finds_titles_and_speech_with_their_times(client: Client, files_dir: Path) -> None:
    talk = await upload(client, files_dir, "moon_landing.wav")
    await upload(client, files_dir, "other.wav", TONE_THEN_SILENCE)  # says only "echo"

    by_title = await ok(client, "museai_search", {"query": "n:moon"})
    by_speech = await ok(client, "museai_search", {"query": "s:charlie"})
    both = await ok(client, "museai_search", {"query": "s:echo"})
    nothing = await ok(client, "museai_search", {"query": "d:moon"})

    assert by_title["hits"] == [{"svid": talk["svid"], "times": [0.0]}]
    assert by_speech["hits"] == [{"svid": talk["svid"], "times": [1.5]}]
    assert len(both["hits"]) == 2 and all(h["times"] == [0.0] for h in both["hits"])
    assert by_title["scope"] == "owned" and nothing["hits"] == []


async def test_public_search_scopes_see_only_what_is_public(
    client: Client, sandbox: Sandbox, files_dir: Path
) -> None:
    public = await upload(client, files_dir, "public.wav", visibility="public")
    private = await upload(client, files_dir, "private.wav", visibility="private")
    scid = (await ok(client, "museai_create_collection", {"name": "Open", "visibility": "public"}))["scid"]
    for video in (public, private):
        await ok(client, "museai_add_to_collection", {"scid": scid, "svid": video["svid"]})
    channel = sandbox.museai.channel_id

    in_collection = await ok(
        client, "museai_search", {"query": "s:charlie", "scope": "collection", "target_id": scid}
    )
    in_channel = await ok(
        client, "museai_search", {"query": "echo", "scope": "channel", "target_id": channel}
    )
    in_video = await ok(
        client, "museai_search", {"query": "s:charlie", "scope": "video", "target_id": public["svid"]}
    )

    expected = [{"svid": public["svid"], "times": [1.5]}]
    assert in_collection["hits"] == expected and in_video["hits"] == expected
    assert in_channel["hits"] == [{"svid": public["svid"], "times": [0.0]}]
    assert ("GET", f"/api/search/collection/{scid}") in sandbox.museai.requests

    private_video = await call(
        client, "museai_search", {"query": "echo", "scope": "video", "target_id": private["svid"]}
    )
    assert private_video.is_error and error_class(private_video) == "not_found"


async def test_search_scope_without_target_id_is_refused_before_any_call(
    client: Client, sandbox: Sandbox
) -> None:
    before = list(sandbox.museai.requests)

    result = await call(client, "museai_search", {"query": "echo", "scope": "collection"})

    assert result.is_error and error_class(result) == "invalid_input"
    assert "target_id: required for scope" in text(result)
    assert sandbox.museai.requests == before


# -- AI jobs -------------------------------------------------------------------------------------


async def test_transcribe_align_and_sounds_come_from_the_audio_itself(
    client: Client, sandbox: Sandbox, files_dir: Path
) -> None:
    put(files_dir, "talk.wav", SPEECH_WAV)
    put(files_dir, "beep.wav", TONE_THEN_SILENCE)

    transcript = await ok(client, "museai_transcribe", {"path": "talk.wav"})
    aligned = await ok(client, "museai_align", {"path": "talk.wav", "phrase": "one, two three!"})
    sounds = await ok(client, "museai_detect_sounds", {"path": "beep.wav"})

    assert transcript["status"] == "completed" and transcript["provider"] == "museai"
    assert transcript["operation"] == "transcribe"
    assert transcript["result"] == {"text": "echo charlie"}
    words = aligned["result"]["words"]
    assert [w["word"] for w in words] == ["one", "two", "three"]
    assert words[0]["start"] == 0.0 and words[-1]["end"] == 2.5  # the voiced span of the file
    assert all(a["end"] <= b["start"] for a, b in itertools.pairwise(words))
    assert sounds["result"] == {
        "speech": [{"start": 0.0, "end": 1.0}],
        "music": [],
        "silence": [{"start": 1.0, "end": 2.0}],
        "laughter": [],
        "applause": [],
        "other": {},
    }
    assert posts(sandbox) == ["jobs:/speech", "jobs:/align", "jobs:/sounds"]
    assert sandbox.museai.jobs_created == 3


async def test_detect_colors_measures_the_pixels_of_the_image(
    client: Client, sandbox: Sandbox, files_dir: Path
) -> None:
    put(files_dir, "flag.png", png_stripes_bytes(40, 10, [RED, BLUE]))

    colors = await ok(client, "museai_detect_colors", {"path": "flag.png"})

    shares = colors["result"]["colors"]
    assert shares["red"] == pytest.approx(0.5) and shares["blue"] == pytest.approx(0.5)
    assert sum(v for k, v in shares.items() if k not in ("red", "blue")) == 0
    assert colors["operation"] == "detect_colors"


BOX_FILES = {
    "museai_detect_faces": ("party.mp4", mp4_bytes("party", 6.0)),
    "museai_detect_objects": ("desk.png", png_bytes(64, 48, BLUE)),
    "museai_detect_text": ("sign.png", png_bytes(64, 48, RED)),
}


async def test_faces_objects_and_text_come_back_as_boxes_with_readable_field_names(
    client: Client, sandbox: Sandbox, files_dir: Path
) -> None:
    faces, objects, words = [
        await ok(client, tool, {"path": put(files_dir, *file)}) for tool, file in BOX_FILES.items()
    ]

    assert {r["status"] for r in (faces, objects, words)} == {"completed"}
    clusters = faces["result"]["clusters"]
    assert clusters and all(c["faces"] for c in clusters)
    face_boxes = [f for c in clusters for f in c["faces"]]
    assert all(len(b["face_id"]) == 64 and 0 <= b["start"] <= b["end"] <= 6.0 for b in face_boxes)
    boxes = list(face_boxes)
    for labels in (objects["result"]["objects"], words["result"]["text"]):
        assert labels and all(labels.values())
        boxes += [b for found in labels.values() for b in found]
    for box in boxes:
        assert {"x", "y", "width", "height", "confidence"} <= set(box)
        assert not {"w", "h", "q"} & set(box)
        assert 0 < box["width"] < 1 and 0 < box["height"] < 1 and 0 < box["confidence"] <= 1
    assert posts(sandbox) == ["jobs:/faces", "jobs:/objects", "jobs:/text"]


async def test_faces_database_lists_detected_people_and_takes_labels_and_deletions(
    client: Client, sandbox: Sandbox, files_dir: Path
) -> None:
    detected = await ok(
        client, "museai_detect_faces", {"path": put(files_dir, "party.mp4", mp4_bytes("party", 6.0))}
    )
    cluster = detected["result"]["clusters"][0]
    face = cluster["faces"][0]["face_id"]

    db = await ok(client, "museai_list_faces")
    assert cluster["cluster_id"] in {c["cluster_id"] for c in db["detected"]}
    assert db["deleted"] == [] and db["ignored"] == []

    changed = await ok(
        client,
        "museai_update_faces",
        {"changes": {cluster["cluster_id"]: {"label": "Ada"}, face: {"delete": True}}},
    )
    assert changed["changed"] == [cluster["cluster_id"], face]

    db = await ok(client, "museai_list_faces")
    assert [f["face_id"] for f in db["deleted"]] == [face]
    remaining = [c for c in db["detected"] if c["cluster_id"] == cluster["cluster_id"]]
    assert all(c["label"] == "Ada" for c in remaining)
    assert face not in {f["face_id"] for c in db["detected"] for f in c["faces"]}

    before = list(sandbox.museai.requests)
    empty = await call(client, "museai_update_faces", {"changes": {face: {}}})
    assert empty.is_error and "at least one of label" in text(empty)
    assert sandbox.museai.requests == before


async def test_create_api_key_writes_a_private_file_and_never_shows_the_key(
    client: Client, sandbox: Sandbox, home: Path
) -> None:
    result = await call(client, "museai_create_api_key")

    assert not result.is_error, text(result)
    key_file = Path(result.structured_content["key_file"])
    key = key_file.read_text().strip()
    assert key in sandbox.museai.keys and key != sandbox.keys["museai"]
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert key_file.parent == home / "keys"
    assert key not in text(result) and key not in json.dumps(result.structured_content)
    assert result.structured_content["key_hint"] == "…" + key[-4:]


async def test_auto_subtitles_transcribes_aligns_and_uploads_a_vtt_track(
    client: Client, sandbox: Sandbox, files_dir: Path
) -> None:
    video = await upload(client, files_dir, "briefing.wav", SIX_WORDS_WAV)

    made = await ok(client, "museai_auto_subtitles", {"svid": video["svid"], "name": "English"})

    assert made["status"] == "completed" and made["name"] == "English"
    assert made["cues"] >= 2 and len(made["jobs"]) == 2
    vtt = made["vtt"]
    assert vtt.startswith("WEBVTT\n") and vtt.count(" --> ") == made["cues"]
    assert " ".join(
        line for line in vtt.splitlines() if line and line[0].isalpha() and line != "WEBVTT"
    ) == " ".join(SIX_WORDS)
    assert Path(made["vtt_path"]).read_text(encoding="utf-8") == vtt
    tracks = await ok(client, "museai_list_subtitles", {"svid": video["svid"]})
    assert tracks["tracks"] == [
        {"svid": video["svid"], "subtitle_id": made["subtitle_id"], "name": "English"}
    ]
    stored = await ok(
        client, "museai_get_subtitles", {"svid": video["svid"], "subtitle_id": made["subtitle_id"]}
    )
    assert stored["vtt"] == vtt
    assert sandbox.museai.jobs_created == 2


async def test_auto_subtitles_called_again_after_running_resumes_the_same_jobs(
    client: Client, sandbox: Sandbox, files_dir: Path
) -> None:
    video = await upload(client, files_dir)
    sandbox.museai.job_seconds = 30.0

    first = await ok(client, "museai_auto_subtitles", {"svid": video["svid"], "wait_s": 0})
    assert first["status"] == "running" and "call museai_auto_subtitles again" in first["note"]
    assert sandbox.museai.jobs_created == 1

    second = await ok(client, "museai_auto_subtitles", {"svid": video["svid"], "wait_s": 600})

    assert second["status"] == "completed"
    assert second["jobs"][0] == first["jobs"][0]
    assert sandbox.museai.jobs_created == 2  # the one transcription, then one alignment
    assert "echo charlie" in second["vtt"]


async def test_auto_subtitles_reports_a_failed_download_with_its_error_class(
    client: Client, sandbox: Sandbox, files_dir: Path
) -> None:
    video = await upload(client, files_dir)
    sandbox.museai.faults.add(method="GET", path=rf"^/w/{video['fid']}/data$", kind="status", times=10)

    result = await call(client, "museai_auto_subtitles", {"svid": video["svid"]})

    assert result.is_error
    assert error_class(result) == "provider_error", text(result)
    assert text(result).startswith("[provider_error] download from ") and "HTTP 503" in text(result)
    assert sandbox.museai.jobs_created == 0  # refused before anything was paid for


# -- the job engine: expiry, cancellation --------------------------------------------------------


async def test_a_transcript_fetched_before_muse_ai_deletes_it_is_still_served_from_the_journal(
    served: tuple[MediamuxServer, Client], sandbox: Sandbox, clock: FakeClock, files_dir: Path
) -> None:
    server, client = served
    done = await ok(client, "museai_transcribe", {"path": put(files_dir, "talk.wav", SPEECH_WAV)})
    assert done["status"] == "completed"

    clock.advance(3700)  # past muse.ai's one hour
    polls = dict(sandbox.museai.polls)
    got = await ok(client, "jobs_get", {"job_id": done["job_id"]})
    waited = await ok(client, "jobs_wait", {"job_id": done["job_id"]})
    assert sandbox.museai.polls == polls  # answered from the journal, not from muse.ai

    for view in (got, waited):
        assert view["status"] == "completed" and view["result"] == {"text": "echo charlie"}
    # muse.ai itself has forgotten it.
    assert server.services is not None
    museai = server.services.clients.require("museai", MuseaiClient)
    with anyio.fail_after(10), pytest.raises(NotFound):
        await museai.get_job("speech", done["provider_job_id"])
    assert done["provider_job_id"] not in sandbox.museai.jobs


async def test_a_result_never_fetched_within_the_hour_is_reported_as_expired(
    client: Client, sandbox: Sandbox, clock: FakeClock, files_dir: Path
) -> None:
    started = await ok(
        client, "museai_transcribe", {"path": put(files_dir, "talk.wav", SPEECH_WAV), "wait_s": 0}
    )
    assert started["status"] in ("queued", "running")

    clock.advance(sandbox.museai.job_seconds + 3600 + 5)
    result = await call(client, "jobs_wait", {"job_id": started["job_id"], "wait_s": 30})

    assert result.is_error
    data = result.structured_content
    assert data["status"] == "expired" and data["result"] is None
    assert data["error"]["class"] == "not_found"
    assert sandbox.museai.jobs_created == 1


@pytest.mark.both_eras
async def test_cancelling_a_job_wait_stops_polling_at_once_and_the_job_stays_resumable(
    client: Client, sandbox: Sandbox, clock: FakeClock, files_dir: Path
) -> None:
    sandbox.museai.job_seconds = 100_000.0  # stays pending for the whole test
    args = {"path": put(files_dir, "talk.wav", SPEECH_WAV), "wait_s": 600}

    with anyio.fail_after(20):
        async with anyio.create_task_group() as tg:
            tg.start_soon(client.call_tool, "museai_transcribe", args)
            await eventually(lambda: sum(sandbox.museai.polls.values()) >= 2, clock=clock)
            tg.cancel_scope.cancel()
        polls_at_cancel = sum(sandbox.museai.polls.values())
        for _ in range(5):
            await clock.sleep(30)  # fake time passes; a live poll loop would poll again

    assert sum(sandbox.museai.polls.values()) == polls_at_cancel
    listed = (await ok(client, "jobs_list", {"status": "active", "provider": "museai"}))["jobs"]
    assert len(listed) == 1 and listed[0]["operation"] == "transcribe" and listed[0]["provider_job_id"]
    resumed = await ok(client, "jobs_wait", {"job_id": listed[0]["job_id"], "wait_s": 5})
    assert resumed["status"] == "running"
    assert sum(sandbox.museai.polls.values()) > polls_at_cancel
    assert sandbox.museai.jobs_created == 1


# -- bad input -----------------------------------------------------------------------------------


async def test_missing_files_and_paths_outside_the_allowed_folders_fail_before_any_call(
    client: Client, sandbox: Sandbox, files_dir: Path, tmp_path: Path
) -> None:
    (tmp_path / "secret.wav").write_bytes(SPEECH_WAV)
    video = await upload(client, files_dir)
    before = list(sandbox.museai.requests)

    missing = await call(client, "museai_transcribe", {"path": "nope.wav"})
    outside = await call(client, "museai_upload_video", {"path": "../secret.wav"})
    absolute = await call(client, "museai_detect_sounds", {"path": str(tmp_path / "secret.wav")})
    subtitles = await call(client, "museai_upload_subtitles", {"svid": video["svid"], "path": "none.vtt"})
    cover = await call(client, "museai_set_cover", {"fid": video["fid"], "image_path": "../secret.wav"})

    assert "File not found" in text(missing) and "nope.wav" in text(missing)
    for result in (outside, absolute, cover):
        assert "outside the allowed folders" in text(result)
    for result in (missing, outside, absolute, subtitles, cover):
        assert result.is_error and error_class(result) == "invalid_input"
        assert "MEDIAMUX_ALLOWED_DIRS" in text(result)
    assert sandbox.museai.requests == before
    assert sandbox.museai.jobs_created == 0


async def test_an_unknown_svid_is_reported_as_not_found_by_muse_ai(client: Client, sandbox: Sandbox) -> None:
    result = await call(client, "museai_get_video", {"svid": "nosuchv"})

    assert result.is_error and error_class(result) == "not_found"
    assert text(result).startswith("[not_found] muse.ai get_video: not found (404)")
    assert "museai_list_videos lists the videos" in text(result)
    assert sandbox.museai.requests == [("GET", "/api/files/videos/nosuchv")]


MALFORMED: list[tuple[str, dict[str, Any], str]] = [
    ("museai_get_video", {"svid": "../etc"}, "svid"),
    ("museai_cut_clip", {"svid": "a b", "start": 0, "end": 1}, "svid"),
    ("museai_cut_clip", {"svid": "abc1234", "start": -1, "end": 1}, "start"),
    ("museai_delete_video", {"fid": "short"}, "fid"),
    ("museai_update_video", {"fid": "f" * 64 + "/x", "title": "t"}, "fid"),
    ("museai_get_subtitles", {"svid": "abc1234", "subtitle_id": "../../x"}, "subtitle_id"),
    ("museai_add_to_collection", {"scid": "abc?x", "svid": "abc1234"}, "scid"),
    ("museai_search", {"query": "echo", "scope": "video", "target_id": "a/b"}, "target_id"),
    ("museai_update_faces", {"changes": {"not-a-face-id": {"label": "x"}}}, "changes"),
    ("museai_upload_video", {"path": "talk.wav", "visibility": "everyone"}, "visibility"),
    ("museai_transcribe", {"path": "talk.wav", "wait_s": -1}, "wait_s"),
]


@pytest.mark.both_eras
async def test_malformed_ids_and_values_are_refused_before_any_call(
    client: Client, sandbox: Sandbox, files_dir: Path
) -> None:
    put(files_dir, "talk.wav", SPEECH_WAV)

    for tool, args, field in MALFORMED:
        result = await call(client, tool, args)

        assert result.is_error, (tool, args)
        assert field in text(result), (tool, text(result))
    assert sandbox.museai.requests == []


# -- resources -----------------------------------------------------------------------------------


@pytest.mark.both_eras
async def test_videos_collections_and_subtitles_are_readable_resources(
    client: Client, files_dir: Path
) -> None:
    video = await upload(client, files_dir, title="Moon talk")
    svid = video["svid"]
    sub = await ok(client, "museai_upload_subtitles", {"svid": svid, "path": put(files_dir, "en.vtt", VTT)})
    scid = (await ok(client, "museai_create_collection", {"name": "Talks", "visibility": "public"}))["scid"]
    await ok(client, "museai_add_to_collection", {"scid": scid, "svid": svid})

    with anyio.fail_after(10):
        listed = await client.list_resources()
        templates = await client.list_resource_templates()
    assert {"museai://videos", "museai://collections"} <= {str(r.uri) for r in listed.resources}
    assert {
        "museai://videos/{svid}",
        "museai://collections/{scid}",
        "museai://videos/{svid}/subtitles/{subtitle_id}",
    } <= {t.uri_template for t in templates.resource_templates}

    videos = await read_json(client, "museai://videos")
    assert [(v["svid"], v["title"]) for v in videos["videos"]] == [(svid, "Moon talk")]
    one = await read_json(client, f"museai://videos/{svid}")
    assert one["fid"] == video["fid"] and one["subtitles"] == {sub["subtitle_id"]: "en"}
    collections = await read_json(client, "museai://collections")
    assert [(c["scid"], c["name"], c["video_count"]) for c in collections["collections"]] == [
        (scid, "Talks", 1)
    ]
    collection = await read_json(client, f"museai://collections/{scid}")
    assert collection["name"] == "Talks" and [v["svid"] for v in collection["videos"]] == [svid]

    with anyio.fail_after(10):
        vtt = (await client.read_resource(f"museai://videos/{svid}/subtitles/{sub['subtitle_id']}")).contents[
            0
        ]
    assert isinstance(vtt, TextResourceContents)
    assert vtt.mime_type == "text/vtt" and vtt.text == VTT


@pytest.mark.both_eras
async def test_reading_an_unknown_video_or_collection_is_resource_not_found(client: Client) -> None:
    for uri in (
        "museai://videos/nosuchv",
        "museai://collections/nosuchc",
        "museai://videos/nosuchv/subtitles/x",
    ):
        with anyio.fail_after(10), pytest.raises(MCPError) as caught:
            await client.read_resource(uri)
        assert caught.value.error.code == -32602, uri
        assert "nosuch" in caught.value.error.message


# -- change notifications, both eras --------------------------------------------------------------


class ChangeFeed:
    """Resource change notifications as ("list",) and ("updated", uri), whichever era the client speaks.

    2026-07-28: `subscriptions/listen` streams. 2025-11-25: `resources/subscribe`, with notifications
    reaching the client's message handler.
    """

    def __init__(self, era: str) -> None:
        self.legacy = era == "legacy"
        self.seen: list[tuple[str, ...]] = []
        self._arrived = anyio.Event()
        self.client: Client | None = None
        self.tg: TaskGroup | None = None

    def _add(self, item: tuple[str, ...]) -> None:
        self.seen.append(item)
        self._arrived.set()
        self._arrived = anyio.Event()

    async def on_message(self, message: Any) -> None:
        if isinstance(message, ResourceUpdatedNotification):
            self._add(("updated", str(message.params.uri)))
        elif isinstance(message, ResourceListChangedNotification):
            self._add(("list",))

    async def _listen(self, filters: dict[str, Any], *, task_status: TaskStatus[None]) -> None:
        assert self.client is not None
        async with self.client.listen(**filters) as sub:
            task_status.started()
            async for event in sub:
                if isinstance(event, ResourceUpdated):
                    self._add(("updated", str(event.uri)))
                elif isinstance(event, ResourcesListChanged):
                    self._add(("list",))

    async def start(self) -> None:
        if not self.legacy:  # a legacy session hears list changes once it has called a tool
            assert self.tg is not None
            await self.tg.start(self._listen, {"resources_list_changed": True})

    async def subscribe(self, uri: str) -> None:
        assert self.client is not None and self.tg is not None
        with anyio.fail_after(10):
            if self.legacy:
                with pytest.warns(MCPDeprecationWarning):
                    await self.client.subscribe_resource(uri)
            else:
                await self.tg.start(self._listen, {"resource_subscriptions": [uri]})

    async def wait_for(self, item: tuple[str, ...]) -> None:
        with anyio.fail_after(10):
            while True:
                arrived = self._arrived
                if item in self.seen:
                    return
                await arrived.wait()


@asynccontextmanager
async def feed_and_client(
    make_server: Callable[..., MediamuxServer], era: str
) -> AsyncIterator[tuple[Client, ChangeFeed]]:
    feed = ChangeFeed(era)
    server = make_server()
    async with Client(server, mode=era, message_handler=feed.on_message) as client:
        assert server.services is not None and server.services.notifier is not None
        async with anyio.create_task_group() as tg:
            feed.client, feed.tg = client, tg
            await feed.start()
            yield client, feed
            tg.cancel_scope.cancel()


@pytest.mark.both_eras
async def test_list_changed_is_sent_when_videos_are_added_or_removed_and_collections_created(
    make_server: Callable[..., MediamuxServer], era: str, files_dir: Path
) -> None:
    async with feed_and_client(make_server, era) as (client, feed):
        video = await upload(client, files_dir)
        await feed.wait_for(("list",))

        feed.seen.clear()
        await ok(client, "museai_create_collection", {"name": "Talks", "visibility": "private"})
        await feed.wait_for(("list",))

        feed.seen.clear()
        await ok(client, "museai_delete_video", {"fid": video["fid"]})
        await feed.wait_for(("list",))


@pytest.mark.both_eras
async def test_resource_updated_is_sent_when_subtitles_change(
    make_server: Callable[..., MediamuxServer], era: str, files_dir: Path
) -> None:
    async with feed_and_client(make_server, era) as (client, feed):
        video = await upload(client, files_dir)
        uri = f"museai://videos/{video['svid']}"
        await feed.subscribe(uri)

        sub = await ok(
            client, "museai_upload_subtitles", {"svid": video["svid"], "path": put(files_dir, "en.vtt", VTT)}
        )
        await feed.wait_for(("updated", uri))

        feed.seen.clear()
        await ok(
            client, "museai_delete_subtitles", {"svid": video["svid"], "subtitle_id": sub["subtitle_id"]}
        )
        await feed.wait_for(("updated", uri))


@pytest.mark.both_eras
async def test_resource_updated_is_sent_when_a_cut_clip_finishes_ingesting_after_the_call(
    make_server: Callable[..., MediamuxServer], era: str, sandbox: Sandbox, clock: FakeClock, files_dir: Path
) -> None:
    async with feed_and_client(make_server, era) as (client, feed):
        source = await upload(client, files_dir)
        # Park the server's background watcher on its first look at the clip (any video but the
        # source), so the test can subscribe to a clip id it only learns from the cut's answer.
        sandbox.museai.faults.add(
            method="GET", path=rf"^/api/files/videos/(?!{source['svid']}$)[^/]+$", kind="hang"
        )

        clip = await ok(client, "museai_cut_clip", {"svid": source["svid"], "start": 0, "end": 1})
        assert clip["ingesting"] is True
        uri = f"museai://videos/{clip['svid']}"
        await eventually(lambda: sandbox.museai.faults.parked >= 1, clock=clock)
        await feed.subscribe(uri)
        assert ("updated", uri) not in feed.seen

        clock.advance(sandbox.museai.job_seconds + 1)  # the clip is ready now
        sandbox.museai.faults.release.set()
        await feed.wait_for(("updated", uri))
    assert ("GET", f"/api/files/videos/{clip['svid']}") in sandbox.museai.requests  # the watcher's look


# -- account errors ------------------------------------------------------------------------------


async def test_a_rejected_key_is_an_auth_error_that_names_muse_ai_and_the_setting(
    client: Client, sandbox: Sandbox, files_dir: Path
) -> None:
    sandbox.museai.keys.clear()
    sandbox.museai.keys.add("a-different-key")

    listed = await call(client, "museai_list_videos")
    job = await call(client, "museai_transcribe", {"path": put(files_dir, "talk.wav", SPEECH_WAV)})

    for result in (listed, job):
        assert result.is_error and error_class(result) == "auth"
        assert "muse.ai" in text(result) and "authentication failed (401)" in text(result)
        assert "check MUSEAI_API_KEY" in text(result)
        assert "sandbox-museai-key" not in text(result)
    assert sandbox.museai.jobs_created == 0


async def test_running_out_of_credits_is_reported_with_what_to_do(
    client: Client, sandbox: Sandbox, files_dir: Path
) -> None:
    sandbox.museai.credits = 0

    uploaded = await call(client, "museai_upload_video", {"path": put(files_dir, "talk.wav", SPEECH_WAV)})
    job = await call(client, "museai_transcribe", {"path": "talk.wav"})

    for result in (uploaded, job):
        assert result.is_error and error_class(result) == "insufficient_credits"
        assert "muse.ai" in text(result) and "not enough credits (402)" in text(result)
        assert "add credits in muse.ai's billing settings" in text(result)
    assert sandbox.museai.uploads == 0 and sandbox.museai.jobs_created == 0
    # Nothing was recorded as paid, so a retry after topping up goes through.
    sandbox.museai.credits = 5
    retried = await ok(client, "museai_transcribe", {"path": "talk.wav"})
    assert retried["status"] == "completed" and retried["deduplicated"] is False
