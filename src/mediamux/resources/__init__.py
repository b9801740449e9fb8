"""MCP resources: jobs, the cost ledger, saved outputs; each provider adds its own.

Lists are computed when read, from the journal; nothing is cached in memory.
"""

from __future__ import annotations

import json
import mimetypes
from collections.abc import Callable
from typing import Any, TypeVar

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ResourceError, ResourceNotFoundError

from mediamux.context import Services, services
from mediamux.errors import InputError
from mediamux.files import OUTPUTS_PREFIX, FileAccessError, OutputNotFound, OutputStoreError, OutputTooLarge
from mediamux.files.outputs import MAX_INLINE_OUTPUT_BYTES
from mediamux.jobs.costs import caller_costs
from mediamux.jobs.engine import JobNotFound
from mediamux.jobs.offload import in_thread
from mediamux.principals import LOCAL, current_principal
from mediamux.providers.errors import ProviderError
from mediamux.tools.jobs import job_cursor, jobs_window
from mediamux.tools.pages import json_page, make_cursor

T = TypeVar("T")

MAX_PAGE_ITEMS = 200  # candidates a resource page is fitted from
JOBS_PAGE = 50  # jobs a page of mediamux://jobs may hold; fewer fit its size
# What a job listing carries of each job; mediamux://jobs/{job_id} has the rest.
JOB_FIELDS = {
    "job_id",
    "provider",
    "operation",
    "status",
    "error",
    "cost",
    "submitted_at",
    "completed_at",
    "note",
}


def client(provider: str, kind: type[T]) -> T:
    """A provider's client for a resource read; a missing key is a resource error that says what to set."""
    try:
        return services().clients.require(provider, kind)
    except ProviderError as exc:
        raise ResourceError(exc.message) from None


def dump(data: Any) -> str:
    return json.dumps(data, indent=1, ensure_ascii=False)


def register_resources(server: MCPServer[Any]) -> None:
    """The provider-neutral resources; each provider registers its own (see mediamux.registry)."""

    async def jobs_page(cursor: str | None) -> str:
        s = services()
        principal = current_principal()
        window, start = await in_thread(
            cursor_guard, lambda: jobs_window(s.journal.list, cursor, JOBS_PAGE, principal=principal)
        )
        more = len(window) > JOBS_PAGE
        items = [
            s.engine.view(r).model_dump(mode="json", by_alias=True, exclude_none=True, include=JOB_FIELDS)
            for r in window[:JOBS_PAGE]
        ]

        def after(n: int) -> str | None:
            found = job_cursor(window[:n], start, more or n < min(len(window), JOBS_PAGE))
            return f"mediamux://jobs?cursor={found}" if found else None

        return json_page(items, key="jobs", next_uri=after)

    @server.resource(
        "mediamux://jobs",
        name="jobs",
        title="Recent jobs",
        mime_type="application/json",
        description="Recent jobs from the journal, newest first, a page at a time (next: the URI of the next page)",
    )
    async def jobs() -> str:
        return await jobs_page(None)

    @server.resource(
        "mediamux://jobs{?cursor}",
        name="jobs_page",
        title="Recent jobs, a later page",
        mime_type="application/json",
        description="The page of mediamux://jobs a next URI points at",
    )
    async def jobs_after(cursor: str = "") -> str:
        return await jobs_page(cursor or None)

    @server.resource(
        "mediamux://jobs/{job_id}",
        name="job",
        title="Job",
        mime_type="application/json",
        description="One job: status, result, error and cost",
    )
    async def job(job_id: str) -> str:
        s = services()
        try:
            record = await s.engine.get_record(job_id)
        except JobNotFound as exc:
            raise ResourceNotFoundError(exc.message) from None
        return dump(s.engine.view(record).model_dump(mode="json", by_alias=True))

    @server.resource(
        "mediamux://costs",
        name="costs",
        title="Cost ledger",
        mime_type="application/json",
        description="Spend recorded this session, today and all time, per provider, against the budget",
    )
    async def costs() -> str:
        s = services()
        report = await in_thread(caller_costs, s)
        return dump(
            {
                "session_id": s.engine.session_id,
                **report.model_dump(mode="json"),
                "note": "USD as reported by providers; refunded charges count as 0; entries_without_usd were "
                "jobs whose provider reported no dollar figure; committed_usd adds what running jobs hold",
            }
        )

    @server.resource(
        OUTPUTS_PREFIX + "{name}",
        name="output",
        title="Saved output",
        mime_type="application/octet-stream",
        description="A generated file saved in the output folder or storage (served with its own media type)",
    )
    async def output(name: str) -> bytes:
        # Served by MediamuxServer.read_resource with the file's real media type; this registration
        # makes the template discoverable.
        return (await _read_output(services(), name))[0]


def listing_page(
    items: list[Any], start: int, key: str, uri: str, kind: str, *, extra: dict[str, Any] | None = None
) -> str:
    """A page of a listing resource whose items are all at hand: those from ``start`` that fit, and
    the ``?cursor=`` URI of the next page."""

    def after(n: int) -> str | None:
        return f"{uri}?cursor={make_cursor(kind, o=start + n)}" if start + n < len(items) else None

    return json_page(items[start : start + MAX_PAGE_ITEMS], key=key, next_uri=after, extra=extra)


def cursor_guard(read: Callable[[], T]) -> T:
    """``read()``, with a cursor it refuses reported as the resource error it is (invalid params)."""
    try:
        return read()
    except InputError as exc:
        raise ResourceNotFoundError(exc.message) from None


async def _read_output(s: Services, name: str) -> tuple[bytes, str]:
    try:
        data = await s.files.outputs.read(name, limit=MAX_INLINE_OUTPUT_BYTES)
    except (OutputNotFound, FileAccessError) as exc:
        raise ResourceNotFoundError(str(exc)) from None
    except (OutputTooLarge, OutputStoreError) as exc:
        raise ResourceError(exc.message) from None
    mime = mimetypes.guess_type(name)[0] or "application/octet-stream"
    return data, mime


async def read_output(s: Services, uri: str) -> tuple[bytes, str]:
    """A saved output's bytes and media type, from whichever store this server saves to.

    A saved output belongs to whoever's jobs saved it; to anyone else it does not exist. Files no job
    names (saved before sign-in existed, or by a tool that is not a job) are the local user's."""
    owners = await in_thread(s.journal.output_owners, uri)
    principal = current_principal()
    if principal not in owners and (owners or principal != LOCAL):
        raise ResourceNotFoundError(f"no saved output {uri}; the job results you can see list yours")
    return await _read_output(s, uri.removeprefix(OUTPUTS_PREFIX))
