"""Results that fit: every list and search tool, and every listing resource, against the sandbox seeded
with an account's worth of data (bench/results.py seeds it through the tools, as an agent would have).

Each page's text block stays within 2,000 characters and names the ids of what it shows; its
structuredContent holds those items in full and passes the tool's output schema; following next_cursor
(or Mixpeek's next_page) reaches every item exactly once; no provider paging URL reaches a result.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import anyio
import jsonschema
import pytest
from bench.results import (
    LISTINGS,
    RESOURCES,
    Seeded,
    Sizes,
    call,
    items_of,
    read_text,
    seed,
    text_of,
    walk,
    walk_resource,
)
from mcp import Client, MCPError

from mediamux.clock import FakeClock
from mediamux.sandbox import Sandbox
from mediamux.sandbox.muapi import CATALOG
from mediamux.sandbox.muzaic import TAGS
from mediamux.tools.pages import TEXT_LIMIT, make_cursor

SIZES = Sizes()
# A provider's own paging link (Mixpeek's next_page URLs, "?page=2&page_size=10"): only our key opens it.
PAGING_URL = re.compile(r"https?://[^\s\"']*[?&](page|offset|cursor|page_size|limit)=", re.IGNORECASE)
# Listings the seeded data must spread over more than one page: a walk that never pages proves nothing.
MUST_PAGE = {
    "jobs_list",
    "muapi_list_models",
    "museai_list_videos",
    "mixpeek_search",
    "mixpeek_get_asset_features",
}


def shown_ids(tool: str, item: dict[str, Any]) -> list[str]:
    """What of an item its table row must show verbatim: the ids an agent passes on."""
    if tool == "mixpeek_search":
        return [item["asset_id"]]
    if tool == "mixpeek_get_asset_features":
        return []  # one video's segments: the row is its time span
    if tool == "museai_list_faces":
        return [item.get("cluster_id") or item["face_id"]]
    key = {
        "jobs_list": "job_id",
        "muapi_list_models": "endpoint",
        "muapi_list_keys": "id",
        "muzaic_list_tags": "id",
        "museai_list_videos": "svid",
        "museai_list_collections": "scid",
        "museai_get_collection": "svid",
        "museai_list_subtitles": "subtitle_id",
        "museai_search": "svid",
    }[tool]
    return [str(item[key])]


@pytest.fixture
async def seeded(client: Client, files_dir: Path) -> Seeded:
    with anyio.fail_after(120):
        return await seed(client, files_dir, SIZES)


async def test_every_list_and_search_result_fits_and_its_pages_reach_every_item_once(
    client: Client, seeded: Seeded
) -> None:
    schemas = {t.name: t.output_schema for t in (await client.list_tools()).tools}
    walked = {}
    for listing in LISTINGS:
        with anyio.fail_after(120):
            walked[listing.tool] = await walk(client, listing, seeded)

    for listing in LISTINGS:
        found = walked[listing.tool]
        for number, page in enumerate(found.pages, start=1):
            where = f"{listing.tool} page {number}"
            text = text_of(page)
            assert len(text) <= TEXT_LIMIT, f"{where}: {len(text)} characters of text"
            assert "http://" not in text and "https://" not in text, f"{where} shows a URL: {text}"
            data = page.structured_content or {}
            assert not PAGING_URL.search(json.dumps(data)), f"{where} carries a provider paging URL"
            if schemas.get(listing.tool):
                jsonschema.validate(data, schemas[listing.tool])
            for item in items_of(listing, data):
                for shown in shown_ids(listing.tool, item):
                    assert shown in text, f"{where}: {shown} is in structuredContent but not in the text"
            if number < len(found.pages):
                assert "call again with" in text.splitlines()[-1], f"{where} does not say how to go on"
        ids = [listing.ident(item) for item in found.items]
        assert len(ids) == len(set(ids)), f"{listing.tool}: an item came twice"
        if listing.tool in MUST_PAGE:
            assert len(found.pages) > 1, (
                f"{listing.tool}: the seeded data fit one page; the walk proves nothing"
            )


async def test_paging_reaches_exactly_the_items_the_emulators_hold(
    client: Client, seeded: Seeded, sandbox: Sandbox
) -> None:
    found: dict[str, set[str]] = {}
    counts = {}
    for listing in LISTINGS:
        with anyio.fail_after(120):
            items = (await walk(client, listing, seeded)).items
        counts[listing.tool] = len(items)
        found[listing.tool] = {listing.ident(i) for i in items}

    museai = sandbox.museai
    assert counts["jobs_list"] == SIZES.jobs + SIZES.face_jobs + SIZES.indexed
    assert counts["muapi_list_models"] == len(CATALOG)
    assert counts["muzaic_list_tags"] == len([t for t in TAGS if t.active])  # retired tags are not offered
    assert counts["muapi_list_keys"] == SIZES.keys + 1  # and the account's own
    assert counts["museai_list_videos"] == len(museai.videos) == SIZES.videos
    assert counts["museai_search"] == SIZES.videos  # every seeded video is a talk
    assert counts["museai_list_collections"] == len(museai.collections) == SIZES.collections
    assert counts["museai_get_collection"] == SIZES.in_collection
    assert counts["museai_list_subtitles"] == SIZES.subtitles
    faces = museai.faces.as_json()
    assert counts["museai_list_faces"] == len(faces["detected"]) + len(faces["deleted"]) + len(
        faces["ignored"]
    )
    assert faces["deleted"] and faces["ignored"]
    # Semantic search ranks every segment: its pages together are every segment of every video.
    segments = set()
    indexing = (await call(client, "jobs_list", {"provider": "mixpeek", "limit": 200})).structured_content
    features_of = next(lst for lst in LISTINGS if lst.tool == "mixpeek_get_asset_features")
    for job in indexing["jobs"]:
        done = (await call(client, "jobs_get", {"job_id": job["job_id"]})).structured_content
        video = Seeded(asset_id=done["result"]["asset_id"])
        segments |= {features_of.ident(i) for i in (await walk(client, features_of, video)).items}
    assert found["mixpeek_search"] == segments
    assert len(segments) > 10 * 2  # more than two pages of ten


async def test_every_listing_resource_pages_within_the_limit_and_reaches_every_item(
    client: Client, seeded: Seeded, sandbox: Sandbox
) -> None:
    expected = {
        "mediamux://jobs": None,  # the journal's rows, checked against jobs_list below
        "museai://videos": SIZES.videos,
        "museai://collections": SIZES.collections,
        f"museai://collections/{seeded.scid}": SIZES.in_collection,
    }
    listing = next(lst for lst in LISTINGS if lst.tool == "jobs_list")
    jobs = {listing.ident(i) for i in (await walk(client, listing, seeded)).items}
    for resource in RESOURCES:
        uri = resource.uri(seeded)
        with anyio.fail_after(120):
            texts, items = await walk_resource(client, resource, seeded)
        assert all(len(t) <= TEXT_LIMIT for t in texts), (uri, [len(t) for t in texts])
        if uri != "museai://collections":  # twelve collections fit one page; every other listing pages
            assert len(texts) > 1, f"{uri}: the seeded data fit one page; the walk proves nothing"
        ids = [resource.ident(i) for i in items]
        assert len(ids) == len(set(ids)), f"{uri}: an item came twice"
        if uri == "mediamux://jobs":
            assert set(ids) == jobs
        elif uri in expected:
            assert len(ids) == expected[uri], uri
        else:  # the Mixpeek video
            assert len(ids) == json.loads(texts[0])["total"] > 1


@pytest.mark.both_eras
async def test_a_cursor_that_is_not_this_listings_is_refused_in_our_words(client: Client) -> None:
    models = (await call(client, "muapi_list_models", {"limit": 3})).structured_content
    assert models["next_cursor"]

    foreign = await call(client, "museai_list_videos", {"cursor": models["next_cursor"]})
    garbage = await call(client, "jobs_list", {"cursor": "not-a-cursor!"})
    beyond = await call(client, "muzaic_list_tags", {"cursor": make_cursor("muzaic_tags", o=10**9)})
    with pytest.raises(MCPError) as resource:
        await read_text(client, "mediamux://jobs?cursor=bm9wZQ")

    for refused in (foreign, garbage, beyond):
        assert refused.is_error
        assert text_of(refused).startswith(
            "[invalid_input] cursor: not a cursor of this listing; pass the next_cursor"
        )
        assert refused.meta["mediamux/error"]["arguments"] == ["cursor"]
    assert "not a cursor of this listing" in str(resource.value)


async def test_jobs_started_between_two_pages_neither_repeat_nor_push_a_job_off_the_list(
    client: Client, clock: FakeClock
) -> None:
    generate = {"endpoint": "flux-schnell-image", "params": {"prompt": "a heron"}, "wait_s": 0}
    for i in range(12):
        await call(client, "muapi_generate", {**generate, "params": {"prompt": f"a heron {i}"}})
    first = (await call(client, "jobs_list", {"limit": 5})).structured_content
    clock.advance(1.0)  # the newcomers are newer: listed above the page already read
    for i in range(3):
        await call(client, "muapi_generate", {**generate, "params": {"prompt": f"a late heron {i}"}})
    rest = []
    cursor = first["next_cursor"]
    while cursor:
        page = (await call(client, "jobs_list", {"limit": 5, "cursor": cursor})).structured_content
        rest.extend(page["jobs"])
        cursor = page["next_cursor"]

    seen = [j["job_id"] for j in first["jobs"] + rest]
    # An offset alone would show three of the first page's jobs again and never reach the last three.
    assert len(seen) == len(set(seen)) == 12
