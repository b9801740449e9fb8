"""What the muse.ai emulator remembers: videos, their subtitles, collections, AI jobs, and received files."""

from __future__ import annotations

import secrets
import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mediamux.sandbox.museai.analysis import Segment

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
