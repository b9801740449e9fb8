"""Serve an ASGI app over real HTTP on loopback, inside the caller's event loop.

Real sockets matter for the failure modes an in-process transport cannot show: truncated bodies, closed
connections, clients giving up on a hung request. The server runs as a task in the current anyio task
group (asyncio backend, which uvicorn requires) so tests and the demo need no threads or subprocesses.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import uvicorn

from mediamux.sandbox.faults import DeliberateDrop

_STARTUP_TIMEOUT_S = 10.0
_GRACEFUL_SHUTDOWN_S = 2.0
_FORCED_SHUTDOWN_S = 1.0


class _EmbeddedServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # The host process owns SIGINT/SIGTERM; an embedded emulator must not swallow the user's Ctrl-C.
        yield


class _HideExpectedErrors(logging.Filter):
    """Keep expected tracebacks out of the logs.

    Injected connection drops are the point of a fault, and requests still parked by a "hang" fault are
    cancelled by uvicorn at the end of the grace period (it already logs a one-line summary of that).
    """

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, DeliberateDrop | asyncio.CancelledError)


def _install_drop_filter() -> None:
    logger = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, _HideExpectedErrors) for f in logger.filters):
        logger.addFilter(_HideExpectedErrors())


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP explicitly: asyncio only sets TCP_NODELAY on accepted sockets whose protocol says
    # TCP, and without it every response waited ~40 ms for a delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.listen(128)
    sock.setblocking(False)
    return sock


@asynccontextmanager
async def serve_on_loopback(
    app: Any, *, host: str = "127.0.0.1", port: int = 0, **options: Any
) -> AsyncIterator[str]:
    """Run `app` under uvicorn on loopback; yield its base URL once it accepts connections.

    Binding the socket ourselves makes port 0 safe (no race between "find a free port" and "bind it").
    Shutdown is bounded: graceful for a couple of seconds, then forced, then the serving task is cancelled.
    ``options`` override the ``uvicorn.Config`` settings below (e.g. the HTTP protocol class).
    """
    sock = _bind(host, port)
    bound_port = sock.getsockname()[1]
    settings: dict[str, Any] = {
        "log_level": "warning",
        "access_log": False,
        "lifespan": "on",
        "http": "h11",
        "ws": "none",
        # Requests parked by a "hang" fault must not hold up shutdown for long.
        "timeout_graceful_shutdown": 1,
    }
    config = uvicorn.Config(app, host=host, port=bound_port, **{**settings, **options})
    _install_drop_filter()
    server = _EmbeddedServer(config)
    url_host = f"[{host}]" if ":" in host else host
    serve_done = anyio.Event()

    async def run() -> None:
        try:
            await server.serve(sockets=[sock])
        except SystemExit as exc:
            # uvicorn calls sys.exit() when the app's lifespan startup fails; surface it as an error instead.
            raise RuntimeError(
                f"uvicorn exited with status {exc.code} (see log for the lifespan error)"
            ) from exc
        finally:
            serve_done.set()

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(run)
            with anyio.fail_after(_STARTUP_TIMEOUT_S):
                while not server.started:
                    if serve_done.is_set():
                        raise RuntimeError("uvicorn exited during startup (see log for the lifespan error)")
                    await anyio.sleep(0.01)
            try:
                yield f"http://{url_host}:{bound_port}"
            finally:
                server.should_exit = True
                with anyio.CancelScope(shield=True):
                    with anyio.move_on_after(_GRACEFUL_SHUTDOWN_S):
                        await serve_done.wait()
                    if not serve_done.is_set():
                        server.force_exit = True
                        with anyio.move_on_after(_FORCED_SHUTDOWN_S):
                            await serve_done.wait()
                if not serve_done.is_set():
                    tg.cancel_scope.cancel()
    finally:
        sock.close()
