"""Keys never leak; the tool surface is honest about what spends money; filtering works."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client, MCPError
from mcp_types import INVALID_PARAMS

from mediamux.clock import FakeClock
from mediamux.config import Settings
from mediamux.sandbox.loopback import serve_on_loopback
from mediamux.sandbox.muapi import MuapiEmulator
from mediamux.server.app import MediamuxServer, build_server
from mediamux.server.logs import RedactSecrets, configure_logging
from tests.conftest import FAST_RETRY, LogSink
from tests.test_muapi_tools import call, text
from tests.test_transport import RedirectPolls, echoes_of, internal_service, leaks

CANARY = "CANARY-muapi-7f3a9c2e41"
TOKEN_CANARY = "CANARY-http-token-55aa"

# Tools that spend money or can lead to spending; they must never claim to be read-only.
PAID = {"muapi_generate", "muapi_topup"}


@pytest.fixture
async def live_like(
    home: Path, files_dir: Path, clock: FakeClock
) -> AsyncIterator[tuple[MuapiEmulator, Settings]]:
    """The emulator as a 'real' provider: our server talks to it with the canary as its key."""
    emulator = MuapiEmulator(now=clock.monotonic, master_key=CANARY)
    async with serve_on_loopback(emulator.app) as url:
        emulator.base_url = url
        settings = Settings(
            MUAPI_API_KEY=CANARY,
            MUAPI_BASE_URL=f"{url}/api/v1",
            MEDIAMUX_HOME=str(home),
            MEDIAMUX_ALLOWED_DIRS=str(files_dir),
            MEDIAMUX_HTTP_TOKEN=TOKEN_CANARY,
        )
        yield emulator, settings


def dump(result: Any) -> str:
    return json.dumps(result.model_dump(mode="json"), default=str)


@pytest.mark.both_eras
async def test_keys_appear_in_no_result_error_resource_log_or_repr(
    live_like: tuple[MuapiEmulator, Settings], clock: FakeClock, log_sink: LogSink, era: str, files_dir: Path
) -> None:
    emulator, settings = live_like
    (files_dir / "in.png").write_bytes(b"\x89PNG\r\n\x1a\nxx")
    seen: list[str] = []
    server = build_server(settings, clock=clock, retry=FAST_RETRY)
    async with Client(server, mode=era) as client:  # type: ignore[arg-type]
        calls: list[tuple[str, dict[str, Any]]] = [
            ("muapi_generate", {"endpoint": "flux-schnell-image", "params": {"prompt": "ok"}}),
            ("muapi_generate", {"endpoint": "flux-schnell-image", "params": {"prompt": "[fail]"}}),
            ("muapi_generate", {"endpoint": "ai-image-upscale", "params": {"image_url": "in.png"}}),
            ("muapi_generate", {"endpoint": "no-such-model", "params": {}}),
            ("muapi_get_balance", {}),
            ("muapi_list_keys", {}),
            ("muapi_get_model", {"name": "flux-dev-image"}),
            ("jobs_list", {}),
        ]
        for name, args in calls:
            seen.append(dump(await call(client, name, args)))
        emulator.balance_usd = 0
        seen.append(
            dump(
                await call(
                    client, "muapi_generate", {"endpoint": "flux-dev-image", "params": {"prompt": "x"}}
                )
            )
        )
        emulator.faults.add(
            method="GET",
            path=r"/account/balance",
            kind="status",
            status=500,
            times=-1,
            body={"detail": f"upstream echoed x-api-key: {CANARY}"},
        )
        seen.append(dump(await call(client, "muapi_get_balance", {})))
        with anyio.fail_after(10):
            for uri in ("mediamux://jobs", "mediamux://costs"):
                seen.append((await client.read_resource(uri)).model_dump_json())
            seen.append((await client.list_tools()).model_dump_json())

    seen += [repr(settings), str(settings), settings.model_dump_json(), *log_sink.lines]
    leaks = [s[:200] for s in seen if CANARY in s or TOKEN_CANARY in s]
    assert leaks == []
    assert any("[redacted]" in s for s in seen)  # the echoed key was caught, not merely absent


async def test_a_rejected_key_is_not_repeated_back(home: Path, clock: FakeClock, log_sink: LogSink) -> None:
    emulator = MuapiEmulator(now=clock.monotonic)
    async with serve_on_loopback(emulator.app) as url:
        emulator.base_url = url
        settings = Settings(MUAPI_API_KEY=CANARY, MUAPI_BASE_URL=f"{url}/api/v1", MEDIAMUX_HOME=str(home))
        async with Client(build_server(settings, clock=clock, retry=FAST_RETRY)) as client:
            result = await call(client, "muapi_get_balance", {})

    assert result.is_error
    assert result.meta["mediamux/error"]["class"] == "auth"
    assert "MUAPI_API_KEY" in text(result)
    assert CANARY not in dump(result)
    assert not [line for line in log_sink.lines if CANARY in line]


@pytest.mark.unit
def test_log_redaction_masks_secrets_in_messages_arguments_and_tracebacks() -> None:
    records: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(self.format(record))

    logger = logging.getLogger("test.redaction")
    handler = Collect()
    handler.addFilter(RedactSecrets([CANARY]))
    logger.addHandler(handler)
    try:
        logger.warning("key is %s", CANARY)
        try:
            raise RuntimeError(f"boom {CANARY}")
        except RuntimeError:
            logger.exception("failed")
    finally:
        logger.removeHandler(handler)

    assert records and all(CANARY not in r for r in records)
    assert "[redacted]" in records[0]


@pytest.mark.unit
def test_configure_logging_writes_to_stderr_only(capsys: pytest.CaptureFixture[str]) -> None:
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    try:
        configure_logging([CANARY], "INFO")
        logging.getLogger("mediamux.test").info("hello %s", CANARY)
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
    out, err = capsys.readouterr()
    assert out == ""
    assert "hello [redacted]" in err


# -- the tool surface --------------------------------------------------------------------------


async def tool_list(server: MediamuxServer) -> list[Any]:
    async with Client(server) as client:
        with anyio.fail_after(10):
            return list((await client.list_tools()).tools)


async def test_every_tool_has_explicit_annotations_and_no_paid_tool_claims_read_only(
    make_server: Callable[..., MediamuxServer],
) -> None:
    tools = await tool_list(make_server())

    assert {t.name for t in tools} >= PAID
    for tool in tools:
        a = tool.annotations
        assert a is not None, tool.name
        assert None not in (a.read_only_hint, a.destructive_hint, a.idempotent_hint, a.open_world_hint), (
            tool.name
        )
        assert a.title, tool.name
        assert re.fullmatch(r"(muapi|museai|muzaic|mixpeek|jobs)_[a-z_]+", tool.name)
        if tool.name in PAID:
            assert a.read_only_hint is False and a.idempotent_hint is False, tool.name
        # Result schemas are advertised for the job envelope only (mediamux.tools.catalog says why).
        assert (tool.output_schema is not None) == tool.name.startswith("jobs_"), tool.name


async def test_tool_descriptions_are_short_declarative_and_say_what_they_cost(
    make_server: Callable[..., MediamuxServer],
) -> None:
    for tool in await tool_list(make_server()):
        description = tool.description or ""
        assert 40 < len(description) < 900, tool.name
        assert not re.search(r"\b(you must|ignore|IMPORTANT|always call)\b", description, re.IGNORECASE), (
            tool.name
        )
        assert re.search(r"\b(free|paid|costs?|spends?|charged?)\b", description, re.IGNORECASE), tool.name


@pytest.mark.providers("muapi")
async def test_read_only_mode_hides_everything_that_spends_creates_or_deletes_even_when_named(
    make_server: Callable[..., MediamuxServer], sandbox: Any
) -> None:
    server = make_server(MEDIAMUX_READ_ONLY="true", MEDIAMUX_TOOLSETS="muapi,jobs")
    names = {t.name for t in await tool_list(server)}

    assert names == {
        "muapi_get_result",
        "muapi_get_balance",
        "muapi_list_keys",
        "muapi_list_models",
        "muapi_get_model",
        "jobs_wait",
        "jobs_get",
        "jobs_list",
        "jobs_costs",
    }
    async with Client(server) as client:
        with pytest.raises(MCPError) as refused:
            await call(
                client, "muapi_generate", {"endpoint": "flux-schnell-image", "params": {"prompt": "x"}}
            )
    assert refused.value.error.code == INVALID_PARAMS
    assert refused.value.error.message.startswith(
        "muapi_generate is not offered by this server: MEDIAMUX_READ_ONLY"
    )
    assert sandbox.muapi.submissions == 0


async def test_toolsets_select_what_is_registered(make_server: Callable[..., MediamuxServer]) -> None:
    only_jobs = {t.name for t in await tool_list(make_server(MEDIAMUX_TOOLSETS="jobs"))}
    assert only_jobs == {"jobs_wait", "jobs_get", "jobs_list", "jobs_cancel", "jobs_costs"}


@pytest.mark.unit
def test_without_keys_only_the_jobs_toolset_is_enabled_and_a_key_enables_its_provider(
    make_settings: Callable[..., Settings],
) -> None:
    assert make_settings().enabled_toolsets() == ["jobs"]
    assert make_settings(MUAPI_API_KEY="k").enabled_toolsets() == ["muapi", "jobs"]
    # Registry order (mediamux.registry), then jobs.
    assert make_settings(MEDIAMUX_SANDBOX="1").enabled_toolsets() == [
        "muapi",
        "museai",
        "muzaic",
        "mixpeek",
        "jobs",
    ]


@pytest.mark.unit
def test_an_unknown_toolset_name_is_a_clear_configuration_error(
    make_settings: Callable[..., Settings],
) -> None:
    with pytest.raises(ValueError, match="unknown toolset"):
        make_settings(MEDIAMUX_TOOLSETS="muapi,vidz")


@pytest.mark.unit
def test_keys_are_secret_in_settings(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(MUAPI_API_KEY=CANARY)

    assert CANARY not in repr(settings) and CANARY not in settings.model_dump_json()
    assert settings.secrets() == [CANARY]


@pytest.mark.providers("muapi")
@pytest.mark.parametrize(
    "name",
    [".env", ".git/config", "notes.txt", "id_rsa", "secrets/.hidden.png"],
)
async def test_uploads_refuse_hidden_and_non_media_files_inside_allowed_folders(
    client: Client, sandbox: Any, files_dir: Path, name: str
) -> None:
    target = files_dir / name
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text("AWS_SECRET_ACCESS_KEY=canary")

    upload = await call(client, "muapi_upload_file", {"path": name})
    generate = await call(
        client, "muapi_generate", {"endpoint": "ai-image-upscale", "params": {"image_url": name}}
    )

    assert upload.is_error and generate.is_error
    assert sandbox.muapi.requests == []


@pytest.mark.providers("muapi")
async def test_uploads_refuse_the_state_folder_but_allow_its_outputs(
    make_server: Callable[..., MediamuxServer], sandbox: Any, home: Path
) -> None:
    (home / "keys").mkdir(parents=True)
    (home / "keys" / "leak.png").write_bytes(b"\x89PNG\r\n\x1a\nkey")
    (home / "outputs").mkdir(parents=True)
    (home / "outputs" / "ok.png").write_bytes(b"\x89PNG\r\n\x1a\nfine")
    async with Client(make_server(MEDIAMUX_ALLOWED_DIRS=str(home))) as client:
        refused = await call(client, "muapi_upload_file", {"path": str(home / "keys" / "leak.png")})
        allowed = await call(client, "muapi_upload_file", {"path": str(home / "outputs" / "ok.png")})

    assert refused.is_error and "state folder" in text(refused)
    assert not allowed.is_error, text(allowed)
    assert [p for _, p in sandbox.muapi.requests] == ["/api/v1/upload_file"]


@asynccontextmanager
async def server_behind(
    wrap: Callable[[Any], Any], home: Path, files_dir: Path, clock: FakeClock
) -> AsyncIterator[tuple[MuapiEmulator, Any, Client]]:
    """Our server, with an MCP client, talking over loopback to the MuAPI emulator as seen through
    ``wrap(emulator.app)`` (a provider, or a network, misbehaving): (emulator, wrapped app, client)."""
    emulator = MuapiEmulator(now=clock.monotonic)
    front = wrap(emulator.app)
    try:
        async with serve_on_loopback(front) as url:
            emulator.base_url = url
            settings = Settings(
                MUAPI_API_KEY="sandbox-muapi-key",
                MUAPI_BASE_URL=f"{url}/api/v1",
                MEDIAMUX_HOME=str(home),
                MEDIAMUX_ALLOWED_DIRS=str(files_dir),
            )
            async with Client(build_server(settings, clock=clock, retry=FAST_RETRY)) as client:
                yield emulator, front, client
    finally:
        emulator.close()


@pytest.mark.faults
async def test_a_result_poll_redirected_to_an_internal_service_shows_the_model_nothing_of_it(
    home: Path, files_dir: Path, clock: FakeClock
) -> None:
    async with internal_service() as (internal_url, asked):

        def redirect_polls(app: Any) -> Any:
            return RedirectPolls(app, lambda _path: f"{internal_url}/admin/status")

        async with server_behind(redirect_polls, home, files_dir, clock) as (_emulator, _front, client):
            generated = await call(
                client, "muapi_generate", {"endpoint": "flux-schnell-image", "params": {"prompt": "x"}}
            )
            request_id = generated.structured_content["provider_job_id"]
            polled = await call(client, "muapi_get_result", {"request_id": request_id})

    assert asked == []
    assert polled.is_error and "redirected the request to another host" in text(polled)
    # The job is not failed by a refused poll: it is still there to be resumed once the provider behaves.
    assert generated.structured_content["status"] in ("queued", "running")
    for result in (generated, polled):
        assert "INTERNAL-ONLY" not in dump(result)


async def test_a_key_echoed_in_another_form_reaches_no_result_resource_or_log(
    live_like: tuple[MuapiEmulator, Settings], clock: FakeClock, log_sink: LogSink
) -> None:
    emulator, settings = live_like
    echoes = echoes_of(CANARY)
    emulator.faults.add(
        method="GET",
        path=r"/account/balance",
        kind="status",
        status=500,
        times=-1,
        body={"detail": "upstream echoed your credentials: " + " | ".join(echoes.values())},
    )
    seen: list[str] = []
    async with Client(build_server(settings, clock=clock, retry=FAST_RETRY)) as client:
        result = await call(client, "muapi_get_balance", {})
        seen.append(dump(result))
        with anyio.fail_after(10):
            seen.append((await client.read_resource("mediamux://jobs")).model_dump_json())

    assert result.is_error and "[redacted]" in text(result)
    seen += log_sink.lines
    assert [leaks(s, CANARY) for s in seen if leaks(s, CANARY)] == []


@pytest.mark.parametrize("form", ["in-an-id", "upper", "base64"])
async def test_a_provider_job_id_carrying_the_key_is_never_shown_and_the_job_is_not_silently_lost(
    live_like: tuple[MuapiEmulator, Settings], clock: FakeClock, log_sink: LogSink, form: str
) -> None:
    emulator, settings = live_like
    # The provider really takes the job (after_handler), then answers with an id built from the key.
    emulator.faults.add(
        method="POST",
        path=r"/flux-schnell-image$",
        kind="status",
        status=200,
        after_handler=True,
        body={"request_id": echoes_of(CANARY)[form], "status": "processing"},
    )
    seen: list[str] = []
    async with Client(build_server(settings, clock=clock, retry=FAST_RETRY)) as client:
        result = await call(
            client, "muapi_generate", {"endpoint": "flux-schnell-image", "params": {"prompt": "x"}}
        )
        seen.append(dump(result))
        seen.append(dump(await call(client, "jobs_list", {})))
        with anyio.fail_after(10):
            seen.append((await client.read_resource("mediamux://jobs")).model_dump_json())

    assert result.is_error
    assert "contains the API key" in text(result) and "may have been" in text(result)
    assert emulator.submissions == 1
    seen += log_sink.lines
    assert [leaks(s, CANARY) for s in seen if leaks(s, CANARY)] == []
