"""Confirmation before spending: a paid call above MEDIAMUX_CONFIRM_USD (or, under a budget, one that
cannot be priced) is put to the user first, when the client declared that it can be asked.

2025-11-25 asks mid-call (``elicitation/create``); 2026-07-28 ends the round with an ``input_required``
result whose ``requestState`` is sealed under MEDIAMUX_STATE_KEYS and comes back with the answer. "No"
costs nothing: every "nothing was spent" below is read from the emulator's own request log and from
the ledger, not from what the server says about itself.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from mcp import Client, MCPError
from mcp.client.streamable_http import streamable_http_client
from mcp_types import CallToolResult, ElicitResult, InputRequiredResult

from mediamux.clock import FakeClock
from mediamux.config import Settings
from mediamux.sandbox import Sandbox
from mediamux.sandbox.loopback import serve_on_loopback
from mediamux.server.app import MediamuxServer, build_server
from mediamux.server.http import MCP_PATH, build_http_app
from mediamux.server.services import sandbox_settings
from mediamux.tools.confirm import INPUT_KEY
from tests.conftest import FAST_RETRY

pytestmark = pytest.mark.providers("muapi")

PRICEY = {"endpoint": "flux-dev-image", "params": {"prompt": "a heron at dawn"}}  # quoted at $0.025
CHEAP = {"endpoint": "flux-schnell-image", "params": {"prompt": "a heron at dawn"}}  # quoted at $0.003
ASKS = {"MEDIAMUX_CONFIRM_USD": "0.01", "MEDIAMUX_BUDGET_USD": "5"}
KEY_A = "a" * 16 + "0123456789abcdef0123456789abcdef"
KEY_B = "b" * 16 + "0123456789abcdef0123456789abcdef"
YES = ElicitResult(action="accept", content={"confirm": True})


class User:
    """The person behind the client: records each question and gives one answer to all."""

    def __init__(self, action: str = "accept", content: dict[str, Any] | None = None) -> None:
        self.answer = ElicitResult(
            action=action,  # type: ignore[arg-type]
            content=content if content is not None else ({"confirm": True} if action == "accept" else None),
        )
        self.asked: list[str] = []

    async def __call__(self, context: Any, params: Any) -> ElicitResult:
        self.asked.append(params.message)
        return self.answer


async def call(client: Client, name: str, args: dict[str, Any]) -> CallToolResult:
    with anyio.fail_after(30):
        return await client.call_tool(name, args)


def text(result: Any) -> str:
    return "\n".join(getattr(b, "text", "") for b in result.content)


def submissions(sandbox: Sandbox, endpoint: str) -> list[tuple[str, str]]:
    """Paid submissions of ``endpoint`` as MuAPI's emulator logged them."""
    return [(m, p) for m, p in sandbox.muapi.requests if m == "POST" and p == f"/api/v1/{endpoint}"]


def quotes(sandbox: Sandbox) -> int:
    return sum(1 for m, p in sandbox.muapi.requests if m == "POST" and p.endswith("/estimate-cost"))


async def ledger(client: Client) -> dict[str, Any]:
    with anyio.fail_after(10):
        read = await client.read_resource("mediamux://costs")
    return dict(json.loads(read.contents[0].text))


async def job_count(client: Client) -> int:
    listed = await call(client, "jobs_list", {"limit": 200})
    return len(listed.structured_content["jobs"])


# -- yes, no, cancel, no capability: both eras ------------------------------------------------------


@pytest.mark.both_eras
async def test_yes_runs_the_call_after_one_short_question_and_the_estimate_is_asked_for_once(
    make_server: Callable[..., MediamuxServer], sandbox: Sandbox, era: str
) -> None:
    user = User("accept")
    async with Client(make_server(**ASKS), mode=era, elicitation_callback=user) as client:  # type: ignore[arg-type]
        result = await call(client, "muapi_generate", PRICEY)

    assert not result.is_error, text(result)
    assert result.structured_content["status"] == "completed"
    assert user.asked == [
        "muapi_generate: MuAPI flux-dev-image, estimated $0.025; $5.00 of the $5.00 budget left. Spend it?"
    ]
    assert len(submissions(sandbox, "flux-dev-image")) == 1
    assert quotes(sandbox) == 1  # 2026-07-28 takes two rounds; the retry reuses the quote it showed


@pytest.mark.both_eras
@pytest.mark.parametrize(
    ("action", "content"),
    [("decline", None), ("cancel", None), ("accept", {"confirm": False})],
    ids=["decline", "cancel", "unticked"],
)
async def test_no_spends_nothing_and_is_a_normal_result_saying_so(
    make_server: Callable[..., MediamuxServer],
    sandbox: Sandbox,
    era: str,
    action: str,
    content: dict[str, Any] | None,
) -> None:
    user = User(action, content)
    async with Client(make_server(**ASKS), mode=era, elicitation_callback=user) as client:  # type: ignore[arg-type]
        before = await ledger(client)
        result = await call(client, "muapi_generate", PRICEY)
        after = await ledger(client)
        jobs = await job_count(client)

    assert len(user.asked) == 1
    assert not result.is_error, text(result)
    data = result.structured_content
    assert data["status"] == "declined" and data["job_id"] == ""
    assert data["cost"]["usd"] == 0.0
    assert text(result).startswith("MuAPI flux-dev-image: declined")
    assert "nothing was submitted, reserved or charged" in text(result)
    assert not any(getattr(b, "type", "") == "resource_link" for b in result.content)
    # The emulator saw the free quote and nothing else: no submission, no upload.
    assert submissions(sandbox, "flux-dev-image") == []
    assert [p for m, p in sandbox.muapi.requests if m == "POST"] == [
        "/api/v1/models/flux-dev-image/estimate-cost"
    ]
    assert after["all_time"] == before["all_time"] and after["all_time"]["usd"] == 0
    assert after["committed_usd"] == 0 and jobs == 0


@pytest.mark.both_eras
async def test_a_client_without_the_capability_gets_todays_behaviour(
    make_server: Callable[..., MediamuxServer], sandbox: Sandbox, era: str
) -> None:
    async with Client(make_server(MEDIAMUX_CONFIRM_USD="0.01"), mode=era) as client:  # type: ignore[arg-type]
        result = await call(client, "muapi_generate", PRICEY)

    assert not result.is_error, text(result)
    assert result.structured_content["status"] == "completed"
    assert len(submissions(sandbox, "flux-dev-image")) == 1
    # Without a budget, today's call asks MuAPI for no quote; neither does this one.
    assert quotes(sandbox) == 0


# -- when a question is due ------------------------------------------------------------------------


async def test_only_a_call_estimated_above_the_threshold_is_put_to_the_user(
    make_server: Callable[..., MediamuxServer], sandbox: Sandbox
) -> None:
    user = User("accept")
    async with Client(make_server(MEDIAMUX_CONFIRM_USD="0.01"), elicitation_callback=user) as client:
        below = await call(client, "muapi_generate", CHEAP)
        asked_below = list(user.asked)
        above = await call(client, "muapi_generate", PRICEY)

    assert asked_below == []
    assert below.structured_content["status"] == above.structured_content["status"] == "completed"
    # No budget: the question has no budget part.
    assert user.asked == ["muapi_generate: MuAPI flux-dev-image, estimated $0.025. Spend it?"]
    assert len(submissions(sandbox, "flux-schnell-image")) == len(submissions(sandbox, "flux-dev-image")) == 1


async def test_without_a_threshold_nothing_is_asked_and_nothing_is_quoted(
    make_server: Callable[..., MediamuxServer], sandbox: Sandbox
) -> None:
    user = User("decline")
    async with Client(make_server(), elicitation_callback=user) as client:
        result = await call(client, "muapi_generate", PRICEY)

    assert result.structured_content["status"] == "completed", text(result)
    assert user.asked == [] and quotes(sandbox) == 0


async def test_an_identical_recent_job_is_returned_without_asking_again(
    make_server: Callable[..., MediamuxServer], sandbox: Sandbox
) -> None:
    user = User("accept")
    async with Client(make_server(**ASKS), elicitation_callback=user) as client:
        first = await call(client, "muapi_generate", PRICEY)
        second = await call(client, "muapi_generate", PRICEY)

    assert len(user.asked) == 1
    assert second.structured_content["deduplicated"] is True
    assert second.structured_content["job_id"] == first.structured_content["job_id"]
    assert len(submissions(sandbox, "flux-dev-image")) == 1


async def test_the_remaining_budget_in_the_question_counts_what_was_spent(
    make_server: Callable[..., MediamuxServer], sandbox: Sandbox
) -> None:
    user = User("accept")
    async with Client(make_server(**ASKS), elicitation_callback=user) as client:
        await call(client, "muapi_generate", PRICEY)
        await call(client, "muapi_generate", {**PRICEY, "params": {"prompt": "a second heron"}})

    assert user.asked[1].endswith("$4.975 of the $5.00 budget left. Spend it?"), user.asked


async def test_a_call_the_budget_cannot_take_is_refused_without_asking(
    make_server: Callable[..., MediamuxServer], sandbox: Sandbox
) -> None:
    user = User("accept")
    server = make_server(MEDIAMUX_CONFIRM_USD="0.01", MEDIAMUX_BUDGET_USD="1")
    async with Client(server, elicitation_callback=user) as client:
        result = await call(client, "muapi_generate", {**PRICEY, "endpoint": "veo3-text-to-video"})  # $3.20

    assert result.is_error and result.meta["mediamux/error"]["class"] == "budget", text(result)
    assert user.asked == [] and submissions(sandbox, "veo3-text-to-video") == []


@pytest.mark.providers("muzaic")
async def test_a_call_that_cannot_be_priced_is_put_to_the_user_while_a_budget_is_set(
    make_server: Callable[..., MediamuxServer], sandbox: Sandbox
) -> None:
    env = {"MEDIAMUX_BUDGET_USD": "5", "MEDIAMUX_UNPRICED_JOB_USD": "1"}  # no MEDIAMUX_CONFIRM_USD
    no, yes = User("decline"), User("accept")
    async with Client(make_server(**env), elicitation_callback=no) as client:
        declined = await call(client, "muzaic_generate_music", {"duration": 10})
        spent = await ledger(client)
    refused_generations = sandbox.muzaic.generations
    async with Client(make_server(**env), elicitation_callback=yes) as client:
        made = await call(client, "muzaic_generate_music", {"duration": 10, "wait_s": 600})

    expected = (
        "muzaic_generate_music: Muzaic generate music, price not known in advance ($1.00 held against the budget); "
        "$5.00 of the $5.00 budget left. Spend it?"
    )
    assert no.asked == [expected] and yes.asked == [expected]
    assert declined.structured_content["status"] == "declined" and not declined.is_error
    assert refused_generations == 0 and spent["committed_usd"] == 0
    assert made.structured_content["status"] == "completed", text(made)
    assert sandbox.muzaic.generations == 1


@pytest.mark.providers("muzaic")
async def test_a_call_that_cannot_be_priced_is_not_asked_about_without_a_budget(
    make_server: Callable[..., MediamuxServer], sandbox: Sandbox
) -> None:
    user = User("decline")
    async with Client(make_server(MEDIAMUX_CONFIRM_USD="0"), elicitation_callback=user) as client:
        made = await call(client, "muzaic_generate_music", {"duration": 10, "wait_s": 600})

    assert user.asked == [] and made.structured_content["status"] == "completed"


@pytest.mark.both_eras
@pytest.mark.providers("museai")
async def test_a_tool_that_runs_two_paid_jobs_asks_for_each_and_a_no_to_the_second_keeps_the_first(
    make_server: Callable[..., MediamuxServer], sandbox: Sandbox, files_dir: Path, era: str
) -> None:
    from tests.test_museai_tools import SIX_WORDS_WAV, upload

    env = {"MEDIAMUX_BUDGET_USD": "5", "MEDIAMUX_UNPRICED_JOB_USD": "0.5"}
    answers = iter([YES, ElicitResult(action="decline")])
    asked: list[str] = []

    async def user(context: Any, params: Any) -> ElicitResult:
        asked.append(params.message)
        return next(answers)

    async with Client(make_server(**env), mode=era, elicitation_callback=user) as client:  # type: ignore[arg-type]
        video = await upload(client, files_dir, "briefing.wav", SIX_WORDS_WAV)
        result = await call(client, "museai_auto_subtitles", {"svid": video["svid"], "wait_s": 600})

    data = result.structured_content
    assert not result.is_error and data["status"] == "declined", text(result)
    assert len(data["jobs"]) == 1 and data["jobs"][0].startswith("job_")
    assert [q.split(",")[0] for q in asked] == [
        "museai_auto_subtitles: muse.ai transcribe",
        "museai_auto_subtitles: muse.ai align",
    ]
    assert asked[1].endswith("$4.50 of the $5.00 budget left. Spend it?")  # the first job holds $0.50
    assert sandbox.museai.jobs_created == 1  # the transcription ran; the alignment was never sent


# -- the sealed requestState of 2026-07-28 ----------------------------------------------------------


async def ask_raw(client: Client, args: dict[str, Any] = PRICEY) -> InputRequiredResult:
    with anyio.fail_after(30):
        first = await client.session.call_tool("muapi_generate", args, allow_input_required=True)
    assert isinstance(first, InputRequiredResult), first
    return first


async def answer_raw(
    client: Client, state: str | None, response: ElicitResult = YES, args: dict[str, Any] = PRICEY
) -> Any:
    with anyio.fail_after(30):
        return await client.session.call_tool(
            "muapi_generate",
            args,
            input_responses={INPUT_KEY: response},
            request_state=state,
            allow_input_required=True,
        )


async def test_the_question_leaves_with_a_sealed_state_and_an_altered_one_is_refused_clearly(
    make_server: Callable[..., MediamuxServer], sandbox: Sandbox
) -> None:
    async with Client(make_server(**ASKS), mode="2026-07-28", elicitation_callback=User()) as client:
        asked = await ask_raw(client)
        state = asked.request_state
        assert state is not None and state.startswith("v1.")
        assert "flux" not in state and "estimate" not in state  # sealed, not merely signed
        question = asked.input_requests[INPUT_KEY]
        assert "estimated $0.025" in question.params.message  # type: ignore[union-attr]

        middle = len(state) // 2
        altered = state[:middle] + ("A" if state[middle] != "A" else "B") + state[middle + 1 :]
        with pytest.raises(MCPError) as refused:
            await answer_raw(client, altered)

    assert refused.value.code == -32602
    assert refused.value.message.startswith("Invalid or expired requestState: ")
    assert "MEDIAMUX_STATE_KEYS" in refused.value.message and "asked again" in refused.value.message
    assert submissions(sandbox, "flux-dev-image") == []


async def test_a_yes_sent_unasked_or_with_another_calls_state_is_not_consent(
    make_server: Callable[..., MediamuxServer], sandbox: Sandbox
) -> None:
    async with Client(make_server(**ASKS), mode="2026-07-28", elicitation_callback=User()) as client:
        unasked = await answer_raw(client, None)
        other = await ask_raw(client, {**PRICEY, "endpoint": "nano-banana-pro"})
        with pytest.raises(MCPError) as crossed:
            await answer_raw(client, other.request_state)  # that state names other arguments

    assert isinstance(unasked, InputRequiredResult)  # asked, not run
    assert crossed.value.code == -32602
    assert submissions(sandbox, "flux-dev-image") == submissions(sandbox, "nano-banana-pro") == []


async def test_a_yes_to_a_local_input_that_changed_since_the_question_asks_again(
    make_server: Callable[..., MediamuxServer], sandbox: Sandbox, files_dir: Path
) -> None:
    # Same arguments (so the SDK's binding holds), but the file they name is a new request now.
    picture = files_dir / "cat.png"
    picture.write_bytes(b"\x89PNG\r\n\x1a\n" + b"cat" * 100)
    args = {"endpoint": "ai-image-upscale", "params": {"image_url": "cat.png"}}  # quoted at $0.01
    server = make_server(MEDIAMUX_CONFIRM_USD="0.001")
    async with Client(server, mode="2026-07-28", elicitation_callback=User()) as client:
        asked = await ask_raw(client, args)
        picture.write_bytes(b"\x89PNG\r\n\x1a\n" + b"dog" * 200)
        again = await answer_raw(client, asked.request_state, YES, args)

    assert isinstance(again, InputRequiredResult)
    assert submissions(sandbox, "ai-image-upscale") == []
    assert not any(p.endswith("upload_file") for _, p in sandbox.muapi.requests)


def replica_settings(
    make_settings: Callable[..., Settings], urls: dict[str, str], sandbox: Sandbox, **env: Any
) -> Settings:
    """One replica: the shared home (journal, ledger) and the running emulators, as real providers."""
    return sandbox_settings(make_settings(MEDIAMUX_TOOLSETS="muapi,jobs", **ASKS, **env), urls, sandbox.keys)


async def test_two_instances_sharing_state_keys_accept_each_others_state_and_other_keys_do_not(
    make_settings: Callable[..., Settings], sandbox: Sandbox, clock: FakeClock
) -> None:
    shared = f"{KEY_A},{KEY_B}"  # one ring, listed alike on both
    async with sandbox.running() as urls:
        first = build_server(
            replica_settings(make_settings, urls, sandbox, MEDIAMUX_STATE_KEYS=shared),
            clock=clock,
            retry=FAST_RETRY,
        )
        second = build_server(
            replica_settings(make_settings, urls, sandbox, MEDIAMUX_STATE_KEYS=shared),
            clock=clock,
            retry=FAST_RETRY,
        )
        stranger = build_server(
            replica_settings(make_settings, urls, sandbox, MEDIAMUX_STATE_KEYS=KEY_B),
            clock=clock,
            retry=FAST_RETRY,
        )
        user = User()
        async with (
            Client(first, mode="2026-07-28", elicitation_callback=user) as a,
            Client(second, mode="2026-07-28", elicitation_callback=user) as b,
            Client(stranger, mode="2026-07-28", elicitation_callback=user) as c,
        ):
            asked = await ask_raw(a)
            with pytest.raises(MCPError) as refused:
                await answer_raw(c, asked.request_state)  # keys[0] of a and b is not in c's ring
            done = await answer_raw(b, asked.request_state)

    assert refused.value.code == -32602
    assert isinstance(done, CallToolResult) and done.structured_content["status"] == "completed", done
    assert len(submissions(sandbox, "flux-dev-image")) == 1
    assert quotes(sandbox) == 1  # the replica that ran it used the quote the first one showed


# -- over real HTTP ---------------------------------------------------------------------------------


@asynccontextmanager
async def over_http(server: MediamuxServer) -> AsyncIterator[str]:
    settings = server.mediamux_settings
    assert settings is not None
    app = build_http_app(server, settings, host="127.0.0.1", port=0)
    async with serve_on_loopback(app) as url:
        yield url + MCP_PATH


@asynccontextmanager
async def http_client(url: str, mode: str, user: User) -> AsyncIterator[Client]:
    async with (
        httpx2.AsyncClient(timeout=30.0) as http,
        Client(streamable_http_client(url, http_client=http), mode=mode, elicitation_callback=user) as client,  # type: ignore[arg-type]
    ):
        yield client


@pytest.mark.parametrize("action", ["accept", "decline"])
async def test_over_http_a_2025_client_is_asked_mid_call_and_no_sends_nothing(
    make_server: Callable[..., MediamuxServer], sandbox: Sandbox, action: str
) -> None:
    user = User(action)
    async with over_http(make_server(**ASKS)) as url, http_client(url, "legacy", user) as client:
        result = await call(client, "muapi_generate", PRICEY)
        spent = await ledger(client)

    assert len(user.asked) == 1 and "estimated $0.025" in user.asked[0]
    assert not result.is_error, text(result)
    if action == "accept":
        assert result.structured_content["status"] == "completed"
        assert len(submissions(sandbox, "flux-dev-image")) == 1
    else:
        assert result.structured_content["status"] == "declined"
        assert submissions(sandbox, "flux-dev-image") == [] and spent["committed_usd"] == 0


async def test_over_http_a_2026_retry_lands_on_another_replica_sharing_the_keys(
    make_settings: Callable[..., Settings], sandbox: Sandbox, clock: FakeClock
) -> None:
    async with sandbox.running() as urls:
        replicas = [
            build_server(
                replica_settings(make_settings, urls, sandbox, MEDIAMUX_STATE_KEYS=KEY_A),
                clock=clock,
                retry=FAST_RETRY,
            )
            for _ in range(2)
        ]
        user = User()
        async with (
            over_http(replicas[0]) as url_a,
            over_http(replicas[1]) as url_b,
            http_client(url_a, "2026-07-28", user) as a,
            http_client(url_b, "2026-07-28", user) as b,
        ):
            asked = await ask_raw(a)
            done = await answer_raw(b, asked.request_state)
            declined = await answer_raw(
                b,
                (await ask_raw(a, CHEAP | {"endpoint": "nano-banana-pro"})).request_state,
                ElicitResult(action="decline"),
                CHEAP | {"endpoint": "nano-banana-pro"},
            )

    assert isinstance(done, CallToolResult) and done.structured_content["status"] == "completed", done
    assert isinstance(declined, CallToolResult) and declined.structured_content["status"] == "declined"
    assert len(submissions(sandbox, "flux-dev-image")) == 1
    assert submissions(sandbox, "nano-banana-pro") == []
