"""Builds the MCP server: enabled toolsets, resources, and a lifespan that opens the services."""

from __future__ import annotations

import difflib
import logging
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from pathlib import Path
from types import MappingProxyType
from typing import Any

from mcp import MCPError
from mcp.server.lowlevel.helper_types import ReadResourceContents
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ResourceNotFoundError, ToolError, UnexpectedToolError
from mcp.shared.uri_template import UriTemplate
from mcp_types import INVALID_PARAMS, CallToolResult, GetPromptResult, InputRequiredResult
from mcp_types import Tool as MCPTool
from pydantic import AnyUrl, ValidationError

from mediamux import __version__, registry
from mediamux.apps import viewer
from mediamux.clock import Clock
from mediamux.config import JOBS_TOOLSET, Settings, toolset_ids
from mediamux.context import Services, services, serving
from mediamux.files import FileAccessError, parse_allowed_dirs
from mediamux.files.confinement import logger as files_logger
from mediamux.principals import SPEND_SCOPE, can_spend
from mediamux.providers.transport import RetryConfig
from mediamux.resources import OUTPUTS_PREFIX, read_output, register_resources
from mediamux.server import (
    client_logs,
    completions,
    identity,  # noqa: F401 - installs the reader of the signed-in principal
    profiles,
)
from mediamux.server.notify import Notifier
from mediamux.server.prompts import prompt_argument_error, register_prompts
from mediamux.server.refusals import invalid_params
from mediamux.server.services import open_services, sandbox_settings
from mediamux.server.state_keys import install as install_state_refusals
from mediamux.server.state_keys import request_state_security
from mediamux.tasks import TasksExtension
from mediamux.tools import arguments as argument_errors
from mediamux.tools import catalog
from mediamux.tools.base import Toolset, error_result, job_result

logger = logging.getLogger("mediamux.server")


def toolset(toolset_id: str) -> Toolset:
    if toolset_id == JOBS_TOOLSET:
        from mediamux.tools.jobs import toolset as jobs

        return jobs
    return registry.get(toolset_id).toolset()


def server_instructions(settings: Settings) -> str:
    """The server's instructions for this configuration: enabled toolsets, readable folders, jobs."""
    try:
        with _quiet(files_logger):  # the services say why a folder is left out, once, when they open
            folders = list(parse_allowed_dirs(settings.allowed_dirs, output_dir=settings.output_dir))
    except FileAccessError:
        folders = []  # a refused folder stops the services from opening, with its own message
    return catalog.instructions(
        [(t, toolset(t).description) for t in settings.enabled_toolsets()],
        folders=folders,
        output_dir=settings.output_dir,
        dedup_window_s=settings.dedup_window_s,
        read_only=settings.read_only,
    )


@contextmanager
def _quiet(log: logging.Logger) -> Iterator[None]:
    previous = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(previous)


class MediamuxServer(MCPServer[Services]):
    # The running services, for /healthz and diagnostics only: tools and resources get theirs from
    # the request (mediamux.context.services), never from here.
    services: Services | None = None
    # What chose the tools, to say why a tool that exists elsewhere is not offered here.
    mediamux_settings: Settings | None = None
    # Registered tool name -> its toolset, for the connection's profile (mediamux.server.profiles).
    tool_toolsets: Mapping[str, str] = MappingProxyType({})

    def hidden(self, name: str) -> str | None:
        """Why the request being served may not see the registered tool ``name``, or None if it may.

        The one place that decides which tools THIS request sees: tools/list and tools/call both ask
        it. The process's settings decided what is registered; the connection's profile narrows that.
        """
        tool = self._tool_manager.get_tool(name)
        read_only = (
            tool is not None and tool.annotations is not None and bool(tool.annotations.read_only_hint)
        )
        if not read_only and not can_spend():
            # A signed-in token without mediamux:spend sees the read-only catalog, as MEDIAMUX_READ_ONLY does.
            return (
                f"it spends money or changes data, which needs the {SPEND_SCOPE} scope, and this sign-in "
                f"has only read access; ask for a token with {SPEND_SCOPE}"
            )
        return profiles.hidden(self.tool_toolsets.get(name), read_only)

    async def list_tools(self) -> list[MCPTool]:
        return [tool for tool in await super().list_tools() if self.hidden(tool.name) is None]

    # Where providers' webhooks reach this server, when they can (set by the HTTP transport).
    hook_base: str | None = None

    async def call_tool(
        self, name: str, arguments: dict[str, Any], context: Context[Services, Any] | None = None
    ) -> CallToolResult | InputRequiredResult:
        # Refused like an unknown tool, and before its arguments are checked: this connection has no
        # such tool, whatever it was sent.
        if self._tool_manager.get_tool(name) is not None and (why := self.hidden(name)) is not None:
            return error_result("not_found", f"{name} is not offered on this connection: {why}")
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
                raise _unknown_tool(name, offered, self.mediamux_settings) from None
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
        # Not found (an unknown URI, or a template whose item does not exist) is the client's to
        # fix: -32602 with the URI, as the 2026 spec asks, logged at DEBUG, never as our failure.
        try:
            if context is None:
                return await super().read_resource(uri, context)
            svc = services(context)
            if str(uri).startswith(OUTPUTS_PREFIX):
                data, mime = await read_output(svc, str(uri))
                return [ReadResourceContents(content=data, mime_type=mime)]
            with serving(svc):
                return await super().read_resource(uri, context)
        except ResourceNotFoundError as exc:
            raise await self._resource_not_found(str(uri), exc) from None

    async def _resource_not_found(self, uri: str, exc: ResourceNotFoundError) -> MCPError:
        templates = [t.uri_template for t in await self.list_resource_templates()]
        known = any(r.uri == uri for r in await self.list_resources()) or any(
            UriTemplate.parse(t).match(uri) is not None for t in templates
        )
        # The SDK's own text for a URI nothing matches is "Unknown resource: <uri>"; say what to do.
        message = (
            str(exc)
            if known
            else f"no resource at {uri}; resources/list and resources/templates/list show what this "
            "server offers"
        )
        logger.debug("resources/read %s: %s", uri, message)
        return MCPError(code=INVALID_PARAMS, message=message, data={"uri": uri, "class": "not_found"})

    async def get_prompt(
        self,
        name: str,
        arguments: dict[str, Any] | None = None,
        context: Context[Services, Any] | None = None,
    ) -> GetPromptResult | InputRequiredResult:
        # The SDK reports an unknown prompt, or arguments that fail it, as an internal error with a
        # traceback at ERROR; both are the client's to fix (-32602).
        prompts = await self.list_prompts()
        prompt = next((p for p in prompts if p.name == name), None)
        if prompt is None:
            raise invalid_params(
                f"no prompt named {name!r}; prompts/list lists the {len(prompts)} prompts offered",
                prompt=name,
            )
        missing = [a.name for a in prompt.arguments or [] if a.required and a.name not in (arguments or {})]
        if missing:
            raise invalid_params(
                f"prompt {name} needs the argument(s) {', '.join(missing)}",
                prompt=name,
                arguments=missing,
                **{"class": "invalid_input"},
            )
        try:
            return await super().get_prompt(name, arguments, context)
        except ValueError as exc:
            problem = prompt_argument_error(exc)
            if problem is None:
                raise
            raise invalid_params(
                f"prompt {name}: {problem}", prompt=name, **{"class": "invalid_input"}
            ) from None


def _unknown_tool(name: str, offered: list[str], settings: Settings | None) -> MCPError:
    """An unknown tool is a protocol error (-32602) in both eras' specifications, not a tool result;
    the message still says why a tool that exists elsewhere is not offered here."""
    hidden = _why_not_offered(name, settings) if settings is not None else None
    if hidden is not None:
        return invalid_params(f"{name} is not offered by this server: {hidden}", tool=name)
    closest = difflib.get_close_matches(name, offered, n=3, cutoff=0.5)
    hint = f"the closest are {', '.join(closest)}; " if closest else ""
    return invalid_params(
        f"no tool named {name!r}; {hint}tools/list lists the {len(offered)} tools offered",
        tool=name,
        closest=closest,
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


def subscription_bus(settings: Settings) -> Any:
    """PostgreSQL LISTEN/NOTIFY when replicas share a database (their listen streams all hear every
    change); else None, the SDK's in-process bus."""
    if settings.database_url is None:
        return None
    from mediamux.server.pg_bus import PostgresSubscriptionBus

    return PostgresSubscriptionBus(settings.database_url.get_secret_value())


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
            svc.engine.hook_base = mcp.hook_base
            try:
                yield svc
            finally:
                mcp.services = None
        if owned:
            sandbox.close()

    notifier = Notifier(subscription_bus(settings))
    specs = selected_tools(settings)
    tasks = TasksExtension(
        # A finished task carries what jobs_wait returns for its job: the tool's job shape.
        render=lambda view: job_result(view, title=f"{view.provider} {view.operation}"),
        job_tools=[spec.name for spec in specs if spec.job],
        engine_of=lambda svc: svc.engine,
        sync_s=settings.task_sync_s,
    )
    mcp = MediamuxServer(
        "mediamux",
        subscriptions=notifier.bus,
        title="mediamux",
        version=__version__,
        instructions=server_instructions(settings),
        website_url="https://github.com/mediamux/mediamux",
        icons=[catalog.icon()],
        tools=catalog.build_tools(specs, extra_meta=viewer.tool_meta),
        lifespan=lifespan,
        log_level="WARNING",
        request_state_security=request_state_security(settings),
        extensions=[viewer.extension(), tasks],
    )
    install_state_refusals(mcp)
    mcp.mediamux_settings = settings
    mcp.tool_toolsets = {spec.name: spec.toolset for spec in specs}
    register_resources(mcp)
    for toolset_id in settings.enabled_toolsets():
        resources = registry.get(toolset_id).resources if toolset_id != JOBS_TOOLSET else None
        if resources is not None:
            resources(mcp)
    register_prompts(mcp, settings.enabled_toolsets())
    notifier.install(mcp)
    tasks.install(mcp, notifier.bus)
    completions.install(mcp, settings.enabled_toolsets())
    client_logs.install(mcp, settings.secrets())
    return mcp
