"""Shared fixtures: an isolated environment, a fake clock, the sandbox, and MCP clients in both eras."""

from __future__ import annotations

import inspect
import logging
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from mcp import Client

from mediamux.clock import FakeClock
from mediamux.config import Settings
from mediamux.providers.transport import RetryConfig
from mediamux.registry import make_sandbox
from mediamux.sandbox import Sandbox
from mediamux.server.app import MediamuxServer, build_server

ERAS = ["auto", "legacy"]  # 2026-07-28 (probe) and 2025-11-25 (initialize handshake)


@pytest.hookimpl(tryfirst=True)
def pytest_pycollect_makeitem(collector: pytest.Collector, name: str, obj: object) -> None:
    # anyio's plugin runs an async fixture's setup and teardown in the same task, which the MCP
    # client's task groups require; every coroutine test runs under it.
    if name.startswith("test") and inspect.iscoroutinefunction(obj):
        pytest.mark.anyio(obj)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(autouse=True)
def isolated_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The developer's own keys and settings must never reach a test (or a real provider)."""
    for name in list(os.environ):
        if name.startswith(("MEDIAMUX_", "MUAPI_", "MUSEAI_", "MUZAIC_", "MIXPEEK_")):
            monkeypatch.delenv(name, raising=False)


@pytest.fixture(autouse=True)
def restore_logging() -> Any:
    """CLI commands configure the root logger for a real process; undo that after each test."""
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    yield
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def sandbox(clock: FakeClock) -> Any:
    box = make_sandbox(now=clock.monotonic)
    yield box
    box.close()


@pytest.fixture
def files_dir(tmp_path: Path) -> Path:
    path = tmp_path / "files"
    path.mkdir()
    return path


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


@pytest.fixture
def make_settings(home: Path, files_dir: Path) -> Callable[..., Settings]:
    def make(**env: Any) -> Settings:
        values: dict[str, Any] = {"MEDIAMUX_HOME": str(home), "MEDIAMUX_ALLOWED_DIRS": str(files_dir)}
        values.update(env)
        return Settings(**values)

    return make


# Fast retries: the fake clock makes waits free, but a bounded budget keeps failure tests short.
FAST_RETRY = RetryConfig(max_attempts=3, base_delay_s=0.5, max_delay_s=2.0, max_total_s=30.0)


@pytest.fixture
def make_server(
    make_settings: Callable[..., Settings], clock: FakeClock, sandbox: Sandbox
) -> Callable[..., MediamuxServer]:
    def make(*, use_sandbox: bool = True, **env: Any) -> MediamuxServer:
        return build_server(
            make_settings(**env), clock=clock, sandbox=sandbox if use_sandbox else None, retry=FAST_RETRY
        )

    return make


@pytest.fixture(params=ERAS)
def era(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def client(make_server: Callable[..., MediamuxServer], era: str) -> AsyncIterator[Client]:
    async with Client(make_server(), mode=era) as c:  # type: ignore[arg-type]
        yield c


class LogSink(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture
def log_sink() -> AsyncIterator[LogSink] | Any:
    sink = LogSink()
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(sink)
    root.setLevel(logging.DEBUG)
    yield sink
    root.removeHandler(sink)
    root.setLevel(old_level)
