"""The providers mediamux knows, one line each.

Adding a provider: its own modules (client, emulator, tools, drivers, a ``ProviderSpec`` in this
package) plus one line below. Config, services, the server, the sandbox, ``doctor`` and
``jobs`` loop over this registry and know no provider by name.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from mediamux.registry import mixpeek, muapi, museai, muzaic
from mediamux.registry.spec import DriverContext, EmulatorFactory, Host, ProviderSettings, ProviderSpec

if TYPE_CHECKING:
    from mediamux.sandbox import Sandbox

PROVIDERS: dict[str, ProviderSpec] = {
    spec.id: spec
    for spec in (
        muapi.SPEC,
        museai.SPEC,
        muzaic.SPEC,
        mixpeek.SPEC,
    )
}


def register(spec: ProviderSpec) -> None:
    """Add a provider at run time (a plug-in, or a test's fake provider)."""
    PROVIDERS[spec.id] = spec


def unregister(provider_id: str) -> None:
    PROVIDERS.pop(provider_id, None)


def provider_ids() -> tuple[str, ...]:
    return tuple(PROVIDERS)


def get(provider_id: str) -> ProviderSpec:
    return PROVIDERS[provider_id]


def make_sandbox(
    *,
    now: Callable[[], float] = time.monotonic,
    job_seconds: float | None = None,
    only: Iterable[str] | None = None,
    state_dir: Path | None = None,
) -> Sandbox:
    """Emulators for every provider that has one (or those in ``only``), ready to serve.

    With ``state_dir`` each emulator keeps what its service would keep under ``state_dir/<provider id>``,
    so a sandbox made again on the same folder (a restarted server) carries on where the last one stopped;
    without it everything lives in memory and goes with the sandbox."""
    from mediamux.sandbox import Sandbox

    wanted = set(only) if only is not None else None
    return Sandbox(
        {
            spec.id: spec.emulator(now, job_seconds, state_dir=state_dir / spec.id if state_dir else None)
            for spec in PROVIDERS.values()
            if spec.emulator is not None and (wanted is None or spec.id in wanted)
        }
    )


__all__ = [
    "PROVIDERS",
    "DriverContext",
    "EmulatorFactory",
    "Host",
    "ProviderSettings",
    "ProviderSpec",
    "get",
    "make_sandbox",
    "provider_ids",
    "register",
    "unregister",
]
