"""Provider-neutral job tools: pick a job up again, read it, list them."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from mcp.server.mcpserver import Context
from mcp_types import CallToolResult
from pydantic import BaseModel, Field

from mediamux.jobs.engine import iso
from mediamux.jobs.models import JobResult, ProviderId
from mediamux.tools.base import Toolset, WaitS, job_result, model_result, progress_of, services

toolset = Toolset(
    id="jobs",
    title="Jobs",
    description="Resume, inspect and list long-running jobs from every provider.",
)

JobId = Annotated[str, Field(min_length=4, max_length=64, pattern=r"^job_[A-Za-z0-9_-]+$")]


@toolset.tool(title="Wait for a job", read_only=True)
async def jobs_wait(
    job_id: JobId, ctx: Context, wait_s: WaitS = 45
) -> Annotated[CallToolResult, JobResult[Any]]:
    """Waits for a job started earlier (by any mediamux tool, even before a restart) until it finishes
    or wait_s passes, with progress, and returns its result and cost. Free: it only polls the
    provider and never submits or pays again."""
    view = await services(ctx).engine.wait(job_id, wait_s=wait_s, progress=progress_of(ctx))
    return job_result(view, title=f"{view.provider} {view.operation}")


@toolset.tool(title="Get a job", read_only=True)
async def jobs_get(job_id: JobId, ctx: Context) -> Annotated[CallToolResult, JobResult[Any]]:
    """Reads a job's last known state from the local journal: status, result, error and cost. Free and
    instant; makes no provider call (jobs_wait refreshes it)."""
    engine = services(ctx).engine
    view = engine.view(engine.get_record(job_id))
    return job_result(view, title=f"{view.provider} {view.operation}", error_on_failure=False)


class JobSummary(BaseModel):
    job_id: str
    provider: str
    operation: str
    status: str
    provider_job_id: str | None = None
    cost_usd: float | None = None
    submitted_at: str
    completed_at: str | None = None


class JobList(BaseModel):
    jobs: list[JobSummary]


@toolset.tool(title="List jobs", read_only=True)
async def jobs_list(
    ctx: Context,
    status: Annotated[
        Literal["active", "queued", "running", "completed", "failed", "cancelled", "expired"] | None,
        Field(description="'active' = queued or running"),
    ] = None,
    provider: ProviderId | None = None,
    limit: Annotated[int, Field(ge=1, le=200)] = 20,
) -> Annotated[CallToolResult, JobList]:
    """Lists recent jobs from the local journal, newest first, with status and cost. Free and instant."""
    journal = services(ctx).journal
    jobs = [
        JobSummary(
            job_id=r.job_id,
            provider=r.provider,
            operation=r.operation,
            status=r.status,
            provider_job_id=r.provider_job_id,
            cost_usd=r.cost.usd,
            submitted_at=iso(r.submitted_ts) or "",
            completed_at=iso(r.completed_ts),
        )
        for r in journal.list(status=status, provider=provider, limit=limit)
    ]
    return model_result(JobList(jobs=jobs), f"{len(jobs)} job(s)")
