"""muse.ai AI jobs on the job engine: upload the file, poll pending → done, keep the result.

muse.ai deletes a result one hour after the job completes; the engine writes the shaped result
to the journal the moment it is fetched, so ``jobs_wait`` and ``jobs_get`` still answer later.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from mediamux.jobs.engine import DriverBase, Outcome, ProgressFn
from mediamux.jobs.models import JobError
from mediamux.providers.museai import STATUS_OVERRIDES, JobKind, MuseaiClient, shape_job_result
from mediamux.providers.status import normalize_status

OPERATIONS: dict[JobKind, str] = {
    "speech": "transcribe",
    "align": "align",
    "sounds": "detect_sounds",
    "colors": "detect_colors",
    "faces": "detect_faces",
    "objects": "detect_objects",
    "text": "detect_text",
}


class FileJobArgs(BaseModel):
    path: str = Field(description="The local file, already confined to the allowed folders")
    file: str = Field(description="A stamp of the file's content, so an edited file is a new request")
    phrase: str | None = Field(None, description="The text to align (align jobs only)")


class MuseaiJobDriver(DriverBase):
    provider = "museai"
    mode: Literal["poll", "background"] = "poll"
    args_model: type[BaseModel] = FileJobArgs
    title = "muse.ai"

    def __init__(self, client: MuseaiClient, kind: JobKind, *, allowed_dirs: Sequence[Path]) -> None:
        self.client = client
        self.kind = kind
        self.operation = OPERATIONS[kind]
        self.allowed_dirs = list(allowed_dirs)

    # muse.ai bills in credits and publishes no price per job: the default (no estimate) stands.

    async def submit(self, args: FileJobArgs, options: dict[str, Any], progress: ProgressFn) -> Outcome:
        path = Path(args.path)

        async def on_bytes(sent: int, total: int) -> None:
            await progress(sent, total, f"muse.ai: uploading {path.name} ({sent}/{total} bytes)")

        job_id = await self.client.submit_job(
            self.kind, path, self.allowed_dirs, phrase=args.phrase, on_progress=on_bytes
        )
        return Outcome(status="queued", provider_status="submitted", provider_job_id=job_id)

    async def poll(self, provider_job_id: str, args: FileJobArgs, options: dict[str, Any]) -> Outcome:
        state = await self.client.get_job(self.kind, provider_job_id)
        status = normalize_status(state.status, STATUS_OVERRIDES)
        outcome = Outcome(status=status, provider_status=state.status)
        if status == "completed":
            outcome.result = shape_job_result(self.kind, state.result)
        elif status == "failed":
            reason = self.client.jobs.scrub(state.error or "no reason given")
            outcome.error = JobError(
                error_class="provider_error", message=f"muse.ai {self.kind} job failed: {reason}"
            )
        return outcome
