"""What tools and resources reach at run time, split by what uses it.

Tools and resources get the same ``Services`` the same way: from the request's lifespan context
(``services(ctx)``), never through an attribute on the server. Provider clients are looked up by
provider id and say, when missing, which variable to set.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import httpx2
from anyio.abc import TaskGroup

from mediamux import registry
from mediamux.providers.errors import MissingCredentials

if TYPE_CHECKING:
    from mediamux.clock import Clock
    from mediamux.config import Settings
    from mediamux.files.store import OutputStore
    from mediamux.jobs.backend import JournalBackend
    from mediamux.jobs.engine import JobEngine
    from mediamux.server.notify import Notifier

T = TypeVar("T")
logger = logging.getLogger("mediamux.context")


@dataclass(frozen=True)
class Files:
    """Where local files may be read from and where outputs go."""

    allowed_dirs: list[Path]
    output_dir: Path
    # Never uploaded even when inside an allowed folder (the state folder: journal, keys).
    protected: list[Path]
    downloads: httpx2.AsyncClient
    max_download_bytes: int
    # Where saved outputs go and are read from: output_dir itself, or S3-compatible storage.
    outputs: OutputStore


class Clients:
    """The configured providers' API clients, by provider id."""

    def __init__(self, clients: Mapping[str, Any]) -> None:
        self._clients = dict(clients)

    def get(self, provider: str) -> Any | None:
        return self._clients.get(provider)

    def require(self, provider: str, kind: type[T]) -> T:
        client = self._clients.get(provider)
        if client is None:
            raise MissingCredentials(
                registry.get(provider).missing_key_message(), provider=provider, operation="request"
            )
        if not isinstance(client, kind):
            raise TypeError(f"{provider} client is a {type(client).__name__}, not a {kind.__name__}")
        return client

    def __contains__(self, provider: str) -> bool:
        return provider in self._clients


class Watcher:
    """Checks something after the tool call that started it has returned, then tells subscribers.

    A muse.ai video finishes ingesting minutes after the upload answered; whoever subscribed to it
    should hear so without polling. One watch per URI at a time; all end with the server.
    """

    def __init__(self, clock: Clock, notifier: Notifier | None) -> None:
        self.clock = clock
        self.notifier = notifier
        self.task_group: TaskGroup | None = None
        self._watching: set[str] = set()

    def watch(self, uri: str, done: Callable[[], Awaitable[bool]], *, for_s: float = 1800.0) -> None:
        """Call ``done`` with backoff until it says True (or ``for_s`` passes), then announce ``uri``."""
        if self.task_group is None or self.notifier is None or uri in self._watching:
            return
        self._watching.add(uri)
        self.task_group.start_soon(self._watch, uri, done, for_s)

    async def _watch(self, uri: str, done: Callable[[], Awaitable[bool]], for_s: float) -> None:
        try:
            deadline = self.clock.monotonic() + for_s
            interval = 2.0
            while self.clock.monotonic() < deadline:
                await self.clock.sleep(interval)
                interval = min(30.0, interval * 1.5)
                try:
                    finished = await done()
                except Exception:  # a failed check is retried; the watch is best effort
                    logger.debug("watching %s: check failed", uri, exc_info=True)
                    continue
                if finished:
                    if self.notifier is not None:
                        await self.notifier.resource_updated(uri)
                    return
        finally:
            self._watching.discard(uri)


@dataclass
class Services:
    settings: Settings
    clock: Clock
    journal: JournalBackend
    engine: JobEngine
    files: Files
    clients: Clients
    watcher: Watcher
    notifier: Notifier | None = None
    # Values that are free to read and rarely change (Muzaic's tag catalog, MuAPI's models), kept
    # per process: value and when it expires (None: never).
    memo: dict[str, tuple[Any, float | None]] = field(default_factory=dict)

    async def memoized(self, key: str, load: Callable[[], Awaitable[T]], *, ttl_s: float | None = None) -> T:
        now = self.clock.monotonic()
        kept = self.memo.get(key)
        if kept is None or (kept[1] is not None and now >= kept[1]):
            kept = (await load(), None if ttl_s is None else now + ttl_s)
            self.memo[key] = kept
        value: T = kept[0]
        return value


# The SDK injects no Context into static resources (``mediamux://jobs``); the server binds the
# request's services here around every resource read instead.
_request_services: ContextVar[Services | None] = ContextVar("mediamux_services", default=None)


def services(ctx: Any = None) -> Services:
    """The services of the current request: from a tool's ``Context``, or inside a resource read."""
    if ctx is not None:
        svc: Services = ctx.request_context.lifespan_context
        return svc
    bound = _request_services.get()
    if bound is None:
        raise LookupError("no request is being served")
    return bound


@contextmanager
def serving(svc: Services) -> Iterator[None]:
    token = _request_services.set(svc)
    try:
        yield
    finally:
        _request_services.reset(token)


__all__ = ["Clients", "Files", "Services", "Watcher", "services", "serving"]
