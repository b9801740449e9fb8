"""Everything a tool needs at run time, opened once per process in the server lifespan."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import httpx2
from anyio.abc import TaskGroup
from pydantic import SecretStr

from mediamux import __version__
from mediamux.clock import Clock, SystemClock
from mediamux.config import KEY_ENV, PROVIDER_TITLES, Settings
from mediamux.files import parse_allowed_dirs
from mediamux.jobs.engine import JobEngine
from mediamux.jobs.journal import Journal
from mediamux.jobs.mixpeek import MixpeekIndexDriver
from mediamux.jobs.muapi import MuapiGenerateDriver
from mediamux.jobs.museai import MuseaiJobDriver
from mediamux.jobs.muzaic import MuzaicDriver
from mediamux.providers.errors import ProviderError
from mediamux.providers.mixpeek import MixpeekClient
from mediamux.providers.muapi import MuapiClient
from mediamux.providers.museai import JOB_KINDS, MuseaiClient
from mediamux.providers.muzaic import MuzaicClient
from mediamux.providers.transport import ProviderHints, RetryConfig, Transport
from mediamux.server.notify import Notifier

logger = logging.getLogger("mediamux.server")

INGEST_WATCH_S = 1800.0

ADVICE: dict[str, dict[str, str]] = {
    "muapi": {
        "insufficient_credits": "top up with muapi_topup (returns a checkout link), or use a test key "
        "(muapi_create_key with is_test=true)",
    },
    "museai": {
        "insufficient_credits": "the muse.ai account is out of credits; add credits in muse.ai's billing settings",
    },
}


@dataclass
class Services:
    settings: Settings
    clock: Clock
    journal: Journal
    engine: JobEngine
    allowed_dirs: list[Path]
    output_dir: Path
    downloads: httpx2.AsyncClient
    transports: dict[str, Transport] = field(default_factory=dict)
    muapi: MuapiClient | None = None
    museai: MuseaiClient | None = None
    muzaic: MuzaicClient | None = None
    mixpeek: MixpeekClient | None = None
    cache: dict[str, Any] = field(default_factory=dict)
    notifier: Notifier | None = None
    sandbox_urls: dict[str, str] = field(default_factory=dict)
    task_group: TaskGroup | None = None
    _watching: set[str] = field(default_factory=set)

    def watch_ingest(self, svid: str) -> None:
        """Tell subscribers when a muse.ai video finishes ingesting, after the tool call has returned."""
        if self.task_group is None or self.museai is None or svid in self._watching:
            return
        self._watching.add(svid)
        self.task_group.start_soon(self._watch_ingest, svid)

    async def _watch_ingest(self, svid: str) -> None:
        assert self.museai is not None
        try:
            deadline = self.clock.monotonic() + INGEST_WATCH_S
            interval = 2.0
            while self.clock.monotonic() < deadline:
                await self.clock.sleep(interval)
                interval = min(30.0, interval * 1.5)
                try:
                    video = await self.museai.get_video(svid)
                except ProviderError:
                    continue
                if not video.ingesting:
                    if self.notifier is not None:
                        await self.notifier.resource_updated(f"museai://videos/{svid}")
                    return
        finally:
            self._watching.discard(svid)


def provider_transport(
    settings: Settings,
    provider: str,
    *,
    clock: Clock,
    retry: RetryConfig | None = None,
    host: str | None = None,
) -> Transport:
    """The one place that knows each provider's base URLs and auth header."""
    header, scheme, base = {
        "muapi": ("x-api-key", "", settings.muapi_base_url),
        "museai": ("Key", "", settings.museai_base_url),
        "museai_jobs": ("Key", "", settings.museai_jobs_url),
        "muzaic": ("MuzaicAPI-Secret-Key", "", settings.muzaic_api_url),
        "mixpeek": ("Authorization", "Bearer", settings.mixpeek_api_base),
    }[host or provider]
    advice = ADVICE.get(provider, {})
    return Transport(
        provider=provider,
        base_url=base,
        hints=ProviderHints(title=PROVIDER_TITLES[provider], key_env=KEY_ENV[provider], advice=advice),
        auth_header=header,
        auth_scheme=scheme,
        api_key=settings.api_key(provider),
        clock=clock,
        retry=retry,
        user_agent=f"mediamux/{__version__}",
    )


@asynccontextmanager
async def open_services(
    settings: Settings,
    *,
    clock: Clock | None = None,
    retry: RetryConfig | None = None,
    notifier: Notifier | None = None,
) -> AsyncIterator[Services]:
    clock = clock or SystemClock()
    output_dir = settings.output_dir
    output_dir.mkdir(parents=True, exist_ok=True)
    allowed = parse_allowed_dirs(settings.allowed_dirs, output_dir=output_dir)
    journal = Journal(settings.state_db)
    engine = JobEngine(
        journal, clock=clock, dedup_window_s=settings.dedup_window_s, budget_usd=settings.budget_usd
    )
    async with AsyncExitStack() as stack:
        stack.callback(journal.close)
        downloads = httpx2.AsyncClient(
            follow_redirects=False, trust_env=False, timeout=httpx2.Timeout(60.0, connect=10.0)
        )
        stack.push_async_callback(downloads.aclose)
        svc = Services(
            settings=settings,
            clock=clock,
            journal=journal,
            engine=engine,
            allowed_dirs=allowed,
            output_dir=output_dir,
            downloads=downloads,
            notifier=notifier,
        )
        enabled = settings.enabled_toolsets()
        if "muapi" in enabled or settings.api_key("muapi") is not None:
            transport = provider_transport(settings, "muapi", clock=clock, retry=retry)
            stack.push_async_callback(transport.aclose)
            svc.transports["muapi"] = transport
            if transport.has_key:
                svc.muapi = MuapiClient(transport)
                engine.register(
                    MuapiGenerateDriver(
                        svc.muapi,
                        allowed_dirs=allowed,
                        output_dir=output_dir,
                        downloads=downloads,
                        max_download_bytes=settings.max_download_mb * 1024 * 1024,
                    )
                )
        if "museai" in enabled or settings.api_key("museai") is not None:
            files = provider_transport(settings, "museai", clock=clock, retry=retry)
            jobs = provider_transport(settings, "museai", clock=clock, retry=retry, host="museai_jobs")
            for t in (files, jobs):
                stack.push_async_callback(t.aclose)
            svc.transports["museai"], svc.transports["museai_jobs"] = files, jobs
            if files.has_key:
                svc.museai = MuseaiClient(files, jobs)
                for kind in JOB_KINDS:
                    engine.register(MuseaiJobDriver(svc.museai, kind, allowed_dirs=allowed))
        if "mixpeek" in enabled or settings.api_key("mixpeek") is not None:
            transport = provider_transport(settings, "mixpeek", clock=clock, retry=retry)
            stack.push_async_callback(transport.aclose)
            svc.transports["mixpeek"] = transport
            if transport.has_key:
                svc.mixpeek = MixpeekClient(transport)
                engine.register(MixpeekIndexDriver(svc.mixpeek, "index_url", allowed_dirs=allowed))
                engine.register(MixpeekIndexDriver(svc.mixpeek, "index_file", allowed_dirs=allowed))
        if "muzaic" in enabled or settings.api_key("muzaic") is not None:
            transport = provider_transport(settings, "muzaic", clock=clock, retry=retry)
            stack.push_async_callback(transport.aclose)
            svc.transports["muzaic"] = transport
            if transport.has_key:
                svc.muzaic = MuzaicClient(transport)
                for operation in ("generate_music", "create_soundtrack", "regenerate"):
                    engine.register(
                        MuzaicDriver(
                            svc.muzaic,
                            operation,
                            output_dir=output_dir,
                            downloads=downloads,
                            max_download_bytes=settings.max_download_mb * 1024 * 1024,
                            usd_per_token=settings.muzaic_usd_per_token,
                        )
                    )
        # Background work (ingest watchers, synchronous renders) ends with the server: cancelled
        # before the clients and the journal close.
        svc.task_group = await stack.enter_async_context(anyio.create_task_group())
        stack.callback(svc.task_group.cancel_scope.cancel)
        engine.task_group = svc.task_group
        yield svc


def sandbox_settings(settings: Settings, urls: dict[str, str], keys: dict[str, str]) -> Settings:
    """Point every emulated provider at its loopback emulator, with the emulator's own key."""
    update: dict[str, object] = {}
    if "muapi" in urls:
        update["muapi_base_url"] = urls["muapi"].rstrip("/") + "/api/v1"
        update["muapi_api_key"] = SecretStr(keys["muapi"])
    if "muzaic" in urls:
        update["muzaic_api_url"] = urls["muzaic"].rstrip("/")
        update["muzaic_api_key"] = SecretStr(keys["muzaic"])
    if "mixpeek" in urls:
        update["mixpeek_api_base"] = urls["mixpeek"].rstrip("/")
        update["mixpeek_api_key"] = SecretStr(keys["mixpeek"])
    if "museai" in urls:
        update["museai_base_url"] = urls["museai"].rstrip("/") + "/api"
        update["museai_jobs_url"] = urls["museai_jobs"].rstrip("/")
        update["museai_api_key"] = SecretStr(keys["museai"])
    return settings.model_copy(update=update)
