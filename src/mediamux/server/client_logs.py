"""Log notifications: mediamux's own log records, sent to the client whose request caused them.

A record logged under ``mediamux.*`` while a tool call, resource read or prompt is being served (a
retried provider request, a refused redirect, a job written late to the journal) also goes to that
request's client as ``notifications/message``, on that request's stream, before its result.

Which records a client gets is the client's choice, in the way of its protocol era:

* 2025-11-25: ``logging/setLevel`` sets the minimum level for the connection; until a client sends
  it, WARNING and above.
* 2026-07-28: there is no ``logging/setLevel``; each request opts in with the ``_meta`` key
  ``io.modelcontextprotocol/logLevel``, and a request without it gets none (the SDK enforces this
  when sending; a request that did not opt in is not even watched).

The operator's level (``MEDIAMUX_LOG_LEVEL``) still decides which records exist at all. Messages are
masked by the same secret filter as stderr.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Final

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from mcp.server.connection import allowed_log_levels
from mcp_types import (
    EmptyResult,
    LoggingLevel,
    LoggingMessageNotification,
    LoggingMessageNotificationParams,
    SetLevelRequestParams,
)
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

from mediamux.server.logs import RedactSecrets

logger = logging.getLogger("mediamux.server")

# The spec's levels, least severe first (RFC 5424, as the protocol names them).
LEVELS: Final[tuple[LoggingLevel, ...]] = (
    "debug",
    "info",
    "notice",
    "warning",
    "error",
    "critical",
    "alert",
    "emergency",
)
LEGACY_DEFAULT: Final[LoggingLevel] = "warning"
FORWARDED_METHODS: Final = frozenset({"tools/call", "resources/read", "prompts/get"})
# Records waiting to be sent for one request; beyond it they are dropped (counted in the last one).
MAX_PENDING: Final = 64
# How long the result may wait for the records logged just before it.
FLUSH_S: Final = 2.0
_STATE_KEY: Final = "mediamux.log_level"


def mcp_level(levelno: int) -> LoggingLevel:
    if levelno >= logging.CRITICAL:
        return "critical"
    if levelno >= logging.ERROR:
        return "error"
    if levelno >= logging.WARNING:
        return "warning"
    if levelno >= logging.INFO:
        return "info"
    return "debug"


@dataclass
class _Sink:
    """The records of one request, on their way to its client."""

    send: MemoryObjectSendStream[tuple[LoggingLevel, str, str]]
    allowed: frozenset[LoggingLevel]
    redact: RedactSecrets
    thread: int
    dropped: int = 0


_current: ContextVar[_Sink | None] = ContextVar("mediamux_client_log_sink", default=None)


class _Forward(logging.Handler):
    """Hands each ``mediamux.*`` record to the sink of the request being served, if any."""

    def emit(self, record: logging.LogRecord) -> None:
        sink = _current.get()
        # Worker threads (sync tools, file scans) share the request's context but not its loop.
        if sink is None or threading.get_ident() != sink.thread:
            return
        level = mcp_level(record.levelno)
        if level not in sink.allowed:
            return
        try:
            sink.redact.filter(record)
            text = record.getMessage()
        except Exception:  # a record that cannot be rendered is stderr's business, not the client's
            return
        try:
            sink.send.send_nowait((level, record.name, text))
        except anyio.WouldBlock:
            sink.dropped += 1
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            pass


_handler = _Forward()
_installed = threading.Lock()


def _connection_state(ctx: Any) -> dict[str, Any] | None:
    # ServerSession is per request; the connection it belongs to keeps per-connection state. The SDK
    # exposes it to handlers only through the session's private attribute (no public accessor yet).
    connection = getattr(ctx.session, "_connection", None)
    state = getattr(connection, "state", None)
    return state if isinstance(state, dict) else None


class ClientLogs:
    def __init__(self, secrets: Iterable[str]) -> None:
        self.redact = RedactSecrets(secrets)
        # One handler for the process, whatever the number of servers: it only acts inside a
        # request that one of them is serving.
        with _installed:
            package = logging.getLogger("mediamux")
            if _handler not in package.handlers:
                package.addHandler(_handler)

    async def set_level(self, ctx: Any, params: SetLevelRequestParams) -> EmptyResult:
        state = _connection_state(ctx)
        if state is not None:
            state[_STATE_KEY] = params.level
        logger.debug("client asked for log notifications at %s and above", params.level)
        return EmptyResult()

    def allowed(self, ctx: Any) -> frozenset[LoggingLevel]:
        """The levels this request's client takes: its own opt-in (2026), or the connection's level."""
        if ctx.protocol_version in MODERN_PROTOCOL_VERSIONS:
            return allowed_log_levels(ctx.protocol_version, ctx.meta)
        # Handshake era: the SDK would send everything; the connection's level is ours to keep.
        chosen = (_connection_state(ctx) or {}).get(_STATE_KEY, LEGACY_DEFAULT)
        floor = LEVELS.index(chosen) if chosen in LEVELS else LEVELS.index(LEGACY_DEFAULT)
        return frozenset(LEVELS[floor:])

    async def middleware(self, ctx: Any, call_next: Any) -> Any:
        if ctx.method not in FORWARDED_METHODS or ctx.request_id is None:
            return await call_next(ctx)
        allowed = self.allowed(ctx)
        if not allowed:
            return await call_next(ctx)
        send, receive = anyio.create_memory_object_stream[tuple[LoggingLevel, str, str]](MAX_PENDING)
        sink = _Sink(send, allowed, self.redact, threading.get_ident())
        token = _current.set(sink)
        failure: Exception | None = None
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._forward, ctx, receive, sink)
                try:
                    result = await call_next(ctx)
                except Exception as exc:  # raised below as it is, not wrapped in a group
                    failure = exc
                finally:
                    send.close()
                    # Records logged just before the result go first; a client that does not read
                    # its stream does not hold the result for longer than this.
                    tg.cancel_scope.deadline = anyio.current_time() + FLUSH_S
        finally:
            _current.reset(token)
        if failure is not None:
            raise failure
        return result

    @staticmethod
    async def _forward(
        ctx: Any, receive: MemoryObjectReceiveStream[tuple[LoggingLevel, str, str]], sink: _Sink
    ) -> None:
        async with receive:
            async for level, name, text in receive:
                if sink.dropped:
                    text += f" ({sink.dropped} earlier log message(s) dropped)"
                    sink.dropped = 0
                note = LoggingMessageNotification(
                    params=LoggingMessageNotificationParams(level=level, data=text, logger=name)
                )
                # On the request's own stream (the only one 2026-07-28 allows), and not through the
                # deprecated send_log_message: the levels were decided above, for both eras.
                with contextlib.suppress(Exception):  # a closed stream must not fail the request
                    await ctx.session.send_notification(note, related_request_id=ctx.request_id)


def install(server: Any, secrets: Iterable[str]) -> ClientLogs:
    """Serve ``logging/setLevel`` (2025-11-25) and forward records to the requests that cause them."""
    logs = ClientLogs(secrets)
    server._lowlevel_server.add_request_handler("logging/setLevel", SetLevelRequestParams, logs.set_level)
    server.middleware.append(logs.middleware)
    return logs


__all__ = ["LEVELS", "ClientLogs", "install", "mcp_level"]
