"""HTTP plumbing of both muse.ai hosts: the app and its middleware, the ``Key`` gate, error bodies, body readers."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from starlette.applications import Starlette
from starlette.datastructures import FormData, Headers
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute

from mediamux.sandbox.faults import ASGIApp, FaultMiddleware, FaultPlan, Receive, RequestLog, Scope, Send


class ApiError(Exception):
    """Raised by handlers; answered as ``{"error": code}`` with the status."""

    def __init__(self, status: int, code: str) -> None:
        super().__init__(code)
        self.status = status
        self.code = code


def _error(status: int, code: str) -> JSONResponse:
    return JSONResponse({"error": code}, status_code=status)


def build_app(
    routes: list[BaseRoute],
    *,
    log: list[tuple[str, str]],
    prefix: str,
    on_request: Callable[[], None],
    faults: FaultPlan,
    valid_key: Callable[[str], bool],
) -> Starlette:
    return Starlette(
        routes=routes,
        middleware=[
            Middleware(RequestLog, log=log, prefix=prefix, on_request=on_request),
            Middleware(FaultMiddleware, plan=faults),
            Middleware(KeyGate, valid_key=valid_key),
        ],
        exception_handlers={ApiError: _api_error, HTTPException: _http_error},
    )


_AUTHED = "mediamux.museai.authed"

# (method, path) patterns that work without a Key; a Key that is sent must still be valid.
_KEYLESS = [
    ("GET", re.compile(r"^/api/search/(channel|collection|video)/[^/]+$")),
    ("GET", re.compile(r"^/api/files/videos/[^/]+$")),
    ("GET", re.compile(r"^/api/files/info/[^/]+$")),
    ("GET", re.compile(r"^/api/files/i/[^/]+/[^/]+$")),
    ("GET", re.compile(r"^/w/")),
]
_LOGIN = "/api/auth/login"


class KeyGate:
    """The ``Key`` header: required except on login and the keyless endpoints; when sent, it must be valid."""

    def __init__(self, app: ASGIApp, valid_key: Callable[[str], bool]) -> None:
        self.app = app
        self.valid_key = valid_key

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path, method = scope["path"], scope["method"]
        key = Headers(scope=scope).get("key", "").strip()
        if path == _LOGIN:
            scope[_AUTHED] = False
        elif key:
            if not self.valid_key(key):
                await _error(401, "invalid_key")(scope, receive, send)
                return
            scope[_AUTHED] = True
        elif any(method == m and pattern.match(path) for m, pattern in _KEYLESS):
            scope[_AUTHED] = False
        else:
            await _error(401, "unauthorized")(scope, receive, send)
            return
        await self.app(scope, receive, send)


def authed(request: Request) -> bool:
    return bool(request.scope.get(_AUTHED))


async def _api_error(request: Request, exc: Exception) -> Response:
    if not isinstance(exc, ApiError):  # pragma: no cover - registered for ApiError only
        raise exc
    return _error(exc.status, exc.code)


_HTTP_CODES = {400: "invalid_request", 404: "not_found", 405: "method_not_allowed"}


async def _http_error(request: Request, exc: Exception) -> Response:
    if not isinstance(exc, HTTPException):  # pragma: no cover - registered for HTTPException only
        raise exc
    code = _HTTP_CODES.get(exc.status_code, "error")
    return JSONResponse({"error": code}, status_code=exc.status_code, headers=exc.headers)


def success() -> JSONResponse:
    return JSONResponse({"status": "success"})


def form_text(form: FormData, name: str) -> str:
    value = form.get(name)
    return value.strip() if isinstance(value, str) else ""


async def json_object(request: Request) -> dict[str, Any]:
    raw = await request.body()
    try:
        data = json.loads(raw) if raw.strip() else {}
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ApiError(400, "invalid_json") from None
    if not isinstance(data, dict):
        raise ApiError(400, "invalid_json")
    return data
