"""Builds the MCP server: enabled toolsets, resources, and a lifespan that opens the services."""

from __future__ import annotations

import difflib
import logging
from collections.abc import AsyncIterator, Iterable
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

from mcp.server.lowlevel.helper_types import ReadResourceContents
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError, UnexpectedToolError
from mcp_types import CallToolResult, InputRequiredResult
from pydantic import AnyUrl, ValidationError

from mediamux import __version__, registry
from mediamux.apps import viewer
from mediamux.clock import Clock
from mediamux.config import JOBS_TOOLSET, Settings, toolset_ids
from mediamux.context import Services, services, serving
from mediamux.providers.transport import RetryConfig
from mediamux.resources import OUTPUTS_PREFIX, read_output, register_resources
from mediamux.server.notify import Notifier
from mediamux.server.prompts import register_prompts
from mediamux.server.services import open_services, sandbox_settings
from mediamux.server.state_keys import install as install_state_refusals
from mediamux.server.state_keys import request_state_security
from mediamux.tools import arguments as argument_errors
from mediamux.tools.base import Toolset, error_result

logger = logging.getLogger("mediamux.server")


def toolset(toolset_id: str) -> Toolset:
    if toolset_id == JOBS_TOOLSET:
        from mediamux.tools.jobs import toolset as jobs

        return jobs
    return registry.get(toolset_id).toolset()


INSTRUCTIONS = (
    "mediamux gives typed access to media-AI providers (MuAPI generation; muse.ai, Muzaic and Mixpeek "
    "where enabled). Paid tools report what they cost; long jobs return a job_id that jobs_wait resumes "
    "without paying again. Local files must be inside the allowed folders (MEDIAMUX_ALLOWED_DIRS); "
    "generated files are saved in the output folder and returned as paths and mediamux://outputs/ links."
)


class MediamuxServer(MCPServer[Services]):
    # The running services, for /healthz and diagnostics only: tools and resources get theirs from
    # the request (mediamux.context.services), never from here.
    services: Services | None = None
    # What chose the tools, to say why a tool that exists elsewhere is not offered here.
    mediamux_settings: Settings | None = None

    async def call_tool(
        self, name: str, arguments: dict[str, Any], context: Context[Services, Any] | None = None
    ) -> CallToolResult | InputRequiredResult:
        # The SDK refuses an unknown tool, and arguments that fail the tool's schema, before any
        # mediamux code runs, in its own words (pydantic's, for arguments). Both are told here in the
        # shape every tool error has: "[class] argument: what is wrong; what to do".
        try:
            return await super().call_tool(name, arguments, context)
        except ToolError as exc:
            if isinstance(exc, UnexpectedToolError):
                raise
            if isinstance(exc.__cause__, ValidationError):
                return await self._invalid_arguments(name, exc.__cause__)
            offered = [tool.name for tool in await self.list_tools()]
            if name not in offered:
                return _unknown_tool(name, offered, self.mediamux_settings)
            raise

    async def _invalid_arguments(self, name: str, exc: ValidationError) -> CallToolResult:
        schema = next((t.input_schema for t in await self.list_tools() if t.name == name), None)
        message, named = argument_errors.describe(exc, schema)
        # Argument names only: the values are the caller's data (the SDK logs the same way).
        logger.info("tool %s refused its arguments: %s", name, ", ".join(named))
        return error_result("invalid_input", message, arguments=named)

    async def read_resource(
        self, uri: AnyUrl | str, context: Context[Services, Any] | None = None
    ) -> Iterable[ReadResourceContents] | InputRequiredResult:
        # Saved outputs are images, audio and video: serve each with its own media type, which a
        # single template registration cannot express.
        if context is None:
            return await super().read_resource(uri, context)
        svc = services(context)
        if str(uri).startswith(OUTPUTS_PREFIX):
            data, mime = await read_output(svc, str(uri))
            return [ReadResourceContents(content=data, mime_type=mime)]
        with serving(svc):
            return await super().read_resource(uri, context)


def _unknown_tool(name: str, offered: list[str], settings: Settings | None) -> CallToolResult:
    hidden = _why_not_offered(name, settings) if settings is not None else None
    if hidden is not None:
        return error_result("not_found", f"{name} is not offered by this server: {hidden}")
    closest = difflib.get_close_matches(name, offered, n=3, cutoff=0.5)
    hint = f"the closest are {', '.join(closest)}; " if closest else ""
    return error_result(
        "not_found", f"no tool named {name!r}; {hint}tools/list lists the {len(offered)} tools offered"
    )


def _why_not_offered(name: str, settings: Settings) -> str | None:
    """Why a tool of a known toolset is missing, or None for a name no toolset has.

    Loads every toolset, which start-up avoids for disabled providers: this runs only on an error.
    """
    enabled = settings.enabled_toolsets()
    for toolset_id in toolset_ids():
        spec = next((s for s in toolset(toolset_id).specs if s.name == name), None)
        if spec is None:
            continue
        if toolset_id not in enabled:
            return (
                f"the {toolset_id} toolset is not enabled (MEDIAMUX_TOOLSETS, or no API key for it); "
                "tools/list lists the tools offered"
            )
        if settings.read_only and not spec.read_only:
            return (
                "MEDIAMUX_READ_ONLY hides every tool that spends money, creates or deletes; "
                "tools/list lists the tools offered"
            )
    return None


def selected_tools(settings: Settings) -> list[Any]:
    enabled = settings.enabled_toolsets()
    specs = []
    for toolset_id in enabled:
        for spec in toolset(toolset_id).specs:
            # Read-only wins over an explicit toolset list: nothing that spends, creates or deletes.
            if settings.read_only and not spec.read_only:
                continue
            specs.append(spec)
    return specs


@asynccontextmanager
async def running_services(
    settings: Settings,
    *,
    clock: Clock | None = None,
    sandbox: Any = None,
    retry: RetryConfig | None = None,
    notifier: Notifier | None = None,
) -> AsyncIterator[Services]:
    """Services for one process; with a sandbox, its emulators are served on loopback meanwhile."""
    async with AsyncExitStack() as stack:
        effective = settings
        if sandbox is not None:
            urls = await stack.enter_async_context(sandbox.running())
            effective = sandbox_settings(settings, urls, sandbox.keys)
        svc = await stack.enter_async_context(
            open_services(effective, clock=clock, retry=retry, notifier=notifier)
        )
        yield svc


def default_sandbox(settings: Settings) -> Any:
    if not settings.sandbox:
        return None
    # Under the home, like the journal: a server restarted on the same home finds the jobs, uploads and
    # wallets its emulators had, as it would find them at the real services.
    return registry.make_sandbox(state_dir=sandbox_state_dir(settings))


def sandbox_state_dir(settings: Settings) -> Path:
    return settings.home.expanduser().resolve() / "sandbox"


def build_server(
    settings: Settings,
    *,
    clock: Clock | None = None,
    sandbox: Any = None,
    retry: RetryConfig | None = None,
) -> MediamuxServer:
    """The composition root. ``sandbox`` (a ``mediamux.sandbox.Sandbox``) is served on loopback for the
    server's lifetime and every emulated provider is pointed at it; with ``settings.sandbox`` and no
    instance given, a default one is created."""
    # A sandbox this server made for itself is its to clean up; one passed in (tests) is the caller's.
    owned = sandbox is None and settings.sandbox
    sandbox = sandbox or default_sandbox(settings)
    if sandbox is not None and not settings.sandbox:
        settings = settings.model_copy(update={"sandbox": True})

    @asynccontextmanager
    async def lifespan(server: MCPServer[Services]) -> AsyncIterator[Services]:
        async with running_services(
            settings, clock=clock, sandbox=sandbox, retry=retry, notifier=notifier
        ) as svc:
            mcp.services = svc
            try:
                yield svc
            finally:
                mcp.services = None
        if owned:
            sandbox.close()

    notifier = Notifier()
    mcp = MediamuxServer(
        "mediamux",
        subscriptions=notifier.bus,
        title="mediamux",
        version=__version__,
        instructions=INSTRUCTIONS,
        website_url="https://github.com/mediamux/mediamux",
        lifespan=lifespan,
        log_level="WARNING",
        request_state_security=request_state_security(settings),
        extensions=[viewer.extension()],
    )
    install_state_refusals(mcp)
    mcp.mediamux_settings = settings
    specs = selected_tools(settings)
    for spec in specs:
        mcp.add_tool(
            spec.fn,
            name=spec.name,
            title=spec.title,
            annotations=spec.annotations,
            meta=viewer.tool_meta(spec.fn),
        )
    register_resources(mcp)
    for toolset_id in settings.enabled_toolsets():
        resources = registry.get(toolset_id).resources if toolset_id != JOBS_TOOLSET else None
        if resources is not None:
            resources(mcp)
    register_prompts(mcp, settings.enabled_toolsets())
    notifier.install(mcp)
    return mcp
