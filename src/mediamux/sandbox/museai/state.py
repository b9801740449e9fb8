"""What the muse.ai emulator remembers: videos, their subtitles, collections, AI jobs, and received files;
and how each is written to its state folder."""

from __future__ import annotations

import secrets
import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mediamux.sandbox.museai.analysis import Segment
from mediamux.sandbox.store import Timeline

VISIBILITIES = ("private", "unlisted", "public")
JOB_KINDS = ("speech", "align", "sounds", "colors", "faces", "objects", "text")
INDEX_KINDS = ("scenes", "speech", "text", "actions", "sounds", "faces")
RESULT_TTL_SECONDS = 3600.0
BASE62 = string.digits + string.ascii_letters


def new_id(length: int) -> str:
    return "".join(secrets.choice(BASE62) for _ in range(length))


@dataclass
class Subtitle:
    id: str
    name: str
    text: str


@dataclass
class Video:
    svid: str
    fid: str
    sha256: str
    filename: str
    title: str
    description: str
    path: Path
    size: int
    duration: float
    width: int
    height: int
    kind: str
    tcreated: int
    visibility: str
    ready_at: float
    domains: list[str] = field(default_factory=list)
    views: int = 0
    cover_path: Path | None = None
    cover_type: str = "image/png"
    cover_t: float = 0.0
    subtitles: dict[str, Subtitle] = field(default_factory=dict)
    segments: list[Segment] | None = None


@dataclass
class Collection:
    scid: str
    name: str
    visibility: str
    tcreated: int
    members: dict[str, int] = field(default_factory=dict)  # svid → tadded


@dataclass
class Job:
    id: str
    kind: str
    filename: str
    sha256: str
    done_at: float
    failed: bool
    result: dict[str, Any]
    landed: bool = False


@dataclass
class Blob:
    sha256: str
    size: int
    head: bytes
    data: bytes | None  # the whole file when it is at most ANALYSIS_MAX_BYTES


# -- records in the state folder (see ``sandbox/store.py``): instants as wall-clock seconds ------------------


def video_record(video: Video, timeline: Timeline) -> dict[str, Any]:
    return {
        "svid": video.svid,
        "fid": video.fid,
        "sha256": video.sha256,
        "filename": video.filename,
        "title": video.title,
        "description": video.description,
        "size": video.size,
        "duration": video.duration,
        "width": video.width,
        "height": video.height,
        "kind": video.kind,
        "tcreated": video.tcreated,
        "visibility": video.visibility,
        "ready_wall": timeline.to_wall(video.ready_at),
        "domains": video.domains,
        "views": video.views,
        "cover": video.cover_path is not None,
        "cover_type": video.cover_type,
        "cover_t": video.cover_t,
        "subtitles": [[s.id, s.name, s.text] for s in video.subtitles.values()],
    }


def video_from_record(data: dict[str, Any], root: Path, timeline: Timeline) -> Video:
    svid = str(data["svid"])
    if not svid.isalnum():  # it names a folder
        raise ValueError(f"bad svid {svid!r}")
    folder = root / "videos" / svid
    return Video(
        svid=svid,
        fid=str(data["fid"]),
        sha256=str(data["sha256"]),
        filename=str(data["filename"]),
        title=str(data["title"]),
        description=str(data["description"]),
        path=folder / "data",
        size=int(data["size"]),
        duration=float(data["duration"]),
        width=int(data["width"]),
        height=int(data["height"]),
        kind=str(data["kind"]),
        tcreated=int(data["tcreated"]),
        visibility=str(data["visibility"]),
        ready_at=timeline.from_wall(float(data["ready_wall"])),
        domains=[str(d) for d in data["domains"]],
        views=int(data["views"]),
        cover_path=folder / "cover" if data["cover"] else None,
        cover_type=str(data["cover_type"]),
        cover_t=float(data["cover_t"]),
        subtitles={str(i): Subtitle(str(i), str(name), str(text)) for i, name, text in data["subtitles"]},
    )


def collection_record(collection: Collection) -> dict[str, Any]:
    return {
        "scid": collection.scid,
        "name": collection.name,
        "visibility": collection.visibility,
        "tcreated": collection.tcreated,
        "members": [[svid, tadded] for svid, tadded in collection.members.items()],
    }


def collection_from_record(data: dict[str, Any]) -> Collection:
    members = {str(svid): int(tadded) for svid, tadded in data["members"]}
    return Collection(
        str(data["scid"]), str(data["name"]), str(data["visibility"]), int(data["tcreated"]), members
    )


def job_record(job: Job, timeline: Timeline) -> dict[str, Any]:
    return {
        "id": job.id,
        "kind": job.kind,
        "filename": job.filename,
        "sha256": job.sha256,
        "done_wall": timeline.to_wall(job.done_at),
        "failed": job.failed,
        "result": job.result,
        "landed": job.landed,
    }


def job_from_record(data: dict[str, Any], timeline: Timeline) -> Job:
    if data["kind"] not in JOB_KINDS or not isinstance(data["result"], dict):
        raise ValueError(f"bad job record {data.get('id')!r}")
    return Job(
        id=str(data["id"]),
        kind=str(data["kind"]),
        filename=str(data["filename"]),
        sha256=str(data["sha256"]),
        done_at=timeline.from_wall(float(data["done_wall"])),
        failed=bool(data["failed"]),
        result=data["result"],
        landed=bool(data["landed"]),
    )
