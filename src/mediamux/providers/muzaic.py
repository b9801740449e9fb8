"""Muzaic client: synchronous music generation for video, tags, account.

Contract: ``shared/providers/muzaic-api.txt`` and NOTES §2. Auth is the
``MuzaicAPI-Secret-Key`` header; generation blocks until the audio is rendered (minutes for long
tracks); 1 token = 1 second of audio. Two response generations exist and both are accepted:
the older one returns ``mp3`` as a URL with ``hash`` / ``regions[].hash``, the newer one returns
``mp3`` as base64 data with ``regionHashes`` and ``audioDuration``. ``accountDetails`` has three
documented shapes; its ``secretKey`` echo is dropped here, at the edge.
"""

from __future__ import annotations

import base64
import binascii
import logging
import re
from typing import Any, Literal

from pydantic import BaseModel, Field

from mediamux.providers._util import number
from mediamux.providers.cost import Cost, reported_amount
from mediamux.providers.transport import Retry, Transport

logger = logging.getLogger("mediamux.providers.muzaic")

# Long tracks come back as base64 in one JSON body (~35 MiB for 20 minutes of 192 kbps MP3).
MAX_GENERATION_BYTES = 64 * 1024 * 1024
# Generation is synchronous upstream: the read timeout must cover rendering a long track.
GENERATION_TIMEOUT_S = 600.0
_SECRET_FIELD = re.compile(r"secret|key|token$", re.IGNORECASE)
# Notes in Muzaic's status that only repeat the request ("action: generate", "no params object",
# "soundtrack normalized: auto"; per region too): nothing its sender does not know, so not warnings.
_ECHO = re.compile(
    r"(region \d+ )?(action: \w+|no params object|normali[sz]e: \S+)|soundtrack normali[sz]ed: \S+",
    re.IGNORECASE,
)


class Tag(BaseModel):
    id: int
    name: str
    category_id: int | None = None
    bonuses: dict[str, int] = Field(default_factory=dict, description="Parameter nudges the tag applies")


class TagConflict(BaseModel):
    tags: tuple[int, int]
    value: float = Field(description="Negative: the two tags pull against each other")


class TagCatalog(BaseModel):
    tags: list[Tag]
    conflicts: list[TagConflict]

    def conflicts_among(self, ids: list[int]) -> list[TagConflict]:
        chosen = set(ids)
        return [c for c in self.conflicts if c.tags[0] in chosen and c.tags[1] in chosen and c.value < 0]


class Audio(BaseModel):
    url: str | None = None
    data: bytes | None = Field(None, repr=False, exclude=True)
    media_type: str = "audio/mpeg"


class Generation(BaseModel):
    audio: Audio
    hash: str | None = None
    region_hashes: list[str] = Field(default_factory=list)
    audio_duration_s: float | None = None
    tokens_used: float | None = None
    status: list[str] = Field(
        default_factory=list,
        description="Muzaic's warnings and notes about the request, without echoes of it",
    )
    execution_time_s: float | None = None
    api_version: str | None = None

    @property
    def cost(self) -> Cost:
        return Cost(tokens=self.tokens_used, source="body" if self.tokens_used is not None else None)


class Account(BaseModel):
    tokens_remaining: float | None = None
    tokens_used: float | None = Field(
        None, description="This period, or lifetime where only that is reported"
    )
    free_tokens: float | None = None
    current_balance: float | None = None
    plan: str | None = None
    name: str | None = None
    account_id: str | None = None
    expires_at: str | None = None


def status_notes(status: Any) -> list[str]:
    """Muzaic's ``status`` (one string of " | "-separated notes, or a list of them) as its notes,
    without those that only echo the request."""
    notes = []
    for item in status if isinstance(status, list) else [status]:
        for part in str(item or "").split(" | "):
            note = part.strip()
            if note and not _ECHO.fullmatch(note):
                notes.append(note)
    return notes


def _int(value: Any) -> int | None:
    read = number(value)
    return int(read) if read is not None else None


def parse_tags(data: Any) -> TagCatalog:
    data = data if isinstance(data, dict) else {"tags": data}
    tags = []
    for raw in data.get("tags") or []:
        if not isinstance(raw, dict):
            continue
        tag_id = _int(raw.get("id"))
        if tag_id is None or str(raw.get("active", "1")) in ("0", "false", "False"):
            continue
        bonuses = {
            k.removesuffix("_bonus"): b
            for k, v in raw.items()
            if k.endswith("_bonus") and (b := _int(v)) is not None
        }
        tags.append(
            Tag(
                id=tag_id,
                name=str(raw.get("name") or tag_id),
                category_id=_int(raw.get("tagCategoryId")),
                bonuses=bonuses,
            )
        )
    conflicts: dict[tuple[int, int], float] = {}
    # Documented as {"1": {"2": -1}}; the official MCP server reads a list of {tag1, tag2, value}.
    relations = data.get("tagsRelations") or data.get("tagRelations") or {}
    if isinstance(relations, dict):
        for a, others in relations.items():
            for b, value in (others or {}).items() if isinstance(others, dict) else []:
                _add_relation(conflicts, a, b, value)
    elif isinstance(relations, list):
        for item in relations:
            if isinstance(item, dict):
                _add_relation(conflicts, item.get("tag1"), item.get("tag2"), item.get("value"))
    return TagCatalog(
        tags=tags, conflicts=[TagConflict(tags=k, value=v) for k, v in sorted(conflicts.items())]
    )


def _add_relation(into: dict[tuple[int, int], float], a: Any, b: Any, value: Any) -> None:
    x, y, v = _int(a), _int(b), number(value)
    if x is None or y is None or v is None or x == y:
        return
    into[(min(x, y), max(x, y))] = v


def _audio(data: dict[str, Any]) -> Audio | None:
    for key in ("wav", "mp3", "url", "audioUrl", "audio"):
        value = data.get(key)
        if not isinstance(value, str) or not value:
            continue
        media_type = "audio/wav" if key == "wav" else "audio/mpeg"
        if value.startswith(("http://", "https://")):
            return Audio(url=value, media_type=media_type)
        header, _, payload = value.partition(",") if value.startswith("data:") else ("", "", value)
        if header:
            media_type = header.removeprefix("data:").split(";")[0] or media_type
        try:
            return Audio(data=base64.b64decode(payload, validate=False), media_type=media_type)
        except (binascii.Error, ValueError):
            return None
    return None


def _region_hashes(data: dict[str, Any]) -> list[str]:
    hashes = data.get("regionHashes")
    if isinstance(hashes, list):
        return [str(h) for h in hashes if h]
    regions = data.get("regions")
    if isinstance(regions, list):
        ordered = sorted(
            (r for r in regions if isinstance(r, dict)), key=lambda r: _int(r.get("number")) or 0
        )
        return [str(r["hash"]) for r in ordered if r.get("hash")]
    return []


def parse_account(data: Any) -> Account:
    data = {
        k: v
        for k, v in (data if isinstance(data, dict) else {}).items()
        if not _SECRET_FIELD.search(k)
        or k in ("tokensRemaining", "tokensUsed", "totalUsedTokens", "freeTokensAvailable")
    }
    return Account(
        tokens_remaining=number(data.get("tokensRemaining", data.get("balance", data.get("tokens")))),
        tokens_used=number(data.get("tokensUsed", data.get("totalUsedTokens", data.get("used")))),
        free_tokens=number(data.get("freeTokensAvailable")),
        current_balance=number(data.get("currentBalance")),
        plan=str(data["plan"]) if data.get("plan") is not None else None,
        name=str(data["name"]) if data.get("name") is not None else None,
        account_id=str(data["accountId"]) if data.get("accountId") is not None else None,
        expires_at=str(data["expiresAt"]) if data.get("expiresAt") is not None else None,
    )


class MuzaicClient:
    provider = "muzaic"

    def __init__(self, transport: Transport) -> None:
        self.t = transport
        # Which of Muzaic's two documented API generations answers, learned from its first generation:
        # "old" (mp3 as a URL, up to 1200 s) or "new" (apiVersion, base64 audio, up to 300 s).
        self.generation: Literal["old", "new"] | None = None

    @property
    def origin(self) -> str:
        """Where this provider serves from: its own output URLs are trusted for downloads."""
        return self.t.origin

    def scrub(self, text: str, limit: int = 300) -> str:
        """Provider text made safe to relay: no key in any form, cut to ``limit`` characters."""
        return self.t.scrub(text, limit)

    async def get_tags(self) -> TagCatalog:
        return parse_tags(await self.t.get_json("getTags", operation="list_tags"))

    async def account(self) -> Account:
        return parse_account(await self.t.get_json("accountDetails", operation="get_account"))

    async def single_file(
        self, *, duration: float, tags: list[int], params: dict[str, Any], normalize: Any = None
    ) -> Generation:
        body: dict[str, Any] = {"duration": duration, "tags": tags}
        if params:
            body["params"] = params
        if normalize is not None:
            body["normalize"] = normalize
        return await self._generate("singleFile", body, "generate_music")

    async def soundtrack(self, *, regions: list[dict[str, Any]], normalize: Any = None) -> Generation:
        body: dict[str, Any] = {"regions": regions}
        if normalize is not None:
            body["normalize"] = normalize
        return await self._generate("soundtrack", body, "create_soundtrack")

    async def audio_from_hash(self, source_hash: str) -> Generation:
        # The docs name the field sourceHash; the official MCP server sends hash. Send both.
        return await self._generate(
            "audioFromHash", {"sourceHash": source_hash, "hash": source_hash}, "regenerate"
        )

    async def _generate(self, path: str, body: dict[str, Any], operation: str) -> Generation:
        # Never retried once sent: each generation is billed in tokens.
        response = await self.t.request(
            "POST",
            path,
            operation=operation,
            retry=Retry.IF_NOT_SENT,
            json_body=body,
            max_bytes=MAX_GENERATION_BYTES,
            read_timeout=GENERATION_TIMEOUT_S,
        )
        data = self.t.parse_json(response, operation)
        if not isinstance(data, dict):
            raise self.t.malformed(operation, "expected an object")
        version = str(data.get("apiVersion") or "")
        newer = "audioDuration" in data or (version != "" and not version.startswith(("0.", "1.")))
        self.generation = "new" if newer else "old"
        audio = _audio(data)
        if audio is None:
            error = self.t.malformed(operation, "no audio (mp3, wav or url) in the answer")
            error.maybe_sent = True
            raise error
        status = data.get("status")
        # The music is rendered and paid for: a hash carrying the key is dropped, not the result.
        hashes = [str(data.get("hash") or data.get("soundtrackHash") or ""), *_region_hashes(data)]
        if any(self.t.reveals_key(h) for h in hashes):
            logger.warning("muzaic %s: a hash in the answer contains the API key; hashes dropped", operation)
            hashes = [""]
        return Generation(
            audio=audio,
            hash=hashes[0] or None,
            region_hashes=hashes[1:],
            audio_duration_s=number(data.get("audioDuration", data.get("duration"))),
            tokens_used=reported_amount(data.get("tokensUsed"), "tokensUsed", "Muzaic"),
            status=[self.t.scrub(note, 200) for note in status_notes(status)],
            execution_time_s=number(data.get("executionTime")),
            api_version=str(data["apiVersion"]) if data.get("apiVersion") else None,
        )
