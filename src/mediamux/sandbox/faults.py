"""Fault injection for the provider emulators.

A `FaultPlan` is a list of rules matched against incoming requests. The middleware sits in front of an
emulator's routes (but behind its request log, so faulted requests are still recorded) and models what
goes wrong *between* a client and a provider: a gateway answering 429/503, a connection that dies mid-body,
a slow or stuck upstream. Because these failures happen in front of the provider's application, injected
responses carry none of the provider's own headers (e.g. MuAPI's cost headers).

`after_handler=True` is the important variant for idempotency testing: the provider really handles the
request (a job is created, a wallet charged) and only then is the answer replaced or lost.

Deliberate drops raise `DeliberateDrop`, a subclass of `httpx2.RemoteProtocolError`, after a partial body.
Under uvicorn that closes the TCP connection mid-body, so the client's own transport raises
`RemoteProtocolError`; under `httpx2.ASGITransport` the exception propagates to the client as-is, so the
client observes the same exception type on both transports.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any, Literal

import anyio
import httpx2

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

FaultKind = Literal["status", "drop", "delay", "hang"]

# The advertised length is deliberately larger than what is sent so the client knows the body is truncated.
_DROP_ADVERTISED_LENGTH = 1000
_DROP_PARTIAL_BODY = b'{"request_id": "'


class DeliberateDrop(httpx2.RemoteProtocolError):
    """Raised inside the ASGI app to abort a response mid-body."""

    def __init__(self) -> None:
        super().__init__("sandbox fault: connection dropped mid-response")


@dataclass
class Fault:
    method: str | None
    path: str
    kind: FaultKind
    status: int = 503
    retry_after: str | None = None
    body: dict[str, Any] | str | None = None
    delay_s: float = 0.0
    times: int = 1
    after_handler: bool = False
    hits: int = field(default=0, compare=False)

    def matches(self, method: str, path: str) -> bool:
        if self.times == 0:
            return False
        if self.method is not None and self.method.upper() != method.upper():
            return False
        return re.search(self.path, path) is not None


class Gate:
    """A resettable, loop-agnostic event.

    `anyio.Event` must be created inside a running event loop, but emulators (and their fault plans) are
    often built in synchronous fixtures, so the underlying event is created on first wait.
    """

    def __init__(self) -> None:
        self._is_set = False
        self._event: anyio.Event | None = None

    def set(self) -> None:
        self._is_set = True
        if self._event is not None:
            self._event.set()

    def is_set(self) -> bool:
        return self._is_set

    def reset(self) -> None:
        # Waiters on the old event stay parked until it is set, so release them before forgetting it.
        if self._event is not None and not self._event.is_set():
            self._event.set()
        self._is_set = False
        self._event = None

    async def wait(self) -> None:
        if self._is_set:
            return
        if self._event is None:
            self._event = anyio.Event()
        await self._event.wait()


async def wait_unless_client_leaves(
    receive: Receive, until: Callable[[], Awaitable[None]]
) -> tuple[bool, list[Message]]:
    """Wait for `until()` unless the client disconnects first: (client still there, messages read meanwhile)."""
    buffered: list[Message] = []
    disconnected = False
    async with anyio.create_task_group() as tg:

        async def watch_client() -> None:
            # Reading receive() is the only way an ASGI app learns of a disconnect; other messages read
            # meanwhile (body chunks) are handed back so that the caller can replay them to its handler.
            nonlocal disconnected
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    disconnected = True
                    tg.cancel_scope.cancel()
                    return
                buffered.append(message)

        async def wait_until() -> None:
            await until()
            tg.cancel_scope.cancel()

        tg.start_soon(watch_client)
        tg.start_soon(wait_until)
        await anyio.sleep_forever()
    return not disconnected, buffered


class FaultPlan:
    def __init__(self) -> None:
        self.faults: list[Fault] = []
        self.release = Gate()
        # Requests currently parked by a "hang" fault; lets tests wait for "the request is stuck" without sleeping.
        self.parked = 0

    def add(
        self,
        *,
        path: str,
        kind: FaultKind,
        method: str | None = None,
        status: int = 503,
        retry_after: str | None = None,
        body: dict[str, Any] | str | None = None,
        delay_s: float = 0.0,
        times: int = 1,
        after_handler: bool = False,
    ) -> Fault:
        fault = Fault(
            method=method,
            path=path,
            kind=kind,
            status=status,
            retry_after=retry_after,
            body=body,
            delay_s=delay_s,
            times=times,
            after_handler=after_handler,
        )
        self.faults.append(fault)
        return fault

    def clear(self) -> None:
        """Remove every fault and re-arm `release`; requests still parked by a hang are let through."""
        self.faults.clear()
        self.release.reset()

    def take(self, method: str, path: str) -> Fault | None:
        """Consume one use of the first matching fault (first added wins)."""
        for fault in self.faults:
            if fault.matches(method, path):
                if fault.times > 0:
                    fault.times -= 1
                fault.hits += 1
                return fault
        return None

    def middleware(self, app: ASGIApp) -> FaultMiddleware:
        return FaultMiddleware(app, self)


class FaultMiddleware:
    def __init__(self, app: ASGIApp, plan: FaultPlan) -> None:
        self.app = app
        self.plan = plan

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        fault = self.plan.take(scope["method"], scope["path"])
        if fault is None:
            await self.app(scope, receive, send)
            return
        if fault.kind in ("status", "drop"):
            if fault.after_handler:
                await self.app(scope, receive, _discard)
            if fault.kind == "status":
                await _send_status(fault, send)
            else:
                await _drop(send)
            return
        # delay / hang: either stall before the handler runs, or let it run and stall its answer.
        if not fault.after_handler:
            proceed, receive = await self._stall(fault, receive)
            if proceed:
                await self.app(scope, receive, send)
            return
        await self.app(scope, receive, self._stalling_send(fault, receive, send))

    async def _stall(self, fault: Fault, receive: Receive) -> tuple[bool, Receive]:
        """Wait out a delay or hang; returns (client still there, receive to hand downstream)."""
        if fault.kind == "delay":
            await anyio.sleep(fault.delay_s)
            return True, receive
        self.plan.parked += 1
        try:
            stayed, buffered = await wait_unless_client_leaves(receive, self.plan.release.wait)
        finally:
            self.plan.parked -= 1
        if not stayed:
            return False, receive

        async def replay() -> Message:
            if buffered:
                return buffered.pop(0)
            return await receive()

        return True, replay

    def _stalling_send(self, fault: Fault, receive: Receive, send: Send) -> Send:
        stalled = False
        client_gone = False

        async def wrapped(message: Message) -> None:
            nonlocal stalled, client_gone
            if not stalled:
                stalled = True
                proceed, _ = await self._stall(fault, receive)
                client_gone = not proceed
            if client_gone:
                return
            await send(message)

        return wrapped


async def _discard(message: Message) -> None:
    return None


async def _send_status(fault: Fault, send: Send) -> None:
    body = fault.body if fault.body is not None else {"detail": f"Sandbox fault: HTTP {fault.status}"}
    if isinstance(body, str):
        payload = body.encode("utf-8")
        content_type = b"text/plain; charset=utf-8"
    else:
        payload = json.dumps(body).encode("utf-8")
        content_type = b"application/json"
    headers = [(b"content-type", content_type), (b"content-length", str(len(payload)).encode())]
    if fault.retry_after is not None:
        headers.append((b"retry-after", fault.retry_after.encode("latin-1")))
    await send({"type": "http.response.start", "status": fault.status, "headers": headers})
    await send({"type": "http.response.body", "body": payload, "more_body": False})


async def _drop(send: Send) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(_DROP_ADVERTISED_LENGTH).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": _DROP_PARTIAL_BODY, "more_body": True})
    raise DeliberateDrop()


class RequestLog:
    """Outermost middleware of every emulator: each request is logged, faulted ones too, so tests
    can assert exactly what reached the "provider" (or that nothing did)."""

    def __init__(
        self,
        app: Any,
        log: list[tuple[str, str]],
        prefix: str = "",
        on_request: Callable[[], None] | None = None,
    ) -> None:
        self.app = app
        self.log = log
        self.prefix = prefix
        self.on_request = on_request

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            self.log.append((scope["method"], f"{self.prefix}{scope['path']}"))
            if self.on_request is not None:
                self.on_request()
        await self.app(scope, receive, send)
