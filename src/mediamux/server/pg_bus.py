"""A ``SubscriptionBus`` over PostgreSQL ``LISTEN/NOTIFY``: a change one replica sees reaches the
``subscriptions/listen`` streams of every replica on the same database.

``publish`` delivers to this process's listeners at once (as the SDK's in-memory bus does) and
sends the event on the ``mediamux_events`` channel, tagged with this process's origin. ``serve``
listens on that channel and delivers other replicas' events to the local listeners, and hands them
to ``on_remote`` hooks (the notifier uses one to reach 2025-11-25 ``resources/subscribe`` sessions,
which are not listen streams). Like the in-memory bus, delivery is fire-and-forget: an event
published while the database is unreachable reaches this replica's streams only, and the
subscription vocabulary tells clients to re-read after a dropped stream anyway.
"""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import anyio.lowlevel
import psycopg
from anyio.abc import TaskStatus
from mcp.server.subscriptions import (
    PromptsListChanged,
    ResourcesListChanged,
    ResourceUpdated,
    ServerEvent,
    ToolsListChanged,
)
from psycopg_pool import AsyncConnectionPool, PoolTimeout

logger = logging.getLogger("mediamux.notify")

CHANNEL = "mediamux_events"
RETRY_S = 2.0
CONNECT_TIMEOUT_S = 10
# NOTIFY payloads are limited to 8000 bytes; a longer URI is delivered locally only.
MAX_PAYLOAD = 7900

_KINDS: dict[type, str] = {
    ToolsListChanged: "tools",
    PromptsListChanged: "prompts",
    ResourcesListChanged: "resources",
}


def encode(event: ServerEvent, origin: str) -> str:
    if isinstance(event, ResourceUpdated):
        return json.dumps({"o": origin, "k": "updated", "u": event.uri}, separators=(",", ":"))
    return json.dumps({"o": origin, "k": _KINDS[type(event)]}, separators=(",", ":"))


def decode(payload: str) -> tuple[str, ServerEvent] | None:
    try:
        data = json.loads(payload)
        kind = data["k"]
        origin = str(data["o"])
    except (ValueError, KeyError, TypeError):
        return None
    if kind == "updated" and isinstance(data.get("u"), str):
        return origin, ResourceUpdated(uri=data["u"])
    for event_type, name in _KINDS.items():
        if kind == name:
            return origin, event_type()
    return None


class PostgresSubscriptionBus:
    def __init__(self, url: str) -> None:
        self.url = url
        self.origin = secrets.token_hex(8)
        self._listeners: dict[object, Callable[[ServerEvent], None]] = {}
        self._remote_hooks: list[Callable[[ServerEvent], Awaitable[None]]] = []
        self._pool: AsyncConnectionPool[Any] | None = None

    # -- the SDK's SubscriptionBus -------------------------------------------------------------

    async def publish(self, event: ServerEvent) -> None:
        self._deliver(event)
        payload = encode(event, self.origin)
        if len(payload.encode()) <= MAX_PAYLOAD and self._pool is not None:
            try:
                async with self._pool.connection(timeout=CONNECT_TIMEOUT_S) as conn:
                    await conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, payload))
            except (psycopg.Error, PoolTimeout) as exc:
                logger.warning("a change could not be announced to the other servers: %s", type(exc).__name__)
        await anyio.lowlevel.checkpoint()

    def subscribe(self, listener: Callable[[ServerEvent], None]) -> Callable[[], None]:
        token = object()
        self._listeners[token] = listener

        def unsubscribe() -> None:
            self._listeners.pop(token, None)

        return unsubscribe

    # -- across replicas -------------------------------------------------------------------------

    def on_remote(self, hook: Callable[[ServerEvent], Awaitable[None]]) -> None:
        """Also hand every other replica's event to ``hook`` (awaited in the listening task)."""
        self._remote_hooks.append(hook)

    def _deliver(self, event: ServerEvent) -> None:
        for listener in list(self._listeners.values()):
            try:
                listener(event)
            except Exception:  # one bad listener must not starve the others
                logger.exception("subscription listener raised; continuing")

    async def serve(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Publish through a small pool and deliver other replicas' events, until cancelled."""
        self._pool = AsyncConnectionPool(
            self.url,
            min_size=1,
            max_size=2,
            kwargs={"autocommit": True, "connect_timeout": CONNECT_TIMEOUT_S},
            open=False,
            name="mediamux-events",
        )
        await self._pool.open(wait=False)
        try:
            await self._listen(task_status)
        finally:
            with anyio.CancelScope(shield=True):
                await self._pool.close()
                self._pool = None

    async def _listen(self, task_status: TaskStatus[None]) -> None:
        started = False
        while True:
            try:
                conn = await psycopg.AsyncConnection.connect(
                    self.url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S
                )
                async with conn:
                    await conn.execute(f"LISTEN {CHANNEL}")
                    if not started:
                        started = True
                        task_status.started()
                    async for notice in conn.notifies():
                        decoded = decode(notice.payload)
                        if decoded is None or decoded[0] == self.origin:
                            continue
                        event = decoded[1]
                        self._deliver(event)
                        for hook in list(self._remote_hooks):
                            try:
                                await hook(event)
                            except Exception:
                                logger.exception("relaying a change from another server failed")
            except psycopg.Error as exc:
                logger.warning("listening for other servers' changes: %s; reconnecting", type(exc).__name__)
                if not started:
                    # Start anyway: this replica's own streams work without the database.
                    started = True
                    task_status.started()
                await anyio.sleep(RETRY_S)
