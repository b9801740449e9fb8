"""Log notifications from the records a request causes: levels per era, secrets masked, nothing
from other threads or after the request."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import Any

import anyio
import pytest
from mcp_types import LoggingMessageNotification, SetLevelRequestParams

from mediamux.server.client_logs import ClientLogs, mcp_level

SECRET = "sk-live-0123456789abcdef"
log = logging.getLogger("mediamux.test_client_logs")


@dataclass
class Connection:
    state: dict[str, Any] = field(default_factory=dict)


@dataclass
class Session:
    _connection: Connection
    sent: list[tuple[Any, Any]] = field(default_factory=list)

    async def send_notification(self, notification: Any, related_request_id: Any = None) -> None:
        self.sent.append((notification, related_request_id))


@dataclass
class Ctx:
    session: Session
    method: str = "tools/call"
    request_id: Any = 7
    protocol_version: str = "2025-11-25"
    meta: Any = None


def messages(session: Session) -> list[tuple[str, str]]:
    out = []
    for note, related in session.sent:
        assert isinstance(note, LoggingMessageNotification) and related == 7
        out.append((note.params.level, str(note.params.data)))
    return out


@pytest.fixture(autouse=True)
def records_exist(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="mediamux")


async def serve(logs: ClientLogs, ctx: Ctx, body: Any) -> Any:
    async def call_next(_: Any) -> Any:
        body()
        return "result"

    with anyio.fail_after(5):
        return await logs.middleware(ctx, call_next)


async def test_a_2025_client_gets_warnings_until_it_sets_a_level_then_what_it_asked_for() -> None:
    logs, ctx = ClientLogs([]), Ctx(Session(Connection()))

    def body() -> None:
        log.info("retrying in 1.0s")
        log.warning("redirect refused")

    assert await serve(logs, ctx, body) == "result"
    assert messages(ctx.session) == [("warning", "redirect refused")]

    await logs.set_level(ctx, SetLevelRequestParams(level="info"))
    ctx.session.sent.clear()
    await serve(logs, ctx, body)
    assert messages(ctx.session) == [("info", "retrying in 1.0s"), ("warning", "redirect refused")]

    await logs.set_level(ctx, SetLevelRequestParams(level="error"))
    ctx.session.sent.clear()
    await serve(logs, ctx, body)
    assert messages(ctx.session) == []


@pytest.mark.parametrize(
    ("meta", "expected"),
    [
        (None, []),
        ({"io.modelcontextprotocol/logLevel": "warning"}, [("warning", "redirect refused")]),
        (
            {"io.modelcontextprotocol/logLevel": "debug"},
            [("info", "retrying in 1.0s"), ("warning", "redirect refused")],
        ),
    ],
)
async def test_a_2026_request_gets_only_what_its_own_meta_opted_into(
    meta: Any, expected: list[tuple[str, str]]
) -> None:
    logs = ClientLogs([])
    ctx = Ctx(Session(Connection()), protocol_version="2026-07-28", meta=meta)

    def body() -> None:
        log.info("retrying in 1.0s")
        log.warning("redirect refused")

    await serve(logs, ctx, body)

    assert messages(ctx.session) == expected


async def test_secrets_are_masked_and_records_from_other_threads_or_requests_are_not_sent() -> None:
    logs, ctx = ClientLogs([SECRET]), Ctx(Session(Connection()))

    def body() -> None:
        log.error("the answer echoed %s", SECRET)
        worker = threading.Thread(target=lambda: log.error("from a worker thread"))
        worker.start()
        worker.join()

    await serve(logs, ctx, body)
    log.error("after the request")

    assert messages(ctx.session) == [("error", "the answer echoed [redacted]")]
    assert SECRET not in repr(ctx.session.sent)


async def test_the_handlers_failure_reaches_the_caller_unwrapped_after_its_records() -> None:
    logs, ctx = ClientLogs([]), Ctx(Session(Connection()))

    async def call_next(_: Any) -> Any:
        log.warning("about to fail")
        raise ValueError("boom")

    with anyio.fail_after(5), pytest.raises(ValueError, match="boom"):
        await logs.middleware(ctx, call_next)
    assert messages(ctx.session) == [("warning", "about to fail")]


async def test_requests_that_are_not_calls_reads_or_prompts_are_not_watched() -> None:
    logs, ctx = ClientLogs([]), Ctx(Session(Connection()), method="tools/list")

    await serve(logs, ctx, lambda: log.error("listing"))

    assert ctx.session.sent == []


@pytest.mark.parametrize(
    ("levelno", "level"),
    [
        (logging.DEBUG, "debug"),
        (logging.INFO, "info"),
        (logging.WARNING, "warning"),
        (logging.ERROR, "error"),
    ],
)
def test_python_levels_map_to_the_protocols(levelno: int, level: str) -> None:
    assert mcp_level(levelno) == level
