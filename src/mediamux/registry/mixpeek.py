"""Mixpeek: index video, read extracted features, semantic and full-text search."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import Field, SecretStr

from mediamux.registry.spec import DriverContext, Host, ProviderSettings, ProviderSpec, calling, imported

if TYPE_CHECKING:
    from mediamux.jobs.engine import JobDriver
    from mediamux.providers.transport import Transport
    from mediamux.sandbox import Emulated

SANDBOX_KEY = "sandbox-mixpeek-key"
# No free listing exists in the quickstart API; asking for a task that cannot exist proves the key
# is accepted (404) without touching anything.
HEALTH_TASK_ID = "mediamux-health-check"


class MixpeekSettings(ProviderSettings):
    api_key: SecretStr | None = Field(None, validation_alias="MIXPEEK_API_KEY")
    api_base: str = Field("https://api.mixpeek.com", validation_alias="MIXPEEK_API_BASE")


def _client(transports: Mapping[str, Transport]) -> Any:
    from mediamux.providers.mixpeek import MixpeekClient

    return MixpeekClient(transports["mixpeek"])


def _drivers(client: Any, ctx: DriverContext) -> Iterable[JobDriver]:
    from mediamux.jobs.mixpeek import MixpeekIndexDriver

    yield MixpeekIndexDriver(client, "index_url", allowed_dirs=ctx.allowed_dirs)
    yield MixpeekIndexDriver(client, "index_file", allowed_dirs=ctx.allowed_dirs)


async def _health(client: Any) -> str:
    from mediamux.providers.errors import NotFound

    with contextlib.suppress(NotFound):
        await client.get_task(HEALTH_TASK_ID)
    return "key accepted"


def _emulator(now: Callable[[], float], job_seconds: float | None, state_dir: Path | None = None) -> Emulated:
    from mediamux.sandbox import Emulated
    from mediamux.sandbox.mixpeek import MixpeekEmulator

    # The v0 emulator keeps its state in memory: `state_dir` is accepted and not used.
    emulator = MixpeekEmulator(now=now, master_key=SANDBOX_KEY)

    def bind(urls: Mapping[str, str]) -> None:
        emulator.base_url = urls["mixpeek"]

    return Emulated(emulator, {"mixpeek": emulator.app}, SANDBOX_KEY, bind)


SPEC = ProviderSpec(
    id="mixpeek",
    title="Mixpeek",
    key_env="MIXPEEK_API_KEY",
    settings=MixpeekSettings,
    hosts=(Host("mixpeek", "api_base", "Authorization", "Bearer"),),
    client=_client,
    health=_health,
    toolset=imported("mediamux.tools.mixpeek", "toolset"),
    drivers=_drivers,
    resources=calling("mediamux.resources.mixpeek", "register_mixpeek_resources"),
    emulator=_emulator,
)
