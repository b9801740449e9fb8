"""What every toolset shares: registration as data, service lookup, progress, and result shaping.

Tools are thin: validate with types, call a provider client or the job engine, shape the
answer. Failures the model can act on come back as ``isError`` results whose text names the
provider, the operation, what happened and what to do, with the machine-readable class in
``_meta["mediamux/error"]``.
"""

from __future__ import annotations

import functools
import inspect
import json
import logging
import os
import secrets
import typing
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, TypeVar

import anyio
from mcp.server.mcpserver import Context
from mcp_types import CallToolResult, ResourceLink, TextContent, ToolAnnotations
from pydantic import BaseModel, Field, ValidationError, WithJsonSchema

from mediamux.config import JOBS_TOOLSET
from mediamux.context import services
from mediamux.errors import MediamuxError
from mediamux.files import MEDIA_KINDS, FileAccessError, check_uploadable, resolve_allowed_path
from mediamux.jobs.engine import SPEND_GATE, Progress
from mediamux.jobs.models import JobResult
from mediamux.principals import current_principal
from mediamux.providers.cost import format_usd
from mediamux.providers.transport import DEFAULT_ADVICE
from mediamux.tools.confirm import ConfirmationPending, ElicitingGate

logger = logging.getLogger("mediamux.tools")

F = TypeVar("F", bound=Callable[..., Awaitable[Any]])
C = TypeVar("C")

ERROR_META_KEY = "mediamux/error"
COST_META_KEY = "mediamux/cost"

# What wait_s and new_job mean, and wait_s's bounds, are said once, in the server's instructions
# (mediamux.tools.catalog), not in each of the twenty tools that take them. The bounds still hold.
WaitS = Annotated[float, Field(ge=0, le=600), WithJsonSchema({"type": "number"})]
NewJob = bool


@dataclass
class ToolSpec:
    fn: Callable[..., Awaitable[Any]]
    name: str
    title: str
    annotations: ToolAnnotations
    toolset: str
    mark: tuple[str, str] | None = None  # its toolset's icon

    @property
    def read_only(self) -> bool:
        return bool(self.annotations.read_only_hint)

    @property
    def job(self) -> bool:
        """Whether it waits for a job within wait_s and answers in the job shape: such a call can
        become an MCP task (its job_id is the task id)."""
        signature = inspect.signature(self.fn)
        if "wait_s" not in signature.parameters:
            return False
        shapes = typing.get_args(signature.return_annotation)[1:]
        return any(isinstance(s, type) and issubclass(s, JobResult) for s in shapes)


@dataclass
class Toolset:
    id: str
    title: str
    description: str  # one line of the server's instructions: what this toolset is for
    # Its icon on every one of its tools: an SVG path on a 16x16 grid and its fill colour.
    mark: tuple[str, str] | None = None
    specs: list[ToolSpec] = field(default_factory=list)

    def tool(
        self,
        *,
        title: str,
        read_only: bool,
        destructive: bool = False,
        idempotent: bool = False,
        open_world: bool = True,
    ) -> Callable[[F], F]:
        """Register a tool with explicit annotations; errors become actionable isError results."""

        def decorate(fn: F) -> F:
            annotations = ToolAnnotations(
                title=title,
                read_only_hint=read_only,
                destructive_hint=destructive if not read_only else False,
                idempotent_hint=idempotent or read_only,
                open_world_hint=open_world,
            )
            wrapped = guarded(fn, source=self.title)
            if annotations.destructive_hint and self.id != JOBS_TOOLSET:
                # The job engine audits its own cancels; every other destructive tool is audited here.
                wrapped = audited(wrapped)
            self.specs.append(ToolSpec(wrapped, fn.__name__, title, annotations, self.id, self.mark))
            return fn

        return decorate


def guarded(fn: F, *, source: str) -> F:
    """``fn`` with every error it raises on purpose turned into an isError result in the one shape.

    ``source`` names who answered (the toolset's provider) in an unreadable-answer error. Paid jobs
    started inside the call ask their user through this call's client first, where that is due
    (tools.confirm).
    """

    @functools.wraps(fn)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        ctx = next((v for v in kwargs.values() if isinstance(v, Context)), None)
        gate = SPEND_GATE.set(ElicitingGate(ctx, fn.__name__) if ctx is not None else None)
        try:
            return await fn(*args, **kwargs)
        except ConfirmationPending as pending:
            return pending.result  # the question, as this round's result; the retry brings the answer
        except MediamuxError as exc:
            # One root for every layer's errors, so none can slip past as a bare "Error executing tool".
            return error_result(
                exc.error_class, exc.message, exc.retry_after_s, arguments=list(exc.arguments)
            )
        except ValidationError as exc:
            # The caller's arguments are refused before the body runs (the SDK validates them; the
            # server tells that in this shape), and bodies raise InputError for what a schema cannot
            # say. A ValidationError here comes from reading an answer: the provider's fault.
            found = _unreadable(exc)
            logger.warning("unreadable answer in %s: %s", fn.__name__, found)
            return error_result(
                "provider_error",
                f"{source}: an answer could not be read ({found}); {DEFAULT_ADVICE['provider_error']}",
            )
        finally:
            SPEND_GATE.reset(gate)

    # Resolve the tool module's string annotations here: the SDK reads the wrapper, whose globals differ.
    wrapper.__signature__ = inspect.signature(fn, eval_str=True)  # type: ignore[attr-defined]
    return wrapper  # type: ignore[return-value]


def audited(fn: F) -> F:
    """``fn`` with an audit entry (principal, time, tool, the ids it was given) after each success."""

    @functools.wraps(fn)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        result = await fn(*args, **kwargs)
        ctx = kwargs.get("ctx")
        if isinstance(ctx, Context) and not (isinstance(result, CallToolResult) and result.is_error):
            # Identifiers only (short strings and numbers): never a value that could be a secret or content.
            named = {
                k: v
                for k, v in kwargs.items()
                if k != "ctx" and isinstance(v, str | int | float) and len(str(v)) <= 80
            }
            name = fn.__name__
            action = "delete" if ("delete" in name or "remove" in name) else "change"
            try:
                svc = services(ctx)
                await anyio.to_thread.run_sync(
                    functools.partial(
                        svc.journal.audit,
                        principal=current_principal(),
                        action=action,
                        ts=svc.clock.now().timestamp(),
                        tool=name,
                        detail=json.dumps(named, sort_keys=True)[:500],
                    )
                )
            except MediamuxError as exc:
                logger.warning("audit entry for %s not written: %s", name, exc.message)
        return result

    wrapper.__signature__ = inspect.signature(fn)  # type: ignore[attr-defined]
    return wrapper  # type: ignore[return-value]


def _unreadable(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors(include_url=False)[:3]:
        loc = ".".join(str(p) for p in err.get("loc", ()))
        parts.append(f"{loc}: {err.get('msg')}" if loc else str(err.get("msg")))
    return "; ".join(parts)


def error_result(
    error_class: str,
    message: str,
    retry_after_s: float | None = None,
    *,
    arguments: list[str] | None = None,
) -> CallToolResult:
    meta: dict[str, Any] = {"class": error_class, "message": message}
    if retry_after_s is not None:
        meta["retry_after_s"] = retry_after_s
    if arguments:
        meta["arguments"] = arguments
    return CallToolResult(
        is_error=True,
        content=[TextContent(type="text", text=f"[{error_class}] {message}")],
        _meta={ERROR_META_KEY: meta},
    )


def provider_client(ctx: Context, provider: str, kind: type[C]) -> C:
    """The provider's client, or a MissingCredentials error naming the variable to set."""
    return services(ctx).clients.require(provider, kind)


def upload_path(
    ctx: Context,
    raw: str,
    *,
    kinds: tuple[str, ...] = MEDIA_KINDS,
    extensions: tuple[str, ...] = (),
    argument: str = "path",
) -> Path:
    """A local file a tool may send to a provider: confined to the allowed folders, and media.

    A refusal names ``argument``, the tool argument the path came in, as every invalid_input does.
    """
    files = services(ctx).files
    try:
        path = resolve_allowed_path(raw, files.allowed_dirs)
        return check_uploadable(
            path,
            roots=files.allowed_dirs,
            kinds=kinds,
            extensions=extensions,
            protected=files.protected,
            exempt=[files.output_dir],
        )
    except FileAccessError as exc:
        exc.message = f"{argument}: {exc.message}"
        exc.arguments = (argument.split(".")[0],)
        raise


def file_stamp(path: Path) -> str:
    """Part of a job's duplicate key for a local input: an edited file is a new request."""
    stat = path.stat()
    return f"{stat.st_size}:{stat.st_mtime_ns}"


def write_key_file(home: Path, provider: str, key: str) -> Path:
    """A newly created provider key goes to a file only its owner can read, never into a result."""
    folder = home.expanduser() / "keys"
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = folder / f"{provider}-key-{secrets.token_hex(4)}.txt"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(key + "\n")
    return path


def progress_of(ctx: Context) -> Progress:
    """The request's one Progress, however many steps ask for it: the host sees one rising sequence.
    Kept on the request's own context object, so it lives and dies with the request."""
    request = ctx.request_context
    found: Progress | None = getattr(request, "_mediamux_progress", None)
    if found is None:

        async def report(progress: float, total: float | None, message: str) -> None:
            await ctx.report_progress(progress, total, message)

        found = Progress(report)
        setattr(request, "_mediamux_progress", found)  # noqa: B010 - a name no SDK field can clash with
    return found


def model_result(
    model: BaseModel, summary: str, *, links: list[ResourceLink] | None = None
) -> CallToolResult:
    """Structured output plus one readable text block (summary line, then the same data as JSON)."""
    data = model.model_dump(mode="json", by_alias=True)
    text = summary + "\n" + json.dumps(data, separators=(",", ":"), ensure_ascii=False)
    return CallToolResult(
        content=[TextContent(type="text", text=text), *(links or [])],
        structured_content=data,
    )


def job_result(view: JobResult[Any], *, title: str, error_on_failure: bool = True) -> CallToolResult:
    failed = error_on_failure and view.status in ("failed", "cancelled", "expired")
    summary = job_summary(view, title)
    if failed and view.error is not None:
        # An isError result opens with its class, as every other error does; the job's shape stays.
        summary = f"[{view.error.error_class}] {summary}"
    result = model_result(view, summary, links=job_links(view))
    meta: dict[str, Any] = {COST_META_KEY: view.cost.model_dump(mode="json")}
    if view.error is not None:
        meta[ERROR_META_KEY] = view.error.model_dump(mode="json", by_alias=True)
    result.meta = meta
    result.is_error = failed
    return result


def job_links(view: JobResult[Any]) -> list[ResourceLink]:
    if not view.job_id:
        return []  # declined: there is no job to link to
    links = [
        ResourceLink(
            type="resource_link",
            uri=f"mediamux://jobs/{view.job_id}",
            name=view.job_id,
            mime_type="application/json",
            description=f"{view.provider} {view.operation} job",
        )
    ]
    result = view.result if isinstance(view.result, dict) else None
    for saved in (result or {}).get("saved") or []:
        links.append(
            ResourceLink(
                type="resource_link",
                uri=saved["uri"],
                name=saved["name"],
                mime_type=saved.get("mime_type"),
                size=saved.get("size_bytes"),
            )
        )
    return links


def money(usd: float | None) -> str:
    return "cost not reported" if usd is None else format_usd(usd)


def job_summary(view: JobResult[Any], title: str) -> str:
    if view.status == "declined":
        return f"{title}: declined · {view.note}"
    head = f"{title}: {view.status}"
    if view.deduplicated:
        head += " (identical recent job reused, not charged again)"
    parts = [head]
    if view.elapsed_s is not None:
        parts.append(f"{view.elapsed_s:.1f} s")
    if view.cost.refunded:
        parts.append(f"{money(view.cost.usd)} refunded")
    elif view.cost.usd is None and view.cost.tokens is not None:
        parts.append(f"{view.cost.tokens:g} tokens")
    else:
        parts.append(money(view.cost.usd))
    result = view.result if isinstance(view.result, dict) else {}
    saved = result.get("saved") or []
    if saved:
        parts.append(f"saved {', '.join(s['path'] for s in saved)}")
    elif result.get("outputs"):
        parts.append(f"{len(result['outputs'])} output(s)")
    if view.error is not None:
        parts.append(view.error.message)
    if view.note:
        parts.append(view.note)
    parts.append(f"job {view.job_id}")
    return " · ".join(parts)
