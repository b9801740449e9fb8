"""Provider webhooks: ``POST <MEDIAMUX_PUBLIC_URL>/hooks/<job_id>/<token>``.

MuAPI (the ``webhook`` submit parameter) and Mixpeek v1 (the batch submission's ``webhook_url``) POST
here when a job finishes. A webhook only *wakes* its job: the engine polls the provider at once and the
job's status, result and cost come from that poll, never from the body, which anyone who learned the
URL could have written. The token is per job, random (192 bits), kept in the journal only as a SHA-256
and compared in constant time; an unknown job or a wrong token is a 404 with an empty body, the same
either way. Polling goes on regardless, so a webhook that never comes costs latency, not the job.

The route needs no bearer token (providers have none to send) and so is guarded on its own: bodies
over ``MAX_BODY_BYTES`` are refused unread, all webhooks together are rate limited, and a client that
keeps presenting wrong tokens is refused for a while before any lookup.
"""

from __future__ import annotations

import logging
import re
import time
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

if TYPE_CHECKING:
    from mediamux.server.app import MediamuxServer

logger = logging.getLogger("mediamux.server.hooks")

HOOKS_PATH = "/hooks"
MAX_BODY_BYTES = 64 * 1024
# All webhooks: 200 jobs finishing together must get through at once, a flood must not.
RATE_PER_S = 100.0
BURST = 500.0
# Wrong tokens per client address: a few are mistakes (a journal moved aside), many are guessing.
MISSES_PER_S = 0.5
MISS_BURST = 20.0
MAX_CLIENTS = 4096  # addresses tracked for misses; past it the table starts again

_JOB_ID = re.compile(r"job_[A-Za-z0-9_-]{1,64}")
_TOKEN = re.compile(r"[A-Za-z0-9_-]{16,128}")


class TokenBucket:
    """``rate`` tokens a second, at most ``burst`` saved up (real time: this limits real clients)."""

    def __init__(self, rate: float, burst: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.stamp = time.monotonic()

    def _fill(self) -> None:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now

    def available(self) -> bool:
        self._fill()
        return self.tokens >= 1.0

    def take(self) -> bool:
        self._fill()
        if self.tokens < 1.0:
            return False
        self.tokens -= 1.0
        return True

    def wait_s(self) -> int:
        """Whole seconds until a token is there (for Retry-After)."""
        return max(1, int((1.0 - self.tokens) / self.rate + 0.999))


class HookReceiver:
    def __init__(self, server: MediamuxServer) -> None:
        self.server = server
        self.all = TokenBucket(RATE_PER_S, BURST)
        self.misses: dict[str, TokenBucket] = {}

    def route(self) -> Route:
        return Route(HOOKS_PATH + "/{job_id}/{token}", self.receive, methods=["POST"])

    async def receive(self, request: Request) -> Response:
        client = request.client.host if request.client else "?"
        missing = self.misses.get(client)
        if missing is not None and not missing.available():
            return _refuse(429, missing.wait_s())
        if not self.all.take():
            return _refuse(429, self.all.wait_s())
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
            return _refuse(413)
        # Read (and drop) the body, so the connection can be reused; its content is never trusted.
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > MAX_BODY_BYTES:
                return _refuse(413)
        job_id, token = request.path_params["job_id"], request.path_params["token"]
        services = self.server.services
        if services is None:
            return _refuse(503, 1)
        known = bool(_JOB_ID.fullmatch(job_id) and _TOKEN.fullmatch(token))
        if known:
            known = await services.engine.wake(job_id, token)
        if not known:
            self._missed(client)
            return Response(status_code=404)
        logger.debug("webhook woke job %s", job_id)
        return Response(status_code=204)

    def _missed(self, client: str) -> None:
        if len(self.misses) >= MAX_CLIENTS and client not in self.misses:
            self.misses.clear()
        bucket = self.misses.setdefault(client, TokenBucket(MISSES_PER_S, MISS_BURST))
        bucket.take()


def _refuse(status: int, retry_after_s: int | None = None) -> Response:
    headers = {"Retry-After": str(retry_after_s)} if retry_after_s is not None else None
    return Response(status_code=status, headers=headers)


__all__ = ["HOOKS_PATH", "MAX_BODY_BYTES", "HookReceiver", "TokenBucket"]
