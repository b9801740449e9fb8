"""Protocol errors in our words, and log notifications the client asked for.

A prompt, resource or tool the server does not have is the client's to fix: JSON-RPC -32602 with a
message that says what exists (never -32603 with a traceback at ERROR). Log notifications follow
each era's rule: ``logging/setLevel`` for 2025-11-25 connections, the request's own ``_meta`` level
in 2026-07-28.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import anyio
import pytest
from mcp import Client, MCPError
from mcp.shared.exceptions import MCPDeprecationWarning
from mcp_types import INVALID_PARAMS, LoggingMessageNotificationParams

from mediamux.sandbox import Sandbox
from mediamux.server.app import MediamuxServer

RETRY_LINE = "muapi get_balance: HTTP 503; retrying in"


def quiet(caplog: pytest.LogCaptureFixture) -> None:
    """Nothing at WARNING or above, and no traceback, was logged for the refusals."""
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING or r.exc_info], caplog.text


async def refusal(request: Any) -> Any:
    with anyio.fail_after(10), pytest.raises(MCPError) as refused:
        await request
    assert refused.value.error.code == INVALID_PARAMS, refused.value.error
    return refused.value.error


@pytest.mark.both_eras
@pytest.mark.providers("museai")
async def test_an_unknown_prompt_or_bad_prompt_arguments_are_invalid_params_in_our_words(
    client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)

    unknown = await refusal(client.get_prompt("no_such_prompt", {}))
    missing = await refusal(client.get_prompt("subtitle_video", {}))
    malformed = await refusal(client.get_prompt("subtitle_video", {"svid": "not an id!"}))

    assert unknown.message == "no prompt named 'no_such_prompt'; prompts/list lists the 2 prompts offered"
    assert missing.message == "prompt subtitle_video needs the argument(s) svid"
    assert malformed.message.startswith("prompt subtitle_video: svid: must match"), malformed.message
    assert "got 'not an id!'" in malformed.message
    assert [r.levelno for r in caplog.records if r.getMessage().startswith("refused:")] == [logging.DEBUG] * 3
    quiet(caplog)


@pytest.mark.both_eras
@pytest.mark.providers("muapi")
async def test_an_unknown_resource_is_invalid_params_with_its_uri_in_the_data(
    client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)

    nowhere = await refusal(client.read_resource("test://static-text"))
    no_job = await refusal(client.read_resource("mediamux://jobs/job_does_not_exist"))
    no_output = await refusal(client.read_resource("mediamux://outputs/never-saved.png"))

    assert nowhere.message == (
        "no resource at test://static-text; resources/list and resources/templates/list show what this "
        "server offers"
    )
    assert nowhere.data == {"uri": "test://static-text", "class": "not_found"}
    # A template that matches, for an item that does not exist, keeps the template's own message.
    assert (
        "job_does_not_exist" in no_job.message and no_job.data["uri"] == "mediamux://jobs/job_does_not_exist"
    )
    assert "never-saved.png" in no_output.message
    quiet(caplog)


@pytest.mark.providers("muapi")
async def test_a_2025_client_sets_the_level_of_the_log_notifications_it_gets(
    make_server: Callable[..., MediamuxServer], sandbox: Sandbox, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="mediamux")  # the operator's level lets INFO records exist
    heard: list[LoggingMessageNotificationParams] = []

    async def on_log(params: LoggingMessageNotificationParams) -> None:
        heard.append(params)

    async with Client(make_server(), mode="legacy", logging_callback=on_log) as client:
        assert client.server_capabilities is not None and client.server_capabilities.logging is not None
        sandbox.muapi.faults.add(method="GET", path=r"/account/balance$", kind="status", status=503)
        assert not (await client.call_tool("muapi_get_balance", {})).is_error
        assert heard == []  # WARNING and above until the client asks for more

        # The SDK's client marks logging deprecated (SEP-2577); 2025-11-25 clients still use it.
        with pytest.warns(MCPDeprecationWarning, match="SEP-2577"):
            await client.set_logging_level("info")
        sandbox.muapi.faults.add(method="GET", path=r"/account/balance$", kind="status", status=503)
        assert not (await client.call_tool("muapi_get_balance", {})).is_error

    assert [(h.level, h.logger) for h in heard] == [("info", "mediamux.transport")]
    assert str(heard[0].data).startswith(RETRY_LINE), heard[0].data
    assert "sandbox-muapi-key" not in str(heard)


@pytest.mark.providers("muapi")
@pytest.mark.parametrize(("level", "expected"), [(None, 0), ("warning", 0), ("info", 1), ("debug", 1)])
async def test_a_2026_request_gets_the_log_notifications_its_own_meta_asked_for(
    make_server: Callable[..., MediamuxServer],
    sandbox: Sandbox,
    caplog: pytest.LogCaptureFixture,
    level: Any,
    expected: int,
) -> None:
    caplog.set_level(logging.INFO, logger="mediamux")
    heard: list[LoggingMessageNotificationParams] = []

    async def on_log(params: LoggingMessageNotificationParams) -> None:
        heard.append(params)

    async with Client(make_server(), mode="2026-07-28", log_level=level, logging_callback=on_log) as client:
        sandbox.muapi.faults.add(method="GET", path=r"/account/balance$", kind="status", status=503)
        assert not (await client.call_tool("muapi_get_balance", {})).is_error

    assert [str(h.data)[: len(RETRY_LINE)] for h in heard] == [RETRY_LINE] * expected
