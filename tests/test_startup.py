"""A lazy start (``mediamux serve`` over stdio): the first tool list comes from the kept catalog, and
whatever arrives before the tools and services are ready waits for them, then behaves exactly as an
eagerly started server does; a start that fails says why to every request that needs it.

The unit tier pins the catalog's key and file (``tests/unit/test_startup.py``). Here servers run in
process against the sandbox's emulators, and, last, ``mediamux serve`` is spawned for real to pin what
it has imported by its first answer (read from ``sys.modules`` at that answer: no timing involved).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client, MCPError, StdioServerParameters
from mcp.shared.subscriptions import ToolsListChanged
from mcp_types import ResourceTemplateReference

from mediamux import principals
from mediamux.clock import FakeClock
from mediamux.config import Settings
from mediamux.principals import READ_SCOPE
from mediamux.registry import make_sandbox
from mediamux.sandbox import Sandbox
from mediamux.server import app, profiles, startup
from mediamux.server.app import MediamuxServer, build_server
from tests.conftest import DEFAULT_ERA, FAST_RETRY
from tests.support import eventually
from tests.test_e2e import SPAWN_TIMEOUT_S, serve_cmd, server_env, text_of


def _lazy(settings: Settings, sandbox: Sandbox, clock: FakeClock) -> MediamuxServer:
    return build_server(settings, lazy=True, sandbox=sandbox, clock=clock, retry=FAST_RETRY)


async def _keep_catalog(settings: Settings, clock: FakeClock) -> None:
    """An earlier start on the same home: no catalog yet, so it registers at once and keeps one."""
    # A sandbox only where the settings ask for one: a sandbox passed in turns the settings' sandbox on.
    box = make_sandbox(now=clock.monotonic) if settings.sandbox else None
    try:
        server = build_server(settings, lazy=True, sandbox=box, clock=clock, retry=FAST_RETRY)
        assert server.lazy_start is not None and not server.lazy_start.pending
        async with Client(server, mode=DEFAULT_ERA) as client:  # type: ignore[arg-type]
            await client.list_tools()
    finally:
        if box is not None:
            box.close()
    assert list(startup.cache_dir(settings).glob("tools-*.json")), "the first start kept no catalog"


@pytest.fixture
def on_demand(monkeypatch: pytest.MonkeyPatch) -> None:
    """No timed warm-up: the tools are registered and the services opened only when a request needs
    them, so a test can look at the server between its first answer and that request."""
    monkeypatch.setattr(startup, "WARM_UP_AFTER_S", 3600.0)


def _dump(items: Any) -> list[dict[str, Any]]:
    return [item.model_dump(mode="json", by_alias=True, exclude_none=True) for item in items]


async def _session(server: MediamuxServer, era: str) -> dict[str, Any]:
    """Everything a host sees, in the order a host asks for it."""
    seen: dict[str, Any] = {}
    async with Client(server, mode=era) as client:  # type: ignore[arg-type]
        seen["instructions"] = client.instructions
        seen["capabilities"] = client.server_capabilities.model_dump(mode="json", exclude_none=True)
        seen["first tools/list"] = _dump((await client.list_tools(cache_mode="bypass")).tools)
        seen["answered before registering"] = server.lazy_start is not None and server.lazy_start.pending
        seen["resources"] = _dump((await client.list_resources(cache_mode="bypass")).resources)
        seen["templates"] = _dump(
            (await client.list_resource_templates(cache_mode="bypass")).resource_templates
        )
        seen["prompts"] = _dump((await client.list_prompts(cache_mode="bypass")).prompts)
        seen["tools/list"] = _dump((await client.list_tools(cache_mode="bypass")).tools)
        balance = await client.call_tool("muapi_get_balance", {})
        seen["muapi_get_balance"] = (balance.is_error, balance.structured_content)
        jobs = await client.call_tool("jobs_list", {})
        seen["jobs_list"] = (jobs.is_error, text_of(jobs))
        costs = await client.read_resource("mediamux://costs")
        seen["mediamux://costs"] = sorted(json.loads(getattr(costs.contents[0], "text", "{}")))
        completion = await client.complete(
            ResourceTemplateReference(uri="mediamux://jobs/{job_id}"), {"name": "job_id", "value": ""}
        )
        seen["completion"] = completion.completion.values
        try:
            await client.call_tool("muapi_no_such_tool", {})
        except MCPError as exc:  # a protocol error in both eras
            seen["unknown tool"] = exc.error.model_dump()
    return seen


@pytest.mark.both_eras
async def test_a_lazy_start_answers_everything_exactly_as_an_eager_one(
    make_settings: Callable[..., Settings], clock: FakeClock, era: str, on_demand: None
) -> None:
    settings = make_settings(MEDIAMUX_SANDBOX="1")
    await _keep_catalog(settings, clock)
    sessions = {}
    for name, lazy in (("eager", False), ("lazy", True)):
        box = make_sandbox(now=clock.monotonic)
        try:
            server = build_server(settings, lazy=lazy, sandbox=box, clock=clock, retry=FAST_RETRY)
            sessions[name] = await _session(server, era)
        finally:
            box.close()
    eager, lazy_seen = sessions["eager"], sessions["lazy"]
    assert lazy_seen.pop("answered before registering") is True
    assert eager.pop("answered before registering") is False
    assert lazy_seen == eager
    assert len(eager["first tools/list"]) > 40 and eager["first tools/list"] == eager["tools/list"]
    assert eager["unknown tool"]["code"] == -32602


async def test_the_first_answer_registers_nothing_and_opens_nothing_until_a_request_needs_it(
    make_settings: Callable[..., Settings], sandbox: Sandbox, clock: FakeClock, on_demand: None
) -> None:
    settings = make_settings(MEDIAMUX_SANDBOX="1")
    await _keep_catalog(settings, clock)
    server = _lazy(settings, sandbox, clock)
    assert server.lazy_start is not None
    async with Client(server, mode=DEFAULT_ERA) as client:  # type: ignore[arg-type]
        assert len((await client.list_tools()).tools) > 40
        assert len((await client.list_tools(cache_mode="bypass")).tools) > 40
        assert server.lazy_start.pending and server.services is None
        assert server._tool_manager.list_tools() == []
        result = await client.call_tool("muapi_get_balance", {})
        assert not result.is_error, text_of(result)
        assert not server.lazy_start.pending and server.services is not None


async def test_after_the_first_answer_the_tools_register_and_the_services_open_unasked(
    make_settings: Callable[..., Settings], sandbox: Sandbox, clock: FakeClock
) -> None:
    settings = make_settings(MEDIAMUX_SANDBOX="1")
    await _keep_catalog(settings, clock)
    server = _lazy(settings, sandbox, clock)
    async with Client(server, mode=DEFAULT_ERA) as client:  # type: ignore[arg-type]
        await client.list_tools()
        await eventually(lambda: server.services is not None)
        assert server.lazy_start is not None and not server.lazy_start.pending


@pytest.mark.both_eras
async def test_requests_racing_the_warm_up_are_all_answered(
    make_settings: Callable[..., Settings], sandbox: Sandbox, clock: FakeClock, era: str
) -> None:
    settings = make_settings(MEDIAMUX_SANDBOX="1")
    await _keep_catalog(settings, clock)
    server = _lazy(settings, sandbox, clock)
    answers: dict[str, Any] = {}
    async with Client(server, mode=era) as client:  # type: ignore[arg-type]

        async def ask(name: str, call: Any) -> None:
            answers[name] = await call

        async with anyio.create_task_group() as tg:
            tg.start_soon(ask, "tools", client.list_tools())
            tg.start_soon(ask, "balance", client.call_tool("muapi_get_balance", {}))
            tg.start_soon(ask, "prompts", client.list_prompts())
            tg.start_soon(ask, "costs", client.read_resource("mediamux://costs"))
            tg.start_soon(ask, "jobs", client.call_tool("jobs_list", {}))
        listed_again = [t.name for t in (await client.list_tools(cache_mode="bypass")).tools]
    assert [t.name for t in answers["tools"].tools] == listed_again
    assert not answers["balance"].is_error, text_of(answers["balance"])
    assert not answers["jobs"].is_error, text_of(answers["jobs"])
    assert answers["prompts"].prompts
    assert answers["costs"].contents


async def test_services_that_cannot_open_make_every_request_that_needs_them_say_why(
    make_settings: Callable[..., Settings], home: Path, clock: FakeClock, on_demand: None
) -> None:
    settings = make_settings(MEDIAMUX_TOOLSETS="jobs,muapi")
    await _keep_catalog(settings, clock)
    (home / "mediamux.sqlite3").unlink(missing_ok=True)
    (home / "mediamux.sqlite3").mkdir()  # where the journal goes: now a folder, not a database
    server = build_server(settings, lazy=True, clock=clock, retry=FAST_RETRY)
    with anyio.fail_after(30):
        async with Client(server, mode=DEFAULT_ERA) as client:  # type: ignore[arg-type]
            assert (await client.list_tools()).tools  # the catalog still answers
            for _ in range(2):  # each request is told, not only the first
                with pytest.raises(MCPError, match=r"mediamux could not start.*journal"):
                    await client.call_tool("jobs_list", {})
            with pytest.raises(MCPError, match=r"mediamux could not start.*journal"):
                await client.read_resource("mediamux://costs")
            assert (await client.list_tools(cache_mode="bypass")).tools  # and the server is still there


async def test_a_toolset_that_fails_to_load_fails_every_request_that_needs_the_tools(
    make_settings: Callable[..., Settings], clock: FakeClock, monkeypatch: pytest.MonkeyPatch, on_demand: None
) -> None:
    settings = make_settings(MEDIAMUX_TOOLSETS="all")
    await _keep_catalog(settings, clock)
    real = app.toolset

    def broken(toolset_id: str) -> Any:
        if toolset_id == "muzaic":
            raise ImportError("muzaic's tools could not be imported")
        return real(toolset_id)

    monkeypatch.setattr(app, "toolset", broken)
    server = build_server(settings, lazy=True, clock=clock, retry=FAST_RETRY)
    with anyio.fail_after(30):
        async with Client(server, mode=DEFAULT_ERA) as client:  # type: ignore[arg-type]
            assert len((await client.list_tools()).tools) > 40  # answered before anything was loaded
            for _ in range(2):
                with pytest.raises(MCPError, match="registering its tools failed: muzaic's tools"):
                    await client.list_prompts()
            with pytest.raises(MCPError, match="registering its tools failed"):
                await client.call_tool("jobs_list", {})
            # Once it is known, the list the catalog answered is not offered any more either.
            with pytest.raises(MCPError, match="registering its tools failed"):
                await client.list_tools(cache_mode="bypass")


async def test_a_request_waits_for_the_services_only_so_long_then_is_told_the_server_is_starting(
    make_settings: Callable[..., Settings], clock: FakeClock, monkeypatch: pytest.MonkeyPatch, on_demand: None
) -> None:
    settings = make_settings(MEDIAMUX_TOOLSETS="jobs")
    await _keep_catalog(settings, clock)
    opened = anyio.Event()

    class Stuck:
        async def __aenter__(self) -> Any:
            await opened.wait()  # never set: services that take longer than any request may wait

        async def __aexit__(self, *exc: object) -> None:
            return None

    monkeypatch.setattr(app, "running_services", lambda *args, **kwargs: Stuck())
    monkeypatch.setattr(startup, "SERVICES_WAIT_S", 0.05)
    server = build_server(settings, lazy=True, clock=clock, retry=FAST_RETRY)
    with anyio.fail_after(30):
        async with Client(server, mode=DEFAULT_ERA) as client:  # type: ignore[arg-type]
            with pytest.raises(MCPError, match="mediamux is still starting"):
                await client.call_tool("jobs_list", {})
            assert (await client.list_tools()).tools
        # Leaving did not wait for the services that never opened.


async def test_a_catalog_that_turns_out_stale_is_replaced_logged_and_announced(
    make_settings: Callable[..., Settings],
    sandbox: Sandbox,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
    on_demand: None,
) -> None:
    settings = make_settings(MEDIAMUX_SANDBOX="1")
    await _keep_catalog(settings, clock)
    key = startup.catalog_key(settings)
    assert key is not None
    truth = startup.load(settings, key)
    assert truth is not None
    # Written under the right key but not what this code registers: only a tampered file (or code the
    # key does not cover) can do that. The key is trusted for the first answer; the rest corrects it.
    stale = startup.Catalog(
        tools=[dict(tool, description="an older description") for tool in truth.tools[:-1]],
        toolsets=truth.toolsets,
        job_tools=truth.job_tools,
        descriptions=truth.descriptions,
    )
    startup.save(settings, key, stale)
    server = _lazy(settings, sandbox, clock)
    events: list[Any] = []
    server._subscriptions.subscribe(events.append)
    with caplog.at_level(logging.WARNING, logger="mediamux.server"):
        async with Client(server, mode=DEFAULT_ERA) as client:  # type: ignore[arg-type]
            first = _dump((await client.list_tools()).tools)
            await client.list_prompts()  # needs the tools: registers them and compares
            again = _dump((await client.list_tools(cache_mode="bypass")).tools)

    def described(tools: list[dict[str, Any]]) -> list[tuple[str, str]]:
        return [(tool["name"], tool["description"]) for tool in tools]

    assert described(first) == described(stale.tools)
    assert described(again) == described(truth.tools)
    assert "out of date" in caplog.text
    assert any(isinstance(event, ToolsListChanged) for event in events)
    assert startup.load(settings, key) == truth


@pytest.mark.parametrize(
    "who",
    [
        {"profile": profiles.Profile(("muapi", "jobs"), read_only=True)},
        {"profile": profiles.Profile(("muzaic",))},
        {"signed_in": ("alice", frozenset({READ_SCOPE}))},
    ],
    ids=["profile-read-only", "profile-one-toolset", "sign-in-without-spend"],
)
async def test_the_kept_catalog_is_narrowed_per_connection_as_the_registered_tools_are(
    make_settings: Callable[..., Settings],
    clock: FakeClock,
    monkeypatch: pytest.MonkeyPatch,
    who: dict[str, Any],
) -> None:
    settings = make_settings(MEDIAMUX_TOOLSETS="all")
    await _keep_catalog(settings, clock)
    eager, lazy = build_server(settings), build_server(settings, lazy=True)
    assert lazy.lazy_start is not None and lazy.lazy_start.pending
    everything = [t.name for t in await eager.list_tools()]
    if "signed_in" in who:
        monkeypatch.setattr(principals, "_signed_in", lambda: who["signed_in"])
    with profiles.serving(who.get("profile")):
        seen = [t.name for t in await eager.list_tools()]
        assert [t.name for t in await lazy.list_tools()] == seen
        assert lazy.lazy_start.pending  # still answered from the catalog
    assert 0 < len(seen) < len(everything)


async def test_a_catalog_kept_under_other_settings_is_not_served(
    make_settings: Callable[..., Settings], clock: FakeClock
) -> None:
    settings = make_settings(MEDIAMUX_TOOLSETS="jobs,muapi")
    await _keep_catalog(settings, clock)
    assert build_server(settings, lazy=True).lazy_start.pending  # type: ignore[union-attr]
    for changed in (
        make_settings(MEDIAMUX_TOOLSETS="jobs,muapi", MEDIAMUX_READ_ONLY="1"),
        make_settings(MEDIAMUX_TOOLSETS="jobs,muzaic"),
        make_settings(MEDIAMUX_TOOLSETS="jobs,muapi", MEDIAMUX_SANDBOX="1"),
    ):
        server = build_server(changed, lazy=True)
        assert server.lazy_start is not None and not server.lazy_start.pending  # registered at once


# -- a real `mediamux serve` ------------------------------------------------------------------------

# Runs `mediamux serve ARGS` for real and writes, at its first tools/list answer, what it had imported
# by then and whether that answer came from the kept catalog.
PROBE = r"""
import json, os, sys
from mediamux.server import app

real = app.MediamuxServer.list_tools
first = []

async def list_tools(self):
    tools = await real(self)
    if not first:
        first.append(1)
        with open(os.environ["STARTUP_PROBE_OUT"], "w") as out:
            json.dump({"modules": sorted(sys.modules), "from_catalog": self.lazy_start.pending}, out)
    return tools

app.MediamuxServer.list_tools = list_tools
from mediamux.cli import main
sys.exit(main(["serve", *sys.argv[1:]]))
"""

# Loaded after the first answer (or when a request needs them), never before it.
NOT_BEFORE_THE_FIRST_ANSWER = (
    "mediamux.tools.base",  # every toolset, with the pydantic models of its arguments and results
    "mediamux.tools.jobs",
    "mediamux.tools.muapi",
    "mediamux.tools.museai",
    "mediamux.tools.muzaic",
    "mediamux.tools.mixpeek",
    "mediamux.providers.muapi",  # provider clients and their HTTP connection pools
    "mediamux.providers.museai",
    "mediamux.providers.muzaic",
    "mediamux.providers.mixpeek",
    "mediamux.providers.transport",
    "mediamux.jobs.engine",  # (the journal is opened to check it, which loads the job models)
    "mediamux.tasks.board",
    "mediamux.resources",
    "mediamux.server.services",
    "mediamux.server.prompts",
    "mediamux.server.completions",
    "mediamux.sandbox",  # the emulators, and FastAPI under them
    "fastapi",
)

LIVE_KEYS = {
    "MUAPI_API_KEY": "startup-test-unused-muapi-key",
    "MUSEAI_API_KEY": "startup-test-unused-museai-key",
    "MUZAIC_API_KEY": "startup-test-unused-muzaic-key",
    "MIXPEEK_API_KEY": "startup-test-unused-mixpeek-key",
}


def _loaded(modules: list[str], names: tuple[str, ...]) -> list[str]:
    return [m for m in modules if any(m == n or m.startswith(n + ".") for n in names)]


async def _first_answer(tmp_path: Path, args: list[str], env: dict[str, str]) -> dict[str, Any]:
    out = tmp_path / "probe.json"
    out.unlink(missing_ok=True)
    params = StdioServerParameters(
        command=sys.executable,
        args=["-c", PROBE, *args],
        env=server_env(tmp_path, STARTUP_PROBE_OUT=str(out), **env),
        cwd=tmp_path,
    )
    with anyio.fail_after(SPAWN_TIMEOUT_S * 2):
        async with Client(params, mode="auto") as client:
            assert len((await client.list_tools()).tools) > 40  # every toolset, either way
    found: dict[str, Any] = json.loads(out.read_text())
    return found


@pytest.mark.parametrize(
    ("args", "env"), [(["--sandbox"], {}), ([], LIVE_KEYS)], ids=["sandbox", "provider-keys-set"]
)
async def test_a_stdio_server_answers_its_first_tools_list_before_loading_toolsets_clients_journal_or_emulators(
    tmp_path: Path, args: list[str], env: dict[str, str]
) -> None:
    first = await _first_answer(tmp_path, args, env)
    # The first start on a home builds the catalog, and loads what that takes, and keeps it.
    assert not first["from_catalog"]
    assert _loaded(first["modules"], ("mediamux.tools.base", "mediamux.tools.muapi"))
    second = await _first_answer(tmp_path, args, env)
    assert second["from_catalog"]
    assert _loaded(second["modules"], NOT_BEFORE_THE_FIRST_ANSWER) == []


async def test_a_restarted_stdio_server_lists_the_same_tools_and_runs_its_first_call(tmp_path: Path) -> None:
    params = StdioServerParameters(
        command=serve_cmd()[0], args=serve_cmd()[1:], env=server_env(tmp_path), cwd=tmp_path
    )
    with anyio.fail_after(SPAWN_TIMEOUT_S * 2):
        async with Client(params, mode="auto") as client:
            first = (await client.list_tools()).tools
        assert list((tmp_path / "home" / "cache").glob("tools-*.json"))
        async with Client(params, mode="auto") as client:
            # Straight to a call: the emulators start now, and the call waits for them.
            result = await client.call_tool("muapi_get_balance", {})
            assert not result.is_error, text_of(result)
            second = (await client.list_tools(cache_mode="bypass")).tools
    assert _dump(second) == _dump(first)


def test_importing_the_start_up_path_loads_no_toolset(tmp_path: Path) -> None:
    """The same promise without a client: what importing the CLI and the server module costs."""
    code = "import json, sys, mediamux.cli, mediamux.server.app; json.dump(sorted(sys.modules), sys.stdout)"
    done = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "MEDIAMUX_HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert _loaded(json.loads(done.stdout), NOT_BEFORE_THE_FIRST_ANSWER) == []
