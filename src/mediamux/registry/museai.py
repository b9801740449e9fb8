"""muse.ai: video hosting, collections, subtitles, in-video search and AI jobs, on two hosts."""

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

SANDBOX_KEY = "sandbox-museai-key"
_VIDEOS = "museai_list_videos lists the videos (svid and fid)"


class MuseaiSettings(ProviderSettings):
    api_key: SecretStr | None = Field(None, validation_alias="MUSEAI_API_KEY")
    base_url: str = Field("https://muse.ai/api", validation_alias="MUSEAI_BASE_URL")
    jobs_url: str = Field("https://api.muse.ai", validation_alias="MUSEAI_JOBS_URL")


def _client(transports: Mapping[str, Transport]) -> Any:
    from mediamux.providers.museai import MuseaiClient

    return MuseaiClient(transports["museai"], transports["museai_jobs"])


def _drivers(client: Any, ctx: DriverContext) -> Iterable[JobDriver]:
    from mediamux.jobs.museai import MuseaiJobDriver
    from mediamux.providers.museai import JOB_KINDS

    for kind in JOB_KINDS:
        yield MuseaiJobDriver(client, kind, allowed_dirs=ctx.allowed_dirs)


async def _health(client: Any) -> str:
    from mediamux.providers.errors import NotFound, ProviderResponseError

    try:
        collections = await client.list_collections()
    except (ProviderResponseError, NotFound) as exc:
        # The muse.ai domain now serves a different product; say so rather than "unexpected answer".
        raise RuntimeError(
            f"muse.ai's video API did not answer as documented ({exc.message}); the muse.ai domain now "
            "serves a different product and this API may be gone (see Provider status in the README)"
        ) from None
    return f"{len(collections)} collection(s)"


def _emulator(now: Callable[[], float], job_seconds: float | None, state_dir: Path | None = None) -> Emulated:
    from mediamux.sandbox import Emulated
    from mediamux.sandbox.museai import MuseaiEmulator

    emulator = MuseaiEmulator(
        now=now, master_key=SANDBOX_KEY, job_seconds=job_seconds or 3.0, state_dir=state_dir
    )

    def bind(urls: Mapping[str, str]) -> None:
        emulator.base_url, emulator.jobs_base_url = urls["museai"], urls["museai_jobs"]

    return Emulated(emulator, {"museai": emulator.app, "museai_jobs": emulator.jobs_app}, SANDBOX_KEY, bind)


SPEC = ProviderSpec(
    id="museai",
    title="muse.ai",
    key_env="MUSEAI_API_KEY",
    settings=MuseaiSettings,
    hosts=(
        Host("museai", "base_url", "Key", sandbox_path="/api"),
        Host("museai_jobs", "jobs_url", "Key"),
    ),
    client=_client,
    health=_health,
    toolset=imported("mediamux.tools.museai", "toolset"),
    drivers=_drivers,
    resources=calling("mediamux.resources.museai", "register_museai_resources"),
    completions=imported("mediamux.resources.museai", "COMPLETIONS"),
    emulator=_emulator,
    key_hint=" (mediamux login museai creates one)",
    advice={
        "insufficient_credits": "the muse.ai account is out of credits; add credits in muse.ai's billing settings",
    },
    not_found={
        **dict.fromkeys(
            (
                "get_video",
                "update_video",
                "delete_video",
                "cut_clip",
                "set_cover",
                "upload_subtitles",
                "list_subtitles",
            ),
            _VIDEOS,
        ),
        **dict.fromkeys(
            ("get_subtitles", "rename_subtitles", "delete_subtitles"),
            "museai_list_subtitles lists a video's tracks, museai_list_videos the videos",
        ),
        **dict.fromkeys(
            ("get_collection", "delete_collection", "upload_video"),
            "museai_list_collections lists the collections (scid)",
        ),
        **dict.fromkeys(
            ("add_to_collection", "remove_from_collection"),
            "museai_list_collections lists the collections with their videos, museai_list_videos all videos",
        ),
        "search": "museai_list_collections and museai_list_videos list the account's collection and video ids",
        "update_faces": "museai_list_faces lists the face and cluster ids",
    },
)
