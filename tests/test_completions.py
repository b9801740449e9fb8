"""completion/complete against the real server and the sandbox: every prompt argument and resource-
template variable completes from its source, by prefix, at most 100 values with an honest total,
and no keystroke waits on a provider: listings are cached and refreshed off the hot path."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import anyio
import pytest
from mcp import Client, MCPError
from mcp.shared.uri_template import UriTemplate
from mcp_types import INVALID_PARAMS, CompleteResult, PromptReference, ResourceTemplateReference

from mediamux.clock import FakeClock
from mediamux.sandbox import Sandbox
from mediamux.server.app import MediamuxServer
from mediamux.server.completions import DEFAULT_TTL_S
from tests.support import eventually
from tests.test_museai_tools import VTT, ok, put, upload

VIDEOS = ("GET", "/api/files/videos")
# Free text: nothing to suggest for what the user wants to find.
FREE_TEXT = {("find_moments", "query")}


def ref_of(name: str) -> PromptReference | ResourceTemplateReference:
    return ResourceTemplateReference(uri=name) if "://" in name else PromptReference(name=name)


async def complete(client: Client, ref: str, argument: str, value: str = "", **given: str) -> CompleteResult:
    with anyio.fail_after(10):
        return await client.complete(ref_of(ref), {"name": argument, "value": value}, given or None)


async def settled(client: Client, ref: str, argument: str, value: str = "", **given: str) -> CompleteResult:
    """The answer once the source's listing is in the cache (the first keystroke may find it cold)."""
    answer: list[CompleteResult] = []

    async def look() -> bool:
        answer[:] = [await complete(client, ref, argument, value, **given)]
        return answer[0].completion.total is not None

    with anyio.fail_after(10):
        while not await look():
            await anyio.sleep(0.01)
    return answer[0]


@pytest.fixture
async def served(
    make_server: Callable[..., MediamuxServer], era: str
) -> AsyncIterator[tuple[MediamuxServer, Client]]:
    server = make_server()
    async with Client(server, mode=era) as c:
        yield server, c


@pytest.mark.both_eras
@pytest.mark.providers("museai")
async def test_a_prompt_argument_completes_to_the_librarys_videos_by_prefix(
    served: tuple[MediamuxServer, Client], files_dir: Path
) -> None:
    _, client = served
    assert client.server_capabilities is not None and client.server_capabilities.completions is not None
    first = (await upload(client, files_dir, "one.wav"))["svid"]
    second = (await upload(client, files_dir, "two.wav"))["svid"]

    everything = await settled(client, "subtitle_video", "svid")
    assert sorted(everything.completion.values) == sorted([first, second])
    assert (everything.completion.total, everything.completion.has_more) == (2, False)

    narrowed = await complete(client, "subtitle_video", "svid", first[:4].lower())
    assert first in narrowed.completion.values
    assert all(v.casefold().startswith(first[:4].casefold()) for v in narrowed.completion.values)
    assert narrowed.completion.total == len(narrowed.completion.values)
    assert (await complete(client, "subtitle_video", "svid", "zz-no-such")).completion.values == []


async def test_every_prompt_argument_and_template_variable_has_a_source(
    make_server: Callable[..., MediamuxServer],
) -> None:
    server = make_server(MEDIAMUX_TOOLSETS="all")
    async with Client(server) as client:
        prompts = (await client.list_prompts()).prompts
        templates = (await client.list_resource_templates()).resource_templates
    wanted = {(p.name, a.name) for p in prompts for a in p.arguments or []} | {
        (t.uri_template, v) for t in templates for v in UriTemplate.parse(t.uri_template).variable_names
    }
    completer = server._lowlevel_server.get_request_handler("completion/complete").handler

    missing = {(ref, arg) for ref, arg in wanted if not any(s.serves(ref, arg) for s in completer.sources)}
    # A page's cursor is copied from the previous page's next URI, never typed: nothing to complete.
    missing = {(ref, arg) for ref, arg in missing if arg != "cursor"}

    assert len(wanted) >= 10
    assert missing == FREE_TEXT


async def test_each_template_variable_completes_from_its_own_source(
    make_server: Callable[..., MediamuxServer], files_dir: Path
) -> None:
    server = make_server(MEDIAMUX_TOOLSETS="all")
    async with Client(server) as client:
        svid = (await upload(client, files_dir))["svid"]
        scid = (await ok(client, "museai_create_collection", {"name": "Launch"}))["scid"]
        track = await ok(
            client, "museai_upload_subtitles", {"svid": svid, "path": put(files_dir, "en.vtt", VTT)}
        )
        generated = await ok(
            client, "muapi_generate", {"endpoint": "flux-schnell-image", "params": {"prompt": "a red fox"}}
        )
        indexed = await ok(
            client,
            "mixpeek_index_url",
            {"url": "https://media.example.com/videos/walk.mp4", "collection_id": "quickstart", "wait_s": 0},
        )
        saved = Path(generated["result"]["saved"][0]["path"]).name

        expected = {
            ("mediamux://jobs/{job_id}", "job_id", ""): {generated["job_id"], indexed["job_id"]},
            ("muapi://predictions/{request_id}", "request_id", ""): {generated["provider_job_id"]},
            ("muapi://models/{+endpoint}", "endpoint", "flux-s"): {"flux-schnell-image"},
            ("mixpeek://assets/{asset_id}", "asset_id", ""): {indexed["result"]["asset_id"]},
            ("museai://videos/{svid}", "svid", ""): {svid},
            ("museai://collections/{scid}", "scid", ""): {scid},
            ("mediamux://outputs/{name}", "name", saved[:3]): {saved},
        }
        for (ref, argument, prefix), values in expected.items():
            answer = await settled(client, ref, argument, prefix)
            assert values <= set(answer.completion.values), (ref, answer.completion)

        tracks = await settled(
            client, "museai://videos/{svid}/subtitles/{subtitle_id}", "subtitle_id", svid=svid
        )
        assert tracks.completion.values == [track["subtitle_id"]]
        # Which video's tracks is not known yet: nothing to offer, and nothing asked of muse.ai.
        unknown = await complete(client, "museai://videos/{svid}/subtitles/{subtitle_id}", "subtitle_id")
        assert unknown.completion.values == []


@pytest.mark.providers("muapi")
async def test_more_than_a_hundred_values_are_cut_at_a_hundred_with_the_true_total(
    served: tuple[MediamuxServer, Client],
) -> None:
    server, client = served
    assert server.services is not None
    outputs = server.services.files.output_dir
    for n in range(150):
        (outputs / f"clip-{n:03d}.png").write_bytes(b"png")
    (outputs / ".mediamux-0123456789abcdef.part").write_bytes(b"in progress")

    everything = (await complete(client, "mediamux://outputs/{name}", "name", "clip-")).completion
    narrowed = (await complete(client, "mediamux://outputs/{name}", "name", "clip-12")).completion

    assert len(everything.values) == 100 and everything.total == 150 and everything.has_more is True
    assert sorted(narrowed.values) == [f"clip-12{n}.png" for n in range(10)]
    assert (narrowed.total, narrowed.has_more) == (10, False)
    hidden = (await complete(client, "mediamux://outputs/{name}", "name", ".")).completion
    assert hidden.values == []


@pytest.mark.both_eras
@pytest.mark.providers("museai")
@pytest.mark.parametrize(
    ("ref", "argument", "says"),
    [
        ("no_such_prompt", "svid", "no prompt named 'no_such_prompt'"),
        ("museai://nothing/{id}", "id", "no resource template 'museai://nothing/{id}'"),
        (
            "subtitle_video",
            "scid",
            "the prompt subtitle_video has no argument 'scid'; its arguments are svid",
        ),
        ("museai://videos/{svid}", "scid", "has no argument 'scid'; its arguments are svid"),
    ],
)
async def test_an_unknown_prompt_template_or_argument_is_invalid_params_logged_at_debug(
    served: tuple[MediamuxServer, Client],
    caplog: pytest.LogCaptureFixture,
    ref: str,
    argument: str,
    says: str,
) -> None:
    _, client = served
    caplog.set_level(logging.DEBUG)

    with pytest.raises(MCPError) as refused:
        await complete(client, ref, argument)

    assert refused.value.error.code == INVALID_PARAMS
    assert says in refused.value.error.message
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING or r.exc_info], caplog.text


@pytest.mark.providers("museai")
async def test_a_warm_listing_asks_muse_ai_nothing_and_is_refreshed_after_its_ttl(
    served: tuple[MediamuxServer, Client], sandbox: Sandbox, clock: FakeClock, files_dir: Path
) -> None:
    _, client = served
    first = (await upload(client, files_dir, "one.wav"))["svid"]
    before = sandbox.museai.requests.count(VIDEOS)
    await settled(client, "subtitle_video", "svid")
    assert sandbox.museai.requests.count(VIDEOS) == before + 1

    for prefix in ("", first[:1], first[:2], first, "x"):
        await complete(client, "subtitle_video", "svid", prefix)
    second = (await upload(client, files_dir, "two.wav"))["svid"]
    cached = await complete(client, "subtitle_video", "svid")

    assert sandbox.museai.requests.count(VIDEOS) == before + 1  # six keystrokes, one listing
    assert cached.completion.values == [first]

    clock.advance(DEFAULT_TTL_S + 1)
    stale = await complete(client, "subtitle_video", "svid")  # answered at once, refreshed behind it
    assert stale.completion.values == [first]
    await eventually(lambda: sandbox.museai.requests.count(VIDEOS) == before + 2)
    fresh = await settled(client, "subtitle_video", "svid")
    assert sorted(fresh.completion.values) == sorted([first, second])
    assert sandbox.museai.requests.count(VIDEOS) == before + 2


@pytest.mark.providers("museai")
async def test_a_listing_that_hangs_never_holds_up_a_keystroke(
    served: tuple[MediamuxServer, Client], sandbox: Sandbox, files_dir: Path
) -> None:
    _, client = served
    svid = (await upload(client, files_dir))["svid"]
    sandbox.museai.faults.add(method="GET", path=r"^/api/files/videos$", kind="hang")

    with anyio.fail_after(5):
        waiting = await complete(client, "museai://videos/{svid}", "svid")
        again = await complete(client, "museai://videos/{svid}", "svid")

    assert waiting.completion.values == [] and waiting.completion.has_more is True
    assert waiting.completion.total is None  # not "none exist": not known yet
    assert again.completion.values == []
    assert sandbox.museai.requests.count(VIDEOS) == 1  # the second keystroke joined the load in flight
    sandbox.museai.faults.release.set()
    done = await settled(client, "museai://videos/{svid}", "svid")
    assert done.completion.values == [svid]
