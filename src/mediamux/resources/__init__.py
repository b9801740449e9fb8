"""MCP resources: jobs, the cost ledger, saved outputs; each provider adds its own.

Lists are computed when read, from the journal; nothing is cached in memory.
"""

from __future__ import annotations

import json
import mimetypes
from typing import Any, TypeVar

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ResourceError, ResourceNotFoundError

from mediamux.context import Services, services
from mediamux.files import OUTPUTS_PREFIX, FileAccessError, OutputNotFound, OutputStoreError, OutputTooLarge
from mediamux.jobs.costs import cost_report
from mediamux.jobs.engine import JobNotFound
from mediamux.providers.errors import ProviderError

T = TypeVar("T")

# Hosts accept results of about 1 MiB and base64 adds a third; bigger outputs are read from disk by path,
# or (S3 storage) fetched through the presigned link the error gives.
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
                for r in s.journal.list(limit=50)
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
        report = cost_report(s.journal, s.engine.session_id, s.clock, budget_usd=s.settings.budget_usd)
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
    """A saved output's bytes and media type, from whichever store this server saves to."""
    return await _read_output(s, uri.removeprefix(OUTPUTS_PREFIX))
