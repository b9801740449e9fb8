"""Offline emulators of the four media-AI services, written from their API documents (not from our clients).

``Sandbox`` bundles them and serves each on its own loopback port, like separate real hosts
(muse.ai on two: its files host and its jobs host). Only the server wiring and the CLI know this
package exists.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from typing import Any

import anyio

from mediamux.sandbox.loopback import serve_on_loopback
from mediamux.sandbox.mixpeek import MixpeekEmulator
from mediamux.sandbox.muapi import MuapiEmulator
from mediamux.sandbox.museai import MuseaiEmulator
from mediamux.sandbox.muzaic import MuzaicEmulator

SANDBOX_KEYS = {
    "muapi": "sandbox-muapi-key",
    "museai": "sandbox-museai-key",
    "muzaic": "sandbox-muzaic-key",
    "mixpeek": "sandbox-mixpeek-key",
}


class Sandbox:
    """The four emulators; ``only`` names the providers to serve (None: all four).

    Every emulator object exists either way (tests reach into them); ``running()`` serves, and
    ``keys`` / ``urls`` cover, only the chosen ones.
    """

    def __init__(
        self,
        *,
        now: Callable[[], float] = time.monotonic,
        job_seconds: float | None = None,
        only: Iterable[str] | None = None,
    ) -> None:
        chosen = tuple(SANDBOX_KEYS) if only is None else tuple(dict.fromkeys(only))
        unknown = [name for name in chosen if name not in SANDBOX_KEYS]
        if unknown:
            raise ValueError(
                f"unknown sandbox provider(s) {', '.join(unknown)}; choose from {', '.join(SANDBOX_KEYS)}"
            )
        self.providers: tuple[str, ...] = chosen
        self.muapi = MuapiEmulator(now=now, job_seconds=job_seconds, master_key=SANDBOX_KEYS["muapi"])
        self.museai = MuseaiEmulator(
            now=now, master_key=SANDBOX_KEYS["museai"], job_seconds=job_seconds or 3.0
        )
        self.muzaic = MuzaicEmulator(now=now, master_key=SANDBOX_KEYS["muzaic"])
        self.mixpeek = MixpeekEmulator(now=now, master_key=SANDBOX_KEYS["mixpeek"])
        self.urls: dict[str, str] = {}

    @property
    def keys(self) -> dict[str, str]:
        return {name: key for name, key in SANDBOX_KEYS.items() if name in self.providers}

    def close(self) -> None:
        for emulator in (self.muapi, self.museai, self.muzaic, self.mixpeek):
            emulator.close()

    @asynccontextmanager
    async def running(self) -> AsyncIterator[dict[str, str]]:
        """Serve the chosen emulators on loopback; yields service → origin URL."""
        every = {
            "muapi": self.muapi.app,
            "museai": self.museai.app,
            "museai_jobs": self.museai.jobs_app,
            "muzaic": self.muzaic.app,
            "mixpeek": self.mixpeek.app,
        }
        apps = {name: app for name, app in every.items() if name.removesuffix("_jobs") in self.providers}
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
            if "muapi" in urls:
                self.muapi.base_url = urls["muapi"]
            if "museai" in urls:
                self.museai.base_url, self.museai.jobs_base_url = urls["museai"], urls["museai_jobs"]
            if "muzaic" in urls:
                self.muzaic.base_url = urls["muzaic"]
            if "mixpeek" in urls:
                self.mixpeek.base_url = urls["mixpeek"]
            self.urls = dict(urls)
            try:
                yield dict(urls)
            finally:
                stop.set()


__all__ = [
    "SANDBOX_KEYS",
    "MixpeekEmulator",
    "MuapiEmulator",
    "MuseaiEmulator",
    "MuzaicEmulator",
    "Sandbox",
    "serve_on_loopback",
]
