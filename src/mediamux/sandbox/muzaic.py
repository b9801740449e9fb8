"""A stateful emulator of the Muzaic music API (https://m10.muzaic.ai), as a Starlette ASGI app.

Written from the provider documents (`muzaic-api.txt` and NOTES §2), not from any client code.

Response generations
--------------------
The documents describe two incompatible editions; ``generation`` (switchable at run time) picks one:

- ``"old"`` (docs apiVersion 1.2.0): ``mp3`` is a URL served by this emulator, ``/singleFile`` also has
  ``motiveId``, ``/soundtrack`` answers ``regions: [{number, hash}]`` and a ``" | "``-joined ``status``
  string; error bodies are ``{"Error": "..."}`` (capital E); params range 1–9; duration limit 1200 s;
  region ``action`` ∈ generate/copy/regenerate/extend (optional, default generate); ``method`` ∈
  strict/auto_adjust/adjust_start/adjust_end; ``normalize`` ∈ "none"/"auto"/"high" (default "auto").
- ``"new"`` (the OpenAPI "Muzaic Core API" fragment): ``mp3`` is a base64 data URL plus ``audioDuration``;
  ``/soundtrack`` answers ``regions: <count>``, ``regionHashes`` and a list ``status``; error bodies are
  ``{"error": "..."}``; params range 1–10; duration limit 300 s; region ``action`` ∈ generate/copy/silence
  and **required**; ``method`` ∈ strict/smart; ``normalize`` is a boolean.

Audio
-----
Every generation is a real, playable WAV (not an MP3: encoding MP3 in pure Python is impractical) of
exactly the requested length: unsigned 8-bit mono PCM at 8 kHz, with the sample rate lowered for long
pieces so a file stays under ~1 MB (120 s → 8 kHz / 960 kB; 300 s → 3333 Hz; 1200 s → 833 Hz). The music
is a deterministic pentatonic melody derived from the piece's hash; ``tempo`` sets the note length and
``intensity`` the loudness. Gaps between soundtrack regions and ``silence`` regions are silent. Old-style
URLs look like the documented ones but end in ``.wav``: ``{base_url}/result/YYYY-MM-DD/<32hex>.wav``
(``st_<32hex>.wav`` for soundtracks and audioFromHash); new-style data URLs are ``data:audio/wav;base64,…``.

Long generations
----------------
The API is synchronous. With ``generation_seconds_per_audio_second > 0`` a generation takes
``audio seconds × factor`` (also reported as ``executionTime``) before it answers:

- if ``hold`` (a `faults.Gate`) is **armed** — ``emulator.hold.reset()`` — every generation waits until
  ``emulator.hold.set()`` releases it (the clock is then ignored);
- otherwise it waits until the injected ``now()`` has advanced by that many seconds (checked every 10 ms,
  so a fake clock drives it and a real one gives real latency).

``parked`` counts generations currently waiting. A client that disconnects while waiting abandons the
generation: nothing is charged and no hash is created. With the factor at 0 (default) nothing waits.

Choices where the documents are silent or disagree (GUESSES)
-----------------------------------------------------------
- Auth: a missing ``MuzaicAPI-Secret-Key`` is 400 ``{"Error": "No MuzaicAPI Secret Key"}`` in the old
  generation (as the old docs list it) and 401 ``{"error": "No MuzaicAPI Secret Key"}`` in the new one; a
  wrong key is 401 ``Invalid MuzaicAPI Secret Key`` in both. ``/result/*`` files need no key.
- Tokens: 1 token = 1 s of output audio, rounded up; a soundtrack is charged for its whole length
  (gaps and silence regions included); audioFromHash is charged for the regenerated length. 402 when the
  balance is short: no audio, no hash, no charge. getTags, accountDetails and narrationToMuzaic are free.
- Parameter errors (bad range/type, bad keyframes, keyframes on ``tempo``, bad duration/tags/action/
  method/normalize, unknown sourceHash in a region) are 400 with the generation's error body. Unknown
  param keys, unknown tag ids and conflicting tags are accepted and reported as warnings in ``status``.
  Keyframe positions must be numbers 0–100 in non-decreasing order, the first at 0, the last at 100.
- ``duration`` may be fractional (≥ 1); ``tokensUsed`` rounds up. Region ``time`` ≥ 0 and ``duration`` > 0
  are both required. ``sourceHash`` is required for copy/regenerate/extend.
- Hashes are random 32-hex per generation (each region gets its own; copy also gets a fresh one). A
  soundtrack's ``st_<hex>`` file id is also accepted by audioFromHash. audioFromHash returns the same
  samples as the original. ``motiveId`` is 1–40 derived from the hash. New-generation apiVersion "2.0.0"
  (the MCP speaks of "API v2.0").
- New-generation audioFromHash answers like singleFile: ``{apiVersion, mp3, audioDuration, hash (the
  source), status, tokensUsed, executionTime}``. ``/audioFromHash`` accepts ``sourceHash`` (docs) and
  ``hash`` (MCP); unknown → 404 "Hash not found" (both generations).
- Tag list: only 1 = acoustic and 2 = electronic (category 4) are documented; 5/10 = dreamy/ambient and
  11/17 = dynamic/Latin are placed as the docs' examples imply; everything else is invented. Relations use
  the docs' ``tagsRelations`` shape (negatives only, symmetric), including 1 ↔ 2, 4, 16 and happy ↔ dark.
- accountDetails: ``account_shape`` picks "old" (docs 1.2.0; ``freeTokensAvailable`` = remaining tokens,
  ``totalUsedTokens`` = lifetime use, ``currentBalance`` = use in the current cycle), "new" (OpenAPI),
  "mcp" (``{balance, used}``) or "auto" (default: old/new following ``generation``). Every shape carries
  ``secretKey`` echoing the caller's key — documented for the old shape, added to the others on purpose
  so a product that must strip it is always exercised.
- narrationToMuzaic: free, in both generations; tags whose name occurs in the text score 0.9, others a
  hash-derived 0.05–0.45; ``tags`` = up to 3 with score ≥ 0.5; params are 1–10 argmax of a deterministic
  distribution nudged by a few mood words.
- ``/soundtrack/{origin}``: any origin is allowed unless ``allowed_origins`` is a set, in which case others
  get 403 ``API key is not valid for this origin``.
- State folder (``state_dir``, see ``store.py``): the account (tokens left and used, creation date) and
  every generated piece (its hash, for copy/regenerate/audioFromHash, and its old-style result file)
  outlive a restart; audio is stored as the recipe it is rendered from, not as WAV bytes. ``tokens``
  describes a new account; a stored account keeps its own balance.
"""

from __future__ import annotations

import base64
import hmac
import json
import logging
import math
import re
import time
import uuid
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal, TypeGuard

import anyio
from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from mediamux.sandbox.common import public_origin
from mediamux.sandbox.faults import (
    ASGIApp,
    FaultMiddleware,
    FaultPlan,
    Gate,
    Receive,
    RequestLog,
    Scope,
    Send,
    wait_unless_client_leaves,
)
from mediamux.sandbox.media import WAV_U8_SILENCE, melody_pcm_u8, seed_digest, wav_u8_bytes, wav_u8_rate_for
from mediamux.sandbox.store import StateStore

logger = logging.getLogger(__name__)

Generation = Literal["old", "new"]
AccountShape = Literal["auto", "old", "new", "mcp"]

API_VERSION: dict[str, str] = {"old": "1.2.0", "new": "2.0.0"}
PARAM_NAMES = ("intensity", "tempo", "rhythm", "tone", "variance")
PARAM_MAX: dict[str, int] = {"old": 9, "new": 10}
DURATION_MAX: dict[str, int] = {"old": 1200, "new": 300}
DEFAULT_DURATION = 60
DEFAULT_PARAM = 5
ACTIONS: dict[str, tuple[str, ...]] = {
    "old": ("generate", "copy", "regenerate", "extend"),
    "new": ("generate", "copy", "silence"),
}
METHODS: dict[str, tuple[str, ...]] = {
    "old": ("strict", "auto_adjust", "adjust_start", "adjust_end"),
    "new": ("strict", "smart"),
}
NORMALIZE_OLD = ("none", "auto", "high")
SOURCE_ACTIONS = frozenset({"copy", "regenerate", "extend"})
WAIT_TICK_S = 0.01
MODELED_SECONDS_PER_AUDIO_SECOND = 0.1  # "~5–7 seconds per minute of audio" (MCP)
KEY_HEADER = "muzaicapi-secret-key"


# ---------------------------------------------------------------------------------------------------------
# Tags (NOTES §2.4): 1 and 2 are documented, the rest is a plausible GUESS.
# ---------------------------------------------------------------------------------------------------------

TAG_CATEGORIES: dict[int, str] = {1: "Mood/Energy", 2: "Purpose", 3: "Cultural", 4: "Style/Genre"}


@dataclass(frozen=True)
class Tag:
    id: int
    name: str
    category: int
    # intensity, tempo, rhythm, tone, variance
    bonuses: tuple[int, int, int, int, int] = (0, 0, 0, 0, 0)
    secret: bool = False
    active: bool = True

    def as_json(self) -> dict[str, str]:
        # The documented example has every field as a string.
        bonus = dict(
            zip(("int_bonus", "tem_bonus", "rhy_bonus", "ton_bonus", "var_bonus"), self.bonuses, strict=True)
        )
        return {
            "id": str(self.id),
            "name": self.name,
            **{k: str(v) for k, v in bonus.items()},
            "tagCategoryId": str(self.category),
            "secret": "1" if self.secret else "0",
            "active": "1" if self.active else "0",
        }


TAGS: tuple[Tag, ...] = (
    Tag(1, "acoustic", 4, (-1, 0, 0, 1, 0)),
    Tag(2, "electronic", 4, (1, 1, 1, 0, 0)),
    Tag(3, "orchestral", 4, (1, 0, 0, 0, 1)),
    Tag(4, "rock", 4, (2, 1, 1, 0, 0)),
    Tag(5, "dreamy", 1, (-2, -1, -1, 1, 0)),
    Tag(6, "happy", 1, (1, 1, 0, 2, 0)),
    Tag(7, "dark", 1, (0, -1, 0, -2, 0)),
    Tag(8, "epic", 1, (2, 0, 1, 0, 1)),
    Tag(9, "calm", 1, (-2, -2, -1, 0, -1)),
    Tag(10, "ambient", 4, (-2, -2, -2, 0, -1)),
    Tag(11, "dynamic", 1, (2, 2, 1, 0, 1)),
    Tag(12, "sad", 1, (-1, -1, 0, -2, 0)),
    Tag(13, "romantic", 1, (-1, -1, 0, 1, 0)),
    Tag(14, "tense", 1, (1, 0, 1, -1, 1)),
    Tag(15, "corporate", 2, (0, 0, 0, 1, -1)),
    Tag(16, "hip-hop", 4, (1, 0, 2, 0, 0)),
    Tag(17, "latin", 3, (1, 1, 2, 1, 0)),
    Tag(18, "jazz", 4, (0, 0, 1, 0, 2)),
    Tag(19, "cinematic", 2, (1, 0, 0, 0, 1)),
    Tag(20, "advertising", 2, (1, 1, 0, 1, 0)),
    Tag(21, "documentary", 2, (-1, 0, 0, 0, 0)),
    Tag(22, "gaming", 2, (1, 1, 1, 0, 1)),
    Tag(23, "vlog", 2, (0, 1, 0, 1, 0)),
    Tag(24, "meditation", 2, (-2, -2, -2, 0, -2)),
    Tag(25, "asian", 3, (0, 0, 0, 0, 0)),
    Tag(26, "african", 3, (1, 0, 2, 0, 0)),
    Tag(27, "celtic", 3, (0, 0, 0, 1, 0)),
    Tag(28, "middle eastern", 3, (0, 0, 1, -1, 0)),
    Tag(29, "indian", 3, (0, 0, 1, 0, 1)),
    Tag(30, "lo-fi", 4, (-1, -1, 0, 0, -1)),
    Tag(31, "funky", 1, (1, 1, 2, 1, 0)),
    Tag(32, "mysterious", 1, (0, -1, 0, -1, 1)),
    Tag(33, "christmas", 2, (0, 0, 0, 2, 0), secret=True, active=False),
)
TAGS_BY_ID: dict[int, Tag] = {t.id: t for t in TAGS}
# Negative correlations, stored once per pair and emitted symmetrically.
TAG_CONFLICTS: tuple[tuple[int, int], ...] = (
    (1, 2),
    (1, 4),
    (1, 16),
    (6, 7),
    (6, 12),
    (9, 11),
    (9, 8),
    (9, 4),
    (24, 11),
    (24, 4),
    (3, 30),
)


def tag_relations() -> dict[str, dict[str, int]]:
    relations: dict[str, dict[str, int]] = {}
    for a, b in TAG_CONFLICTS:
        relations.setdefault(str(a), {})[str(b)] = -1
        relations.setdefault(str(b), {})[str(a)] = -1
    return {
        k: dict(sorted(v.items(), key=lambda kv: int(kv[0])))
        for k, v in sorted(relations.items(), key=lambda kv: int(kv[0]))
    }


_CONFLICT_SET = {frozenset(p) for p in TAG_CONFLICTS}


def tag_bonus(tag_ids: list[int], param_index: int) -> int:
    """The docs' front-end rule: all ≥ 0 → max, all ≤ 0 → min, mixed → average rounded."""
    bonuses = [TAGS_BY_ID[t].bonuses[param_index] for t in tag_ids if t in TAGS_BY_ID]
    if not bonuses:
        return 0
    if all(b >= 0 for b in bonuses):
        return max(bonuses)
    if all(b <= 0 for b in bonuses):
        return min(bonuses)
    return round(sum(bonuses) / len(bonuses))


# ---------------------------------------------------------------------------------------------------------
# State
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Piece:
    """A stretch of a rendered file: a melody (seed) or silence (seed None)."""

    offset: float
    duration: float
    seed: str | None
    note_s: float = 0.5
    amplitude: float = 0.5


@dataclass
class Audio:
    hash: str
    duration: float
    pieces: tuple[Piece, ...]
    kind: Literal["file", "region", "soundtrack"]

    def primary(self) -> Piece:
        for piece in self.pieces:
            if piece.seed is not None:
                return piece
        return Piece(0.0, self.duration, None)


class _ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class _Sound:
    params: dict[str, int | list[list[float]]]
    given: bool
    warnings: list[str]
    tags: list[int]

    def mean(self, name: str) -> float:
        """The parameter's mean value; a parameter left out takes the default plus the tags' bonus."""
        value = self.params.get(name)
        if isinstance(value, list):
            return sum(kf[1] for kf in value) / len(value)
        if value is not None:
            return float(value)
        return max(1.0, min(9.0, DEFAULT_PARAM + tag_bonus(self.tags, PARAM_NAMES.index(name))))


def _is_number(value: Any) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _render(duration: float, pieces: tuple[Piece, ...]) -> bytes:
    rate = wav_u8_rate_for(duration)
    total = round(duration * rate)
    pcm = bytearray([WAV_U8_SILENCE]) * total
    for piece in pieces:
        if piece.seed is None:
            continue
        start = min(total, round(piece.offset * rate))
        count = min(total - start, round(piece.duration * rate))
        pcm[start : start + count] = melody_pcm_u8(
            piece.seed, count, rate, note_s=piece.note_s, amplitude=piece.amplitude
        )
    return wav_u8_bytes(bytes(pcm), rate)


class MuzaicEmulator:
    def __init__(
        self,
        *,
        now: Callable[[], float] = time.monotonic,
        master_key: str = "sandbox-muzaic-key",
        tokens: float = 3600.0,
        generation: Generation = "new",
        generation_seconds_per_audio_second: float = 0.0,
        state_dir: Path | None = None,
    ) -> None:
        self.now = now
        self.master_key = master_key
        self._tokens: float = tokens
        self._tokens_used: int = 0
        self.generation: Generation = generation
        self.generation_seconds_per_audio_second = generation_seconds_per_audio_second
        self.account_shape: AccountShape = "auto"
        self.allowed_origins: set[str] | None = None
        self.base_url: str = ""
        self.generations = 0
        self.requests: list[tuple[str, str]] = []
        self.faults = FaultPlan()
        self.hold = Gate()
        self.hold.set()  # not armed: arm with hold.reset(), release with hold.set()
        self.parked = 0
        self.created_at = datetime.now(UTC)
        self._hashes: dict[str, Audio] = {}
        self._files: dict[str, Audio] = {}  # file name (without .wav) -> audio
        self._closed = False
        self._finalizer = weakref.finalize(self, _clear, self._hashes, self._files)
        self._store = StateStore(state_dir, "mediamux-muzaic-")
        self._load()
        self.app: Starlette = self._build_app()

    # -- public helpers ----------------------------------------------------------------------------------

    @property
    def tokens(self) -> float:
        return self._tokens

    @tokens.setter
    def tokens(self, value: float) -> None:
        self._tokens = value
        self._save_account()

    @property
    def tokens_used(self) -> int:
        return self._tokens_used

    @tokens_used.setter
    def tokens_used(self, value: int) -> None:
        self._tokens_used = value
        self._save_account()

    @property
    def hashes(self) -> dict[str, Audio]:
        return self._hashes

    def audio_bytes(self, hash_: str) -> bytes:
        """The WAV a hash stands for (what audioFromHash would return)."""
        audio = self._hashes[hash_]
        return _render(audio.duration, audio.pieces)

    def close(self) -> None:
        """Forget every generated piece (a state folder keeps them) and let waiting generations finish."""
        self._closed = True
        self.hold.set()
        self._finalizer()

    # -- state folder ------------------------------------------------------------------------------------

    def _load(self) -> None:
        account = self._store.load("account.json")
        if isinstance(account, dict):
            try:
                tokens, used = float(account["tokens"]), int(account["tokens_used"])
                created = datetime.fromisoformat(account["created_at"])
            except (KeyError, TypeError, ValueError) as exc:
                logger.warning("Muzaic sandbox account record is damaged; starting a new account: %r", exc)
            else:
                self._tokens, self._tokens_used, self.created_at = tokens, used, created
        for record in self._store.load_all("audio"):
            try:
                audio = _audio_from_record(record)
            except (KeyError, TypeError, ValueError) as exc:
                logger.warning("Muzaic sandbox piece record is damaged and was skipped: %r", exc)
                continue
            self._hashes[audio.hash] = audio
        for record in self._store.load_all("results"):
            if not isinstance(record, dict):
                continue
            rendered = self._hashes.get(record.get("hash", ""))
            if rendered is not None and isinstance(record.get("name"), str):
                self._files[record["name"]] = rendered
        self._save_account()

    def _save_account(self) -> None:
        self._store.save(
            "account.json",
            {
                "tokens": self._tokens,
                "tokens_used": self._tokens_used,
                "created_at": self.created_at.isoformat(),
            },
        )

    def _commit(self, pieces: list[Audio], files: dict[str, Audio]) -> None:
        """Record a generation: its pieces and files first, then the tokens it cost."""
        # In that order so that a process stopped in between leaves a piece that was not paid for,
        # never tokens spent on a piece that does not exist.
        for audio in pieces:
            self._store.save(f"audio/{audio.hash}.json", _audio_record(audio))
        for name, audio in files.items():
            self._store.save(f"results/{name}.json", {"name": name, "hash": audio.hash})
        self._save_account()

    # -- app ---------------------------------------------------------------------------------------------

    def _build_app(self) -> Starlette:
        routes = [
            Route("/getTags", self._get_tags, methods=["GET"]),
            Route("/singleFile", self._single_file, methods=["POST"]),
            Route("/soundtrack", self._soundtrack, methods=["POST"]),
            Route("/soundtrack/{origin}", self._soundtrack, methods=["POST"]),
            Route("/audioFromHash", self._audio_from_hash, methods=["POST"]),
            Route("/accountDetails", self._account_details, methods=["GET"]),
            Route("/narrationToMuzaic", self._narration, methods=["POST"]),
            Route("/result/{day}/{name}", self._serve_file, methods=["GET"]),
        ]
        return Starlette(
            routes=routes,
            middleware=[
                Middleware(RequestLog, log=self.requests),
                Middleware(FaultMiddleware, plan=self.faults),
                Middleware(_KeyGate, emulator=self),
            ],
            exception_handlers={HTTPException: self._http_error},
        )

    def error(self, status: int, message: str) -> JSONResponse:
        return JSONResponse({"Error" if self.generation == "old" else "error": message}, status_code=status)

    async def _http_error(self, request: Request, exc: Exception) -> Response:
        if not isinstance(exc, HTTPException):  # pragma: no cover - registered for HTTPException only
            raise exc
        return self.error(exc.status_code, str(exc.detail))

    def authenticate(self, headers: Headers) -> tuple[int, str] | None:
        """None if the key is valid, else (status, message)."""
        key = headers.get(KEY_HEADER, "").strip()
        if not key:
            return (400 if self.generation == "old" else 401), "No MuzaicAPI Secret Key"
        if not hmac.compare_digest(key.encode(), self.master_key.encode()):
            return 401, "Invalid MuzaicAPI Secret Key"
        return None

    # -- validation --------------------------------------------------------------------------------------

    async def _body(self, request: Request, *, allow_empty: bool) -> dict[str, Any]:
        raw = await request.body()
        if not raw.strip():
            if allow_empty:
                return {}
            raise _ApiError(400, "Wrong request JSON Object")
        try:
            data = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise _ApiError(400, "Wrong request JSON Object") from exc
        if not isinstance(data, dict):
            raise _ApiError(400, "Wrong request JSON Object")
        return data

    def _duration(self, value: Any, where: str) -> float:
        limit = DURATION_MAX[self.generation]
        if not _is_number(value):
            raise _ApiError(400, f"{where} must be a number of seconds")
        if value < 1:
            raise _ApiError(400, f"{where} must be at least 1 second")
        if value > limit:
            raise _ApiError(400, f"{where} exceeds the limit of {limit} seconds")
        return float(value)

    def _tags(self, value: Any, where: str) -> tuple[list[int], list[str]]:
        if value is None:
            return [], []
        if not isinstance(value, list) or not all(
            isinstance(t, int) and not isinstance(t, bool) for t in value
        ):
            raise _ApiError(400, f"{where} must be an array of integers")
        warnings: list[str] = []
        known: list[int] = []
        for tag_id in value:
            tag = TAGS_BY_ID.get(tag_id)
            if tag is None or not tag.active:
                warnings.append(f"tag {tag_id} not found, ignored")
            elif tag_id not in known:
                known.append(tag_id)
        for i, a in enumerate(known):
            for b in known[i + 1 :]:
                if frozenset((a, b)) in _CONFLICT_SET:
                    warnings.append(f"tags {a} and {b} conflict")
        return known, warnings

    def _params(self, value: Any, where: str, tags: list[int]) -> _Sound:
        if value is None:
            return _Sound({}, False, [], tags)
        if not isinstance(value, dict):
            raise _ApiError(400, f"{where} must be an object")
        top = PARAM_MAX[self.generation]
        params: dict[str, int | list[list[float]]] = {}
        warnings: list[str] = []
        for name, raw in value.items():
            label = f"{where}.{name}"
            if name not in PARAM_NAMES:
                warnings.append(f"unknown param {name} ignored")
                continue
            if isinstance(raw, list):
                if name == "tempo":
                    raise _ApiError(400, f"{label}: keyframes are not allowed for tempo (tempo is static)")
                params[name] = _keyframes(raw, label, top)
            elif _is_number(raw) and float(raw).is_integer():
                if not 1 <= raw <= top:
                    raise _ApiError(400, f"{label} must be between 1 and {top}")
                params[name] = int(raw)
            else:
                raise _ApiError(400, f"{label} must be an integer 1-{top} or a keyframe array")
        return _Sound(params, True, warnings, tags)

    def _charge_check(self, cost: int) -> None:
        if cost > self._tokens + 1e-9:
            raise _ApiError(
                402,
                f"Insufficient tokens: this request needs {cost}, {math.floor(self._tokens)} available. "
                "Top up at adminpanel.muzaic.ai",
            )

    def _charge(self, cost: int) -> None:
        """Spend in memory; the handler records the spend with what it bought (``_commit``)."""
        self._charge_check(cost)  # again: a concurrent generation may have spent the balance meanwhile
        self._tokens -= cost
        self._tokens_used += cost
        self.generations += 1

    async def _wait(self, request: Request, audio_s: float) -> bool:
        """Model the render time; False if the client went away meanwhile."""
        factor = self.generation_seconds_per_audio_second
        if factor <= 0:
            return True
        deadline = self.now() + audio_s * factor

        async def finish() -> None:
            if not self.hold.is_set():
                await self.hold.wait()
            else:
                # The clock is injected (a fake one has no events to await), so it is sampled.
                while self.now() < deadline and not self._closed:  # noqa: ASYNC110
                    await anyio.sleep(WAIT_TICK_S)

        self.parked += 1
        try:
            stayed, _ = await wait_unless_client_leaves(request.receive, finish)
        finally:
            self.parked -= 1
        return stayed

    def _execution_time(self, audio_s: float) -> float:
        factor = self.generation_seconds_per_audio_second or MODELED_SECONDS_PER_AUDIO_SECOND
        return round(0.05 + audio_s * factor, 6)

    # -- output ------------------------------------------------------------------------------------------

    def _new_hash(self) -> str:
        return uuid.uuid4().hex

    def _store_file(self, audio: Audio, *, soundtrack: bool) -> str:
        file_id = uuid.uuid4().hex
        name = f"st_{file_id}" if soundtrack else file_id
        self._files[name] = audio
        return name

    def _mp3_field(self, request: Request, audio: Audio, name: str) -> str:
        if self.generation == "old":
            day = datetime.now(UTC).strftime("%Y-%m-%d")
            return f"{public_origin(self.base_url, request)}/result/{day}/{name}.wav"
        data = base64.b64encode(_render(audio.duration, audio.pieces)).decode("ascii")
        return f"data:audio/wav;base64,{data}"

    # -- routes ------------------------------------------------------------------------------------------

    async def _get_tags(self, request: Request) -> Response:
        return JSONResponse({"tags": [t.as_json() for t in TAGS], "tagsRelations": tag_relations()})

    async def _single_file(self, request: Request) -> Response:
        try:
            body = await self._body(request, allow_empty=True)
            duration = self._duration(body.get("duration", DEFAULT_DURATION), "duration")
            tags, tag_warnings = self._tags(body.get("tags"), "tags")
            sound = self._params(body.get("params"), "params", tags)
            normalize = body.get("normalize")
            if self.generation == "new" and normalize is not None and not isinstance(normalize, bool):
                raise _ApiError(400, "normalize must be a boolean")
            cost = math.ceil(duration - 1e-9)
            self._charge_check(cost)
            if not await self._wait(request, duration):
                return Response(status_code=499)
            self._charge(cost)
        except _ApiError as err:
            return self.error(err.status, err.message)
        hash_ = self._new_hash()
        piece = _piece(0.0, duration, hash_, sound)
        audio = Audio(hash_, duration, (piece,), "file")
        self._hashes[hash_] = audio
        name = self._store_file(audio, soundtrack=False)
        self._commit([audio], {name: audio})
        status = ["action: generate"]
        if not sound.given:
            status.append("no params object")
        status += tag_warnings + sound.warnings
        answer: dict[str, Any] = {"apiVersion": API_VERSION[self.generation]}
        answer["mp3"] = self._mp3_field(request, audio, name)
        if self.generation == "new":
            answer["audioDuration"] = duration
        else:
            answer["motiveId"] = 1 + seed_digest(hash_)[0] % 40
        answer.update(
            {
                "hash": hash_,
                "status": " | ".join(status),
                "tokensUsed": cost,
                "executionTime": self._execution_time(duration),
            }
        )
        return JSONResponse(answer)

    async def _soundtrack(self, request: Request) -> Response:
        origin = request.path_params.get("origin")
        if origin is not None and self.allowed_origins is not None and origin not in self.allowed_origins:
            return self.error(403, "API key is not valid for this origin")
        gen = self.generation
        try:
            body = await self._body(request, allow_empty=False)
            regions = body.get("regions")
            if not isinstance(regions, list) or not regions:
                raise _ApiError(400, "No regions list")
            normalize = body.get("normalize", "auto" if gen == "old" else False)
            if gen == "old" and normalize not in NORMALIZE_OLD:
                raise _ApiError(400, "normalize must be one of none, auto, high")
            if gen == "new" and not isinstance(normalize, bool):
                raise _ApiError(400, "normalize must be a boolean")
            plans = [self._region(i, region) for i, region in enumerate(regions)]
            total = max(p.offset + p.duration for p, _, _ in plans)
            cost = math.ceil(total - 1e-9)
            self._charge_check(cost)
            if not await self._wait(request, total):
                return Response(status_code=499)
            self._charge(cost)
        except _ApiError as err:
            return self.error(err.status, err.message)
        pieces: list[Piece] = []
        hashes: list[str] = []
        made: list[Audio] = []
        status: list[str] = []
        for i, (piece, action, messages) in enumerate(plans):
            hash_ = self._new_hash()
            if piece.seed == "":  # a fresh generation is seeded by its own hash
                piece = Piece(piece.offset, piece.duration, hash_, piece.note_s, piece.amplitude)
            elif piece.seed is not None and action == "regenerate":
                piece = Piece(
                    piece.offset, piece.duration, f"{piece.seed}/regen/{hash_}", piece.note_s, piece.amplitude
                )
            pieces.append(piece)
            hashes.append(hash_)
            self._hashes[hash_] = Audio(hash_, piece.duration, (_shift(piece, 0.0),), "region")
            made.append(self._hashes[hash_])
            status.append(f"region {i} action: {action}")
            status += [f"region {i} {m}" for m in messages]
        status.append(f"soundtrack normalized: {str(normalize).lower() if gen == 'new' else normalize}")
        audio = Audio("", total, tuple(pieces), "soundtrack")
        name = self._store_file(audio, soundtrack=True)
        audio.hash = name.removeprefix("st_")
        self._hashes[audio.hash] = audio
        self._commit([*made, audio], {name: audio})
        mp3 = self._mp3_field(request, audio, name)
        if gen == "old":
            return JSONResponse(
                {
                    "apiVersion": API_VERSION[gen],
                    "mp3": mp3,
                    "regions": [{"number": i, "hash": h} for i, h in enumerate(hashes)],
                    "status": " | ".join(status),
                    "tokensUsed": cost,
                    "executionTime": self._execution_time(total),
                }
            )
        return JSONResponse(
            {
                "apiVersion": API_VERSION[gen],
                "status": status,
                "regions": len(hashes),
                "regionHashes": hashes,
                "audioDuration": total,
                "mp3": mp3,
                "tokensUsed": cost,
            }
        )

    def _region(self, index: int, region: Any) -> tuple[Piece, str, list[str]]:
        """Validate one region; the piece's seed is "" for a fresh generation, None for silence."""
        gen = self.generation
        where = f"region {index}"
        if not isinstance(region, dict):
            raise _ApiError(400, f"{where}: Wrong request JSON Object")
        raw_start = region.get("time")
        if not _is_number(raw_start) or raw_start < 0:
            raise _ApiError(400, f"{where}: time is required and must be a number of seconds >= 0")
        start = float(raw_start)
        if "duration" not in region:
            raise _ApiError(400, f"{where}: duration is required")
        duration = self._duration(region["duration"], f"{where}: duration")
        action = region.get("action")
        if action is None:
            if gen == "new":
                raise _ApiError(400, f"{where}: action is required")
            action = "generate"
        if action not in ACTIONS[gen]:
            raise _ApiError(400, f"{where}: action must be one of {', '.join(ACTIONS[gen])}")
        method = region.get("method")
        if method is not None and method not in METHODS[gen]:
            raise _ApiError(400, f"{where}: method must be one of {', '.join(METHODS[gen])}")
        tags, messages = self._tags(region.get("tags"), f"{where}: tags")
        sound = self._params(region.get("params"), f"{where}: params", tags)
        messages += sound.warnings
        if action == "silence":
            return Piece(start, duration, None), action, messages
        if action in SOURCE_ACTIONS:
            source_hash = region.get("sourceHash")
            if not isinstance(source_hash, str) or not source_hash:
                raise _ApiError(400, f"{where}: sourceHash is required for action {action}")
            source = self._hashes.get(source_hash)
            if source is None:
                raise _ApiError(400, f"{where}: sourceHash not found")
            base = source.primary()
            note_s, amplitude = base.note_s, base.amplitude
            if sound.given:
                tuned = _piece(0.0, 1.0, "", sound)
                note_s, amplitude = tuned.note_s, tuned.amplitude
            return Piece(start, duration, base.seed, note_s, amplitude), action, messages
        if not sound.given:
            messages.insert(0, "no params object")
        return _piece(start, duration, "", sound), action, messages

    async def _audio_from_hash(self, request: Request) -> Response:
        try:
            body = await self._body(request, allow_empty=False)
            source_hash = body.get("sourceHash", body.get("hash"))
            if not isinstance(source_hash, str) or not source_hash:
                raise _ApiError(400, "No sourceHash")
            source = self._hashes.get(source_hash)
            if source is None:
                raise _ApiError(404, "Hash not found")
            cost = math.ceil(source.duration - 1e-9)
            self._charge_check(cost)
            if not await self._wait(request, source.duration):
                return Response(status_code=499)
            self._charge(cost)
        except _ApiError as err:
            return self.error(err.status, err.message)
        name = self._store_file(source, soundtrack=True)
        self._commit([], {name: source})
        mp3 = self._mp3_field(request, source, name)
        execution = self._execution_time(source.duration)
        if self.generation == "old":
            return JSONResponse(
                {"apiVersion": API_VERSION["old"], "mp3": mp3, "tokensUsed": cost, "executionTime": execution}
            )
        return JSONResponse(
            {
                "apiVersion": API_VERSION["new"],
                "mp3": mp3,
                "audioDuration": source.duration,
                "hash": source_hash,
                "status": "action: regenerate",
                "tokensUsed": cost,
                "executionTime": execution,
            }
        )

    async def _account_details(self, request: Request) -> Response:
        key = request.headers.get(KEY_HEADER, "").strip()
        shape = self.account_shape
        if shape == "auto":
            shape = self.generation
        remaining = max(0, math.floor(self._tokens + 1e-9))
        if shape == "old":
            return JSONResponse(
                {
                    "apiVersion": API_VERSION["old"],
                    "secretKey": key,
                    "freeTokensAvailable": remaining,
                    "totalUsedTokens": self.tokens_used,
                    "currentBalance": self.tokens_used,
                }
            )
        if shape == "mcp":
            return JSONResponse({"balance": remaining, "used": self.tokens_used, "secretKey": key})
        created = self.created_at.replace(microsecond=0)
        return JSONResponse(
            {
                "accountId": 1,
                "name": "mediamux sandbox",
                "tokensRemaining": remaining,
                "tokensUsed": self.tokens_used,
                "plan": "sandbox",
                "expiresAt": (created + timedelta(days=365)).isoformat().replace("+00:00", "Z"),
                "createdAt": created.isoformat().replace("+00:00", "Z"),
                "secretKey": key,
            }
        )

    async def _narration(self, request: Request) -> Response:
        try:
            body = await self._body(request, allow_empty=False)
        except _ApiError as err:
            return self.error(err.status, err.message)
        text = body.get("text")
        if not isinstance(text, str) or not text.strip():
            return self.error(400, "No text")
        return JSONResponse({"apiVersion": API_VERSION[self.generation], **narration_prediction(text)})

    async def _serve_file(self, request: Request) -> Response:
        name = request.path_params["name"]
        stem, dot, ext = name.rpartition(".")
        audio = self._files.get(stem) if dot and ext == "wav" else None
        if audio is None:
            return self.error(404, "File not found")
        return Response(_render(audio.duration, audio.pieces), media_type="audio/wav")


def _clear(*stores: dict[str, Audio]) -> None:
    for store in stores:
        store.clear()


def _audio_record(audio: Audio) -> dict[str, Any]:
    return {
        "hash": audio.hash,
        "duration": audio.duration,
        "kind": audio.kind,
        "pieces": [[p.offset, p.duration, p.seed, p.note_s, p.amplitude] for p in audio.pieces],
    }


def _audio_from_record(data: dict[str, Any]) -> Audio:
    kind = data["kind"]
    if kind not in ("file", "region", "soundtrack") or not re.fullmatch(r"[0-9a-f]{32}", data["hash"]):
        raise ValueError(f"bad piece record {data.get('hash')!r}")
    pieces = tuple(
        Piece(float(offset), float(duration), None if seed is None else str(seed), float(note_s), float(amp))
        for offset, duration, seed, note_s, amp in data["pieces"]
    )
    return Audio(data["hash"], float(data["duration"]), pieces, kind)


def _keyframes(raw: list[Any], label: str, top: int) -> list[list[float]]:
    if not raw:
        raise _ApiError(400, f"{label}: keyframe array is empty")
    frames: list[list[float]] = []
    for i, frame in enumerate(raw):
        if not isinstance(frame, list) or len(frame) != 2:
            raise _ApiError(400, f"{label}: keyframe {i} must be [position, value]")
        position, value = frame
        if not _is_number(position) or not 0 <= position <= 100:
            raise _ApiError(400, f"{label}: keyframe {i} position must be a number from 0 to 100")
        if not (_is_number(value) and float(value).is_integer() and 1 <= value <= top):
            raise _ApiError(400, f"{label}: keyframe {i} value must be an integer from 1 to {top}")
        if frames and position < frames[-1][0]:
            raise _ApiError(400, f"{label}: keyframe positions must be in ascending order")
        frames.append([float(position), float(value)])
    if frames[0][0] != 0:
        raise _ApiError(400, f"{label}: first keyframe must be at 0")
    if frames[-1][0] != 100:
        raise _ApiError(400, f"{label}: last keyframe must be at 100")
    return frames


def _piece(offset: float, duration: float, seed: str, sound: _Sound) -> Piece:
    tempo = sound.mean("tempo")
    intensity = sound.mean("intensity")
    return Piece(
        offset,
        duration,
        seed,
        note_s=round(max(0.15, 1.0 - (tempo - 1) * 0.09), 4),
        amplitude=round(min(0.95, 0.2 + intensity * 0.075), 4),
    )


def _shift(piece: Piece, offset: float) -> Piece:
    return Piece(offset, piece.duration, piece.seed, piece.note_s, piece.amplitude)


_MOOD_WORDS: dict[str, dict[str, int]] = {
    "calm": {"intensity": -3, "tempo": -3},
    "peaceful": {"intensity": -3, "tempo": -2},
    "slow": {"tempo": -3},
    "fast": {"tempo": 3},
    "energetic": {"intensity": 3, "tempo": 2},
    "exciting": {"intensity": 3, "variance": 2},
    "dark": {"tone": -3},
    "sad": {"tone": -2, "tempo": -1},
    "happy": {"tone": 3},
    "bright": {"tone": 3},
    "complex": {"rhythm": 3, "variance": 2},
    "simple": {"rhythm": -3},
}


def narration_prediction(text: str) -> dict[str, Any]:
    words = set(re.findall(r"[a-z][a-z-]*", text.lower()))
    lowered = text.lower()
    scored: list[tuple[float, Tag]] = []
    for tag in TAGS:
        if not tag.active:
            continue
        if re.search(rf"\b{re.escape(tag.name)}\b", lowered):
            score = 0.9
        else:
            score = 0.05 + seed_digest(f"{text}|{tag.id}")[0] / 255 * 0.4
        scored.append((round(score, 4), tag))
    scored.sort(key=lambda st: (-st[0], st[1].id))
    top = scored[:5]
    chosen = [tag.id for score, tag in top if score >= 0.5][:3]
    prediction: dict[str, list[float]] = {}
    params: dict[str, int] = {}
    for name in PARAM_NAMES:
        digest = seed_digest(f"{text}|{name}")
        centre = 5 + (digest[0] % 3) - 1 + sum(_MOOD_WORDS.get(w, {}).get(name, 0) for w in words)
        centre = max(1, min(10, centre))
        weights = [1.0 / (1 + abs(v - centre)) ** 2 for v in range(1, 11)]
        total = sum(weights)
        prediction[name] = [round(w / total, 4) for w in weights]
        params[name] = centre
    return {
        "input_text": text,
        "tags_prediction": [[tag.name, score] for score, tag in top],
        "tags": chosen,
        "params_prediction": prediction,
        "params": params,
    }


# ---------------------------------------------------------------------------------------------------------
# Middleware
# ---------------------------------------------------------------------------------------------------------


class _KeyGate:
    """`MuzaicAPI-Secret-Key` on every API path; result files are public."""

    def __init__(self, app: ASGIApp, emulator: MuzaicEmulator) -> None:
        self.app = app
        self.emulator = emulator

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path", "").startswith("/result/"):
            await self.app(scope, receive, send)
            return
        failure = self.emulator.authenticate(Headers(scope=scope))
        if failure is not None:
            await self.emulator.error(*failure)(scope, receive, send)
            return
        await self.app(scope, receive, send)


__all__ = ["TAGS", "Audio", "MuzaicEmulator", "Piece", "Tag", "narration_prediction", "tag_relations"]
