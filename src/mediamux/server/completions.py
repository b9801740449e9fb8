"""``completion/complete``: values for prompt arguments and resource-template variables.

The server knows no provider here. Each provider's registry spec names its sources
(``ProviderSpec.completions``); the provider-neutral ones (job ids, saved outputs) are below. A source
completes every prompt argument or template variable of its name (``svid`` is a muse.ai video id
wherever it appears), unless it names the references it is for.

Completion runs on every keystroke, so nothing slow or paid runs while the client waits. Journal and
output-folder sources are local reads, asked each time. Provider listings (videos, collections,
models) are free but remote: they are served from a short-lived cache and refreshed in the
background when stale; a cold cache waits at most ``COLD_WAIT_S`` for its first load and otherwise
answers with nothing, while the load carries on and fills the cache for the next keystroke. A
listing that fails is not asked again for ``FAILURE_BACKOFF_S``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

import anyio
from mcp.shared.uri_template import UriTemplate
from mcp_types import (
    CompleteRequestParams,
    CompleteResult,
    Completion,
    PromptReference,
)

from mediamux.files import OUTPUTS_PREFIX
from mediamux.principals import LOCAL, current_principal
from mediamux.server.refusals import invalid_params

if TYPE_CHECKING:
    from anyio.abc import TaskGroup

    from mediamux.clock import Clock
    from mediamux.context import Services

logger = logging.getLogger("mediamux.completions")

MAX_VALUES: Final = 100  # the protocol's limit per answer
# How long a cold listing may hold up the first answer; later keystrokes are served from the cache.
COLD_WAIT_S: Final = 0.5
DEFAULT_TTL_S: Final = 30.0
FAILURE_BACKOFF_S: Final = 15.0
# Cached listings kept at once (one per provider listing, plus one per video for its subtitles).
MAX_CACHED: Final = 256
# Journal rows read for one listing: the most recent jobs, which are the ones people resume. Reading
# and parsing them takes tens of milliseconds, in a worker thread; the ids are then kept briefly, so
# the keystrokes that follow cost nothing and a new job shows up a keystroke later at worst.
OUTPUT_SCAN: Final = 2000
JOURNAL_SCAN: Final = 500
JOURNAL_TTL_S: Final = 3.0
# Files of the output folder looked at for one completion.


@dataclass(frozen=True)
class Candidates:
    """What a source offers. ``complete`` is False when the values are only a part of what exists
    (the most recent jobs, the first files of a large folder): the answer then gives no total."""

    values: Sequence[str]
    complete: bool = True


NOTHING: Final = Candidates((), complete=True)


def _no_scope(context: Mapping[str, str]) -> str:
    return ""


@dataclass(frozen=True)
class CompletionSource:
    """Where the values of one argument come from."""

    # The prompt argument or template variable this completes.
    argument: str
    # (services, the other arguments already given) -> candidates, in the order to offer them.
    candidates: Callable[[Services, Mapping[str, str]], Awaitable[Candidates]]
    # Remote listings (free, but a network call) go through the cache; local reads are asked each time.
    cached: bool = False
    ttl_s: float = DEFAULT_TTL_S
    # What of the other arguments the candidates depend on, as part of the cache key (a video's
    # subtitle tracks depend on its svid); None when that is not known yet: nothing to offer.
    scope: Callable[[Mapping[str, str]], str | None] = _no_scope
    # Only for these prompts (by name) and templates (by URI template); None: wherever the name appears.
    refs: frozenset[str] | None = None
    # The provider whose client the candidates need; without a configured client nothing is offered.
    provider: str | None = None
    # Read from the caller's own jobs: cached per principal, so nobody is offered another's ids.
    personal: bool = False

    def serves(self, ref: str, argument: str) -> bool:
        return argument == self.argument and (self.refs is None or ref in self.refs)


# -- the cache ---------------------------------------------------------------------------------------


@dataclass
class _Entry:
    value: Candidates | None = None
    expires: float = 0.0
    retry_at: float = 0.0
    loading: anyio.Event | None = None


@dataclass
class ListingCache:
    """Remote listings by key, each kept for its source's TTL (times from the services' clock)."""

    clock: Clock
    cold_wait_s: float = COLD_WAIT_S
    failure_backoff_s: float = FAILURE_BACKOFF_S
    max_entries: int = MAX_CACHED
    loads: int = 0
    _entries: dict[str, _Entry] = field(default_factory=dict)

    async def get(
        self,
        key: str,
        load: Callable[[], Awaitable[Candidates]],
        *,
        ttl_s: float,
        background: TaskGroup | None,
    ) -> Candidates | None:
        """The cached value, fresh or stale (a stale one starts a refresh); a cold key waits briefly."""
        now = self.clock.monotonic()
        entry = self._entries.get(key)
        if entry is not None and entry.value is not None and now < entry.expires:
            return entry.value
        if entry is None:
            entry = self._entries[key] = _Entry()
            self._trim()
        loading = entry.loading
        if loading is None and now >= entry.retry_at:
            loading = entry.loading = anyio.Event()
            if background is not None:
                background.start_soon(self._load, key, entry, load, ttl_s)
            else:  # no server task group (a bare test server): the load is bounded by the wait below
                with anyio.move_on_after(self.cold_wait_s):
                    await self._load(key, entry, load, ttl_s)
        if entry.value is not None:
            return entry.value  # stale while it refreshes: the keystroke is not held up
        if loading is not None:
            await self.clock.wait_for(loading, within_s=self.cold_wait_s)
        return entry.value

    async def _load(
        self, key: str, entry: _Entry, load: Callable[[], Awaitable[Candidates]], ttl_s: float
    ) -> None:
        self.loads += 1
        try:
            value = await load()
        except Exception as exc:  # a listing that fails offers nothing; asked again after a pause
            logger.debug("completion listing %s failed: %s", key, exc, exc_info=True)
            entry.retry_at = self.clock.monotonic() + self.failure_backoff_s
        else:
            entry.value = value
            entry.expires = self.clock.monotonic() + ttl_s
        finally:
            if entry.loading is not None:
                entry.loading.set()
            entry.loading = None

    def _trim(self) -> None:
        while len(self._entries) > self.max_entries:
            oldest = next(iter(self._entries))
            if self._entries[oldest].loading is not None:
                break  # a load in flight keeps its entry; the next insertion tries again
            del self._entries[oldest]


# -- matching ------------------------------------------------------------------------------------------


def matching(values: Iterable[str], prefix: str, *, complete: bool = True) -> Completion:
    """The values that start with ``prefix`` (ignoring case), at most MAX_VALUES, order kept."""
    folded = prefix.casefold()
    found = list(dict.fromkeys(v for v in values if v.casefold().startswith(folded)))
    return Completion(
        values=found[:MAX_VALUES],
        total=len(found) if complete else None,
        has_more=len(found) > MAX_VALUES or not complete,
    )


# -- the request handler ---------------------------------------------------------------------------


class Completer:
    """Answers ``completion/complete`` from the sources of the enabled toolsets."""

    def __init__(self, server: Any, sources: Iterable[CompletionSource]) -> None:
        self.server = server
        self.sources = list(sources)
        self._cache: tuple[Services, ListingCache] | None = None

    def cache(self, svc: Services) -> ListingCache:
        # One cache per running services: a server restarted in-process starts cold, on its own clock.
        if self._cache is None or self._cache[0] is not svc:
            self._cache = (svc, ListingCache(svc.clock))
        return self._cache[1]

    async def __call__(self, ctx: Any, params: CompleteRequestParams) -> CompleteResult:
        ref_id, arguments = await self._arguments_of(params)
        name, prefix = params.argument.name, params.argument.value
        if name not in arguments:
            kind = "prompt" if isinstance(params.ref, PromptReference) else "resource template"
            raise invalid_params(
                f"the {kind} {ref_id} has no argument {name!r}; its arguments are "
                f"{', '.join(arguments) or 'none'}",
                argument=name,
            )
        source = next((s for s in self.sources if s.serves(ref_id, name)), None)
        if source is None:  # free text (a search query): nothing to suggest
            return CompleteResult(completion=matching((), prefix))
        svc: Services = ctx.lifespan_context
        given = dict((params.context.arguments if params.context else None) or {})
        found = await self._candidates(svc, source, given)
        return CompleteResult(completion=matching(found.values, prefix, complete=found.complete))

    async def _arguments_of(self, params: CompleteRequestParams) -> tuple[str, list[str]]:
        ref = params.ref
        if isinstance(ref, PromptReference):
            prompts = await self.server.list_prompts()
            prompt = next((p for p in prompts if p.name == ref.name), None)
            if prompt is None:
                raise invalid_params(
                    f"no prompt named {ref.name!r}; prompts/list lists the {len(prompts)} prompts offered",
                    prompt=ref.name,
                )
            return ref.name, [a.name for a in prompt.arguments or []]
        templates = await self.server.list_resource_templates()
        template = next((t for t in templates if t.uri_template == ref.uri), None)
        if template is None:
            raise invalid_params(
                f"no resource template {ref.uri!r}; resources/templates/list lists the "
                f"{len(templates)} templates offered",
                uri=ref.uri,
            )
        return ref.uri, UriTemplate.parse(ref.uri).variable_names

    async def _candidates(self, svc: Services, source: CompletionSource, given: dict[str, str]) -> Candidates:
        if source.provider is not None and source.provider not in svc.clients:
            return NOTHING
        scope = source.scope(given)
        if scope is None:
            return NOTHING
        if not source.cached:
            return await source.candidates(svc, given)
        key = f"{source.provider or '-'}:{source.argument}:{scope}"
        if source.personal:
            key += f":{current_principal()}"

        async def load() -> Candidates:
            return await source.candidates(svc, given)

        cached = await self.cache(svc).get(key, load, ttl_s=source.ttl_s, background=svc.engine.task_group)
        if cached is None:
            # Still loading (or failing): say nothing rather than keep the user waiting.
            return Candidates((), complete=False)
        return cached


# -- provider-neutral sources ------------------------------------------------------------------------


async def _job_ids(svc: Services, given: Mapping[str, str]) -> Candidates:
    principal = current_principal()
    records = await anyio.to_thread.run_sync(
        lambda: svc.journal.list(limit=JOURNAL_SCAN, principal=principal)
    )
    return Candidates([r.job_id for r in records], complete=len(records) < JOURNAL_SCAN)


async def _output_names(svc: Services, given: Mapping[str, str]) -> Candidates:
    """Saved outputs the caller may read (see mediamux.resources.read_output), newest first: a
    signed-in principal's are those its own jobs saved; the local user's are the output folder's,
    less those only other principals' jobs saved."""
    principal = current_principal()
    if principal != LOCAL:
        records = await anyio.to_thread.run_sync(
            lambda: svc.journal.list(limit=JOURNAL_SCAN, principal=principal, status="completed")
        )
        names: dict[str, None] = {}
        for record in records:
            for uri in saved_uris(record.result):
                names[uri.removeprefix(OUTPUTS_PREFIX)] = None
        return Candidates(list(names), complete=len(records) < JOURNAL_SCAN)
    return await anyio.to_thread.run_sync(_scan_outputs, svc)


def _scan_outputs(svc: Services) -> Candidates:
    from mediamux.files import FileAccessError
    from mediamux.files.outputs import check_output_name

    foreign = {uri.removeprefix(OUTPUTS_PREFIX) for uri in svc.journal.foreign_output_uris(LOCAL)}
    found: list[tuple[float, str]] = []
    complete = True
    try:
        with os.scandir(svc.files.output_dir) as entries:
            for n, entry in enumerate(entries):
                if n >= OUTPUT_SCAN:
                    complete = False
                    break
                if (
                    entry.name.startswith(".")
                    or entry.name in foreign
                    or not entry.is_file(follow_symlinks=False)
                ):
                    continue
                try:
                    check_output_name(entry.name)
                    found.append((entry.stat(follow_symlinks=False).st_mtime, entry.name))
                except (OSError, FileAccessError):
                    continue
    except OSError:
        return NOTHING
    return Candidates([name for _, name in sorted(found, reverse=True)], complete=complete)


def saved_uris(result: Any) -> list[str]:
    saved = (result or {}).get("saved") if isinstance(result, dict) else None
    return [
        s["uri"]
        for s in saved or []
        if isinstance(s, dict) and isinstance(s.get("uri"), str) and s["uri"].startswith(OUTPUTS_PREFIX)
    ]


def journal_ids(
    argument: str, provider: str, pick: Callable[[Any], Iterable[str | None]]
) -> CompletionSource:
    """A source of ids read out of a provider's most recent journal rows (``pick(record)`` -> ids)."""

    async def candidates(svc: Services, given: Mapping[str, str]) -> Candidates:
        principal = current_principal()
        records = await anyio.to_thread.run_sync(
            lambda: svc.journal.list(provider=provider, limit=JOURNAL_SCAN, principal=principal)
        )
        ids = [value for record in records for value in pick(record) if value]
        return Candidates(ids, complete=len(records) < JOURNAL_SCAN)

    return CompletionSource(argument, candidates, cached=True, ttl_s=JOURNAL_TTL_S, personal=True)


CORE_SOURCES: Final = (
    CompletionSource("job_id", _job_ids, cached=True, ttl_s=JOURNAL_TTL_S, personal=True),
    CompletionSource("name", _output_names, refs=frozenset({"mediamux://outputs/{name}"}), personal=True),
)


def sources_for(toolsets: Iterable[str]) -> list[CompletionSource]:
    """The provider-neutral sources, then those of each enabled provider (from its registry spec)."""
    from mediamux import registry

    found = list(CORE_SOURCES)
    for toolset_id in toolsets:
        spec = registry.PROVIDERS.get(toolset_id)
        if spec is not None and spec.completions is not None:
            found.extend(spec.completions())
    return found


def install(server: Any, toolsets: Iterable[str]) -> Completer:
    """Serve ``completion/complete`` on ``server`` (which then advertises the completions capability)."""
    completer = Completer(server, sources_for(toolsets))
    # MCPServer.completion() hands its handler no request context (so no services); the low-level
    # registration does, and is what that decorator uses itself.
    server._lowlevel_server.add_request_handler("completion/complete", CompleteRequestParams, completer)
    return completer


__all__ = [
    "CORE_SOURCES",
    "MAX_VALUES",
    "Candidates",
    "Completer",
    "CompletionSource",
    "ListingCache",
    "install",
    "journal_ids",
    "matching",
    "sources_for",
]
