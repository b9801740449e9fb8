"""Opens everything a tool needs at run time, once per process, from the provider registry."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import anyio
import httpx2

from mediamux import __version__, registry
from mediamux.clock import Clock, SystemClock
from mediamux.config import Settings
from mediamux.context import Clients, Files, Services, Watcher
from mediamux.files import open_output_store, parse_allowed_dirs, prepare_output_dir
from mediamux.jobs.backend import open_journal
from mediamux.jobs.engine import JobEngine
from mediamux.principals import LOCAL, load_principals
from mediamux.providers.transport import ProviderHints, RetryConfig, Transport
from mediamux.server.notify import Notifier

logger = logging.getLogger("mediamux.server")


def provider_transport(
    settings: Settings,
    provider: str,
    *,
    clock: Clock,
    retry: RetryConfig | None = None,
    host: str | None = None,
) -> Transport:
    """A transport for one host of a provider (its first host unless named)."""
    spec = registry.get(provider)
    target = next(h for h in spec.hosts if h.name == (host or spec.hosts[0].name))
    return Transport(
        provider=provider,
        base_url=settings.base_url(provider, target.name),
        hints=ProviderHints(
            title=spec.title, key_env=spec.key_env, advice=dict(spec.advice), not_found=dict(spec.not_found)
        ),
        auth_header=target.auth_header,
        auth_scheme=target.auth_scheme,
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
    output_dir = prepare_output_dir(settings.output_dir)
    allowed = parse_allowed_dirs(settings.allowed_dirs, output_dir=output_dir)
    outputs = open_output_store(settings, output_dir)
    journal = open_journal(settings)
    principals = load_principals(settings.principals_file)

    def principal_budget(principal: str) -> float | None:
        # The local user (stdio, the shared token) is held to MEDIAMUX_BUDGET_USD alone.
        if principal == LOCAL:
            return None
        return principals.budget_for(principal, settings.principal_budget_usd)

    engine = JobEngine(
        journal,
        clock=clock,
        dedup_window_s=settings.dedup_window_s,
        budget_usd=settings.budget_usd,
        unpriced_job_usd=settings.unpriced_job_usd,
        confirm_usd=settings.confirm_usd,
        principal_budget=principal_budget,
    )
    async with AsyncExitStack() as stack:
        stack.callback(journal.close)
        downloads = httpx2.AsyncClient(
            follow_redirects=False, trust_env=False, timeout=httpx2.Timeout(60.0, connect=10.0)
        )
        stack.push_async_callback(downloads.aclose)
        files = Files(
            allowed_dirs=allowed,
            output_dir=output_dir,
            protected=[settings.home],
            downloads=downloads,
            max_download_bytes=settings.max_download_mb * 1024 * 1024,
            outputs=outputs,
        )
        clients: dict[str, Any] = {}
        for spec in registry.PROVIDERS.values():
            # A keyless provider gets no client: its tools answer with the variable to set. One with a
            # key gets its drivers even when its toolset is off, so jobs_wait can still resume its jobs.
            if settings.api_key(spec.id) is None:
                continue
            transports = {
                host.name: provider_transport(settings, spec.id, clock=clock, retry=retry, host=host.name)
                for host in spec.hosts
            }
            for transport in transports.values():
                stack.push_async_callback(transport.aclose)
            client = clients[spec.id] = spec.make_client(transports, settings.provider(spec.id))
            context = registry.DriverContext(
                allowed_dirs=allowed,
                output_dir=output_dir,
                downloads=downloads,
                max_download_bytes=files.max_download_bytes,
                settings=settings.provider(spec.id),
                outputs=outputs,
            )
            for driver in spec.drivers(client, context):
                engine.register(driver)
        watcher = Watcher(clock, notifier)
        svc = Services(
            settings=settings,
            clock=clock,
            journal=journal,
            engine=engine,
            files=files,
            clients=Clients(clients),
            watcher=watcher,
            notifier=notifier,
        )
        # Background work (change watchers, synchronous renders) ends with the server: cancelled
        # before the clients and the journal close.
        task_group = await stack.enter_async_context(anyio.create_task_group())
        stack.callback(task_group.cancel_scope.cancel)
        engine.task_group = watcher.task_group = task_group
        task_group.start_soon(engine.keep_alive)
        if engine.leases is not None:
            # Replicas on one database: hear every replica's writes, and poll the jobs this one leases.
            await task_group.start(engine.leases.journal.listen)
            task_group.start_soon(engine.leases.run)
        serve_bus = getattr(notifier.bus, "serve", None) if notifier is not None else None
        if serve_bus is not None:
            await task_group.start(serve_bus)
        recovered = await engine.recover()
        if recovered:
            logger.warning(
                "recorded %d accepted job(s) an earlier run could not write to the journal", recovered
            )
        yield svc


def sandbox_settings(settings: Settings, urls: dict[str, str], keys: dict[str, str]) -> Settings:
    """Point every emulated provider at its loopback emulator, with the emulator's own key."""
    from pydantic import SecretStr

    for provider, key in keys.items():
        spec = registry.get(provider)
        update: dict[str, object] = {"api_key": SecretStr(key)}
        for host in spec.hosts:
            update[host.url_field] = urls[host.name].rstrip("/") + host.sandbox_path
        settings = settings.with_provider(provider, **update)
    return settings
