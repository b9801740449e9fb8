"""Offline emulators of the media-AI services, written from their API documents (not from our clients).

``Sandbox`` serves a set of emulators, each host on its own loopback port like separate real hosts
(muse.ai on two: its files host and its jobs host). It knows no service by name: the server wiring
builds the emulators (``mediamux.registry.make_sandbox``) and only it and the CLI know this package
exists.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import anyio

from mediamux.sandbox.loopback import serve_on_loopback


@dataclass
class Emulated:
    """One emulator and what serving it takes."""

    emulator: Any
    apps: dict[str, Any]  # host name -> ASGI app
    key: str  # the key the emulator accepts
    # Told the emulator's own origins once they are known (it builds absolute URLs from them).
    bind: Callable[[Mapping[str, str]], None]


class Sandbox:
    def __init__(self, emulators: Mapping[str, Emulated]) -> None:
        self.emulators = dict(emulators)
        self.urls: dict[str, str] = {}

    def __getattr__(self, name: str) -> Any:
        # sandbox.muapi, sandbox.museai, ...: the emulator itself, for tests and the bench to inspect.
        emulators = self.__dict__.get("emulators", {})
        if name in emulators:
            return emulators[name].emulator
        raise AttributeError(name)

    @property
    def keys(self) -> dict[str, str]:
        return {name: e.key for name, e in self.emulators.items()}

    def close(self) -> None:
        for e in self.emulators.values():
            e.emulator.close()

    @asynccontextmanager
    async def running(self) -> AsyncIterator[dict[str, str]]:
        """Serve every emulator on loopback; yields host name → origin URL."""
        apps = {host: app for e in self.emulators.values() for host, app in e.apps.items()}
        urls: dict[str, str] = {}
        stop = anyio.Event()

        async def serve(name: str, app: Any, ready: anyio.Event) -> None:
            async with serve_on_loopback(app) as url:
                urls[name] = url
                ready.set()
                await stop.wait()

        # Started and stopped together: each server needs a moment to wind down, and five of them
        # in sequence would make every test and every demo start noticeably slower to exit.
        async with anyio.create_task_group() as tg:
            started = {name: anyio.Event() for name in apps}
            for name, app in apps.items():
                tg.start_soon(serve, name, app, started[name])
            for event in started.values():
                await event.wait()
            for e in self.emulators.values():
                e.bind(urls)
            self.urls = dict(urls)
            try:
                yield dict(urls)
            finally:
                stop.set()


__all__ = ["Emulated", "Sandbox", "serve_on_loopback"]
