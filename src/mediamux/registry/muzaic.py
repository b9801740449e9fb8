"""Muzaic: music for video — single files, multi-region soundtracks, regeneration."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from pydantic import Field, SecretStr

from mediamux.registry.spec import DriverContext, Host, ProviderSettings, ProviderSpec, imported

if TYPE_CHECKING:
    from mediamux.jobs.engine import JobDriver
    from mediamux.providers.transport import Transport
    from mediamux.sandbox import Emulated

SANDBOX_KEY = "sandbox-muzaic-key"


class MuzaicSettings(ProviderSettings):
    api_key: SecretStr | None = Field(None, validation_alias="MUZAIC_API_KEY")
    api_url: str = Field("https://m10.muzaic.ai", validation_alias="MUZAIC_API_URL")
    # Muzaic bills in tokens (1 per second of audio) and publishes no dollar price; with this set,
    # token charges are also reported, and budgeted, in dollars.
    usd_per_token: float | None = Field(None, ge=0, validation_alias="MEDIAMUX_MUZAIC_USD_PER_TOKEN")


def _client(transports: Mapping[str, Transport]) -> Any:
    from mediamux.providers.muzaic import MuzaicClient

    return MuzaicClient(transports["muzaic"])


def _drivers(client: Any, ctx: DriverContext) -> Iterable[JobDriver]:
    from mediamux.jobs.muzaic import MuzaicDriver

    settings = cast(MuzaicSettings, ctx.settings)
    for operation in ("generate_music", "create_soundtrack", "regenerate"):
        yield MuzaicDriver(
            client,
            operation,
            outputs=ctx.outputs or ctx.output_dir,
            downloads=ctx.downloads,
            max_download_bytes=ctx.max_download_bytes,
            usd_per_token=settings.usd_per_token,
        )


async def _health(client: Any) -> str:
    account = await client.account()
    if account.tokens_remaining is None:
        return "account readable"
    return f"{account.tokens_remaining:g} tokens left"


def _emulator(now: Callable[[], float], job_seconds: float | None, state_dir: Path | None = None) -> Emulated:
    from mediamux.sandbox import Emulated
    from mediamux.sandbox.muzaic import MODELED_SECONDS_PER_AUDIO_SECOND, MuzaicEmulator

    # MEDIAMUX_SANDBOX_SLOW_RENDERS: renders take as long as Muzaic's (about 6 s a minute of audio), to
    # try timeouts, cancellation and restarts with a render in flight; instant otherwise.
    slow = os.environ.get("MEDIAMUX_SANDBOX_SLOW_RENDERS", "").strip().lower() in ("1", "true", "yes", "on")
    emulator = MuzaicEmulator(
        now=now,
        master_key=SANDBOX_KEY,
        state_dir=state_dir,
        generation_seconds_per_audio_second=MODELED_SECONDS_PER_AUDIO_SECOND if slow else 0.0,
    )

    def bind(urls: Mapping[str, str]) -> None:
        emulator.base_url = urls["muzaic"]

    return Emulated(emulator, {"muzaic": emulator.app}, SANDBOX_KEY, bind)


SPEC = ProviderSpec(
    id="muzaic",
    title="Muzaic",
    key_env="MUZAIC_API_KEY",
    settings=MuzaicSettings,
    hosts=(Host("muzaic", "api_url", "MuzaicAPI-Secret-Key"),),
    client=_client,
    health=_health,
    toolset=imported("mediamux.tools.muzaic", "toolset"),
    drivers=_drivers,
    emulator=_emulator,
    key_hint=" (from adminpanel.muzaic.ai)",
    not_found=dict.fromkeys(
        ("regenerate", "create_soundtrack"),
        "hashes come from earlier Muzaic results (hash, region_hashes); jobs_list lists those jobs, "
        "whose provider_job_id is the hash",
    ),
)
