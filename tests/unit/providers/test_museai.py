"""muse.ai client: video, collection, subtitle and search shapes, the AI job answers, and errors.

Shapes are quoted from ``shared/providers/museai-api.txt`` (S0) and NOTES §1: terse job answers
(``[start, end, word]`` triples, ``s e x y w h q`` boxes) become readable models; the malformed and
alternative variants the NOTES record are accepted. Two hosts: the files host and the jobs host,
each with its own transport. The last test is a round trip against the emulator's ASGI apps.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest

from mediamux.providers.errors import (
    AuthFailed,
    InsufficientCredits,
    InvalidRequest,
    NotFound,
    ProviderError,
    ProviderResponseError,
    RateLimited,
)
from mediamux.providers.museai import MuseaiClient, parse_search, shape_face_db, shape_job_result
from mediamux.sandbox.media import wav_sequence_bytes
from mediamux.sandbox.museai import MuseaiEmulator
from tests.sandbox.conftest import FakeNow
from tests.unit.conftest import KEY, Handler, Wire, always, answer

FILES = "https://muse.ai/api"
JOBS = "https://api.muse.ai"
FID = "b47a65b9" * 8
FACE = "95dbaa6c00b09be87fb4b2a038cc509036cf59fdc93cd2b8445f755203a990a3"
CLUSTER = "e5d07990e0ad443d90a8ca4ef11cf3ba"

# The video object of the upload / get examples (S0), plus a field this client does not model.
VIDEO = {
    "fid": FID,
    "svid": "8KsbyKv",
    "filename": "The_Solar_System.mp4",
    "title": "The Solar System",
    "description": "",
    "url": f"https://cdn.muse.ai/w/{FID}/data",
    "duration": 426.84,
    "width": 1280,
    "height": 720,
    "size": 251126000,
    "tcreated": 1559655942,
    "visibility": "public",
    "ingesting": False,
    "twatched": 3824799,
}


def museai(
    wire: Callable[..., Wire], files: Handler, jobs: Handler | None = None
) -> tuple[MuseaiClient, Wire, Wire]:
    f = wire("museai", FILES, files)
    j = wire("museai", JOBS, jobs or files, clock=f.clock)
    return MuseaiClient(f.transport, j.transport), f, j


# -- videos and collections ----------------------------------------------------------------------


async def test_a_video_object_is_read_with_its_documented_fields_and_unknown_ones_kept(
    wire: Callable[..., Wire],
) -> None:
    client, files, _ = museai(wire, always(answer(200, VIDEO)))

    video = await client.get_video("8KsbyKv")

    assert (video.svid, video.fid, video.title, video.duration) == (
        "8KsbyKv",
        FID,
        "The Solar System",
        426.84,
    )
    assert video.ingesting is False and video.visibility == "public"
    assert video.model_extra == {"twatched": 3824799}
    [sent] = files.sent
    assert str(sent.url) == f"{FILES}/files/videos/8KsbyKv" and sent.headers["Key"] == KEY


@pytest.mark.parametrize("wrapped", [False, True], ids=["array", "videos-object"])
async def test_a_video_listing_may_be_an_array_or_wrapped_and_entries_without_svid_are_skipped(
    wire: Callable[..., Wire], wrapped: bool
) -> None:
    videos = [VIDEO, {"title": "no svid"}, "junk"]
    client, _, _ = museai(wire, always(answer(200, {"videos": videos} if wrapped else videos)))

    assert [v.svid for v in await client.list_videos()] == ["8KsbyKv"]


async def test_a_cut_answer_carries_its_source_and_range(wire: Callable[..., Wire]) -> None:
    cut = {
        **VIDEO,
        "svid": "QB7jXla",
        "ingesting": True,
        "cut_svid": "8KsbyKv",
        "cut_start": 10,
        "cut_end": 20,
    }
    client, files, _ = museai(wire, always(answer(200, cut)))

    clip = await client.cut("8KsbyKv", 10, 20.5)

    assert (clip.cut_svid, clip.cut_start, clip.cut_end, clip.ingesting) == ("8KsbyKv", 10, 20, True)
    body = files.sent[0].body
    assert files.sent[0].headers["content-type"].startswith("multipart/form-data")
    for name, value in (("svid", "8KsbyKv"), ("start", "10"), ("end", "20.5")):
        assert f'name="{name}"\r\n\r\n{value}\r\n'.encode() in body


async def test_an_answer_that_is_not_a_video_object_is_a_response_error(wire: Callable[..., Wire]) -> None:
    client, _, _ = museai(wire, always(answer(200, {"status": "success"})))

    with pytest.raises(ProviderResponseError, match="no video object"):
        await client.get_video("8KsbyKv")


async def test_a_collection_detail_without_a_scid_takes_the_one_asked_for(wire: Callable[..., Wire]) -> None:
    detail = {
        "name": "Talks",
        "own": True,
        "visibility": "public",
        "videos": [{**VIDEO, "tadded": 1597247468}],
    }
    client, _, _ = museai(wire, always(answer(200, detail)))

    collection = await client.get_collection("bdZofqF")

    assert (collection.scid, collection.name, collection.visibility) == ("bdZofqF", "Talks", "public")
    assert [v.svid for v in collection.videos] == ["8KsbyKv"]


async def test_collections_are_listed_and_created_with_the_documented_shapes(
    wire: Callable[..., Wire],
) -> None:
    listing = [
        {"name": "My Public Collection", "scid": "bdZofqF", "tcreated": 1597247468, "visibility": "public"}
    ]

    def handler(request: httpx2.Request) -> httpx2.Response:
        return answer(200, listing if request.method == "GET" else {"scid": "8KsbyKv"})

    client, files, _ = museai(wire, handler)

    listed = await client.list_collections()
    scid = await client.create_collection("Talks", "unlisted")

    assert [(c.scid, c.name) for c in listed] == [("bdZofqF", "My Public Collection")]
    assert scid == "8KsbyKv" and files.sent[1].json() == {"name": "Talks", "visibility": "unlisted"}


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"N3wfN01lm": "Javanese"}, {"N3wfN01lm": "Javanese"}),  # S0
        ([{"id": "N3wfN01lm", "name": "Javanese"}, {"name": "no id"}], {"N3wfN01lm": "Javanese"}),
    ],
    ids=["id-map", "list-of-objects"],
)
async def test_subtitle_tracks_are_read_from_the_id_map_or_a_list(
    wire: Callable[..., Wire], body: Any, expected: dict[str, str]
) -> None:
    client, _, _ = museai(wire, always(answer(200, body)))

    assert await client.list_subtitles("8KsbyKv") == expected


@pytest.mark.parametrize("value", ["../etc", "a b", "", "x" * 129, "a/b"])
async def test_an_id_that_would_change_the_path_is_refused_before_any_request(
    wire: Callable[..., Wire], value: str
) -> None:
    client, files, jobs = museai(wire, always(answer(200, VIDEO)))

    with pytest.raises(InvalidRequest, match="not a valid svid"):
        await client.get_video(value)
    with pytest.raises(InvalidRequest, match="not a valid job id"):
        await client.get_job("speech", value)

    assert files.sent == [] and jobs.sent == []


# -- search --------------------------------------------------------------------------------------


def test_search_results_are_svid_time_pairs_or_objects() -> None:
    documented = parse_search([["8KsbyKv", [1.23, 3.45]], ["QB7jXla"], ["bad", "not-times"]])
    objects = parse_search({"results": [{"svid": "8KsbyKv", "times": [2, "x", 4.5]}, {"no": "svid"}]})

    assert [(h.svid, h.times) for h in documented] == [
        ("8KsbyKv", [1.23, 3.45]),
        ("QB7jXla", []),
        ("bad", []),
    ]
    assert [(h.svid, h.times) for h in objects] == [("8KsbyKv", [2.0, 4.5])]
    assert parse_search("nothing") == []


async def test_owned_search_sends_the_key_and_public_scopes_are_keyless(wire: Callable[..., Wire]) -> None:
    client, files, _ = museai(wire, always(answer(200, [["8KsbyKv", [1.23]]])))

    owned = await client.search("s:moon")
    public = await client.search("person:musk object:car", "collection", "bdZofqF")

    assert owned[0].times == [1.23] and public[0].svid == "8KsbyKv"
    assert (files.sent[0].path, files.sent[0].url.params["q"]) == ("/api/search", "s:moon")
    assert files.sent[0].headers["Key"] == KEY
    assert files.sent[1].path == "/api/search/collection/bdZofqF"
    assert "Key" not in files.sent[1].headers


async def test_a_scoped_search_without_a_target_is_refused_before_any_request(
    wire: Callable[..., Wire],
) -> None:
    client, files, _ = museai(wire, always(answer(200, [])))

    with pytest.raises(InvalidRequest, match="needs target_id"):
        await client.search("echo", "channel")

    assert files.sent == []


# -- AI jobs -------------------------------------------------------------------------------------


async def test_a_job_is_submitted_to_the_jobs_host_and_polled_there(
    wire: Callable[..., Wire], tmp_path: Path
) -> None:
    (tmp_path / "input.wav").write_bytes(wav_sequence_bytes([(0.5, 440.0)]))
    job_id = "72787541f3fc8170207ea446a22f60ce4130d950cbebcc058dd53bd321419beb"
    states = iter([{"status": "pending"}, {"status": "done", "transcript": "we choose to go to the moon"}])

    def jobs_handler(request: httpx2.Request) -> httpx2.Response:
        return answer(200, {"id": job_id} if request.method == "POST" else next(states))

    client, files, jobs = museai(wire, always(answer(500)), jobs_handler)

    submitted = await client.submit_job(
        "align", tmp_path / "input.wav", [tmp_path], phrase="All men are equal."
    )
    pending = await client.get_job("align", submitted)
    done = await client.get_job("align", submitted)

    assert submitted == job_id and files.sent == []
    assert [(s.method, str(s.url)) for s in jobs.sent] == [
        ("POST", f"{JOBS}/align"),
        ("GET", f"{JOBS}/align/{job_id}"),
        ("GET", f"{JOBS}/align/{job_id}"),
    ]
    assert b'name="phrase"\r\n\r\nAll men are equal.\r\n' in jobs.sent[0].body
    assert (pending.status, pending.result) == ("pending", {})
    assert done.status == "done" and done.result == {"transcript": "we choose to go to the moon"}


async def test_a_failed_job_reports_its_error_code(wire: Callable[..., Wire]) -> None:
    client, _, _ = museai(wire, always(answer(200, {"status": "Error", "error": "unsupported_format"})))

    state = await client.get_job("speech", "a" * 64)

    assert (state.status, state.error, state.result) == ("error", "unsupported_format", {})


async def test_a_submit_answer_without_a_job_id_may_have_been_charged(
    wire: Callable[..., Wire], tmp_path: Path
) -> None:
    (tmp_path / "input.wav").write_bytes(wav_sequence_bytes([(0.5, 440.0)]))
    client, _, jobs = museai(wire, always(answer(200, {"status": "ok"})))

    with pytest.raises(ProviderResponseError, match="no job id") as caught:
        await client.submit_job("speech", tmp_path / "input.wav", [tmp_path])

    assert caught.value.maybe_sent is True and len(jobs.sent) == 1


def test_speech_reads_the_transcript_or_a_text_field() -> None:
    assert shape_job_result("speech", {"transcript": "we choose to go to the moon"}) == {
        "text": "we choose to go to the moon"
    }
    assert shape_job_result("speech", {"text": "hello"}) == {"text": "hello"}
    assert shape_job_result("speech", {}) == {"text": ""}


def test_align_turns_triples_into_named_words_and_skips_broken_rows() -> None:
    raw = {"words": [[0.44, 0.71, "All"], [0.71, 0.97, "men"], [1.0, "x", "bad"], [2.0, 2.5], "junk"]}

    assert shape_job_result("align", raw) == {
        "words": [{"start": 0.44, "end": 0.71, "word": "All"}, {"start": 0.71, "end": 0.97, "word": "men"}]
    }


def test_sounds_become_named_segments_with_unknown_classes_kept_apart() -> None:
    raw = {
        "sounds": {
            "speech": [[0.53, 0.87], [2.02, 3.09]],
            "music": [{"start": 4, "end": 6}, {"start": 7}],
            "silence": [],
            "coughing": [[1, 1.5]],
        }
    }

    shaped = shape_job_result("sounds", raw)

    assert shaped["speech"] == [{"start": 0.53, "end": 0.87}, {"start": 2.02, "end": 3.09}]
    assert shaped["music"] == [{"start": 4.0, "end": 6.0}, {"start": 7.0, "end": 7.0}]
    assert shaped["laughter"] == [] and shaped["applause"] == []
    assert shaped["other"] == {"coughing": [{"start": 1.0, "end": 1.5}]}


def test_colors_keep_only_numeric_shares() -> None:
    raw = {"colors": {"black": 0.252, "blue": 0.035, "mystery": "lots"}}

    assert shape_job_result("colors", raw) == {"colors": {"black": 0.252, "blue": 0.035}}


def test_faces_objects_and_text_get_readable_box_fields() -> None:
    box = {"x": 0.508, "y": 0.281, "w": 0.514, "h": 0.233, "q": 0.5}
    readable = {"x": 0.508, "y": 0.281, "width": 0.514, "height": 0.233, "confidence": 0.5}
    faces = {CLUSTER: {"label": None, "faces": {FACE: {"s": 2.12, "e": 5.32, **box}}}}

    shaped_faces = shape_job_result("faces", {"faces": faces})
    objects = shape_job_result(
        "objects", {"objects": {"person": [box], "bicycle": [box, "junk"], "odd": "x"}}
    )
    text = shape_job_result("text", {"text": {"hello": [box]}})

    [cluster] = shaped_faces["clusters"]
    assert (cluster["cluster_id"], cluster["label"]) == (CLUSTER, None)
    assert cluster["faces"] == [{"face_id": FACE, **readable, "start": 2.12, "end": 5.32, "fid": None}]
    assert objects == {"objects": {"person": [readable], "bicycle": [readable]}}
    assert text == {"text": {"hello": [readable]}}


def test_the_faces_database_reads_detected_deleted_and_ignored_moments() -> None:
    moment = {"f": FID, "s": 174.0, "e": 180.92, "x": 0.28, "y": 0.14, "w": 0.21, "h": 0.49, "q": 0.5}
    raw = {
        "detected": {CLUSTER: {"label": "Ada", "faces": {FACE: {"moment": moment}}}},
        "deleted": {"d" * 64: {"moment": moment}},
        "ignored": "not an object",
    }

    db = shape_face_db(raw)

    [cluster] = db.detected
    assert cluster.label == "Ada" and cluster.faces[0].fid == FID
    assert (cluster.faces[0].start, cluster.faces[0].end, cluster.faces[0].height) == (174.0, 180.92, 0.49)
    assert [f.face_id for f in db.deleted] == ["d" * 64] and db.ignored == []


# -- errors --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "code", "kind", "what"),
    [
        (400, "file_not_provided", InvalidRequest, "invalid request (400)"),
        (401, "invalid_key", AuthFailed, "authentication failed (401)"),
        (402, "not_enough_credits", InsufficientCredits, "not enough credits (402)"),
        (404, "not_found", NotFound, "not found (404)"),
    ],
)
async def test_error_bodies_name_the_snake_case_code_and_map_to_their_class(
    wire: Callable[..., Wire], status: int, code: str, kind: type[ProviderError], what: str
) -> None:
    client, files, _ = museai(wire, always(answer(status, {"error": code})))

    with pytest.raises(kind) as caught:
        await client.list_videos()

    assert str(caught.value).startswith(f"muse.ai list_videos: {what}: {code}")
    assert len(files.sent) == 1


async def test_too_many_requests_is_retried_for_a_read_and_then_reported(wire: Callable[..., Wire]) -> None:
    client, files, _ = museai(wire, always(answer(429, {"error": "threshold_limit_reached"})))

    with pytest.raises(RateLimited, match="threshold_limit_reached"):
        await client.list_videos()

    assert len(files.sent) == 3 and len(files.clock.sleeps) == 2


# -- against the emulator ------------------------------------------------------------------------


async def test_upload_then_transcribe_round_trip_against_the_emulator_in_process(
    wire: Callable[..., Wire], tmp_path: Path
) -> None:
    # "echo" (440 Hz) for 1 s, half a second of silence, "charlie" (250 Hz) for 1 s.
    (tmp_path / "moon_talk.wav").write_bytes(wav_sequence_bytes([(1.0, 440.0), (0.5, None), (1.0, 250.0)]))
    now = FakeNow()
    emulator = MuseaiEmulator(now=now, master_key=KEY, job_seconds=3.0)
    try:
        files = wire("museai", "http://muse.test/api", app=emulator.app)
        jobs = wire("museai", "http://jobs.muse.test", app=emulator.jobs_app, clock=files.clock)
        client = MuseaiClient(files.transport, jobs.transport)

        with anyio.fail_after(10):
            video = await client.upload_video(tmp_path / "moon_talk.wav", [tmp_path], visibility="unlisted")
            job_id = await client.submit_job("speech", tmp_path / "moon_talk.wav", [tmp_path])
            pending = await client.get_job("speech", job_id)
            now.advance(3.5)
            done = await client.get_job("speech", job_id)
            hits = await client.search("s:charlie")
    finally:
        emulator.close()

    assert video.visibility == "unlisted" and video.duration == pytest.approx(2.5)
    assert pending.status == "pending"
    assert done.status == "done" and shape_job_result("speech", done.result) == {"text": "echo charlie"}
    assert [(h.svid, h.times) for h in hits] == [(video.svid, [1.5])]
