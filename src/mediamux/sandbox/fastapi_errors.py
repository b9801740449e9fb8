"""Error answers in the shape FastAPI services give (MuAPI and Mixpeek are such services).

``{"detail": message}`` for plain errors and ``{"detail": [...]}`` with pydantic v2 entries for 422, so
clients are tested against realistic bodies.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from mediamux.sandbox.common import Refusal


def detail(status_code: int, message: str) -> JSONResponse:
    return JSONResponse({"detail": message}, status_code=status_code)


def unprocessable(errors: list[dict[str, Any]]) -> JSONResponse:
    return JSONResponse({"detail": errors}, status_code=422)


async def http_error(request: Request, exc: Exception) -> Response:
    """Starlette's own errors (unknown route, wrong method) in FastAPI's shape."""
    if not isinstance(exc, HTTPException):  # pragma: no cover - registered for HTTPException only
        raise exc
    return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)


async def json_body(request: Request) -> Any:
    """The parsed JSON body; an empty or unparsable body is refused with FastAPI's 422."""
    raw = await request.body()
    if not raw.strip():
        raise Refusal(
            unprocessable([{"type": "missing", "loc": ["body"], "msg": "Field required", "input": None}])
        )
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        error = {
            "type": "json_invalid",
            "loc": ["body", 0],
            "msg": "JSON decode error",
            "input": {},
            "ctx": {"error": str(exc)},
        }
        raise Refusal(unprocessable([error])) from exc
