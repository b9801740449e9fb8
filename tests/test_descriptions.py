"""What tools, prompts and results tell an agent answers its next question, and is true.

Each test here is one place where an agent driving the sandbox had to guess (an argument with no
description, a required choice with no default, a window of unstated length) or was told something
false (a prompt pointing a tool at what it cannot take, a warning that was an echo, a failed job
still "working").
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client

from mediamux.config import DEFAULT_DEDUP_WINDOW_S
from mediamux.providers.muzaic import status_notes
from mediamux.sandbox import Sandbox
from mediamux.sandbox.media import wav_sequence_bytes
from mediamux.server.app import MediamuxServer
from mediamux.tools.base import ERROR_META_KEY
from tests.test_muapi_tools import call, text


@pytest.fixture
def talk(files_dir: Path) -> str:
    """A short local recording to upload, by the name a tool takes it."""
    (files_dir / "talk.wav").write_bytes(wav_sequence_bytes([(1.0, 440.0), (0.5, None)]))
    return "talk.wav"


async def tools_by_name(server: MediamuxServer) -> dict[str, Any]:
    async with Client(server) as client:
        with anyio.fail_after(20):
            return {t.name: t for t in (await client.list_tools()).tools}


def parameter(tool: Any, name: str) -> dict[str, Any]:
    return dict(tool.input_schema["properties"][name])


# -- descriptions ------------------------------------------------------------------------------


async def test_the_instructions_say_how_long_the_duplicate_window_is_as_configured(
    make_server: Callable[..., MediamuxServer],
) -> None:
    # new_job is explained once, in the server's instructions, which may follow the configuration
    # (the tool catalog may not: tests/test_tool_surface.py pins that).
    server = make_server(MEDIAMUX_TOOLSETS="all", MEDIAMUX_DEDUP_WINDOW_S="5")
    tools = await tools_by_name(server)

    with_new_job = [t for t in tools.values() if "new_job" in t.input_schema["properties"]]
    assert len(with_new_job) >= 10
    assert all(parameter(t, "new_job") == {"default": False, "type": "boolean"} for t in with_new_job)
    assert "within 5 s" in (server.instructions or "") and "new_job" in (server.instructions or "")
    assert f"{DEFAULT_DEDUP_WINDOW_S:g} s" not in (server.instructions or "")


async def test_upload_video_says_collection_is_an_id_and_what_happens_with_it(
    make_server: Callable[..., MediamuxServer],
) -> None:
    tools = await tools_by_name(make_server(MEDIAMUX_TOOLSETS="museai"))

    description = parameter(tools["museai_upload_video"], "collection")["description"]
    assert "scid" in description and "not its name" in description
    assert "museai_list_collections" in description
    assert "added to" in description


async def test_create_collection_has_muse_ais_documented_visibility_as_its_default(
    make_server: Callable[..., MediamuxServer],
) -> None:
    tools = await tools_by_name(make_server(MEDIAMUX_TOOLSETS="museai"))

    visibility = parameter(tools["museai_create_collection"], "visibility")
    assert "visibility" not in tools["museai_create_collection"].input_schema.get("required", [])
    # muse.ai's document creates collections with "public", and its uploads sent without a
    # visibility come back "public".
    assert visibility["default"] == "public"
    assert "private" in visibility["description"]


async def test_auto_subtitles_says_muse_ai_takes_no_language(
    make_server: Callable[..., MediamuxServer],
) -> None:
    tools = await tools_by_name(make_server(MEDIAMUX_TOOLSETS="museai"))

    # muse.ai's speech and align jobs take a file (and align a phrase), nothing else: a language
    # argument would be one the provider never receives.
    tool = tools["museai_auto_subtitles"]
    assert "language" not in tool.input_schema["properties"]
    assert "language" in (tool.description or "")


# -- muse.ai behaviour the descriptions promise ---------------------------------------------------


@pytest.mark.providers("museai")
async def test_create_collection_without_visibility_creates_a_public_one(
    client: Client, sandbox: Sandbox
) -> None:
    result = await call(client, "museai_create_collection", {"name": "Talks"})

    assert not result.is_error, text(result)
    scid = result.structured_content["scid"]
    assert result.structured_content["visibility"] == "public"
    assert sandbox.museai.collections[scid].visibility == "public"


@pytest.mark.providers("museai")
async def test_upload_into_an_unknown_collection_is_refused_before_the_file_is_sent(
    client: Client, sandbox: Sandbox, talk: str
) -> None:

    result = await call(client, "museai_upload_video", {"path": talk, "collection": "NoSuch1"})

    assert result.is_error
    assert result.meta[ERROR_META_KEY]["class"] == "not_found"
    assert "museai_list_collections" in text(result)
    assert ("POST", "/api/files/upload") not in sandbox.museai.requests
    assert sandbox.museai.videos == {}


@pytest.mark.providers("museai")
async def test_upload_given_a_collection_name_says_which_id_to_pass(
    client: Client, sandbox: Sandbox, talk: str
) -> None:
    created = await call(client, "museai_create_collection", {"name": "Lectures", "visibility": "private"})
    scid = created.structured_content["scid"]

    result = await call(client, "museai_upload_video", {"path": talk, "collection": "Lectures"})

    assert result.is_error
    assert text(result).startswith("[invalid_input] collection: 'Lectures' is the name of collection ")
    assert scid in text(result)
    assert result.meta[ERROR_META_KEY]["arguments"] == ["collection"]
    assert ("POST", "/api/files/upload") not in sandbox.museai.requests


@pytest.mark.providers("museai")
async def test_upload_into_a_collection_by_id_adds_the_video_to_it(
    client: Client, sandbox: Sandbox, talk: str
) -> None:
    scid = (await call(client, "museai_create_collection", {"name": "Lectures"})).structured_content["scid"]

    result = await call(client, "museai_upload_video", {"path": talk, "collection": scid})

    assert not result.is_error, text(result)
    assert result.structured_content["svid"] in sandbox.museai.collections[scid].members


# -- prompts -----------------------------------------------------------------------------------


@pytest.mark.providers("muzaic", "museai")
async def test_the_soundtrack_prompt_points_detect_sounds_at_a_local_file_only(client: Client) -> None:
    with anyio.fail_after(10):
        prompt = await client.get_prompt("soundtrack_for_video", {"svid": "AbC1234"})
    body = prompt.messages[0].content.text

    assert "on its file" not in body
    # museai_detect_sounds takes a path inside the allowed folders, not an svid.
    sentence = next(s for s in body.split("\n") if "museai_detect_sounds" in s)
    assert "local" in sentence and "allowed folders" in sentence


# -- Muzaic results -------------------------------------------------------------------------------


@pytest.mark.unit
@pytest.mark.parametrize(
    ("status", "notes"),
    [
        ("action: generate", []),
        ("action: generate | no params object", []),
        (["action: generate", "no params object"], []),
        (
            "action: generate | unknown param shimmer ignored | tags 1 and 2 conflict",
            ["unknown param shimmer ignored", "tags 1 and 2 conflict"],
        ),
        ("region 0 action: copy | region 1 no params object | soundtrack normalized: auto", []),
        (
            "region 0 normalize: none | region 1 tag 99 not found, ignored",
            ["region 1 tag 99 not found, ignored"],
        ),
        ("motiveId overwritten", ["motiveId overwritten"]),
        (None, []),
    ],
)
def test_muzaic_status_notes_drop_echoes_of_the_request(status: Any, notes: list[str]) -> None:
    assert status_notes(status) == notes


@pytest.mark.providers("muzaic")
@pytest.mark.parametrize("generation", ["new", "old"])
async def test_a_plain_generation_carries_no_warnings(
    client: Client, sandbox: Sandbox, generation: str
) -> None:
    sandbox.muzaic.generation = generation

    result = await call(client, "muzaic_generate_music", {"duration": 6})

    assert not result.is_error, text(result)
    assert result.structured_content["result"]["warnings"] == []


@pytest.mark.providers("muzaic")
async def test_a_soundtrack_reports_only_what_muzaic_warned_about(client: Client) -> None:
    result = await call(
        client,
        "muzaic_create_soundtrack",
        {"regions": [{"time": 0, "duration": 4}, {"time": 4, "duration": 4, "tags": [1, 2]}]},
    )

    assert not result.is_error, text(result)
    warnings = result.structured_content["result"]["warnings"]
    assert warnings and all("action:" not in w and "normaliz" not in w for w in warnings)
    assert any("conflict" in w for w in warnings)


@pytest.mark.providers("muzaic")
async def test_a_failed_muzaic_job_shows_no_provider_status_of_working(client: Client) -> None:
    failed = await call(client, "muzaic_regenerate", {"hash": "0123456789abcdef"})
    job_id = failed.structured_content["job_id"]
    again = await call(client, "jobs_get", {"job_id": job_id})

    for view in (failed.structured_content, again.structured_content):
        assert view["status"] == "failed"
        assert view["provider_status"] != "working"
        assert view["error"]["class"] == "not_found"
