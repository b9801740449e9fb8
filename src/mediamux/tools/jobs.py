"""Provider-neutral job tools: pick a job up again, read it, cancel it, list them, and what was spent."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Annotated, Any, Literal

from mcp.server.mcpserver import Context
from mcp_types import CallToolResult
from pydantic import BaseModel, Field

from mediamux.jobs.costs import Costs, caller_costs
from mediamux.jobs.models import JobRecord, JobResult, ProviderId
from mediamux.jobs.offload import in_thread
from mediamux.principals import current_principal
from mediamux.providers.cost import Cost
from mediamux.tools.base import Toolset, WaitS, job_result, model_result, money, progress_of, services
from mediamux.tools.pages import Column, Cursor, fit, make_cursor, moment, read_cursor
from mediamux.tools.schemas import opaque

toolset = Toolset(
    id="jobs",
    title="Jobs",
    description="resume, read, cancel and list jobs; costs",
    mark=("M3 1h10L8 8l5 7H3l5-7z", "#d97706"),  # an hourglass: waiting jobs
)

JobId = Annotated[str, Field(min_length=4, max_length=64, pattern=r"^job_[A-Za-z0-9_-]+$"), opaque()]


@toolset.tool(title="Wait for a job", read_only=True)
async def jobs_wait(
    job_id: JobId, ctx: Context, wait_s: WaitS = 45
) -> Annotated[CallToolResult, JobResult[Any]]:
    """Waits for a job started earlier (by any tool, even before a restart) until it ends or wait_s
    passes, with progress; returns its result and cost. Free: it never submits or pays again."""
    view = await services(ctx).engine.wait(job_id, wait_s=wait_s, progress=progress_of(ctx))
    return job_result(view, title=f"{view.provider} {view.operation}")


@toolset.tool(title="Get a job", read_only=True)
async def jobs_get(job_id: JobId, ctx: Context) -> Annotated[CallToolResult, JobResult[Any]]:
    """Reads a job: status, result, error and cost; asks the provider first when the saved state is stale
    (checked_at says when). Free; quick."""
    view = await services(ctx).engine.read(job_id)
    return job_result(view, title=f"{view.provider} {view.operation}", error_on_failure=False)


@toolset.tool(title="Cancel a job", read_only=False, destructive=True, idempotent=True)
async def jobs_cancel(job_id: JobId, ctx: Context) -> Annotated[CallToolResult, JobResult[Any]]:
    """Stops waiting for a job. Mixpeek tasks are stopped upstream; MuAPI, muse.ai and Muzaic cannot stop
    a job, so it may still finish and be charged (the result says which). Free."""
    view = await services(ctx).engine.cancel(job_id)
    return job_result(view, title=f"{view.provider} {view.operation}", error_on_failure=False)


class JobSummary(BaseModel):
    job_id: str
    provider: str
    operation: str
    status: str
    provider_job_id: str | None = None
    cost_usd: float | None = None
    cost: Cost = Field(
        default_factory=Cost, description="What the provider reported: dollars, credits or tokens"
    )
    submitted_at: str
    completed_at: str | None = None
    checked_at: str | None = Field(None, description="When mediamux last asked the provider")


class JobList(BaseModel):
    jobs: list[JobSummary]
    next_cursor: str | None = None


JOB_COLUMNS = (
    Column("job_id", 64),
    Column("provider operation", 28),
    Column("status", 16),
    Column("cost", 16),
    Column("submitted (UTC)", 19),
)
# Jobs submitted since the previous page was read push the rest down; the cursor names the last job it
# showed and the next page starts right after it, provided it is among this many more rows.
NEW_SINCE_LAST_PAGE = 50


def jobs_window(
    listing: Callable[..., list[JobRecord]], cursor: str | None, limit: int, **filters: Any
) -> tuple[list[JobRecord], int]:
    """Up to ``limit`` + 1 journal rows after the cursor (newest first), and the offset of the first.

    The journal lists a prefix of its rows; the page is found in it by the last job the previous page
    showed, so jobs started meanwhile do not repeat a row, and by its offset if that job has left the
    filter (an active job that finished)."""
    state = read_cursor("jobs", cursor)
    start = int(state.get("o", 0))
    after = state.get("j")
    rows = listing(limit=start + limit + 1 + (NEW_SINCE_LAST_PAGE if after else 0), **filters)
    if isinstance(after, str):
        found = next((i for i, r in enumerate(rows) if r.job_id == after), None)
        if found is not None:
            start = found + 1
    return rows[start : start + limit + 1], start


def job_cursor(shown: list[JobRecord], start: int, more: bool) -> str | None:
    if not shown or not more:
        return None
    return make_cursor("jobs", o=start + len(shown), j=shown[-1].job_id)


def cost_text(cost: Cost) -> str | None:
    if cost.usd is not None:
        return money(cost.usd)
    if cost.tokens is not None:
        return f"{cost.tokens:g} tokens"
    if cost.credits is not None:
        return f"{cost.credits:g} credits"
    return None


@toolset.tool(title="List jobs", read_only=True)
async def jobs_list(
    ctx: Context,
    status: Annotated[
        Literal["active", "queued", "running", "completed", "failed", "cancelled", "expired"] | None,
        Field(description="'active' = queued or running"),
    ] = None,
    provider: ProviderId | None = None,
    limit: Annotated[int, Field(ge=1, le=200)] = 20,
    cursor: Cursor = None,
) -> Annotated[CallToolResult, JobList]:
    """Lists recent jobs, newest first, with status and cost. Free; active jobs whose
    state is stale are checked with their provider first (up to 20 per call, a few seconds at most)."""
    engine = services(ctx).engine
    window, start = await in_thread(
        functools.partial(
            jobs_window,
            services(ctx).journal.list,
            cursor,
            limit,
            status=status,
            provider=provider,
            principal=current_principal(),
        )
    )
    records = await engine.refresh_all(window[:limit])
    jobs = []
    for r in records:
        view = engine.view(r)
        jobs.append(
            JobSummary(
                job_id=r.job_id,
                provider=r.provider,
                operation=r.operation,
                status=view.status,
                provider_job_id=r.provider_job_id,
                cost_usd=r.cost.usd,
                cost=r.cost,
                submitted_at=view.submitted_at,
                completed_at=view.completed_at,
                checked_at=view.checked_at,
            )
        )
    more = len(window) > limit
    shown = fit(
        head=lambda n: (
            f"{len(jobs)} job(s)" if not (more or start) else f"jobs {start + 1}–{start + n}, newest first"
        ),
        columns=JOB_COLUMNS,
        rows=[
            (j.job_id, f"{j.provider} {j.operation}", j.status, cost_text(j.cost), moment(j.submitted_at))
            for j in jobs
        ],
        next_cursor=lambda n: job_cursor(records[:n], start, more or n < len(records)),
    )
    return shown.result(JobList(jobs=jobs[: shown.count], next_cursor=shown.next_cursor))


@toolset.tool(title="Show costs", read_only=True)
async def jobs_costs(ctx: Context) -> Annotated[CallToolResult, Costs]:
    """Shows what was spent per provider this session, today and in all, in each provider's units
    (dollars, credits, tokens), against the budget, with recent paid submissions. Free; instant."""
    view = await in_thread(caller_costs, services(ctx))
    return model_result(
        view,
        f"spent ${view.session.usd:.4f} this session, ${view.today.usd:.4f} today, ${view.all_time.usd:.4f} "
        "all time" + (f" of a ${view.budget_usd:.2f} budget" if view.budget_usd is not None else ""),
    )
