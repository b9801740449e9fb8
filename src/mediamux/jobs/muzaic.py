"""Muzaic generation on the job engine.

Muzaic has no job ids: the request itself runs until the audio is rendered, for minutes on long
tracks. The engine still journals it first, heartbeats while it runs and applies the duplicate
guard; the request runs in the server's task group (``background``), so a client that stops
waiting, or a host that times the call out, loses nothing: the render lands in the journal and
``jobs_wait`` returns it. Audio that arrives as
base64 is saved to the output folder at once: it never reaches the journal or the model.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Literal

import httpx2
from pydantic import BaseModel, Field

from mediamux.files import DownloadError, OutputStore, SavedOutput, download_output, save_output_bytes
from mediamux.jobs.engine import DriverBase, Outcome, ProgressFn
from mediamux.providers.muzaic import Generation, MuzaicClient

Operation = Literal["generate_music", "create_soundtrack", "regenerate"]


class MusicResult(BaseModel):
    saved: list[SavedOutput] = Field(default_factory=list, description="The audio file in the output folder")
    provider_url: str | None = Field(None, description="Muzaic's own URL for the audio, when it gave one")
    hash: str | None = Field(
        None, description="Pass to muzaic_regenerate or a soundtrack region's source_hash"
    )
    region_hashes: list[str] = Field(default_factory=list)
    audio_duration_s: float | None = None
    tokens_used: float | None = None
    warnings: list[str] = Field(
        default_factory=list,
        description="What Muzaic noted about the request (echoes of it left out) and conflicting tags; "
        "empty when there is nothing to say",
    )
    save_error: str | None = None


class GenerateMusicArgs(BaseModel):
    duration: int | float
    tags: list[int] = Field(default_factory=list)
    params: dict[str, Any] = Field(default_factory=dict)
    normalize: Any = None


class SoundtrackArgs(BaseModel):
    regions: list[dict[str, Any]] = Field(description="Regions as Muzaic takes them (time, duration, ...)")
    normalize: Any = None


class RegenerateArgs(BaseModel):
    hash: str


ARGS: dict[str, type[BaseModel]] = {
    "generate_music": GenerateMusicArgs,
    "create_soundtrack": SoundtrackArgs,
    "regenerate": RegenerateArgs,
}


def requested_seconds(args: BaseModel) -> float | None:
    """Audio length a request asks for: the token estimate (1 token = 1 second)."""
    if isinstance(args, GenerateMusicArgs):
        return float(args.duration)
    if isinstance(args, SoundtrackArgs):
        ends = [float(r["time"]) + float(r["duration"]) for r in args.regions]
        return max(ends) if ends else None
    return None


class MuzaicDriver(DriverBase):
    provider = "muzaic"
    title = "Muzaic"
    mode: Literal["poll", "background"] = "background"
    price_hint = "or set MEDIAMUX_MUZAIC_USD_PER_TOKEN to price Muzaic's tokens (1 per second of audio)"

    def __init__(
        self,
        client: MuzaicClient,
        operation: Operation,
        *,
        outputs: Path | OutputStore,
        downloads: httpx2.AsyncClient,
        max_download_bytes: int,
        usd_per_token: float | None,
    ) -> None:
        self.client = client
        self.operation: str = operation
        self.args_model: type[BaseModel] = ARGS[operation]
        self.outputs = outputs
        self.downloads = downloads
        self.max_download_bytes = max_download_bytes
        self.usd_per_token = usd_per_token

    async def estimate_usd(self, args: BaseModel) -> float | None:
        seconds = requested_seconds(args)
        if seconds is None or self.usd_per_token is None:
            return None
        return seconds * self.usd_per_token

    async def submit(self, args: BaseModel, options: dict[str, Any], progress: ProgressFn) -> Outcome:
        seconds = requested_seconds(args)
        if seconds is not None:
            await progress(0, None, f"Muzaic: composing {seconds:g} s of music (about {seconds:g} tokens)")
        generation = await self._call(args)
        result = await self._save(generation, options)
        cost = generation.cost
        if cost.tokens is not None and self.usd_per_token is not None:
            cost.usd = round(cost.tokens * self.usd_per_token, 6)
        return Outcome(
            status="completed",
            provider_status="done",
            provider_job_id=generation.hash,
            result=result.model_dump(mode="json"),
            cost=cost,
        )

    async def _call(self, args: BaseModel) -> Generation:
        if isinstance(args, GenerateMusicArgs):
            return await self.client.single_file(
                duration=args.duration, tags=args.tags, params=args.params, normalize=args.normalize
            )
        if isinstance(args, SoundtrackArgs):
            return await self.client.soundtrack(regions=args.regions, normalize=args.normalize)
        assert isinstance(args, RegenerateArgs)
        return await self.client.audio_from_hash(args.hash)

    async def _save(self, generation: Generation, options: dict[str, Any]) -> MusicResult:
        result = MusicResult(
            provider_url=generation.audio.url,
            hash=generation.hash,
            region_hashes=generation.region_hashes,
            audio_duration_s=generation.audio_duration_s,
            tokens_used=generation.tokens_used,
            warnings=[*generation.status, *options.get("warnings", [])],
        )
        try:
            if generation.audio.data is not None:
                digest = hashlib.sha256(generation.audio.data).hexdigest()[:12]
                result.saved.append(
                    await save_output_bytes(
                        generation.audio.data,
                        self.outputs,
                        media_type=generation.audio.media_type,
                        source=f"muzaic:{generation.hash or digest}",
                    )
                )
            elif generation.audio.url:
                result.saved.append(
                    await download_output(
                        self.downloads,
                        generation.audio.url,
                        self.outputs,
                        trusted_origins=[self.client.origin],
                        max_bytes=self.max_download_bytes,
                    )
                )
        except (DownloadError, OSError) as exc:
            # The render is paid for: keep its hash and URL even if saving the file failed.
            result.save_error = str(exc)[:300]
        return result

    async def poll(self, provider_job_id: str, args: BaseModel, options: dict[str, Any]) -> Outcome:
        raise AssertionError("Muzaic generations complete within their submission")  # pragma: no cover
