"""Rolling restarts of ``mediamux serve --transport http``: SIGTERM drains before the process exits.

Told to stop, uvicorn closes its listening socket at once and gives open requests a grace period. A
replica behind a load balancer needs the opposite order: keep answering while the balancer notices it is
going, and let paid work in flight end properly. So the first SIGTERM (or Ctrl-C) here:

1. puts the job engine in drain mode (``JobEngine.begin_drain``): ``/healthz`` answers 503
   ``{"ready": false, "draining": true}`` and the balancer stops sending new requests; a new paid call
   that still arrives is refused with a retryable error before anything is sent (an identical earlier
   job is still returned, free); blocking calls return at once with their job ids, which ``jobs_wait``
   resumes on any replica sharing the journal, or here after the restart;
2. keeps serving while the submissions, renders and output saves in flight finish, for at most
   ``MEDIAMUX_DRAIN_S``; what has not finished by then is stopped and marked in the journal (a request
   that may have reached the provider becomes ``uncertain``: returned by an identical call, never
   re-sent) — ``JobEngine.drain``;
3. then lets uvicorn stop: the socket closes, open responses (idle listen and GET streams) get
   ``GRACE_S``, and the lifespan closes the services (the heartbeat row goes, leases are handed back).

A second signal stops at once. The process exits 0 after a drain, so an orchestrator reads a clean stop;
give it ``MEDIAMUX_DRAIN_S`` + ``GRACE_S`` + a few seconds before it sends SIGKILL (compose:
``stop_grace_period``, Kubernetes: ``terminationGracePeriodSeconds``).
"""

from __future__ import annotations

import asyncio
import logging
from types import FrameType
from typing import Any, Final

import uvicorn

from mediamux.server.app import MediamuxServer

logger = logging.getLogger("mediamux.server")

# After the drain: how long uvicorn waits for open responses before cancelling them.
GRACE_S: Final = 5.0


class DrainingServer(uvicorn.Server):
    """uvicorn's server with the drain above on the first SIGTERM/SIGINT."""

    def __init__(self, config: uvicorn.Config, *, server: MediamuxServer, drain_s: float) -> None:
        super().__init__(config)
        self.mediamux = server
        self.drain_s = drain_s
        self._drain: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def startup(self, sockets: Any = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().startup(sockets=sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # Runs in the main thread between two bytecodes of the event loop: only flags and a wake-up here.
        if self._drain is not None or self.should_exit or self._loop is None:
            self.should_exit = True
            self.force_exit = self._drain is not None  # a second signal: no more waiting
            return
        services = self.mediamux.services
        if services is None:
            self.should_exit = True
            return
        services.engine.begin_drain()  # /healthz says so from this instant
        self._loop.call_soon_threadsafe(self._start_drain)

    def _start_drain(self) -> None:
        if self._drain is None:
            self._drain = asyncio.ensure_future(self._drain_then_exit())

    async def _drain_then_exit(self) -> None:
        try:
            services = self.mediamux.services
            if services is not None:
                logger.warning("stopping: draining for up to %.0f s (MEDIAMUX_DRAIN_S)", self.drain_s)
                await services.engine.drain(self.drain_s)  # logs what it had to stop
        except Exception:
            logger.exception("draining failed; stopping anyway")
        finally:
            self.should_exit = True


def serve_http(
    app: Any, server: MediamuxServer, *, host: str, port: int, drain_s: float, **limits: Any
) -> None:
    """Run ``app`` until SIGTERM/SIGINT, draining first (see the module docstring)."""
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=int(GRACE_S),
        **limits,
    )
    DrainingServer(config, server=server, drain_s=drain_s).run()
