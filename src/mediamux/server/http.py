"""Streamable HTTP: ``/mcp`` behind a bearer token and Host/Origin allow-lists, plus ``/healthz``."""

from __future__ import annotations

import contextlib
import hmac
import ipaddress
import json
from collections.abc import AsyncIterator
from typing import Any

from mcp.server.transport_security import TransportSecuritySettings
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route
from starlette.types import ASGIApp, Receive, Scope, Send

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
        transport_security=security_settings(settings, host, port),
        host=host,
    )
    if settings.http_token is not None and settings.http_token.get_secret_value():
        mcp_app = BearerAuth(mcp_app, settings.http_token.get_secret_value())

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        # A mounted app's lifespan is not run by Starlette; the session manager (and with it the
        # server lifespan: services, sandbox) starts here, once per process.
        async with server.session_manager.run():
            yield

    async def healthz(request: Request) -> JSONResponse:
        body: dict[str, Any] = {"status": "ok", "version": __version__}
        body["ready"] = server.services is not None
        return JSONResponse(body)

    return Starlette(routes=[Route("/healthz", healthz), Mount("/", app=mcp_app)], lifespan=lifespan)
