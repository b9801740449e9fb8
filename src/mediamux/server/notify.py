"""Resource change notifications that reach clients of both protocol eras, from anywhere.

2026-07-28 clients listen with ``subscriptions/listen``; the SDK serves it from a subscription
bus we publish on. 2025-11-25 clients subscribe with ``resources/subscribe``, which the SDK does
not serve, so we register it and keep each subscriber's session to push to. Both are called for
every change: each API reaches only its own era.
"""

from __future__ import annotations

import logging
from typing import Any

from mcp.server.subscriptions import (
    InMemorySubscriptionBus,
    ResourcesListChanged,
    ResourceUpdated,
    ServerEvent,
    SubscriptionBus,
)
from mcp_types import EmptyResult, SubscribeRequestParams, UnsubscribeRequestParams

logger = logging.getLogger("mediamux.notify")


class Notifier:
    def __init__(self, bus: SubscriptionBus | None = None) -> None:
        self.bus: SubscriptionBus = bus or InMemorySubscriptionBus()
        self._subscribers: dict[str, list[Any]] = {}
        self._sessions: list[Any] = []
        # A bus shared by replicas hands us their changes too: this replica's legacy subscribers hear them.
        on_remote = getattr(self.bus, "on_remote", None)
        if on_remote is not None:
            on_remote(self._relay)

    def install(self, server: Any) -> None:
        """Serve legacy resources/subscribe and unsubscribe on ``server``."""

        async def on_subscribe(ctx: Any, params: SubscribeRequestParams) -> EmptyResult:
            self._remember(ctx.session)
            sessions = self._subscribers.setdefault(str(params.uri), [])
            if ctx.session not in sessions:
                sessions.append(ctx.session)
            return EmptyResult()

        async def on_unsubscribe(ctx: Any, params: UnsubscribeRequestParams) -> EmptyResult:
            sessions = self._subscribers.get(str(params.uri), [])
            if ctx.session in sessions:
                sessions.remove(ctx.session)
            return EmptyResult()

        # The SDK exposes no public hook for these yet (it uses the same private attribute itself).
        lowlevel = server._lowlevel_server
        lowlevel.add_request_handler("resources/subscribe", SubscribeRequestParams, on_subscribe)
        lowlevel.add_request_handler("resources/unsubscribe", UnsubscribeRequestParams, on_unsubscribe)

    def _remember(self, session: Any) -> None:
        if session is not None and session not in self._sessions:
            self._sessions.append(session)

    def saw(self, session: Any) -> None:
        """A legacy session that called a tool hears about list changes too."""
        if session is not None and type(session).__name__ == "ServerSession":
            self._remember(session)

    async def resource_updated(self, uri: str) -> None:
        await self.bus.publish(ResourceUpdated(uri=uri))
        for session in list(self._subscribers.get(uri, [])):
            if not await self._send(session, "send_resource_updated", uri):
                self._subscribers[uri].remove(session)

    async def resources_changed(self) -> None:
        await self.bus.publish(ResourcesListChanged())
        for session in list(self._sessions):
            if not await self._send(session, "send_resource_list_changed"):
                self._sessions.remove(session)

    async def _relay(self, event: ServerEvent) -> None:
        """A change another replica saw: to this replica's 2025-11-25 subscribers (its listen streams
        already have it from the bus)."""
        if isinstance(event, ResourceUpdated):
            for session in list(self._subscribers.get(event.uri, [])):
                if not await self._send(session, "send_resource_updated", event.uri):
                    self._subscribers[event.uri].remove(session)
        elif isinstance(event, ResourcesListChanged):
            for session in list(self._sessions):
                if not await self._send(session, "send_resource_list_changed"):
                    self._sessions.remove(session)

    async def _send(self, session: Any, method: str, *args: Any) -> bool:
        try:
            await getattr(session, method)(*args)
            return True
        except Exception:  # a closed session must not break the change that triggered it
            logger.debug("dropping a session that could not take %s", method, exc_info=True)
            return False
