"""Everything a tool needs at run time, opened once per process in the server lifespan."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx2
from pydantic import SecretStr

from mediamux import __version__
from mediamux.clock import Clock, SystemClock
from mediamux.config import KEY_ENV, PROVIDER_TITLES, Settings
from mediamux.files import parse_allowed_dirs
from mediamux.jobs.engine import JobEngine
from mediamux.jobs.journal import Journal
from mediamux.jobs.muapi import MuapiGenerateDriver
from mediamux.providers.muapi import MuapiClient
from mediamux.providers.transport import ProviderHints, RetryConfig, Transport

logger = logging.getLogger("mediamux.server")

MUAPI_ADVICE = {
    "insufficient_credits": "top up with muapi_topup (returns a checkout link), or use a test key "
    "(muapi_create_key with is_test=true)",
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
    sandbox_urls: dict[str, str] = field(default_factory=dict)


def provider_transport(
    settings: Settings, provider: str, *, clock: Clock, retry: RetryConfig | None = None
) -> Transport:
    """The one place that knows each provider's base URL and auth header."""
    header, scheme, base = {
        "muapi": ("x-api-key", "", settings.muapi_base_url),
        "museai": ("Key", "", settings.museai_base_url),
        "muzaic": ("MuzaicAPI-Secret-Key", "", settings.muzaic_api_url),
        "mixpeek": ("Authorization", "Bearer", settings.mixpeek_api_base),
    }[provider]
    advice = MUAPI_ADVICE if provider == "muapi" else {}
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
    settings: Settings, *, clock: Clock | None = None, retry: RetryConfig | None = None
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
        yield svc


def sandbox_settings(settings: Settings, urls: dict[str, str], keys: dict[str, str]) -> Settings:
    """Point every emulated provider at its loopback emulator, with the emulator's own key."""
    update: dict[str, object] = {}
    if "muapi" in urls:
        update["muapi_base_url"] = urls["muapi"].rstrip("/") + "/api/v1"
        update["muapi_api_key"] = SecretStr(keys["muapi"])
    return settings.model_copy(update=update)
