"""Results that fit: the size of every list and search result, and of the listing resources, against
the sandbox seeded with realistic amounts of data, before and after paging.

"After" is the first page each tool or resource returns today. "Before" is the same items as the
result used to carry them (``model_result``: a summary line and the whole list as JSON in the text
block, the same JSON again as ``structuredContent``) at the page size the tool used to default to
(every item, except 50 MuAPI models, 20 jobs and Mixpeek's 10 per page); for the resources, the JSON
they used to serve. Both are counted in characters of the JSON a host receives.

The seeding and the page walk are shared with ``tests/test_results_fit.py``, which asserts what this
only reports: every text block within 2,000 characters, and paging reaching every item.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
from mcp import Client
from mcp_types import CallToolResult

from bench.common import Config, Row, Section
from mediamux.sandbox.media import mp4_bytes, png_bytes, wav_sequence_bytes

TEXT_LIMIT = 2000
MAX_PAGES = 200
CALL_TIMEOUT_S = 60.0
MIXPEEK_DEMO = "https://mixpeek-public-demo.s3.us-east-2.amazonaws.com/starter/{name}.mp4"
SPEECH = wav_sequence_bytes([(1.0, 440.0), (0.5, None), (1.0, 250.0), (0.5, None)])
VTT = "WEBVTT\n\n1\n00:00:00.000 --> 00:00:02.000\n{text}\n"


@dataclass(frozen=True)
class Sizes:
    """How much the sandbox is seeded with: an account a few months into real use."""

    videos: int = 40
    collections: int = 12
    in_collection: int = 30  # videos in the first collection
    subtitles: int = 12
    keys: int = 25
    jobs: int = 45
    indexed: int = 6  # Mixpeek videos, 6 to 8 segments each
    face_jobs: int = 3


QUICK = Sizes(videos=12, collections=4, in_collection=8, subtitles=4, keys=6, jobs=10, indexed=2, face_jobs=1)


@dataclass
class Seeded:
    svid: str = ""
    scid: str = ""
    asset_id: str = ""
    counts: dict[str, int] = field(default_factory=dict)


async def call(client: Client, name: str, args: dict[str, Any] | None = None) -> CallToolResult:
    with anyio.fail_after(CALL_TIMEOUT_S):
        return await client.call_tool(name, args or {})


async def ok(client: Client, name: str, args: dict[str, Any] | None = None) -> dict[str, Any]:
    result = await call(client, name, args)
    if result.is_error or not isinstance(result.structured_content, dict):
        raise RuntimeError(f"{name} failed while seeding: {text_of(result)[:300]}")
    return dict(result.structured_content)


def text_of(result: CallToolResult) -> str:
    return "\n".join(getattr(b, "text", "") for b in result.content if getattr(b, "type", "") == "text")


async def seed(client: Client, files: Path, sizes: Sizes = Sizes()) -> Seeded:
    """Fill every emulator through the tools themselves, as an agent would have."""
    seeded = Seeded()
    svids = []
    for i in range(sizes.videos):
        (files / f"talk-{i}.wav").write_bytes(SPEECH)
        video = await ok(
            client,
            "museai_upload_video",
            {"path": f"talk-{i}.wav", "title": f"Weekly product talk {i:02d}: roadmap, demos and questions"},
        )
        svids.append(video["svid"])
    seeded.svid = svids[0]
    for i in range(sizes.collections):
        made = await ok(
            client, "museai_create_collection", {"name": f"Season {i + 1} highlights", "visibility": "public"}
        )
        if i == 0:
            seeded.scid = made["scid"]
            for svid in svids[: sizes.in_collection]:
                await ok(client, "museai_add_to_collection", {"scid": made["scid"], "svid": svid})
        else:
            await ok(
                client, "museai_add_to_collection", {"scid": made["scid"], "svid": svids[i % len(svids)]}
            )
    for i in range(sizes.subtitles):
        (files / f"sub-{i}.vtt").write_text(VTT.format(text=f"line {i}"), encoding="utf-8")
        await ok(
            client,
            "museai_upload_subtitles",
            {"svid": seeded.svid, "path": f"sub-{i}.vtt", "name": f"lang-{i}"},
        )
    for i in range(sizes.face_jobs):
        (files / f"party-{i}.mp4").write_bytes(mp4_bytes(f"party-{i}", 6.0))
        await ok(client, "museai_detect_faces", {"path": f"party-{i}.mp4", "wait_s": 60})
    faces = [f["face_id"] for c in (await ok(client, "museai_list_faces"))["detected"] for f in c["faces"]]
    if len(faces) >= 3:  # one of each kind the face database lists
        changes = {faces[0]: {"delete": True}, faces[1]: {"ignore": True}}
        await ok(client, "museai_update_faces", {"changes": changes})
    for i in range(sizes.keys):
        await ok(client, "muapi_create_key", {"name": f"ci runner {i}"})
    for i in range(sizes.jobs):
        await ok(
            client,
            "muapi_generate",
            {
                "endpoint": "flux-schnell-image",
                "params": {"prompt": f"a heron at dawn, take {i}"},
                "wait_s": 0,
            },
        )
    names = [
        "aussie_agility",
        "city_night_walk",
        "ocean_sunrise",
        "kitchen_tour",
        "mountain_bike",
        "garden_rain",
    ]
    for i in range(sizes.indexed):
        url = MIXPEEK_DEMO.format(name=f"{names[i % len(names)]}_{i}")
        done = await ok(client, "mixpeek_index_url", {"url": url, "collection_id": "library", "wait_s": 120})
        seeded.asset_id = seeded.asset_id or (done.get("result") or {}).get("asset_id", "")
    (files / "cover.png").write_bytes(png_bytes(32, 32))
    return seeded


# -- listings and their walk ----------------------------------------------------------------------


@dataclass(frozen=True)
class Listing:
    tool: str
    key: str  # the item list in structuredContent
    ident: Callable[[dict[str, Any]], str]
    args: Callable[[Seeded], dict[str, Any]] = lambda s: {}
    paging: str = "cursor"  # or "page" (Mixpeek's own page/page_size)
    old_page: int | None = None  # what the tool used to return by default; None: every item
    keys: tuple[str, ...] = ()  # more item lists sharing one sequence (the face database)


def _id(name: str) -> Callable[[dict[str, Any]], str]:
    return lambda item: str(item.get(name))


LISTINGS: tuple[Listing, ...] = (
    Listing("jobs_list", "jobs", _id("job_id"), old_page=20),
    Listing("muapi_list_models", "models", _id("endpoint"), old_page=50),
    Listing("muapi_list_keys", "keys", _id("id")),
    Listing("muzaic_list_tags", "tags", _id("id")),
    Listing("museai_list_videos", "videos", _id("svid")),
    Listing("museai_list_collections", "collections", _id("scid")),
    Listing("museai_get_collection", "videos", _id("svid"), lambda s: {"scid": s.scid}),
    Listing("museai_list_subtitles", "tracks", _id("subtitle_id"), lambda s: {"svid": s.svid}),
    Listing("museai_search", "hits", _id("svid"), lambda s: {"query": "talk"}),
    Listing(
        "museai_list_faces",
        "detected",
        lambda f: str(f.get("cluster_id") or f.get("face_id")),
        keys=("detected", "deleted", "ignored"),
    ),
    Listing(
        "mixpeek_search",
        "results",
        _id("document_id"),
        lambda s: {"query": "dog running by the water", "collection_ids": ["library"]},
        paging="page",
        old_page=10,
    ),
    Listing(
        "mixpeek_get_asset_features",
        "segments",
        _id("document_id"),
        lambda s: {"asset_id": s.asset_id},
        paging="page",
        old_page=10,
    ),
)


@dataclass
class Walk:
    pages: list[CallToolResult] = field(default_factory=list)
    items: list[dict[str, Any]] = field(default_factory=list)

    @property
    def first(self) -> CallToolResult:
        return self.pages[0]


def items_of(listing: Listing, data: dict[str, Any]) -> list[dict[str, Any]]:
    return [item for key in (listing.keys or (listing.key,)) for item in data.get(key) or []]


async def walk(client: Client, listing: Listing, seeded: Seeded, **extra: Any) -> Walk:
    """Every page of a listing, following its next_cursor (or next_page) to the end."""
    found = Walk()
    args = {**listing.args(seeded), **extra}
    for _ in range(MAX_PAGES):
        result = await call(client, listing.tool, args)
        if result.is_error:
            raise RuntimeError(f"{listing.tool} {args}: {text_of(result)[:300]}")
        data = dict(result.structured_content or {})
        found.pages.append(result)
        found.items.extend(items_of(listing, data))
        if listing.paging == "page":
            if not data.get("next_page"):
                return found
            args = {**args, "page": data["next_page"]}
        else:
            if not data.get("next_cursor"):
                return found
            args = {**args, "cursor": data["next_cursor"]}
    raise RuntimeError(f"{listing.tool} did not end within {MAX_PAGES} pages")


def size(result: CallToolResult) -> int:
    return len(result.model_dump_json(by_alias=True, exclude_none=True))


def old_size(listing: Listing, items: list[dict[str, Any]], first: CallToolResult) -> tuple[int, int]:
    """(text block, whole result) characters of ``items`` as ``model_result`` carried them: the first
    page's envelope and links as they are now, its text and structured content as they were."""
    shown = items if listing.old_page is None else items[: listing.old_page]
    data = json.dumps({listing.key: shown}, separators=(",", ":"), ensure_ascii=False)
    text = f"{listing.tool}: {len(shown)} item(s)\n{data}"
    now_text = text_of(first)
    now_data = json.dumps(first.structured_content, separators=(",", ":"), ensure_ascii=False)
    envelope = size(first) - len(json.dumps(now_text, ensure_ascii=False)) - len(now_data)
    return len(text), envelope + len(json.dumps(text, ensure_ascii=False)) + len(data)


def pages(n: int) -> str:
    return f"{n} page" + ("" if n == 1 else "s")


# -- resources ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ListingResource:
    label: str
    uri: Callable[[Seeded], str]
    key: str
    ident: Callable[[dict[str, Any]], str]


RESOURCES: tuple[ListingResource, ...] = (
    ListingResource("mediamux://jobs", lambda s: "mediamux://jobs", "jobs", _id("job_id")),
    ListingResource("museai://videos", lambda s: "museai://videos", "videos", _id("svid")),
    ListingResource("museai://collections", lambda s: "museai://collections", "collections", _id("scid")),
    ListingResource(
        "museai://collections/{scid}", lambda s: f"museai://collections/{s.scid}", "videos", _id("svid")
    ),
    ListingResource(
        "mixpeek://assets/{asset_id}",
        lambda s: f"mixpeek://assets/{s.asset_id}",
        "segments",
        _id("document_id"),
    ),
)


async def read_text(client: Client, uri: str) -> str:
    with anyio.fail_after(CALL_TIMEOUT_S):
        read = await client.read_resource(uri)
    return "".join(getattr(c, "text", "") for c in read.contents)


async def walk_resource(
    client: Client, resource: ListingResource, seeded: Seeded
) -> tuple[list[str], list[dict[str, Any]]]:
    """Every page of a listing resource, following its ``next`` URI; (texts, items)."""
    uri: str | None = resource.uri(seeded)
    texts: list[str] = []
    items: list[dict[str, Any]] = []
    for _ in range(MAX_PAGES):
        if uri is None:
            return texts, items
        text = await read_text(client, uri)
        body = json.loads(text)
        texts.append(text)
        items.extend(body.get(resource.key) or [])
        uri = body.get("next")
    raise RuntimeError(f"{resource.uri(seeded)} did not end within {MAX_PAGES} pages")


# -- the benchmark --------------------------------------------------------------------------------


async def run(cfg: Config) -> Section:
    from mediamux.clock import FakeClock
    from mediamux.config import Settings
    from mediamux.registry import make_sandbox
    from mediamux.server.app import build_server

    section = Section()
    with tempfile.TemporaryDirectory(dir=cfg.work) as scratch:
        root = Path(scratch)
        (root / "files").mkdir()
        # Fake time: the seeded jobs (face detection, Mixpeek indexing) finish as soon as nothing else runs.
        clock = FakeClock()
        box = make_sandbox(now=clock.monotonic, state_dir=root / "sandbox")
        settings = Settings(MEDIAMUX_HOME=str(root / "home"), MEDIAMUX_ALLOWED_DIRS=str(root / "files"))
        try:
            server = build_server(settings, clock=clock, sandbox=box)
            async with Client(server, mode="legacy") as client:  # type: ignore[arg-type]
                seeded = await seed(client, root / "files", QUICK if cfg.quick else Sizes())
                for listing in LISTINGS:
                    walked = await walk(client, listing, seeded)
                    text_before, total_before = old_size(listing, walked.items, walked.first)
                    label = f"`{listing.tool}` ({len(walked.items)} items, {pages(len(walked.pages))})"
                    section.rows += [
                        Row(
                            "Results",
                            f"{label}: text block",
                            len(text_of(walked.first)),
                            text_before,
                            "chars",
                            "before: the whole page as JSON in text",
                        ),
                        Row(
                            "Results",
                            f"`{listing.tool}`: whole result",
                            size(walked.first),
                            total_before,
                            "chars",
                            "before: text + structuredContent",
                        ),
                    ]
                for resource in RESOURCES:
                    texts, items = await walk_resource(client, resource, seeded)
                    # What the resource served before: every item, as an indented JSON list.
                    before = len(json.dumps(items, indent=1, ensure_ascii=False))
                    section.rows.append(
                        Row(
                            "Results",
                            f"`{resource.label}` ({len(items)} items, {pages(len(texts))}): first read",
                            len(texts[0]),
                            before,
                            "chars",
                            "before: every item in one read",
                        )
                    )
        finally:
            box.close()
    section.notes.append(
        "Results: characters of the first page of each list or search result against the sandbox seeded through "
        f"the tools ({'quick' if cfg.quick else 'full'} sizes); before = the same items as model_result carried "
        "them (the whole list as JSON in the text block and again as structuredContent) at the old default page "
        "size, in the same envelope. Resources: the first read now against every item in one indented read, as "
        "they were served; the items counted are today's (the jobs and collections resources used to carry more "
        "fields each, so their before is understated). Every later page is reached by next_cursor (next_page for "
        f"Mixpeek, next for resources); tests/test_results_fit.py asserts that and the {TEXT_LIMIT:,}-character limit."
    )
    return section
