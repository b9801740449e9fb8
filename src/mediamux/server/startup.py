"""A quick stdio start: the first ``tools/list`` from a kept catalog, everything else right after it.

A host spawns a stdio server and waits for its tool list before the model sees any tool. Building
that list means importing every enabled toolset and letting the SDK derive a pydantic model and a
schema from each tool's signature; opening the services means the journal, the provider clients
and, with ``--sandbox``, starting five emulators. Together they took more than the SDK's whole
start. None of it is needed to *answer* the list, which changes only when the code, the libraries
or the configuration do. So:

* the catalog a server registered is kept under ``MEDIAMUX_HOME/cache``, keyed by everything that
  shapes it (this package's files, the SDK and pydantic as installed, the interpreter, the
  settings with secrets masked, the enabled toolsets). A server whose key finds a catalog answers
  ``tools/list`` from it; any other key finds nothing and the tools are registered at once;
* the tools, resources and prompts are registered, and the services opened, after that first
  answer (:data:`WARM_UP_AFTER_S`), or at once when a request needs them; every request other than
  those listed in :data:`WITHOUT_SERVICES` waits for both (at most :data:`SERVICES_WAIT_S`), so
  nothing ever sees a half-open server, and a start that fails fails each of them with its reason;
* once registered, the tools are compared with the catalog that was served. A difference (which
  the key should make impossible) replaces the kept catalog, is logged and is announced as a tool
  list change.

Only ``mediamux serve`` over stdio starts this way. An HTTP server is a service that takes traffic
once it is up: its readiness probe (``/healthz``), webhooks, drain and the leases replicas share all
need the services open before the first request, and no host waits on its start-up.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import anyio
from mcp.shared.exceptions import MCPError
from mcp_types import INTERNAL_ERROR
from mcp_types import Tool as MCPTool
from pydantic import ValidationError

from mediamux import __version__, registry

if TYPE_CHECKING:
    from anyio.abc import TaskGroup
    from mcp.server.context import CallNext, HandlerResult, ServerRequestContext

    from mediamux.config import Settings
    from mediamux.context import Services

logger = logging.getLogger("mediamux.server")

CACHE_DIR: Final = "cache"
PREFIX: Final = "tools-"
KEEP: Final = 8  # catalogs of other configurations kept beside the current one
FORMAT: Final = 1  # of the kept file; a new format is a new key

# After the first tools/list answer, how long the server leaves the machine to the host reading it
# before it registers the tools and opens the services (at once if a request needs them). A model's
# first tool call comes seconds later; on a busy machine the warm-up would otherwise compete with the
# host for the CPU while it reads the list.
WARM_UP_AFTER_S: Final = 0.2
# How long a request waits for the tools and services before it is answered that the server is still
# starting. Opening them takes well under a second on an idle machine.
SERVICES_WAIT_S: Final = 60.0
# Answered without the services, and without waiting for them: the handshake, liveness, the tool
# list (from the kept catalog while the tools are not registered yet) and the legacy log level.
WITHOUT_SERVICES: Final = frozenset(
    {"initialize", "server/discover", "ping", "tools/list", "logging/setLevel"}
)
# The libraries whose code shapes a tool's schema and its wire form.
LIBRARIES: Final = ("mcp", "mcp_types", "pydantic", "pydantic_core")


@dataclass(frozen=True)
class Catalog:
    """What a server's first answers need from its registered tools, as one start kept it."""

    # MCPServer.list_tools() as the wire carries it: every registered tool, before a connection's
    # profile or a sign-in's scopes narrow it (that is done live, on this list, as on the real one).
    tools: list[dict[str, Any]]
    # Tool name -> its toolset, for the connection's profile.
    toolsets: dict[str, str]
    # The job tools, which the tasks extension marks in a 2025-11-25 tools/list.
    job_tools: list[str]
    # Toolset -> what it does, for the server's instructions (the folders there are read live).
    descriptions: dict[str, str]

    def mcp_tools(self) -> list[MCPTool]:
        return [MCPTool.model_validate(tool) for tool in self.tools]


def dump_tools(tools: list[MCPTool]) -> list[dict[str, Any]]:
    """Tools as the wire carries them: what the catalog keeps, and what two catalogs are compared by."""
    return [t.model_dump(mode="json", by_alias=True, exclude_none=True) for t in tools]


# -- the key ----------------------------------------------------------------------------------------


def _code_digest(root: Path) -> str:
    """SHA-256 over every Python file of the package (path and content): any edit, added or removed
    module changes it, whatever its size or time stamp. (The package's one data file, the job
    viewer's page, is a resource's content, not part of any tool.)"""
    digest = hashlib.sha256()
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        for name in sorted(files):
            if not name.endswith(".py"):
                continue
            path = os.path.join(folder, name)
            try:
                with open(path, "rb") as handle:
                    data = handle.read()
            except OSError:
                continue
            digest.update(os.path.relpath(path, root).encode())
            digest.update(len(data).to_bytes(8, "big"))
            digest.update(data)
    return digest.hexdigest()


def _library_stamps() -> list[Any]:
    """The installed versions of the libraries (their dist-info folders) and a stamp of each one's files:
    any upgrade or reinstall changes them."""
    stamps: list[Any] = []
    folders: set[str] = set()
    for name in LIBRARIES:
        module = sys.modules.get(name) or __import__(name)
        init = Path(module.__file__ or "")
        folders.add(str(init.parent.parent))
        for path in (init, init.parent):
            try:
                st = path.stat()
            except OSError:
                stamps.append([str(path), None])
                continue
            stamps.append([str(path), st.st_size, st.st_mtime_ns])
    for folder in sorted(folders):
        try:
            entries = os.listdir(folder)
        except OSError:
            continue
        # <name>-<version>.dist-info, the name with "_" for "-" (as every installer writes it).
        stamps.append(
            sorted(e for e in entries if e.endswith(".dist-info") and e.split("-", 1)[0].lower() in LIBRARIES)
        )
    return stamps


def key_basis(settings: Settings) -> dict[str, Any] | None:
    """Everything the catalog is a function of; None when that cannot be told (a provider whose code
    lives outside this package, such as a plug-in or a test's fake, is not covered by the digest)."""
    specs = list(registry.PROVIDERS.values())
    if not all(_built_in(spec) for spec in specs):
        return None
    return {
        "format": FORMAT,
        "mediamux": [__version__, _code_digest(Path(__file__).resolve().parents[1])],
        "python": [sys.version, sys.executable],
        "libraries": _library_stamps(),
        # Secrets dump masked ("**********"): only whether each is set reaches the key.
        "settings": settings.model_dump(mode="json"),
        "providers": {spec.id: settings.provider(spec.id).model_dump(mode="json") for spec in specs},
        "toolsets": settings.enabled_toolsets(),
    }


def _built_in(spec: Any) -> bool:
    """Whether ``spec`` is the one this package's registry defines for its id (``mediamux.registry.<id>``)."""
    module = sys.modules.get(f"mediamux.registry.{spec.id}")
    return module is not None and getattr(module, "SPEC", None) is spec


def catalog_key(settings: Settings) -> str | None:
    basis = key_basis(settings)
    if basis is None:
        return None
    text = json.dumps(basis, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


# -- the kept file ----------------------------------------------------------------------------------


def cache_dir(settings: Settings) -> Path:
    return settings.home.expanduser().resolve() / CACHE_DIR


def catalog_path(settings: Settings, key: str) -> Path:
    return cache_dir(settings) / f"{PREFIX}{key[:24]}.json"


def load(settings: Settings, key: str) -> Catalog | None:
    """The catalog kept under ``key``, or None: missing, unreadable, written under another key, or in a
    shape this code does not read (another SDK's tool model, another format)."""
    try:
        data = json.loads(catalog_path(settings, key).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("key") != key:
        return None
    try:
        kept = Catalog(
            tools=list(data["tools"]),
            toolsets=dict(data["toolsets"]),
            job_tools=list(data["job_tools"]),
            descriptions=dict(data["descriptions"]),
        )
        kept.mcp_tools()
    except (KeyError, TypeError, ValueError, ValidationError):
        return None
    return kept


def save(settings: Settings, key: str, catalog: Catalog) -> None:
    """Keep ``catalog`` atomically (a server starting meanwhile reads the old file or the new one, never
    half of one), and drop the oldest catalogs of other configurations."""
    folder = cache_dir(settings)
    target = catalog_path(settings, key)
    try:
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = target.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"key": key, **asdict(catalog)}), encoding="utf-8")
        os.replace(tmp, target)
        others = sorted(
            (p for p in folder.glob(f"{PREFIX}*.json") if p != target),
            key=lambda p: p.stat().st_mtime,
            reverse=True,
        )
        for old in others[KEEP:]:
            old.unlink(missing_ok=True)
    except OSError as exc:  # a read-only home costs the next start its speed, nothing else
        logger.info("could not keep the tool catalog in %s: %s", folder, exc)


# -- the lazy start ---------------------------------------------------------------------------------


def startup_error(message: str) -> MCPError:
    return MCPError(code=INTERNAL_ERROR, message=message)


class LazyStart:
    """The state of one server's lazy start: registration steps still to run, the kept tools served
    meanwhile, and the services, opened by one task that also closes them (anyio's task groups and
    cancel scopes must be left by the task that entered them).

    The server's lifespan yields this instead of ``Services``; :meth:`middleware` hands every request
    that needs them the real ``Services`` as its lifespan context, so tools, resources, completions
    and tasks read them exactly as they always have.
    """

    def __init__(
        self,
        *,
        steps: Iterator[None] | None,
        kept: Catalog | None,
        open_services: Callable[[], AbstractAsyncContextManager[Services]],
        registered: Callable[[], Awaitable[None]],
        secrets: Iterable[str] = (),
    ) -> None:
        self._steps = steps
        self._kept_tools = kept.mcp_tools() if kept is not None and steps is not None else None
        self._kept_annotations = {t.name: t.annotations for t in self._kept_tools or []}
        self._open = open_services
        self._registered = registered
        self._checked = False  # whether the registered tools were compared with the kept catalog
        # A start-up failure is said to the client in its own words, which may quote a setting.
        self._secrets = sorted({s for s in secrets if len(s) >= 4}, key=len, reverse=True)
        self._failed: str | None = None  # why the tools could not be registered
        self._error: str | None = None  # why the services could not be opened
        self.services: Services | None = None
        self._tg: TaskGroup | None = None
        self._go: anyio.Event | None = None
        self._ready: anyio.Event | None = None
        self._stop: anyio.Event | None = None
        self._answered = False
        self._timer: anyio.CancelScope | None = None  # the wait before the warm-up, ended with the server

    # -- registration ---------------------------------------------------------------------------

    @property
    def pending(self) -> bool:
        """Whether tools/list is still answered from the kept catalog."""
        return self._steps is not None

    def catalog(self) -> list[MCPTool] | None:
        """The kept tools for this tools/list, or None once the real ones are registered. The first
        answer from it schedules the warm-up."""
        if self._failed is not None:
            raise startup_error(self._failed)
        if self._steps is None or self._kept_tools is None:
            return None
        if not self._answered and self._tg is not None:
            self._answered = True
            self._tg.start_soon(self._go_after, WARM_UP_AFTER_S)
        return list(self._kept_tools)

    def kept_annotations(self, name: str) -> Any:
        return self._kept_annotations.get(name)

    def _step(self) -> bool:
        """Run one registration step; False once none is left. A step that fails fails every request
        that needs the tools from then on, in the same words, rather than leave part of them."""
        if self._failed is not None:
            raise startup_error(self._failed)
        if self._steps is None:
            return False
        try:
            next(self._steps)
        except StopIteration:
            self._steps = None
            return False
        except Exception as exc:
            logger.exception("registering the tools failed")
            self._steps = None
            self._failed = self._redact(f"mediamux could not start: registering its tools failed: {exc}")
            raise startup_error(self._failed) from exc
        return True

    async def _compared(self) -> None:
        if not self._checked:
            self._checked = True
            await self._registered()

    def _redact(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "[redacted]")
        return text

    # -- the services -----------------------------------------------------------------------------

    @asynccontextmanager
    async def running(self) -> AsyncIterator[LazyStart]:
        """The server's lifespan: the warm-up runs beside the server, the services close with it."""
        self._go, self._ready, self._stop = anyio.Event(), anyio.Event(), anyio.Event()
        self._answered = False
        self._timer = anyio.CancelScope()
        if self._steps is None:
            # Registered before serving (no kept catalog matched): keep the catalog now, before the
            # first answer, so the next start has it even if this one is stopped right after.
            await self._compared()
        async with anyio.create_task_group() as tg:
            self._tg = tg
            tg.start_soon(self._warm_up)
            try:
                yield self
            finally:
                self._stop.set()
                if self._timer is not None:
                    self._timer.cancel()
                if self.services is None:
                    # Still registering or opening: nothing was served from it; a host that listed
                    # the tools and left is not kept waiting for emulators it will never use.
                    tg.cancel_scope.cancel()
                self._tg = None

    async def _go_after(self, delay_s: float) -> None:
        assert self._timer is not None
        with self._timer:
            await anyio.sleep(delay_s)
            assert self._go is not None
            self._go.set()

    async def _warm_up(self) -> None:
        assert self._go is not None, "the warm-up runs inside running()"
        assert self._ready is not None
        assert self._stop is not None
        await self._go.wait()
        try:
            while self._step():
                await anyio.lowlevel.checkpoint()  # a request arriving meanwhile is read between steps
        except MCPError:
            self._ready.set()  # the registration failure, said to every waiting request
            return
        async with AsyncExitStack() as stack:
            try:
                await self._compared()
                svc = await stack.enter_async_context(self._open())
            except Exception as exc:
                # Opening failed before anything was served: each request that needs the services is
                # told why, and the server stays up to say so (the log has the traceback).
                logger.exception("mediamux could not open its services")
                self._error = self._redact(f"mediamux could not start: {exc}")
                self._ready.set()
                return
            self.services = svc
            self._ready.set()
            try:
                await self._stop.wait()
            finally:
                self.services = None

    async def ready(self) -> Services:
        """The open services, with every tool registered; starts them now if the warm-up has not."""
        if self._go is None or self._ready is None:
            raise startup_error("mediamux is not running")
        self._go.set()
        with anyio.move_on_after(SERVICES_WAIT_S):
            await self._ready.wait()
        if self.services is not None:
            return self.services
        if self._failed is not None:
            raise startup_error(self._failed)
        if self._error is not None:
            raise startup_error(self._error)
        if not self._ready.is_set():
            raise startup_error(
                f"mediamux is still starting: its journal, provider clients and emulators did not open "
                f"within {SERVICES_WAIT_S:g} s on this machine; call again in a moment"
            )
        raise startup_error("mediamux is shutting down")

    async def middleware(self, ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
        """Outermost: hand each request the real services as its lifespan context, waiting for them
        first unless the request is answered without them."""
        if ctx.request_id is None or ctx.method in WITHOUT_SERVICES:
            svc = self.services
            return await call_next(ctx if svc is None else replace(ctx, lifespan_context=svc))
        svc = await self.ready()
        return await call_next(replace(ctx, lifespan_context=svc))
