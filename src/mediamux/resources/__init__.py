"""MCP resources: jobs, the cost ledger, saved outputs; each provider adds its own.

Lists are computed when read, from the journal; nothing is cached in memory.
"""

from __future__ import annotations

import json
import mimetypes
import os
from pathlib import Path
from typing import Any, TypeVar

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ResourceError, ResourceNotFoundError

from mediamux.context import Services, services
from mediamux.files import OUTPUTS_PREFIX, FileAccessError, open_output
from mediamux.jobs.costs import caller_costs
from mediamux.jobs.engine import JobNotFound
from mediamux.principals import LOCAL, current_principal
from mediamux.providers.errors import ProviderError

T = TypeVar("T")

# Hosts accept results of about 1 MiB and base64 adds a third; bigger outputs are read from disk by path.
MAX_INLINE_OUTPUT_BYTES = 768 * 1024


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

    @server.resource(
        "mediamux://jobs",
        name="jobs",
        title="Recent jobs",
        mime_type="application/json",
        description="The 50 most recent jobs from the local journal, newest first",
    )
    def jobs() -> str:
        s = services()
        return dump(
            [
                s.engine.view(r).model_dump(mode="json", by_alias=True, exclude={"result"})
                for r in s.journal.list(limit=50, principal=current_principal())
            ]
        )

    @server.resource(
        "mediamux://jobs/{job_id}",
        name="job",
        title="Job",
        mime_type="application/json",
        description="One job: status, result, error and cost",
    )
    def job(job_id: str) -> str:
        s = services()
        try:
            record = s.engine.get_record(job_id)
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
    def costs() -> str:
        s = services()
        report = caller_costs(s)
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
        description="A generated file saved in the output folder (served with its own media type)",
    )
    def output(name: str) -> bytes:
        # Served by MediamuxServer.read_resource with the file's real media type; this registration
        # makes the template discoverable.
        return _read_output(services(), name)[0]


def _read_output(s: Services, name: str) -> tuple[bytes, str]:
    # Size and bytes both come from the one descriptor open_output checked: a second lookup by
    # name could meet a link swapped in meanwhile.
    try:
        handle = open_output(s.files.output_dir, name)
    except FileAccessError as exc:
        raise ResourceNotFoundError(str(exc)) from None
    with handle:
        size = os.fstat(handle.fileno()).st_size
        if size > MAX_INLINE_OUTPUT_BYTES:
            raise ResourceError(
                f"{name} is {size} bytes, too large to send inline (limit {MAX_INLINE_OUTPUT_BYTES}); "
                f"open {Path(s.files.output_dir, name)}"
            )
        data = handle.read(MAX_INLINE_OUTPUT_BYTES + 1)
    if len(data) > MAX_INLINE_OUTPUT_BYTES:
        raise ResourceError(f"{name} grew past {MAX_INLINE_OUTPUT_BYTES} bytes while it was being read")
    mime = mimetypes.guess_type(name)[0] or "application/octet-stream"
    return data, mime


def read_output(s: Services, uri: str) -> tuple[bytes, str]:
    # A saved output belongs to whoever's jobs saved it; to anyone else it does not exist. Files no
    # job names (saved before sign-in existed, or by a tool that is not a job) are the local user's.
    owners = s.journal.output_owners(uri)
    principal = current_principal()
    if principal not in owners and (owners or principal != LOCAL):
        raise ResourceNotFoundError(f"no saved output {uri}; the job results you can see list yours")
    return _read_output(s, uri.removeprefix(OUTPUTS_PREFIX))
