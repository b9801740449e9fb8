"""Muzaic tools through the real server against the Muzaic emulator, in one protocol era (prompts in both)."""

from __future__ import annotations

import io
import json
import wave
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client

from mediamux.clock import FakeClock
from mediamux.sandbox import Sandbox
from mediamux.server.app import MediamuxServer
from tests.support import eventually
from tests.test_muapi_tools import call, text

pytestmark = pytest.mark.providers("muzaic")


def wav_seconds(path: str) -> float:
    with wave.open(io.BytesIO(Path(path).read_bytes())) as w:
        return w.getnframes() / w.getframerate()


@pytest.mark.parametrize("generation", ["new", "old"])
async def test_generate_music_saves_audio_of_the_requested_length_in_either_response_generation(
    client: Client, sandbox: Sandbox, generation: str, home: Path
) -> None:
    sandbox.muzaic.generation = generation

    result = await call(client, "muzaic_generate_music", {"duration": 12, "tags": [1], "tone": 7})

    assert not result.is_error, text(result)
    data = result.structured_content
    assert data["status"] == "completed"
    assert data["cost"]["tokens"] == 12
    assert data["cost"]["usd"] is None  # Muzaic reports tokens, not dollars
    saved = data["result"]["saved"]
    assert len(saved) == 1 and Path(saved[0]["path"]).parent == home / "outputs"
    assert wav_seconds(saved[0]["path"]) == pytest.approx(12, abs=0.01)
    assert data["result"]["hash"]
    assert (data["result"]["provider_url"] is not None) == (generation == "old")
    # Base64 audio never reaches the model: the whole result stays small.
    assert len(text(result)) < 4000
    assert "base64" not in text(result)


async def test_keyframes_and_params_are_sent_as_documented(client: Client, sandbox: Sandbox) -> None:
    result = await call(
        client,
        "muzaic_generate_music",
        {"duration": 8, "intensity": [[0, 2], [50, 9], [100, 3]], "tempo": 4, "variance": 6},
    )

    assert not result.is_error, text(result)
    assert sandbox.muzaic.generations == 1


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        ({"duration": 10, "intensity": [[10, 2], [100, 3]]}, "start at 0"),
        ({"duration": 10, "intensity": [[0, 2], [90, 3]]}, "end at 100"),
        ({"duration": 10, "rhythm": [[0, 2], [60, 3], [40, 4], [100, 5]]}, "increase"),
        ({"duration": 10, "tone": [[0, 2], [100, 12]]}, "tone"),
        ({"duration": 10, "tempo": [[0, 2], [100, 3]]}, "tempo"),
        ({"duration": 10, "variance": 0}, "variance"),
        ({"duration": 0}, "duration"),
        ({"duration": 1201}, "duration"),
    ],
)
async def test_invalid_keyframes_and_params_are_refused_before_any_call(
    client: Client, sandbox: Sandbox, args: dict[str, Any], fragment: str
) -> None:
    result = await call(client, "muzaic_generate_music", args)

    assert result.is_error
    assert fragment in text(result)
    assert sandbox.muzaic.requests == []


async def test_unknown_tags_are_refused_and_conflicting_tags_are_reported(
    client: Client, sandbox: Sandbox
) -> None:
    unknown = await call(client, "muzaic_generate_music", {"duration": 5, "tags": [999]})
    assert unknown.is_error and "999" in text(unknown)
    assert sandbox.muzaic.generations == 0

    conflicting = await call(client, "muzaic_generate_music", {"duration": 5, "tags": [1, 2]})
    assert not conflicting.is_error, text(conflicting)
    warnings = conflicting.structured_content["result"]["warnings"]
    assert any("acoustic" in w and "electronic" in w and "conflict" in w for w in warnings)


async def test_tags_are_listed_with_conflicts_and_read_once_per_server(
    client: Client, sandbox: Sandbox
) -> None:
    first = await call(client, "muzaic_list_tags")
    await call(client, "muzaic_list_tags")

    catalog = first.structured_content
    assert {"id": 1, "name": "acoustic"}.items() <= catalog["tags"][0].items()
    assert any(c["tags"] == [1, 2] and c["value"] < 0 for c in catalog["conflicts"])
    assert [p for _, p in sandbox.muzaic.requests].count("/getTags") == 1


@pytest.mark.parametrize("generation", ["new", "old"])
async def test_soundtrack_regions_copy_earlier_music_by_hash(
    client: Client, sandbox: Sandbox, generation: str
) -> None:
    sandbox.muzaic.generation = generation
    first = (await call(client, "muzaic_generate_music", {"duration": 6, "tags": [5]})).structured_content
    source = first["result"]["hash"]

    result = await call(
        client,
        "muzaic_create_soundtrack",
        {
            "regions": [
                {"time": 0, "duration": 6, "tags": [10], "params": {"intensity": [[0, 1], [100, 9]]}},
                {"time": 6, "duration": 6, "action": "copy", "source_hash": source},
            ]
        },
    )

    assert not result.is_error, text(result)
    data = result.structured_content
    assert len(data["result"]["region_hashes"]) == 2
    assert wav_seconds(data["result"]["saved"][0]["path"]) == pytest.approx(12, abs=0.01)
    assert data["cost"]["tokens"] == 12


@pytest.mark.parametrize(
    ("regions", "fragment"),
    [
        ([{"time": 0, "duration": 10}, {"time": 5, "duration": 10}], "overlap"),
        ([{"time": 0, "duration": 5, "action": "copy"}], "source_hash"),
        ([], "regions"),
    ],
)
async def test_invalid_soundtracks_are_refused_before_any_call(
    client: Client, sandbox: Sandbox, regions: list[dict[str, Any]], fragment: str
) -> None:
    result = await call(client, "muzaic_create_soundtrack", {"regions": regions})

    assert result.is_error and fragment in text(result)
    assert sandbox.muzaic.requests == []


async def test_regenerate_renders_the_same_music_again_from_its_hash(client: Client) -> None:
    first = (await call(client, "muzaic_generate_music", {"duration": 5})).structured_content

    again = await call(client, "muzaic_regenerate", {"hash": first["result"]["hash"]})
    missing = await call(client, "muzaic_regenerate", {"hash": "0" * 32})

    assert not again.is_error, text(again)
    assert again.structured_content["result"]["saved"][0]["sha256"] == first["result"]["saved"][0]["sha256"]
    assert missing.is_error and missing.meta["mediamux/error"]["class"] == "not_found"


@pytest.mark.parametrize("shape", ["old", "new", "mcp"])
async def test_account_details_in_every_shape_never_pass_on_the_secret_key(
    client: Client, sandbox: Sandbox, shape: str
) -> None:
    sandbox.muzaic.account_shape = shape

    result = await call(client, "muzaic_get_account")

    assert not result.is_error, text(result)
    account = result.structured_content
    # The old shape reports free tokens and a billing balance rather than tokens remaining.
    remaining = account["free_tokens"] if shape == "old" else account["tokens_remaining"]
    assert remaining == pytest.approx(3600)
    assert "sandbox-muzaic-key" not in json.dumps(result.model_dump(mode="json"))
    assert "secret" not in json.dumps(result.structured_content).lower()


async def test_insufficient_tokens_is_an_actionable_error_and_nothing_is_generated(
    client: Client, sandbox: Sandbox
) -> None:
    sandbox.muzaic.tokens = 3

    result = await call(client, "muzaic_generate_music", {"duration": 10})

    assert result.is_error
    assert result.structured_content["error"]["class"] == "insufficient_credits"
    assert "Muzaic" in text(result)
    assert sandbox.muzaic.generations == 0 and sandbox.muzaic.tokens == 3


async def test_a_long_render_outlives_the_wait_budget_and_jobs_wait_collects_it(
    client: Client, sandbox: Sandbox
) -> None:
    sandbox.muzaic.generation_seconds_per_audio_second = 1.0
    sandbox.muzaic.hold.reset()  # the render waits until released

    started = await call(client, "muzaic_generate_music", {"duration": 30, "wait_s": 0.2})
    assert not started.is_error, text(started)
    assert started.structured_content["status"] in ("queued", "running")
    job_id = started.structured_content["job_id"]

    sandbox.muzaic.hold.set()
    finished = await call(client, "jobs_wait", {"job_id": job_id, "wait_s": 60})

    assert finished.structured_content["status"] == "completed", text(finished)
    assert wav_seconds(finished.structured_content["result"]["saved"][0]["path"]) == pytest.approx(
        30, abs=0.01
    )
    assert sandbox.muzaic.generations == 1


async def test_cancelling_the_call_during_a_long_render_loses_nothing(
    make_server: Callable[..., MediamuxServer], sandbox: Sandbox, clock: FakeClock
) -> None:
    sandbox.muzaic.generation_seconds_per_audio_second = 1.0
    sandbox.muzaic.hold.reset()
    async with Client(make_server()) as client:
        with anyio.fail_after(20):
            async with anyio.create_task_group() as tg:
                tg.start_soon(client.call_tool, "muzaic_generate_music", {"duration": 20, "wait_s": 600})
                await eventually(lambda: sandbox.muzaic.parked >= 1)
                tg.cancel_scope.cancel()
        # The render was not abandoned with the call: it finishes and is recorded.
        sandbox.muzaic.hold.set()
        jobs = (await call(client, "jobs_list")).structured_content["jobs"]
        assert len(jobs) == 1
        finished = await call(client, "jobs_wait", {"job_id": jobs[0]["job_id"], "wait_s": 60})

    assert finished.structured_content["status"] == "completed", text(finished)
    assert sandbox.muzaic.generations == 1


async def test_budget_refuses_a_render_whose_token_estimate_would_exceed_it(
    make_server: Callable[..., MediamuxServer], sandbox: Sandbox
) -> None:
    server = make_server(MEDIAMUX_BUDGET_USD="0.10", MEDIAMUX_MUZAIC_USD_PER_TOKEN="0.01")
    async with Client(server) as client:
        small = await call(client, "muzaic_generate_music", {"duration": 5})
        large = await call(client, "muzaic_generate_music", {"duration": 30})

    assert not small.is_error, text(small)
    assert small.structured_content["cost"]["usd"] == pytest.approx(0.05)
    assert large.is_error and large.meta["mediamux/error"]["class"] == "budget"
    assert "$0.30" in text(large)
    assert sandbox.muzaic.generations == 1


async def test_an_identical_generation_is_not_paid_twice(client: Client, sandbox: Sandbox) -> None:
    one = (await call(client, "muzaic_generate_music", {"duration": 7, "tags": [2]})).structured_content
    two = (await call(client, "muzaic_generate_music", {"duration": 7, "tags": [2]})).structured_content

    assert two["job_id"] == one["job_id"] and two["deduplicated"] is True
    assert sandbox.muzaic.generations == 1


@pytest.mark.providers("muzaic", "museai", "mixpeek", "muapi")  # every prompt is registered
@pytest.mark.both_eras
async def test_prompts_guide_multi_provider_workflows(client: Client) -> None:
    with anyio.fail_after(10):
        names = {p.name for p in (await client.list_prompts()).prompts}
        soundtrack = await client.get_prompt("soundtrack_for_video", {"svid": "AbC1234"})

    assert {"soundtrack_for_video", "find_moments", "subtitle_video"} <= names
    body = soundtrack.messages[0].content.text
    assert "AbC1234" in body and "museai_get_video" in body and "muzaic_generate_music" in body


@pytest.mark.parametrize(("generation", "allowed"), [("new", False), ("old", True)])
async def test_the_duration_limit_follows_the_api_generation_that_answers(
    client: Client, sandbox: Sandbox, generation: str, allowed: bool
) -> None:
    sandbox.muzaic.generation = generation
    first = await call(client, "muzaic_generate_music", {"duration": 10})
    assert not first.is_error, text(first)
    made = sandbox.muzaic.generations

    longer = await call(client, "muzaic_generate_music", {"duration": 400})

    if allowed:
        assert not longer.is_error, text(longer)
    else:
        assert longer.is_error and longer.meta["mediamux/error"]["class"] == "invalid_input"
        assert text(longer).startswith("[invalid_input] duration: at most 300 seconds")
        assert "newer generation" in text(longer) and longer.meta["mediamux/error"]["arguments"] == [
            "duration"
        ]
        assert sandbox.muzaic.generations == made  # refused before any call
