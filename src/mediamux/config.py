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

from pydantic import AliasChoices, Field, PrivateAttr, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from mediamux import registry
from mediamux.registry.spec import ProviderSettings

JOBS_TOOLSET = "jobs"
# Also stated in tool descriptions, which must not change with configuration: keep them in step.
DEFAULT_DEDUP_WINDOW_S = 600.0
# What the SDK's AES-GCM request-state codec requires of each key.
MIN_STATE_KEY_BYTES = 32


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
    # hide_input_in_errors: a refused value may be a secret (a state key, a token); errors name, never echo.
    model_config = SettingsConfigDict(env_prefix="", extra="ignore", hide_input_in_errors=True)

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
    # Ask the user (when the client can be asked) before a paid call estimated above this; unset: never.
    confirm_usd: float | None = Field(None, ge=0, validation_alias="MEDIAMUX_CONFIRM_USD")
    # Seal the state of multi-round (input_required) results; keys[0] seals, every key opens, so keys
    # rotate as [old, new] -> [new, old] -> [new]. Unset: a random key held by this process only.
    state_keys: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list, validation_alias="MEDIAMUX_STATE_KEYS"
    )
    http_token: SecretStr | None = Field(None, validation_alias="MEDIAMUX_HTTP_TOKEN")
    # Sign-in for the HTTP transport (an OAuth 2.1 resource server): the issuer whose discovery
    # document names its JWKS, this server's resource URL (the audience every token must name), and
    # the scopes every token must carry.
    auth_issuer: str | None = Field(None, validation_alias="MEDIAMUX_AUTH_ISSUER")
    auth_audience: str | None = Field(None, validation_alias="MEDIAMUX_AUTH_AUDIENCE")
    auth_scopes: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["mediamux:read"], validation_alias="MEDIAMUX_AUTH_SCOPES"
    )
    # The claim that names a principal (``sub`` by default; a tenant claim puts a team in one).
    auth_principal_claim: str = Field("sub", validation_alias="MEDIAMUX_AUTH_PRINCIPAL_CLAIM")
    # Named static tokens and per-principal settings (budgets) for small teams: a TOML file.
    principals_file: Path | None = Field(None, validation_alias="MEDIAMUX_PRINCIPALS_FILE")
    principal_budget_usd: float | None = Field(None, ge=0, validation_alias="MEDIAMUX_PRINCIPAL_BUDGET_USD")
    http_allowed_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list, validation_alias="MEDIAMUX_HTTP_ALLOWED_HOSTS"
    )
    http_allowed_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list, validation_alias="MEDIAMUX_HTTP_ALLOWED_ORIGINS"
    )
    max_download_mb: int = Field(512, ge=1, validation_alias="MEDIAMUX_MAX_DOWNLOAD_MB")
    # For a client that speaks MCP tasks: how long a job tool answers in the call itself before
    # it answers a task to poll instead.
    task_sync_s: float = Field(1.5, ge=0, le=60, validation_alias="MEDIAMUX_TASK_SYNC_S")
    # PostgreSQL shared by several replicas (journal, ledger, duplicate guard, budget, leases, change
    # notifications); unset, a SQLite journal in the home serves one machine.
    database_url: SecretStr | None = Field(None, validation_alias="MEDIAMUX_DATABASE_URL")
    database_pool_size: int = Field(10, ge=2, le=200, validation_alias="MEDIAMUX_DATABASE_POOL_SIZE")
    # How long a replica's hold on a job outlives its last renewal: a stopped replica's jobs are taken
    # over by another within this time.
    lease_s: float = Field(30.0, ge=1.0, le=3600.0, validation_alias="MEDIAMUX_LEASE_S")
    # Where providers can reach this server (HTTP transport): set, MuAPI and Mixpeek jobs are woken by
    # webhooks to <url>/hooks/... instead of waiting for their next poll.
    public_url: str | None = Field(None, validation_alias="MEDIAMUX_PUBLIC_URL")
    # Saved outputs in S3-compatible storage shared by replicas (s3://bucket/prefix; endpoint and
    # credentials from the usual AWS_* variables); unset, the local output folder.
    output_url: str | None = Field(None, validation_alias="MEDIAMUX_OUTPUT_URL")
    # How long a presigned link to a saved output stays valid (S3 allows at most seven days).
    output_link_ttl_s: float = Field(3600.0, ge=60, le=604800, validation_alias="MEDIAMUX_OUTPUT_LINK_TTL_S")
    # On SIGTERM: how long in-flight submissions get to finish before they are marked and the process exits.
    drain_s: float = Field(20.0, ge=0, le=3600, validation_alias="MEDIAMUX_DRAIN_S")
    # 2025-11-25 clients without Mcp-Session-Id sessions: any replica serves any request, at the cost of
    # server-to-client requests mid-call and the GET stream (2026-07-28 requests are stateless anyway).
    http_stateless: bool = Field(False, validation_alias="MEDIAMUX_HTTP_STATELESS")
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

    @field_validator("auth_scopes", mode="before")
    @classmethod
    def _split_scopes(cls, v: object) -> object:
        # Space-separated, as OAuth writes scopes; commas tolerated.
        if isinstance(v, str):
            return [s for s in v.replace(",", " ").split() if s]
        return v

    @field_validator("auth_issuer", "auth_audience", mode="before")
    @classmethod
    def _empty_url(cls, v: object) -> object:
        if isinstance(v, str):
            return v.strip().rstrip("/") or None
        return v

    @field_validator("http_token", mode="before")
    @classmethod
    def _strip_token(cls, v: object) -> object:
        # A token pasted from an env file often carries a newline; clients send it trimmed.
        if isinstance(v, str):
            return v.strip() or None
        return v

    @field_validator("state_keys", mode="before")
    @classmethod
    def _split_keys(cls, v: object) -> object:
        if isinstance(v, str):
            return [s.strip() for s in v.split(",") if s.strip()]
        return v

    @field_validator("state_keys")
    @classmethod
    def _strong_keys(cls, v: list[SecretStr]) -> list[SecretStr]:
        # Said here, at start-up, in our words; the key itself is never repeated.
        for i, key in enumerate(v, start=1):
            size = len(key.get_secret_value().encode())
            if size < MIN_STATE_KEY_BYTES:
                raise ValueError(
                    f"MEDIAMUX_STATE_KEYS: key {i} is {size} characters; each key must be at least "
                    f"{MIN_STATE_KEY_BYTES} characters of secret randomness. Make one with "
                    'python -c "import secrets; print(secrets.token_hex(32))"'
                )
        if len({k.get_secret_value() for k in v}) != len(v):
            raise ValueError("MEDIAMUX_STATE_KEYS lists the same key twice")
        return v

    @field_validator("database_url", mode="before")
    @classmethod
    def _postgres_url(cls, v: object) -> object:
        if isinstance(v, SecretStr):
            v = v.get_secret_value()
        if isinstance(v, str):
            v = v.strip()
            if not v:
                return None
            if not v.startswith(("postgresql://", "postgres://")):
                # The value may hold a password: name the scheme only.
                scheme = v.split("://", 1)[0] if "://" in v else "(none)"
                raise ValueError(
                    f"MEDIAMUX_DATABASE_URL must be a PostgreSQL URL (postgresql://user@host:5432/dbname), "
                    f"not scheme {scheme!r}; unset it to keep the SQLite journal in MEDIAMUX_HOME"
                )
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

    @field_validator("output_url", mode="before")
    @classmethod
    def _s3_url(cls, v: object) -> object:
        if isinstance(v, str):
            from mediamux.files.s3 import parse_s3_url

            v = v.strip()
            if not v:
                return None
            parse_s3_url(v)  # raises ValueError with what to write instead
        return v

    @field_validator("budget_usd", "unpriced_job_usd", "confirm_usd", "principal_budget_usd", mode="before")
    @classmethod
    def _empty_budget(cls, v: object) -> object:
        return None if v == "" else v

    @model_validator(mode="after")
    def _auth_complete(self) -> Settings:
        if self.auth_issuer and not self.auth_audience:
            raise ValueError(
                "MEDIAMUX_AUTH_ISSUER needs MEDIAMUX_AUTH_AUDIENCE: this server's resource URL as clients "
                "reach it (for example https://mux.example.com/mcp), which every token must name"
            )
        if self.auth_audience and not self.auth_issuer:
            raise ValueError(
                "MEDIAMUX_AUTH_AUDIENCE is set without MEDIAMUX_AUTH_ISSUER: set both, or neither"
            )
        return self

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
        values = [self.api_key(p) for p in registry.provider_ids()] + [self.http_token, *self.state_keys]
        found = [v.get_secret_value() for v in values if v is not None and v.get_secret_value()]
        password = database_password(self.database_url)
        # The object store's credentials are read from the environment by its client, never by us.
        aws = [os.environ.get(name, "") for name in ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")]
        return found + ([password] if password else []) + [value for value in aws if value.strip()]


def database_password(url: SecretStr | None) -> str | None:
    """The password inside a database URL, to keep out of logs."""
    if url is None:
        return None
    from urllib.parse import unquote, urlsplit

    try:
        password = urlsplit(url.get_secret_value()).password
    except ValueError:
        return None
    return unquote(password) if password else None
