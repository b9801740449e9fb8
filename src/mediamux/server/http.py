"""Streamable HTTP: ``/mcp`` behind a bearer token and Host/Origin allow-lists, plus ``/healthz``,
served by uvicorn with limits on how long a client may take to send a request head and on how many
connections may be open at once."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
import json
from collections.abc import AsyncIterator
from typing import Any, ClassVar, Final

from mcp.server.transport_security import TransportSecuritySettings
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route
from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

from mediamux import __version__
from mediamux.config import Settings
from mediamux.server.app import MediamuxServer

MCP_PATH = "/mcp"


def is_loopback(host: str) -> bool:
    if host in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class BearerAuth:
    """Requires ``Authorization: Bearer <MEDIAMUX_HTTP_TOKEN>`` on every MCP request."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self._token = token.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        header = b""
        for name, value in scope.get("headers", []):
            if name == b"authorization":
                header = value
                break
        scheme, _, presented = header.partition(b" ")
        if scheme.lower() != b"bearer" or not hmac.compare_digest(presented.strip(), self._token):
            body = json.dumps(
                {
                    "error": "unauthorized",
                    "error_description": "send Authorization: Bearer <MEDIAMUX_HTTP_TOKEN>",
                }
            ).encode()
            await send(
                {
                    "type": "http.response.start",
                    "status": 401,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"www-authenticate", b'Bearer realm="mediamux"'),
                        (b"content-length", str(len(body)).encode()),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": body})
            return
        await self.app(scope, receive, send)


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


def build_http_app(server: MediamuxServer, settings: Settings, *, host: str, port: int) -> Starlette:
    """The ASGI app ``mediamux serve --transport http`` runs. SSE responses (not plain JSON) so
    progress notifications reach HTTP clients while a job runs."""
    mcp_app: ASGIApp = server.streamable_http_app(
        streamable_http_path=MCP_PATH,
        json_response=False,
        # 2025-11-25 sessions live in one process: behind a load balancer, either pin them to a replica
        # by Mcp-Session-Id or serve them stateless (no server-to-client requests mid-call, no GET stream).
        stateless_http=settings.http_stateless,
        transport_security=security_settings(settings, host, port),
        host=host,
    )
    mcp_app = DrainGate(mcp_app, server)
    if settings.http_token is not None and settings.http_token.get_secret_value():
        mcp_app = BearerAuth(mcp_app, settings.http_token.get_secret_value())

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

    return Starlette(routes=[Route("/healthz", healthz), Mount("/", app=mcp_app)], lifespan=lifespan)


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
# uvicorn's default, written down: an idle keep-alive connection is closed after this long.
KEEP_ALIVE_S: Final = 5


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
