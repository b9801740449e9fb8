"""A fifth provider is its own files plus one registry line: shown end to end with a tiny fake one.

"echo" has everything a real provider has — settings read from its own variables, an emulator
served on loopback, a client on the shared transport, a poll-until-done job driver, a toolset,
a health check — and nothing outside this file knows its name.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Annotated, Any, Literal

import anyio
import httpx2
import pytest
from mcp import Client
from mcp.server.mcpserver import Context
from mcp_types import CallToolResult
from pydantic import BaseModel, Field, SecretStr
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from mediamux import registry
from mediamux.cli import _doctor
from mediamux.clock import FakeClock
from mediamux.config import Settings
from mediamux.jobs.engine import DriverBase, JobDriver, Outcome, ProgressFn
from mediamux.jobs.models import JobResult
from mediamux.providers.transport import Retry, Transport
from mediamux.registry.spec import DriverContext, Host, ProviderSettings, ProviderSpec
from mediamux.sandbox import Emulated
from mediamux.sandbox.loopback import serve_on_loopback
from mediamux.server.app import build_server, default_sandbox
from mediamux.tools.base import Toolset, WaitS, job_result, progress_of, provider_client, services

KEY = "echo-sandbox-key"


class EchoSettings(ProviderSettings):
    api_key: SecretStr | None = Field(None, validation_alias="ECHO_API_KEY")
    base_url: str = Field("https://echo.invalid/v1", validation_alias="ECHO_BASE_URL")


class EchoEmulator:
    """Shouts back what it is sent, after two polls."""

    def __init__(self) -> None:
        self.jobs: dict[str, dict[str, Any]] = {}
        self.calls: list[str] = []
        self._ids = itertools.count(1)
        self.app = Starlette(
            routes=[
                Route("/v1/me", self.me),
                Route("/v1/shouts", self.submit, methods=["POST"]),
                Route("/v1/shouts/{id}", self.poll),
            ]
        )

    def _authorized(self, request: Request) -> bool:
        self.calls.append(f"{request.method} {request.url.path}")
        return request.headers.get("X-Echo-Key") == KEY

    async def me(self, request: Request) -> JSONResponse:
        if not self._authorized(request):
            return JSONResponse({"error": "bad key"}, status_code=401)
        return JSONResponse({"shouts": len(self.jobs)})

    async def submit(self, request: Request) -> JSONResponse:
        if not self._authorized(request):
            return JSONResponse({"error": "bad key"}, status_code=401)
        job_id = f"shout-{next(self._ids)}"
        self.jobs[job_id] = {"text": (await request.json())["text"], "polls": 0}
        return JSONResponse({"id": job_id, "status": "queued"})

    async def poll(self, request: Request) -> JSONResponse:
        if not self._authorized(request):
            return JSONResponse({"error": "bad key"}, status_code=401)
        job = self.jobs[request.path_params["id"]]
        job["polls"] += 1
        if job["polls"] < 2:
            return JSONResponse({"status": "running"})
        return JSONResponse({"status": "done", "text": job["text"].upper()})

    def close(self) -> None:
        self.jobs.clear()


class EchoClient:
    def __init__(self, transport: Transport) -> None:
        self.t = transport

    async def me(self) -> dict[str, Any]:
        data: dict[str, Any] = await self.t.get_json("me", operation="me")
        return data

    async def shout(self, text: str) -> str:
        response = await self.t.request(
            "POST", "shouts", operation="shout", retry=Retry.NEVER, json_body={"text": text}
        )
        return str(self.t.parse_json(response, "shout")["id"])

    async def get(self, job_id: str) -> dict[str, Any]:
        data: dict[str, Any] = await self.t.get_json(f"shouts/{job_id}", operation="get_shout")
        return data


class ShoutArgs(BaseModel):
    text: str


class EchoDriver(DriverBase):
    provider = "echo"
    operation = "shout"
    title = "Echo"
    mode: Literal["poll", "background"] = "poll"
    args_model = ShoutArgs

    def __init__(self, client: EchoClient) -> None:
        self.client = client

    async def prepare(self, args: ShoutArgs, options: dict[str, Any], progress: ProgressFn) -> ShoutArgs:
        return args

    async def submit(self, args: ShoutArgs, options: dict[str, Any], progress: ProgressFn) -> Outcome:
        return Outcome(status="queued", provider_job_id=await self.client.shout(args.text))

    async def poll(self, provider_job_id: str, args: ShoutArgs, options: dict[str, Any]) -> Outcome:
        data = await self.client.get(provider_job_id)
        if data["status"] == "done":
            return Outcome(status="completed", provider_status="done", result={"text": data["text"]})
        return Outcome(status="running", provider_status=data["status"])

    async def finalize(
        self, outcome: Outcome, args: ShoutArgs, options: dict[str, Any], progress: ProgressFn
    ) -> Outcome:
        return outcome


toolset = Toolset(id="echo", title="Echo", description="Shouts text back.")


@toolset.tool(title="Shout", read_only=False)
async def echo_shout(
    text: Annotated[str, Field(min_length=1, max_length=100)], ctx: Context, wait_s: WaitS = 45
) -> Annotated[CallToolResult, JobResult[Any]]:
    """Shouts the text back in capitals. Free; takes two polls."""
    provider_client(ctx, "echo", EchoClient)  # a missing key is reported before anything is journaled
    view = await services(ctx).engine.run(
        "echo", "shout", ShoutArgs(text=text), wait_s=wait_s, progress=progress_of(ctx)
    )
    return job_result(view, title="Echo shout")


def _emulator(now: Callable[[], float], job_seconds: float | None, state_dir: Path | None = None) -> Emulated:
    emulator = EchoEmulator()
    return Emulated(emulator, {"echo": emulator.app}, KEY, lambda urls: None)


def _drivers(client: Any, ctx: DriverContext) -> Iterable[JobDriver]:
    yield EchoDriver(client)


async def _health(client: Any) -> str:
    return f"{(await client.me())['shouts']} shout(s)"


ECHO = ProviderSpec(
    id="echo",
    title="Echo",
    key_env="ECHO_API_KEY",
    settings=EchoSettings,
    hosts=(Host("echo", "base_url", "X-Echo-Key", sandbox_path="/v1"),),
    client=lambda transports: EchoClient(transports["echo"]),
    health=_health,
    toolset=lambda: toolset,
    drivers=_drivers,
    emulator=_emulator,
)


@pytest.fixture
def echo_registered() -> Iterator[None]:
    registry.register(ECHO)
    yield
    registry.unregister("echo")


@pytest.mark.usefixtures("echo_registered")
async def test_a_registered_provider_works_end_to_end_with_no_other_file_knowing_it(
    home: Path, files_dir: Path, clock: FakeClock
) -> None:
    settings = Settings(
        MEDIAMUX_HOME=str(home), MEDIAMUX_ALLOWED_DIRS=str(files_dir), MEDIAMUX_TOOLSETS="echo,jobs"
    )
    box = registry.make_sandbox(now=clock.monotonic, only=["echo"])
    server = build_server(settings, clock=clock, sandbox=box)

    async with Client(server) as client:
        with anyio.fail_after(20):
            names = {t.name for t in (await client.list_tools()).tools}
            shouted = await client.call_tool("echo_shout", {"text": "hello"})
            listed = await client.call_tool("jobs_list", {"provider": "echo"})

    assert names == {"echo_shout", "jobs_wait", "jobs_get", "jobs_list", "jobs_cancel", "jobs_costs"}
    view = shouted.structured_content or {}
    assert shouted.is_error is False, shouted.content
    assert view["provider"] == "echo" and view["status"] == "completed"
    assert view["result"] == {"text": "HELLO"}
    assert [j["job_id"] for j in (listed.structured_content or {})["jobs"]] == [view["job_id"]]
    assert box.echo.calls == ["POST /v1/shouts", "GET /v1/shouts/shout-1", "GET /v1/shouts/shout-1"]
    box.close()


@pytest.mark.usefixtures("echo_registered")
def test_a_registered_provider_reads_its_own_variables_and_is_a_known_toolset(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ECHO_API_KEY", "from-the-environment")

    settings = Settings(MEDIAMUX_TOOLSETS="echo")

    assert settings.enabled_toolsets() == ["echo"]
    assert settings.configured_providers() == ["echo"]
    assert "from-the-environment" in settings.secrets()
    assert settings.base_url("echo", "echo") == "https://echo.invalid/v1"


@pytest.mark.usefixtures("echo_registered")
async def test_doctor_makes_one_authenticated_call_to_a_registered_provider(
    capsys: pytest.CaptureFixture[str], home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    emulator = EchoEmulator()
    async with serve_on_loopback(emulator.app) as url:
        settings = Settings(MEDIAMUX_HOME=str(home), ECHO_API_KEY=KEY, ECHO_BASE_URL=f"{url}/v1")
        assert await _doctor(settings) == 0
        good = capsys.readouterr().out
        wrong = Settings(MEDIAMUX_HOME=str(home), ECHO_API_KEY="not-the-key", ECHO_BASE_URL=f"{url}/v1")
        assert await _doctor(wrong) == 1
        bad = capsys.readouterr().out

    assert f"Echo     key set; reachable at {url}/v1; 0 shout(s)" in good
    assert emulator.calls == ["GET /v1/me", "GET /v1/me"]
    assert "Echo     key set; NOT reachable" in bad and "not-the-key" not in bad


def test_the_sandbox_serves_only_the_providers_asked_for() -> None:
    box = registry.make_sandbox(only=["muzaic"])

    assert set(box.keys) == {"muzaic"}
    assert list(box.emulators["muzaic"].apps) == ["muzaic"]
    box.close()


async def _submit_or_poll(box: Any, job_id: str | None) -> tuple[str, int]:
    """Submits a MuAPI job to `box` (or polls `job_id`), then closes it; (job id, the poll's status code)."""
    async with box.running() as urls, httpx2.AsyncClient(headers={"x-api-key": box.keys["muapi"]}) as c:
        api = f"{urls['muapi']}/api/v1"
        if job_id is None:
            job_id = (await c.post(f"{api}/flux-dev-image", json={"prompt": "x"})).json()["request_id"]
        status = (await c.get(f"{api}/predictions/{job_id}/result")).status_code
    box.close()
    return str(job_id), status


async def test_a_sandbox_made_again_on_the_same_state_folder_carries_on_where_the_last_one_stopped(
    tmp_path: Path,
) -> None:
    with anyio.fail_after(20):
        job_id, _ = await _submit_or_poll(
            registry.make_sandbox(only=["muapi", "muzaic"], state_dir=tmp_path), None
        )
        _, status = await _submit_or_poll(registry.make_sandbox(only=["muapi"], state_dir=tmp_path), job_id)

    assert status == 200
    assert {p.name for p in tmp_path.iterdir()} == {"muapi", "muzaic"}


async def test_without_a_state_folder_each_sandbox_starts_afresh() -> None:
    with anyio.fail_after(20):
        job_id, _ = await _submit_or_poll(registry.make_sandbox(only=["muapi"]), None)
        _, status = await _submit_or_poll(registry.make_sandbox(only=["muapi"]), job_id)

    assert status == 404


def test_serve_sandbox_keeps_its_emulators_state_under_the_home(tmp_path: Path) -> None:
    home = tmp_path / "home"
    box = default_sandbox(Settings(MEDIAMUX_HOME=str(home), MEDIAMUX_SANDBOX="1"))
    box.close()

    assert {p.name for p in (home / "sandbox").iterdir()} >= {"muapi", "museai", "muzaic"}
    assert (home / "sandbox" / "muapi" / "account.json").is_file()
