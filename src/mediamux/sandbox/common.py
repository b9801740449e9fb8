"""Small rules every emulator follows the same way, kept in one place so that they cannot drift apart."""

from __future__ import annotations

import logging
import shutil
import tempfile
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx2
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response


def public_origin(base_url: str, request: Request) -> str:
    """The origin for URLs an emulator hands out: the one clients were given, else the one they called."""
    # Answers carry URLs that clients fetch later (data, results); they must name the origin the client was
    # configured with, which can differ from the request's Host (a proxy, an in-process test transport).
    return base_url.rstrip("/") or str(request.base_url).rstrip("/")


def scratch_dir(owner: object, prefix: str) -> tuple[Path, weakref.finalize[Any, Any]]:
    """A temporary folder and its remover: call it to remove the folder now, else it goes with `owner`."""
    # weakref.finalize rather than TemporaryDirectory: the latter warns (ResourceWarning) when it is
    # cleaned up implicitly, and emulators are often simply dropped at the end of a test.
    root = Path(tempfile.mkdtemp(prefix=prefix))
    return root, weakref.finalize(owner, shutil.rmtree, root, ignore_errors=True)


def base_name(filename: str) -> str:
    """The last part of a file name a client sent, whether its system separates folders with / or \\."""
    return filename.replace("\\", "/").rsplit("/", 1)[-1]


class Refusal(Exception):
    """Stops a request from any depth of its handler with an answer already shaped in the provider's style."""

    def __init__(self, response: Response) -> None:
        super().__init__(response.status_code)
        self.response = response


class WebhookSender:
    """An emulator that POSTs its webhooks as jobs finish (the documents' "on completion"), not at
    the next sweep: a loop beside the app, one HTTP client for the app's lifetime (making one per
    delivery, its TLS context, took longer than the delivery itself)."""

    webhook_client: httpx2.AsyncClient | None = None

    async def deliver_due_webhooks(self) -> int:
        raise NotImplementedError

    def _next_webhook_in(self) -> float:
        raise NotImplementedError

    async def _webhook_loop(self) -> None:
        while True:
            try:
                await self.deliver_due_webhooks()
            except Exception:  # pragma: no cover - defensive; deliveries swallow their own errors
                logging.getLogger(type(self).__module__).exception("webhook sweep failed")
            await anyio.sleep(self._next_webhook_in())

    @asynccontextmanager
    async def _lifespan(self, app: Starlette) -> AsyncIterator[None]:
        own = self.webhook_client is None
        if own:
            self.webhook_client = httpx2.AsyncClient(timeout=5.0, trust_env=False)
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._webhook_loop)
                try:
                    yield
                finally:
                    tg.cancel_scope.cancel()
        finally:
            if own and self.webhook_client is not None:
                await self.webhook_client.aclose()
                self.webhook_client = None
