"""Behaviour of the Muzaic emulator, checked against the provider documents (muzaic-api.txt, NOTES §2).

Time is injected (`FakeNow`) and long generations are held by a gate, so nothing sleeps; waits are bounded.
"""

from __future__ import annotations

import base64
import re
from collections.abc import AsyncIterator
from typing import Any

import anyio
import httpx2
import pytest

from mediamux.sandbox.loopback import serve_on_loopback
from mediamux.sandbox.media import wav_info
from mediamux.sandbox.muzaic import TAGS, MuzaicEmulator
from tests.sandbox.conftest import FakeNow

KEY = "sandbox-muzaic-key"
ORIGIN = "http://muzaic.test"
HEX32 = re.compile(r"[0-9a-f]{32}")


@pytest.fixture
def emulator(now: FakeNow) -> Any:
    emu = MuzaicEmulator(now=now)
    yield emu
    emu.close()


@pytest.fixture
async def client(emulator: MuzaicEmulator) -> AsyncIterator[httpx2.AsyncClient]:
    transport = httpx2.ASGITransport(app=emulator.app)
    async with httpx2.AsyncClient(
        transport=transport, base_url=ORIGIN, headers={"MuzaicAPI-Secret-Key": KEY}
    ) as c:
        yield c


async def ok(client: httpx2.AsyncClient, path: str, body: Any = None) -> dict[str, Any]:
    response = await client.post(path, json=body if body is not None else {})
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()
    return data


def decode_data_url(value: str) -> bytes:
    prefix, _, payload = value.partition(",")
    assert prefix == "data:audio/wav;base64"
    return base64.b64decode(payload)


def pcm(wav: bytes) -> bytes:
    at = wav.index(b"data")
    size = int.from_bytes(wav[at + 4 : at + 8], "little")
    return wav[at + 8 : at + 8 + size]


# --- authentication -------------------------------------------------------------------------------------


async def test_missing_key_is_401_in_the_new_generation_with_lowercase_error(
    client: httpx2.AsyncClient,
) -> None:
    response = await client.get("/getTags", headers={"MuzaicAPI-Secret-Key": ""})
    assert response.status_code == 401
    assert response.json() == {"error": "No MuzaicAPI Secret Key"}


async def test_missing_key_is_the_documented_400_with_capital_error_in_the_old_generation(
    client: httpx2.AsyncClient, emulator: MuzaicEmulator
) -> None:
    emulator.generation = "old"
    response = await client.post("/singleFile", json={}, headers={"MuzaicAPI-Secret-Key": ""})
    assert response.status_code == 400
    assert response.json() == {"Error": "No MuzaicAPI Secret Key"}
    assert emulator.generations == 0


@pytest.mark.parametrize(("generation", "field"), [("new", "error"), ("old", "Error")])
async def test_wrong_key_is_401_in_both_generations(
    client: httpx2.AsyncClient, emulator: MuzaicEmulator, generation: Any, field: str
) -> None:
    emulator.generation = generation
    response = await client.get("/accountDetails", headers={"MuzaicAPI-Secret-Key": "nope"})
    assert response.status_code == 401
    assert response.json() == {field: "Invalid MuzaicAPI Secret Key"}


async def test_unknown_path_answers_404_in_the_generation_error_body(client: httpx2.AsyncClient) -> None:
    response = await client.get("/nope")
    assert response.status_code == 404
    assert set(response.json()) == {"error"}


# --- tags -----------------------------------------------------------------------------------------------


async def test_tags_use_the_documented_shape_with_string_fields_and_known_ids(
    client: httpx2.AsyncClient,
) -> None:
    data = (await client.get("/getTags")).json()
    tags = {t["id"]: t for t in data["tags"]}
    assert len(tags) == len(TAGS) >= 30
    for tag in data["tags"]:
        assert set(tag) == {
            "id",
            "name",
            "int_bonus",
            "tem_bonus",
            "rhy_bonus",
            "ton_bonus",
            "var_bonus",
            "tagCategoryId",
            "secret",
            "active",
        }
        assert all(isinstance(v, str) for v in tag.values())
    assert (tags["1"]["name"], tags["1"]["tagCategoryId"]) == ("acoustic", "4")
    assert (tags["2"]["name"], tags["2"]["tagCategoryId"]) == ("electronic", "4")
    assert {tags["5"]["name"], tags["10"]["name"]} == {"dreamy", "ambient"}
    assert {tags["11"]["name"], tags["17"]["name"]} == {"dynamic", "latin"}


async def test_tag_relations_are_symmetric_negatives_including_the_documented_conflicts(
    client: httpx2.AsyncClient,
) -> None:
    relations = (await client.get("/getTags")).json()["tagsRelations"]
    assert relations["1"] == {"2": -1, "4": -1, "16": -1}
    for a, others in relations.items():
        for b, value in others.items():
            assert value == -1
            assert relations[b][a] == -1


# --- singleFile -----------------------------------------------------------------------------------------


async def test_single_file_new_generation_returns_base64_wav_of_the_requested_length(
    client: httpx2.AsyncClient, emulator: MuzaicEmulator
) -> None:
    data = await ok(client, "/singleFile", {"duration": 48, "tags": [11, 17]})
    assert set(data) == {
        "apiVersion",
        "mp3",
        "audioDuration",
        "hash",
        "status",
        "tokensUsed",
        "executionTime",
    }
    assert HEX32.fullmatch(data["hash"])
    assert data["audioDuration"] == 48
    assert data["tokensUsed"] == 48
    assert "no params object" in data["status"]
    wav = decode_data_url(data["mp3"])
    channels, rate, bits, duration = wav_info(wav)
    assert (channels, rate, bits) == (1, 8000, 8)
    assert duration == pytest.approx(48.0)
    assert emulator.tokens == pytest.approx(3600 - 48)
    assert emulator.generations == 1


async def test_single_file_old_generation_returns_a_served_url_motive_id_and_hash(
    client: httpx2.AsyncClient, emulator: MuzaicEmulator
) -> None:
    emulator.generation = "old"
    data = await ok(client, "/singleFile", {"duration": 12, "params": {"intensity": 3, "tempo": 5}})
    assert data["apiVersion"] == "1.2.0"
    assert re.fullmatch(rf"{ORIGIN}/result/\d{{4}}-\d\d-\d\d/[0-9a-f]{{32}}\.wav", data["mp3"])
    assert isinstance(data["motiveId"], int)
    assert HEX32.fullmatch(data["hash"])
    assert "audioDuration" not in data
    assert data["status"] == "action: generate"
    file = await client.get(data["mp3"], headers={"MuzaicAPI-Secret-Key": ""})  # result files are public
    assert file.status_code == 200
    assert file.headers["content-type"] == "audio/wav"
    assert wav_info(file.content)[3] == pytest.approx(12.0)


async def test_single_file_defaults_to_sixty_seconds(client: httpx2.AsyncClient) -> None:
    response = await client.post("/singleFile", content=b"")
    assert response.status_code == 200
    assert response.json()["tokensUsed"] == 60
    assert wav_info(decode_data_url(response.json()["mp3"]))[3] == pytest.approx(60.0)


async def test_long_pieces_keep_their_full_duration_at_a_lower_rate_under_a_megabyte(
    client: httpx2.AsyncClient, emulator: MuzaicEmulator
) -> None:
    emulator.generation = "old"
    data = await ok(client, "/singleFile", {"duration": 1200})
    wav = (await client.get(data["mp3"])).content
    _, rate, _, duration = wav_info(wav)
    assert duration == pytest.approx(1200.0, abs=0.01)
    assert rate < 8000
    assert len(wav) <= 1_000_100


async def test_fractional_durations_are_charged_rounded_up(client: httpx2.AsyncClient) -> None:
    data = await ok(client, "/singleFile", {"duration": 10.5})
    assert data["tokensUsed"] == 11
    assert wav_info(decode_data_url(data["mp3"]))[3] == pytest.approx(10.5)


@pytest.mark.parametrize(
    ("generation", "duration", "status"),
    [("new", 300, 200), ("new", 301, 400), ("old", 1200, 200), ("old", 1201, 400), ("new", 0, 400)],
)
async def test_duration_limit_follows_the_generation_documents(
    client: httpx2.AsyncClient, emulator: MuzaicEmulator, generation: Any, duration: int, status: int
) -> None:
    emulator.generation = generation
    response = await client.post("/singleFile", json={"duration": duration})
    assert response.status_code == status


async def test_parameter_range_is_1_to_9_old_and_1_to_10_new(
    client: httpx2.AsyncClient, emulator: MuzaicEmulator
) -> None:
    assert (await client.post("/singleFile", json={"duration": 5, "params": {"tone": 10}})).status_code == 200
    emulator.generation = "old"
    response = await client.post("/singleFile", json={"duration": 5, "params": {"tone": 10}})
    assert response.status_code == 400
    assert response.json() == {"Error": "params.tone must be between 1 and 9"}


async def test_valid_keyframes_are_accepted(client: httpx2.AsyncClient) -> None:
    params = {
        "intensity": [[0, 1], [100, 9]],
        "tempo": 5,
        "rhythm": [[0, 9], [50.5, 4], [100, 1]],
        "tone": [[0, 9], [100, 1]],
        "variance": [[0, 5], [100, 5]],
    }
    data = await ok(client, "/singleFile", {"duration": 20, "params": params})
    assert data["status"] == "action: generate"


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"intensity": [[10, 1], [100, 9]]}, "params.intensity: first keyframe must be at 0"),
        ({"intensity": [[0, 1], [90, 9]]}, "params.intensity: last keyframe must be at 100"),
        ({"intensity": [[0, 1]]}, "params.intensity: last keyframe must be at 100"),
        ({"tone": []}, "params.tone: keyframe array is empty"),
        (
            {"tempo": [[0, 1], [100, 9]]},
            "params.tempo: keyframes are not allowed for tempo (tempo is static)",
        ),
        (
            {"rhythm": [[0, 1], [60, 2], [40, 3], [100, 4]]},
            "params.rhythm: keyframe positions must be in ascending order",
        ),
        ({"rhythm": [[0, 1], [150, 2]]}, "params.rhythm: keyframe 1 position must be a number from 0 to 100"),
        (
            {"variance": [[0, 0], [100, 2]]},
            "params.variance: keyframe 0 value must be an integer from 1 to 10",
        ),
        ({"variance": [[0, 1, 2], [100, 2]]}, "params.variance: keyframe 0 must be [position, value]"),
        ({"intensity": "high"}, "params.intensity must be an integer 1-10 or a keyframe array"),
        ({"intensity": 2.5}, "params.intensity must be an integer 1-10 or a keyframe array"),
        ({"intensity": True}, "params.intensity must be an integer 1-10 or a keyframe array"),
    ],
)
async def test_bad_params_and_keyframes_are_400_with_the_documented_error_body(
    client: httpx2.AsyncClient, emulator: MuzaicEmulator, params: dict[str, Any], message: str
) -> None:
    response = await client.post("/singleFile", json={"duration": 5, "params": params})
    assert response.status_code == 400
    assert response.json() == {"error": message}
    assert emulator.generations == 0
    assert emulator.tokens == 3600


async def test_keyframe_errors_use_capital_error_in_the_old_generation(
    client: httpx2.AsyncClient, emulator: MuzaicEmulator
) -> None:
    emulator.generation = "old"
    response = await client.post("/singleFile", json={"params": {"intensity": [[5, 1], [100, 9]]}})
    assert response.status_code == 400
    assert response.json() == {"Error": "params.intensity: first keyframe must be at 0"}


async def test_invalid_json_is_wrong_request_json_object(client: httpx2.AsyncClient) -> None:
    for content in (b"{not json", b"[1, 2]"):
        response = await client.post("/singleFile", content=content)
        assert response.status_code == 400
        assert response.json() == {"error": "Wrong request JSON Object"}


async def test_tags_and_normalize_types_are_validated(client: httpx2.AsyncClient) -> None:
    response = await client.post("/singleFile", json={"tags": "latin"})
    assert (response.status_code, response.json()) == (400, {"error": "tags must be an array of integers"})
    response = await client.post("/singleFile", json={"normalize": "auto"})
    assert (response.status_code, response.json()) == (400, {"error": "normalize must be a boolean"})


async def test_unknown_tags_params_and_conflicts_are_reported_in_status_not_rejected(
    client: httpx2.AsyncClient,
) -> None:
    data = await ok(client, "/singleFile", {"duration": 5, "tags": [1, 2, 999], "params": {"mood": 3}})
    status = data["status"]
    assert "tag 999 not found, ignored" in status
    assert "tags 1 and 2 conflict" in status
    assert "unknown param mood ignored" in status


async def test_insufficient_tokens_is_402_without_audio_or_charge(
    client: httpx2.AsyncClient, emulator: MuzaicEmulator
) -> None:
    emulator.tokens = 10
    response = await client.post("/singleFile", json={"duration": 48})
    assert response.status_code == 402
    body = response.json()
    assert set(body) == {"error"}
    assert "adminpanel.muzaic.ai" in body["error"]
    assert "mp3" not in body
    assert emulator.tokens == 10
    assert emulator.generations == 0
    assert emulator.hashes == {}
    emulator.generation = "old"
    response = await client.post("/singleFile", json={"duration": 48})
    assert response.status_code == 402
    assert set(response.json()) == {"Error"}


async def test_exact_balance_is_enough(client: httpx2.AsyncClient, emulator: MuzaicEmulator) -> None:
    emulator.tokens = 5
    await ok(client, "/singleFile", {"duration": 5})
    assert emulator.tokens == 0


# --- soundtrack -----------------------------------------------------------------------------------------


async def test_soundtrack_new_generation_returns_count_region_hashes_status_list_and_base64(
    client: httpx2.AsyncClient, emulator: MuzaicEmulator
) -> None:
    source = await ok(client, "/singleFile", {"duration": 30})
    data = await ok(
        client,
        "/soundtrack",
        {
            "regions": [
                {
                    "time": 0,
                    "duration": 20.2,
                    "tags": [17],
                    "action": "generate",
                    "params": {"intensity": [[0, 1], [100, 9]], "tempo": 5},
                },
                {
                    "time": 20.2,
                    "duration": 27.8,
                    "sourceHash": source["hash"],
                    "action": "copy",
                    "method": "smart",
                },
            ],
            "normalize": True,
        },
    )
    assert set(data) == {
        "apiVersion",
        "status",
        "regions",
        "regionHashes",
        "audioDuration",
        "mp3",
        "tokensUsed",
    }
    assert data["regions"] == 2
    assert len(data["regionHashes"]) == 2
    assert all(HEX32.fullmatch(h) for h in data["regionHashes"])
    assert data["audioDuration"] == pytest.approx(48.0)
    assert data["tokensUsed"] == 48
    assert data["status"] == [
        "region 0 action: generate",
        "region 1 action: copy",
        "soundtrack normalized: true",
    ]
    assert wav_info(decode_data_url(data["mp3"]))[3] == pytest.approx(48.0)
    assert emulator.tokens == pytest.approx(3600 - 30 - 48)


async def test_soundtrack_old_generation_returns_numbered_regions_and_a_st_url(
    client: httpx2.AsyncClient, emulator: MuzaicEmulator
) -> None:
    emulator.generation = "old"
    source = await ok(client, "/singleFile", {"duration": 10})
    data = await ok(
        client,
        "/soundtrack",
        {
            "regions": [
                {"time": 0, "duration": 20.2, "method": "adjust_end"},
                {
                    "time": 20.2,
                    "duration": 27.8,
                    "sourceHash": source["hash"],
                    "action": "copy",
                    "method": "adjust_start",
                },
            ]
        },
    )
    assert set(data) == {"apiVersion", "mp3", "regions", "status", "tokensUsed", "executionTime"}
    assert [r["number"] for r in data["regions"]] == [0, 1]
    assert all(HEX32.fullmatch(r["hash"]) for r in data["regions"])
    assert data["status"] == (
        "region 0 action: generate | region 0 no params object | region 1 action: copy | soundtrack normalized: auto"
    )
    assert re.search(r"/result/\d{4}-\d\d-\d\d/st_[0-9a-f]{32}\.wav$", data["mp3"])
    wav = (await client.get(data["mp3"])).content
    assert wav_info(wav)[3] == pytest.approx(48.0)


async def test_soundtrack_gaps_are_silent_and_copies_repeat_the_source_music(
    client: httpx2.AsyncClient, emulator: MuzaicEmulator
) -> None:
    source = await ok(client, "/singleFile", {"duration": 20, "params": {"tempo": 7, "intensity": 6}})
    data = await ok(
        client,
        "/soundtrack",
        {
            "regions": [
                {"time": 0, "duration": 4, "action": "generate"},
                {"time": 6, "duration": 5, "action": "copy", "sourceHash": source["hash"]},
            ]
        },
    )
    samples = pcm(decode_data_url(data["mp3"]))
    rate = 8000
    assert len(samples) == 11 * rate
    assert set(samples[4 * rate : 6 * rate]) == {128}
    source_samples = pcm(decode_data_url(source["mp3"]))
    assert samples[6 * rate :] == source_samples[: 5 * rate]
    copy_region = emulator.audio_bytes(data["regionHashes"][1])
    assert pcm(copy_region) == source_samples[: 5 * rate]


async def test_silence_regions_are_silent_in_the_new_generation(client: httpx2.AsyncClient) -> None:
    data = await ok(client, "/soundtrack", {"regions": [{"time": 0, "duration": 3, "action": "silence"}]})
    assert set(pcm(decode_data_url(data["mp3"]))) == {128}
    assert data["tokensUsed"] == 3


@pytest.mark.parametrize(
    ("generation", "body", "message"),
    [
        ("new", {}, "No regions list"),
        ("new", {"regions": []}, "No regions list"),
        ("old", {"regions": "x"}, "No regions list"),
        ("new", {"regions": [{"time": 0, "duration": 5}]}, "region 0: action is required"),
        (
            "new",
            {"regions": [{"time": 0, "duration": 5, "action": "extend"}]},
            "region 0: action must be one of generate, copy, silence",
        ),
        (
            "old",
            {"regions": [{"time": 0, "duration": 5, "action": "silence"}]},
            "region 0: action must be one of generate, copy, regenerate, extend",
        ),
        (
            "old",
            {"regions": [{"duration": 5}]},
            "region 0: time is required and must be a number of seconds >= 0",
        ),
        ("old", {"regions": [{"time": 0}]}, "region 0: duration is required"),
        (
            "old",
            {"regions": [{"time": 0, "duration": 5, "method": "smart"}]},
            "region 0: method must be one of strict, auto_adjust, adjust_start, adjust_end",
        ),
        (
            "new",
            {"regions": [{"time": 0, "duration": 5, "action": "generate", "method": "adjust_end"}]},
            "region 0: method must be one of strict, smart",
        ),
        (
            "old",
            {"regions": [{"time": 0, "duration": 5, "action": "copy"}]},
            "region 0: sourceHash is required for action copy",
        ),
        (
            "old",
            {"regions": [{"time": 0, "duration": 5, "action": "regenerate", "sourceHash": "f" * 32}]},
            "region 0: sourceHash not found",
        ),
        (
            "old",
            {"regions": [{"time": 0, "duration": 5}], "normalize": "loud"},
            "normalize must be one of none, auto, high",
        ),
        (
            "new",
            {"regions": [{"time": 0, "duration": 5, "action": "generate"}], "normalize": "auto"},
            "normalize must be a boolean",
        ),
        (
            "old",
            {"regions": [{"time": 0, "duration": 5, "params": {"tempo": [[0, 1], [100, 2]]}}]},
            "region 0: params.tempo: keyframes are not allowed for tempo (tempo is static)",
        ),
        ("old", {"regions": ["x"]}, "region 0: Wrong request JSON Object"),
    ],
)
async def test_soundtrack_errors_are_400_in_the_generation_error_body(
    client: httpx2.AsyncClient, emulator: MuzaicEmulator, generation: Any, body: dict[str, Any], message: str
) -> None:
    emulator.generation = generation
    response = await client.post("/soundtrack", json=body)
    assert response.status_code == 400
    assert response.json() == {("Error" if generation == "old" else "error"): message}
    assert emulator.generations == 0


async def test_old_regenerate_and_extend_need_a_known_source(
    client: httpx2.AsyncClient, emulator: MuzaicEmulator
) -> None:
    emulator.generation = "old"
    source = await ok(client, "/singleFile", {"duration": 5})
    data = await ok(
        client,
        "/soundtrack",
        {
            "regions": [
                {"time": 0, "duration": 5, "action": "regenerate", "sourceHash": source["hash"]},
                {"time": 5, "duration": 5, "action": "extend", "sourceHash": source["hash"]},
            ],
            "normalize": "none",
        },
    )
    assert data["status"].endswith("soundtrack normalized: none")
    regenerated = emulator.audio_bytes(data["regions"][0]["hash"])
    assert pcm(regenerated) != pcm(emulator.audio_bytes(source["hash"]))


async def test_soundtrack_is_402_when_tokens_do_not_cover_its_whole_length(
    client: httpx2.AsyncClient, emulator: MuzaicEmulator
) -> None:
    emulator.tokens = 20
    response = await client.post(
        "/soundtrack", json={"regions": [{"time": 15, "duration": 10, "action": "generate"}]}
    )
    assert response.status_code == 402
    assert emulator.tokens == 20
    assert emulator.hashes == {}


async def test_origin_scoped_soundtrack_is_allowed_unless_origins_are_restricted(
    client: httpx2.AsyncClient, emulator: MuzaicEmulator
) -> None:
    body = {"regions": [{"time": 0, "duration": 2, "action": "generate"}]}
    await ok(client, "/soundtrack/my-site", body)
    emulator.allowed_origins = {"other"}
    response = await client.post("/soundtrack/my-site", json=body)
    assert response.status_code == 403
    assert response.json() == {"error": "API key is not valid for this origin"}
    await ok(client, "/soundtrack/other", body)


# --- audioFromHash --------------------------------------------------------------------------------------


async def test_audio_from_hash_regenerates_identical_audio_and_charges_its_length(
    client: httpx2.AsyncClient, emulator: MuzaicEmulator
) -> None:
    original = await ok(client, "/singleFile", {"duration": 10})
    again = await ok(client, "/audioFromHash", {"sourceHash": original["hash"]})
    assert again["hash"] == original["hash"]
    assert again["audioDuration"] == 10
    assert again["tokensUsed"] == 10
    assert decode_data_url(again["mp3"]) == decode_data_url(original["mp3"])
    assert emulator.tokens == 3600 - 20
    assert emulator.generations == 2
    via_mcp_key = await ok(client, "/audioFromHash", {"hash": original["hash"]})
    assert via_mcp_key["mp3"] == original["mp3"]


async def test_audio_from_hash_old_generation_answers_a_st_url_with_the_same_audio(
    client: httpx2.AsyncClient, emulator: MuzaicEmulator
) -> None:
    emulator.generation = "old"
    original = await ok(client, "/singleFile", {"duration": 4})
    again = await ok(client, "/audioFromHash", {"sourceHash": original["hash"]})
    assert set(again) == {"apiVersion", "mp3", "tokensUsed", "executionTime"}
    assert "/st_" in again["mp3"]
    first = (await client.get(original["mp3"])).content
    assert (await client.get(again["mp3"])).content == first


async def test_audio_from_hash_accepts_a_soundtrack_file_id(
    client: httpx2.AsyncClient, emulator: MuzaicEmulator
) -> None:
    emulator.generation = "old"
    track = await ok(client, "/soundtrack", {"regions": [{"time": 0, "duration": 3}]})
    file_hash = re.search(r"st_([0-9a-f]{32})\.wav$", track["mp3"]).group(1)  # type: ignore[union-attr]
    again = await ok(client, "/audioFromHash", {"sourceHash": file_hash})
    assert again["tokensUsed"] == 3


@pytest.mark.parametrize(
    ("generation", "body", "status", "expected"),
    [
        ("new", {"sourceHash": "0" * 32}, 404, {"error": "Hash not found"}),
        ("old", {"sourceHash": "0" * 32}, 404, {"Error": "Hash not found"}),
        ("new", {"other": 1}, 400, {"error": "No sourceHash"}),
        ("old", {"sourceHash": 5}, 400, {"Error": "No sourceHash"}),
    ],
)
async def test_audio_from_hash_errors(
    client: httpx2.AsyncClient,
    emulator: MuzaicEmulator,
    generation: Any,
    body: dict[str, Any],
    status: int,
    expected: dict[str, str],
) -> None:
    emulator.generation = generation
    response = await client.post("/audioFromHash", json=body)
    assert (response.status_code, response.json()) == (status, expected)


async def test_audio_from_hash_is_402_when_tokens_run_short(
    client: httpx2.AsyncClient, emulator: MuzaicEmulator
) -> None:
    original = await ok(client, "/singleFile", {"duration": 10})
    emulator.tokens = 9
    response = await client.post("/audioFromHash", json={"sourceHash": original["hash"]})
    assert response.status_code == 402
    assert emulator.tokens == 9


async def test_unknown_result_file_is_404(client: httpx2.AsyncClient) -> None:
    response = await client.get(f"/result/2024-01-17/{'a' * 32}.wav")
    assert response.status_code == 404


# --- accountDetails -------------------------------------------------------------------------------------


async def test_account_details_new_shape_echoes_the_secret_key(
    client: httpx2.AsyncClient, emulator: MuzaicEmulator
) -> None:
    await ok(client, "/singleFile", {"duration": 40})
    data = (await client.get("/accountDetails")).json()
    assert set(data) == {
        "accountId",
        "name",
        "tokensRemaining",
        "tokensUsed",
        "plan",
        "expiresAt",
        "createdAt",
        "secretKey",
    }
    assert data["secretKey"] == KEY
    assert (data["tokensRemaining"], data["tokensUsed"]) == (3560, 40)


async def test_account_details_old_shape_follows_the_old_generation(
    client: httpx2.AsyncClient, emulator: MuzaicEmulator
) -> None:
    emulator.generation = "old"
    await ok(client, "/singleFile", {"duration": 10})
    data = (await client.get("/accountDetails")).json()
    assert data == {
        "apiVersion": "1.2.0",
        "secretKey": KEY,
        "freeTokensAvailable": 3590,
        "totalUsedTokens": 10,
        "currentBalance": 10,
    }


async def test_account_details_shape_can_be_forced_including_the_mcp_shape(
    client: httpx2.AsyncClient, emulator: MuzaicEmulator
) -> None:
    emulator.account_shape = "mcp"
    assert (await client.get("/accountDetails")).json() == {"balance": 3600, "used": 0, "secretKey": KEY}
    emulator.account_shape = "old"
    assert "freeTokensAvailable" in (await client.get("/accountDetails")).json()
    emulator.account_shape = "new"
    emulator.generation = "old"
    assert "tokensRemaining" in (await client.get("/accountDetails")).json()


# --- narrationToMuzaic ----------------------------------------------------------------------------------


async def test_narration_predicts_tags_named_in_the_text_and_params_deterministically(
    client: httpx2.AsyncClient, emulator: MuzaicEmulator
) -> None:
    text = "A calm acoustic morning by the lake"
    data = await ok(client, "/narrationToMuzaic", {"text": text})
    assert data["input_text"] == text
    names = [name for name, _ in data["tags_prediction"]]
    assert names[:2] == ["acoustic", "calm"]
    assert set(data["tags"]) >= {1, 9}
    assert set(data["params"]) == {"intensity", "tempo", "rhythm", "tone", "variance"}
    assert all(1 <= v <= 10 for v in data["params"].values())
    assert all(len(p) == 10 for p in data["params_prediction"].values())
    assert await ok(client, "/narrationToMuzaic", {"text": text}) == data
    assert emulator.tokens == 3600
    response = await client.post("/narrationToMuzaic", json={"text": ""})
    assert (response.status_code, response.json()) == (400, {"error": "No text"})


# --- long generations, faults, loopback -----------------------------------------------------------------


async def test_armed_hold_parks_generations_until_released(now: FakeNow) -> None:
    emulator = MuzaicEmulator(now=now, generation_seconds_per_audio_second=0.2)
    emulator.hold.reset()  # arm
    results: list[httpx2.Response] = []
    transport = httpx2.ASGITransport(app=emulator.app)
    with anyio.fail_after(5):
        async with (
            httpx2.AsyncClient(
                transport=transport, base_url=ORIGIN, headers={"MuzaicAPI-Secret-Key": KEY}
            ) as c,
            anyio.create_task_group() as tg,
        ):

            async def call() -> None:
                results.append(await c.post("/singleFile", json={"duration": 30}))

            tg.start_soon(call)
            while emulator.parked == 0:
                await anyio.sleep(0.01)
            assert results == []
            assert emulator.tokens == 3600
            emulator.hold.set()
    assert results[0].status_code == 200
    assert results[0].json()["executionTime"] == pytest.approx(6.05)
    assert emulator.tokens == 3570
    assert emulator.parked == 0


async def test_unarmed_slow_generation_waits_for_the_injected_clock(now: FakeNow) -> None:
    emulator = MuzaicEmulator(now=now, generation_seconds_per_audio_second=0.5)
    results: list[httpx2.Response] = []
    transport = httpx2.ASGITransport(app=emulator.app)
    with anyio.fail_after(5):
        async with (
            httpx2.AsyncClient(
                transport=transport, base_url=ORIGIN, headers={"MuzaicAPI-Secret-Key": KEY}
            ) as c,
            anyio.create_task_group() as tg,
        ):

            async def call() -> None:
                results.append(await c.post("/singleFile", json={"duration": 10}))

            tg.start_soon(call)
            while emulator.parked == 0:
                await anyio.sleep(0.01)
            now.advance(4.9)
            await anyio.sleep(0.05)
            assert results == []
            now.advance(0.2)
    assert results[0].status_code == 200
    assert emulator.generations == 1


@pytest.mark.loopback
async def test_client_that_disconnects_during_a_long_generation_is_not_charged(now: FakeNow) -> None:
    emulator = MuzaicEmulator(now=now, generation_seconds_per_audio_second=1.0)
    emulator.hold.reset()
    with anyio.fail_after(10):
        async with (
            serve_on_loopback(emulator.app) as url,
            httpx2.AsyncClient(base_url=url, headers={"MuzaicAPI-Secret-Key": KEY}) as c,
        ):
            async with anyio.create_task_group() as tg:
                tg.start_soon(c.post, "/singleFile")
                while emulator.parked == 0:
                    await anyio.sleep(0.01)
                # Abandoning the request closes its connection; the emulator must notice and give up.
                tg.cancel_scope.cancel()
            while emulator.parked:
                await anyio.sleep(0.01)
    assert emulator.tokens == 3600
    assert emulator.generations == 0
    assert emulator.hashes == {}


@pytest.mark.loopback
async def test_old_generation_round_trip_over_loopback_downloads_a_real_wav(emulator: MuzaicEmulator) -> None:
    emulator.generation = "old"
    with anyio.fail_after(10):
        async with serve_on_loopback(emulator.app) as url:
            emulator.base_url = url
            async with httpx2.AsyncClient(base_url=url, headers={"MuzaicAPI-Secret-Key": KEY}) as c:
                data = await ok(c, "/singleFile", {"duration": 7, "tags": [2, 5, 10]})
                assert data["mp3"].startswith(f"{url}/result/")
                async with httpx2.AsyncClient() as anonymous:
                    file = await anonymous.get(data["mp3"])
    assert file.status_code == 200
    assert wav_info(file.content)[3] == pytest.approx(7.0)


async def test_faults_answer_before_the_handler_and_every_request_is_logged(
    client: httpx2.AsyncClient, emulator: MuzaicEmulator
) -> None:
    emulator.faults.add(
        method="POST", path="^/singleFile$", kind="status", status=429, body={"error": "Too Many Requests"}
    )
    response = await client.post("/singleFile", json={"duration": 5})
    assert response.status_code == 429
    assert emulator.generations == 0
    await ok(client, "/singleFile", {"duration": 5})
    assert emulator.requests == [("POST", "/singleFile"), ("POST", "/singleFile")]


async def test_close_forgets_generated_audio(client: httpx2.AsyncClient, emulator: MuzaicEmulator) -> None:
    await ok(client, "/singleFile", {"duration": 2})
    assert emulator.hashes
    emulator.close()
    assert emulator.hashes == {}
