"""Streamable HTTP: ``/mcp`` behind a bearer token and Host/Origin allow-lists, plus ``/healthz`` and,
with MEDIAMUX_PUBLIC_URL, the providers' webhooks (``/hooks``, see server.hooks),
served by uvicorn with limits on how long a client may take to send a request head and on how many
connections may be open at once. ``/mcp/<toolset>+<toolset>[/readonly]`` (or the X-MCP-Toolsets and
X-MCP-Readonly headers) give a connection a narrower profile (see mediamux.server.profiles)."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
from collections.abc import AsyncIterator, Callable, Collection, Sequence
from typing import Any, ClassVar, Final

from mcp.server.transport_security import TransportSecuritySettings
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

from mediamux import __version__
from mediamux.config import Settings
from mediamux.server import profiles
from mediamux.server.app import MediamuxServer
from mediamux.server.auth import SignIn, sign_in
from mediamux.server.hooks import HOOKS_PATH, HookReceiver
from mediamux.server.profiles import MCP_PATH, Profile, ProfileError
from mediamux.server.sse_events import RETRY_MS, resumable_sessions

SESSION_HEADER: Final = b"mcp-session-id"
# Profiles of sessions that ended are forgotten when the table reaches twice the sessions still open
# (and at least this many), so it stays proportional to the sessions the SDK holds.
PRUNE_FLOOR: Final = 256


def is_loopback(host: str) -> bool:
    if host in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


async def json_error(send: Send, status: int, message: str, error: str) -> None:
    """A JSON-RPC error without a request id, the shape the SDK answers at this endpoint in."""
    body = json.dumps(
        {
            "jsonrpc": "2.0",
            "id": None,
            "error": {"code": -32600, "message": message, "data": {"error": error}},
        }
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


class ConnectionProfiles:
    """Reads the profile a request names (URL path after ``/mcp``, X-MCP-* headers), refuses one this
    server cannot serve, and hands the request to the SDK at ``/mcp`` with the profile in context.

    A 2025-11-25 session keeps the profile of the request that opened it: a later request of the session
    that names another is answered 404, as for a session that does not exist, so the client opens a new
    one where it now points; one that names none (a client that sent the headers only once) is served
    with the session's. 2026-07-28 requests are each their own exchange and carry their own profile.
    """

    def __init__(
        self,
        app: ASGIApp,
        enabled: Sequence[str],
        live_sessions: Callable[[], Collection[str] | None] = lambda: None,
    ) -> None:
        self.app = app
        self.enabled = tuple(enabled)
        self._live_sessions = live_sessions
        self._sessions: dict[str, Profile] = {}
        self._prune_at = PRUNE_FLOOR

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or not (path == MCP_PATH or path.startswith(MCP_PATH + "/")):
            await self.app(scope, receive, send)
            return
        headers = scope.get("headers", [])
        try:
            asked = profiles.requested(path[len(MCP_PATH) :], headers, self.enabled, base=MCP_PATH)
        except ProfileError as exc:
            await json_error(send, exc.status, exc.description, exc.error)
            return
        session = next((v.decode("latin-1") for k, v in headers if k == SESSION_HEADER), None)
        profile = asked
        if session is not None and (bound := self._sessions.get(session)) is not None:
            if asked is not None and asked != bound:
                await json_error(
                    send,
                    404,
                    f"Session not found: this session was opened with {bound.describe()} "
                    f"({bound.path(MCP_PATH)}) and keeps it; open a new session at {asked.path(MCP_PATH)}",
                    "profile_changed",
                )
                return
            profile = bound
        inner = {**scope, "path": MCP_PATH, "raw_path": MCP_PATH.encode()}
        if session is None and scope.get("method") == "POST":
            send = self._recording(send, profile or profiles.FULL)
        with profiles.serving(profile):
            await self.app(inner, receive, send)
        if session is not None and scope.get("method") == "DELETE":
            self._sessions.pop(session, None)

    def _recording(self, send: Send, profile: Profile) -> Send:
        """``send`` that binds the session an opening request creates (its answer names it) to ``profile``."""

        async def recorded(message: Message) -> None:
            if message["type"] == "http.response.start" and message.get("status", 500) < 400:
                created = next(
                    (v for k, v in message.get("headers", []) if k.lower() == SESSION_HEADER), None
                )
                if created is not None:
                    self._remember(created.decode("latin-1"), profile)
            await send(message)

        return recorded

    def _remember(self, session: str, profile: Profile) -> None:
        self._sessions[session] = profile
        if len(self._sessions) >= self._prune_at:
            live = self._live_sessions()
            if live is not None:
                self._sessions = {k: v for k, v in self._sessions.items() if k in live}
            self._prune_at = max(PRUNE_FLOOR, 2 * len(self._sessions))


class DrainGate:
    """While the server drains for a restart, ``/mcp`` answers 503 (Retry-After: 1) to requests that carry no
    ``Mcp-Session-Id``: every 2026-07-28 request and every 2025-11-25 ``initialize``. Nothing has been done
    for them, so a load balancer can safely send them to another replica (nginx: ``proxy_next_upstream
    http_503 non_idempotent``). Requests of a 2025-11-25 session still go to the replica that holds it,
    where waiting calls return their job ids and new paid calls are refused in the tool's own words."""

    def __init__(self, app: ASGIApp, server: MediamuxServer) -> None:
        self.app = app
        self.server = server

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        services = self.server.services
        if (
            scope["type"] == "http"
            and services is not None
            and services.engine.draining
            and not any(name == b"mcp-session-id" for name, _ in scope.get("headers", []))
        ):
            body = json.dumps(
                {
                    "error": "draining",
                    "error_description": "this server is restarting; send the request to another replica, or "
                    "retry in a moment",
                }
            ).encode()
            await send(
                {
                    "type": "http.response.start",
                    "status": 503,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"retry-after", b"1"),
                        (b"content-length", str(len(body)).encode()),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": body})
            return
        await self.app(scope, receive, send)


def security_settings(settings: Settings, host: str, port: int) -> TransportSecuritySettings:
    hosts = ["127.0.0.1:*", "localhost:*", "[::1]:*"]
    origins = ["http://127.0.0.1:*", "http://localhost:*", "http://[::1]:*"]
    if not is_loopback(host) and host not in ("0.0.0.0", "::"):
        hosts.append(f"{host}:{port}")
    hosts.extend(settings.http_allowed_hosts)
    origins.extend(settings.http_allowed_origins)
    return TransportSecuritySettings(
        enable_dns_rebinding_protection=True, allowed_hosts=hosts, allowed_origins=origins
    )


def build_http_app(
    server: MediamuxServer,
    settings: Settings,
    *,
    host: str,
    port: int,
    signin: SignIn | None = None,
) -> Starlette:
    """The ASGI app ``mediamux serve --transport http`` runs. SSE responses (not plain JSON) so
    progress notifications reach HTTP clients while a job runs. ``/mcp`` needs a token when the
    settings name one (static tokens, or an OAuth issuer: see mediamux.server.auth)."""
    mcp_app: ASGIApp = server.streamable_http_app(
        streamable_http_path=MCP_PATH,
        json_response=False,
        # 2025-11-25 sessions live in one process: behind a load balancer, either pin them to a replica
        # by Mcp-Session-Id or serve them stateless (no server-to-client requests mid-call, no GET stream).
        stateless_http=settings.http_stateless,
        transport_security=security_settings(settings, host, port),
        host=host,
        retry_interval=RETRY_MS,
    )
    # 2025-11-25 sessions get a priming event, the retry hint and replay after a broken stream.
    resumable_sessions(server.session_manager)
    # The SDK's table of open sessions (private: it offers no hook for a session's end), read only to
    # forget the profiles of sessions that ended.
    mcp_app = ConnectionProfiles(
        mcp_app,
        (server.mediamux_settings or settings).enabled_toolsets(),
        lambda: getattr(server.session_manager, "_server_instances", None),
    )
    mcp_app = DrainGate(mcp_app, server)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        # A mounted app's lifespan is not run by Starlette; the session manager (and with it the
        # server lifespan: services, sandbox) starts here, once per process.
        async with server.session_manager.run():
            yield

    async def healthz(request: Request) -> JSONResponse:
        # A readiness probe: 503 while starting, and while draining for a restart (SIGTERM), so a load
        # balancer sends new requests elsewhere while this replica finishes what it started.
        draining = server.services is not None and server.services.engine.draining
        ready = server.services is not None and not draining
        body: dict[str, Any] = {
            "status": "draining" if draining else "ok" if ready else "starting",
            "version": __version__,
            "ready": ready,
            "draining": draining,
        }
        return JSONResponse(body, status_code=200 if ready else 503)

    signin = signin if signin is not None else sign_in(settings)
    routes: list[Any] = [Route("/healthz", healthz)]
    if signin is not None:
        mcp_app = signin.protect(mcp_app)
        routes.extend(signin.routes())
    if settings.public_url:
        # Providers can reach this server: their webhooks wake jobs (served without the bearer token:
        # the unguessable path is the credential, and a webhook only makes us ask the provider).
        server.hook_base = settings.public_url + HOOKS_PATH
        routes.append(HookReceiver(server).route())
    return Starlette(routes=[*routes, Mount("/", app=mcp_app)], lifespan=lifespan)


# -- connection limits ---------------------------------------------------------------------------
#
# uvicorn waits for a request head for ever: 1,100 clients that each sent half a head held 1,100
# sockets and exhausted the process's 1,024 file descriptors, after which nothing, not even the
# journal, could open a file. The token cannot help (it is in the head that never completes). Two
# limits, both in a small subclass of uvicorn's h11 protocol, because uvicorn has no setting for
# either:
#
# * a head deadline: a connection must deliver a complete request head within HEAD_TIMEOUT_S of
#   opening, and again of each response (a client still trickling a body the server answered
#   without reading, such as an unauthenticated one, is waited on no longer either);
# * a connection cap derived from the descriptor limit: when a new connection would exceed it, the
#   connection that has waited longest for its head is closed to make room (the new one itself if
#   every other is busy with a request). A client sending half-heads can then only displace other
#   half-heads; a real client, whose head arrives within milliseconds, is served.
#
# The cap must hold before descriptors run out, not after: asyncio, when accept() fails for want of
# descriptors, logs a traceback and schedules a retry for every connection still queued. The
# protocol only sees a connection a few loop turns after asyncio accepted it, and asyncio accepts
# up to ``backlog`` connections a turn, so the cap (a quarter of the descriptors) plus three such
# bursts (a sixteenth each) must fit, leaving over half for the journal, provider connections,
# uploads and outputs.
#
# Constants rather than settings: ten seconds is ample on any network an MCP session can use, and
# the rest follows ``ulimit -n``, which the operator already controls.

HEAD_TIMEOUT_S: Final = 10.0
# How long an idle keep-alive connection is kept. Longer than clients keep theirs (httpx and so the
# Python SDK: 5 s; Node's undici: 4 s; aiohttp: 15 s): at uvicorn's 5 s a client reusing a connection
# idle for just under 5 s raced the server closing it, and that POST failed with a read error the SDK
# does not retry (2,000 jobs over one server hit it every run). Idle connections count against the cap.
KEEP_ALIVE_S: Final = 30


def descriptor_limit() -> int:
    """The process's soft limit on open files (a common default where there is none to read)."""
    try:
        import resource

        soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (ImportError, OSError, ValueError):  # no rlimits (Windows)
        return 1024
    return 1 << 16 if soft == resource.RLIM_INFINITY else int(soft)


def connection_limits(descriptors: int) -> tuple[int, int]:
    """(open connections at most, connections accepted per loop turn) for a descriptor limit."""
    return max(16, min(4096, descriptors // 4)), max(8, min(2048, descriptors // 16))


def guarded_protocol(*, max_connections: int, head_timeout_s: float = HEAD_TIMEOUT_S) -> type[H11Protocol]:
    """uvicorn's h11 protocol with the head deadline and connection cap above (one class per server:
    the bookkeeping lives on it)."""

    class GuardedH11Protocol(H11Protocol):
        head_deadline_s: ClassVar[float] = head_timeout_s
        cap: ClassVar[int] = max_connections
        # Every connection not yet closed, and those waiting for a head, oldest wait first.
        live: ClassVar[set[GuardedH11Protocol]] = set()
        waiting: ClassVar[dict[GuardedH11Protocol, None]] = {}

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._head_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self.live.add(self)
            self._await_head()
            if len(self.live) > self.cap:
                next(iter(self.waiting))._close()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self._serving():
                self._stop_waiting()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing() and not self._serving():
                self._await_head()

        def connection_lost(self, exc: Exception | None) -> None:
            self._forget()
            super().connection_lost(exc)

        def _serving(self) -> bool:
            return self.cycle is not None and not self.cycle.response_complete

        def _await_head(self) -> None:
            self._stop_waiting()
            self.waiting[self] = None
            self._head_timer = self.loop.call_later(self.head_deadline_s, self._close)

        def _stop_waiting(self) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None
            self.waiting.pop(self, None)

        def _forget(self) -> None:
            self._stop_waiting()
            self.live.discard(self)

        def _close(self) -> None:
            self._forget()
            if not self.transport.is_closing():
                self.transport.close()

    return GuardedH11Protocol


def uvicorn_limits() -> dict[str, Any]:
    """What ``mediamux serve --transport http`` passes to uvicorn on top of host and port."""
    cap, burst = connection_limits(descriptor_limit())
    return {
        "http": guarded_protocol(max_connections=cap),
        "ws": "none",  # MCP uses no WebSockets: one protocol fewer to accept connections for
        "timeout_keep_alive": KEEP_ALIVE_S,
        "backlog": burst,
        # uvicorn answers 503 instead of starting a handler once this many are in flight. It
        # counts connections too, which the cap keeps at or below ``cap``, so it only fires when
        # handlers outlive their clients: one more than the cap.
        "limit_concurrency": cap + 1,
    }
