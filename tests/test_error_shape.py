"""Every error reaches the model in one shape: ``[class] argument: what is wrong; what to do``.

The SDK validates a call's arguments against the tool's schema before the tool runs; its own text
is pydantic's (type codes, input echoes, a pydantic.dev link). These tests hold the server to the
shape the tools' own errors use, in both protocol eras, for every tool in the catalog.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from mcp import Client, MCPError
from mcp_types import INVALID_PARAMS

from mediamux.clock import FakeClock
from mediamux.sandbox import Sandbox
from mediamux.sandbox.media import wav_sequence_bytes
from mediamux.server.app import MediamuxServer
from mediamux.tools.base import ERROR_META_KEY
from mediamux.tools.muapi import MODEL_CATALOG_TTL_S
from tests.test_muapi_tools import call, text

ADVICE = "fix the arguments and call again"


def assert_invalid_input(result: Any, argument: str) -> str:
    body = text(result)
    assert result.is_error, body
    assert body.startswith("[invalid_input] "), body
    assert f"] {argument}: " in body or f"] {argument}." in body or f"; {argument}" in body, body
    assert body.endswith(ADVICE), body
    for leak in ("pydantic", "Error executing tool", "type=", "input_value", "Arguments"):
        assert leak not in body, body
    meta = result.meta[ERROR_META_KEY]
    assert meta["class"] == "invalid_input"
    assert f"[invalid_input] {meta['message']}" == body
    assert argument.split(".")[0] in meta["arguments"]
    return body


@pytest.mark.both_eras
@pytest.mark.providers("muzaic")
async def test_an_argument_out_of_range_names_the_argument_its_limit_and_what_to_do(client: Client) -> None:
    result = await call(client, "muzaic_generate_music", {"duration": 5000})

    body = assert_invalid_input(result, "duration")
    assert body == "[invalid_input] duration: at most 1200 seconds, got 5000; " + ADVICE


@pytest.mark.both_eras
@pytest.mark.providers("muzaic")
async def test_a_missing_argument_and_a_wrong_type_read_the_same_way(client: Client) -> None:
    missing = await call(client, "muzaic_generate_music", {})
    assert assert_invalid_input(missing, "duration") == "[invalid_input] duration: required; " + ADVICE

    wrong = await call(client, "muzaic_generate_music", {"duration": "long"})
    assert "duration: must be a whole number, got 'long'" in assert_invalid_input(wrong, "duration")


@pytest.mark.providers("muzaic")
async def test_a_union_argument_reports_the_reason_of_the_form_it_was_given_in(client: Client) -> None:
    # tone is a level 1-9 or a keyframe curve: a curve that stops at 50 % fails as a curve, and
    # "should be an integer" from the other form would only mislead.
    result = await call(client, "muzaic_generate_music", {"duration": 10, "tone": [[0, 2], [50, 3]]})

    body = assert_invalid_input(result, "tone")
    assert "keyframes must start at 0 % and end at 100 %" in body
    assert "integer" not in body and "whole number" not in body
    assert body.count("tone: ") == 1


@pytest.mark.providers("muzaic")
async def test_a_nested_argument_is_named_by_its_path(client: Client) -> None:
    result = await call(client, "muzaic_create_soundtrack", {"regions": [{"time": 0, "duration": 5000}]})

    body = assert_invalid_input(result, "regions.0.duration")
    assert "regions.0.duration: at most 1200 seconds, got 5000" in body


@pytest.mark.both_eras
@pytest.mark.providers("muzaic")
async def test_an_unknown_tool_is_invalid_params_and_the_closest_names_are_suggested(
    client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    # Both eras' specifications make an unknown tool a protocol error (-32602), not a tool result.
    caplog.set_level(logging.DEBUG)
    with pytest.raises(MCPError) as refused:
        await call(client, "muzaic_generate", {"duration": 5})

    error = refused.value.error
    assert error.code == INVALID_PARAMS
    assert error.message.startswith("no tool named 'muzaic_generate'"), error.message
    assert "muzaic_generate_music" in error.message.split("; ")[1], error.message
    assert error.data["class"] == "not_found"
    assert error.data["tool"] == "muzaic_generate"
    assert "muzaic_generate_music" in error.data["closest"]
    assert [r.levelno for r in caplog.records if "no tool named" in r.getMessage()] == [logging.DEBUG]
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING or r.exc_info], caplog.text


# Invalid for every parameter type the tools use (strings, numbers, levels or curves, lists of
# ids or regions, objects): a list holding a list holding an empty list.
NOTHING_ACCEPTS = [[[]]]


async def test_every_tool_reports_a_schema_violation_in_the_one_shape(
    make_server: Callable[..., MediamuxServer],
) -> None:
    async with Client(make_server(MEDIAMUX_TOOLSETS="all")) as client:
        tools = (await client.list_tools()).tools
        checked = 0
        for tool in tools:
            properties = tool.input_schema.get("properties") or {}
            if not properties:
                continue
            argument = next(iter(properties))
            result = await call(client, tool.name, {argument: NOTHING_ACCEPTS})
            assert_invalid_input(result, argument)
            checked += 1
    assert checked >= 40


@pytest.mark.providers("muzaic")
async def test_a_bad_point_inside_a_curve_is_named_without_the_other_forms_complaint(client: Client) -> None:
    result = await call(client, "muzaic_generate_music", {"duration": 10, "intensity": [[0, 2], [100, 30]]})

    body = assert_invalid_input(result, "intensity")
    assert body == "[invalid_input] intensity.1.1: at most 9, got 30; " + ADVICE


async def test_a_tool_of_a_toolset_that_is_not_enabled_says_why_it_is_missing(
    make_server: Callable[..., MediamuxServer],
) -> None:
    async with Client(make_server(MEDIAMUX_TOOLSETS="muzaic,jobs")) as client:
        with pytest.raises(MCPError) as refused:
            await call(client, "muapi_generate", {"endpoint": "flux-dev-image", "params": {}})

    assert refused.value.error.code == INVALID_PARAMS
    assert refused.value.error.message.startswith(
        "muapi_generate is not offered by this server: the muapi toolset is not enabled"
    )


@pytest.mark.providers("muapi")
async def test_a_refused_local_file_is_named_by_the_argument_it_came_in(client: Client) -> None:
    direct = await call(client, "muapi_upload_file", {"path": "missing.png"})
    nested = await call(
        client,
        "muapi_generate",
        {"endpoint": "flux-dev-image", "params": {"prompt": "x", "image_url": "/etc/hostname"}},
    )

    assert text(direct).startswith("[invalid_input] path: ")
    assert direct.meta[ERROR_META_KEY]["arguments"] == ["path"]
    assert text(nested).startswith("[invalid_input] params.image_url: ")
    assert nested.meta[ERROR_META_KEY]["arguments"] == ["params"]


@pytest.mark.providers("muzaic")
async def test_an_error_the_tool_body_finds_reads_like_a_schema_violation(client: Client) -> None:
    result = await call(client, "muzaic_generate_music", {"duration": 5, "tags": [999]})

    assert re.fullmatch(
        r"\[invalid_input\] tags: unknown Muzaic tag id\(s\) \[999\]; muzaic_list_tags lists the \d+ valid ids",
        text(result),
    ), text(result)
    assert result.meta[ERROR_META_KEY]["arguments"] == ["tags"]


# -- not found: which tool lists the valid ids ---------------------------------------------------

NOT_FOUND = [
    ("museai_get_video", {"svid": "nope"}, "museai_list_videos"),
    ("museai_delete_video", {"fid": "abcdef0123456789"}, "museai_list_videos"),
    ("museai_list_subtitles", {"svid": "nope"}, "museai_list_videos"),
    ("museai_get_collection", {"scid": "nope"}, "museai_list_collections"),
    ("museai_delete_collection", {"scid": "nope"}, "museai_list_collections"),
    ("museai_add_to_collection", {"scid": "nope", "svid": "nope"}, "museai_list_collections"),
    ("muapi_get_model", {"name": "no-such-model"}, "muapi_list_models"),
    ("muapi_get_result", {"request_id": "no-such-request"}, "jobs_list"),
    ("muapi_delete_key", {"key_id": 987654}, "muapi_list_keys"),
    ("muzaic_regenerate", {"hash": "0123456789abcdef"}, "jobs_list"),
    ("jobs_get", {"job_id": "job_nope"}, "jobs_list"),
]


@pytest.mark.parametrize(("tool", "args", "lister"), NOT_FOUND, ids=[t for t, _, _ in NOT_FOUND])
async def test_a_not_found_error_names_the_tool_that_lists_the_valid_ids(
    client: Client, tool: str, args: dict[str, Any], lister: str
) -> None:
    result = await call(client, tool, args)

    assert result.is_error
    assert result.meta[ERROR_META_KEY]["class"] == "not_found"
    assert lister in result.meta[ERROR_META_KEY]["message"], text(result)
    assert "check the id or name" not in text(result)


# -- an unknown MuAPI model ----------------------------------------------------------------------


def catalog_reads(sandbox: Sandbox) -> int:
    return sum(1 for method, path in sandbox.muapi.requests if method == "GET" and path.endswith("/models"))


@pytest.mark.providers("muapi")
@pytest.mark.parametrize(
    ("tool", "args"),
    [
        ("muapi_get_model", {"name": "flux-schnel-image"}),
        ("muapi_generate", {"endpoint": "flux-schnel-image", "params": {"prompt": "a fox"}}),
    ],
)
async def test_an_unknown_model_suggests_the_closest_slugs_from_the_catalog(
    client: Client, sandbox: Sandbox, tool: str, args: dict[str, Any]
) -> None:
    result = await call(client, tool, args)

    assert result.is_error
    message = result.meta[ERROR_META_KEY]["message"]
    assert result.meta[ERROR_META_KEY]["class"] == "not_found"
    assert "closest models: flux-schnell-image" in message, message
    assert "muapi_list_models" in message
    assert sandbox.muapi.submissions == 0
    assert catalog_reads(sandbox) == 1


@pytest.mark.providers("muapi")
async def test_the_catalog_is_read_only_for_an_unknown_model_and_kept_briefly(
    client: Client, sandbox: Sandbox, clock: FakeClock
) -> None:
    found = await call(client, "muapi_get_model", {"name": "flux-schnell-image"})
    assert not found.is_error and catalog_reads(sandbox) == 0  # nothing extra on the happy path

    await call(client, "muapi_get_model", {"name": "flux-schnel-image"})
    await call(client, "muapi_get_model", {"name": "flux-dev-imag"})
    assert catalog_reads(sandbox) == 1

    clock.advance(MODEL_CATALOG_TTL_S + 1)
    await call(client, "muapi_get_model", {"name": "flux-schnel-image"})
    assert catalog_reads(sandbox) == 2


@pytest.mark.providers("muapi")
async def test_a_404_for_a_model_that_is_in_the_catalog_suggests_nothing_misleading(
    client: Client, sandbox: Sandbox
) -> None:
    sandbox.muapi.faults.add(method="GET", path=r"/models/flux-dev-image$", kind="status", status=404)

    result = await call(client, "muapi_get_model", {"name": "flux-dev-image"})

    assert result.is_error
    assert "closest models" not in result.meta[ERROR_META_KEY]["message"]


# -- a provider answer we could not read ---------------------------------------------------------


@pytest.mark.parametrize(
    ("provider", "path", "body", "tool", "operation"),
    [
        (
            "museai",
            r"^/api/files/videos$",
            [{"svid": "AbCdEf1", "duration": "long"}],
            "museai_list_videos",
            "list_videos",
        ),
        (
            "museai",
            r"^/api/files/collections$",
            [{"scid": ["x"]}],
            "museai_list_collections",
            "list_collections",
        ),
        (
            "muapi",
            r"/models$",
            [{"name": "flux-dev-image", "category": ["x"]}],
            "muapi_list_models",
            "list_models",
        ),
    ],
    ids=["museai-videos", "museai-collections", "muapi-models"],
)
async def test_an_answer_that_cannot_be_read_is_a_provider_error_naming_the_operation(
    client: Client, sandbox: Sandbox, provider: str, path: str, body: Any, tool: str, operation: str
) -> None:
    emulator = getattr(sandbox, provider)
    emulator.faults.add(method="GET", path=path, kind="status", status=200, body=body, times=5)

    result = await call(client, tool)

    assert result.is_error
    meta = result.meta[ERROR_META_KEY]
    assert meta["class"] == "provider_error", meta
    assert f" {operation}: unexpected answer (" in meta["message"], meta["message"]
    for wrong in ("pydantic", "invalid arguments", "fix the arguments"):
        assert wrong not in meta["message"]


# -- failed jobs and workflows ---------------------------------------------------------------------


@pytest.mark.providers("muzaic")
async def test_a_failed_job_result_opens_with_its_error_class_like_every_error(client: Client) -> None:
    result = await call(client, "muzaic_regenerate", {"hash": "0123456789abcdef"})

    assert result.is_error
    assert text(result).startswith("[not_found] Muzaic regenerate: failed")
    assert result.meta[ERROR_META_KEY]["class"] == "not_found"
    assert result.structured_content["status"] == "failed"  # the job's shape is kept


@pytest.mark.providers("museai")
async def test_auto_subtitles_for_a_video_without_speech_fails_in_the_one_shape(
    client: Client, files_dir: Path
) -> None:
    (files_dir / "silence.wav").write_bytes(wav_sequence_bytes([(2.0, None)]))
    video = await call(client, "museai_upload_video", {"path": "silence.wav"})
    svid = video.structured_content["svid"]

    result = await call(client, "museai_auto_subtitles", {"svid": svid})

    assert result.is_error
    meta = result.meta[ERROR_META_KEY]
    assert meta["class"] == "invalid_input" and meta["arguments"] == ["svid"]
    assert text(result).startswith(f"[invalid_input] svid: no speech was found in {svid}")
    assert result.structured_content["status"] == "failed"
    assert result.structured_content["error"]["class"] == "invalid_input"
