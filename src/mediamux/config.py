"""One settings object for the whole process.

Variable names match the providers' official tools (``MUAPI_API_KEY``, ``MUAPI_BASE_URL``, ...)
so an existing host configuration keeps working. Keys are held as ``SecretStr``: their repr is
masked, and the only place that reveals them is the transport building an auth header.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

ProviderName = Literal["museai", "muzaic", "mixpeek", "muapi"]
PROVIDERS: tuple[ProviderName, ...] = ("museai", "muzaic", "mixpeek", "muapi")
TOOLSETS: tuple[str, ...] = (*PROVIDERS, "jobs")

PROVIDER_TITLES: dict[str, str] = {
    "museai": "muse.ai",
    "muzaic": "Muzaic",
    "mixpeek": "Mixpeek",
    "muapi": "MuAPI",
}

KEY_ENV: dict[str, str] = {
    "museai": "MUSEAI_API_KEY",
    "muzaic": "MUZAIC_API_KEY",
    "mixpeek": "MIXPEEK_API_KEY",
    "muapi": "MUAPI_API_KEY",
}


def _default_home() -> Path:
    # The platform's user data dir, without a platformdirs dependency for three lines of logic.
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Application Support" / "mediamux"
    if sys.platform == "win32":
        base = os.environ.get("LOCALAPPDATA") or str(Path.home() / "AppData" / "Local")
        return Path(base) / "mediamux"
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "mediamux"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="", extra="ignore")

    museai_api_key: SecretStr | None = Field(None, validation_alias="MUSEAI_API_KEY")
    museai_base_url: str = Field("https://muse.ai/api", validation_alias="MUSEAI_BASE_URL")
    museai_jobs_url: str = Field("https://api.muse.ai", validation_alias="MUSEAI_JOBS_URL")

    muzaic_api_key: SecretStr | None = Field(None, validation_alias="MUZAIC_API_KEY")
    muzaic_api_url: str = Field("https://m10.muzaic.ai", validation_alias="MUZAIC_API_URL")
    # Muzaic bills in tokens (1 per second of audio) and publishes no dollar price; with this set,
    # token charges are also reported, and budgeted, in dollars.
    muzaic_usd_per_token: float | None = Field(None, ge=0, validation_alias="MEDIAMUX_MUZAIC_USD_PER_TOKEN")

    mixpeek_api_key: SecretStr | None = Field(None, validation_alias="MIXPEEK_API_KEY")
    mixpeek_api_base: str = Field("https://api.mixpeek.com", validation_alias="MIXPEEK_API_BASE")

    muapi_api_key: SecretStr | None = Field(None, validation_alias="MUAPI_API_KEY")
    muapi_base_url: str = Field("https://api.muapi.ai/api/v1", validation_alias="MUAPI_BASE_URL")

    home: Path = Field(default_factory=_default_home, validation_alias="MEDIAMUX_HOME")
    allowed_dirs: str | None = Field(None, validation_alias="MEDIAMUX_ALLOWED_DIRS")
    output_dir_override: Path | None = Field(None, validation_alias="MEDIAMUX_OUTPUT_DIR")
    dedup_window_s: float = Field(600.0, ge=0, validation_alias="MEDIAMUX_DEDUP_WINDOW_S")
    toolsets: Annotated[list[str] | None, NoDecode] = Field(None, validation_alias="MEDIAMUX_TOOLSETS")
    read_only: bool = Field(False, validation_alias="MEDIAMUX_READ_ONLY")
    budget_usd: float | None = Field(None, ge=0, validation_alias="MEDIAMUX_BUDGET_USD")
    http_token: SecretStr | None = Field(None, validation_alias="MEDIAMUX_HTTP_TOKEN")
    http_allowed_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list, validation_alias="MEDIAMUX_HTTP_ALLOWED_HOSTS"
    )
    http_allowed_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list, validation_alias="MEDIAMUX_HTTP_ALLOWED_ORIGINS"
    )
    max_download_mb: int = Field(512, ge=1, validation_alias="MEDIAMUX_MAX_DOWNLOAD_MB")
    # Sandbox mode is set by the CLI (--sandbox), or by the environment for hosts that cannot pass flags.
    sandbox: bool = Field(False, validation_alias=AliasChoices("MEDIAMUX_SANDBOX"))

    @field_validator("toolsets", mode="before")
    @classmethod
    def _split_toolsets(cls, v: object) -> object:
        if isinstance(v, str):
            items = [s.strip().lower() for s in v.replace(";", ",").split(",") if s.strip()]
            return items or None
        return v

    @field_validator("toolsets")
    @classmethod
    def _known_toolsets(cls, v: list[str] | None) -> list[str] | None:
        if v is None:
            return v
        unknown = [t for t in v if t not in (*TOOLSETS, "all")]
        if unknown:
            raise ValueError(
                f"MEDIAMUX_TOOLSETS names unknown toolset(s) {', '.join(unknown)}; "
                f"choose from {', '.join(TOOLSETS)} or 'all'"
            )
        return v

    @field_validator("http_allowed_hosts", "http_allowed_origins", mode="before")
    @classmethod
    def _split_list(cls, v: object) -> object:
        if isinstance(v, str):
            return [s.strip() for s in v.split(",") if s.strip()]
        return v

    @field_validator(
        "muapi_base_url", "museai_base_url", "museai_jobs_url", "muzaic_api_url", "mixpeek_api_base"
    )
    @classmethod
    def _strip_slash(cls, v: str) -> str:
        return v.rstrip("/")

    @field_validator("http_token", mode="before")
    @classmethod
    def _strip_token(cls, v: object) -> object:
        # A token pasted from an env file often carries a newline; clients send it trimmed.
        if isinstance(v, str):
            return v.strip() or None
        return v

    @field_validator("budget_usd", mode="before")
    @classmethod
    def _empty_budget(cls, v: object) -> object:
        return None if v == "" else v

    # -- derived values ---------------------------------------------------------------------

    @property
    def output_dir(self) -> Path:
        return (self.output_dir_override or self.home / "outputs").expanduser().resolve()

    @property
    def state_db(self) -> Path:
        return self.home.expanduser().resolve() / "mediamux.sqlite3"

    def api_key(self, provider: str) -> SecretStr | None:
        key: SecretStr | None = getattr(self, f"{provider}_api_key")
        if key is not None and not key.get_secret_value().strip():
            return None
        return key

    def configured_providers(self) -> list[str]:
        return [p for p in PROVIDERS if self.api_key(p) is not None]

    def enabled_toolsets(self) -> list[str]:
        """Explicit MEDIAMUX_TOOLSETS wins; otherwise every provider with a key (all in sandbox), plus jobs."""
        if self.toolsets and "all" not in self.toolsets:
            return [t for t in TOOLSETS if t in self.toolsets]
        if self.toolsets or self.sandbox:
            return list(TOOLSETS)
        return [*self.configured_providers(), "jobs"]

    def secrets(self) -> list[str]:
        """Every secret value this process holds, for the log redaction filter."""
        values = [self.api_key(p) for p in PROVIDERS] + [self.http_token]
        return [v.get_secret_value() for v in values if v is not None and v.get_secret_value()]
