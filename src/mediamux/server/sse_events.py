"""Resumable SSE streams for 2025-11-25 HTTP clients: a priming event, a ``retry`` hint, and replay.

With an event store, the SDK opens every POST's SSE stream with a priming event (an ``id`` and empty
data, plus ``retry``) and stamps each message with an id, so a client whose connection broke can
reconnect with ``Last-Event-ID`` and receive what it missed (SEP-1699). 2026-07-28 requests have no
such streams (a client re-sends the request), so this only concerns the older era.

The SDK hands one store to every session and names streams by JSON-RPC request id, which every
client numbers from 0 or 1: a shared store would mix two sessions' streams, and a replay could hand
one client another's results. So each session gets its own view (:class:`SessionEvents`), installed
as the SDK admits the session. If that hook is not where this code expects it (another SDK
release), no store is used at all: no priming and no replay, never a shared one.

Memory is bounded for the whole process: events are kept in arrival order and the oldest go first
once ``max_bytes`` is reached, or once they are older than ``max_age_s``. Because eviction is in
arrival order, a stream never has a gap: a replay either finds its ``Last-Event-ID`` and everything
after it, or finds nothing (the client then learns its request is lost, as without a store).
"""

from __future__ import annotations

import logging
import secrets
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

from mcp.server.streamable_http import EventCallback, EventMessage, EventStore
from mcp_types import JSONRPCMessage

logger = logging.getLogger("mediamux.server")

# What a client is told to wait before reconnecting to a broken stream, in milliseconds.
RETRY_MS: Final = 2000
MAX_BYTES: Final = 64 * 1024 * 1024
MAX_AGE_S: Final = 15 * 60.0
# A priming event holds no message; it still costs its bookkeeping.
_PRIMING_BYTES: Final = 64


@dataclass(eq=False)
class _Event:
    event_id: str
    stream_id: str
    message: JSONRPCMessage | None
    size: int
    at: float
    owner: SessionEvents


@dataclass
class EventBuffer:
    """Every session's events, oldest first, within one memory and age budget."""

    max_bytes: int = MAX_BYTES
    max_age_s: float = MAX_AGE_S
    now: Callable[[], float] = time.monotonic
    size: int = 0
    _events: deque[_Event] = field(default_factory=deque)

    def session(self) -> SessionEvents:
        return SessionEvents(self)

    def add(self, event: _Event) -> None:
        self._events.append(event)
        self.size += event.size
        horizon = self.now() - self.max_age_s
        while self._events and (self.size > self.max_bytes or self._events[0].at < horizon):
            oldest = self._events.popleft()
            self.size -= oldest.size
            oldest.owner.forget(oldest)

    def __len__(self) -> int:
        return len(self._events)


class SessionEvents(EventStore):
    """One session's streams: what it stores, only it can replay."""

    def __init__(self, buffer: EventBuffer) -> None:
        self._buffer = buffer
        # Unique per session, so ids never repeat across sessions either (a client may keep one).
        self._prefix = secrets.token_hex(6)
        self._seq = 0
        self._streams: dict[str, deque[_Event]] = {}
        self._by_id: dict[str, _Event] = {}

    async def store_event(self, stream_id: str, message: JSONRPCMessage | None) -> str:
        self._seq += 1
        event_id = f"{self._prefix}-{self._seq}"
        size = (
            _PRIMING_BYTES
            if message is None
            else len(message.model_dump_json(by_alias=True, exclude_unset=True)) + _PRIMING_BYTES
        )
        event = _Event(event_id, stream_id, message, size, self._buffer.now(), self)
        self._streams.setdefault(stream_id, deque()).append(event)
        self._by_id[event_id] = event
        self._buffer.add(event)
        return event_id

    async def replay_events_after(self, last_event_id: str, send_callback: EventCallback) -> str | None:
        last = self._by_id.get(last_event_id)
        if last is None:
            logger.debug("no replay: event %.40s is not (or no longer) held for this session", last_event_id)
            return None
        stream = list(self._streams.get(last.stream_id, ()))
        for event in stream[stream.index(last) + 1 :]:
            if event.message is not None:
                await send_callback(EventMessage(event.message, event.event_id))
        return last.stream_id

    def forget(self, event: _Event) -> None:
        self._by_id.pop(event.event_id, None)
        stream = self._streams.get(event.stream_id)
        if stream and stream[0] is event:
            stream.popleft()
        if not stream:
            self._streams.pop(event.stream_id, None)


def resumable_sessions(manager: Any, buffer: EventBuffer | None = None) -> bool:
    """Give each 2025-11-25 session the SDK's ``manager`` admits its own event store over ``buffer``.

    True when installed. The SDK builds each session's transport in ``_admit_session`` with the
    manager's single ``event_store``; wrapping that step is the one place a per-session store can be
    given before the session stores anything. ``manager.event_store`` itself stays None, so a session
    this hook did not reach has no store rather than a shared one.
    """
    admit = getattr(manager, "_admit_session", None)
    if admit is None or getattr(manager, "event_store", None) is not None:
        logger.warning("SSE resumability is off: this SDK release admits HTTP sessions differently")
        return False
    shared = buffer or EventBuffer()

    def admit_with_own_store(*args: Any, **kwargs: Any) -> Any:
        transport = admit(*args, **kwargs)
        if transport is not None and hasattr(transport, "_event_store"):
            transport._event_store = shared.session()
        return transport

    manager._admit_session = admit_with_own_store
    return True


__all__ = ["MAX_AGE_S", "MAX_BYTES", "RETRY_MS", "EventBuffer", "SessionEvents", "resumable_sessions"]
