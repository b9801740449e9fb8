"""The helpers every provider client shares: id path segments, numbers, tolerant response models."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx2
import pytest
from pydantic import SecretStr

from mediamux.providers._util import Tolerant, number, path_segment
from mediamux.providers.errors import InvalidRequest, ProviderResponseError
from mediamux.providers.mixpeek import MixpeekClient
from mediamux.providers.muapi import MuapiClient
from mediamux.providers.museai import MuseaiClient
from mediamux.providers.muzaic import MuzaicClient
from mediamux.providers.transport import ProviderHints, Transport

# -- path segments -------------------------------------------------------------------------------

# Every id format the provider documents and NOTES record (§1.3, §3, §4).
DOCUMENTED_IDS = [
    "8KsbyKv",  # muse.ai svid / scid / channel id
    "N3wfN01lm",  # muse.ai subtitle id
    "e5d07990e0ad443d90a8ca4ef11cf3ba",  # muse.ai face cluster id
    "a" * 64,  # muse.ai fid and job id (sha256 hex)
    "a" * 64 + "12345",  # muse.ai fid "plus a random number sometimes"
    "198dacbb-c7d2-41c3-b008-83ea41b29c31",  # Mixpeek task and asset ids
    "abc123xyz",  # MuAPI request_id (the document's example)
    "12345",  # MuAPI request ids may arrive as numbers
    "btch_3f2a9c0d",  # Mixpeek v1 style prefixed ids
]

REFUSED = ["", ".", "..", "a/b", "a\\b", "../x", "a b", " abc", "abc\n", "a?x", "a#x", "%2e%2e", "a%2Fb"]
REFUSED += ["-abc", "_abc", "a.b", "a:b", "x" * 129, "é1", "a\x00b"]


@pytest.mark.parametrize("value", DOCUMENTED_IDS)
def test_every_documented_id_is_one_segment_used_as_given(value: str) -> None:
    assert path_segment(value, "id", title="muse.ai", provider="museai", operation="get_video") == value
    assert path_segment(value, "id", title="MuAPI", provider="muapi", operation="x", dotted=True) == value


@pytest.mark.parametrize("value", REFUSED)
def test_anything_else_is_refused_as_invalid_input_naming_provider_operation_and_field(value: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        path_segment(value, "svid", title="muse.ai", provider="museai", operation="get_video")

    assert caught.value.error_class == "invalid_input"
    assert caught.value.provider == "museai" and caught.value.operation == "get_video"
    assert (
        caught.value.message.startswith("muse.ai get_video: ") and "not a valid svid" in caught.value.message
    )


def test_dotted_ids_admit_dots_and_colons_but_still_no_path_tricks() -> None:
    for ok in ("a.b", "req:42", "v1.2:3-x_y"):
        assert (
            path_segment(ok, "request_id", title="MuAPI", provider="muapi", operation="x", dotted=True) == ok
        )
    for bad in (".", "..", ".hidden", ":x", "a/b", "a?b", "x" * 129):
        with pytest.raises(InvalidRequest):
            path_segment(bad, "request_id", title="MuAPI", provider="muapi", operation="x", dotted=True)


@asynccontextmanager
async def recording(base_url: str) -> AsyncIterator[tuple[Transport, list[httpx2.Request]]]:
    seen: list[httpx2.Request] = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        seen.append(request)
        return httpx2.Response(404, json={"error": "not_found"})

    async with httpx2.AsyncClient(transport=httpx2.MockTransport(handler)) as client:
        yield (
            Transport(provider="x", base_url=base_url, hints=ProviderHints("X", "X_KEY"), client=client),
            seen,
        )


CLIENT_CALLS: list[tuple[str, Callable[[Transport], Awaitable[Any]]]] = [
    ("museai get_video", lambda t: MuseaiClient(t, t).get_video("../etc")),
    ("museai get_subtitles", lambda t: MuseaiClient(t, t).get_subtitles("abc1234", "a.b")),
    ("museai get_job", lambda t: MuseaiClient(t, t).get_job("speech", "a" * 63 + "/")),
    ("mixpeek get_task", lambda t: MixpeekClient(t).get_task("0b0e6c1e:..")),
    ("mixpeek get_asset_features", lambda t: MixpeekClient(t).get_asset_features("a b")),
    ("muapi get_result", lambda t: MuapiClient(t).get_result("..")),
]


@pytest.mark.parametrize(("name", "call"), CLIENT_CALLS, ids=[name for name, _ in CLIENT_CALLS])
async def test_clients_refuse_a_bad_id_before_any_request(
    name: str, call: Callable[[Transport], Awaitable[Any]]
) -> None:
    async with recording("https://provider.example/api") as (transport, seen):
        with pytest.raises(InvalidRequest):
            await call(transport)

    assert seen == []


# -- numbers -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "read"), [(1, 1.0), (2.5, 2.5), ("12", 12.0), (" 1.5 ", 1.5), ("-3", -3.0), (0, 0.0)]
)
def test_numbers_and_numeric_strings_are_read(raw: object, read: float) -> None:
    assert number(raw) == read


@pytest.mark.parametrize(
    "raw", [None, True, False, "x", "", "nan", "inf", math.inf, math.nan, 10**400, [1], {}]
)
def test_flags_garbage_and_non_finite_values_are_no_number(raw: object) -> None:
    assert number(raw) is None


def test_tolerant_models_keep_fields_a_provider_adds_later() -> None:
    class Thing(Tolerant):
        id: str

    assert Thing.model_validate({"id": "x", "new_field": 1}).model_extra == {"new_field": 1}


# -- MuAPI's own paths are not model endpoints ----------------------------------------------------------

RESERVED = {
    "keys": "muapi_create_key",
    "KEYS": "muapi_create_key",
    "Keys/7": "muapi_delete_key",
    "account/balance": "muapi_get_balance",
    "account/topup": "muapi_topup",
    "balance": "muapi_get_balance",
    "topup": "muapi_topup",
    "payments": "muapi_topup",
    "upload_file": "muapi_upload_file",
    "get_upload_url": "muapi_upload_file",
    "predictions/abc123/result": "muapi_get_result",
    "models": "muapi_list_models",
    "models/flux-dev-image/estimate-cost": "muapi_get_model",
    "auth/keys": "mediamux does not",
    "workflow/1/run": "mediamux does not",
}


@pytest.mark.parametrize(("endpoint", "instead"), RESERVED.items(), ids=list(RESERVED))
async def test_a_muapi_account_or_api_path_is_refused_as_a_model_endpoint_before_any_request(
    endpoint: str, instead: str
) -> None:
    seen: list[httpx2.Request] = []

    def record(request: httpx2.Request) -> httpx2.Response:
        seen.append(request)
        return httpx2.Response(200, json={"request_id": "r1", "id": 1, "api_key": "new-key"})

    async with httpx2.AsyncClient(transport=httpx2.MockTransport(record)) as http:
        muapi = MuapiClient(
            Transport(
                provider="muapi",
                base_url="https://api.muapi.ai/api/v1",
                hints=ProviderHints(title="MuAPI", key_env="MUAPI_API_KEY"),
                auth_header="x-api-key",
                api_key=SecretStr("k" * 20),
                client=http,
            )
        )
        with pytest.raises(InvalidRequest) as caught:
            await muapi.submit(endpoint, {"name": "x"})

    assert seen == []
    message = str(caught.value)
    assert message.startswith("MuAPI generate: ") and "is not a model endpoint" in message
    assert instead in message


@pytest.mark.parametrize(
    "endpoint", ["flux-dev-image", "mmaudio-v2/text-to-audio", "kling-v2.1-master-t2v", "keys-art"]
)
def test_model_endpoints_that_merely_resemble_reserved_words_are_accepted(endpoint: str) -> None:
    assert MuapiClient.check_endpoint(endpoint) == endpoint


# -- a job id that carries the key is never handed on ----------------------------------------------------

KEY = "mx_sk_8c1f4e2a9b7d3c60e5f1"
KEY_IN_ID = f"task-{KEY.upper()}"


@asynccontextmanager
async def answering(body: dict[str, Any]) -> AsyncIterator[Transport]:
    async with httpx2.AsyncClient(
        transport=httpx2.MockTransport(lambda r: httpx2.Response(200, json=body))
    ) as http:
        yield Transport(
            provider="x",
            base_url="https://provider.example/api",
            hints=ProviderHints("X", "X_KEY"),
            auth_header="Authorization",
            api_key=SecretStr(KEY),
            client=http,
        )


SUBMISSIONS: list[tuple[str, dict[str, Any], Callable[[Transport, Path], Awaitable[Any]]]] = [
    (
        "mixpeek index_url",
        {"task_id": KEY_IN_ID, "message": "ok"},
        lambda t, _p: MixpeekClient(t).index_url("https://example.com/v.mp4", "col_1"),
    ),
    (
        "museai speech job",
        {"id": KEY_IN_ID},
        lambda t, p: MuseaiClient(t, t).submit_job("speech", p / "a.mp4", [p]),
    ),
]


@pytest.mark.parametrize(("name", "body", "submit"), SUBMISSIONS, ids=[s[0] for s in SUBMISSIONS])
async def test_a_submission_answered_with_an_id_carrying_the_key_fails_as_possibly_acted_upon(
    name: str, body: dict[str, Any], submit: Callable[[Transport, Path], Awaitable[Any]], tmp_path: Path
) -> None:
    (tmp_path / "a.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 64)

    async with answering(body) as transport:
        with pytest.raises(ProviderResponseError) as caught:
            await submit(transport, tmp_path)

    assert caught.value.maybe_sent is True
    assert "contains the API key" in str(caught.value)
    assert KEY.upper() not in str(caught.value) and KEY not in str(caught.value)


async def test_a_muzaic_hash_carrying_the_key_is_dropped_but_the_paid_music_is_kept() -> None:
    body = {"mp3": "https://cdn.muzaic.example/a.mp3", "hash": KEY_IN_ID, "tokensUsed": 30}

    async with answering(body) as transport:
        generation = await MuzaicClient(transport).single_file(duration=30, tags=[1], params={})

    assert generation.audio.url == "https://cdn.muzaic.example/a.mp3"
    assert generation.hash is None and generation.region_hashes == []
    assert generation.tokens_used == 30
