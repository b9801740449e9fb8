"""Muzaic tools: music for video — single files, multi-region soundtracks, regeneration, tags, account."""

from __future__ import annotations

import itertools
from typing import Annotated, Any, Literal

from mcp.server.mcpserver import Context
from mcp_types import CallToolResult
from pydantic import AfterValidator, BaseModel, Field, WithJsonSchema, model_validator
from typing_extensions import TypeAliasType

from mediamux.errors import InputError
from mediamux.jobs.models import JobResult
from mediamux.jobs.muzaic import GenerateMusicArgs, MusicResult, RegenerateArgs, SoundtrackArgs
from mediamux.providers.muzaic import Account, MuzaicClient, TagCatalog
from mediamux.tools.base import (
    NewJob,
    Toolset,
    WaitS,
    job_result,
    model_result,
    progress_of,
    provider_client,
    services,
)
from mediamux.tools.pages import Column, Cursor, fit, next_offset, offset_of, span
from mediamux.tools.schemas import opaque

toolset = Toolset(
    id="muzaic",
    title="Muzaic",
    description="music for video, single pieces or soundtracks",
    mark=("M6 1h9v3H9v8a3 3 0 1 1-3-3z", "#0891b2"),  # a note: music
)

MAX_DURATION_S = 1200  # singleFile's limit in the older documents
# The newer OpenAPI document allows 300 s; which applies is learned from Muzaic's own answers.
MAX_DURATION_BY_GENERATION = {"old": 1200, "new": 300}

Level = Annotated[int, Field(ge=1, le=9)]
HASH_RE = r"^[A-Za-z0-9_-]{8,128}$"


def _check_keyframes(frames: list[tuple[float, int]]) -> list[tuple[float, int]]:
    if len(frames) < 2:
        raise ValueError("a keyframe curve needs at least two points: [[0, value], …, [100, value]]")
    positions = [p for p, _ in frames]
    if positions[0] != 0 or positions[-1] != 100:
        raise ValueError(
            f"keyframes must start at 0 % and end at 100 % (got {positions[0]:g} … {positions[-1]:g})"
        )
    if any(b <= a for a, b in itertools.pairwise(positions)):
        raise ValueError("keyframe positions must increase from 0 to 100")
    return frames


Keyframes = Annotated[
    list[tuple[Annotated[float, Field(ge=0, le=100)], Level]],
    AfterValidator(_check_keyframes),
    Field(min_length=2, max_length=100),
]
# A named alias: its schema is written once under $defs and referenced by each of the four parameters
# that take one, instead of being repeated in full at every use. It is advertised in a shorter form
# than the validators above check: the shape and bounds of a keyframe are in its description.
Curve = TypeAliasType(
    "Curve",
    Annotated[
        Level | Keyframes,
        WithJsonSchema(
            {
                # anyOf rather than a list of types, which some hosts' schema converters reject.
                "anyOf": [
                    {"type": "integer", "minimum": 1, "maximum": 9},
                    # Its shape is kept: an invalid point is named by its place in the curve.
                    {
                        "type": "array",
                        "items": {"type": "array", "prefixItems": [{"type": "number"}, {"type": "integer"}]},
                    },
                ],
                "description": "Level 1–9, or keyframes [[percent, level], …] from 0 to 100",
            }
        ),
    ],
)
Tempo = Annotated[Level, Field(description="1 very slow – 9 very fast, constant")]
TagIds = Annotated[
    list[Annotated[int, Field(ge=1)]], Field(max_length=10, description="Tag ids from muzaic_list_tags")
]
Normalize = Annotated[
    Literal["none", "auto", "high"] | bool | None,
    Field(description="Loudness normalisation"),
]


Intensity = Annotated[Curve, Field(description="1 calm – 9 high energy")]
Rhythm = Annotated[Curve, Field(description="1 simple – 9 complex")]
Tone = Annotated[Curve, Field(description="1 dark – 9 bright")]
Variance = Annotated[Curve, Field(description="1 repetitive – 9 diverse")]


class Params(BaseModel):
    intensity: Intensity | None = None
    tempo: Tempo | None = None
    rhythm: Rhythm | None = None
    tone: Tone | None = None
    variance: Variance | None = None

    def wire(self) -> dict[str, Any]:
        return {
            k: (v if isinstance(v, int) else [list(f) for f in v])
            for k, v in self.model_dump().items()
            if v is not None
        }


class Region(BaseModel):
    time: Annotated[float, Field(ge=0, description="Start, seconds")]
    duration: Annotated[float, Field(gt=0, le=MAX_DURATION_S, description="Seconds")]
    tags: TagIds | None = None
    # Advertised as one sentence: the five levels' own schemas would make the soundtrack tool the
    # largest in the catalog, for what muzaic_generate_music already spells out. Params validates them.
    params: Annotated[
        Params | None,
        WithJsonSchema(
            {
                "type": "object",
                "description": "intensity, tempo, rhythm, tone, variance as muzaic_generate_music takes "
                "them: each a level 1–9 or keyframes [[percent, level], …] (tempo a level only)",
            }
        ),
    ] = None
    source_hash: Annotated[str | None, Field(pattern=HASH_RE), opaque("Hash of earlier music")] = None
    action: Literal["generate", "copy", "regenerate", "extend", "silence"] = "generate"
    method: Literal["strict", "auto_adjust", "adjust_start", "adjust_end", "smart"] | None = None

    @model_validator(mode="after")
    def _needs_source(self) -> Region:
        if self.action in ("copy", "regenerate", "extend") and not self.source_hash:
            raise ValueError(f"action {self.action!r} needs source_hash (the hash of earlier music)")
        return self

    def wire(self) -> dict[str, Any]:
        region: dict[str, Any] = {"time": self.time, "duration": self.duration, "action": self.action}
        if self.tags:
            region["tags"] = self.tags
        if self.params and (params := self.params.wire()):
            region["params"] = params
        if self.source_hash:
            region["sourceHash"] = self.source_hash
        if self.method:
            region["method"] = self.method
        return region


def client_of(ctx: Context) -> MuzaicClient:
    return provider_client(ctx, "muzaic", MuzaicClient)


async def _catalog(ctx: Context) -> TagCatalog:
    """Tags change rarely and are free to read: fetched once per server process."""
    return await services(ctx).memoized("muzaic_tags", client_of(ctx).get_tags)


async def _tag_warnings(ctx: Context, tag_lists: list[list[int]]) -> list[str]:
    """Unknown tags are refused before anything is paid for; conflicting ones are reported."""
    if not any(tag_lists):
        return []
    catalog = await _catalog(ctx)
    known = {t.id: t.name for t in catalog.tags}
    unknown = sorted({t for tags in tag_lists for t in tags if t not in known})
    if unknown:
        raise InputError(
            f"unknown Muzaic tag id(s) {unknown}",
            arguments=("regions" if len(tag_lists) > 1 else "tags",),
            advice=f"muzaic_list_tags lists the {len(known)} valid ids",
        )
    warnings = []
    for tags in tag_lists:
        for conflict in catalog.conflicts_among(tags):
            a, b = conflict.tags
            warnings.append(f"tags {known[a]} ({a}) and {known[b]} ({b}) conflict; the result may be muddled")
    return warnings


class TagPage(TagCatalog):
    total: int | None = Field(None, description="Tags in the catalog")
    next_cursor: str | None = None


TAG_COLUMNS = (Column("id", 6), Column("name", 28), Column("category", 8), Column("conflicts with", 40))


@toolset.tool(title="List Muzaic tags", read_only=True)
async def muzaic_list_tags(ctx: Context, cursor: Cursor = None) -> Annotated[CallToolResult, TagPage]:
    """Lists Muzaic's music tags (style, mood, genre, cultural) with their ids and the tags each
    conflicts with. Free; read once per server session."""
    start = offset_of("muzaic_tags", cursor)
    catalog = await _catalog(ctx)
    tags = catalog.tags
    clashes: dict[int, list[int]] = {}
    for c in catalog.conflicts:
        if c.value < 0:
            clashes.setdefault(c.tags[0], []).append(c.tags[1])
            clashes.setdefault(c.tags[1], []).append(c.tags[0])
    window = tags[start:]
    shown = fit(
        head=lambda n: (
            f"Muzaic: {len(tags)} tags" + span(start, n, len(tags)) + "; avoid a tag's conflicts in one piece"
        ),
        columns=TAG_COLUMNS,
        rows=[
            (t.id, t.name, t.category_id, ", ".join(map(str, sorted(clashes.get(t.id, []))))) for t in window
        ],
        next_cursor=next_offset("muzaic_tags", start, len(tags)),
    )
    page = window[: shown.count]
    ids = {t.id for t in page}
    view = TagPage(
        tags=page,
        # Every relation that names a tag of this page: across the pages, every relation is given.
        conflicts=[c for c in catalog.conflicts if c.tags[0] in ids or c.tags[1] in ids],
        total=len(tags),
        next_cursor=shown.next_cursor,
    )
    return shown.result(view)


async def _run(
    ctx: Context, operation: str, args: BaseModel, warnings: list[str], wait_s: float, new_job: bool
) -> CallToolResult:
    client_of(ctx)
    view = await services(ctx).engine.run(
        "muzaic",
        operation,
        args,
        options={"warnings": warnings},
        new_job=new_job,
        wait_s=wait_s,
        progress=progress_of(ctx),
    )
    return job_result(view, title=f"Muzaic {operation.replace('_', ' ')}")


@toolset.tool(title="Generate music with Muzaic", read_only=False)
async def muzaic_generate_music(
    duration: Annotated[
        int,
        Field(ge=1, le=MAX_DURATION_S, description="Seconds (at most 300 on Muzaic's newer API)"),
    ],
    ctx: Context,
    tags: TagIds | None = None,
    intensity: Intensity | None = None,
    tempo: Tempo | None = None,
    rhythm: Rhythm | None = None,
    tone: Tone | None = None,
    variance: Variance | None = None,
    normalize: Normalize = None,
    wait_s: WaitS = 45,
    new_job: NewJob = False,
) -> Annotated[CallToolResult, JobResult[MusicResult]]:
    """Composes music with Muzaic from tags and the levels or keyframe curves below, and saves the audio
    file. Paid in Muzaic tokens, 1 per second of audio; renders in about 5–10 s per minute."""
    generation = client_of(ctx).generation
    if generation is not None and duration > MAX_DURATION_BY_GENERATION[generation]:
        raise InputError(
            f"at most {MAX_DURATION_BY_GENERATION[generation]} seconds on the Muzaic API this server talks "
            f"to (its {generation}er generation), got {duration}",
            arguments=("duration",),
            advice="split longer music into a soundtrack, or ask for less",
        )
    params = Params(intensity=intensity, tempo=tempo, rhythm=rhythm, tone=tone, variance=variance).wire()
    warnings = await _tag_warnings(ctx, [tags or []])
    args = GenerateMusicArgs(duration=duration, tags=tags or [], params=params, normalize=normalize)
    return await _run(ctx, "generate_music", args, warnings, wait_s, new_job)


@toolset.tool(title="Create a Muzaic soundtrack", read_only=False)
async def muzaic_create_soundtrack(
    regions: Annotated[list[Region], Field(min_length=1, max_length=50)],
    ctx: Context,
    normalize: Normalize = None,
    wait_s: WaitS = 45,
    new_job: NewJob = False,
) -> Annotated[CallToolResult, JobResult[MusicResult]]:
    """Composes a soundtrack of timed regions with Muzaic: each generates music, copies, extends or
    regenerates earlier music (source_hash), or is silence; gaps are silent. Paid in Muzaic tokens, 1
    per second of audio."""
    ordered = sorted(regions, key=lambda r: r.time)
    for before, after in itertools.pairwise(ordered):
        if after.time < before.time + before.duration - 1e-6:
            raise InputError(
                f"overlap: one starts at {after.time:g} s before the previous one ends at "
                f"{before.time + before.duration:g} s",
                arguments=("regions",),
            )
    warnings = await _tag_warnings(ctx, [r.tags or [] for r in regions])
    args = SoundtrackArgs(regions=[r.wire() for r in ordered], normalize=normalize)
    return await _run(ctx, "create_soundtrack", args, warnings, wait_s, new_job)


@toolset.tool(title="Regenerate Muzaic music from a hash", read_only=False)
async def muzaic_regenerate(
    hash: Annotated[str, Field(pattern=HASH_RE), opaque("Hash from an earlier result")],
    ctx: Context,
    wait_s: WaitS = 45,
    new_job: NewJob = False,
) -> Annotated[CallToolResult, JobResult[MusicResult]]:
    """Renders again the music behind a hash from an earlier Muzaic result and saves the audio file. Paid
    in Muzaic tokens, 1 per second of audio."""
    return await _run(ctx, "regenerate", RegenerateArgs(hash=hash), [], wait_s, new_job)


@toolset.tool(title="Muzaic account", read_only=True)
async def muzaic_get_account(ctx: Context) -> Annotated[CallToolResult, Account]:
    """Reads the Muzaic account: tokens remaining and used, plan (never its secret key). Free."""
    account = await client_of(ctx).account()
    remaining = f"{account.tokens_remaining:g}" if account.tokens_remaining is not None else "unknown"
    return model_result(account, f"Muzaic: {remaining} tokens remaining")
