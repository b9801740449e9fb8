"""A stateful emulator of the muse.ai API, as two Starlette ASGI apps (the main host and the AI-jobs host).

Written from the provider documents (`museai-api.txt` and NOTES §1), not from any client code. ``app`` plays
``https://muse.ai`` (clients use ``{origin}/api`` as their base URL) and also serves the CDN paths the video
objects point at; ``jobs_app`` plays ``https://api.muse.ai``.

Endpoints
---------
Main host (``app``)::

    POST   /api/auth/login                          JSON {email, passwd} → {"key"}            (no Key)
    POST   /api/auth/keys                           → {"key"} (an additional key)
    POST   /api/files/upload                        multipart file [+ visibility, collection] → video
    POST   /api/files/cut                           multipart svid, start, end → new video (ingesting)
    POST   /api/files/set/{fid}                     JSON title/description/visibility/domains
    POST   /api/files/set/{fid}/cover               ?t=seconds, or multipart file (PNG/JPEG)
    DELETE /api/files/delete/{fid}
    GET    /api/files/videos                        own videos (list shape)
    GET    /api/files/videos/{svid}                 (Key optional: without it, non-private only)
    GET    /api/files/info/{svid}                   (Key optional) upload-shaped video object
    GET    /api/files/i/{kind}/{svid}               (Key optional) speech → [[start, end, word]], sounds →
                                                    the sounds map, scenes/text/actions/faces → []
    POST   /api/files/subtitles/{svid}              multipart subtitles (.vtt) → {"id", "name"}
    GET    /api/files/subtitles/{svid}              → {subid: name}
    GET    /api/files/subtitles/{svid}/{subid}      → the WebVTT text (text/vtt)
    POST   /api/files/subtitles/{svid}/{subid}/set  multipart name
    POST   /api/files/subtitles/{svid}/{subid}/delete
    GET    /api/files/collections                   [?metadata=full]
    POST   /api/files/collections                   JSON {name, visibility} → {"scid"}
    GET    /api/files/collections/{scid}
    DELETE /api/files/collections/{scid}
    POST   /api/files/collections/{scid}/add        JSON {svid}
    DELETE /api/files/collections/{scid}/{svid}
    GET    /api/search?q=                           own videos, any visibility
    GET    /api/search/channel/{channel_id}?q=      (no Key) public videos of the channel
    GET    /api/search/collection/{scid}?q=         (no Key) a public or unlisted collection
    GET    /api/search/video/{svid}?q=              (no Key) a public or unlisted video
    GET    /w/{fid}/data                            the stored bytes (the video object's ``url``)
    GET    /w/{fid}/thumbnails/thumbnail.jpg        the cover; /w/{fid}/thumbnails/{NNNNN}.jpg a frame at t

Jobs host (``jobs_app``)::

    POST   /{job}          job ∈ speech, align, sounds, colors, faces, objects, text; multipart file
                           (+ phrase for align) → {"id": "<64 hex>"}
    GET    /{job}/{id}     {"status": "pending"} → {"status": "done", <result>} | {"status": "error", ...}
    GET    /faces/db       {"detected": {...}, "deleted": {...}, "ignored": {...}}
    POST   /faces/modify   JSON {id: {label, delete, ignore, purge}} → {"status": "ok"}
    /api/*                 every main-host /api route as well (NOTES GUESS: both hosts route /api/files/*)

Authentication is the ``Key`` header. Each request is logged in ``requests`` as (method, path), with paths of
the jobs host prefixed ``jobs:``; ``faults`` (see ``faults.py``) applies to both apps.

Error codes (body ``{"error": "<code>"}``)
-----------------------------------------
- 400 ``file_not_provided``: upload, AI job or cover without a (non-empty) multipart ``file`` (a cover
  needs ``?t=`` or ``file``).
- 400 ``subtitles_not_provided``, ``name_not_provided``, ``svid_not_provided``, ``start_not_provided``,
  ``end_not_provided``, ``phrase_not_provided``, ``email_not_provided``, ``passwd_not_provided``,
  ``q_not_provided``: the named parameter is missing (or blank).
- 400 ``invalid_cut``: start/end not numbers, start < 0, end > duration or end <= start.
- 400 ``invalid_time``: cover ``t`` not a number or outside [0, duration].
- 400 ``invalid_visibility``, ``invalid_title``, ``invalid_description``, ``invalid_domains``,
  ``invalid_name``: a field of the wrong type or value.
- 400 ``invalid_json``: a JSON body that does not parse or is not an object (the document's faces/modify
  example with Python ``False`` is not JSON and is rejected).
- 400 ``invalid_request``: a malformed multipart body, or a faces/modify entry of the wrong shape.
- 400 ``invalid_subtitles``: a subtitle file that does not start with ``WEBVTT``.
- 400 ``unsupported_file``: colors on anything but an 8-bit non-interlaced grey/RGB/RGBA PNG; a cover
  image that is neither PNG nor JPEG.
- 400 ``video_ingesting``: cutting a video that is still ingesting.
- 401 ``unauthorized``: no ``Key`` on an endpoint that needs one; ``invalid_key``: a ``Key`` that is not
  valid (on any endpoint but login); ``invalid_credentials``: login with a wrong email or password.
- 402 ``not_enough_credits``: see credits below.
- 404 ``not_found``: unknown (or, without a Key, private) video, collection, subtitle, channel, face or
  job id; an AI job result more than an hour after completion; unknown routes.
- 405 ``method_not_allowed``.

Choices where the documents are silent (GUESSES)
-----------------------------------------------
- Upload ``visibility`` defaults to ``private`` (the PHP wrapper's comment; the document's example shows
  ``public`` without saying what was sent). ``default_visibility`` can be changed on the instance. New
  collections default to ``private`` too.
- ``fid`` = sha256 of the stored bytes; when another stored video already has that fid, random decimal
  digits are appended ("64 chars + a random number sometimes", NOTES §1.3).
- Title = file name without extension, underscores → spaces (the document's example).
- Duration: a WAV's header (frames / rate); an MP4's ``moov/mvhd``; 0.0 for a PNG; otherwise
  ``max(1.0, size / 125000)`` s (1 Mbit/s), rounded to 2 decimals. Width × height: a PNG's real size;
  0 × 0 for WAV audio; 1280 × 720 otherwise.
- Upload responses carry ``ingesting: false`` at once (as in the document's example); list/get add
  ``mature: false``, ``own`` (true with a Key), ``views`` (counts fetches of the data URL) and ``twatched: 0``.
- Cut: multipart text fields; the response is the full new video object (with ``fid`` and ``url``) plus
  ``cut_svid``, ``cut_start``, ``cut_end``; it stays ``ingesting`` for ``job_seconds`` of ``now()``. A WAV
  is really cut (16-bit mono); other files keep the source bytes. Cuts are not charged.
- ``files/set``, cover, delete, subtitle rename/delete, collection delete/add/remove answer
  ``{"status": "success"}``. ``domains`` is stored but not echoed in video objects.
- Private videos' data/thumbnail URLs need a valid Key (404 without); an ingesting video's data is 404.
  A cover set by ``?t=`` is a generated PNG frame (served as image/png under the CDN's ``.jpg`` name).
- Unlisted = reachable by id without a Key (video get/info/index, video and collection search), but not in
  channel search. Searches skip ingesting videos. There is one account, one channel (``channel_id``,
  derived from ``login_email``) and every key sees everything.
- Search: whitespace-separated terms, all must match (AND); ``s:``/``speech:``, ``n:``/``title:``/``name:``,
  ``d:``/``description:``, ``z:``/``sound:`` (speech, music, silence) are indexed; ``f: t: o: a:`` and their
  long forms match nothing; an unprefixed term matches title, description or speech. A term may be a
  ``"quoted phrase"``. Matching is on whole words, case-insensitive. Times: speech/sound hits give their
  start times, title/description hits give 0.0; a video's times are the sorted union over its terms.
  Results are ordered by number of times (descending), then upload order.
- Speech of a file (search ``s:``, ``files/i/speech``, the speech and align jobs): if a stored video with
  the same bytes has ``transcript: <text>`` in its title or description, those words, spread evenly over
  its duration. Otherwise, for a WAV: its voiced stretches (20 ms frames with RMS ≥ ``SILENCE_RMS`` on the
  16-bit scale; gaps < 0.1 s merged); each stretch's pitch comes from its zero crossings; stretches under
  1000 Hz are speech and say ``SPEECH_WORDS[int(pitch // 100) % 10]`` (a 440 Hz tone says "echo"), the rest
  are music. Other files: ``max(1, min(12, duration // 2))`` evenly spaced words picked from the sha256.
- AI jobs: ``pending`` for ``job_seconds`` of ``now()``, then ``done``; results answer 404 from 3600 s after
  completion. A file name containing ``[fail]`` ends ``{"status": "error", "error": "job_failed"}``
  (its content is not examined).
  Results: speech ``{"transcript"}``; align ``{"words": [[s, e, word]]}`` (the phrase's words, punctuation
  dropped, spread over the file's voiced span in proportion to their length); sounds ``{"sounds"}`` with
  all five keys (silence = the gaps, laughter/applause always empty); colors ``{"colors"}`` with all eleven
  names, the share of opaque pixels nearest each (HSV rules in ``classify_color``), 3 decimals;
  faces/objects/text: deterministic boxes from the file's sha256 (the same file always gives the same ids).
- Faces db: a done faces job adds its faces under ``detected`` (faces already deleted or ignored stay
  there). faces/modify keys may be cluster or face ids; ``label`` (str or null) names the cluster (and
  later results of that cluster), ``delete``/``ignore`` move faces to ``deleted``/``ignored``, ``purge``
  forgets them; false flags do nothing; precedence purge > delete > ignore; empty clusters disappear.
  Unknown ids → 404 and nothing changes.
- Credits: ``credits=None`` means unlimited. Otherwise every upload and every AI job submission costs 1;
  with 0 left they answer 402 ``not_enough_credits`` (after request validation, before any work).
  Failed jobs are not refunded.
"""

from __future__ import annotations

import colorsys
import hashlib
import hmac
import itertools
import json
import math
import mimetypes
import operator
import random
import re
import secrets
import shutil
import string
import tempfile
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
from starlette.applications import Starlette
from starlette.datastructures import FormData, Headers, UploadFile
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Route

from mediamux.sandbox.faults import ASGIApp, FaultMiddleware, FaultPlan, Receive, RequestLog, Scope, Send
from mediamux.sandbox.media import (
    PNG_SIGNATURE,
    color_for,
    mp4_duration,
    png_bytes,
    png_decode,
    wav_from_samples,
    wav_header,
    wav_samples,
)

VISIBILITIES = ("private", "unlisted", "public")
JOB_KINDS = ("speech", "align", "sounds", "colors", "faces", "objects", "text")
INDEX_KINDS = ("scenes", "speech", "text", "actions", "sounds", "faces")
RESULT_TTL_SECONDS = 3600.0
BASE62 = string.digits + string.ascii_letters

SPEECH_WORDS = ("alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliett")
MUSIC_PITCH_HZ = 1000.0
FRAME_SECONDS = 0.02
SILENCE_RMS = 655.0  # 2% of 16-bit full scale (about -34 dBFS)
MERGE_GAP_SECONDS = 0.1
SOUND_KINDS = ("speech", "music", "silence", "laughter", "applause")
COLOR_NAMES = (
    "black",
    "blue",
    "brown",
    "green",
    "grey",
    "orange",
    "pink",
    "purple",
    "red",
    "white",
    "yellow",
)
COLOR_SAMPLES = 40_000
OBJECT_LABELS = ("person", "bicycle", "car", "dog", "cat", "chair", "cup", "laptop", "book", "bottle")
TEXT_WORDS = ("hello", "world", "exit", "open", "sale", "muse", "stop", "news", "live", "menu")
ANALYSIS_MAX_BYTES = 64 * 1024 * 1024
SIZE_BYTES_PER_SECOND = 125_000
DEFAULT_FRAME = (1280, 720)
THUMB_SIZE = (160, 90)

_SIDECAR = re.compile(r"transcript:\s*(.+)", re.IGNORECASE | re.DOTALL)
_WORD = re.compile(r"[\w']+")
_TERM = re.compile(r'(?:([A-Za-z]+):)?(?:"([^"]*)"|(\S+))')
_MODALITIES = {
    "s": "speech",
    "speech": "speech",
    "n": "title",
    "name": "title",
    "title": "title",
    "d": "description",
    "description": "description",
    "z": "sounds",
    "sound": "sounds",
    "sounds": "sounds",
    "f": "faces",
    "face": "faces",
    "faces": "faces",
    "person": "faces",
    "t": "text",
    "text": "text",
    "o": "objects",
    "object": "objects",
    "objects": "objects",
    "a": "actions",
    "action": "actions",
    "actions": "actions",
}
_THUMB_FRAME = re.compile(r"(\d{5})\.jpg")


class ApiError(Exception):
    """Raised by handlers; answered as ``{"error": code}`` with the status."""

    def __init__(self, status: int, code: str) -> None:
        super().__init__(code)
        self.status = status
        self.code = code


def _error(status: int, code: str) -> JSONResponse:
    return JSONResponse({"error": code}, status_code=status)


def _new_id(length: int) -> str:
    return "".join(secrets.choice(BASE62) for _ in range(length))


# ---------------------------------------------------------------------------------------------------------
# Media analysis (pure functions; the tests predict results with them)
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MediaProbe:
    kind: str  # "wav" | "png" | "mp4" | "other"
    duration: float
    width: int
    height: int


@dataclass(frozen=True)
class Segment:
    start: float
    end: float
    label: str  # "speech" | "music"
    word: str  # "" for music


def probe_media(data: bytes | None, size: int, head: bytes) -> MediaProbe:
    """Kind, duration and frame size of a file (`data` is None when it was too large to keep in memory)."""
    fallback = round(max(1.0, size / SIZE_BYTES_PER_SECOND), 2)
    if head.startswith(b"RIFF") and head[8:12] == b"WAVE":
        try:
            info = wav_header(data if data is not None else head, file_size=size)
        except ValueError:
            return MediaProbe("other", fallback, *DEFAULT_FRAME)
        return MediaProbe("wav", round(info.duration_s, 3), 0, 0)
    if head.startswith(PNG_SIGNATURE) and len(head) >= 24:
        width = int.from_bytes(head[16:20], "big")
        height = int.from_bytes(head[20:24], "big")
        return MediaProbe("png", 0.0, width, height)
    if head[4:8] == b"ftyp" and data is not None:
        duration = mp4_duration(data)
        if duration is not None:
            return MediaProbe("mp4", round(duration, 3), *DEFAULT_FRAME)
    return MediaProbe("other", fallback, *DEFAULT_FRAME)


def pitch_word(pitch_hz: float) -> str:
    return SPEECH_WORDS[int(pitch_hz // 100) % len(SPEECH_WORDS)]


def wav_segments(samples: Sequence[int], sample_rate: int) -> list[Segment]:
    """Voiced stretches of a mono 16-bit signal, labelled speech (< 1000 Hz, with a word) or music."""
    frame = max(1, int(sample_rate * FRAME_SECONDS))
    gap = int(sample_rate * MERGE_GAP_SECONDS)
    n = len(samples)
    runs: list[list[int]] = []
    for i in range(0, n, frame):
        chunk = samples[i : i + frame]
        rms = math.sqrt(sum(map(operator.mul, chunk, chunk)) / len(chunk))
        if rms < SILENCE_RMS:
            continue
        end = min(n, i + frame)
        if runs and i - runs[-1][1] < gap:
            runs[-1][1] = end
        else:
            runs.append([i, end])
    segments: list[Segment] = []
    for start, end in runs:
        part = samples[start:end]
        crossings = sum(1 for a, b in itertools.pairwise(part) if (a < 0) != (b < 0))
        pitch = crossings / 2 / ((end - start) / sample_rate)
        label = "speech" if pitch < MUSIC_PITCH_HZ else "music"
        segments.append(
            Segment(
                round(start / sample_rate, 2),
                round(end / sample_rate, 2),
                label,
                pitch_word(pitch) if label == "speech" else "",
            )
        )
    return segments


def _pseudo_segments(sha256_hex: str, duration: float) -> list[Segment]:
    if duration <= 0:
        return []
    digest = bytes.fromhex(sha256_hex[:64])
    n = max(1, min(12, int(duration // 2)))
    slot = duration / n
    return [
        Segment(
            round(k * slot + 0.1 * slot, 2),
            round(k * slot + 0.9 * slot, 2),
            "speech",
            SPEECH_WORDS[digest[k] % len(SPEECH_WORDS)],
        )
        for k in range(n)
    ]


def analyse_audio(data: bytes | None, probe: MediaProbe, sha256_hex: str) -> list[Segment]:
    """Speech/music segments of a file: real for a WAV, deterministic from the hash otherwise."""
    if probe.kind == "wav" and data is not None:
        try:
            rate, samples = wav_samples(data)
        except ValueError:
            pass
        else:
            return wav_segments(samples, rate)
    return _pseudo_segments(sha256_hex, probe.duration)


def sidecar_words(title: str, description: str) -> list[str] | None:
    for text in (title, description):
        match = _SIDECAR.search(text)
        if match:
            return _WORD.findall(match.group(1))
    return None


def spread_words(words: Sequence[str], duration: float) -> list[Segment]:
    if not words:
        return []
    total = duration if duration > 0 else float(len(words))
    slot = total / len(words)
    return [
        Segment(round(i * slot, 2), round((i + 1) * slot, 2), "speech", word) for i, word in enumerate(words)
    ]


def sounds_map(segments: Sequence[Segment], duration: float) -> dict[str, list[list[float]]]:
    out: dict[str, list[list[float]]] = {kind: [] for kind in SOUND_KINDS}
    cursor = 0.0
    for seg in sorted(segments, key=lambda s: s.start):
        if seg.start > cursor:
            out["silence"].append([round(cursor, 2), seg.start])
        out[seg.label].append([seg.start, seg.end])
        cursor = max(cursor, seg.end)
    end = round(duration, 2)
    if end > cursor:
        out["silence"].append([round(cursor, 2), end])
    return out


def align_words(phrase: str, segments: Sequence[Segment], duration: float) -> list[list[Any]]:
    words = _WORD.findall(phrase)
    if not words:
        return []
    if segments:
        lo, hi = min(s.start for s in segments), max(s.end for s in segments)
    elif duration > 0:
        lo, hi = 0.0, duration
    else:
        lo, hi = 0.0, 0.3 * len(words)
    weights = [len(w) for w in words]
    total = sum(weights)
    out: list[list[Any]] = []
    acc = 0
    for word, weight in zip(words, weights, strict=True):
        start = round(lo + (hi - lo) * acc / total, 2)
        acc += weight
        out.append([start, round(lo + (hi - lo) * acc / total, 2), word])
    return out


def classify_color(r: int, g: int, b: int) -> str:
    """The nearest of the eleven documented colour names, by simple HSV rules."""
    hue, sat, val = colorsys.rgb_to_hsv(r / 255, g / 255, b / 255)
    hue *= 360
    if val < 0.2:
        return "black"
    if sat < 0.15:
        return "white" if val > 0.85 else "grey"
    if hue < 15 or hue >= 345:
        return "pink" if sat < 0.5 and val > 0.7 else "red"
    if hue < 45:
        return "brown" if val < 0.65 else "orange"
    if hue < 70:
        return "brown" if val < 0.5 else "yellow"
    if hue < 170:
        return "green"
    if hue < 260:
        return "blue"
    if hue < 310:
        return "purple"
    return "pink"


def color_proportions(data: bytes) -> dict[str, float]:
    """Share of opaque pixels per colour name of a PNG (sampled on a grid for big images)."""
    image = png_decode(data)
    step = max(1, math.ceil(math.sqrt(image.width * image.height / COLOR_SAMPLES)))
    counts = dict.fromkeys(COLOR_NAMES, 0)
    total = 0
    for y in range(0, image.height, step):
        for x in range(0, image.width, step):
            r, g, b, a = image.rgba(x, y)
            if a < 128:
                continue
            counts[classify_color(r, g, b)] += 1
            total += 1
    return {name: round(count / total, 3) if total else 0.0 for name, count in counts.items()}


def _box(rng: random.Random, q: float = 0.5) -> dict[str, float]:
    w = round(rng.uniform(0.08, 0.35), 3)
    h = round(rng.uniform(0.08, 0.35), 3)
    return {
        "x": round(rng.uniform(0.0, 1.0 - w), 3),
        "y": round(rng.uniform(0.0, 1.0 - h), 3),
        "w": w,
        "h": h,
        "q": q,
    }


def face_clusters(sha256_hex: str, duration: float) -> dict[str, dict[str, dict[str, float]]]:
    """cluster id (32 hex) → face id (64 hex) → {s, e, x, y, w, h, q}; a function of the file's hash."""
    rng = random.Random(f"faces:{sha256_hex}")
    clusters: dict[str, dict[str, dict[str, float]]] = {}
    for i in range(rng.randint(1, 2)):
        cluster = hashlib.sha256(f"{sha256_hex}:cluster:{i}".encode()).hexdigest()[:32]
        faces: dict[str, dict[str, float]] = {}
        for j in range(rng.randint(1, 2)):
            face = hashlib.sha256(f"{sha256_hex}:face:{i}:{j}".encode()).hexdigest()
            if duration > 0:
                s = round(rng.uniform(0.0, duration * 0.7), 2)
                e = round(min(duration, s + rng.uniform(0.5, max(0.5, duration * 0.3))), 2)
            else:
                s = e = 0.0
            faces[face] = {"s": s, "e": e, **_box(rng, rng.choice((0.5, 1.0)))}
        clusters[cluster] = faces
    return clusters


def labelled_boxes(
    kind: str, sha256_hex: str, vocabulary: Sequence[str]
) -> dict[str, list[dict[str, float]]]:
    rng = random.Random(f"{kind}:{sha256_hex}")
    labels = rng.sample(list(vocabulary), k=rng.randint(1, 3))
    return {
        label: [_box(rng) for _ in range(rng.randint(1, 2 if kind == "objects" else 1))] for label in labels
    }


def _words(text: str) -> list[str]:
    return [w.lower() for w in _WORD.findall(text)]


def _phrase_hits(sequence: Sequence[str], phrase: Sequence[str]) -> list[int]:
    k = len(phrase)
    return [i for i in range(len(sequence) - k + 1) if list(sequence[i : i + k]) == list(phrase)]


# ---------------------------------------------------------------------------------------------------------
# State
# ---------------------------------------------------------------------------------------------------------


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


@dataclass
class _Term:
    modality: str | None
    phrase: list[str]


_AUTHED = "mediamux.museai.authed"

# (method, path) patterns that work without a Key; a Key that is sent must still be valid.
_KEYLESS = [
    ("GET", re.compile(r"^/api/search/(channel|collection|video)/[^/]+$")),
    ("GET", re.compile(r"^/api/files/videos/[^/]+$")),
    ("GET", re.compile(r"^/api/files/info/[^/]+$")),
    ("GET", re.compile(r"^/api/files/i/[^/]+/[^/]+$")),
    ("GET", re.compile(r"^/w/")),
]
_LOGIN = "/api/auth/login"


class MuseaiEmulator:
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
        # Faces database.
        self._detected: dict[str, dict[str, dict[str, Any]]] = {}  # cluster → face → moment
        self._deleted: dict[str, dict[str, Any]] = {}
        self._ignored: dict[str, dict[str, Any]] = {}
        self._cluster_of: dict[str, str] = {}
        self._labels: dict[str, str | None] = {}
        self._root = Path(tempfile.mkdtemp(prefix="mediamux-museai-"))
        # Removed on close() or when the emulator is collected, whichever comes first.
        self._cleanup = weakref.finalize(self, shutil.rmtree, self._root, ignore_errors=True)
        api_routes = self._api_routes()
        self.app: Starlette = self._build(api_routes + self._cdn_routes(), prefix="")
        self.jobs_app: Starlette = self._build(self._job_routes() + api_routes, prefix="jobs:")

    def close(self) -> None:
        """Remove stored files now rather than whenever the emulator is collected."""
        self._cleanup()

    # -- plumbing ----------------------------------------------------------------------------------------

    def _build(self, routes: list[BaseRoute], *, prefix: str) -> Starlette:
        return Starlette(
            routes=routes,
            middleware=[
                Middleware(RequestLog, log=self.requests, prefix=prefix, on_request=self.advance),
                Middleware(FaultMiddleware, plan=self.faults),
                Middleware(_KeyGate, emulator=self),
            ],
            exception_handlers={ApiError: _api_error, HTTPException: _http_error},
        )

    def _api_routes(self) -> list[BaseRoute]:
        return [
            Route("/api/auth/login", self._login, methods=["POST"]),
            Route("/api/auth/keys", self._create_key, methods=["POST"]),
            Route("/api/files/upload", self._upload, methods=["POST"]),
            Route("/api/files/cut", self._cut, methods=["POST"]),
            Route("/api/files/set/{fid}/cover", self._set_cover, methods=["POST"]),
            Route("/api/files/set/{fid}", self._set_video, methods=["POST"]),
            Route("/api/files/delete/{fid}", self._delete_video, methods=["DELETE"]),
            Route("/api/files/videos", self._list_videos, methods=["GET"]),
            Route("/api/files/videos/{svid}", self._get_video, methods=["GET"]),
            Route("/api/files/info/{svid}", self._info, methods=["GET"]),
            Route("/api/files/i/{kind}/{svid}", self._index, methods=["GET"]),
            Route("/api/files/subtitles/{svid}", self._upload_subtitles, methods=["POST"]),
            Route("/api/files/subtitles/{svid}", self._list_subtitles, methods=["GET"]),
            Route("/api/files/subtitles/{svid}/{subid}", self._get_subtitles, methods=["GET"]),
            Route("/api/files/subtitles/{svid}/{subid}/set", self._rename_subtitles, methods=["POST"]),
            Route("/api/files/subtitles/{svid}/{subid}/delete", self._delete_subtitles, methods=["POST"]),
            Route("/api/files/collections", self._list_collections, methods=["GET"]),
            Route("/api/files/collections", self._create_collection, methods=["POST"]),
            Route("/api/files/collections/{scid}", self._get_collection, methods=["GET"]),
            Route("/api/files/collections/{scid}", self._delete_collection, methods=["DELETE"]),
            Route("/api/files/collections/{scid}/add", self._collection_add, methods=["POST"]),
            Route("/api/files/collections/{scid}/{svid}", self._collection_remove, methods=["DELETE"]),
            Route("/api/search", self._search_owned, methods=["GET"]),
            Route("/api/search/channel/{channel}", self._search_channel, methods=["GET"]),
            Route("/api/search/collection/{scid}", self._search_collection, methods=["GET"]),
            Route("/api/search/video/{svid}", self._search_video, methods=["GET"]),
        ]

    def _cdn_routes(self) -> list[BaseRoute]:
        return [
            Route("/w/{fid}/data", self._serve_data, methods=["GET"]),
            Route("/w/{fid}/thumbnails/{name}", self._serve_thumbnail, methods=["GET"]),
        ]

    def _job_routes(self) -> list[BaseRoute]:
        return [
            Route("/faces/db", self._faces_db, methods=["GET"]),
            Route("/faces/modify", self._faces_modify, methods=["POST"]),
            Route("/{kind}", self._submit_job, methods=["POST"]),
            Route("/{kind}/{job_id}", self._poll_job, methods=["GET"]),
        ]

    def _wall(self) -> int:
        return int(self._wall_offset + self.now())

    def _origin(self, request: Request) -> str:
        return self.base_url.rstrip("/") or str(request.base_url).rstrip("/")

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
        if video is None or (request is not None and not _authed(request) and video.visibility == "private"):
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
            candidate = _new_id(length)
            if not taken(candidate):
                return candidate

    def _new_svid(self) -> str:
        return self._unique_id(7, lambda c: c in self.videos or c in self.collections)

    def _fid_for(self, sha256: str) -> str:
        fid = sha256
        while fid in self._by_fid:
            fid = f"{sha256}{secrets.randbelow(10_000)}"
        return fid

    # -- shapes ------------------------------------------------------------------------------------------

    def _video_url(self, origin: str, video: Video) -> str:
        return f"{origin}/w/{video.fid}/data"

    def _upload_shape(self, origin: str, video: Video) -> dict[str, Any]:
        return {
            "fid": video.fid,
            "svid": video.svid,
            "filename": video.filename,
            "title": video.title,
            "description": video.description,
            "url": self._video_url(origin, video),
            "duration": video.duration,
            "width": video.width,
            "height": video.height,
            "size": video.size,
            "tcreated": video.tcreated,
            "visibility": video.visibility,
            "ingesting": self._ingesting(video),
        }

    def _full_shape(self, origin: str, video: Video, *, own: bool) -> dict[str, Any]:
        return {
            **self._upload_shape(origin, video),
            "mature": False,
            "own": own,
            "views": video.views,
            "twatched": 0,
        }

    def _collection_entry(self, origin: str, video: Video, tadded: int) -> dict[str, Any]:
        return {
            "svid": video.svid,
            "description": video.description,
            "duration": video.duration,
            "fid": video.fid,
            "filename": video.filename,
            "ingesting": self._ingesting(video),
            "size": video.size,
            "tadded": tadded,
            "tcreated": video.tcreated,
            "title": video.title,
            "url": self._video_url(origin, video),
            "views": video.views,
            "visibility": video.visibility,
            "width": video.width,
            "height": video.height,
        }

    # -- storage -----------------------------------------------------------------------------------------

    async def _store(self, upload: UploadFile, target: Path) -> Blob:
        await anyio.Path(target.parent).mkdir(parents=True, exist_ok=True)
        digest = hashlib.sha256()
        size = 0
        kept = bytearray()
        async with await anyio.open_file(target, "wb") as out:
            while chunk := await upload.read(256 * 1024):
                digest.update(chunk)
                size += len(chunk)
                if len(kept) <= ANALYSIS_MAX_BYTES:
                    kept += chunk
                await out.write(chunk)
        data = bytes(kept) if size <= ANALYSIS_MAX_BYTES else None
        return Blob(digest.hexdigest(), size, bytes(kept[:65_536]), data)

    async def _read(self, upload: UploadFile) -> Blob:
        digest = hashlib.sha256()
        size = 0
        kept = bytearray()
        head = b""
        while chunk := await upload.read(256 * 1024):
            digest.update(chunk)
            size += len(chunk)
            if len(head) < 65_536:
                head += chunk[: 65_536 - len(head)]
            if len(kept) <= ANALYSIS_MAX_BYTES:
                kept += chunk
        return Blob(digest.hexdigest(), size, head, bytes(kept) if size <= ANALYSIS_MAX_BYTES else None)

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

    # -- auth routes -------------------------------------------------------------------------------------

    async def _login(self, request: Request) -> Response:
        body = await _json_object(request)
        email, passwd = body.get("email"), body.get("passwd")
        if not isinstance(email, str) or not email:
            raise ApiError(400, "email_not_provided")
        if not isinstance(passwd, str) or not passwd:
            raise ApiError(400, "passwd_not_provided")
        if email.strip().lower() != self.login_email.lower() or not hmac.compare_digest(
            passwd, self.login_password
        ):
            raise ApiError(401, "invalid_credentials")
        return JSONResponse({"key": self._add_key()})

    async def _create_key(self, request: Request) -> Response:
        return JSONResponse({"key": self._add_key()})

    def _add_key(self) -> str:
        key = _new_id(32)
        self.keys.add(key)
        return key

    # -- videos ------------------------------------------------------------------------------------------

    async def _upload(self, request: Request) -> Response:
        svid = self._new_svid()
        folder = self._root / "videos" / svid
        async with request.form() as form:
            upload = form.get("file")
            if not isinstance(upload, UploadFile):
                raise ApiError(400, "file_not_provided")
            visibility = _text(form, "visibility") or self.default_visibility
            if visibility not in VISIBILITIES:
                raise ApiError(400, "invalid_visibility")
            scid = _text(form, "collection")
            collection = self._collection(scid) if scid else None
            self._spend_check()
            blob = await self._store(upload, folder / "data")
            raw_name = upload.filename or ""
        if blob.size == 0:
            shutil.rmtree(folder, ignore_errors=True)
            raise ApiError(400, "file_not_provided")
        filename = raw_name.replace("\\", "/").rsplit("/", 1)[-1] or "upload"
        probe = probe_media(blob.data, blob.size, blob.head)
        video = Video(
            svid=svid,
            fid=self._fid_for(blob.sha256),
            sha256=blob.sha256,
            filename=filename,
            title=_title_for(filename),
            description="",
            path=folder / "data",
            size=blob.size,
            duration=probe.duration,
            width=probe.width,
            height=probe.height,
            kind=probe.kind,
            tcreated=self._wall(),
            visibility=visibility,
            ready_at=self.now(),
        )
        self._register(video)
        if collection is not None:
            collection.members[svid] = self._wall()
        self._spend()
        self.uploads += 1
        return JSONResponse(self._upload_shape(self._origin(request), video))

    def _register(self, video: Video) -> None:
        self.videos[video.svid] = video
        self._by_fid[video.fid] = video.svid

    async def _cut(self, request: Request) -> Response:
        async with request.form() as form:
            svid, start_raw, end_raw = _text(form, "svid"), _text(form, "start"), _text(form, "end")
        if not svid:
            raise ApiError(400, "svid_not_provided")
        if not start_raw:
            raise ApiError(400, "start_not_provided")
        if not end_raw:
            raise ApiError(400, "end_not_provided")
        source = self._video(svid)
        try:
            start, end = float(start_raw), float(end_raw)
        except ValueError:
            raise ApiError(400, "invalid_cut") from None
        if not (math.isfinite(start) and math.isfinite(end)) or start < 0 or end <= start:
            raise ApiError(400, "invalid_cut")
        if end > source.duration + 1e-6:
            raise ApiError(400, "invalid_cut")
        if self._ingesting(source):
            raise ApiError(400, "video_ingesting")
        new_svid = self._new_svid()
        target = self._root / "videos" / new_svid / "data"
        await anyio.Path(target.parent).mkdir(parents=True, exist_ok=True)
        data = await self._load(source) if source.kind == "wav" else None
        if data is not None:
            cut = await anyio.to_thread.run_sync(_cut_wav, data, start, end)
            await anyio.Path(target).write_bytes(cut)
            sha, size = hashlib.sha256(cut).hexdigest(), len(cut)
        else:
            await anyio.to_thread.run_sync(shutil.copyfile, source.path, target)
            sha, size = source.sha256, source.size
        video = Video(
            svid=new_svid,
            fid=self._fid_for(sha),
            sha256=sha,
            filename=source.filename,
            title=source.title,
            description=source.description,
            path=target,
            size=size,
            duration=round(end - start, 3),
            width=source.width,
            height=source.height,
            kind=source.kind,
            tcreated=self._wall(),
            visibility=source.visibility,
            ready_at=self.now() + self.job_seconds,
        )
        self._register(video)
        shape = self._upload_shape(self._origin(request), video)
        return JSONResponse({**shape, "cut_svid": source.svid, "cut_start": start, "cut_end": end})

    async def _set_video(self, request: Request) -> Response:
        video = self._video_by_fid(request.path_params["fid"])
        body = await _json_object(request)
        title, description = body.get("title"), body.get("description")
        visibility, domains = body.get("visibility"), body.get("domains")
        if title is not None and not isinstance(title, str):
            raise ApiError(400, "invalid_title")
        if description is not None and not isinstance(description, str):
            raise ApiError(400, "invalid_description")
        if visibility is not None and visibility not in VISIBILITIES:
            raise ApiError(400, "invalid_visibility")
        if domains is not None and not (
            isinstance(domains, list) and all(isinstance(d, str) for d in domains)
        ):
            raise ApiError(400, "invalid_domains")
        if title is not None:
            video.title = title
        if description is not None:
            video.description = description
        if visibility is not None:
            video.visibility = visibility
        if domains is not None:
            video.domains = list(domains)
        return _success()

    async def _delete_video(self, request: Request) -> Response:
        video = self._video_by_fid(request.path_params["fid"])
        del self.videos[video.svid]
        del self._by_fid[video.fid]
        for collection in self.collections.values():
            collection.members.pop(video.svid, None)
        await anyio.to_thread.run_sync(shutil.rmtree, video.path.parent, True)
        return _success()

    async def _list_videos(self, request: Request) -> Response:
        origin = self._origin(request)
        return JSONResponse([self._full_shape(origin, v, own=True) for v in self.videos.values()])

    async def _get_video(self, request: Request) -> Response:
        video = self._video(request.path_params["svid"], request)
        return JSONResponse(self._full_shape(self._origin(request), video, own=_authed(request)))

    async def _info(self, request: Request) -> Response:
        video = self._video(request.path_params["svid"], request)
        return JSONResponse(self._upload_shape(self._origin(request), video))

    async def _index(self, request: Request) -> Response:
        kind = request.path_params["kind"]
        video = self._video(request.path_params["svid"], request)
        if kind not in INDEX_KINDS:
            raise ApiError(404, "not_found")
        if kind == "speech":
            segments = await self._segments(video)
            return JSONResponse([[s.start, s.end, s.word] for s in segments if s.label == "speech"])
        if kind == "sounds":
            return JSONResponse(sounds_map(await self._segments(video), video.duration))
        return JSONResponse([])

    async def _set_cover(self, request: Request) -> Response:
        video = self._video_by_fid(request.path_params["fid"])
        t_raw = request.query_params.get("t")
        if t_raw is not None and t_raw != "":
            try:
                t = float(t_raw)
            except ValueError:
                raise ApiError(400, "invalid_time") from None
            if not math.isfinite(t) or t < 0 or t > video.duration:
                raise ApiError(400, "invalid_time")
            video.cover_t, video.cover_path = t, None
            return _success()
        async with request.form() as form:
            upload = form.get("file")
            if not isinstance(upload, UploadFile):
                raise ApiError(400, "file_not_provided")
            data = await upload.read()
        if not data:
            raise ApiError(400, "file_not_provided")
        if data.startswith(PNG_SIGNATURE):
            media_type = "image/png"
        elif data.startswith(b"\xff\xd8\xff"):
            media_type = "image/jpeg"
        else:
            raise ApiError(400, "unsupported_file")
        path = video.path.parent / "cover"
        await anyio.Path(path).write_bytes(data)
        video.cover_path, video.cover_type = path, media_type
        return _success()

    # -- CDN ---------------------------------------------------------------------------------------------

    def _cdn_video(self, request: Request) -> Video:
        # GUESS: data URLs are CDN capability URLs (cdn.muse.ai/w/{fid}/...): the 64-hex fid is the
        # secret, and no Key is expected there, since a Key belongs to the API host, not the CDN.
        svid = self._by_fid.get(request.path_params["fid"])
        video = self.videos.get(svid or "")
        if video is None:
            raise ApiError(404, "not_found")
        return video

    async def _serve_data(self, request: Request) -> Response:
        video = self._cdn_video(request)
        if self._ingesting(video):
            raise ApiError(404, "not_found")
        video.views += 1
        media_type = "audio/wav" if video.kind == "wav" else mimetypes.guess_type(video.filename)[0]
        return FileResponse(video.path, media_type=media_type or "application/octet-stream")

    async def _serve_thumbnail(self, request: Request) -> Response:
        video = self._cdn_video(request)
        name = request.path_params["name"]
        if name == "thumbnail.jpg":
            if video.cover_path is not None:
                return FileResponse(video.cover_path, media_type=video.cover_type)
            t = video.cover_t
        else:
            match = _THUMB_FRAME.fullmatch(name)
            if match is None or int(match.group(1)) > video.duration:
                raise ApiError(404, "not_found")
            t = float(match.group(1))
        frame = png_bytes(*THUMB_SIZE, color_for(f"{video.fid}@{t:.2f}"))
        return Response(frame, media_type="image/png")

    # -- subtitles ---------------------------------------------------------------------------------------

    async def _upload_subtitles(self, request: Request) -> Response:
        video = self._video(request.path_params["svid"])
        async with request.form() as form:
            upload = form.get("subtitles")
            if not isinstance(upload, UploadFile):
                raise ApiError(400, "subtitles_not_provided")
            data = await upload.read()
            filename = upload.filename or ""
        if not data:
            raise ApiError(400, "subtitles_not_provided")
        text = data.decode("utf-8", errors="replace").lstrip("\ufeff")
        if not text.startswith("WEBVTT"):
            raise ApiError(400, "invalid_subtitles")
        base = filename.replace("\\", "/").rsplit("/", 1)[-1]
        name = base.rsplit(".", 1)[0] if "." in base else base
        subid = self._unique_id(9, lambda c: c in video.subtitles)
        video.subtitles[subid] = Subtitle(subid, name or "subtitles", text)
        return JSONResponse({"id": subid, "name": video.subtitles[subid].name})

    async def _list_subtitles(self, request: Request) -> Response:
        video = self._video(request.path_params["svid"])
        return JSONResponse({s.id: s.name for s in video.subtitles.values()})

    def _subtitle(self, request: Request) -> tuple[Video, Subtitle]:
        video = self._video(request.path_params["svid"])
        subtitle = video.subtitles.get(request.path_params["subid"])
        if subtitle is None:
            raise ApiError(404, "not_found")
        return video, subtitle

    async def _get_subtitles(self, request: Request) -> Response:
        _video, subtitle = self._subtitle(request)
        return Response(subtitle.text, media_type="text/vtt")

    async def _rename_subtitles(self, request: Request) -> Response:
        _video, subtitle = self._subtitle(request)
        async with request.form() as form:
            name = _text(form, "name")
        if not name:
            raise ApiError(400, "name_not_provided")
        subtitle.name = name
        return _success()

    async def _delete_subtitles(self, request: Request) -> Response:
        video, subtitle = self._subtitle(request)
        del video.subtitles[subtitle.id]
        return _success()

    # -- collections -------------------------------------------------------------------------------------

    def _members(self, collection: Collection, *, public: bool = False) -> list[tuple[Video, int]]:
        out = []
        for svid, tadded in collection.members.items():
            video = self.videos.get(svid)
            if video is not None and not (public and video.visibility == "private"):
                out.append((video, tadded))
        return out

    async def _list_collections(self, request: Request) -> Response:
        origin = self._origin(request)
        full = request.query_params.get("metadata") == "full"
        out = []
        for c in self.collections.values():
            if full:
                videos = [self._collection_entry(origin, v, t) for v, t in self._members(c)]
            else:
                videos = [
                    {"svid": v.svid, "duration": v.duration, "fid": v.fid, "url": self._video_url(origin, v)}
                    for v, _t in self._members(c)
                ]
            out.append(
                {
                    "name": c.name,
                    "scid": c.scid,
                    "tcreated": c.tcreated,
                    "visibility": c.visibility,
                    "videos": videos,
                }
            )
        return JSONResponse(out)

    async def _get_collection(self, request: Request) -> Response:
        collection = self._collection(request.path_params["scid"])
        origin = self._origin(request)
        return JSONResponse(
            {
                "name": collection.name,
                "own": True,
                "visibility": collection.visibility,
                "videos": [self._collection_entry(origin, v, t) for v, t in self._members(collection)],
            }
        )

    async def _create_collection(self, request: Request) -> Response:
        body = await _json_object(request)
        name = body.get("name")
        visibility = body.get("visibility", self.default_visibility)
        if name is None or name == "":
            raise ApiError(400, "name_not_provided")
        if not isinstance(name, str):
            raise ApiError(400, "invalid_name")
        if visibility not in VISIBILITIES:
            raise ApiError(400, "invalid_visibility")
        scid = self._new_svid()
        self.collections[scid] = Collection(scid, name, str(visibility), self._wall())
        return JSONResponse({"scid": scid})

    async def _delete_collection(self, request: Request) -> Response:
        collection = self._collection(request.path_params["scid"])
        del self.collections[collection.scid]
        return _success()

    async def _collection_add(self, request: Request) -> Response:
        collection = self._collection(request.path_params["scid"])
        body = await _json_object(request)
        svid = body.get("svid")
        if not isinstance(svid, str) or not svid:
            raise ApiError(400, "svid_not_provided")
        video = self._video(svid)
        collection.members.setdefault(video.svid, self._wall())
        return _success()

    async def _collection_remove(self, request: Request) -> Response:
        collection = self._collection(request.path_params["scid"])
        if collection.members.pop(request.path_params["svid"], None) is None:
            raise ApiError(404, "not_found")
        return _success()

    # -- search ------------------------------------------------------------------------------------------

    async def _search_owned(self, request: Request) -> Response:
        return await self._search(request, list(self.videos.values()))

    async def _search_channel(self, request: Request) -> Response:
        if request.path_params["channel"] != self.channel_id:
            raise ApiError(404, "not_found")
        return await self._search(request, [v for v in self.videos.values() if v.visibility == "public"])

    async def _search_collection(self, request: Request) -> Response:
        collection = self._collection(request.path_params["scid"])
        if collection.visibility == "private":
            raise ApiError(404, "not_found")
        return await self._search(request, [v for v, _t in self._members(collection, public=True)])

    async def _search_video(self, request: Request) -> Response:
        video = self.videos.get(request.path_params["svid"])
        if video is None or video.visibility == "private":
            raise ApiError(404, "not_found")
        return await self._search(request, [video])

    async def _search(self, request: Request, candidates: list[Video]) -> Response:
        terms = _parse_query(request.query_params.get("q", ""))
        if not terms:
            raise ApiError(400, "q_not_provided")
        hits: list[tuple[int, int, str, list[float]]] = []
        for order, video in enumerate(candidates):
            if self._ingesting(video):
                continue
            times = await self._match(video, terms)
            if times is not None:
                hits.append((-len(times), order, video.svid, times))
        hits.sort()
        return JSONResponse([[svid, times] for _n, _o, svid, times in hits])

    async def _match(self, video: Video, terms: list[_Term]) -> list[float] | None:
        found: set[float] = set()
        segments: list[Segment] | None = None
        for term in terms:
            term_times: set[float] = set()
            matched = False
            modalities = [term.modality] if term.modality else ["title", "description", "speech"]
            for modality in modalities:
                if modality in ("title", "description"):
                    text = video.title if modality == "title" else video.description
                    if _phrase_hits(_words(text), term.phrase):
                        matched = True
                        term_times.add(0.0)
                elif modality == "speech":
                    if segments is None:
                        segments = await self._segments(video)
                    spoken = [s for s in segments if s.label == "speech"]
                    starts = _phrase_hits([s.word.lower() for s in spoken], term.phrase)
                    if starts:
                        matched = True
                        term_times.update(spoken[i].start for i in starts)
                elif modality == "sounds" and len(term.phrase) == 1:
                    if segments is None:
                        segments = await self._segments(video)
                    ranges = sounds_map(segments, video.duration).get(term.phrase[0], [])
                    if ranges:
                        matched = True
                        term_times.update(r[0] for r in ranges)
            if not matched:
                return None
            found |= term_times
        return sorted(found)

    # -- AI jobs -----------------------------------------------------------------------------------------

    async def _submit_job(self, request: Request) -> Response:
        kind = request.path_params["kind"]
        if kind not in JOB_KINDS:
            raise ApiError(404, "not_found")
        async with request.form() as form:
            upload = form.get("file")
            if not isinstance(upload, UploadFile):
                raise ApiError(400, "file_not_provided")
            phrase = _text(form, "phrase")
            if kind == "align" and not phrase.strip():
                raise ApiError(400, "phrase_not_provided")
            blob = await self._read(upload)
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
                    cluster: {"label": self._labels.get(cluster), "faces": faces}
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
            elif now >= job.done_at and not job.failed:
                self._land(job)

    def _land(self, job: Job) -> None:
        if job.landed:
            return
        job.landed = True
        if job.kind != "faces":
            return
        for cluster, faces in job.result["faces"].items():
            for face_id, moment in faces.items():
                if face_id in self._deleted or face_id in self._ignored:
                    continue
                self._cluster_of[face_id] = cluster
                self._detected.setdefault(cluster, {})[face_id] = {"f": job.sha256, **moment}

    # -- faces database ----------------------------------------------------------------------------------

    async def _faces_db(self, request: Request) -> Response:
        return JSONResponse(
            {
                "detected": {
                    cluster: {
                        "label": self._labels.get(cluster),
                        "faces": {face: {"moment": m} for face, m in faces.items()},
                    }
                    for cluster, faces in self._detected.items()
                },
                "deleted": {face: {"moment": m} for face, m in self._deleted.items()},
                "ignored": {face: {"moment": m} for face, m in self._ignored.items()},
            }
        )

    async def _faces_modify(self, request: Request) -> Response:
        body = await _json_object(request)
        known_faces = set(self._deleted) | set(self._ignored)
        for cluster_faces in self._detected.values():
            known_faces |= set(cluster_faces)
        for key, change in body.items():
            if not isinstance(change, dict):
                raise ApiError(400, "invalid_request")
            if "label" in change and change["label"] is not None and not isinstance(change["label"], str):
                raise ApiError(400, "invalid_request")
            if any(not isinstance(change.get(flag, False), bool) for flag in ("delete", "ignore", "purge")):
                raise ApiError(400, "invalid_request")
            if key not in self._detected and key not in known_faces:
                raise ApiError(404, "not_found")
        for key, change in body.items():
            if key in self._detected:
                cluster, faces = key, list(self._detected[key])
            else:
                cluster, faces = self._cluster_of.get(key, ""), [key]
            if "label" in change and cluster:
                self._labels[cluster] = change["label"]
            for face in faces:
                if change.get("purge"):
                    self._remove_face(face)
                    self._cluster_of.pop(face, None)
                elif change.get("delete"):
                    self._deleted[face] = self._remove_face(face)
                elif change.get("ignore"):
                    self._ignored[face] = self._remove_face(face)
        return JSONResponse({"status": "ok"})

    def _remove_face(self, face: str) -> dict[str, Any]:
        moment: dict[str, Any] = {}
        for cluster in list(self._detected):
            if face in self._detected[cluster]:
                moment = self._detected[cluster].pop(face)
                if not self._detected[cluster]:
                    del self._detected[cluster]
        for store in (self._deleted, self._ignored):
            if face in store:
                moment = store.pop(face)
        return moment


# ---------------------------------------------------------------------------------------------------------
# Middleware and helpers
# ---------------------------------------------------------------------------------------------------------


class _KeyGate:
    """The ``Key`` header: required except on login and the keyless endpoints; when sent, it must be valid."""

    def __init__(self, app: ASGIApp, emulator: MuseaiEmulator) -> None:
        self.app = app
        self.emulator = emulator

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path, method = scope["path"], scope["method"]
        key = Headers(scope=scope).get("key", "").strip()
        if path == _LOGIN:
            scope[_AUTHED] = False
        elif key:
            if not self.emulator._valid_key(key):
                await _error(401, "invalid_key")(scope, receive, send)
                return
            scope[_AUTHED] = True
        elif any(method == m and pattern.match(path) for m, pattern in _KEYLESS):
            scope[_AUTHED] = False
        else:
            await _error(401, "unauthorized")(scope, receive, send)
            return
        await self.app(scope, receive, send)


def _authed(request: Request) -> bool:
    return bool(request.scope.get(_AUTHED))


async def _api_error(request: Request, exc: Exception) -> Response:
    if not isinstance(exc, ApiError):  # pragma: no cover - registered for ApiError only
        raise exc
    return _error(exc.status, exc.code)


_HTTP_CODES = {400: "invalid_request", 404: "not_found", 405: "method_not_allowed"}


async def _http_error(request: Request, exc: Exception) -> Response:
    if not isinstance(exc, HTTPException):  # pragma: no cover - registered for HTTPException only
        raise exc
    code = _HTTP_CODES.get(exc.status_code, "error")
    return JSONResponse({"error": code}, status_code=exc.status_code, headers=exc.headers)


def _success() -> JSONResponse:
    return JSONResponse({"status": "success"})


def _text(form: FormData, name: str) -> str:
    value = form.get(name)
    return value.strip() if isinstance(value, str) else ""


async def _json_object(request: Request) -> dict[str, Any]:
    raw = await request.body()
    try:
        data = json.loads(raw) if raw.strip() else {}
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ApiError(400, "invalid_json") from None
    if not isinstance(data, dict):
        raise ApiError(400, "invalid_json")
    return data


def _title_for(filename: str) -> str:
    stem = filename.rsplit(".", 1)[0] if "." in filename.lstrip(".") else filename
    return stem.replace("_", " ").strip() or filename


def _cut_wav(data: bytes, start: float, end: float) -> bytes:
    rate, samples = wav_samples(data)
    return wav_from_samples(samples[int(start * rate) : int(end * rate)], rate)


def _parse_query(q: str) -> list[_Term]:
    terms: list[_Term] = []
    for match in _TERM.finditer(q):
        prefix, quoted, bare = match.group(1), match.group(2), match.group(3)
        modality = _MODALITIES.get(prefix.lower()) if prefix else None
        text = quoted if quoted is not None else bare
        if prefix and modality is None:
            text = f"{prefix}:{text}"  # not a modality (e.g. a time like 12:30): plain text
        phrase = _words(text)
        if phrase:
            terms.append(_Term(modality, phrase))
    return terms


__all__ = [
    "COLOR_NAMES",
    "JOB_KINDS",
    "SPEECH_WORDS",
    "MediaProbe",
    "MuseaiEmulator",
    "Segment",
    "analyse_audio",
    "classify_color",
    "color_proportions",
    "face_clusters",
    "pitch_word",
    "probe_media",
    "wav_segments",
]
