"""Offline emulators of the four media-AI services, written from their API documents (not from our clients).

``Sandbox`` bundles them and serves each on its own loopback port, like separate real hosts.
Only the server wiring and the CLI know this package exists.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager

from mediamux.sandbox.loopback import serve_on_loopback
from mediamux.sandbox.muapi import MuapiEmulator

SANDBOX_KEYS = {"muapi": "sandbox-muapi-key"}


class Sandbox:
    def __init__(
        self, *, now: Callable[[], float] = time.monotonic, job_seconds: float | None = None
    ) -> None:
        self.muapi = MuapiEmulator(now=now, job_seconds=job_seconds, master_key=SANDBOX_KEYS["muapi"])
        self.urls: dict[str, str] = {}

    @property
    def keys(self) -> dict[str, str]:
        return dict(SANDBOX_KEYS)

    def close(self) -> None:
        self.muapi.close()

    @asynccontextmanager
    async def running(self) -> AsyncIterator[dict[str, str]]:
        """Serve every emulator on loopback; yields provider → origin URL."""
        async with AsyncExitStack() as stack:
            url = await stack.enter_async_context(serve_on_loopback(self.muapi.app))
            self.muapi.base_url = url
            self.urls = {"muapi": url}
            yield dict(self.urls)


__all__ = ["SANDBOX_KEYS", "MuapiEmulator", "Sandbox", "serve_on_loopback"]
