"""What mediamux needs to know about one provider, in one value.

A ``ProviderSpec`` names everything that used to be spread over config, services, server,
sandbox, ``doctor`` and ``jobs``: its settings, hosts and auth header, how to build its client
and job drivers, its toolset and resources, its emulator and a cheap health check. The parts
that pull in heavy modules (clients, tools, emulators) are factories, imported when first
called, so a provider that is not enabled costs nothing at start-up.
"""

from __future__ import annotations

import importlib
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

if TYPE_CHECKING:
    import httpx2

    from mediamux.files.store import OutputStore
    from mediamux.jobs.engine import JobDriver
    from mediamux.providers.transport import Transport
    from mediamux.sandbox import Emulated
    from mediamux.server.completions import CompletionSource
    from mediamux.tools.base import Toolset


class ProviderSettings(BaseSettings):
    """One provider's own variables. Subclasses declare ``api_key`` and one URL field per host,
    each with the environment name the provider's official tools use."""

    model_config = SettingsConfigDict(env_prefix="", extra="ignore")

    api_key: SecretStr | None = None

    def key(self) -> SecretStr | None:
        """The key, or None when unset or blank (a blank variable is a common copy-paste slip)."""
        if self.api_key is not None and not self.api_key.get_secret_value().strip():
            return None
        return self.api_key


def imported(module: str, name: str) -> Callable[[], Any]:
    """``module.name``, imported when first asked for: a provider that is not enabled costs nothing."""

    def load() -> Any:
        return getattr(importlib.import_module(module), name)

    return load


def calling(module: str, name: str) -> Callable[..., Any]:
    """Call ``module.name`` with the arguments given, importing it then."""

    def call(*args: Any) -> Any:
        return imported(module, name)()(*args)

    return call


@dataclass(frozen=True)
class Host:
    """One base URL of a provider (muse.ai has two: files and jobs)."""

    name: str
    url_field: str
    auth_header: str
    auth_scheme: str = ""
    # Appended to the emulator's loopback origin in sandbox mode (MuAPI lives under /api/v1).
    sandbox_path: str = ""


@dataclass(frozen=True)
class DriverContext:
    """What job drivers may use besides their client: files in, files out."""

    allowed_dirs: list[Path]
    output_dir: Path
    downloads: httpx2.AsyncClient
    max_download_bytes: int
    settings: ProviderSettings
    # Where finished outputs are saved (the output folder, or S3-compatible storage); None: output_dir.
    outputs: OutputStore | None = None


class EmulatorFactory(Protocol):
    """Builds a provider's emulator. With a `state_dir` it keeps there what the service would keep (jobs,
    uploads, library, wallet) and finds it again when built anew on the same folder; without one, it keeps
    everything in memory."""

    def __call__(
        self, now: Callable[[], float], job_seconds: float | None, state_dir: Path | None = None
    ) -> Emulated: ...


@dataclass(frozen=True)
class ProviderSpec:
    id: str
    title: str
    key_env: str
    settings: type[ProviderSettings]
    hosts: tuple[Host, ...]
    # transports by host name -> the provider's API client
    client: Callable[[Mapping[str, Transport]], Any]
    # One cheap authenticated call; returns a short phrase for `mediamux doctor` ("balance $3.20").
    health: Callable[[Any], Awaitable[str]]
    toolset: Callable[[], Toolset]
    drivers: Callable[[Any, DriverContext], Iterable[JobDriver]] = lambda client, ctx: ()
    # Registers the provider's MCP resources on a server (called with the server).
    resources: Callable[[Any], None] | None = None
    # Builds the provider's emulator: (now, job_seconds, state_dir) -> a mounted emulator.
    emulator: EmulatorFactory | None = None
    # Said after "set KEY_ENV" when the key is missing: where to get one.
    key_hint: str = ""
    # error class -> what the user can do about it, appended to provider errors of that class.
    advice: Mapping[str, str] = field(default_factory=dict)
    # operation -> where the valid ids are listed, said when the provider answers 404 to it.
    not_found: Mapping[str, str] = field(default_factory=dict)
    # Used instead of ``client`` when the client also depends on the provider's own settings
    # (Mixpeek chooses its API generation and namespace from them).
    configured_client: Callable[[Mapping[str, Transport], ProviderSettings], Any] | None = None
    # Where completion/complete finds values for the arguments and template variables this provider
    # owns (muse.ai: svid, scid, subtitle_id); imported when the server starts with it enabled.
    completions: Callable[[], Iterable[CompletionSource]] | None = None

    def make_client(self, transports: Mapping[str, Transport], settings: ProviderSettings) -> Any:
        if self.configured_client is not None:
            return self.configured_client(transports, settings)
        return self.client(transports)

    @property
    def host_names(self) -> tuple[str, ...]:
        return tuple(h.name for h in self.hosts)

    def missing_key_message(self) -> str:
        return (
            f"{self.title}: no API key is configured; set {self.key_env}{self.key_hint}, "
            "or run mediamux with --sandbox"
        )
