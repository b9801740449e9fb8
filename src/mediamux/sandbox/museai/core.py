"""The muse.ai emulator's state and the lookups, ids, credits and storage that both hosts' routes share."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from contextlib import AsyncExitStack
from pathlib import Path

import anyio
import anyio.to_thread
from starlette.applications import Starlette
from starlette.datastructures import UploadFile
from starlette.requests import Request

from mediamux.sandbox.common import scratch_dir
from mediamux.sandbox.faults import FaultPlan
from mediamux.sandbox.museai.analysis import (
    ANALYSIS_MAX_BYTES,
    MediaProbe,
    Segment,
    analyse_audio,
    sidecar_words,
    spread_words,
)
from mediamux.sandbox.museai.faces import FacesDatabase
from mediamux.sandbox.museai.state import BASE62, Blob, Collection, Job, Video, new_id
from mediamux.sandbox.museai.web import ApiError, authed


class MuseaiCore:
    """What both hosts' route sets (``FilesHost``, ``JobsHost``) stand on; ``MuseaiEmulator`` combines them."""

    def __init__(
        self,
        *,
        now: Callable[[], float] = time.monotonic,
        job_seconds: float = 3.0,
        master_key: str = "sandbox-museai-key",
        credits: int | None = None,
        login_email: str = "demo@mediamux.local",
        login_password: str = "sandbox",  # noqa: S107 - the documented sandbox login
    ) -> None:
        self.now = now
        self.job_seconds = job_seconds
        self.credits = credits
        self.login_email = login_email
        self.login_password = login_password
        self.default_visibility = "private"
        self.base_url = ""
        self.jobs_base_url = ""
        self.requests: list[tuple[str, str]] = []
        self.uploads = 0
        self.jobs_created = 0
        self.polls: dict[str, int] = {}
        self.faults = FaultPlan()
        self.channel_id = "".join(BASE62[b % 62] for b in hashlib.sha256(login_email.encode()).digest()[:7])
        self.keys: set[str] = {master_key}
        self.videos: dict[str, Video] = {}
        self.collections: dict[str, Collection] = {}
        self.jobs: dict[str, Job] = {}
        self._by_fid: dict[str, str] = {}
        self._wall_offset = time.time() - now()
        self.faces = FacesDatabase()
        self._root, self._cleanup = scratch_dir(self, "mediamux-museai-")
        self.app, self.jobs_app = self._apps()

    def _apps(self) -> tuple[Starlette, Starlette]:
        """The main host's app and the jobs host's, built by the class that has both hosts' routes."""
        raise NotImplementedError

    def close(self) -> None:
        """Remove stored files now rather than whenever the emulator is collected."""
        self._cleanup()

    # -- lookups -----------------------------------------------------------------------------------------

    def _wall(self) -> int:
        return int(self._wall_offset + self.now())

    def _valid_key(self, key: str) -> bool:
        return any(hmac.compare_digest(key, k) for k in self.keys)

    def _spend_check(self) -> None:
        if self.credits is not None and self.credits <= 0:
            raise ApiError(402, "not_enough_credits")

    def _spend(self) -> None:
        if self.credits is not None:
            self.credits -= 1

    def _ingesting(self, video: Video) -> bool:
        return self.now() < video.ready_at

    def _video(self, svid: str, request: Request | None = None) -> Video:
        """The video, or 404; without a Key (when `request` is given) private videos do not exist."""
        video = self.videos.get(svid)
        if video is None or (request is not None and not authed(request) and video.visibility == "private"):
            raise ApiError(404, "not_found")
        return video

    def _video_by_fid(self, fid: str) -> Video:
        svid = self._by_fid.get(fid)
        if svid is None:
            raise ApiError(404, "not_found")
        return self.videos[svid]

    def _collection(self, scid: str) -> Collection:
        collection = self.collections.get(scid)
        if collection is None:
            raise ApiError(404, "not_found")
        return collection

    def _unique_id(self, length: int, taken: Callable[[str], bool]) -> str:
        while True:
            candidate = new_id(length)
            if not taken(candidate):
                return candidate

    def _new_svid(self) -> str:
        return self._unique_id(7, lambda c: c in self.videos or c in self.collections)

    def _fid_for(self, sha256: str) -> str:
        fid = sha256
        while fid in self._by_fid:
            fid = f"{sha256}{secrets.randbelow(10_000)}"
        return fid

    def _register(self, video: Video) -> None:
        self.videos[video.svid] = video
        self._by_fid[video.fid] = video.svid

    # -- storage -----------------------------------------------------------------------------------------

    async def _receive(self, upload: UploadFile, target: Path | None = None) -> Blob:
        """Hash a received file as it streams, keeping what analysis needs; stored at `target` when given."""
        digest = hashlib.sha256()
        size = 0
        kept = bytearray()
        async with AsyncExitStack() as stack:
            out = None
            if target is not None:
                await anyio.Path(target.parent).mkdir(parents=True, exist_ok=True)
                out = await stack.enter_async_context(await anyio.open_file(target, "wb"))
            while chunk := await upload.read(256 * 1024):
                digest.update(chunk)
                size += len(chunk)
                if len(kept) <= ANALYSIS_MAX_BYTES:
                    kept += chunk
                if out is not None:
                    await out.write(chunk)
        data = bytes(kept) if size <= ANALYSIS_MAX_BYTES else None
        return Blob(digest.hexdigest(), size, bytes(kept[:65_536]), data)

    async def _load(self, video: Video) -> bytes | None:
        if video.size > ANALYSIS_MAX_BYTES:
            return None
        return await anyio.Path(video.path).read_bytes()

    async def _segments(self, video: Video) -> list[Segment]:
        """What is said (and played) in a stored video: its sidecar transcript, else its audio."""
        words = sidecar_words(video.title, video.description)
        if words is not None:
            return spread_words(words, video.duration)
        if video.segments is None:
            data = await self._load(video)
            probe = MediaProbe(video.kind, video.duration, video.width, video.height)
            video.segments = await anyio.to_thread.run_sync(analyse_audio, data, probe, video.sha256)
        return video.segments
