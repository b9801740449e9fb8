"""The job shape every job tool, ``jobs_wait`` and ``jobs_get`` return."""

from __future__ import annotations

from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, GetJsonSchemaHandler
from pydantic.json_schema import JsonSchemaValue

from mediamux import registry
from mediamux.providers.cost import Cost


def _known_provider(value: str) -> str:
    if value not in registry.PROVIDERS:
        raise ValueError(f"unknown provider {value!r}; one of {', '.join(registry.provider_ids())}")
    return value


class _ProviderEnum:
    """Shown as the enum of the registered providers, read when a schema is made (so a provider
    registered after import, a plug-in's or a test's, is part of the tools' schemas too)."""

    def __get_pydantic_json_schema__(
        self, core_schema: Any, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        return {"enum": list(registry.provider_ids()), "type": "string"}


ProviderId = Annotated[str, AfterValidator(_known_provider), _ProviderEnum()]

# "declined": the user said no when asked to confirm the cost; no job was made (job_id is empty).
JobStatus = Literal[
    "queued", "running", "saving_outputs", "completed", "failed", "cancelled", "expired", "declined"
]
TERMINAL_STATUSES = frozenset({"completed", "failed", "cancelled", "expired"})
ACTIVE_STATUSES = frozenset({"queued", "running"})

R = TypeVar("R")


class JobError(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    error_class: str = Field(
        alias="class",
        description="auth | insufficient_credits | rate_limited | invalid_input | not_found | provider_error "
        "| timeout | budget",
    )
    message: str
    retry_after_s: float | None = None


class JobResult(BaseModel, Generic[R]):
    model_config = ConfigDict(populate_by_name=True)

    job_id: str = Field(description="mediamux job id, stable across restarts; pass it to jobs_wait")
    provider: ProviderId
    operation: str
    provider_job_id: str | None = Field(
        None, description="The provider's own id (request_id, task_id, job id)"
    )
    status: JobStatus
    provider_status: str | None = Field(None, description="The provider's raw status word")
    result: R | None = Field(None, description="The typed result once completed")
    error: JobError | None = None
    cost: Cost = Field(default_factory=Cost)
    session_spent_usd: float | None = Field(
        None, description="Spend this server session has recorded so far, across all jobs"
    )
    elapsed_s: float | None = None
    submitted_at: str
    completed_at: str | None = None
    checked_at: str | None = Field(
        None, description="When mediamux last asked the provider about this job; null if it never needed to"
    )
    deduplicated: bool = Field(
        False, description="True when an identical recent job was returned instead of paying again"
    )
    note: str | None = Field(None, description="What to do next, when the job is not finished")


class JobRecord(BaseModel):
    """A journal row."""

    job_id: str
    provider: str
    operation: str
    dedup_key: str
    args: dict[str, Any]
    options: dict[str, Any] = Field(default_factory=dict)
    provider_job_id: str | None = None
    status: str
    provider_status: str | None = None
    submit_state: Literal["pending", "accepted", "rejected", "uncertain"] = "pending"
    result: dict[str, Any] | None = None
    error: JobError | None = None
    cost: Cost = Field(default_factory=Cost)
    session_id: str
    submitted_ts: float
    updated_ts: float
    completed_ts: float | None = None
    polls: int = 0
    finalized: bool = Field(False, description="Outputs saved: nothing is left to do for a completed job")
    reserved_usd: float | None = Field(
        None, description="What the budget holds for this job until the provider reports its charge"
    )
    price_key: str | None = Field(None, description="What its price is learned under (MuAPI: the model)")
    owner: str | None = Field(None, description="The process that submitted it (host:pid:session)")
    checked_ts: float | None = Field(None, description="When the provider was last asked about it")
    principal: str = Field("local", description="Whose job: the signed-in principal, or local")

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES
