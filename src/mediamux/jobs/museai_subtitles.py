"""Subtitles for a muse.ai video from its own speech: a workflow over two paid jobs.

Download the video → transcription job → alignment job (the transcript against the audio, for word
timings) → WebVTT cues → upload as a subtitle track. Both jobs go through the engine, so a call that
runs out of time leaves them in the journal, and calling again with the same video finds the same
jobs through the duplicate guard instead of paying twice. Knows nothing of MCP: the tool shapes the
result and sends change notifications.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import anyio.to_thread
import httpx2
from pydantic import BaseModel, Field

from mediamux.clock import Clock
from mediamux.errors import InputError
from mediamux.files import OutputStore, OutputStoreError, download_output, write_named, write_output
from mediamux.jobs.engine import JobEngine, Progress, ProgressFn
from mediamux.jobs.models import JobError
from mediamux.jobs.museai import FileJobArgs
from mediamux.providers.cost import Cost, total_cost
from mediamux.providers.museai import AlignedWord, MuseaiClient

logger = logging.getLogger("mediamux.jobs.museai")

VTT_INLINE_CHARS = 20_000


class AutoSubtitles(BaseModel):
    status: Literal["completed", "running", "failed", "declined"]
    svid: str
    subtitle_id: str | None = None
    name: str | None = None
    cues: int = 0
    vtt: str | None = Field(
        None, description="The WebVTT text (cut after 20 000 characters; the file has it all)"
    )
    vtt_path: str | None = None
    jobs: list[str] = Field(default_factory=list, description="The transcription and alignment job ids")
    cost: Cost = Field(default_factory=Cost, description="Both jobs together, as muse.ai reported them")
    error: JobError | None = Field(None, description="Why it failed")
    note: str | None = None


def _ts(seconds: float) -> str:
    ms = max(0, round(seconds * 1000))
    h, ms = divmod(ms, 3_600_000)
    m, ms = divmod(ms, 60_000)
    s, ms = divmod(ms, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}.{ms:03d}"


def build_vtt(
    words: list[AlignedWord], *, max_words: int = 8, max_span_s: float = 4.0, gap_s: float = 0.8
) -> tuple[str, int]:
    """Word timings → WebVTT cues: a new cue after a pause, or when a cue gets too long to read."""
    cues: list[list[AlignedWord]] = []
    for word in words:
        text = word.word.strip()
        if not text:
            continue
        current = cues[-1] if cues else None
        if (
            current is None
            or len(current) >= max_words
            or word.end - current[0].start > max_span_s
            or word.start - current[-1].end > gap_s
        ):
            cues.append([word])
        else:
            current.append(word)
    lines = ["WEBVTT", ""]
    for i, cue in enumerate(cues, 1):
        lines += [
            str(i),
            f"{_ts(cue[0].start)} --> {_ts(cue[-1].end)}",
            " ".join(w.word.strip() for w in cue),
            "",
        ]
    return "\n".join(lines), len(cues)


@dataclass
class SubtitleWorkflow:
    client: MuseaiClient
    engine: JobEngine
    downloads: httpx2.AsyncClient
    output_dir: Path
    clock: Clock
    max_download_bytes: int
    # The video and the track are working files muse.ai is sent from this machine's output folder; with
    # shared storage the track is stored there too, so mediamux://outputs/ serves it from any server.
    outputs: OutputStore | None = None

    async def run(self, svid: str, *, name: str, wait_s: float, progress: ProgressFn) -> AutoSubtitles:
        """Subtitle ``svid`` within ``wait_s``; a job still going is ``running``, not an error.

        Raises:
            InputError: muse.ai has no media URL for the video yet.
            DownloadError: the video could not be fetched; nothing has been paid for.
            ProviderError, JobsError: a call or a submission was refused.
        """
        report = Progress.of(progress)  # one rising sequence across all four steps
        await report.step("muse.ai: fetching the video (step 1 of 4)")
        video = await self.client.get_video(svid)
        if not video.url:
            raise InputError(
                f"muse.ai gave no media URL for {svid}; it may still be ingesting",
                arguments=("svid",),
                advice="call again once museai_get_video no longer shows it ingesting",
            )
        media = await download_output(
            self.downloads,
            video.url,
            self.output_dir,
            trusted_origins=[self.client.origin],
            max_bytes=self.max_download_bytes,
        )
        deadline = self.clock.monotonic() + wait_s
        # Saved outputs are named by content, so the same video gives the same job arguments, and a
        # second call finds the first call's jobs through the duplicate guard.
        file_args = FileJobArgs(path=media.path, file=media.sha256)
        await report.step("muse.ai: transcribing (step 2 of 4)")
        speech = await self.engine.run("museai", "transcribe", file_args, wait_s=wait_s, progress=report)
        if speech.status == "declined":
            return _declined(svid, [], [], speech.note)
        jobs = [speech.job_id]
        costs = [speech.cost]
        # muse.ai results are in the record once the job finishes; there are no files to wait for.
        if speech.status not in ("completed", "saving_outputs"):
            return _unfinished(svid, speech.status, jobs, speech.error, costs)
        text = (speech.result or {}).get("text", "")
        if not text.strip():
            nothing = JobError(
                error_class="invalid_input",
                message=f"svid: no speech was found in {svid}, so there is nothing to subtitle; "
                "museai_upload_subtitles adds a track written by hand",
            )
            return _unfinished(svid, "failed", jobs, nothing, costs)
        remaining = max(0.0, deadline - self.clock.monotonic())
        await report.step("muse.ai: aligning the words to the audio (step 3 of 4)")
        align = await self.engine.run(
            "museai",
            "align",
            file_args.model_copy(update={"phrase": text}),
            wait_s=remaining,
            progress=report,
        )
        if align.status == "declined":
            return _declined(svid, jobs, costs, align.note)
        jobs.append(align.job_id)
        costs.append(align.cost)
        if align.status not in ("completed", "saving_outputs"):
            return _unfinished(svid, align.status, jobs, align.error, costs)
        words = [AlignedWord.model_validate(w) for w in (align.result or {}).get("words", [])]
        vtt, count = build_vtt(words)
        # Never written through the path: a link planted under this name would aim the write elsewhere.
        vtt_path = await anyio.to_thread.run_sync(
            write_output, self.output_dir, f"{svid}-{name.replace(' ', '_')}.vtt", vtt.encode("utf-8")
        )
        if self.outputs is not None and self.outputs.kind != "local":
            try:
                await write_named(self.outputs, vtt_path.name, vtt.encode("utf-8"), media_type="text/vtt")
            except OutputStoreError as exc:
                # The track is paid for and goes to muse.ai all the same; only the shared copy is missing.
                logger.warning("subtitles for %s: %s", svid, exc)
        await report.step("muse.ai: uploading the subtitles (step 4 of 4)")
        ref = await self.client.upload_subtitles(svid, vtt_path, [self.output_dir], name=name)
        return AutoSubtitles(
            status="completed",
            svid=svid,
            subtitle_id=ref["id"],
            name=ref["name"],
            cues=count,
            vtt=vtt[:VTT_INLINE_CHARS],
            vtt_path=str(vtt_path),
            jobs=jobs,
            cost=total_cost(costs),
        )


def _declined(svid: str, jobs: list[str], costs: list[Cost], note: str | None) -> AutoSubtitles:
    """The user said no to a job's cost: what ran before stands, nothing more is spent."""
    return AutoSubtitles(status="declined", svid=svid, jobs=jobs, cost=total_cost(costs), note=note)


def _unfinished(
    svid: str, status: str, jobs: list[str], problem: JobError | None, costs: list[Cost]
) -> AutoSubtitles:
    """A job that ended badly fails the workflow with its reason; one still going leaves it running."""
    if status in ("failed", "cancelled", "expired"):
        error = problem or JobError(error_class="provider_error", message=f"a muse.ai job ended {status}")
        return AutoSubtitles(status="failed", svid=svid, jobs=jobs, error=error, cost=total_cost(costs))
    return AutoSubtitles(status="running", svid=svid, jobs=jobs, cost=total_cost(costs))
