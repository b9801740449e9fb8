"""MuAPI ``generate`` on the job engine: upload local inputs, submit, poll, save outputs."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import httpx2
from pydantic import BaseModel, Field

from mediamux.files import DownloadError, OutputStore, SavedOutput, download_output
from mediamux.jobs.engine import WEBHOOK_URL_OPTION, DriverBase, Outcome, ProgressFn
from mediamux.jobs.models import JobError
from mediamux.providers.muapi import MuapiClient
from mediamux.providers.status import normalize_status

logger = logging.getLogger("mediamux.jobs.muapi")

# Provider-side keys that take a media URL. A local path given for one of these is uploaded
# first and replaced by the hosted URL.
URL_KEYS = {"image", "video", "audio", "mask_image", "image_list", "images_list", "images", "videos"}


def is_url_key(key: str) -> bool:
    return key in URL_KEYS or key.endswith(("_url", "_urls", "_list"))


def is_remote(value: str) -> bool:
    return value.startswith(("https://", "http://", "data:"))


def local_inputs(params: dict[str, Any]) -> list[tuple[str, int | None, str]]:
    """(key, index in list or None, value) for every URL-type input given as a local path."""
    found: list[tuple[str, int | None, str]] = []
    for key, value in params.items():
        if not is_url_key(key):
            continue
        if isinstance(value, str) and value and not is_remote(value):
            found.append((key, None, value))
        elif isinstance(value, list):
            for i, item in enumerate(value):
                if isinstance(item, str) and item and not is_remote(item):
                    found.append((key, i, item))
    return found


class MuapiGeneration(BaseModel):
    endpoint: str = Field(description="The model endpoint that ran")
    outputs: list[str] = Field(
        default_factory=list, description="Output URLs hosted by MuAPI (kept ~30 days)"
    )
    saved: list[SavedOutput] = Field(
        default_factory=list, description="Outputs downloaded into the output folder (path and resource URI)"
    )
    has_nsfw_contents: list[bool] | None = None
    save_error: str | None = Field(None, description="Why saving outputs failed; the URLs are still valid")


class GenerateArgs(BaseModel):
    endpoint: str
    params: dict[str, Any] = Field(description="Model inputs; local paths are uploaded by prepare()")
    webhook_url: str | None = None
    # Stamps of the local inputs, so an edited file is a new request to the duplicate guard.
    input_files: dict[str, str] | None = None


class MuapiGenerateDriver(DriverBase):
    provider = "muapi"
    mode: Literal["poll", "background"] = "poll"
    args_model: type[BaseModel] = GenerateArgs
    operation = "generate"

    def __init__(
        self,
        client: MuapiClient,
        *,
        allowed_dirs: Sequence[Path],
        outputs: Path | OutputStore,
        downloads: httpx2.AsyncClient,
        max_download_bytes: int,
    ) -> None:
        self.client = client
        self.allowed_dirs = list(allowed_dirs)
        self.outputs = outputs
        self.downloads = downloads
        self.max_download_bytes = max_download_bytes
        self.title = "MuAPI"

    async def estimate_usd(self, args: GenerateArgs) -> float | None:
        # The quote is for the inputs as given; local files are not uploaded yet, which changes no price.
        return await self.client.estimate_cost(args.endpoint, args.params)

    def price_key(self, args: GenerateArgs) -> str | None:
        return args.endpoint

    async def prepare(
        self, args: GenerateArgs, options: dict[str, Any], progress: ProgressFn
    ) -> GenerateArgs:
        params = dict(args.params)
        # The tool layer has already resolved each local input to a confined absolute path;
        # multipart_file_upload re-checks confinement when it opens the file.
        for key, index, raw in local_inputs(params):
            path = Path(raw)

            async def on_bytes(sent: int, total: int, name: str = path.name) -> None:
                await progress(sent, total, f"MuAPI: uploading {name} ({sent}/{total} bytes)")

            url = await self.client.upload_file(path, self.allowed_dirs, on_progress=on_bytes)
            if index is None:
                params[key] = url
            else:
                params[key] = [*params[key][:index], url, *params[key][index + 1 :]]
        return args.model_copy(update={"params": params})

    def takes_webhook(self, args: GenerateArgs) -> bool:
        # MuAPI takes one webhook per request: a caller's own webhook_url wins, and polling alone
        # follows that job.
        return args.webhook_url is None

    async def submit(self, args: GenerateArgs, options: dict[str, Any], progress: ProgressFn) -> Outcome:
        webhook = args.webhook_url or options.get(WEBHOOK_URL_OPTION)
        sub = await self.client.submit(args.endpoint, args.params, webhook_url=webhook)
        status = normalize_status(sub.status) if sub.status else "queued"
        outcome = Outcome(
            status=status, provider_status=sub.status, provider_job_id=sub.request_id, cost=sub.cost
        )
        if status == "completed":
            outcome.result = self._result(args, [u for u in sub.outputs if isinstance(u, str)], None)
        return outcome

    async def poll(self, provider_job_id: str, args: GenerateArgs, options: dict[str, Any]) -> Outcome:
        p = await self.client.get_result(provider_job_id)
        status = normalize_status(p.status)
        outcome = Outcome(status=status, provider_status=p.status, cost=p.cost)
        if status == "completed":
            outcome.result = self._result(args, p.output_urls, p.has_nsfw_contents)
        elif status == "failed":
            reason = self.client.scrub(p.error_message or "no reason given")
            outcome.error = JobError(error_class="provider_error", message=f"MuAPI job failed: {reason}")
        elif status == "cancelled":
            outcome.error = JobError(error_class="provider_error", message="MuAPI cancelled the job")
        return outcome

    async def finalize(
        self, outcome: Outcome, args: GenerateArgs, options: dict[str, Any], progress: ProgressFn
    ) -> Outcome:
        result = MuapiGeneration.model_validate(outcome.result or {"endpoint": args.endpoint})
        if not options.get("save_outputs") or not result.outputs:
            return outcome
        trusted = [self.client.origin]
        saved: list[SavedOutput] = []
        try:
            for i, url in enumerate(result.outputs):
                await progress(0, None, f"MuAPI: saving output {i + 1}/{len(result.outputs)}")
                saved.append(
                    await download_output(
                        self.downloads,
                        url,
                        self.outputs,
                        trusted_origins=trusted,
                        max_bytes=self.max_download_bytes,
                    )
                )
        except DownloadError as exc:
            result.save_error = str(exc)
        result.saved = saved
        return Outcome(status="completed", result=result.model_dump(mode="json"))

    @staticmethod
    def _result(args: GenerateArgs, outputs: list[str], nsfw: list[bool] | None) -> dict[str, Any]:
        return MuapiGeneration(endpoint=args.endpoint, outputs=outputs, has_nsfw_contents=nsfw).model_dump(
            mode="json"
        )
