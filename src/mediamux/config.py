"""One settings object for the whole process.

Variable names match the providers' official tools (``MUAPI_API_KEY``, ``MUAPI_BASE_URL``, ...)
so an existing host configuration keeps working. Keys are held as ``SecretStr``: their repr is
masked, and the only place that reveals them is the transport building an auth header.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Any

from pydantic import AliasChoices, Field, PrivateAttr, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from mediamux import registry
from mediamux.registry.spec import ProviderSettings

JOBS_TOOLSET = "jobs"
# Also stated in tool descriptions, which must not change with configuration: keep them in step.
DEFAULT_DEDUP_WINDOW_S = 600.0


def toolset_ids() -> tuple[str, ...]:
    return (*registry.provider_ids(), JOBS_TOOLSET)


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

    # Each provider's variables live in its own settings class (see mediamux.registry), read
    # from the same keyword arguments and environment as this object.
    _init: dict[str, Any] = PrivateAttr(default_factory=dict)
    _providers: dict[str, ProviderSettings] = PrivateAttr(default_factory=dict)

    def __init__(self, **values: Any) -> None:
        super().__init__(**values)
        self._init = {k: v for k, v in values.items() if not k.startswith("_")}
        # Read now, so a bad provider variable is a start-up error like any other.
        self._providers = {p: spec.settings(**self._init) for p, spec in registry.PROVIDERS.items()}

    home: Path = Field(default_factory=_default_home, validation_alias="MEDIAMUX_HOME")
    allowed_dirs: str | None = Field(None, validation_alias="MEDIAMUX_ALLOWED_DIRS")
    output_dir_override: Path | None = Field(None, validation_alias="MEDIAMUX_OUTPUT_DIR")
    dedup_window_s: float = Field(DEFAULT_DEDUP_WINDOW_S, ge=0, validation_alias="MEDIAMUX_DEDUP_WINDOW_S")
    toolsets: Annotated[list[str] | None, NoDecode] = Field(None, validation_alias="MEDIAMUX_TOOLSETS")
    read_only: bool = Field(False, validation_alias="MEDIAMUX_READ_ONLY")
    budget_usd: float | None = Field(None, ge=0, validation_alias="MEDIAMUX_BUDGET_USD")
    # While a budget is set, what a job whose price cannot be known in advance (muse.ai, Mixpeek,
    # unpriced Muzaic) holds against it; unset, such jobs are refused rather than counted as free.
    unpriced_job_usd: float | None = Field(None, ge=0, validation_alias="MEDIAMUX_UNPRICED_JOB_USD")
    http_token: SecretStr | None = Field(None, validation_alias="MEDIAMUX_HTTP_TOKEN")
    http_allowed_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list, validation_alias="MEDIAMUX_HTTP_ALLOWED_HOSTS"
    )
    http_allowed_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list, validation_alias="MEDIAMUX_HTTP_ALLOWED_ORIGINS"
    )
    max_download_mb: int = Field(512, ge=1, validation_alias="MEDIAMUX_MAX_DOWNLOAD_MB")
    # Where providers can reach this server (HTTP transport): set, MuAPI and Mixpeek jobs are woken by
    # webhooks to <url>/hooks/... instead of waiting for their next poll.
    public_url: str | None = Field(None, validation_alias="MEDIAMUX_PUBLIC_URL")
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
        unknown = [t for t in v if t not in (*toolset_ids(), "all")]
        if unknown:
            raise ValueError(
                f"MEDIAMUX_TOOLSETS names unknown toolset(s) {', '.join(unknown)}; "
                f"choose from {', '.join(toolset_ids())} or 'all'"
            )
        return v

    @field_validator("http_allowed_hosts", "http_allowed_origins", mode="before")
    @classmethod
    def _split_list(cls, v: object) -> object:
        if isinstance(v, str):
            return [s.strip() for s in v.split(",") if s.strip()]
        return v

    @field_validator("http_token", mode="before")
    @classmethod
    def _strip_token(cls, v: object) -> object:
        # A token pasted from an env file often carries a newline; clients send it trimmed.
        if isinstance(v, str):
            return v.strip() or None
        return v

    @field_validator("public_url", mode="before")
    @classmethod
    def _public_url(cls, v: object) -> object:
        if not isinstance(v, str):
            return v
        url = v.strip().rstrip("/")
        if not url:
            return None
        from urllib.parse import urlsplit

        parts = urlsplit(url)
        host = parts.hostname or ""
        loopback = host in ("localhost", "127.0.0.1", "::1") or host.startswith("127.")
        if parts.scheme not in ("https", "http") or not host or parts.query or parts.fragment:
            raise ValueError(
                "MEDIAMUX_PUBLIC_URL must be this server's public base URL, such as https://mediamux.example.com"
            )
        if parts.scheme == "http" and not loopback:
            # MuAPI refuses webhooks that are not https, and a provider reaches this server over the internet.
            raise ValueError(f"MEDIAMUX_PUBLIC_URL must use https (plain http only on loopback), not {url}")
        return url

    @field_validator("budget_usd", "unpriced_job_usd", mode="before")
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

    def provider(self, provider_id: str) -> ProviderSettings:
        """That provider's own settings (key, base URLs, extras), read from the same sources."""
        found = self._providers.get(provider_id)
        if found is None:
            found = registry.get(provider_id).settings(**self._init)
            # Replaced, not mutated: model_copy shares the private dict between copies.
            self._providers = {**self._providers, provider_id: found}
        return found

    def with_provider(self, provider_id: str, **update: Any) -> Settings:
        """A copy in which one provider's settings are changed (the sandbox points them at emulators)."""
        copy = self.model_copy()
        copy._providers = {
            **self._providers,
            provider_id: self.provider(provider_id).model_copy(update=update),
        }
        return copy

    def api_key(self, provider: str) -> SecretStr | None:
        return self.provider(provider).key()

    def base_url(self, provider: str, host: str) -> str:
        spec = registry.get(provider)
        field = next(h.url_field for h in spec.hosts if h.name == host)
        return str(getattr(self.provider(provider), field)).rstrip("/")

    def configured_providers(self) -> list[str]:
        return [p for p in registry.provider_ids() if self.api_key(p) is not None]

    def enabled_toolsets(self) -> list[str]:
        """Explicit MEDIAMUX_TOOLSETS wins; otherwise every provider with a key (all in sandbox), plus jobs."""
        if self.toolsets and "all" not in self.toolsets:
            return [t for t in toolset_ids() if t in self.toolsets]
        if self.toolsets or self.sandbox:
            return list(toolset_ids())
        return [*self.configured_providers(), JOBS_TOOLSET]

    def secrets(self) -> list[str]:
        """Every secret value this process holds, for the log redaction filter."""
        values = [self.api_key(p) for p in registry.provider_ids()] + [self.http_token]
        return [v.get_secret_value() for v in values if v is not None and v.get_secret_value()]
