"""The muse.ai AI-jobs host (``https://api.muse.ai``): submit a file, poll the result, and the faces database."""

from __future__ import annotations

import secrets
from typing import Any

import anyio
import anyio.to_thread
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from mediamux.sandbox.museai.analysis import (
    OBJECT_LABELS,
    TEXT_WORDS,
    MediaProbe,
    Segment,
    align_words,
    analyse_audio,
    color_proportions,
    face_clusters,
    labelled_boxes,
    probe_media,
    sidecar_words,
    sounds_map,
)
from mediamux.sandbox.museai.core import MuseaiCore
from mediamux.sandbox.museai.state import JOB_KINDS, RESULT_TTL_SECONDS, Blob, Job
from mediamux.sandbox.museai.web import ApiError, form_text, json_object


class JobsHost(MuseaiCore):
    def _job_routes(self) -> list[BaseRoute]:
        return [
            Route("/faces/db", self._faces_db, methods=["GET"]),
            Route("/faces/modify", self._faces_modify, methods=["POST"]),
            Route("/{kind}", self._submit_job, methods=["POST"]),
            Route("/{kind}/{job_id}", self._poll_job, methods=["GET"]),
        ]

    # -- AI jobs -----------------------------------------------------------------------------------------

    async def _submit_job(self, request: Request) -> Response:
        kind = request.path_params["kind"]
        if kind not in JOB_KINDS:
            raise ApiError(404, "not_found")
        async with request.form() as form:
            upload = form.get("file")
            if not isinstance(upload, UploadFile):
                raise ApiError(400, "file_not_provided")
            phrase = form_text(form, "phrase")
            if kind == "align" and not phrase.strip():
                raise ApiError(400, "phrase_not_provided")
            blob = await self._receive(upload)
            filename = upload.filename or ""
        if blob.size == 0:
            raise ApiError(400, "file_not_provided")
        failed = "[fail]" in filename.lower()
        result: dict[str, Any] = {}
        if not failed:
            result = await self._compute(kind, blob, phrase)
        self._spend_check()
        self._spend()
        job = Job(
            id=secrets.token_hex(32),
            kind=kind,
            filename=filename,
            sha256=blob.sha256,
            done_at=self.now() + self.job_seconds,
            failed=failed,
            result=result,
        )
        self.jobs[job.id] = job
        self._save_job(job)
        self.jobs_created += 1
        return JSONResponse({"id": job.id})

    async def _compute(self, kind: str, blob: Blob, phrase: str) -> dict[str, Any]:
        probe = probe_media(blob.data, blob.size, blob.head)
        if kind == "colors":
            if probe.kind != "png" or blob.data is None:
                raise ApiError(400, "unsupported_file")
            try:
                colors = await anyio.to_thread.run_sync(color_proportions, blob.data)
            except ValueError:
                raise ApiError(400, "unsupported_file") from None
            return {"colors": colors}
        if kind == "faces":
            return {"faces": face_clusters(blob.sha256, probe.duration)}
        if kind == "objects":
            return {"objects": labelled_boxes("objects", blob.sha256, OBJECT_LABELS)}
        if kind == "text":
            return {"text": labelled_boxes("text", blob.sha256, TEXT_WORDS)}
        segments = await self._segments_for_bytes(blob, probe)
        if kind == "speech":
            return {"transcript": " ".join(s.word for s in segments if s.label == "speech")}
        if kind == "align":
            voiced = [s for s in segments if s.label == "speech"] or list(segments)
            return {"words": align_words(phrase, voiced, probe.duration)}
        return {"sounds": sounds_map(segments, probe.duration)}

    async def _segments_for_bytes(self, blob: Blob, probe: MediaProbe) -> list[Segment]:
        for video in self.videos.values():
            if video.sha256 == blob.sha256 and sidecar_words(video.title, video.description) is not None:
                return await self._segments(video)
        return await anyio.to_thread.run_sync(analyse_audio, blob.data, probe, blob.sha256)

    async def _poll_job(self, request: Request) -> Response:
        kind, job_id = request.path_params["kind"], request.path_params["job_id"]
        self.polls[job_id] = self.polls.get(job_id, 0) + 1
        job = self.jobs.get(job_id)
        if job is None or job.kind != kind:
            raise ApiError(404, "not_found")
        now = self.now()
        if now >= job.done_at + RESULT_TTL_SECONDS:
            del self.jobs[job_id]
            self._forget_job(job_id)
            raise ApiError(404, "not_found")
        if now < job.done_at:
            return JSONResponse({"status": "pending"})
        if job.failed:
            return JSONResponse({"status": "error", "error": "job_failed"})
        self._land(job)
        result = job.result
        if job.kind == "faces":
            result = {
                "faces": {
                    cluster: {"label": self.faces.label(cluster), "faces": faces}
                    for cluster, faces in job.result["faces"].items()
                }
            }
        return JSONResponse({"status": "done", **result})

    def advance(self) -> None:
        """Bring state up to ``now()``: finished faces jobs enter the faces database; old results go."""
        now = self.now()
        for job_id, job in list(self.jobs.items()):
            if now >= job.done_at + RESULT_TTL_SECONDS:
                del self.jobs[job_id]
                self._forget_job(job_id)
            elif now >= job.done_at and not job.failed:
                self._land(job)

    def _land(self, job: Job) -> None:
        if job.landed:
            return
        job.landed = True
        if job.kind == "faces":
            # Faces before the job: stopped between the two, a restart lands the job again, which adds
            # the same faces under the same ids (a no-op) rather than losing them.
            self.faces.add(job.sha256, job.result["faces"])
            self._save_faces()
        self._save_job(job)

    # -- faces database ----------------------------------------------------------------------------------

    async def _faces_db(self, request: Request) -> Response:
        return JSONResponse(self.faces.as_json())

    async def _faces_modify(self, request: Request) -> Response:
        self.faces.modify(await json_object(request))
        self._save_faces()
        return JSONResponse({"status": "ok"})
