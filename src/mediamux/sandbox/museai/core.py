"""The muse.ai emulator's state and the lookups, ids, credits and storage that both hosts' routes share."""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import shutil
import time
from collections.abc import Callable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any, TypeVar

import anyio
import anyio.to_thread
from starlette.applications import Starlette
from starlette.datastructures import UploadFile
from starlette.requests import Request

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
from mediamux.sandbox.museai.state import (
    BASE62,
    Blob,
    Collection,
    Job,
    Video,
    collection_from_record,
    collection_record,
    job_from_record,
    job_record,
    new_id,
    video_from_record,
    video_record,
)
from mediamux.sandbox.museai.web import ApiError, authed
from mediamux.sandbox.store import FILE_MODE, StateStore, Timeline, make_private_dirs

logger = logging.getLogger(__name__)
_T = TypeVar("_T")


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
        state_dir: Path | None = None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.now = now
        self.job_seconds = job_seconds
        # What a new account starts with; an account read back from `state_dir` keeps its own.
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
        self.faces = FacesDatabase()
        self._timeline = Timeline(now, wall_clock)
        self._store = StateStore(state_dir, "mediamux-museai-")
        self._root = self._store.files
        self._load_state()
        self.app, self.jobs_app = self._apps()

    def _apps(self) -> tuple[Starlette, Starlette]:
        """The main host's app and the jobs host's, built by the class that has both hosts' routes."""
        raise NotImplementedError

    def close(self) -> None:
        """Remove stored files now rather than whenever the emulator is collected (a state folder stays)."""
        self._store.close()

    # -- state folder ------------------------------------------------------------------------------------
    # One record per video (its blobs live in files/videos/<svid>/), per AI job, plus the account, the
    # collections and the faces database; each is rewritten whole whenever it changes.

    def _load_state(self) -> None:
        account = self._store.load("account.json")
        if isinstance(account, dict):
            self.keys |= {k for k in account.get("keys", []) if isinstance(k, str)}
            credits = account.get("credits")
            self.credits = credits if isinstance(credits, int) or credits is None else self.credits
        for record in self._store.load_all("videos"):
            video = self._restore(record, lambda data: video_from_record(data, self._root, self._timeline))
            if video is not None and video.path.is_file():
                self._by_fid[video.fid] = video.svid
                self.videos[video.svid] = video
        self._drop_orphans()
        collections = self._store.load("collections.json")
        for record in collections if isinstance(collections, list) else []:
            collection = self._restore(record, collection_from_record)
            if collection is not None:
                self.collections[collection.scid] = collection
        for record in self._store.load_all("jobs"):
            job = self._restore(record, lambda data: job_from_record(data, self._timeline))
            if job is not None:
                self.jobs[job.id] = job
        faces = self._store.load("faces.json")
        if isinstance(faces, dict):
            self._restore(faces, self.faces.restore)
        self._save_account()

    @staticmethod
    def _restore(record: Any, build: Callable[[Any], _T]) -> _T | None:
        try:
            return build(record)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            logger.warning("muse.ai sandbox record is damaged and was skipped: %r", exc)
            return None

    def _drop_orphans(self) -> None:
        """What a process stopped between storing an upload and recording it (or deleting it) left behind."""
        recorded = set(self._stored_videos())
        folder = self._root / "videos"
        for child in folder.iterdir() if folder.is_dir() else ():
            if child.name not in recorded:
                shutil.rmtree(child, ignore_errors=True)
        for svid in recorded - set(self.videos):
            if not (folder / svid / "data").is_file():
                self._store.delete(f"videos/{svid}.json")
                shutil.rmtree(folder / svid, ignore_errors=True)

    def _stored_videos(self) -> list[str]:
        folder = self._store.folder
        return [p.stem for p in (folder / "videos").glob("*.json")] if folder is not None else []

    def _save_account(self) -> None:
        self._store.save("account.json", {"keys": sorted(self.keys), "credits": self.credits})

    def _save_video(self, video: Video) -> None:
        self._store.save(f"videos/{video.svid}.json", video_record(video, self._timeline))

    def _forget_video(self, video: Video) -> None:
        self._store.delete(f"videos/{video.svid}.json")

    def _save_collections(self) -> None:
        self._store.save("collections.json", [collection_record(c) for c in self.collections.values()])

    def _save_job(self, job: Job) -> None:
        self._store.save(f"jobs/{job.id}.json", job_record(job, self._timeline))

    def _forget_job(self, job_id: str) -> None:
        self._store.delete(f"jobs/{job_id}.json")

    def _save_faces(self) -> None:
        self._store.save("faces.json", self.faces.state())

    # -- lookups -----------------------------------------------------------------------------------------

    def _wall(self) -> int:
        return int(self._timeline.wall_now())

    def _valid_key(self, key: str) -> bool:
        return any(hmac.compare_digest(key, k) for k in self.keys)

    def _spend_check(self) -> None:
        if self.credits is not None and self.credits <= 0:
            raise ApiError(402, "not_enough_credits")

    def _spend(self) -> None:
        if self.credits is not None:
            self.credits -= 1
            self._save_account()

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
        self._save_video(video)

    # -- storage -----------------------------------------------------------------------------------------

    async def _receive(self, upload: UploadFile, target: Path | None = None) -> Blob:
        """Hash a received file as it streams, keeping what analysis needs; stored at `target` when given."""
        digest = hashlib.sha256()
        size = 0
        kept = bytearray()
        async with AsyncExitStack() as stack:
            out = None
            if target is not None:
                make_private_dirs(target.parent)
                out = await stack.enter_async_context(await anyio.open_file(target, "wb"))
                await anyio.Path(target).chmod(FILE_MODE)
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
