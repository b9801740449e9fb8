"""Shared fixtures: an isolated environment, a fake clock, the sandbox, and MCP clients.

Tiers and markers (registered in pyproject.toml):

* ``unit``: no MCP server and no sockets. Everything under ``tests/unit/`` and the in-process
  emulator tests under ``tests/sandbox/`` (unless marked ``loopback``) are unit by directory;
  elsewhere a test says ``@pytest.mark.unit``. A guard makes any socket bind or connect fail in a
  unit test, so the label cannot drift from the truth. ``pytest -m unit`` runs the tier.
* ``both_eras``: the ``client`` fixture (and ``era``) run once per protocol era. Only tests whose
  subject is the protocol carry it (progress, cancellation, resources and change notifications,
  prompts, the isError / structured-output shape); every other test talks in DEFAULT_ERA.
* ``providers("muapi", ...)``: serve only those sandbox emulators and register only their
  toolsets (plus jobs). Without it, all four are served and every toolset is registered.
"""

from __future__ import annotations

import inspect
import logging
import os
import socket
from collections.abc import AsyncIterator, Callable, Iterator
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

# A throwaway PostgreSQL cluster per test process, for the tests that take `pg_url`.
pytest_plugins = ["tests.pg_cluster"]

ERAS = ["auto", "legacy"]  # 2026-07-28 (probe) and 2025-11-25 (initialize handshake)
# One era for tests whose subject is not the protocol. In-process, the 2026-07-28 client dispatches
# straight into the server with no JSON-RPC framing; the 2025-11-25 one frames and validates every
# message as stdio and HTTP do, so a tool result that would not survive the wire fails here too.
DEFAULT_ERA = "legacy"

TESTS = Path(__file__).parent
UNIT_DIRS = ("unit", "sandbox")  # tests/unit/ and the in-process emulator tests


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        parts = item.path.relative_to(TESTS).parts if item.path.is_relative_to(TESTS) else ()
        if parts and parts[0] in UNIT_DIRS and item.get_closest_marker("loopback") is None:
            item.add_marker(pytest.mark.unit)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if metafunc.definition.get_closest_marker("both_eras") is None:
        return
    if "era" not in metafunc.fixturenames:
        raise pytest.UsageError(f"{metafunc.definition.nodeid} is marked both_eras but talks to no client")
    metafunc.parametrize("era", ERAS, indirect=True)


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
    """The developer's own keys and settings must never reach a test (or a real provider, or bucket)."""
    for name in list(os.environ):
        if name.startswith(("MEDIAMUX_", "MUAPI_", "MUSEAI_", "MUZAIC_", "MIXPEEK_", "AWS_")):
            monkeypatch.delenv(name, raising=False)


class NotAUnitTest(AssertionError):
    """A test marked ``unit`` did what the unit tier promises not to."""


def refuse_in_unit_tests(request: pytest.FixtureRequest, what: str) -> None:
    if request.node.get_closest_marker("unit") is not None:
        raise NotAUnitTest(f"unit tests start no {what}")


@pytest.fixture(autouse=True)
def no_sockets_in_unit_tests(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """A unit test that binds or connects a network socket fails."""
    if request.node.get_closest_marker("unit") is None:
        return

    def refuse(name: str) -> Callable[..., Any]:
        real = getattr(socket.socket, name)

        def guarded(self: socket.socket, *args: Any, **kwargs: Any) -> Any:
            if self.family in (socket.AF_INET, socket.AF_INET6):
                raise NotAUnitTest(f"unit tests open no sockets (socket.{name}{args!r})")
            return real(self, *args, **kwargs)

        return guarded

    for name in ("bind", "connect", "connect_ex"):
        monkeypatch.setattr(socket.socket, name, refuse(name))


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
def providers(request: pytest.FixtureRequest) -> tuple[str, ...] | None:
    """The providers named by the closest ``providers`` marker; None (all four) without one."""
    marker = request.node.get_closest_marker("providers")
    return tuple(marker.args) if marker is not None else None


@pytest.fixture
def sandbox(
    request: pytest.FixtureRequest, clock: FakeClock, providers: tuple[str, ...] | None
) -> Iterator[Sandbox]:
    refuse_in_unit_tests(request, "sandbox")
    box = make_sandbox(now=clock.monotonic, only=providers)
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
    request: pytest.FixtureRequest,
    make_settings: Callable[..., Settings],
    clock: FakeClock,
    sandbox: Sandbox,
    providers: tuple[str, ...] | None,
) -> Callable[..., MediamuxServer]:
    refuse_in_unit_tests(request, "MCP server")

    def make(*, use_sandbox: bool = True, **env: Any) -> MediamuxServer:
        if use_sandbox and providers is not None:
            # Only what is served is registered: a tool whose emulator is not running would talk
            # to the real provider's default URL.
            env.setdefault("MEDIAMUX_TOOLSETS", ",".join([*providers, "jobs"]))
        return build_server(
            make_settings(**env), clock=clock, sandbox=sandbox if use_sandbox else None, retry=FAST_RETRY
        )

    return make


@pytest.fixture
def era(request: pytest.FixtureRequest) -> str:
    """DEFAULT_ERA, or each of ERAS for a test marked ``both_eras``."""
    return str(getattr(request, "param", DEFAULT_ERA))


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
