"""The unit tier: provider clients and the job journal, in-process.

A provider client is driven through the real :class:`Transport` with its own ``httpx2.AsyncClient``
on either ``httpx2.MockTransport`` (a handler answering each documented response shape, including
the ones our emulators never produce) or an emulator's ASGI app (a round trip against the
independent emulator). No MCP server, no sockets: everything here is marked ``unit`` by directory.
"""

from __future__ import annotations

import json
import random
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx2
import pytest
from pydantic import SecretStr

from mediamux.clock import FakeClock
from mediamux.providers.transport import ProviderHints, RetryConfig, Transport

KEY = "unit-test-key-0123456789"

# provider → (title, key variable, auth header, auth scheme), as the server wires them.
PROVIDERS = {
    "muapi": ("MuAPI", "MUAPI_API_KEY", "x-api-key", ""),
    "museai": ("muse.ai", "MUSEAI_API_KEY", "Key", ""),
    "muzaic": ("Muzaic", "MUZAIC_API_KEY", "MuzaicAPI-Secret-Key", ""),
    "mixpeek": ("Mixpeek", "MIXPEEK_API_KEY", "Authorization", "Bearer"),
}
RETRY = RetryConfig(max_attempts=3, base_delay_s=0.5, max_delay_s=2.0, max_total_s=30.0)

Handler = Callable[[httpx2.Request], httpx2.Response]


@dataclass
class Sent:
    """One request as the fake provider received it."""

    method: str
    url: httpx2.URL
    headers: httpx2.Headers
    body: bytes

    @property
    def path(self) -> str:
        return self.url.path

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Wire:
    transport: Transport
    clock: FakeClock
    sent: list[Sent] = field(default_factory=list)


def answer(status: int = 200, body: Any = None, **headers: str) -> httpx2.Response:
    """A JSON answer (or raw bytes / text) with extra headers given as keyword arguments."""
    header_list = [(k.replace("_", "-"), v) for k, v in headers.items()]
    if isinstance(body, bytes):
        return httpx2.Response(status, content=body, headers=header_list)
    if isinstance(body, str):
        return httpx2.Response(status, text=body, headers=header_list)
    return httpx2.Response(status, json=body, headers=header_list)


def always(response: httpx2.Response) -> Handler:
    return lambda request: response


@pytest.fixture
async def wire() -> AsyncIterator[Callable[..., Wire]]:
    """``wire(provider, base_url, handler=... | app=...)``: that provider's transport on a fake wire."""
    clients: list[httpx2.AsyncClient] = []

    def make(
        provider: str,
        base_url: str,
        handler: Handler | None = None,
        *,
        app: Any = None,
        key: str | None = KEY,
        clock: FakeClock | None = None,
    ) -> Wire:
        title, key_env, header, scheme = PROVIDERS[provider]
        clock = clock or FakeClock()
        sent: list[Sent] = []
        inner: httpx2.AsyncBaseTransport
        if app is not None:
            inner = httpx2.ASGITransport(app=app)

            async def record(request: httpx2.Request) -> None:
                sent.append(Sent(request.method, request.url, request.headers, b""))

            hooks: dict[str, list[Any]] = {"request": [record]}
        else:
            assert handler is not None, "give a handler or an app"

            def recording(request: httpx2.Request) -> httpx2.Response:
                sent.append(Sent(request.method, request.url, request.headers, request.read()))
                return handler(request)

            inner = httpx2.MockTransport(recording)
            hooks = {}
        client = httpx2.AsyncClient(transport=inner, follow_redirects=False, event_hooks=hooks)
        clients.append(client)
        transport = Transport(
            provider=provider,
            base_url=base_url,
            hints=ProviderHints(title=title, key_env=key_env),
            auth_header=header,
            auth_scheme=scheme,
            api_key=SecretStr(key) if key is not None else None,
            client=client,
            clock=clock,
            retry=RETRY,
            rng=random.Random(3),
        )
        return Wire(transport, clock, sent)

    yield make
    for client in clients:
        await client.aclose()
