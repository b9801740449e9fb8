"""MuAPI: generative image, video and audio models behind one submit-then-poll API."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import Field, SecretStr

from mediamux.registry.spec import DriverContext, Host, ProviderSettings, ProviderSpec, calling, imported

if TYPE_CHECKING:
    from mediamux.jobs.engine import JobDriver
    from mediamux.providers.transport import Transport
    from mediamux.sandbox import Emulated

SANDBOX_KEY = "sandbox-muapi-key"


class MuapiSettings(ProviderSettings):
    api_key: SecretStr | None = Field(None, validation_alias="MUAPI_API_KEY")
    base_url: str = Field("https://api.muapi.ai/api/v1", validation_alias="MUAPI_BASE_URL")


def _client(transports: Mapping[str, Transport]) -> Any:
    from mediamux.providers.muapi import MuapiClient

    return MuapiClient(transports["muapi"])


def _drivers(client: Any, ctx: DriverContext) -> Iterable[JobDriver]:
    from mediamux.jobs.muapi import MuapiGenerateDriver

    yield MuapiGenerateDriver(
        client,
        allowed_dirs=ctx.allowed_dirs,
        outputs=ctx.outputs or ctx.output_dir,
        downloads=ctx.downloads,
        max_download_bytes=ctx.max_download_bytes,
    )


async def _health(client: Any) -> str:
    balance, _ = await client.balance()
    return f"balance ${balance.balance:.2f}"


def _emulator(now: Callable[[], float], job_seconds: float | None, state_dir: Path | None = None) -> Emulated:
    from mediamux.sandbox import Emulated
    from mediamux.sandbox.muapi import MuapiEmulator

    emulator = MuapiEmulator(now=now, job_seconds=job_seconds, master_key=SANDBOX_KEY, state_dir=state_dir)

    def bind(urls: Mapping[str, str]) -> None:
        emulator.base_url = urls["muapi"]

    return Emulated(emulator, {"muapi": emulator.app}, SANDBOX_KEY, bind)


SPEC = ProviderSpec(
    id="muapi",
    title="MuAPI",
    key_env="MUAPI_API_KEY",
    settings=MuapiSettings,
    hosts=(Host("muapi", "base_url", "x-api-key", sandbox_path="/api/v1"),),
    client=_client,
    health=_health,
    toolset=imported("mediamux.tools.muapi", "toolset"),
    drivers=_drivers,
    resources=calling("mediamux.resources.muapi", "register_muapi_resources"),
    completions=imported("mediamux.resources.muapi", "COMPLETIONS"),
    emulator=_emulator,
    advice={
        "insufficient_credits": "top up with muapi_topup (returns a checkout link), or use a test key "
        "(muapi_create_key with is_test=true)",
    },
    not_found={
        **dict.fromkeys(("generate", "get_model", "estimate_cost"), "muapi_list_models lists the models"),
        "get_result": "request ids come from muapi_generate; jobs_list lists the jobs started here with "
        "their provider_job_id",
        "delete_key": "muapi_list_keys lists the keys",
    },
)
