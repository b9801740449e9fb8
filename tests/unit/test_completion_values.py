"""completion/complete in parts: prefix matching and its limit, the listing cache on a fake clock, and
which sources each provider's registry spec contributes."""

from __future__ import annotations

import anyio
import pytest

from mediamux import registry
from mediamux.clock import FakeClock, wait_all_tasks_blocked
from mediamux.server.completions import (
    CORE_SOURCES,
    MAX_VALUES,
    Candidates,
    ListingCache,
    matching,
    sources_for,
)

BOUND_S = 5


def test_values_are_those_starting_with_the_prefix_ignoring_case_in_the_sources_order() -> None:
    found = matching(["flux-dev", "Flux-Pro", "kling", "flux-dev", "sdxl-flux"], "FL")

    assert found.values == ["flux-dev", "Flux-Pro"]
    assert (found.total, found.has_more) == (2, False)


def test_more_than_a_hundred_matches_are_cut_with_the_true_total() -> None:
    names = [f"clip-{n:03d}.png" for n in range(150)] + ["other.png"]

    found = matching(names, "clip-")

    assert len(found.values) == MAX_VALUES == 100
    assert found.values[:2] == ["clip-000.png", "clip-001.png"]
    assert (found.total, found.has_more) == (150, True)
    narrow = matching(names, "clip-14")
    assert (narrow.values, narrow.total, narrow.has_more) == (
        [f"clip-14{n}.png" for n in range(10)],
        10,
        False,
    )


def test_values_read_from_part_of_a_source_claim_no_total_and_say_there_may_be_more() -> None:
    found = matching(["job_a1", "job_a2", "job_b1"], "job_a", complete=False)

    assert found.values == ["job_a1", "job_a2"]
    assert found.total is None and found.has_more is True


class Listing:
    """A provider listing that counts its loads and can be held or made to fail."""

    def __init__(self) -> None:
        self.values = ["v1"]
        self.loads = 0
        self.fail = False
        self.gate: anyio.Event | None = None

    async def __call__(self) -> Candidates:
        self.loads += 1
        if self.gate is not None:
            await self.gate.wait()
        if self.fail:
            raise RuntimeError("listing failed")
        return Candidates(list(self.values))


async def test_a_fresh_listing_is_served_from_the_cache_without_loading_again() -> None:
    clock, listing = FakeClock(), Listing()
    cache = ListingCache(clock)

    with anyio.fail_after(BOUND_S):
        async with anyio.create_task_group() as tg:
            first = await cache.get("k", listing, ttl_s=30, background=tg)
            listing.values = ["v2"]
            clock.advance(29)
            again = await cache.get("k", listing, ttl_s=30, background=tg)

    assert first == again == Candidates(["v1"])
    assert listing.loads == 1


async def test_a_stale_listing_is_answered_at_once_and_refreshed_in_the_background() -> None:
    clock, listing = FakeClock(), Listing()
    cache = ListingCache(clock)

    with anyio.fail_after(BOUND_S):
        async with anyio.create_task_group() as tg:
            await cache.get("k", listing, ttl_s=30, background=tg)
            listing.values, listing.gate = ["v2"], anyio.Event()
            clock.advance(31)
            stale = await cache.get("k", listing, ttl_s=30, background=tg)
            await wait_all_tasks_blocked()  # the refresh has started, and is held by the gate
            assert stale == Candidates(["v1"]) and listing.loads == 2
            listing.gate.set()
        fresh = await cache.get("k", listing, ttl_s=30, background=None)

    assert fresh == Candidates(["v2"]) and listing.loads == 2


async def test_a_cold_listing_that_is_slow_answers_nothing_and_fills_the_cache_for_the_next_call() -> None:
    clock, listing = FakeClock(), Listing()
    listing.gate = anyio.Event()
    cache = ListingCache(clock, cold_wait_s=0.01)

    with anyio.fail_after(BOUND_S):
        async with anyio.create_task_group() as tg:
            assert await cache.get("k", listing, ttl_s=30, background=tg) is None
            assert await cache.get("k", listing, ttl_s=30, background=tg) is None  # still the one load
            listing.gate.set()
        assert await cache.get("k", listing, ttl_s=30, background=None) == Candidates(["v1"])

    assert listing.loads == 1


async def test_a_failing_listing_is_not_asked_again_until_the_backoff_has_passed() -> None:
    clock, listing = FakeClock(), Listing()
    listing.fail = True
    cache = ListingCache(clock, failure_backoff_s=15)

    with anyio.fail_after(BOUND_S):
        assert await cache.get("k", listing, ttl_s=30, background=None) is None
        clock.advance(14)
        assert await cache.get("k", listing, ttl_s=30, background=None) is None
        assert listing.loads == 1
        listing.fail = False
        clock.advance(1)
        assert await cache.get("k", listing, ttl_s=30, background=None) == Candidates(["v1"])

    assert listing.loads == 2


async def test_the_cache_keeps_a_bounded_number_of_listings() -> None:
    clock, listing = FakeClock(), Listing()
    cache = ListingCache(clock, max_entries=3)

    with anyio.fail_after(BOUND_S):
        for key in ("a", "b", "c", "d"):
            await cache.get(key, listing, ttl_s=30, background=None)
        assert listing.loads == 4
        await cache.get("a", listing, ttl_s=30, background=None)  # the oldest went first: loaded anew
        await cache.get("d", listing, ttl_s=30, background=None)

    assert listing.loads == 5


def test_each_enabled_provider_contributes_the_sources_its_registry_spec_names() -> None:
    by_toolset = {
        toolset: {(s.argument, s.provider, s.cached) for s in sources_for([toolset])} - core()
        for toolset in ("museai", "mixpeek", "muapi", "muzaic", "jobs")
    }

    assert by_toolset["museai"] == {
        ("svid", "museai", True),
        ("scid", "museai", True),
        ("subtitle_id", "museai", True),
    }
    assert by_toolset["muapi"] == {("request_id", None, True), ("endpoint", "muapi", True)}
    assert by_toolset["mixpeek"] == {("asset_id", None, True)}
    assert by_toolset["muzaic"] == by_toolset["jobs"] == set()
    assert all(registry.get(p).completions is not None for p in ("museai", "mixpeek", "muapi"))


def test_a_subtitle_track_is_only_offered_once_its_video_is_known() -> None:
    subtitles = next(s for s in sources_for(["museai"]) if s.argument == "subtitle_id")

    assert subtitles.scope({}) is None
    assert subtitles.scope({"svid": "AbC123"}) == "AbC123"


def core() -> set[tuple[str, str | None, bool]]:
    return {(s.argument, s.provider, s.cached) for s in CORE_SOURCES}


@pytest.mark.parametrize(("ref", "served"), [("mediamux://outputs/{name}", True), ("some_prompt", False)])
def test_the_output_name_source_serves_only_the_outputs_template(ref: str, served: bool) -> None:
    names = next(s for s in CORE_SOURCES if s.argument == "name")

    assert names.serves(ref, "name") is served
