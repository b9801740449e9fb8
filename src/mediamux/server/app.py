"""Builds the MCP server: enabled toolsets, resources, and a lifespan that opens the services."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from mcp import MCPError
from mcp.server.lowlevel.helper_types import ReadResourceContents
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ResourceNotFoundError, ToolError, UnexpectedToolError
from mcp.server.mcpserver.tools import Tool, ToolManager
from mcp.server.request_state import RequestStateBoundary
from mcp.shared.subscriptions import ToolsListChanged
from mcp.shared.uri_template import UriTemplate
from mcp_types import (
    INVALID_PARAMS,
    CallToolResult,
    CompleteRequestParams,
    GetPromptResult,
    InputRequiredResult,
)
from mcp_types import Tool as MCPTool
from pydantic import AnyUrl, ValidationError

from mediamux import __version__, registry
from mediamux.apps import viewer
from mediamux.config import JOBS_TOOLSET, Settings, toolset_ids
from mediamux.context import Services, services, serving
from mediamux.files import OUTPUTS_PREFIX, FileAccessError, parse_allowed_dirs
from mediamux.files.confinement import logger as files_logger
from mediamux.principals import SPEND_SCOPE, can_spend
from mediamux.server import (
    client_logs,
    identity,  # noqa: F401 - installs the reader of the signed-in principal
    profiles,
    startup,
)
from mediamux.server.notify import Notifier
from mediamux.server.refusals import invalid_params
from mediamux.server.state_keys import install as install_state_refusals
from mediamux.server.state_keys import request_state_security
from mediamux.tasks import TasksExtension
from mediamux.tools import catalog

# A stdio server answers its first tools/list having imported only what that answer takes
# (mediamux.server.startup; tests/test_startup.py pins it): the toolsets, provider clients, journal,
# engine and emulators are imported where they are used, after that answer.
if TYPE_CHECKING:
    from mediamux.clock import Clock
    from mediamux.jobs.models import JobResult
    from mediamux.providers.transport import RetryConfig
    from mediamux.tools.base import Toolset

logger = logging.getLogger("mediamux.server")


def toolset(toolset_id: str) -> Toolset:
    if toolset_id == JOBS_TOOLSET:
        from mediamux.tools.jobs import toolset as jobs

        return jobs
    return registry.get(toolset_id).toolset()


def server_instructions(settings: Settings, descriptions: Mapping[str, str] | None = None) -> str:
    """The server's instructions for this configuration: enabled toolsets, readable folders, jobs.
    ``descriptions`` (toolset -> what it does, from a kept catalog) spares importing the toolsets."""
    try:
        with _quiet(files_logger):  # the services say why a folder is left out, once, when they open
            folders = list(parse_allowed_dirs(settings.allowed_dirs, output_dir=settings.output_dir))
    except FileAccessError:
        folders = []  # a refused folder stops the services from opening, with its own message
    return catalog.instructions(
        [
            (t, descriptions[t] if descriptions is not None else toolset(t).description)
            for t in settings.enabled_toolsets()
        ],
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
    # A lazy stdio start (mediamux.server.startup), or None: everything was ready before serving.
    lazy_start: startup.LazyStart | None = None

    def hidden(self, name: str) -> str | None:
        """Why the request being served may not see the registered tool ``name``, or None if it may.

        The one place that decides which tools THIS request sees: tools/list and tools/call both ask
        it. The process's settings decided what is registered; the connection's profile narrows that.
        """
        tool = self._tool_manager.get_tool(name)
        if tool is not None:
            annotations = tool.annotations
        else:  # not registered yet: as the kept catalog that answers tools/list meanwhile says
            annotations = self.lazy_start.kept_annotations(name) if self.lazy_start is not None else None
        read_only = annotations is not None and bool(annotations.read_only_hint)
        if not read_only and not can_spend():
            # A signed-in token without mediamux:spend sees the read-only catalog, as MEDIAMUX_READ_ONLY does.
            return (
                f"it spends money or changes data, which needs the {SPEND_SCOPE} scope, and this sign-in "
                f"has only read access; ask for a token with {SPEND_SCOPE}"
            )
        return profiles.hidden(self.tool_toolsets.get(name), read_only)

    async def list_tools(self) -> list[MCPTool]:
        kept = self.lazy_start.catalog() if self.lazy_start is not None else None
        tools = kept if kept is not None else await super().list_tools()
        return [tool for tool in tools if self.hidden(tool.name) is None]

    def add_tools(self, tools: list[Tool]) -> None:
        """Register built tools ahead of any an extension registered, where the constructor puts them."""
        self._tool_manager = ToolManager(
            warn_on_duplicate_tools=self.settings.warn_on_duplicate_tools,
            tools=[*tools, *self._tool_manager.list_tools()],
        )

    # Where providers' webhooks reach this server, when they can (set by the HTTP transport).
    hook_base: str | None = None

    async def call_tool(
        self, name: str, arguments: dict[str, Any], context: Context[Services, Any] | None = None
    ) -> CallToolResult | InputRequiredResult:
        from mediamux.tools.base import error_result

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
        from mediamux.tools import arguments as argument_errors
        from mediamux.tools.base import error_result

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
                from mediamux.resources import read_output

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
            from mediamux.server.prompts import prompt_argument_error

            problem = prompt_argument_error(exc)
            if problem is None:
                raise
            raise invalid_params(
                f"prompt {name}: {problem}", prompt=name, **{"class": "invalid_input"}
            ) from None


def _unknown_tool(name: str, offered: list[str], settings: Settings | None) -> MCPError:
    """An unknown tool is a protocol error (-32602) in both eras' specifications, not a tool result;
    the message still says why a tool that exists elsewhere is not offered here."""
    import difflib

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
    from mediamux.server.services import open_services, sandbox_settings

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
    lazy: bool = False,
) -> MediamuxServer:
    """The composition root. ``sandbox`` (a ``mediamux.sandbox.Sandbox``) is served on loopback for the
    server's lifetime and every emulated provider is pointed at it; with ``settings.sandbox`` and no
    instance given, a default one is created.

    ``lazy`` (``mediamux serve`` over stdio): the first ``tools/list`` is answered from the catalog an
    earlier start kept, when its key matches; the tools, resources and prompts are registered and the
    services (the sandbox's emulators among them) opened right after that answer, or as soon as a
    request needs them. Every request that needs them waits for them (``mediamux.server.startup``).
    """
    # A sandbox this server made for itself is its to clean up; one passed in (tests) is the caller's.
    owned = sandbox is None and settings.sandbox
    if not lazy:
        sandbox = sandbox or default_sandbox(settings)
    if sandbox is not None and not settings.sandbox:
        settings = settings.model_copy(update={"sandbox": True})

    @asynccontextmanager
    async def services_open() -> AsyncIterator[Services]:
        # Started lazily, a server makes its own sandbox only now: the emulators import and start here.
        box = sandbox if sandbox is not None else default_sandbox(settings)
        try:
            async with running_services(
                settings, clock=clock, sandbox=box, retry=retry, notifier=notifier
            ) as svc:
                mcp.services = svc
                svc.engine.hook_base = mcp.hook_base
                try:
                    yield svc
                finally:
                    mcp.services = None
        finally:
            if owned and box is not None:
                box.close()

    @asynccontextmanager
    async def lifespan(server: MCPServer[Services]) -> AsyncIterator[Any]:
        if mcp.lazy_start is None:
            async with services_open() as svc:
                yield svc
        else:
            async with mcp.lazy_start.running() as deferred:
                yield deferred

    key = startup.catalog_key(settings) if lazy else None
    kept = startup.load(settings, key) if key is not None else None
    if kept is not None and set(kept.descriptions) != set(settings.enabled_toolsets()):
        kept = None  # not this configuration's, whatever its key says: registered at once, and replaced
    notifier = Notifier(subscription_bus(settings))
    tasks = TasksExtension(
        # A finished task carries what jobs_wait returns for its job: the tool's job shape.
        render=_job_result,
        # Known once the toolsets are loaded (_registration), or from the kept catalog until then.
        job_tools=kept.job_tools if kept is not None else (),
        engine_of=lambda svc: svc.engine,
        sync_s=settings.task_sync_s,
    )
    mcp = MediamuxServer(
        "mediamux",
        subscriptions=notifier.bus,
        title="mediamux",
        version=__version__,
        instructions=server_instructions(settings, kept.descriptions if kept is not None else None),
        website_url="https://github.com/mediamux/mediamux",
        icons=[catalog.icon()],
        lifespan=lifespan,
        log_level="WARNING",
        request_state_security=request_state_security(settings),
        extensions=[viewer.extension(), tasks],
    )
    steps = _registration(mcp, settings, tasks)

    async def registered() -> None:
        """Keep what tools/list answers now that the tools are registered; if a kept catalog was served
        and differs, replace it, say so, and tell listening clients to list again."""
        if key is None:
            return
        live = startup.Catalog(
            tools=startup.dump_tools(await MCPServer.list_tools(mcp)),
            toolsets=dict(mcp.tool_toolsets),
            job_tools=sorted(tasks.job_tools),
            descriptions={t: toolset(t).description for t in settings.enabled_toolsets()},
        )
        if live == kept:
            return
        startup.save(settings, key, live)
        if kept is not None:
            logger.warning("the tool catalog kept by an earlier start was out of date; it is replaced")
            await notifier.bus.publish(ToolsListChanged())

    if lazy:
        mcp.lazy_start = startup.LazyStart(
            steps=steps if kept is not None else None,
            kept=kept,
            open_services=services_open,
            registered=registered,
            secrets=settings.secrets(),
        )
        # Inside the SDK's telemetry span (a request's wait is part of it), outside everything else.
        chain = mcp.middleware
        at = next((i for i, m in enumerate(chain) if isinstance(m, RequestStateBoundary)), 0)
        chain.insert(at, mcp.lazy_start.middleware)
    install_state_refusals(mcp)
    mcp.mediamux_settings = settings
    notifier.install(mcp)
    tasks.install(mcp, notifier.bus)
    client_logs.install(mcp, settings.secrets())
    if kept is None:
        for _ in steps:
            pass
    else:
        mcp.tool_toolsets = MappingProxyType(dict(kept.toolsets))
        # Advertised from the start, as the real handler (installed with the tools) is: no request
        # reaches this stand-in, since completion/complete waits for the tools (LazyStart.middleware).
        mcp._lowlevel_server.add_request_handler("completion/complete", CompleteRequestParams, _not_yet)
    return mcp


def _job_result(view: JobResult[Any]) -> CallToolResult:
    from mediamux.tools.base import job_result

    return job_result(view, title=f"{view.provider} {view.operation}")


async def _not_yet(ctx: Any, params: CompleteRequestParams) -> Any:
    raise startup.startup_error("mediamux is still starting: its completions are not registered yet")


def _registration(mcp: MediamuxServer, settings: Settings, tasks: TasksExtension) -> Iterator[None]:
    """Register the enabled tools, resources, prompts and completions, yielding between steps (a
    toolset's import, one tool), so a lazy start can spread the work around the requests it serves."""
    from mediamux.resources import register_resources
    from mediamux.server import completions
    from mediamux.server.prompts import register_prompts

    enabled = settings.enabled_toolsets()
    specs = []
    for toolset_id in enabled:
        for spec in toolset(toolset_id).specs:
            # Read-only wins over an explicit toolset list: nothing that spends, creates or deletes.
            if settings.read_only and not spec.read_only:
                continue
            specs.append(spec)
        yield
    tools = []
    # In name order: the same list, byte for byte, whatever order the toolsets were named in.
    for spec in sorted(specs, key=lambda s: s.name):
        tools.append(catalog.build_tool(spec, extra_meta=viewer.tool_meta))
        yield
    mcp.add_tools(tools)
    mcp.tool_toolsets = MappingProxyType({spec.name: spec.toolset for spec in specs})
    tasks.job_tools = frozenset(spec.name for spec in specs if spec.job)
    register_resources(mcp)
    for toolset_id in enabled:
        resources = registry.get(toolset_id).resources if toolset_id != JOBS_TOOLSET else None
        if resources is not None:
            resources(mcp)
    register_prompts(mcp, enabled)
    completions.install(mcp, enabled)
