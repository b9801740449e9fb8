"""Muzaic client: tags, both response generations of the generation endpoints, account shapes, errors.

Shapes are quoted from ``shared/providers/muzaic-api.txt`` (S2) and NOTES §2: the older docs (mp3 as a
URL, ``regions: [{number, hash}]``, ``{"Error": …}``), the newer OpenAPI (mp3 as base64,
``regionHashes``, ``audioDuration``, ``{"error": …}``) and the official MCP server's reading (``wav``,
``tagRelations`` as a list). The last test is a round trip against the emulator's ASGI app.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

import httpx2
import pytest

from mediamux.providers.errors import (
    AuthFailed,
    InsufficientCredits,
    InvalidRequest,
    NotFound,
    ProviderError,
    ProviderResponseError,
    ServerError,
)
from mediamux.providers.muzaic import MuzaicClient, parse_account, parse_tags
from mediamux.sandbox.media import wav_info
from mediamux.sandbox.muzaic import MuzaicEmulator
from tests.sandbox.conftest import FakeNow
from tests.unit.conftest import KEY, Wire, always, answer

BASE = "https://m10.muzaic.ai"
MP3 = b"ID3\x03\x00\x00\x00" + bytes(range(64))
HASH = "9191593eb3992ba7c4307455c0e1b5ca"


def muzaic(
    wire: Callable[..., Wire], handler: Callable[[httpx2.Request], httpx2.Response]
) -> tuple[MuzaicClient, Wire]:
    w = wire("muzaic", BASE, handler)
    return MuzaicClient(w.transport), w


# -- tags ----------------------------------------------------------------------------------------


def test_tags_are_read_from_string_fields_with_their_bonuses_and_inactive_ones_dropped() -> None:
    raw = {
        "tags": [
            {
                "id": "1",
                "name": "acoustic",
                "int_bonus": "-1",
                "tem_bonus": "0",
                "tagCategoryId": "4",
                "active": "1",
            },
            {"id": "2", "name": "electronic", "rhy_bonus": "2", "tagCategoryId": "4", "secret": "0"},
            {"id": "3", "name": "retired", "active": "0"},
            {"name": "no id"},
            "junk",
        ]
    }

    catalog = parse_tags(raw)

    assert [(t.id, t.name, t.category_id) for t in catalog.tags] == [(1, "acoustic", 4), (2, "electronic", 4)]
    assert catalog.tags[0].bonuses == {"int": -1, "tem": 0} and catalog.tags[1].bonuses == {"rhy": 2}


@pytest.mark.parametrize(
    "relations",
    [
        {"tagsRelations": {"1": {"2": -1, "4": -1}, "2": {"1": -1}, "5": {"10": 1}}},  # the docs' shape
        {
            "tagRelations": [  # the official MCP server's reading
                {"tag1": 1, "tag2": 2, "value": -1},
                {"tag1": 4, "tag2": 1, "value": -1},
                {"tag1": 5, "tag2": 10, "value": 1},
                {"tag1": 3, "tag2": 3, "value": -1},
            ]
        },
    ],
    ids=["tagsRelations-object", "tagRelations-list"],
)
def test_tag_conflicts_are_read_from_either_relations_shape(relations: dict[str, Any]) -> None:
    catalog = parse_tags({"tags": [], **relations})

    assert [(c.tags, c.value) for c in catalog.conflicts] == [((1, 2), -1), ((1, 4), -1), ((5, 10), 1)]
    assert [c.tags for c in catalog.conflicts_among([1, 2, 5, 10])] == [(1, 2)]  # only negatives conflict


async def test_get_tags_reads_a_bare_list_too(wire: Callable[..., Wire]) -> None:
    client, w = muzaic(wire, always(answer(200, [{"id": 7, "name": "happy"}])))

    catalog = await client.get_tags()

    assert [t.name for t in catalog.tags] == ["happy"] and catalog.conflicts == []
    assert (w.sent[0].method, str(w.sent[0].url)) == ("GET", f"{BASE}/getTags")
    assert w.sent[0].headers["MuzaicAPI-Secret-Key"] == KEY


# -- generation ----------------------------------------------------------------------------------


async def test_the_old_single_file_answer_gives_a_url_a_hash_and_tokens(wire: Callable[..., Wire]) -> None:
    body = {
        "apiVersion": "1.2.0",
        "mp3": "https://api.muzaic.ai/result/2024-01-17/57c1bc6585f67ab2cf328b8fb1376e1b.mp3",
        "hash": HASH,
        "status": "no params object",
        "tokensUsed": 48,
        "executionTime": 9.0536079406738,
    }
    client, w = muzaic(wire, always(answer(200, body)))

    generation = await client.single_file(duration=48, tags=[1], params={})

    assert generation.audio.url == body["mp3"] and generation.audio.data is None
    assert (generation.hash, generation.tokens_used, generation.api_version) == (HASH, 48, "1.2.0")
    # "no params object" only repeats the request (it sent none): not a note worth passing on.
    assert generation.status == [] and generation.execution_time_s == pytest.approx(9.05, abs=0.01)
    assert (generation.cost.tokens, generation.cost.usd, generation.cost.source) == (48, None, "body")
    assert w.sent[0].json() == {"duration": 48, "tags": [1]}  # no params object, no normalize: not sent


async def test_the_first_documented_example_reads_without_a_hash(wire: Callable[..., Wire]) -> None:
    body = {
        "mp3": "https://api.muzaic.ai/result/a.mp3",
        "motiveId": 16,
        "status": "action: generate",
        "tokensUsed": 48,
    }
    client, _ = muzaic(wire, always(answer(200, body)))

    generation = await client.single_file(duration=48, tags=[], params={"tempo": 5})

    assert generation.hash is None and generation.status == []  # "action: generate" is an echo


async def test_the_new_single_file_answer_carries_base64_audio_and_its_duration(
    wire: Callable[..., Wire],
) -> None:
    body = {
        "apiVersion": "2.0",
        "mp3": "data:audio/mp3;base64," + base64.b64encode(MP3).decode(),
        "audioDuration": 12.0,
        "hash": HASH,
        "status": ["ok"],
        "tokensUsed": 12,
    }
    client, w = muzaic(wire, always(answer(200, body)))

    generation = await client.single_file(
        duration=12, tags=[1], params={"intensity": [[0, 2], [100, 9]]}, normalize=True
    )

    assert generation.audio.data == MP3 and generation.audio.url is None
    assert generation.audio.media_type == "audio/mp3" and generation.audio_duration_s == 12.0
    assert "data" not in generation.model_dump()  # audio bytes never travel in a dump
    assert w.sent[0].json() == {
        "duration": 12,
        "tags": [1],
        "params": {"intensity": [[0, 2], [100, 9]]},
        "normalize": True,
    }


async def test_a_wav_field_is_read_as_wav_audio(wire: Callable[..., Wire]) -> None:
    body = {"wav": base64.b64encode(b"RIFF....WAVE").decode(), "soundtrackHash": HASH, "duration": 5}
    client, _ = muzaic(wire, always(answer(200, body)))

    generation = await client.single_file(duration=5, tags=[], params={})

    assert (generation.audio.media_type, generation.audio.data) == ("audio/wav", b"RIFF....WAVE")
    assert generation.hash == HASH and generation.audio_duration_s == 5


@pytest.mark.parametrize(
    "body",
    [
        {  # old: regions numbered, possibly out of order
            "mp3": "https://api.muzaic.ai/result/2024-01-31/st_3b12.mp3",
            "regions": [{"number": 1, "hash": "b" * 32}, {"number": 0, "hash": "a" * 32}],
            "status": "region 0 normalize: none | region 1 no params object | soundtrack normalized: auto",
            "tokensUsed": 65,
        },
        {  # new: a count and a list of hashes
            "mp3": base64.b64encode(MP3).decode(),
            "regions": 2,
            "regionHashes": ["a" * 32, "b" * 32],
            "status": ["region 0 ok", "region 1 ok"],
            "tokensUsed": 65,
        },
    ],
    ids=["old", "new"],
)
async def test_soundtrack_region_hashes_come_back_in_region_order(
    wire: Callable[..., Wire], body: dict[str, Any]
) -> None:
    client, w = muzaic(wire, always(answer(200, body)))
    regions = [
        {"time": 0, "duration": 20.2, "tags": [17]},
        {"time": 20.2, "duration": 27.8, "action": "copy"},
    ]

    generation = await client.soundtrack(regions=regions, normalize="auto")

    assert generation.region_hashes == ["a" * 32, "b" * 32] and generation.tokens_used == 65
    assert w.sent[0].json() == {"regions": regions, "normalize": "auto"} and w.sent[0].path == "/soundtrack"


async def test_regenerate_sends_the_hash_under_both_documented_names(wire: Callable[..., Wire]) -> None:
    body = {
        "apiVersion": "1.2.0",
        "mp3": "https://api.muzaic.ai/result/2024-03-18/st_2b.mp3",
        "tokensUsed": 10,
    }
    client, w = muzaic(wire, always(answer(200, body)))

    generation = await client.audio_from_hash(HASH)

    assert generation.tokens_used == 10
    assert w.sent[0].path == "/audioFromHash" and w.sent[0].json() == {"sourceHash": HASH, "hash": HASH}


async def test_an_answer_without_audio_may_have_been_charged(wire: Callable[..., Wire]) -> None:
    client, w = muzaic(wire, always(answer(200, {"status": "done", "tokensUsed": 10})))

    with pytest.raises(ProviderResponseError, match="no audio") as caught:
        await client.single_file(duration=10, tags=[], params={})

    assert caught.value.maybe_sent is True and len(w.sent) == 1


async def test_status_diagnostics_are_scrubbed_of_control_characters_and_the_key(
    wire: Callable[..., Wire],
) -> None:
    body = {"mp3": "https://m10.muzaic.ai/result/x.mp3", "status": [f"key {KEY} accepted\x1b[31m", None, ""]}
    client, _ = muzaic(wire, always(answer(200, body)))

    generation = await client.single_file(duration=1, tags=[], params={})

    assert generation.status == ["key [redacted] accepted[31m"]


async def test_a_generation_answered_with_a_5xx_is_never_sent_again(wire: Callable[..., Wire]) -> None:
    client, w = muzaic(wire, always(answer(503, {"error": "busy"})))

    with pytest.raises(ServerError) as caught:
        await client.single_file(duration=30, tags=[], params={})

    assert caught.value.maybe_sent is True
    assert len(w.sent) == 1 and w.clock.sleeps == []


# -- account -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (  # old docs
            {
                "apiVersion": "1.2.0",
                "secretKey": "X" * 32,
                "freeTokensAvailable": 0,
                "totalUsedTokens": 2238247,
                "currentBalance": 248903,
            },
            {"free_tokens": 0, "tokens_used": 2238247, "current_balance": 248903, "tokens_remaining": None},
        ),
        (  # new OpenAPI
            {
                "accountId": 42,
                "name": "Studio",
                "tokensRemaining": 3600,
                "tokensUsed": 120,
                "plan": "pro",
                "expiresAt": "2026-12-31T00:00:00Z",
            },
            {
                "tokens_remaining": 3600,
                "tokens_used": 120,
                "plan": "pro",
                "account_id": "42",
                "name": "Studio",
            },
        ),
        (  # what the official MCP server reads
            {"balance": 900, "used": 100, "apiKey": "X" * 32},
            {"tokens_remaining": 900, "tokens_used": 100},
        ),
    ],
    ids=["old", "new", "mcp"],
)
def test_account_details_read_every_documented_shape_and_drop_secrets(
    raw: dict[str, Any], expected: dict[str, Any]
) -> None:
    account = parse_account(raw)

    dumped = account.model_dump()
    assert {k: dumped[k] for k in expected} == expected
    assert "X" * 32 not in repr(account) and "X" * 32 not in str(dumped)


# -- errors --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "body", "kind", "message"),
    [
        (
            400,
            {"Error": "No regions list"},
            InvalidRequest,
            "Muzaic create_soundtrack: invalid request (400): No regions list",
        ),
        (
            404,
            {"error": "Hash not found"},
            NotFound,
            "Muzaic create_soundtrack: not found (404): Hash not found",
        ),
        (401, {"error": "Unauthorized"}, AuthFailed, "Muzaic create_soundtrack: authentication failed (401)"),
        (402, {"error": "Top up at adminpanel.muzaic.ai"}, InsufficientCredits, "not enough credits (402)"),
    ],
)
async def test_error_bodies_in_either_capitalisation_map_to_their_class(
    wire: Callable[..., Wire], status: int, body: dict[str, str], kind: type[ProviderError], message: str
) -> None:
    client, w = muzaic(wire, always(answer(status, body)))

    with pytest.raises(kind) as caught:
        await client.soundtrack(regions=[])

    assert message in str(caught.value)
    assert caught.value.maybe_sent is False and len(w.sent) == 1


# -- against the emulator ------------------------------------------------------------------------


@pytest.mark.parametrize("generation", ["new", "old"])
async def test_a_generation_round_trip_against_the_emulator_in_process(
    wire: Callable[..., Wire], generation: str
) -> None:
    emulator = MuzaicEmulator(now=FakeNow(), master_key=KEY)
    emulator.generation = generation  # type: ignore[assignment]
    try:
        client = MuzaicClient(wire("muzaic", "http://muzaic.test", app=emulator.app).transport)

        made = await client.single_file(duration=6, tags=[1], params={"tempo": 4})
        catalog = await client.get_tags()
        account = await client.account()
    finally:
        emulator.close()

    assert made.tokens_used == 6 and made.hash
    if generation == "new":
        assert made.audio.data is not None
        assert wav_info(made.audio.data)[3] == pytest.approx(6, abs=0.01)  # seconds of audio
    else:
        assert made.audio.url is not None and made.audio.url.startswith("http")
    assert any(t.id == 1 and t.name == "acoustic" for t in catalog.tags)
    # The old shape reports remaining tokens as free tokens; every shape echoes the key, which is dropped.
    remaining = account.free_tokens if generation == "old" else account.tokens_remaining
    assert remaining == pytest.approx(3600 - 6) and account.tokens_used == 6
    assert KEY not in repr(account)
