"""Mixpeek: index video, read what was extracted, semantic and full-text search.

Two API generations sit behind the same tools, chosen by ``MIXPEEK_API_VERSION``: ``v1`` (the default,
the live API under ``/v1/``, namespaced by ``MIXPEEK_NAMESPACE``) and ``v0`` (the late-2024 quickstart
API, for deployments that still speak it). The client, the job drivers and the emulator all follow it.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, SecretStr, field_validator

from mediamux.registry.spec import DriverContext, Host, ProviderSettings, ProviderSpec, calling, imported

if TYPE_CHECKING:
    from mediamux.jobs.engine import JobDriver
    from mediamux.providers.transport import Transport
    from mediamux.sandbox import Emulated

SANDBOX_KEY = "sandbox-mixpeek-key"
# No free listing exists in the quickstart API; asking for a task that cannot exist proves the key
# is accepted (404) without touching anything.
HEALTH_TASK_ID = "mediamux-health-check"

ApiVersion = Literal["v0", "v1"]


class MixpeekSettings(ProviderSettings):
    api_key: SecretStr | None = Field(None, validation_alias="MIXPEEK_API_KEY")
    api_base: str = Field("https://api.mixpeek.com", validation_alias="MIXPEEK_API_BASE")
    api_version: ApiVersion = Field("v1", validation_alias="MIXPEEK_API_VERSION")
    # A name (created on first use, 3-64 characters) or an existing namespace id (ns_...).
    namespace: str = Field(
        "mediamux",
        min_length=3,
        max_length=64,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]*$",
        validation_alias="MIXPEEK_NAMESPACE",
    )

    @field_validator("api_version", mode="before")
    @classmethod
    def _lower(cls, v: object) -> object:
        return v.strip().lower() if isinstance(v, str) else v


def _client(transports: Mapping[str, Transport], settings: ProviderSettings | None = None) -> Any:
    mixpeek = settings if isinstance(settings, MixpeekSettings) else MixpeekSettings()
    if mixpeek.api_version == "v0":
        from mediamux.providers.mixpeek import MixpeekClient

        return MixpeekClient(transports["mixpeek"])
    from mediamux.providers.mixpeek_v1 import MixpeekV1Client

    return MixpeekV1Client(transports["mixpeek"], namespace=mixpeek.namespace)


def _drivers(client: Any, ctx: DriverContext) -> Iterable[JobDriver]:
    from mediamux.providers.mixpeek_v1 import MixpeekV1Client

    if isinstance(client, MixpeekV1Client):
        from mediamux.jobs.mixpeek_v1 import MixpeekV1IndexDriver

        yield MixpeekV1IndexDriver(client, "index_url", allowed_dirs=ctx.allowed_dirs)
        yield MixpeekV1IndexDriver(client, "index_file", allowed_dirs=ctx.allowed_dirs)
        return
    from mediamux.jobs.mixpeek import MixpeekIndexDriver

    yield MixpeekIndexDriver(client, "index_url", allowed_dirs=ctx.allowed_dirs)
    yield MixpeekIndexDriver(client, "index_file", allowed_dirs=ctx.allowed_dirs)


async def _health(client: Any) -> str:
    from mediamux.providers.errors import NotFound
    from mediamux.providers.mixpeek_v1 import MixpeekV1Client

    if isinstance(client, MixpeekV1Client):
        if await client.namespace_exists():
            return f"key accepted; API v1, namespace {client.namespace}"
        return f"key accepted; API v1, namespace {client.namespace} is created on first index"
    with contextlib.suppress(NotFound):
        await client.get_task(HEALTH_TASK_ID)
    return "key accepted; API v0"


def _emulator(now: Callable[[], float], job_seconds: float | None, state_dir: Path | None = None) -> Emulated:
    """The generation MIXPEEK_API_VERSION names (the sandbox is built before any settings object, from
    the same environment the server reads). Both keep their state in memory: ``state_dir`` is not used."""
    from mediamux.sandbox import Emulated

    emulator: Any
    if os.environ.get("MIXPEEK_API_VERSION", "v1").strip().lower() == "v0":
        from mediamux.sandbox.mixpeek import MixpeekEmulator

        emulator = MixpeekEmulator(now=now, master_key=SANDBOX_KEY)
    else:
        from mediamux.sandbox.mixpeek_v1 import MixpeekV1Emulator

        # Three stages, then as long again before the documents can be searched.
        stage = job_seconds / 4 if job_seconds is not None else 2.0
        emulator = MixpeekV1Emulator(now=now, master_key=SANDBOX_KEY, stage_seconds=stage)

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
    configured_client=_client,
    health=_health,
    toolset=imported("mediamux.tools.mixpeek", "toolset"),
    drivers=_drivers,
    resources=calling("mediamux.resources.mixpeek", "register_mixpeek_resources"),
    completions=imported("mediamux.resources.mixpeek", "COMPLETIONS"),
    emulator=_emulator,
)
